//! What every client recipe shares: the local training loop and its parts — batch order,
//! the gradient corrections drift-control algorithms add, the step controller seam
//! (Δ-SGD is its first user), per-group rate helpers, the optimiser-state modes
//! (`reset`, `keep`, `server-init`) and evaluation on a split.
//!
//! This module sits below every algorithm: the client dispatch ([`crate::client`]), the
//! personalised recipes and the drift-control hooks all call it, and it calls none of
//! them. The loop is docs/configuration.md's `[client]` table made code: the rate of
//! group g at step s is `plan.base_lr · m_g · schedule(offset + s)`, times the step
//! controller's factor when the plan has one.

use fedpace_core::ext::Payload;
use fedpace_core::{
    Batch, ClientData, Dataset, Error, EvalRes, EvalStats, Extensions, LocalState, Model, RatePlan,
    Result, SplitStats, TrainReport,
};
use fedpace_optim::{
    add_proximal, apply_updates, clip_by_global_norm, LinearSolver, Normalizer, OptimizerSpec,
    State, StateMode, StepContext, Transform,
};
use fedpace_params::{l2_norm, ParamSpec, ParamTree};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Batch size used for evaluation passes (does not change results).
pub const EVAL_BATCH: usize = 256;

/// Yields mini-batch index lists: reshuffled every epoch, the last batch of an epoch
/// may be smaller.
pub struct BatchOrder<R: Rng> {
    n: usize,
    batch: usize,
    perm: Vec<usize>,
    pos: usize,
    rng: R,
}

impl<R: Rng> BatchOrder<R> {
    /// Batches over `n` samples of size `batch`.
    pub fn new(n: usize, batch: usize, rng: R) -> Self {
        Self {
            n,
            batch: batch.max(1),
            perm: Vec::new(),
            pos: n,
            rng,
        }
    }
    /// The next batch's indices (empty when `n == 0`).
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        if self.pos >= self.n {
            self.perm = (0..self.n).collect();
            self.perm.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let end = (self.pos + self.batch).min(self.n);
        let b = self.perm[self.pos..end].to_vec();
        self.pos = end;
        b
    }
}

/// Terms a drift-control algorithm adds to every local gradient before the local
/// optimiser sees it: `g ← g + linear + μ·(w − anchor)`, then optionally
/// `g ← clip(g, max_norm)` (optim's `clip_by_global_norm`: FedDyn's reference code
/// clips the gradient of its whole objective at norm 10, B.4).
///
/// The proximal part is optim's [`add_proximal`] with its anchor set once per round
/// (FedProx B.1, and FedDyn's `(α/2)‖θ − θ^{t−1}‖²`, B.4); the linear part is SCAFFOLD's
/// `c − c_i` (B.2) or FedDyn's `−g_k` (B.4). It is kept apart from the optimiser so
/// the optimiser's own state (kept between rounds or not) has one shape whatever μ is.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradientCorrection<'a> {
    /// `(μ, anchor)`: adds `μ·(w − anchor)`; skipped when μ = 0.
    pub proximal: Option<(f64, &'a [f32])>,
    /// A constant vector added to every gradient.
    pub linear: Option<&'a [f32]>,
    /// Clip the corrected gradient to this global L2 norm (after `linear` and
    /// `proximal`, before the optimiser); `None`: no clipping.
    pub clip: Option<f64>,
}

/// A client-side controller of the step size, with access to the model: at every local
/// step it returns a factor on the plan's rates, after seeing the step's mini-batch,
/// the parameters and the gradient at them. Δ-SGD (`policies::curvature`) is the first
/// one; the loop knows nothing about it.
pub trait StepController: Send {
    /// The factor for this step (1 = the plan's rates). May evaluate the model (Δ-SGD
    /// re-evaluates the previous iterate on the same batch).
    fn factor(
        &mut self,
        model: &mut dyn Model,
        batch: &Batch,
        params: &ParamTree,
        grad: &[f32],
    ) -> Result<f64>;
}

