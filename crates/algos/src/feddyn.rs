//! FedDyn (docs/algorithms.md §B.4; docs/drift-and-systems.md): dynamic regularisation. This
//! module is the whole algorithm: [`FedDynConfig`], the payloads [`FedDynDown`] and
//! [`FedDynState`], the server hooks (h) and the client hook (g_k).
//!
//! Client k (holding g_k in its state) minimises
//! `L_k(θ) − ⟨g_k, θ⟩ + (α/2)‖θ − θ^{t−1}‖²` under its rate plan (the linear term and
//! the proximal term are added to every gradient), then sets
//! `g_k ← g_k − α(θ_k − θ^{t−1})`. The plan's own `prox_mu` adds on top of α.
//!
//! Server (state h, m = N the whole pool):
//! `h ← h − α (1/m) Σ_{k∈P} (θ_k − θ^{t−1})`,
//! `θ^t = θ^{t−1} + η_g · (1/|P|) Σ_{k∈P} (θ_k − θ^{t−1}) − h/α` (η_g = 1 is the paper).
//! The h update is a post-aggregate hook; −h/α is the correction it hands the server
//! step, so a server optimiser other than `sgd` replaces the middle term only.
//!
//! As in the reference code (FL-bench, Acar et al.'s), the client clips the gradient
//! of its whole local objective (loss gradient, linear and proximal terms) to global
//! L2 norm `max_grad_norm` (`strategy.feddyn_clip`, default 10; 0 turns it off)
//! before its local optimiser's step.

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::local::check_len;
use crate::parts::{Finish, LocalHook, Terms};
use crate::pipeline::{AfterAggregate, AggregationPath, Pipeline, ServerHooks, Weighting};
use crate::registry::Algorithms;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::ext::{f32s, Payload};
use fedpace_core::{Error, LocalState, Result, TrainIns};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};
use std::any::Any;

/// `feddyn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedDynConfig {
    /// Regulariser α > 0 (default 0.1).
    pub alpha: f64,
    /// Clip each corrected local gradient to this global L2 norm (default 10, the
    /// reference code's; 0 = no clipping).
    pub feddyn_clip: f64,
}

impl Default for FedDynConfig {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            feddyn_clip: 10.0,
        }
    }
}

/// Sent to every client: the dynamic regulariser's α and the gradient clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedDynDown {
    /// α > 0.
    pub alpha: f64,
    /// Clip each corrected local gradient to this global L2 norm; `None`: no clipping.
    pub max_grad_norm: Option<f64>,
}

impl Payload for FedDynDown {
    const NAME: &'static str = "feddyn-down";
}

/// Kept by every client: g_k, its estimate of ∇L_k at its last local optimum (absent =
/// 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FedDynState {
    /// g_k.
    #[serde(with = "f32s")]
    pub gradient: Vec<f32>,
}

impl Payload for FedDynState {
    const NAME: &'static str = "feddyn-state";
    fn heap_bytes(&self) -> usize {
        4 * self.gradient.len()
    }
}

fn check(alpha: f64, clip: Option<f64>, key: &str) -> Result<()> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::invalid(
            format!("{key}alpha"),
            alpha,
            "a finite α > 0",
        ));
    }
    if let Some(c) = clip {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::invalid(
                format!("{key}feddyn_clip"),
                c,
                "a finite norm >= 0 (0 turns clipping off)",
            ));
        }
    }
    Ok(())
}

impl Algorithm for FedDynConfig {
    const NAME: &'static str = "feddyn";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !(self.feddyn_clip.is_finite() && self.feddyn_clip >= 0.0) {
            return Err(Error::invalid(
                "strategy.feddyn_clip",
                self.feddyn_clip,
                "a finite norm >= 0 (0 turns clipping off)",
            ));
        }
        check(self.alpha, None, "strategy.")
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        if c.round.aggregation == AggregationPath::Linear {
            return Err(
                "strategy.aggregation = \"linear\": not supported by feddyn (its h needs the sum \
                 of the clients' raw updates beside their weighted aggregate)"
                    .into(),
            );
        }
        Ok(())
    }
    fn register(a: &mut Algorithms) {
        a.payload::<FedDynDown>().payload::<FedDynState>();
        a.parts().add_hook(FedDynClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        let clip = (self.feddyn_clip > 0.0).then_some(self.feddyn_clip);
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(FedDynServer::new(self.alpha, clip)?),
            )
            .with_server(cx.server)
            .with_weighting(Weighting::Uniform),
        )))
    }
}

