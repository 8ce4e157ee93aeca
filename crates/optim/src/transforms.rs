//! The building blocks: small gradient transforms, each with its own state type name.
//!
//! Every transform maps the incoming values `u` (gradients, or the previous transform's
//! output) to new values in place; only [`scale_by_rate`] reads the per-group rate, so
//! it ends every named optimiser. PyTorch conventions are followed where PyTorch has the
//! optimiser (momentum `v ← ρv + g`, Adam's eps outside the bias-corrected square
//! root, Adagrad's initial accumulator and eps); golden tests check this.
//!
//! docs/algorithms.md: §A.3 (adaptive moments, also used by the server), §B.1 (proximal
//! term), §C.2 (AMSGrad), §C.3 (bias correction, state reset), §C.7 (trust ratio).

use crate::{check_len, check_param, check_rates, check_state, Result, State, StepContext};
use crate::{Error, Transform};
use fedpace_params::{l2_norm, ParamSpec};
use serde::{Deserialize, Serialize};

fn zeros(spec: &ParamSpec) -> Vec<f32> {
    vec![0.0; spec.total_len()]
}

fn check_updates(updates: &[f32], ctx: &StepContext<'_>) -> Result<()> {
    check_len("updates", updates.len(), ctx.spec.total_len())
}

fn check_params(params: &[f32], ctx: &StepContext<'_>) -> Result<()> {
    check_len("params", params.len(), ctx.spec.total_len())
}

/// `sign(x)` with `sign(0) = 0` (Rust's `signum` gives ±1 at zero; Yogi needs 0).
fn sign0(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_rate

/// Multiplies each group's values by minus that group's current rate: the step that
/// turns a direction into an update. `u ← −η_g · u`. Stateless (only counts steps).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScaleByRate;

/// Builds [`ScaleByRate`].
///
/// ```
/// use fedpace_optim::{scale_by_rate, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("a", &[1], "body").add("b", &[1], "head").build().unwrap();
/// let tx = scale_by_rate();
/// let mut u = vec![1.0, 1.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.1, 0.0], step: 0 };
/// tx.update(&mut u, &mut tx.init(&spec), &[0.0, 0.0], &ctx).unwrap();
/// assert_eq!(u, vec![-0.1, -0.0]);
/// ```
pub fn scale_by_rate() -> ScaleByRate {
    ScaleByRate
}

/// `p ← p + u·(−η_g)` on the tensors `take` selects (by index in the spec), in one pass:
/// the same two roundings as [`ScaleByRate::update`] then [`apply_updates`](crate::apply_updates).
fn sgd_step(
    updates: &[f32],
    state: &mut State,
    params: &mut [f32],
    ctx: &StepContext<'_>,
    take: impl Fn(usize) -> bool,
) -> Result<()> {
    check_rates(ctx)?;
    check_updates(updates, ctx)?;
    crate::check_len("parameters", params.len(), updates.len())?;
    for (i, e) in ctx.spec.entries().iter().enumerate() {
        if !take(i) {
            continue;
        }
        let r = -ctx.group_rates[e.group];
        for (p, u) in params[e.range()].iter_mut().zip(&updates[e.range()]) {
            *p += *u * r;
        }
    }
    state.count += 1;
    Ok(())
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
        check_rates(ctx)?;
        check_updates(updates, ctx)?;
        for e in ctx.spec.entries() {
            let r = -ctx.group_rates[e.group];
            for u in &mut updates[e.range()] {
                *u *= r;
            }
        }
        state.count += 1;
        Ok(())
    }
    /// `p ← p + u·(−η_g)` in one pass: the same two roundings as `update` then
    /// [`apply_updates`](crate::apply_updates).
    fn update_and_apply(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        sgd_step(updates, state, params, ctx, |_| true)
    }
    fn plain_sgd(&self) -> bool {
        true
    }
    /// The step of [`update_and_apply`](Transform::update_and_apply) on the tensors not
    /// marked done.
    fn update_and_apply_except(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &mut [f32],
        ctx: &StepContext<'_>,
        done: &[bool],
    ) -> Result<()> {
        crate::check_len("tensor flags", done.len(), ctx.spec.entries().len())?;
        sgd_step(updates, state, params, ctx, |i| !done[i])
    }
}

// ---------------------------------------------------------------------------------------
// trace (heavy-ball / Nesterov momentum)

/// Heavy-ball momentum in PyTorch's convention (no dampening):
/// `v ← ρ·v + u`, then `u ← v`, or with Nesterov `u ← u + ρ·v`.
/// State: `buffers = [v]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trace {
    /// Momentum ρ ∈ [0, 1).
    pub decay: f64,
    /// Nesterov look-ahead.
    pub nesterov: bool,
}