/// The linear part of `opt` with an extra pull `mu` towards the round's start (a
/// proximal term), for FedNova's normaliser; `None` for adaptive optimisers (Adam, …),
/// whose rate sums stay `Σ_s η_s`.
fn linear_solver(opt: &OptimizerSpec, mu: f64) -> Option<LinearSolver> {
    let (momentum, nesterov, decay) = match *opt {
        OptimizerSpec::Sgd { weight_decay } => (0.0, false, weight_decay),
        OptimizerSpec::DeltaSgd { .. } => (0.0, false, 0.0),
        OptimizerSpec::Momentum {
            momentum,
            nesterov,
            weight_decay,
        } => (momentum, nesterov, weight_decay),
        OptimizerSpec::Lars {
            momentum,
            weight_decay,
            ..
        } => (momentum, false, weight_decay),
        _ => return None,
    };
    Some(LinearSolver {
        momentum,
        nesterov,
        mu: mu + decay,
    })
}

/// Runs `steps` local steps from `params` under `plan`, starting at cumulative step
/// `step_offset`, with a [`GradientCorrection`] added to every gradient and the plan's
/// step `controller` (required when the plan's optimiser has one: `delta-sgd`; see
/// `policies::curvature::step_controller`). `opt_state` is the optimiser state to
/// continue from (`None`: fresh); on return it holds the state after the last step.
/// Returns the report (without update norm).
///
/// The report's `rate_sum[g]` is group g's total step size Λ_g as FedNova defines it
/// (docs/rate-policies.md, "Objective consistency"): the rates really used — times
/// the controller's factor and the mean trust ratio of the group's tensors (weighted by
/// their sizes) — and, for the linear solvers (SGD, momentum, LARS, with a proximal term
/// or weight decay), weighted by how much each step's gradient moves the round's result
/// ([`Normalizer`]). For plain SGD that is `Σ_s η_{g,s}`; for adaptive optimisers it
/// stays `Σ_s η_{g,s}`.
#[allow(clippy::too_many_arguments)]
pub fn local_train_controlled(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
    correction: GradientCorrection<'_>,
    mut controller: Option<&mut (dyn StepController + 'static)>,
) -> Result<TrainReport> {
    if controller.is_none() && matches!(plan.optimizer, OptimizerSpec::DeltaSgd { .. }) {
        return Err(Error::invalid(
            "plan.optimizer",
            "delta-sgd",
            "a local loop with a step controller (this recipe has none)",
        ));
    }
    let spec = params.spec().clone();
    let groups = spec.num_groups();
    let tx = plan.optimizer.build()?;
    let opt_state = opt_state.get_or_insert_with(|| tx.init(&spec));
    let mut prox = match correction.proximal {
        Some((mu, anchor)) if mu > 0.0 => {
            let t = add_proximal(mu);
            let mut st = t.init(&spec);
            t.set_anchor(&mut st, anchor, &spec)?;
            Some((t, st))
        }
        _ => None,
    };
    let clip = match correction.clip {
        Some(c) if !(c.is_finite() && c > 0.0) => {
            return Err(Error::invalid("gradient clip norm", c, "a finite norm > 0"))
        }
        Some(c) => Some(clip_by_global_norm(c)),
        None => None,
    };
    let mut clip_state = State::default();
    if let Some(l) = correction.linear {
        check_len("gradient correction", l, spec.total_len())?;
    }
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let mut grad = vec![0f32; spec.total_len()];
    // Models that write every gradient value need no zeroing first (a pass over all
    // parameters a step).
    let overwrites = model.overwrites_grad();
    // Plain SGD whose gradient nothing else reads (no step controller, linear
    // correction, proximal term or clipping): the model may step some tensors itself
    // inside its backward pass, never writing their gradient (`Model::loss_and_grad_sgd`;
    // the same bits, docs/arch/0038-fc1-backward-sgd-step.md). Not on the first step,
    // whose gradient norm is reported.
    let mut fused = vec![false; spec.entries().len()];
    if controller.is_none()
        && correction.linear.is_none()
        && prox.is_none()
        && clip.is_none()
        && tx.plain_sgd()
    {
        for i in model.fused_sgd_tensors() {
            let n = fused.len();
            *fused.get_mut(i).ok_or_else(|| {
                Error::invalid(
                    "model fused_sgd_tensors",
                    i,
                    format!("indices of the model's {n} tensors"),
                )
            })? = true;
        }
    }
    let fuse = fused.contains(&true);
    let mut rates = Vec::with_capacity(groups);
    let mut report = TrainReport {
        rate_sum: vec![0.0; groups],
        ..Default::default()
    };
    let prox_mu = correction.proximal.map_or(0.0, |(mu, _)| mu);
    let solver = linear_solver(&plan.optimizer, prox_mu);
    let mut normalizers = vec![Normalizer::new(solver.unwrap_or_default()); groups];
    // (group, length) of every tensor, for trust ratios reported per tensor.
    let tensors: Vec<(usize, usize)> = spec.entries().iter().map(|e| (e.group, e.len())).collect();
    let mut used = Vec::with_capacity(groups);
    let per_epoch = data.len().div_ceil(plan.batch_size.max(1) as usize).max(1) as u32;
    let tail_from = steps.saturating_sub(per_epoch);
    let (mut loss_all, mut loss_tail, mut n_tail) = (0f64, 0f64, 0u32);
    for s in 0..steps {
        let idx = order.next_batch();
        let batch = data.batch(&idx);
        if !overwrites {
            grad.iter_mut().for_each(|g| *g = 0.0);
        }
        let step = step_offset + s as u64;
        let fuse_now = fuse && s > 0;
        let loss = if fuse_now {
            plan.group_rates(groups, step, &mut rates);
            model.loss_and_grad_sgd(params, &batch, &mut grad, &rates)?
        } else {
            model.loss_and_grad(params, &batch, &mut grad)?
        };
        if s == 0 {
            report.loss_before = loss;
            report.grad_norm = l2_norm(&grad);
        }
        let factor = match controller.as_deref_mut() {
            Some(c) => c.factor(model, &batch, params, &grad)?,
            None => 1.0,
        };
        loss_all += loss as f64;
        if s >= tail_from {
            loss_tail += loss as f64;
            n_tail += 1;
        }
        plan.group_rates(groups, step, &mut rates);
        if factor != 1.0 {
            rates
                .iter_mut()
                .for_each(|r| *r = (*r as f64 * factor) as f32);
        }
        let ctx = StepContext {
            spec: &spec,
            group_rates: &rates,
            step,
        };
        if let Some(l) = correction.linear {
            for (g, c) in grad.iter_mut().zip(l) {
                *g += c;
            }
        }
        if let Some((t, st)) = prox.as_mut() {
            t.update(&mut grad, st, params.as_slice(), &ctx)?;
        }
        if let Some(c) = clip.as_ref() {
            c.update(&mut grad, &mut clip_state, params.as_slice(), &ctx)?;
        }
        if fuse_now {
            tx.update_and_apply_except(&mut grad, opt_state, params.as_mut_slice(), &ctx, &fused)?;
        } else {
            tx.update_and_apply(&mut grad, opt_state, params.as_mut_slice(), &ctx)?;
        }
        // The rates this step really used: a layer-wise trust ratio scales each tensor.
        used.clear();
        used.extend(rates.iter().map(|&r| r as f64));
        if let Some(scales) = tx.tensor_scales(opt_state) {
            let mut num = vec![0f64; groups];
            let mut den = vec![0f64; groups];
            for (&(g, len), &sc) in tensors.iter().zip(scales) {
                num[g] += len as f64 * sc as f64;
                den[g] += len as f64;
            }
            for ((u, n), d) in used.iter_mut().zip(&num).zip(&den) {
                if *d > 0.0 {
                    *u *= n / d;
                }
            }
        }
        match solver {
            Some(_) => normalizers
                .iter_mut()
                .zip(&used)
                .for_each(|(n, &u)| n.step(u)),
            None => report
                .rate_sum
                .iter_mut()
                .zip(&used)
                .for_each(|(acc, &u)| *acc += u),
        }
    }
    if solver.is_some() {
        for (acc, n) in report.rate_sum.iter_mut().zip(&normalizers) {
            *acc = n.value();
        }
    }
    report.steps = steps;
    if steps > 0 {
        report.train_loss = (loss_all / steps as f64) as f32;
        report.loss_after = (loss_tail / n_tail.max(1) as f64) as f32;
    }
    Ok(report)
}

/// The rate sums Λ_g a client following `plan` exactly would report after `steps` local
/// steps from cumulative step 0 (the report's `rate_sum`: Σ_s η_{g,s}, weighted by the
/// linear solvers' normaliser, without a step controller's factor or trust ratios).
/// Differential privacy rescales normalised updates to these public values rather than to
/// the cohort's own rate sums (docs/privacy.md, "Rates and DP").
pub fn nominal_rate_sums(plan: &RatePlan, groups: usize, steps: u32) -> Vec<f64> {
    let solver = linear_solver(&plan.optimizer, plan.prox_mu);
    let mut normalizers = vec![Normalizer::new(solver.unwrap_or_default()); groups];
    let mut sums = vec![0f64; groups];
    let mut rates = Vec::with_capacity(groups);
    for s in 0..steps {
        plan.group_rates(groups, s as u64, &mut rates);
        for ((n, acc), &r) in normalizers.iter_mut().zip(&mut sums).zip(&rates) {
            match solver {
                Some(_) => n.step(r as f64),
                None => *acc += r as f64,
            }
        }
    }
    if solver.is_some() {
        for (acc, n) in sums.iter_mut().zip(&normalizers) {
            *acc = n.value();
        }
    }
    sums
}

/// Errors unless `v` has one value per parameter.
pub fn check_len(what: &str, v: &[f32], len: usize) -> Result<()> {
    if v.len() == len {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("{} values", v.len()),
            format!("one per parameter ({len})"),
        ))
    }
}

