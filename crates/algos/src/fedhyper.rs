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
//! `client_local` (FedHyper-CL) schedules each client's rate inside its round: the server
//! sends Δ̄^{t−1} and `c = cl_global_weight / M` (M: clients aggregated in round t − 1),
//! and after every local step s ≥ 2, with `u_s = y_s − y_{s−1}`,
//!
//! ```text
//! γ_s = min(cl_cap, 1 + c·⟨u_s, Δ̄^{t−1}⟩ + ⟨u_s, u_{s−1}⟩),   b ← clip(γ_s·b, cl_min, cl_max)
//! ```
//!
//! from `b = 1`; the next step runs at the plan's rates times b ([`FedHyperCl`], a
//! [`StepController`]). The accumulator, the previous aggregate, its client count and
//! the momentum history are the hooks' state; `a`, the server rate `η_g + a` and the
//! clients' rate factor go to `metrics.jsonl` (`learned`) each round, each client's
//! mean CL factor to its report (`report_ext.fedhyper-cl`).

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::local::StepController;
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks};
use crate::registry::Algorithms;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::ext::Payload;
use fedpace_core::{Batch, ClientInfo, ClientPool, Error, Model, RatePlan, Result, TrainIns};
use fedpace_optim::OptimizerSpec;
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// Schedule each client's rate inside its round (FedHyper-CL; default false).
    pub client_local: bool,
    /// CL: weight of the global term, divided by the clients per round M (default 0.1).
    pub cl_global_weight: f64,
    /// CL: largest factor γ_s of one step (default 1.1).
    pub cl_cap: f64,
    /// CL: lower clip of the rate factor b (default 0.1).
    pub cl_min: f64,
    /// CL: upper clip of the rate factor b (default 10).
    pub cl_max: f64,
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
            client_local: false,
            cl_global_weight: 0.1,
            cl_cap: 1.1,
            cl_min: 0.1,
            cl_max: 10.0,
        }
    }
}

impl Algorithm for FedHyperConfig {
    const NAME: &'static str = "fedhyper";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !self.global && !self.server_local && !self.client_local {
            return Err(Error::invalid(
                "strategy.global",
                false,
                "true, or strategy.server_local or strategy.client_local = true (else nothing \
                 is learned)",
            ));
        }
        if !(self.cl_global_weight.is_finite() && self.cl_global_weight >= 0.0) {
            return Err(Error::invalid(
                "strategy.cl_global_weight",
                self.cl_global_weight,
                "a finite weight >= 0",
            ));
        }
        if !(self.cl_cap.is_finite() && self.cl_cap >= 1.0) {
            return Err(Error::invalid(
                "strategy.cl_cap",
                self.cl_cap,
                "a finite factor >= 1",
            ));
        }
        if !(self.cl_min > 0.0
            && self.cl_min <= 1.0
            && self.cl_max >= 1.0
            && self.cl_max.is_finite())
        {
            return Err(Error::invalid(
                "strategy.cl_min",
                format!("{}..{}", self.cl_min, self.cl_max),
                "0 < cl_min <= 1 <= cl_max (finite)",
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
        if self.client_local && matches!(c.optimizer, OptimizerSpec::DeltaSgd { .. }) {
            return Err(format!(
                "strategy fedhyper with client_local = true schedules the clients' steps \
                 itself: it cannot run with {} (Δ-SGD's own step control)",
                c.optimizer_source
            ));
        }
        if self.global && c.round.server_optimizer != crate::fedopt::ServerOptimizerConfig::Sgd {
            return Err(
                "strategy fedhyper with global = true learns the plain server step's rate: \
                 it cannot run with a strategy.server_optimizer"
                    .into(),
            );
        }
        Ok(())
    }
    fn register(a: &mut Algorithms) {
        a.passive_payload::<FedHyperClDown>()
            .payload::<FedHyperClReport>();
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
    /// Clients aggregated into Δ̄^{t−1} (FedHyper-CL's M; 0 before the first round).
    #[serde(default)]
    pub previous_clients: usize,
}

/// Down (FedHyper-CL): what the client's step controller needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FedHyperClDown {
    /// Δ̄^{t−1}, the previous round's aggregate update (empty in the first round: 0).
    pub previous: Arc<Vec<f32>>,
    /// `c = cl_global_weight / M`.
    pub global_weight: f64,
    /// Largest factor of one step.
    pub cap: f64,
    /// Clip of the rate factor b.
    pub min: f64,
    /// Clip of the rate factor b.
    pub max: f64,
}

impl Payload for FedHyperClDown {
    const NAME: &'static str = "fedhyper-cl";
}

/// Up, in the report (FedHyper-CL): the client's rate factors b over its round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FedHyperClReport {
    /// Mean factor over the local steps (the plan's rates times this, on average).
    pub mean_factor: f64,
    /// The factor of the last step.
    pub last_factor: f64,
}