/// Builds [`Trace`].
///
/// ```
/// use fedpace_optim::{trace, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[1], "body").build().unwrap();
/// let tx = trace(0.9, false);
/// let mut s = tx.init(&spec);
/// let ctx = StepContext { spec: &spec, group_rates: &[1.0], step: 0 };
/// let mut u = vec![1.0];
/// tx.update(&mut u, &mut s, &[0.0], &ctx).unwrap();
/// let mut u2 = vec![1.0];
/// tx.update(&mut u2, &mut s, &[0.0], &ctx).unwrap();
/// assert_eq!((u[0], u2[0]), (1.0, 1.9));
/// ```
pub fn trace(decay: f64, nesterov: bool) -> Trace {
    Trace { decay, nesterov }
}

impl Transform for Trace {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![zeros(spec)],
            children: vec![],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_state(state, "trace", 1, updates.len())?;
        let rho = self.decay as f32;
        for (u, v) in updates.iter_mut().zip(state.buffers[0].iter_mut()) {
            *v = rho * *v + *u;
            *u = if self.nesterov { *u + rho * *v } else { *v };
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_adam

/// How [`ScaleByAdam`] corrects the zero-initialised moments (docs/algorithms.md §A.3, §C.3,
/// App. F).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdamBiasCorrection {
    /// PyTorch / Kingma–Ba: with t the transform's own step count (1-based),
    /// `u = (m/(1−β1ᵗ)) / (√v/√(1−β2ᵗ) + ε)`.
    #[default]
    Standard,
    /// None (Reddi et al. 2021 Algorithm 2): `u = m / (√v + ε)`.
    None,
    /// Flower 1.42's FedAdam: the step size only, with t the **server round** read from
    /// [`StepContext::step`] and an off-by-one exponent:
    /// `u = √(1−β2^(t+1))/(1−β1^(t+1)) · m / (√v + ε)`.
    FlowerServerRound,
}

/// Adam's moment scaling: `m ← β1·m + (1−β1)·u`, `v ← β2·v + (1−β2)·u²`, then
/// `u ← m̂ / (√v̂ + ε)` (see [`AdamBiasCorrection`] for the variants).
/// State: `buffers = [m, v]`; `v` starts at `initial_v` (0 for Adam; τ² for the paper's
/// FedAdam).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdam {
    /// β1 ∈ [0, 1).
    pub beta1: f64,
    /// β2 ∈ [0, 1).
    pub beta2: f64,
    /// ε > 0, added outside the square root.
    pub eps: f64,
    /// Bias correction rule.
    pub bias_correction: AdamBiasCorrection,
    /// Initial value of every entry of `v`.
    pub initial_v: f64,
}

/// Builds [`ScaleByAdam`] with PyTorch's standard bias correction and `v₀ = 0`.
pub fn scale_by_adam(beta1: f64, beta2: f64, eps: f64) -> ScaleByAdam {
    ScaleByAdam {
        beta1,
        beta2,
        eps,
        bias_correction: AdamBiasCorrection::Standard,
        initial_v: 0.0,
    }
}

impl ScaleByAdam {
    /// Replaces the bias-correction rule.
    pub fn with_bias_correction(mut self, rule: AdamBiasCorrection) -> Self {
        self.bias_correction = rule;
        self
    }
    /// Replaces the initial second moment.
    pub fn with_initial_v(mut self, v0: f64) -> Self {
        self.initial_v = v0;
        self
    }
}