/// Evaluates `params` on the first `limit` samples of `data` (all when `None`), in
/// fixed-size batches.
pub fn evaluate_on(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &ParamTree,
    limit: Option<u32>,
) -> Result<EvalStats> {
    let mut stats = EvalStats::default();
    let n = limit.map_or(data.len(), |l| data.len().min(l as usize));
    let mut start = 0;
    while start < n {
        let end = (start + EVAL_BATCH).min(n);
        let idx: Vec<usize> = (start..end).collect();
        stats.merge(&model.evaluate(params, &data.batch(&idx))?);
        start = end;
    }
    Ok(stats)
}

/// The global model and the personal one (`None`: none was formed) on the client's
/// test split and, when it has one, its validation split — each on at most `limit`
/// samples. What every client's evaluation returns.
pub fn evaluate_splits(
    model: &mut dyn Model,
    data: &ClientData,
    global: &ParamTree,
    personal: Option<&ParamTree>,
    limit: Option<u32>,
) -> Result<EvalRes> {
    let mut on = |split: &dyn Dataset| -> Result<SplitStats> {
        Ok(SplitStats {
            global: evaluate_on(model, split, global, limit)?,
            personalized: personal
                .map(|p| evaluate_on(model, split, p, limit))
                .transpose()?,
        })
    };
    let test = on(data.test.as_ref())?;
    let validation = data.validation.as_deref().map(&mut on).transpose()?;
    Ok(EvalRes {
        global: test.global,
        personalized: test.personalized,
        validation,
    })
}

