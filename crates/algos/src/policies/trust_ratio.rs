//! `trust-ratio` (docs/algorithms.md §C.7): layer-wise trust ratio on the client,
//! `η_{k,ℓ} = η_k · clip(‖y_ℓ‖/(‖u_ℓ‖ + ε), 0, φ_max)` per tensor, through the plan
//! optimiser `lars` (optionally with momentum). The ratio is a per-step, per-tensor
//! factor on the plan's rates, and the client reports the rates it really used: per
//! group, the plan's rate times the mean ratio of the group's tensors weighted by their
//! sizes, so normalisation and SCAFFOLD's Λ see the real step sizes. The ratio is
//! LAMB's form, `‖p‖/(‖u‖ + ε)` with weight decay folded into `u`, without You et al.'s
//! trust coefficient.

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result};
use fedpace_optim::OptimizerSpec;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct TrustRatio {
    /// φ_max.
    pub max_ratio: f64,
    /// ε.
    pub eps: f64,
    /// Momentum ρ (0 = none).
    pub momentum: f64,
}

impl RatePolicy for TrustRatio {
    fn describe(&self) -> String {
        format!("trust-ratio(φ_max={}, ρ={})", self.max_ratio, self.momentum)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        p.optimizer = OptimizerSpec::Lars {
            momentum: self.momentum,
            max_ratio: self.max_ratio,
            eps: self.eps,
            weight_decay: 0.0,
        };
        Ok(p)
    }
}
