//! Optimisers as composable gradient transforms (optax-style), knowing nothing about
//! federations.
//!
//! A [`Transform`] is an `init`/`update` pair whose [`State`] **the caller owns**: a
//! client can keep it between rounds, checkpoint it, or let the server send it. The
//! learning rate is an input at every step ([`StepContext::group_rates`], one rate per
//! parameter group), never a constant baked into the optimiser, so any optimiser gets
//! per-layer and per-client rates for free by ending its chain with [`scale_by_rate`].
//!
//! Convention: `update` receives gradients (or the previous transform's output) and
//! leaves in the buffer the **additive update** to apply: `params += updates`.

use fedpace_params::ParamSpec;
use serde::{Deserialize, Serialize};

mod schedule;
pub use schedule::Schedule;

/// Errors from building or running transforms.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// The state handed back does not belong to this transform (e.g. after a model change).
    #[error("optimiser state does not match the transform: {0}")]
    StateMismatch(String),
    /// A rate vector has the wrong number of groups.
    #[error("got {got} group rates, the parameters have {expected} groups")]
    GroupCount {
        /// Groups in the spec.
        expected: usize,
        /// Rates supplied.
        got: usize,
    },
    /// A hyper-parameter is out of range.
    #[error("{name} = {value}: {expected}")]
    InvalidHyperParameter {
        /// Field name.
        name: &'static str,
        /// Offending value.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Serialisable optimiser state: a step count, flat buffers (moments, …) and the states
/// of nested transforms. One shape for every transform keeps checkpoints uniform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Number of updates applied so far.
    pub count: u64,
    /// Flat buffers, each as long as the parameter vector it tracks.
    pub buffers: Vec<Vec<f32>>,
    /// States of inner transforms (for combinators).
    pub children: Vec<State>,
}

/// Everything a transform may read at one step besides gradients and parameters.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// The parameter layout (groups, tensor boundaries).
    pub spec: &'a ParamSpec,
    /// The learning rate of every group at this step (already multiplied by schedules).
    pub group_rates: &'a [f32],
    /// Global step index (continues across rounds when the caller wants it to).
    pub step: u64,
}

/// A gradient transformation with caller-owned state.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// Fresh state for parameters laid out as `spec`.
    fn init(&self, spec: &ParamSpec) -> State;
    /// Transforms `updates` in place (gradients in, additive updates out).
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()>;
}

/// Multiplies each group's values by minus that group's current rate: the step that
/// turns a direction into an update. `u ← −η_g · u`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScaleByRate;

/// Builds [`ScaleByRate`].
pub fn scale_by_rate() -> ScaleByRate {
    ScaleByRate
}

impl Transform for ScaleByRate {
    fn init(&self, _spec: &ParamSpec) -> State {
        State::default()
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        if ctx.group_rates.len() != ctx.spec.num_groups() {
            return Err(Error::GroupCount {
                expected: ctx.spec.num_groups(),
                got: ctx.group_rates.len(),
            });
        }
        for e in ctx.spec.entries() {
            let r = -ctx.group_rates[e.group];
            for u in &mut updates[e.range()] {
                *u *= r;
            }
        }
        state.count += 1;
        Ok(())
    }
}

/// Applies transforms one after another; state is one child per transform.
#[derive(Debug)]
pub struct Chain(pub Vec<Box<dyn Transform>>);

/// Builds a [`Chain`].
pub fn chain(parts: Vec<Box<dyn Transform>>) -> Chain {
    Chain(parts)
}

impl Transform for Chain {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![],
            children: self.0.iter().map(|t| t.init(spec)).collect(),
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        if state.children.len() != self.0.len() {
            return Err(Error::StateMismatch(format!(
                "chain of {} transforms got state with {} children",
                self.0.len(),
                state.children.len()
            )));
        }
        for (t, s) in self.0.iter().zip(state.children.iter_mut()) {
            t.update(updates, s, params, ctx)?;
        }
        state.count += 1;
        Ok(())
    }
}

/// Plain SGD: `p ← p − η_g · g`, with the per-group rate read at every step.
///
/// ```
/// use fedpace_optim::{sgd, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
/// let tx = sgd();
/// let mut state = tx.init(&spec);
/// let mut g = vec![1.0, -2.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.5], step: 0 };
/// tx.update(&mut g, &mut state, &[0.0, 0.0], &ctx).unwrap();
/// assert_eq!(g, vec![-0.5, 1.0]);
/// ```
pub fn sgd() -> ScaleByRate {
    scale_by_rate()
}

/// Adds `updates` to `params` in place: `p ← p + u`.
pub fn apply_updates(params: &mut [f32], updates: &[f32]) {
    for (p, u) in params.iter_mut().zip(updates) {
        *p += u;
    }
}
