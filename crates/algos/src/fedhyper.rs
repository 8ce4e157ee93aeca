//! FedHyper (docs/learned-rates.md, "FedHyper"; Wang, Wang, Li, ICLR 2024): the server
//! learns its own rate, and optionally the clients' rate, from the hypergradient of the
//! loss with respect to the rate, approximated by the agreement of successive aggregate
//! updates.
//!
//! With Δ̄^t the round's aggregate update and `a` an accumulator (0 at the start):
//!
//! ```text
//! a ← clip(a + ⟨Δ̄^t, Δ̄^{t−1}⟩, a_min, a_max)              (from the second round on)
//! x ← x + η_g Δ̄^t + a Δ̄^t                                 (`global`: η_g(t) = η_g + a)
//! x ← x + … + β a h,   h ← Δ̄^t + β h                      (`momentum = β > 0`, the GM variant)
//! η_k ← clip(η_k,0 · (1 + a), lr_min, lr_max)              (`server_local`, next round's plans)
//! ```
//!
//! The client-side scheduler (FedHyper-CL) is not built. The accumulator, the previous
//! aggregate and the momentum history are the hooks' state; `a`, the server rate
//! `η_g + a` and the clients' rate factor go to `metrics.jsonl` (`learned`) each round.

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{ClientInfo, ClientPool, Error, RatePlan, Result};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// `fedhyper`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedHyperConfig {
    /// Learn the server rate (FedHyper-G; default true).
    pub global: bool,
    /// Scale every client's rate by (1 + a) (FedHyper-SL; default false).
    pub server_local: bool,
    /// Momentum β of the GM variant (default 0: plain G).
    pub momentum: f64,
    /// Lower clip of a (default −0.8: η_g + a ≥ 0.2 at η_g = 1).
    pub a_min: f64,
    /// Upper clip of a (default 4).
    pub a_max: f64,
    /// Lower clip of a client rate under `server_local` (default 0.001).
    pub lr_min: f64,
    /// Upper clip of a client rate under `server_local` (default 0.1).
    pub lr_max: f64,
}

impl Default for FedHyperConfig {
    fn default() -> Self {
        Self {
            global: true,
            server_local: false,
            momentum: 0.0,
            a_min: -0.8,
            a_max: 4.0,
            lr_min: 0.001,
            lr_max: 0.1,
        }
    }
}

impl Algorithm for FedHyperConfig {
    const NAME: &'static str = "fedhyper";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !self.global && !self.server_local {
            return Err(Error::invalid(
                "strategy.global",
                false,
                "true, or strategy.server_local = true (else nothing is learned)",
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid(
                "strategy.momentum",
                self.momentum,
                "in [0, 1)",
            ));
        }
        if !(self.a_min.is_finite()
            && self.a_max.is_finite()
            && self.a_min <= 0.0
            && self.a_max >= 0.0)
        {
            return Err(Error::invalid(
                "strategy.a_min",
                format!("{}..{}", self.a_min, self.a_max),
                "finite a_min <= 0 <= a_max",
            ));
        }
        if !(self.lr_min > 0.0 && self.lr_min <= self.lr_max && self.lr_max.is_finite()) {
            return Err(Error::invalid(
                "strategy.lr_min",
                format!("{}..{}", self.lr_min, self.lr_max),
                "0 < lr_min <= lr_max",
            ));
        }
        crate::config::check_f32("strategy.lr_max", self.lr_max)
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        if self.global && c.round.server_optimizer != crate::fedopt::ServerOptimizerConfig::Sgd {
            return Err(
                "strategy fedhyper with global = true learns the plain server step's rate: \
                 it cannot run with a strategy.server_optimizer"
                    .into(),
            );
        }
        Ok(())
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings.clone(),
                cx.policy,
                Box::new(FedHyper::new(self.clone(), cx.settings.server_lr)),
            )
            .with_server(cx.server),
        )))
    }
}

/// FedHyper's server state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FedHyperState {
    /// The accumulator a.
    pub a: f64,
    /// Δ̄^{t−1} (empty before the first round).
    pub previous: Vec<f32>,
    /// The momentum history h (GM variant).
    pub history: Vec<f64>,
}

/// The server half (see the module doc).
pub struct FedHyper {
    cfg: FedHyperConfig,
    server_lr: f64,
    state: FedHyperState,
}

impl FedHyper {
    /// FedHyper at a = 0 with the configured server rate η_g.
    pub fn new(cfg: FedHyperConfig, server_lr: f64) -> Self {
        Self {
            cfg,
            server_lr,
            state: FedHyperState::default(),
        }
    }

    /// The state.
    pub fn state(&self) -> &FedHyperState {
        &self.state
    }