/// ∇F(x): the mean gradient over a whole split, in fixed-size batches weighted by their
/// sizes (SCAFFOLD option I).
pub fn full_gradient(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &ParamTree,
) -> Result<Vec<f32>> {
    let n = data.len();
    let mut out = vec![0f64; params.as_slice().len()];
    let mut g = vec![0f32; out.len()];
    let mut start = 0;
    while start < n {
        let end = (start + EVAL_BATCH).min(n);
        let idx: Vec<usize> = (start..end).collect();
        g.iter_mut().for_each(|v| *v = 0.0);
        model.loss_and_grad(params, &data.batch(&idx), &mut g)?;
        let w = (end - start) as f64 / n as f64;
        for (o, v) in out.iter_mut().zip(&g) {
            *o += w * *v as f64;
        }
        start = end;
    }
    Ok(out.into_iter().map(|v| v as f32).collect())
}

/// Per-value group index, to apply per-group rates to flat buffers.
#[derive(Debug, Clone)]
pub struct GroupMap {
    of: Vec<u16>,
}

impl GroupMap {
    /// The map of `spec`.
    pub fn new(spec: &ParamSpec) -> Self {
        Self {
            of: spec.group_of_each_value(),
        }
    }
    /// `x ← x − rate[g(i)] · u_i`.
    pub fn step(&self, x: &mut [f32], u: &[f32], rates: &[f32]) {
        for ((xi, ui), g) in x.iter_mut().zip(u).zip(&self.of) {
            *xi -= rates[*g as usize] * ui;
        }
    }
    /// Group of value `i`.
    pub fn group(&self, i: usize) -> usize {
        self.of[i] as usize
    }
}

/// Per-group rates `base · m_g · schedule(step)` (the plan's multipliers and schedule
/// applied to another base rate, e.g. a personal or meta rate).
pub fn rates_with_base(plan: &RatePlan, base: f32, groups: usize, step: u64) -> Vec<f32> {
    let f = plan.schedule.factor(step);
    (0..groups)
        .map(|g| base * plan.group_multipliers.get(g).copied().unwrap_or(1.0) * f)
        .collect()
}

