//! FedProx (docs/algorithms.md §B.1): FedAvg whose clients minimise
//! `F_k(w) + (μ_k/2)‖w − x^t‖²`, i.e. add `μ_k·(w − x^t)` to every local gradient
//! (the paper's squared norm; optim's `add_proximal`). μ travels in each client's
//! [`RatePlan::prox_mu`](fedpace_core::RatePlan::prox_mu), so any rate policy may set
//! it per client; this algorithm only puts the configured μ into the base plan.
//!
//! Systems heterogeneity (stragglers doing partial work, or being dropped) is not
//! part of the algorithm: the `fedpace-sim` devices wrapper sets each straggler's
//! `max_steps` (or removes it), so it composes with every strategy.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::pipeline::{Label, Pipeline};
use fedpace_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// `fedprox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedProxConfig {
    /// Proximal coefficient μ ≥ 0 put in every client's plan (default 0.01).
    pub mu: f64,
}

impl Default for FedProxConfig {
    fn default() -> Self {
        Self { mu: 0.01 }
    }
}

impl Algorithm for FedProxConfig {
    const NAME: &'static str = "fedprox";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !(self.mu.is_finite() && self.mu >= 0.0) {
            return Err(Error::invalid("strategy.mu", self.mu, "a finite μ >= 0"));
        }
        crate::config::check_f32("strategy.mu", self.mu)
    }
    fn build(&self, mut cx: BuildCx) -> Result<Built> {
        cx.settings.base_plan.prox_mu = self.mu;
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(Label(format!("mu={}", self.mu))),
            )
            .with_server(cx.server),
        )))
    }
}
