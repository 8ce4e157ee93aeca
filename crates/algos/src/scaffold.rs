//! SCAFFOLD (docs/algorithms.md §B.2; docs/drift-and-systems.md): control variates correct
//! client drift. This module is the whole algorithm: its `[strategy]` keys
//! ([`ScaffoldConfig`]), its payloads ([`ScaffoldDown`], [`ScaffoldUp`],
//! [`ScaffoldState`]), its server hooks and its client hook.
//!
//! Client i (holding c_i in its state) runs its plan on `g_i(y) − c_i + c`, then
//! refreshes c_i by option I (`∇F_i(x)`, an extra pass) or option II
//! (`c_i − c + (x − y)/Λ_i`, per parameter group, where Λ_i = Σ_s η_{i,s} is the
//! client's own rate sum: the rate-aware form of `(x − y)/(K η_l)`, so per-client and
//! per-layer rates are exact). It returns Δy_i and Δc_i.
//!
//! Server: `x ← x + η_g · (1/|S|) Σ Δy_i` (a simple mean, as the paper; objective-
//! consistency normalisation as in FedAvg when rate sums differ; any server optimiser),
//! then `c ← c + (1/N) Σ_{i∈S} Δc_i` with N the whole pool.

use crate::config::{Algorithm, BuildCx, Built};
use crate::local::{check_len, full_gradient};
use crate::parts::{Finish, LocalHook, Terms};
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks, Weighting};
use crate::registry::Algorithms;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::ext::{f32s, Payload};
use fedpace_core::{Error, LocalState, Result, TrainIns};
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::Arc;

/// How a SCAFFOLD client refreshes its control variate (docs/algorithms.md §B.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ScaffoldOption {
    /// `c_i⁺ = ∇F_i(x)`: an extra full pass over the local training split at x.
    #[serde(rename = "i")]
    I,
    /// `c_i⁺ = c_i − c + (x − y)/Λ_i` per group, Λ_i the client's sum of rates (free).
    #[default]
    #[serde(rename = "ii")]
    II,
}

/// `scaffold`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaffoldConfig {
    /// Control-variate refresh, `"i"` or `"ii"` (default `"ii"`).
    pub scaffold_option: ScaffoldOption,
}

/// Sent to every client: the server control variate c and how to refresh c_i.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaffoldDown {
    /// Server control variate c (flat, laid out like the parameters).
    #[serde(with = "f32s::arc")]
    pub server_control: Arc<Vec<f32>>,
    /// Option I or II.
    pub option: ScaffoldOption,
}

impl Payload for ScaffoldDown {
    const NAME: &'static str = "scaffold-down";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        finite_of_len(&self.server_control, spec.total_len())
    }
}

/// Returned by every client: `Δc_i = c_i⁺ − c_i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaffoldUp {
    /// Δc_i (flat, laid out like the parameters).
    #[serde(with = "f32s")]
    pub control_delta: Vec<f32>,
}

impl Payload for ScaffoldUp {
    const NAME: &'static str = "scaffold-up";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        finite_of_len(&self.control_delta, spec.total_len())
    }
}

/// Kept by every client: its control variate c_i (absent = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaffoldState {
    /// c_i.
    #[serde(with = "f32s")]
    pub control: Vec<f32>,
}

impl Payload for ScaffoldState {
    const NAME: &'static str = "scaffold-state";
    fn heap_bytes(&self) -> usize {
        4 * self.control.len()
    }
}

fn finite_of_len(v: &[f32], len: usize) -> std::result::Result<(), String> {
    if v.len() != len {
        Err(format!("{} values, expected {len}", v.len()))
    } else if v.iter().any(|x| !x.is_finite()) {
        Err("NaN/Inf values".into())
    } else {
        Ok(())
    }
}

impl Algorithm for ScaffoldConfig {
    const NAME: &'static str = "scaffold";
    fn register(a: &mut Algorithms) {
        a.payload::<ScaffoldDown>()
            .payload::<ScaffoldUp>()
            .payload::<ScaffoldState>();
        a.parts().add_hook(ScaffoldClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(ScaffoldServer::new(self.scaffold_option)),
            )
            .with_server(cx.server)
            .with_weighting(Weighting::Uniform),
        )))
    }
}