/// A copy of `plan` whose multipliers are 0 on the groups where `zero(g)`.
pub fn plan_zeroing(plan: &RatePlan, groups: usize, zero: impl Fn(usize) -> bool) -> RatePlan {
    let mut p = plan.clone();
    p.group_multipliers = (0..groups)
        .map(|g| {
            if zero(g) {
                0.0
            } else {
                plan.group_multipliers.get(g).copied().unwrap_or(1.0)
            }
        })
        .collect();
    p
}

/// A copy of `plan` with base rate `base` (a personal or meta rate under the plan's
/// multipliers and schedule).
pub fn plan_with_base(plan: &RatePlan, base: f32) -> RatePlan {
    let mut p = plan.clone();
    p.base_lr = base;
    p
}

/// One optimiser step on `params` with `grad` (overwritten) at per-group `rates`: the
/// plan's optimiser applied outside the standard loop, for recipes whose update rule is
/// their own (pFedMe's outer step, Per-FedAvg's meta step, APFL's two models). With plain
/// SGD this is `x ← x − rate_g·g` exactly.
pub fn optimizer_step(
    tx: &dyn Transform,
    state: &mut State,
    params: &mut ParamTree,
    grad: &mut [f32],
    rates: &[f32],
    step: u64,
) -> Result<()> {
    let spec = params.spec().clone();
    let ctx = StepContext {
        spec: &spec,
        group_rates: rates,
        step,
    };
    tx.update(grad, state, params.as_slice(), &ctx)?;
    apply_updates(params.as_mut_slice(), grad);
    Ok(())
}

/// A step `x ← x − η_g·(s·g)` with the plan's optimiser `tx`. Plain SGD (no weight
/// decay) computes it as `x − (η_g·s)·g`, the recipes' own arithmetic bit for bit; any
/// other optimiser sees the gradient `s·g` at rates `η_g`.
#[allow(clippy::too_many_arguments)]
pub fn scaled_step(
    plan: &RatePlan,
    tx: &dyn Transform,
    state: &mut State,
    params: &mut ParamTree,
    grad: &mut [f32],
    scale: f32,
    rates: &[f32],
    step: u64,
) -> Result<()> {
    if matches!(plan.optimizer, OptimizerSpec::Sgd { weight_decay } if weight_decay == 0.0) {
        let r: Vec<f32> = rates.iter().map(|r| r * scale).collect();
        optimizer_step(tx, state, params, grad, &r, step)
    } else {
        grad.iter_mut().for_each(|g| *g *= scale);
        optimizer_step(tx, state, params, grad, rates, step)
    }
}

// ---------------------------------------------------------------------------------------
// Optimiser state between rounds (plan.state_mode, docs/algorithms.md §C.3).

/// The server's optimiser state for clients of `state_mode = "server-init"`: the
/// p̃-weighted average of the states clients returned last round (§C.3 option 4,
/// FedCAda-style; FedLALR's synchronised moments, §C.2). Sent by every synchronous
/// strategy (`pipeline`) from the second round on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerStateDown(pub Arc<State>);

impl Payload for OptimizerStateDown {
    const NAME: &'static str = "optimizer-state-down";
    fn heap_bytes(&self) -> usize {
        state_bytes(&self.0)
    }
}

/// A `server-init` client's optimiser state after its local steps, for the server to
/// average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerStateUp(pub State);

impl Payload for OptimizerStateUp {
    const NAME: &'static str = "optimizer-state-up";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        // Buffers track the parameters (moments) or their tensors (trust ratios).
        let max = spec.total_len().max(spec.entries().len());
        fn ok(s: &State, max: usize) -> bool {
            s.buffers
                .iter()
                .all(|b| b.len() <= max && b.iter().all(|v| v.is_finite()))
                && s.children.iter().all(|c| ok(c, max))
        }
        if ok(&self.0, max) {
            Ok(())
        } else {
            Err(format!(
                "optimiser buffers must hold at most {max} finite values each"
            ))
        }
    }
    fn heap_bytes(&self) -> usize {
        state_bytes(&self.0)
    }
}

/// Estimated heap bytes of an optimiser state.
pub fn state_bytes(s: &State) -> usize {
    48 + s.buffers.iter().map(|b| 24 + 4 * b.len()).sum::<usize>()
        + s.children.iter().map(state_bytes).sum::<usize>()
}

