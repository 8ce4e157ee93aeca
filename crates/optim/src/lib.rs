//! Optimisers as composable gradient transforms (optax-style), knowing nothing about
//! federations.
//!
//! A [`Transform`] is an `init`/`update` pair whose [`State`] **the caller owns**: a
//! client can keep it between rounds, checkpoint it, or let the server send it (see
//! [`StateMode`], docs/algorithms.md §C.3). The learning rate is an input at every step
//! ([`StepContext::group_rates`], one rate per parameter group), never a constant baked
//! into the optimiser, so any optimiser gets per-layer and per-client rates for free by
//! ending its chain with [`scale_by_rate`] (docs/algorithms.md §1.4, §C.7).
//!
//! Convention: `update` receives gradients (or the previous transform's output) and
//! leaves in the buffer the **additive update** to apply: `params += updates`.
//!
//! Numerics: buffers and arithmetic are `f32`; hyper-parameters (β, ε, λ, μ, rates of
//! server optimisers, schedule constants) are `f64`, so that complements such as
//! `1 − β2` are formed from the decimal value written in a config, as PyTorch and
//! NumPy do with Python floats, before being rounded to `f32` once. With `f32`
//! hyper-parameters `1 − 0.999f32` is off by 5e-5 relative, which shows up in golden
//! tests against PyTorch.
//!
//! Map of the crate:
//!
//! * [`transforms`]: the building blocks (`trace`, `scale_by_adam`, `clip_by_global_norm`,
//!   `add_proximal`, …);
//! * [`combine`]: `chain`, `partition`, `masked`, `freeze`;
//! * [`alias`]: named optimisers (`sgd`, `momentum`, `adam`, `adamw`, …), each a chain
//!   ending in `scale_by_rate`;
//! * [`spec`]: the serde [`OptimizerSpec`] a rate plan carries, and [`StateMode`];
//! * [`schedule`]: round-aware learning-rate [`Schedule`]s;
//! * [`server`]: server optimisers on the pseudo-gradient −Δ̄ (FedAvgM, FedAdagrad,
//!   FedAdam, FedYogi, with a Flower-compatible rule; FedExP) — docs/algorithms.md §A.2–A.4, App. F;
//! * [`fednova`]: FedNova's normaliser Λ = η‖a_k‖₁ for linear local solvers (SGD,
//!   momentum, proximal, weight decay), step by step — docs/rate-policies.md.
//!
//! ```
//! use fedpace_optim::{adam, apply_updates, StepContext, Transform};
//! use fedpace_params::ParamSpec;
//! let spec = ParamSpec::builder().add("w", &[2], "body").add("b", &[1], "head").build().unwrap();
//! let tx = adam(0.9, 0.999, 1e-8);
//! let mut state = tx.init(&spec);
//! let mut params = vec![1.0f32, -1.0, 0.5];
//! for step in 0..3 {
//!     let mut g: Vec<f32> = params.iter().map(|p| 2.0 * p).collect(); // ∇ of ‖p‖²
//!     // head frozen by a zero rate; body at 0.1
//!     let ctx = StepContext { spec: &spec, group_rates: &[0.1, 0.0], step };
//!     tx.update(&mut g, &mut state, &params, &ctx).unwrap();
//!     apply_updates(&mut params, &g);
//! }
//! assert!(params[0] < 1.0 && params[1] > -1.0);
//! assert_eq!(params[2], 0.5);
//! ```

#![warn(missing_docs)]

use fedpace_params::ParamSpec;
use serde::{Deserialize, Serialize};

pub mod alias;
pub mod combine;
pub mod fednova;
pub mod schedule;
pub mod server;
pub mod spec;
pub mod transforms;

