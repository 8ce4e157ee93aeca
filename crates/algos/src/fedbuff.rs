//! FedBuff (docs/algorithms.md §C.9): buffered asynchronous aggregation. Each arriving
//! update is added to a buffer as `s(τ)·Δ_i` (default s(τ) = 1/√(1+τ), the polynomial
//! with a = 0.5); when K updates are in, `x ← x + η_g · buf/K` and the buffer empties.
//! A client contributes at most once per buffer (it is not sent work while its update
//! sits in the buffer). Runs in `fedpace_sim::run_async`. The buffer is the
//! strategy's state ([`AsyncStrategy::save_state`]).

use crate::config::{Algorithm, AsyncBuilt, BuildCx, Built, RoundConfig};
use fedpace_core::asynchronous::{ArrivalOutcome, AsyncStrategy, Staleness};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{ClientId, Error, Result, TrainRes};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// `fedbuff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedBuffConfig {
    /// Updates per server step K (default 10).
    pub buffer_size: usize,
    /// Server rate η_g (default 1).
    pub server_lr: f64,
    /// Staleness function s(τ) (default `{ name = "polynomial", a = 0.5 }`).
    pub staleness: Staleness,
    /// Clients training at once (default 10).
    pub concurrency: usize,
    /// Multiply a client's rate by s(its previous staleness) (default true).
    pub rate_decay: bool,
}

impl Default for FedBuffConfig {
    fn default() -> Self {
        Self {
            buffer_size: 10,
            server_lr: 1.0,
            staleness: Staleness::default(),
            concurrency: 10,
            rate_decay: true,
        }
    }
}

impl Algorithm for FedBuffConfig {
    const NAME: &'static str = "fedbuff";
    const ASYNC: bool = true;
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid("strategy.concurrency", 0, "at least 1"));
        }
        FedBuff::new(self.buffer_size, self.server_lr, self.staleness).map(|_| ())
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Async(AsyncBuilt {
            strategy: Box::new(FedBuff::new(
                self.buffer_size,
                self.server_lr,
                self.staleness,
            )?),
            policy: cx.policy,
            base_plan: cx.settings.base_plan,
            concurrency: self.concurrency,
            rate_decay: self.rate_decay,
        }))
    }
}

/// What [`FedBuff`] saves: the buffer and who is in it.
#[derive(Serialize, Deserialize)]
struct FedBuffState {
    buffer: Vec<f64>,
    in_buffer: Vec<ClientId>,
}

/// The FedBuff server.
#[derive(Debug, Clone)]
pub struct FedBuff {
    k: usize,
    server_lr: f64,
    staleness: Staleness,
    buffer: Vec<f64>,
    in_buffer: Vec<ClientId>,
}

impl FedBuff {
    /// FedBuff with buffer size `k`, server rate η_g and staleness function.
    pub fn new(k: usize, server_lr: f64, staleness: Staleness) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid("strategy.buffer_size", 0, "at least 1"));
        }
        if !(server_lr.is_finite() && server_lr > 0.0) {
            return Err(Error::invalid(
                "strategy.server_lr",
                server_lr,
                "must be > 0",
            ));
        }
        staleness.validate("strategy.staleness")?;
        Ok(Self {
            k,
            server_lr,
            staleness,
            buffer: Vec::new(),
            in_buffer: Vec::new(),
        })
    }
}

impl AsyncStrategy for FedBuff {
    fn describe(&self) -> String {
        format!(
            "fedbuff(K={}, server_lr={}, staleness={:?})",
            self.k, self.server_lr, self.staleness
        )
    }

    fn on_arrival(
        &mut self,
        global: &mut ParamTree,
        _base: &ParamTree,
        client: ClientId,
        res: &TrainRes,
        staleness: u64,
    ) -> Result<ArrivalOutcome> {
        let d = res.delta.as_slice();
        if self.buffer.len() != d.len() {
            self.buffer = vec![0.0; d.len()];
        }
        let s = self.staleness.weight(staleness);
        for (b, v) in self.buffer.iter_mut().zip(d) {
            *b += s * *v as f64;
        }
        self.in_buffer.push(client);
        let new_version = self.in_buffer.len() >= self.k;
        if new_version {
            let scale = self.server_lr / self.k as f64;
            for (x, b) in global.as_mut_slice().iter_mut().zip(&mut self.buffer) {
                *x = (*x as f64 + scale * *b) as f32;
                *b = 0.0;
            }
            self.in_buffer.clear();
        }
        Ok(ArrivalOutcome {
            weight: s / self.k as f64,
            new_version,
        })
    }

    fn staleness(&self) -> Staleness {
        self.staleness
    }

    fn may_dispatch(&self, client: ClientId) -> bool {
        !self.in_buffer.contains(&client)
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&FedBuffState {
            buffer: self.buffer.clone(),
            in_buffer: self.in_buffer.clone(),
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: FedBuffState = from_cbor(bytes, "FedBuff state")?;
        self.buffer = s.buffer;
        self.in_buffer = s.in_buffer;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::TrainReport;
    use fedpace_params::ParamSpec;
    use std::sync::Arc;

    #[test]
    fn buffer_of_two_by_hand() {
        let spec = Arc::new(ParamSpec::builder().add("w", &[1], "body").build().unwrap());
        let res = |v: f32| TrainRes {
            delta: ParamTree::from_vec(spec.clone(), vec![v]).unwrap(),
            num_examples: 1,
            report: TrainReport::default(),
            ext: Default::default(),
        };
        let mut s = FedBuff::new(2, 1.0, Staleness::default()).unwrap();
        let mut x = ParamTree::from_vec(spec.clone(), vec![1.0]).unwrap();
        let base = x.clone();
        let o = s.on_arrival(&mut x, &base, 4, &res(2.0), 0).unwrap();
        assert!(!o.new_version && x.as_slice()[0] == 1.0 && !s.may_dispatch(4));
        // staleness 3 → s = 1/2; x = 1 + (2 + 0.5·4)/2 = 3
        let o = s.on_arrival(&mut x, &base, 5, &res(4.0), 3).unwrap();
        assert!(o.new_version && (o.weight - 0.25).abs() < 1e-12);
        assert!((x.as_slice()[0] - 3.0).abs() < 1e-6 && s.may_dispatch(4));
        // The buffer survives a save and restore mid-way.
        s.on_arrival(&mut x, &base, 6, &res(1.0), 0).unwrap();
        let mut t = FedBuff::new(2, 1.0, Staleness::default()).unwrap();
        t.restore_state(&s.save_state().unwrap()).unwrap();
        let (mut x1, mut x2) = (x.clone(), x.clone());
        s.on_arrival(&mut x1, &base, 7, &res(3.0), 1).unwrap();
        t.on_arrival(&mut x2, &base, 7, &res(3.0), 1).unwrap();
        assert_eq!(x1, x2);
        assert!(!t.may_dispatch(7) || t.may_dispatch(6));
    }
}