impl Payload for FedHyperClReport {
    const NAME: &'static str = "fedhyper-cl-report";
}

/// FedHyper-CL's client half (see the module doc): the rate factor b of the local loop,
/// from the steps the loop takes.
#[derive(Debug, Clone)]
pub struct FedHyperCl {
    down: FedHyperClDown,
    b: f64,
    prev: Option<Vec<f32>>,
    prev_step: Option<Vec<f32>>,
    sum: f64,
    steps: u64,
}

impl FedHyperCl {
    /// A controller at b = 1.
    pub fn new(down: FedHyperClDown) -> Self {
        Self {
            down,
            b: 1.0,
            prev: None,
            prev_step: None,
            sum: 0.0,
            steps: 0,
        }
    }

    /// Sees the iterate `y_k` before local step k + 1 and returns the factor of that step.
    pub fn next(&mut self, y: &[f32]) -> f64 {
        if let Some(prev) = &self.prev {
            let u: Vec<f32> = y.iter().zip(prev).map(|(a, b)| a - b).collect();
            if let Some(pu) = &self.prev_step {
                let dot = |a: &[f32], b: &[f32]| -> f64 {
                    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
                };
                let x = if self.down.previous.len() == u.len() {
                    self.down.global_weight * dot(&u, &self.down.previous)
                } else {
                    0.0
                };
                let z = dot(&u, pu);
                let gamma = (1.0 + x + z).min(self.down.cap);
                if gamma.is_finite() {
                    self.b = (gamma * self.b).clamp(self.down.min, self.down.max);
                }
            }
            self.prev_step = Some(u);
        }
        match &mut self.prev {
            Some(p) => p.copy_from_slice(y),
            None => self.prev = Some(y.to_vec()),
        }
        self.sum += self.b;
        self.steps += 1;
        self.b
    }

    /// What the client reports: the mean and last factor.
    pub fn report(&self) -> FedHyperClReport {
        FedHyperClReport {
            mean_factor: self.sum / self.steps.max(1) as f64,
            last_factor: self.b,
        }
    }
}

impl StepController for FedHyperCl {
    fn factor(
        &mut self,
        _model: &mut dyn Model,
        _batch: &Batch,
        params: &ParamTree,
        _grad: &[f32],
    ) -> Result<f64> {
        Ok(self.next(params.as_slice()))
    }
}

/// FedHyper-CL's controller when the instruction carries [`FedHyperClDown`]; an error
/// when its plan has a step controller of its own (Δ-SGD).
pub fn client_controller(ins: &TrainIns) -> Result<Option<FedHyperCl>> {
    let Some(d) = ins.ext.get::<FedHyperClDown>() else {
        return Ok(None);
    };
    if matches!(ins.plan.optimizer, OptimizerSpec::DeltaSgd { .. }) {
        return Err(Error::invalid(
            "plan.optimizer",
            "delta-sgd",
            "a plan without its own step control under fedhyper client_local",
        ));
    }
    Ok(Some(FedHyperCl::new(d.clone())))
}

/// The server half (see the module doc).
pub struct FedHyper {
    cfg: FedHyperConfig,
    server_lr: f64,
    state: FedHyperState,
    /// FedHyper-CL's payload of the current round (built at its first instruction).
    down: Option<FedHyperClDown>,
    /// FedHyper-CL: the mean over this round's clients of their mean rate factor.
    cl_mean: Option<f64>,
}