pub use alias::{adagrad, adam, adamw, amsgrad, momentum, sgd, yogi};
pub use combine::{chain, freeze, masked, partition, Chain, Freeze, Masked, Partition, Selector};
pub use fednova::{LinearSolver, Normalizer};
pub use schedule::Schedule;
pub use server::{FedOptConfig, ServerOptimizer, ServerRule};
pub use spec::{OptimizerSpec, StateMode};
pub use transforms::{
    add_decayed_weights, add_proximal, clip_by_block_norm, clip_by_global_norm, scale_by_adagrad,
    scale_by_adam, scale_by_amsgrad, scale_by_rate, scale_by_trust_ratio, scale_by_yogi, trace,
    AdamBiasCorrection, AddDecayedWeights, AddProximal, ClipByBlockNorm, ClipByGlobalNorm,
    ScaleByAdagrad, ScaleByAdam, ScaleByAmsgrad, ScaleByRate, ScaleByTrustRatio, ScaleByYogi,
    Trace,
};

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
    /// A buffer (updates, params, anchor, deltas) is not as long as the spec says.
    #[error("{what} has {got} values, the parameters have {expected}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Values the spec needs.
        expected: usize,
        /// Values supplied.
        got: usize,
    },
    /// A [`Partition`] has no transform for a group and no default, or names a group twice.
    #[error("partition: {0}")]
    Partition(String),
    /// [`Transform::update_and_apply_except`] with tensors marked done on a transform
    /// that is not plain SGD.
    #[error("{0} is not plain SGD: no tensor's step may be taken outside it")]
    NotPlainSgd(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Serialisable optimiser state: a step count, flat buffers (moments, …) and the states
/// of nested transforms. One shape for every transform keeps checkpoints uniform.
///
/// A state only makes sense with the transform (and parameter layout) that produced
/// it; every transform checks the shape it gets back and answers
/// [`Error::StateMismatch`] rather than panicking.
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
    /// Global step index (continues across rounds when the caller wants it to). Server
    /// optimisers receive the 1-based round here.
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
    /// Sets the reference point of transforms that hold one ([`add_proximal`]'s anchor,
    /// the global model `x^t` of FedProx) anywhere inside this transform; combinators
    /// pass it down (restricted to their sub-layout). Returns how many anchors were set.
    /// Transforms without an anchor ignore it.
    ///
    /// `anchor` is laid out by the same spec as the parameters given to `update`.
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        let _ = (state, anchor, spec);
        Ok(0)
    }
    /// The per-tensor factors (one per entry of the spec, in order) by which this
    /// transform scaled the updates at its last `update` — a layer-wise trust ratio —
    /// when it applies any; [`Chain`] passes the question down. A client
    /// multiplies its rates by them to report the rates it really used. `None` for
    /// transforms that scale every tensor alike.
    fn tensor_scales<'s>(&self, state: &'s State) -> Option<&'s [f32]> {
        let _ = state;
        None
    }
    /// [`update`](Transform::update), then `params ← params + updates`
    /// ([`apply_updates`]); `updates` holds unspecified values afterwards. A transform
    /// that ends in a plain scaling ([`ScaleByRate`], and a
    /// [`Chain`] ending in one) does both in one pass over the
    /// parameters, with the same operations, so the same bits, as the two steps: for
    /// plain SGD a step reads and writes the 1.7 M values of the CNN once instead of
    /// twice (docs/arch/0033-winograd-position-kernel.md).
    fn update_and_apply(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        self.update(updates, state, params, ctx)?;
        apply_updates(params, updates);
        Ok(())
    }
    /// Whether [`update_and_apply`](Transform::update_and_apply) is plain SGD:
    /// `p ← p + u·(−η_g)` on every tensor (an f32 product, then an f32 sum), with no
    /// state but the step count — [`ScaleByRate`] and a
    /// [`Chain`] of it alone. A model may then take the step of some
    /// tensors itself inside its backward pass (see
    /// [`update_and_apply_except`](Transform::update_and_apply_except)). `false` by
    /// default.
    fn plain_sgd(&self) -> bool {
        false
    }
    /// [`update_and_apply`](Transform::update_and_apply) on every tensor but those with
    /// `done[i]` (one flag per entry of the spec), whose plain-SGD step at `ctx`'s rates
    /// the caller has already taken: parameters and state end as `update_and_apply`
    /// would leave them. With any tensor marked, an error unless
    /// [`plain_sgd`](Transform::plain_sgd); with none, `update_and_apply`.
    fn update_and_apply_except(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
        done: &[bool],
    ) -> Result<()> {
        check_len("tensor flags", done.len(), ctx.spec.entries().len())?;
        if done.iter().any(|&d| d) {
            return Err(Error::NotPlainSgd(format!("{self:?}")));
        }
        self.update_and_apply(updates, state, params, ctx)
    }
}

impl<T: Transform + ?Sized> Transform for Box<T> {
    fn init(&self, spec: &ParamSpec) -> State {
        (**self).init(spec)
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        (**self).update(updates, state, params, ctx)
    }
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        (**self).set_anchor(state, anchor, spec)
    }
    fn tensor_scales<'s>(&self, state: &'s State) -> Option<&'s [f32]> {
        (**self).tensor_scales(state)
    }
    fn update_and_apply(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        (**self).update_and_apply(updates, state, params, ctx)
    }
    fn plain_sgd(&self) -> bool {
        (**self).plain_sgd()
    }
    fn update_and_apply_except(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
        done: &[bool],
    ) -> Result<()> {
        (**self).update_and_apply_except(updates, state, params, ctx, done)
    }
}

/// Adds `updates` to `params` in place: `p ← p + u`.
pub fn apply_updates(params: &mut [f32], updates: &[f32]) {
    for (p, u) in params.iter_mut().zip(updates) {
        *p += u;
    }
}

/// Errors unless a buffer has the expected length.
pub(crate) fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

/// Errors unless the state holds `n` buffers of length `len` and no children.
pub(crate) fn check_state(state: &State, name: &str, n: usize, len: usize) -> Result<()> {
    if state.buffers.len() != n || state.buffers.iter().any(|b| b.len() != len) {
        return Err(Error::StateMismatch(format!(
            "{name} expects {n} buffers of {len} values, got lengths {:?}",
            state.buffers.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Errors unless there is one rate per group.
pub(crate) fn check_rates(ctx: &StepContext<'_>) -> Result<()> {
    if ctx.group_rates.len() != ctx.spec.num_groups() {
        return Err(Error::GroupCount {
            expected: ctx.spec.num_groups(),
            got: ctx.group_rates.len(),
        });
    }
    Ok(())
}

/// Checks a hyper-parameter: finite and `ok(v)`, else an error naming it.
pub(crate) fn check_param(
    name: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<()> {
    // Transforms compute in f32: a value that overflows it, or rounds to 0 from a value
    // that is not 0, would silently become another hyper-parameter.
    let f = value as f32;
    if value.is_finite() && ok && !(f.is_finite() && (value == 0.0 || f != 0.0)) {
        return Err(Error::InvalidHyperParameter {
            name,
            value,
            expected: "a value that fits an f32 (about 1e-38 to 3.4e38): it is used as one",
        });
    }
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::InvalidHyperParameter {
            name,
            value,
            expected,
        })
    }
}
