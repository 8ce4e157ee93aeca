//! FedProx (ALGORITHMS.md B.1): FedAvg whose clients minimise
//! `F_k(w) + (μ_k/2)‖w − x^t‖²`, i.e. add `μ_k·(w − x^t)` to every local gradient
//! (the paper's squared norm; optim's `add_proximal`). μ travels in each client's
//! [`RatePlan::prox_mu`](fedpace_core::RatePlan::prox_mu), so any rate policy may set
//! it per client; this strategy only puts the configured μ into the base plan.
//!
//! Systems heterogeneity (stragglers doing partial work, or being dropped) is not
//! part of the strategy: the `fedpace-sim` devices wrapper sets each straggler's
//! `max_steps` (or removes it), so it composes with every strategy.

use crate::fedavg::{FedAvg, FedAvgConfig};
use fedpace_core::{
    AggregateSummary, ClientId, ClientPool, Error, RatePlan, RatePolicy, Reply, Result, Strategy,
    TrainIns, TrainRes,
};
use fedpace_params::ParamTree;
use std::sync::Arc;

/// FedAvg with a proximal term of coefficient μ in every client's plan.
pub struct FedProx {
    inner: FedAvg,
    mu: f64,
}

impl FedProx {
    /// FedProx with base μ `mu` (written into `cfg.base_plan.prox_mu`).
    pub fn new(mut cfg: FedAvgConfig, mu: f64, policy: Box<dyn RatePolicy>) -> Result<Self> {
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(Error::invalid("strategy.mu", mu, "a finite μ >= 0"));
        }
        cfg.base_plan.prox_mu = mu;
        Ok(Self {
            inner: FedAvg::new(cfg, policy),
            mu,
        })
    }
}

impl Strategy for FedProx {
    fn describe(&self) -> String {
        format!("fedprox(mu={}) on {}", self.mu, self.inner.describe())
    }
    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        self.inner.configure_train(round, global, pool, seed)
    }
    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        self.inner.aggregate_train(round, global, replies, pool)
    }
    fn eval_plan(&self) -> RatePlan {
        self.inner.eval_plan()
    }
}
