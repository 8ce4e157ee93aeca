//! `fedlalr`: FedLALR (docs/algorithms.md §C.2), client-specific AMSGrad with synchronised
//! moments. Each client runs AMSGrad (β1, β2, ε) from the plan's rate α_t, decayed as
//! `α/√t` with the round t when `decay` is on (the theory needs a decaying rate). The
//! moments are server-initialised (`state_mode = server-init`): clients return their
//! AMSGrad state (m, v, v̂) and the server sends the p̃-weighted average next round,
//! which every client starts from. This is the "v̂_k ← v̂_sync" variant of §C.2 with
//! m and v synchronised too (a documented simplification: §C.2's spec is itself a
//! reconstruction).

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result};
use fedpace_optim::{OptimizerSpec, StateMode};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct FedLalr {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// α/√t decay.
    pub decay: bool,
}

impl RatePolicy for FedLalr {
    fn describe(&self) -> String {
        format!(
            "fedlalr(amsgrad β1={}, β2={}, ε={}, decay={})",
            self.beta1, self.beta2, self.eps, self.decay
        )
    }
    fn plan(&mut self, round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        if self.decay {
            p.base_lr = (base.base_lr as f64 / (round.max(1) as f64).sqrt()) as f32;
        }
        p.optimizer = OptimizerSpec::Amsgrad {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: 0.0,
        };
        p.state_mode = StateMode::ServerInit;
        Ok(p)
    }
}