impl Transform for ScaleByAdam {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![zeros(spec), vec![self.initial_v as f32; spec.total_len()]],
            children: vec![],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_state(state, "scale_by_adam", 2, updates.len())?;
        let t = state.count + 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let eps = self.eps as f32;
        // Complements formed in f64 from the configured value, as PyTorch and NumPy do
        // with Python floats.
        let (b1f, c1, b2f, c2) = (b1 as f32, (1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
        let [m, v] = &mut state.buffers[..] else {
            unreachable!("checked above")
        };
        // One pass over (u, m, v) per rule: the moments and the step of a value are
        // formed together (same operations as two passes, so the same bits; on a 10 M
        // parameter server step this saves a third of the memory traffic).
        let moments = |u: &mut f32, m: &mut f32, v: &mut f32| {
            *m = b1f * *m + c1 * *u;
            *v = b2f * *v + c2 * *u * *u;
        };
        let values = updates.iter_mut().zip(m.iter_mut()).zip(v.iter_mut());
        match self.bias_correction {
            AdamBiasCorrection::Standard => {
                let bc1 = (1.0 - b1.powf(t as f64)) as f32;
                let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
                for ((u, m), v) in values {
                    moments(u, m, v);
                    *u = (*m / bc1) / (v.sqrt() / bc2_sqrt + eps);
                }
            }
            AdamBiasCorrection::None => {
                for ((u, m), v) in values {
                    moments(u, m, v);
                    *u = *m / (v.sqrt() + eps);
                }
            }
            AdamBiasCorrection::FlowerServerRound => {
                let r = ctx.step as f64 + 1.0;
                let f = ((1.0 - b2.powf(r)).sqrt() / (1.0 - b1.powf(r))) as f32;
                for ((u, m), v) in values {
                    moments(u, m, v);
                    *u = f * (*m / (v.sqrt() + eps));
                }
            }
        }
        state.count = t;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_amsgrad

/// AMSGrad (PyTorch `Adam(amsgrad=True)`): Adam's moments plus `v̂ ← max(v̂, v)`, then
/// `u ← (m/(1−β1ᵗ)) / (√v̂/√(1−β2ᵗ) + ε)`. State: `buffers = [m, v, v̂]`.
/// docs/algorithms.md §C.2 (FedLALR's client optimiser).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAmsgrad {
    /// β1 ∈ [0, 1).
    pub beta1: f64,
    /// β2 ∈ [0, 1).
    pub beta2: f64,
    /// ε > 0.
    pub eps: f64,
}

/// Builds [`ScaleByAmsgrad`].
pub fn scale_by_amsgrad(beta1: f64, beta2: f64, eps: f64) -> ScaleByAmsgrad {
    ScaleByAmsgrad { beta1, beta2, eps }
}

impl Transform for ScaleByAmsgrad {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![zeros(spec), zeros(spec), zeros(spec)],
            children: vec![],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_state(state, "scale_by_amsgrad", 3, updates.len())?;
        let t = state.count + 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let eps = self.eps as f32;
        let (b1f, c1, b2f, c2) = (b1 as f32, (1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
        let bc1 = (1.0 - b1.powf(t as f64)) as f32;
        let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
        let [m, v, vmax] = &mut state.buffers[..] else {
            unreachable!("checked above")
        };
        for (i, u) in updates.iter_mut().enumerate() {
            m[i] = b1f * m[i] + c1 * *u;
            v[i] = b2f * v[i] + c2 * *u * *u;
            vmax[i] = vmax[i].max(v[i]);
            *u = (m[i] / bc1) / (vmax[i].sqrt() / bc2_sqrt + eps);
        }
        state.count = t;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_adagrad

/// Adagrad (PyTorch convention): `s ← s + u²`, `u ← u / (√s + ε)`, with `s₀` the
/// initial accumulator value. State: `buffers = [s]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByAdagrad {
    /// ε (PyTorch default 1e-10).
    pub eps: f64,
    /// `s₀` (PyTorch default 0).
    pub initial_accumulator: f64,
}

/// Builds [`ScaleByAdagrad`].
pub fn scale_by_adagrad(eps: f64, initial_accumulator: f64) -> ScaleByAdagrad {
    ScaleByAdagrad {
        eps,
        initial_accumulator,
    }
}

impl Transform for ScaleByAdagrad {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![vec![self.initial_accumulator as f32; spec.total_len()]],
            children: vec![],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_state(state, "scale_by_adagrad", 1, updates.len())?;
        let eps = self.eps as f32;
        for (u, s) in updates.iter_mut().zip(state.buffers[0].iter_mut()) {
            *s += *u * *u;
            *u /= s.sqrt() + eps;
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_yogi

/// Yogi (Zaheer et al. 2018; Reddi et al. 2021): `m ← β1·m + (1−β1)·u`,
/// `v ← v − (1−β2)·u²·sign(v − u²)` (sign(0) = 0), `u ← m / (√v + ε)`; no bias
/// correction. State: `buffers = [m, v]`, `v₀` = initial accumulator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByYogi {
    /// β1 ∈ [0, 1).
    pub beta1: f64,
    /// β2 ∈ [0, 1).
    pub beta2: f64,
    /// ε (paper 1e-3).
    pub eps: f64,
    /// `v₀` (paper 1e-6; Flower 0; Reddi et al. τ²).
    pub initial_accumulator: f64,
}

/// Builds [`ScaleByYogi`].
pub fn scale_by_yogi(beta1: f64, beta2: f64, eps: f64, initial_accumulator: f64) -> ScaleByYogi {
    ScaleByYogi {
        beta1,
        beta2,
        eps,
        initial_accumulator,
    }
}

impl Transform for ScaleByYogi {
    fn init(&self, spec: &ParamSpec) -> State {
        State {
            count: 0,
            buffers: vec![
                zeros(spec),
                vec![self.initial_accumulator as f32; spec.total_len()],
            ],
            children: vec![],
        }
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        _params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_state(state, "scale_by_yogi", 2, updates.len())?;
        let eps = self.eps as f32;
        let (b1, c1, c2) = (
            self.beta1 as f32,
            (1.0 - self.beta1) as f32,
            (1.0 - self.beta2) as f32,
        );
        let [m, v] = &mut state.buffers[..] else {
            unreachable!("checked above")
        };
        for ((u, m), v) in updates.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()) {
            let g2 = *u * *u;
            *m = b1 * *m + c1 * *u;
            *v -= c2 * g2 * sign0(*v - g2);
            *u = *m / (v.sqrt() + eps);
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// add_decayed_weights

/// Adds `λ·p`: `u ← u + λ·p`. Placed **before** the optimiser it is L2 weight decay as
/// in PyTorch SGD/Adam `weight_decay`; placed **after** `scale_by_adam` and before
/// `scale_by_rate` it is AdamW's decoupled decay `p ← p − η·λ·p`. Stateless.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddDecayedWeights {
    /// λ ≥ 0.
    pub weight_decay: f64,
}

/// Builds [`AddDecayedWeights`].
pub fn add_decayed_weights(weight_decay: f64) -> AddDecayedWeights {
    AddDecayedWeights { weight_decay }
}

impl Transform for AddDecayedWeights {
    fn init(&self, _spec: &ParamSpec) -> State {
        State::default()
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        if self.weight_decay != 0.0 {
            check_params(params, ctx)?;
            let wd = self.weight_decay as f32;
            for (u, p) in updates.iter_mut().zip(params) {
                *u += wd * *p;
            }
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// clipping

/// Rescales all values together so that their global L2 norm is at most `C`:
/// `u ← u · min(1, C/‖u‖)` (norm accumulated in f64). Stateless.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipByGlobalNorm {
    /// C > 0.
    pub max_norm: f64,
}

/// Builds [`ClipByGlobalNorm`].
///
/// ```
/// use fedpace_optim::{clip_by_global_norm, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
/// let tx = clip_by_global_norm(1.0);
/// let mut u = vec![3.0, 4.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[1.0], step: 0 };
/// tx.update(&mut u, &mut tx.init(&spec), &[0.0, 0.0], &ctx).unwrap();
/// assert!((u[0] - 0.6).abs() < 1e-7 && (u[1] - 0.8).abs() < 1e-7);
/// ```
pub fn clip_by_global_norm(max_norm: f64) -> ClipByGlobalNorm {
    ClipByGlobalNorm { max_norm }
}

fn clip_slice(u: &mut [f32], max_norm: f64) {
    let n = l2_norm(u);
    if n > max_norm {
        let s = (max_norm / n) as f32;
        for x in u {
            *x *= s;
        }
    }
}

impl Transform for ClipByGlobalNorm {
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
        check_updates(updates, ctx)?;
        clip_slice(updates, self.max_norm);
        state.count += 1;
        Ok(())
    }
}

/// Clips every tensor separately: `u_T ← u_T · min(1, C/‖u_T‖)` for each tensor T.
/// Stateless.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipByBlockNorm {
    /// C > 0.
    pub max_norm: f64,
}

/// Builds [`ClipByBlockNorm`].
pub fn clip_by_block_norm(max_norm: f64) -> ClipByBlockNorm {
    ClipByBlockNorm { max_norm }
}

impl Transform for ClipByBlockNorm {
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
        check_updates(updates, ctx)?;
        for e in ctx.spec.entries() {
            clip_slice(&mut updates[e.range()], self.max_norm);
        }
        state.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// scale_by_trust_ratio

/// Layer-wise trust ratio (LARS/LAMB, docs/algorithms.md §C.7), per tensor T:
/// `u_T ← u_T · clip(‖p_T‖ / (‖u_T‖ + ε), 0, φ_max)`, with ratio 1 when `‖p_T‖ = 0` or
/// `‖u_T‖ = 0` (fresh zero-initialised layers and zero updates keep their scale).
/// Put it after `scale_by_adam` for LAMB or on the gradient for LARS. Its state keeps
/// only the ratios of the last update (`buffers = [one per tensor]`, empty before the
/// first), which [`Transform::tensor_scales`] reports so that clients report the rates
/// they really used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleByTrustRatio {
    /// ε ≥ 0 in the denominator.
    pub eps: f64,
    /// φ_max > 0 (∞ = no cap).
    pub max_ratio: f64,
}

/// Builds [`ScaleByTrustRatio`] with ε = 0 and no cap (optax/LAMB); use
/// [`ScaleByTrustRatio::with_max_ratio`] for §C.7's `φ_max = 10`.
pub fn scale_by_trust_ratio() -> ScaleByTrustRatio {
    ScaleByTrustRatio {
        eps: 0.0,
        max_ratio: f64::INFINITY,
    }
}

impl ScaleByTrustRatio {
    /// Caps the ratio at `φ_max`.
    pub fn with_max_ratio(mut self, max_ratio: f64) -> Self {
        self.max_ratio = max_ratio;
        self
    }
    /// Sets ε.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

impl Transform for ScaleByTrustRatio {
    fn init(&self, _spec: &ParamSpec) -> State {
        State::default()
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_params(params, ctx)?;
        let mut ratios = Vec::with_capacity(ctx.spec.entries().len());
        for e in ctx.spec.entries() {
            let pn = l2_norm(&params[e.range()]);
            let un = l2_norm(&updates[e.range()]);
            let ratio = if pn == 0.0 || un == 0.0 {
                1.0
            } else {
                (pn / (un + self.eps)).min(self.max_ratio)
            } as f32;
            for u in &mut updates[e.range()] {
                *u *= ratio;
            }
            ratios.push(ratio);
        }
        state.buffers = vec![ratios];
        state.count += 1;
        Ok(())
    }
    fn tensor_scales<'s>(&self, state: &'s State) -> Option<&'s [f32]> {
        state.buffers.first().map(Vec::as_slice)
    }
}

// ---------------------------------------------------------------------------------------
// add_proximal

/// FedProx's proximal term (docs/algorithms.md §B.1), the gradient of `(μ/2)‖p − a‖²`:
/// `u ← u + μ·(p − a)`, with the anchor `a` (the global model `x^t`) held in the state.
///
/// **Setting the anchor.** `init` leaves it unset; the caller sets it once per round,
/// after receiving the global model and before the first local step, with
/// [`Transform::set_anchor`] on the *outermost* transform (combinators pass it down):
///
/// ```
/// use fedpace_optim::{add_proximal, chain, scale_by_rate, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
/// let tx = chain(vec![Box::new(add_proximal(0.1)), Box::new(scale_by_rate())]);
/// let mut state = tx.init(&spec);
/// let global = vec![1.0, 1.0];
/// assert_eq!(tx.set_anchor(&mut state, &global, &spec).unwrap(), 1);
/// let mut g = vec![0.0, 0.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[1.0], step: 0 };
/// tx.update(&mut g, &mut state, &[2.0, 1.0], &ctx).unwrap();
/// assert!((g[0] + 0.1).abs() < 1e-7 && g[1] == 0.0);
/// ```
///
/// Updating with no anchor set is an error (not a silent μ = 0). State:
/// `buffers = [a]` once set, `[]` before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddProximal {
    /// μ ≥ 0.
    pub mu: f64,
}

/// Builds [`AddProximal`].
pub fn add_proximal(mu: f64) -> AddProximal {
    AddProximal { mu }
}

impl Transform for AddProximal {
    fn init(&self, _spec: &ParamSpec) -> State {
        State::default()
    }
    fn update(
        &self,
        updates: &mut [f32],
        state: &mut State,
        params: &[f32],
        ctx: &StepContext<'_>,
    ) -> Result<()> {
        check_updates(updates, ctx)?;
        check_params(params, ctx)?;
        if state.buffers.is_empty() {
            return Err(Error::StateMismatch(
                "add_proximal: anchor not set (call Transform::set_anchor with the global model)"
                    .into(),
            ));
        }
        check_state(state, "add_proximal", 1, updates.len())?;
        let mu = self.mu as f32;
        for ((u, p), a) in updates.iter_mut().zip(params).zip(&state.buffers[0]) {
            *u += mu * (*p - *a);
        }
        state.count += 1;
        Ok(())
    }
    fn set_anchor(&self, state: &mut State, anchor: &[f32], spec: &ParamSpec) -> Result<usize> {
        check_len("anchor", anchor.len(), spec.total_len())?;
        state.buffers = vec![anchor.to_vec()];
        Ok(1)
    }
}

/// Validates the hyper-parameters shared by the moment-based transforms.
pub(crate) fn check_betas(beta1: f64, beta2: f64) -> Result<()> {
    check_param("beta1", beta1, (0.0..1.0).contains(&beta1), "in [0, 1)")?;
    check_param("beta2", beta2, (0.0..1.0).contains(&beta2), "in [0, 1)")
}
