//! FedAsync (ALGORITHMS.md C.8): one server update per arriving client model,
//! `x_t = (1 − α_t) x_{t−1} + α_t x_new`, `α_t = α · s(t − τ)`, where `x_new` is the
//! client's model (its base `x_τ` plus its update) and s a [`Staleness`] function.
//! The client-side proximal term ρ of the paper is the plan's `prox_mu` (config `mu`).
//! Runs in `fedpace_sim::run_async`, which also decays each client's rate by s of
//! its previous staleness (see that function).

use fedpace_core::asynchronous::{ArrivalOutcome, AsyncStrategy, Staleness};
use fedpace_core::{ClientId, Error, Result, TrainRes};
use fedpace_params::ParamTree;

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
            extras: Default::default(),
        };
        // staleness 3: α_t = 0.6 · 4^(−1/2) = 0.3; x = 0.7·[1,2] + 0.3·[4,−2]
        let o = s.on_arrival(&mut x, &base, 0, &res, 3).unwrap();
        assert!((o.weight - 0.3).abs() < 1e-12 && o.new_version);
        assert!((x.as_slice()[0] - 1.9).abs() < 1e-6);
        assert!((x.as_slice()[1] - 0.8).abs() < 1e-6);
        assert!(FedAsync::new(1.5, Staleness::Constant).is_err());
    }
}
