//! `curvature`: Δ-SGD (ALGORITHMS.md §C.1). Each client sets its own step from a local
//! smoothness estimate, inside the round: the policy only tells the client to do so
//! (plan optimiser `delta-sgd`), starting from η_init = the plan's rate (or `eta_init`
//! when given). The client re-evaluates the previous iterate on the same mini-batch
//! (`L̂_k = ‖g(y_k) − g(y_{k−1})‖/‖y_k − y_{k−1}‖`,
//! `η_k = min{γ/(2L̂_k), √(1+δθ_{k−1})·η_{k−1}} + ε`) and reports the rates it used, so
//! the server's objective-consistency normalisation sees the real Σ rates.

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result};
use fedpace_optim::OptimizerSpec;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Curvature {
    /// γ (default 2).
    pub gamma: f64,
    /// δ (default 0.1).
    pub delta: f64,
    /// η_init; `None`: the plan's rate.
    pub eta_init: Option<f64>,
}

impl RatePolicy for Curvature {
    fn describe(&self) -> String {
        format!("curvature(Δ-SGD γ={}, δ={})", self.gamma, self.delta)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        if let Some(e) = self.eta_init {
            p.base_lr = e as f32;
        }
        p.optimizer = OptimizerSpec::DeltaSgd {
            gamma: self.gamma,
            delta: self.delta,
            eps: 1e-8,
        };
        Ok(p)
    }
}