/// The optimiser state a client's round starts from: fresh (`reset`), its own
/// (`keep`), or the server's (`server-init`; fresh in the first round, before the server
/// has one).
pub fn start_state(plan: &RatePlan, ins: &Extensions, state: &mut LocalState) -> Option<State> {
    match plan.state_mode {
        StateMode::Reset => None,
        StateMode::Keep => state.optimizer.take(),
        StateMode::ServerInit => ins.get::<OptimizerStateDown>().map(|s| (*s.0).clone()),
    }
}

/// Where the state goes after the round: kept (`keep`), returned to the server
/// (`server-init`), or dropped (`reset`).
pub fn end_state(
    plan: &RatePlan,
    opt: Option<State>,
    state: &mut LocalState,
    reply: &mut Extensions,
) {
    match plan.state_mode {
        StateMode::Keep => state.optimizer = opt,
        StateMode::ServerInit => {
            if let Some(s) = opt {
                reply.insert(OptimizerStateUp(s));
            }
        }
        StateMode::Reset => {}
    }
}

/// [`local_train_controlled`] under the plan's state mode: starts from [`start_state`], ends
/// with [`end_state`].
#[allow(clippy::too_many_arguments)]
pub fn run_local(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    ins: &Extensions,
    state: &mut LocalState,
    reply: &mut Extensions,
    correction: GradientCorrection<'_>,
    controller: Option<&mut (dyn StepController + 'static)>,
) -> Result<TrainReport> {
    let mut opt = start_state(plan, ins, state);
    let r = local_train_controlled(
        model,
        data,
        params,
        plan,
        steps,
        step_offset,
        rng,
        &mut opt,
        correction,
        controller,
    )?;
    end_state(plan, opt, state, reply);
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// The linear aggregation path (clients pre-scale, the server only sums).

/// Sent with every instruction when the strategy aggregates linearly
/// (`strategy.aggregation = "linear"`): the client multiplies its update by its
/// aggregation weight w_k (its number of training examples, or 1) and, with
/// `normalize`, each group by `1/Λ_g`, its own rate sum; it reports the scalars the
/// server needs, so the server only ever adds vectors up (the shape secure aggregation
/// needs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreScale {
    /// w_k = the client's number of training examples (else 1).
    pub by_examples: bool,
    /// Divide each group's update by the client's Λ_{k,g}.
    pub normalize: bool,
    /// w_k = n_k / weight_scale (1 by default; secure aggregation uses the cohort's
    /// largest n_k, a public number, so weights fit its fixed-point range).
    #[serde(default = "one")]
    pub weight_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl Payload for PreScale {
    const NAME: &'static str = "pre-scale";
}

/// What a pre-scaling client reports beside its scaled update: `w_k` and `w_k·Λ_{k,g}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreScaled {
    /// w_k.
    pub weight: f64,
    /// w_k·Λ_{k,g} per group.
    pub weighted_rate_sum: Vec<f64>,
}

impl Payload for PreScaled {
    const NAME: &'static str = "pre-scaled";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(format!("weight {} must be finite and >= 0", self.weight));
        }
        if self.weighted_rate_sum.len() != spec.num_groups()
            || self
                .weighted_rate_sum
                .iter()
                .any(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err(format!(
                "weighted_rate_sum must hold {} finite values >= 0",
                spec.num_groups()
            ));
        }
        Ok(())
    }
}

/// Applies the instruction's [`PreScale`] to a finished update of a client with
/// `num_examples` training examples, in place (no-op without one).
pub fn pre_scale(
    ins: &Extensions,
    delta: &mut ParamTree,
    report: &TrainReport,
    num_examples: u64,
    reply: &mut Extensions,
) {
    let Some(p) = ins.get::<PreScale>() else {
        return;
    };
    let weight = if p.by_examples {
        num_examples as f64 / p.weight_scale
    } else {
        1.0
    };
    let spec = delta.spec().clone();
    for e in spec.entries() {
        let lam = report.rate_sum.get(e.group).copied().unwrap_or(0.0);
        let c = if p.normalize {
            if lam > 0.0 {
                weight / lam
            } else {
                0.0
            }
        } else {
            weight
        } as f32;
        for v in &mut delta.as_mut_slice()[e.range()] {
            *v *= c;
        }
    }
    reply.insert(PreScaled {
        weight,
        weighted_rate_sum: report.rate_sum.iter().map(|l| weight * l).collect(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batch_order_covers_each_epoch_exactly_once() {
        let rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut o = BatchOrder::new(10, 4, rng);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(o.next_batch());
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(o.next_batch().len(), 4);
    }
}
