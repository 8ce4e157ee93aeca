//! FedAsync (docs/algorithms.md §C.8): one server update per arriving client model,
//! `x_t = (1 − α_t) x_{t−1} + α_t x_new`, `α_t = α · s(t − τ)`, where `x_new` is the
//! client's model (its base `x_τ` plus its update) and s a [`Staleness`] function.
//! The client-side proximal term ρ of the paper is the plan's `prox_mu` (config `mu`).
//! Runs in `fedpace_sim::run_async`, which also decays each client's rate by s of
//! its previous staleness (see that function).

use crate::config::{Algorithm, AsyncBuilt, BuildCx, Built, RoundConfig};
use fedpace_core::asynchronous::{ArrivalOutcome, AsyncStrategy, Staleness};
use fedpace_core::{ClientId, Error, Result, TrainRes};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// `fedasync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAsyncConfig {
    /// Mixing weight α ∈ (0, 1] (default 0.6).
    pub async_alpha: f64,
    /// Staleness function s(τ), e.g. `{ name = "hinge", a = 10, b = 4 }` (default
    /// `{ name = "polynomial", a = 0.5 }`).
    pub staleness: Staleness,
    /// The clients' proximal coefficient ρ (the paper's; default 0.01).
    pub mu: f64,
    /// Clients training at once (default 10).
    pub concurrency: usize,
    /// Multiply a client's rate by s(its previous staleness) (default true).
    pub rate_decay: bool,
}

impl Default for FedAsyncConfig {
    fn default() -> Self {
        Self {
            async_alpha: 0.6,
            staleness: Staleness::default(),
            mu: 0.01,
            concurrency: 10,
            rate_decay: true,
        }
    }
}

impl Algorithm for FedAsyncConfig {
    const NAME: &'static str = "fedasync";
    const ASYNC: bool = true;
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !(self.mu.is_finite() && self.mu >= 0.0) {
            return Err(Error::invalid("strategy.mu", self.mu, "a finite μ >= 0"));
        }
        crate::config::check_f32("strategy.mu", self.mu)?;
        if self.concurrency == 0 {
            return Err(Error::invalid("strategy.concurrency", 0, "at least 1"));
        }
        FedAsync::new(self.async_alpha, self.staleness).map(|_| ())
    }
    fn build(&self, mut cx: BuildCx) -> Result<Built> {
        // FedAsync's client-side proximal term ρ (docs/algorithms.md §C.8).
        cx.settings.base_plan.prox_mu = self.mu;
        Ok(Built::Async(AsyncBuilt {
            strategy: Box::new(FedAsync::new(self.async_alpha, self.staleness)?),
            policy: cx.policy,
            base_plan: cx.settings.base_plan,
            concurrency: self.concurrency,
            rate_decay: self.rate_decay,
        }))
    }
}

/// The FedAsync server.
#[derive(Debug, Clone)]
pub struct FedAsync {
    /// Mixing weight α ∈ (0, 1].
    pub alpha: f64,
    /// Staleness function s.
    pub staleness: Staleness,
}

impl FedAsync {
    /// FedAsync with mixing weight `alpha` and staleness function `staleness`.
    pub fn new(alpha: f64, staleness: Staleness) -> Result<Self> {
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(Error::invalid("strategy.async_alpha", alpha, "in (0, 1]"));
        }
        staleness.validate("strategy.staleness")?;
        Ok(Self { alpha, staleness })
    }

    /// α_t for an update `staleness` versions old.
    pub fn mixing_weight(&self, staleness: u64) -> f64 {
        self.alpha * self.staleness.weight(staleness)
    }
}

impl AsyncStrategy for FedAsync {
    fn describe(&self) -> String {
        format!(
            "fedasync(alpha={}, staleness={:?})",
            self.alpha, self.staleness
        )
    }

    fn on_arrival(
        &mut self,
        global: &mut ParamTree,
        base: &ParamTree,
        _client: ClientId,
        res: &TrainRes,
        staleness: u64,
    ) -> Result<ArrivalOutcome> {
        let a = self.mixing_weight(staleness);
        for ((x, b), d) in global
            .as_mut_slice()
            .iter_mut()
            .zip(base.as_slice())
            .zip(res.delta.as_slice())
        {
            let new = *b as f64 + *d as f64;
            *x = ((1.0 - a) * *x as f64 + a * new) as f32;
        }
        Ok(ArrivalOutcome {
            weight: a,
            new_version: true,
        })
    }

    fn staleness(&self) -> Staleness {
        self.staleness
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::TrainReport;
    use fedpace_params::ParamSpec;
    use std::sync::Arc;

    #[test]
    fn mixing_by_hand() {
        let spec = Arc::new(ParamSpec::builder().add("w", &[2], "body").build().unwrap());
        let mut s = FedAsync::new(0.6, Staleness::Polynomial { a: 0.5 }).unwrap();
        let mut x = ParamTree::from_vec(spec.clone(), vec![1.0, 2.0]).unwrap();
        let base = ParamTree::from_vec(spec.clone(), vec![0.0, 0.0]).unwrap();
        let res = TrainRes {
            delta: ParamTree::from_vec(spec, vec![4.0, -2.0]).unwrap(),
            num_examples: 1,
            report: TrainReport::default(),
            ext: Default::default(),
        };
        // staleness 3: α_t = 0.6 · 4^(−1/2) = 0.3; x = 0.7·[1,2] + 0.3·[4,−2]
        let o = s.on_arrival(&mut x, &base, 0, &res, 3).unwrap();
        assert!((o.weight - 0.3).abs() < 1e-12 && o.new_version);
        assert!((x.as_slice()[0] - 1.9).abs() < 1e-6);
        assert!((x.as_slice()[1] - 0.8).abs() < 1e-6);
        assert!(FedAsync::new(1.5, Staleness::Constant).is_err());
    }
}