/// FedDyn's server hooks: keeps h, sends α, corrects the model by −h/α.
pub struct FedDynServer {
    alpha: f64,
    max_grad_norm: Option<f64>,
    h: Vec<f64>,
}

/// What [`FedDynServer`] saves.
#[derive(Serialize, Deserialize)]
struct FedDynServerState {
    h: Vec<f64>,
}

impl FedDynServer {
    /// Hooks with regulariser α > 0 and the clients' gradient clip.
    pub fn new(alpha: f64, max_grad_norm: Option<f64>) -> Result<Self> {
        check(alpha, max_grad_norm, "strategy.")?;
        Ok(Self {
            alpha,
            max_grad_norm,
            h: Vec::new(),
        })
    }
    /// The server state h (empty before the first round).
    pub fn h(&self) -> &[f64] {
        &self.h
    }
}

impl ServerHooks for FedDynServer {
    fn describe(&self) -> String {
        match self.max_grad_norm {
            Some(c) => format!("alpha={}, clip={c}", self.alpha),
            None => format!("alpha={}", self.alpha),
        }
    }
    fn start(&mut self, global: &ParamTree) -> Result<()> {
        if self.h.len() != global.as_slice().len() {
            self.h = vec![0.0; global.as_slice().len()];
        }
        Ok(())
    }
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        ins.ext.insert(FedDynDown {
            alpha: self.alpha,
            max_grad_norm: self.max_grad_norm,
        });
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let m = cx.pool.len().max(1) as f64;
        for (_, r) in cx.accepted {
            for (h, d) in self.h.iter_mut().zip(r.delta.as_slice()) {
                *h -= self.alpha * *d as f64 / m;
            }
        }
        Ok(Some(self.h.iter().map(|h| -(h / self.alpha)).collect()))
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&FedDynServerState { h: self.h.clone() })
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: FedDynServerState = from_cbor(bytes, "FedDyn server state")?;
        self.h = s.h;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// FedDyn's client hook.
struct FedDynClient;

impl LocalHook for FedDynClient {
    fn payload(&self) -> &'static str {
        FedDynDown::NAME
    }

    fn prepare(&self, ins: &TrainIns, state: &LocalState, terms: &mut Terms) -> Result<()> {
        let down = ins
            .ext
            .get::<FedDynDown>()
            .expect("switched on by its payload");
        check(down.alpha, down.max_grad_norm, "feddyn-down.")?;
        terms.clip = down.max_grad_norm;
        terms.prox_mu += down.alpha;
        if let Some(g) = state.ext.get::<FedDynState>() {
            check_len(
                "feddyn-state.gradient",
                &g.gradient,
                ins.params.as_slice().len(),
            )?;
            let neg: Vec<f32> = g.gradient.iter().map(|v| -v).collect();
            terms.add_linear(&neg)?;
        }
        Ok(())
    }

    fn finish(&self, cx: &mut Finish<'_>) -> Result<()> {
        // g_k ← g_k − α(θ_k − θ^{t−1})
        let down = cx
            .ins
            .ext
            .get::<FedDynDown>()
            .expect("switched on by its payload");
        let a = down.alpha as f32;
        let mut g = cx
            .state
            .ext
            .remove::<FedDynState>()
            .map(|s| s.gradient)
            .unwrap_or_else(|| vec![0.0; cx.delta.len()]);
        for (gv, d) in g.iter_mut().zip(cx.delta) {
            *gv -= a * d;
        }
        cx.state.ext.insert(FedDynState { gradient: g });
        Ok(())
    }
}