impl FedHyper {
    /// FedHyper at a = 0 with the configured server rate η_g.
    pub fn new(cfg: FedHyperConfig, server_lr: f64) -> Self {
        Self {
            cfg,
            server_lr,
            state: FedHyperState::default(),
            down: None,
            cl_mean: None,
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
            "global={}, server_local={}, client_local={}, momentum={}",
            self.cfg.global, self.cfg.server_local, self.cfg.client_local, self.cfg.momentum
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
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        if self.cfg.client_local {
            if self.down.is_none() {
                let m = self.state.previous_clients.max(1) as f64;
                self.down = Some(FedHyperClDown {
                    previous: Arc::new(self.state.previous.clone()),
                    global_weight: self.cfg.cl_global_weight / m,
                    cap: self.cfg.cl_cap,
                    min: self.cfg.cl_min,
                    max: self.cfg.cl_max,
                });
            }
            ins.ext.insert(self.down.clone().expect("set just above"));
        }
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let factors: Vec<f64> = cx
            .accepted
            .iter()
            .filter_map(|(_, r)| r.report.ext.get::<FedHyperClReport>())
            .map(|r| r.mean_factor)
            .collect();
        self.cl_mean =
            (!factors.is_empty()).then(|| factors.iter().sum::<f64>() / factors.len() as f64);
        self.state.previous_clients = cx.accepted.len();
        self.down = None;
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
        if let Some(f) = self.cl_mean {
            m.insert("fedhyper.cl_factor_mean".into(), f);
        }
        m
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&self.state)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = from_cbor(bytes, "fedhyper state")?;
        self.down = None;
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

    /// FedHyper-CL by hand (c = 0.1/M with M = 2, Δ̄^{t−1} = (1, 0), cap 1.1, clip
    /// [0.1, 10]); `tests/golden/fedhyper_cl.py` works the same in float64:
    /// y0 → b = 1; y1 (u1 = (0.5, 0)) → 1, no previous step yet;
    /// y2 (u2 = (0.5, 0.5)): 1 + 0.05·0.5 + ⟨u2, u1⟩ = 1.275, capped at 1.1 → b = 1.1;
    /// y3 (u3 = (−0.1, 0)): 1 − 0.005 − 0.05 = 0.945 → b = 1.0395;
    /// y4 (u4 = (0, 0.5)): 1 + 0 + 0 → 1.0395;
    /// y5 (u5 = (−20.9, 0)): 1 − 1.045 + 0 = −0.045 → b = −0.0468 → clipped to 0.1;
    /// y6 (u6 = (0, 0.5)): 1 → 0.1. Mean factor 5.379/7 = 0.768428571….
    #[test]
    fn fedhyper_cl_factor_matches_the_derivation_script() {
        let mut cl = FedHyperCl::new(FedHyperClDown {
            previous: Arc::new(vec![1.0, 0.0]),
            global_weight: 0.1 / 2.0,
            cap: 1.1,
            min: 0.1,
            max: 10.0,
        });
        let ys: [[f32; 2]; 7] = [
            [0.0, 0.0],
            [0.5, 0.0],
            [1.0, 0.5],
            [0.9, 0.5],
            [0.9, 1.0],
            [-20.0, 1.0],
            [-20.0, 1.5],
        ];
        let want = [1.0, 1.0, 1.1, 1.0395, 1.0395, 0.1, 0.1];
        for (y, w) in ys.iter().zip(want) {
            let f = cl.next(y);
            // f32 iterates: the steps are exact to ~1e-7.
            assert!((f - w).abs() < 1e-6, "{f} vs {w}");
        }
        let r = cl.report();
        assert!((r.mean_factor - 0.768428571429).abs() < 1e-6, "{r:?}");
        assert_eq!(r.last_factor, 0.1);
    }

    /// The server half: no payload without `client_local`; with it, Δ̄^{t−1} and
    /// c = 0.1/M where M is the number of clients aggregated into Δ̄^{t−1}.
    #[test]
    fn fedhyper_cl_sends_the_previous_aggregate_and_its_weight() {
        let ins = || {
            let spec = fedpace_params::ParamSpec::builder()
                .add("w", &[2], "all")
                .build()
                .unwrap();
            TrainIns::new(
                1,
                Arc::new(ParamTree::zeros(Arc::new(spec))),
                crate::policies::base_plan(),
                0,
            )
        };
        let mut off = FedHyper::new(FedHyperConfig::default(), 1.0);
        let mut i = ins();
        off.attach(1, &mut i).unwrap();
        assert!(i.ext.get::<FedHyperClDown>().is_none());
        let mut f = FedHyper::new(
            FedHyperConfig {
                client_local: true,
                ..Default::default()
            },
            1.0,
        );
        let mut i = ins();
        f.attach(1, &mut i).unwrap();
        let d = i.ext.get::<FedHyperClDown>().unwrap();
        assert!(d.previous.is_empty() && (d.global_weight - 0.1).abs() < 1e-15);
        f.step(&[0.5, -1.0]);
        f.state.previous_clients = 4;
        f.down = None;
        let mut i = ins();
        f.attach(2, &mut i).unwrap();
        let d = i.ext.get::<FedHyperClDown>().unwrap();
        assert_eq!(*d.previous, vec![0.5, -1.0]);
        assert!((d.global_weight - 0.025).abs() < 1e-15);
        // A Δ-SGD plan has its own step control: refused, never silently mixed.
        let mut i2 = i.clone();
        i2.plan.optimizer = OptimizerSpec::DeltaSgd {
            gamma: 2.0,
            delta: 0.1,
            eps: 1e-8,
        };
        assert!(client_controller(&i2).is_err());
        assert!(client_controller(&i).unwrap().is_some());
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