    /// One round's update from the aggregate Δ̄^t: the accumulator, then the additive
    /// correction of the model (`None` when `global` is off).
    pub fn step(&mut self, aggregate: &[f32]) -> Option<Vec<f64>> {
        let s = &mut self.state;
        if s.previous.len() == aggregate.len() {
            let dot: f64 = aggregate
                .iter()
                .zip(&s.previous)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            if dot.is_finite() {
                s.a = (s.a + dot).clamp(self.cfg.a_min, self.cfg.a_max);
            }
        }
        s.previous = aggregate.to_vec();
        let beta = self.cfg.momentum;
        let correction = self.cfg.global.then(|| {
            let mut c: Vec<f64> = aggregate.iter().map(|d| s.a * *d as f64).collect();
            if beta > 0.0 && s.history.len() == c.len() {
                for (c, h) in c.iter_mut().zip(&s.history) {
                    *c += beta * s.a * h;
                }
            }
            c
        });
        if beta > 0.0 {
            if s.history.len() != aggregate.len() {
                s.history = vec![0.0; aggregate.len()];
            }
            for (h, d) in s.history.iter_mut().zip(aggregate) {
                *h = *d as f64 + beta * *h;
            }
        }
        correction
    }
}

impl ServerHooks for FedHyper {
    fn describe(&self) -> String {
        format!(
            "global={}, server_local={}, momentum={}",
            self.cfg.global, self.cfg.server_local, self.cfg.momentum
        )
    }
    fn plan(
        &mut self,
        _round: u32,
        _info: &ClientInfo,
        _pool: &dyn ClientPool,
        _seed: u64,
        plan: &mut RatePlan,
    ) -> Result<()> {
        if self.cfg.server_local {
            let lr = (plan.base_lr as f64 * (1.0 + self.state.a))
                .clamp(self.cfg.lr_min, self.cfg.lr_max);
            plan.base_lr = lr as f32;
        }
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        Ok(self.step(cx.aggregate))
    }
    fn learned(&self) -> BTreeMap<String, f64> {
        let a = self.state.a;
        let mut m = BTreeMap::from([("fedhyper.a".to_string(), a)]);
        if self.cfg.global {
            m.insert("fedhyper.server_rate".into(), self.server_lr + a);
        }
        if self.cfg.server_local {
            m.insert("fedhyper.client_rate_factor".into(), 1.0 + a);
        }
        m
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&self.state)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = from_cbor(bytes, "fedhyper state")?;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pool() -> Vec<ClientInfo> {
        Vec::new()
    }

    /// Three rounds worked by hand (G, no momentum, a ∈ [−0.8, 4]):
    /// 1. Δ̄ = (1, 0): no previous aggregate, a = 0, correction 0.
    /// 2. Δ̄ = (0.5, 0.5): ⟨Δ̄², Δ̄¹⟩ = 0.5 ⇒ a = 0.5, correction 0.5·Δ̄ = (0.25, 0.25).
    /// 3. Δ̄ = (−10, 0): ⟨Δ̄³, Δ̄²⟩ = −5 ⇒ a = clip(−4.5) = −0.8, correction (8, 0).
    ///
    /// SL with η_0 = 0.01: round 4's rate is clip(0.01·0.2, 0.001, 0.1) = 0.002.
    #[test]
    fn fedhyper_update_matches_the_hand_derivation() {
        let mut f = FedHyper::new(
            FedHyperConfig {
                server_local: true,
                ..Default::default()
            },
            1.0,
        );
        assert_eq!(f.step(&[1.0, 0.0]), Some(vec![0.0, 0.0]));
        assert_eq!(f.step(&[0.5, 0.5]), Some(vec![0.25, 0.25]));
        assert_eq!(f.step(&[-10.0, 0.0]), Some(vec![8.0, -0.0]));
        assert!((f.state.a + 0.8).abs() < 1e-12);
        let mut plan = crate::policies::base_plan();
        plan.base_lr = 0.01;
        f.plan(4, &ClientInfo::new(0, 1, 1), &no_pool(), 0, &mut plan)
            .unwrap();
        assert!((plan.base_lr - 0.002).abs() < 1e-9, "{}", plan.base_lr);
        assert!((f.learned()["fedhyper.server_rate"] - 0.2).abs() < 1e-12);
    }

    /// GM with β = 0.5: round 1 Δ̄ = (1), h = 1; round 2 Δ̄ = (2): a = 2,
    /// correction = a·Δ̄ + β·a·h = 4 + 0.5·2·1 = 5, then h = 2 + 0.5 = 2.5.
    #[test]
    fn fedhyper_momentum_variant_by_hand() {
        let mut f = FedHyper::new(
            FedHyperConfig {
                momentum: 0.5,
                ..Default::default()
            },
            1.0,
        );
        assert_eq!(f.step(&[1.0]), Some(vec![0.0]));
        assert_eq!(f.step(&[2.0]), Some(vec![5.0]));
        assert_eq!(f.state.history, vec![2.5]);
    }
}