/// SCAFFOLD's server hooks: keeps c, sends it, updates it from the clients' Δc_i.
pub struct ScaffoldServer {
    option: ScaffoldOption,
    control: Arc<Vec<f32>>,
}

impl ScaffoldServer {
    /// Hooks for `option`; c starts at 0.
    pub fn new(option: ScaffoldOption) -> Self {
        Self {
            option,
            control: Arc::new(Vec::new()),
        }
    }
    /// The server control variate c (empty before the first round).
    pub fn server_control(&self) -> &[f32] {
        &self.control
    }
}

impl ServerHooks for ScaffoldServer {
    fn describe(&self) -> String {
        format!("option={:?}", self.option)
    }
    fn start(&mut self, global: &ParamTree) -> Result<()> {
        if self.control.len() != global.as_slice().len() {
            self.control = Arc::new(vec![0.0; global.as_slice().len()]);
        }
        Ok(())
    }
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        ins.ext.insert(ScaffoldDown {
            server_control: self.control.clone(),
            option: self.option,
        });
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let mut dc = vec![0f64; cx.global.as_slice().len()];
        for (id, r) in cx.accepted {
            let up = r.ext.get::<ScaffoldUp>().ok_or_else(|| {
                Error::invalid(
                    format!("client {id}: reply"),
                    "no scaffold-up payload",
                    "a SCAFFOLD control-variate delta",
                )
            })?;
            for (a, d) in dc.iter_mut().zip(&up.control_delta) {
                *a += *d as f64;
            }
        }
        let n = cx.pool.len().max(1) as f64;
        let c = Arc::make_mut(&mut self.control);
        for (cv, d) in c.iter_mut().zip(&dc) {
            *cv = (*cv as f64 + d / n) as f32;
        }
        Ok(None)
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&ScaffoldState {
            control: self.control.to_vec(),
        })
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: ScaffoldState = from_cbor(bytes, "SCAFFOLD server state")?;
        self.control = Arc::new(s.control);
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// SCAFFOLD's client hook.
struct ScaffoldClient;

impl LocalHook for ScaffoldClient {
    fn payload(&self) -> &'static str {
        ScaffoldDown::NAME
    }

    fn prepare(&self, ins: &TrainIns, state: &LocalState, terms: &mut Terms) -> Result<()> {
        let down = ins
            .ext
            .get::<ScaffoldDown>()
            .expect("switched on by its payload");
        let len = ins.params.as_slice().len();
        check_len("scaffold-down.server_control", &down.server_control, len)?;
        let mut l = down.server_control.to_vec();
        if let Some(ci) = state.ext.get::<ScaffoldState>() {
            check_len("scaffold-state.control", &ci.control, len)?;
            for (a, c) in l.iter_mut().zip(&ci.control) {
                *a -= c;
            }
        }
        terms.add_linear(&l)
    }

    fn finish(&self, cx: &mut Finish<'_>) -> Result<()> {
        let down = cx
            .ins
            .ext
            .get::<ScaffoldDown>()
            .expect("switched on by its payload");
        let len = cx.delta.len();
        let old = cx
            .state
            .ext
            .remove::<ScaffoldState>()
            .map(|s| s.control)
            .unwrap_or_else(|| vec![0.0; len]);
        let new = match down.option {
            ScaffoldOption::I => full_gradient(cx.model, cx.data.train.as_ref(), &cx.ins.params)?,
            ScaffoldOption::II => {
                // c_i⁺ = c_i − c + (x − y)/Λ_{i,g}, per group g.
                let group = cx.ins.params.spec().group_of_each_value();
                let mut new = old.clone();
                for (j, v) in new.iter_mut().enumerate() {
                    let lam = cx.report.rate_sum[group[j] as usize];
                    if lam > 0.0 {
                        *v += -down.server_control[j] + (-cx.delta[j] as f64 / lam) as f32;
                    }
                }
                new
            }
        };
        let control_delta = new.iter().zip(&old).map(|(a, b)| a - b).collect();
        cx.state.ext.insert(ScaffoldState { control: new });
        cx.reply.insert(ScaffoldUp { control_delta });
        Ok(())
    }
}
