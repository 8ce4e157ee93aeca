//! The standard client recipe: local mini-batch training from the rate plan, and
//! evaluation of the global and the fine-tuned (personalised) model.
//!
//! Δ-SGD (`OptimizerSpec::DeltaSgd`, the `curvature` policy) follows
//! docs/rate-policies.md, "Δ-SGD's step rule", including its departures from the paper:
//! L̂ compares the gradients at the current and the previous iterate on the *current*
//! mini-batch (an extra forward/backward per step), θ₀ = 1 makes the first step
//! √(1 + δ)·η₀, and ε is added from the second step on. The rate sums a client reports
//! are the step sizes it really used (see [`local_train_with`]).

use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    Client, ClientData, ClientId, Dataset, Error, EvalIns, EvalRes, EvalStats, InsExtras,
    LocalState, Model, PersonalEval, RatePlan, ResExtras, Result, ScaffoldOption, TrainIns,
    TrainReport, TrainRes,
};
use fedpace_optim::{
    add_proximal, apply_updates, clip_by_global_norm, LinearSolver, Normalizer, OptimizerSpec,
    State, StateMode, StepContext, Transform,
};
use fedpace_params::{l2_norm, ParamTree};
use rand::seq::SliceRandom;
use rand::Rng;

/// Batch size used for evaluation passes (does not change results).
const EVAL_BATCH: usize = 256;

/// A client that trains a [`Model`] on its [`ClientData`].
pub struct StandardClient {
    id: ClientId,
    model: Box<dyn Model>,
    data: ClientData,
}

impl StandardClient {
    /// A client `id` with its model instance and data.
    pub fn new(id: ClientId, model: Box<dyn Model>, data: ClientData) -> Self {
        Self { id, model, data }
    }
}

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

/// Runs `steps` local steps from `params` under `plan`, starting at cumulative step
/// `step_offset`. `opt_state` is the optimiser state to continue from (`None`: fresh);
/// on return it holds the state after the last step. Returns the report (without
/// update norm). The plan's `prox_mu` is not applied here; see [`local_train_with`].
#[allow(clippy::too_many_arguments)]
pub fn local_train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
) -> Result<TrainReport> {
    local_train_with(
        model,
        data,
        params,
        plan,
        steps,
        step_offset,
        rng,
        opt_state,
        GradientCorrection::default(),
    )
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

/// [`local_train`] with a [`GradientCorrection`] added to every gradient.
///
/// The report's `rate_sum[g]` is group g's total step size Λ_g as FedNova defines it
/// (docs/rate-policies.md, "Objective consistency"): the rates really used — times
/// Δ-SGD's adaptive factor and the mean trust ratio of the group's tensors (weighted by
/// their sizes) — and, for the linear solvers (SGD, momentum, LARS, with a proximal term
/// or weight decay), weighted by how much each step's gradient moves the round's result
/// ([`Normalizer`]). For plain SGD that is `Σ_s η_{g,s}`; for adaptive optimisers it
/// stays `Σ_s η_{g,s}`.
#[allow(clippy::too_many_arguments)]
pub fn local_train_with(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
    correction: GradientCorrection<'_>,
) -> Result<TrainReport> {
    let spec = params.spec().clone();
    let groups = spec.num_groups();
    let tx = plan.optimizer.build()?;
    let opt_state = opt_state.get_or_insert_with(|| tx.init(&spec));
    let prox = match correction.proximal {
        Some((mu, anchor)) if mu > 0.0 => {
            let t = add_proximal(mu);
            let mut st = t.init(&spec);
            t.set_anchor(&mut st, anchor, &spec)?;
            Some((t, st))
        }
        _ => None,
    };
    let mut prox = prox;
    let clip = match correction.clip {
        Some(c) if !(c.is_finite() && c > 0.0) => {
            return Err(Error::invalid("gradient clip norm", c, "a finite norm > 0"))
        }
        Some(c) => Some(clip_by_global_norm(c)),
        None => None,
    };
    let mut clip_state = State::default();
    if let Some(l) = correction.linear {
        if l.len() != spec.total_len() {
            return Err(Error::invalid(
                "gradient correction",
                format!("{} values", l.len()),
                format!("one per parameter ({})", spec.total_len()),
            ));
        }
    }
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let mut grad = vec![0f32; spec.total_len()];
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
    let mut delta_sgd = match plan.optimizer {
        OptimizerSpec::DeltaSgd { gamma, delta, eps } => Some(DeltaSgd {
            gamma,
            delta,
            eps,
            eta_init: plan.base_lr as f64,
            eta: plan.base_lr as f64,
            theta: 1.0,
            prev: None,
            prev_grad: vec![0f32; spec.total_len()],
        }),
        _ => None,
    };
    for s in 0..steps {
        let idx = order.next_batch();
        let batch = data.batch(&idx);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let loss = model.loss_and_grad(params, &batch, &mut grad)?;
        if s == 0 {
            report.loss_before = loss;
            report.grad_norm = l2_norm(&grad);
        }
        // Δ-SGD (§C.1): the step's rate factor from the local smoothness estimate, with
        // the gradient at the previous iterate re-evaluated on this same mini-batch.
        let factor = match delta_sgd.as_mut() {
            Some(d) => {
                let lhat = match d.prev.as_ref() {
                    Some(prev) => {
                        d.prev_grad.iter_mut().for_each(|g| *g = 0.0);
                        model.loss_and_grad(prev, &batch, &mut d.prev_grad)?;
                        let dg = diff_norm(&grad, &d.prev_grad);
                        let dx = diff_norm(params.as_slice(), prev.as_slice());
                        (dg > 0.0 && dx > 0.0).then(|| dg / dx)
                    }
                    None => None,
                };
                d.step(lhat)
            }
            None => 1.0,
        };
        if let Some(d) = delta_sgd.as_mut() {
            match d.prev.as_mut() {
                Some(p) => p.as_mut_slice().copy_from_slice(params.as_slice()),
                None => d.prev = Some(params.clone()),
            }
        }
        loss_all += loss as f64;
        if s >= tail_from {
            loss_tail += loss as f64;
            n_tail += 1;
        }
        let step = step_offset + s as u64;
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
        tx.update(&mut grad, opt_state, params.as_slice(), &ctx)?;
        apply_updates(params.as_mut_slice(), &grad);
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

/// Δ-SGD's per-round step-size state (ALGORITHMS.md §C.1).
struct DeltaSgd {
    gamma: f64,
    delta: f64,
    eps: f64,
    eta_init: f64,
    eta: f64,
    theta: f64,
    prev: Option<ParamTree>,
    prev_grad: Vec<f32>,
}

impl DeltaSgd {
    /// The next step size given the smoothness estimate `L̂_k` (None at the first step
    /// or when a norm is 0), returned as a factor on the plan's rate η_init.
    fn step(&mut self, lhat: Option<f64>) -> f64 {
        if self.eta_init <= 0.0 {
            return 1.0;
        }
        let grow = (1.0 + self.delta * self.theta).sqrt() * self.eta;
        let next = match lhat {
            Some(l) => (self.gamma / (2.0 * l)).min(grow) + self.eps,
            None => grow,
        };
        self.theta = next / self.eta;
        self.eta = next;
        next / self.eta_init
    }
}

fn diff_norm(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt()
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

impl StandardClient {
    /// ∇F_i(x): the mean gradient over the whole local training split (SCAFFOLD
    /// option I), in fixed-size batches weighted by their sizes.
    pub fn full_gradient(&mut self, params: &ParamTree) -> Result<Vec<f32>> {
        let data = self.data.train.as_ref();
        let n = data.len();
        let mut out = vec![0f64; params.as_slice().len()];
        let mut g = vec![0f32; out.len()];
        let mut start = 0;
        while start < n {
            let end = (start + EVAL_BATCH).min(n);
            let idx: Vec<usize> = (start..end).collect();
            g.iter_mut().for_each(|v| *v = 0.0);
            self.model
                .loss_and_grad(params, &data.batch(&idx), &mut g)?;
            let w = (end - start) as f64 / n as f64;
            for (o, v) in out.iter_mut().zip(&g) {
                *o += w * *v as f64;
            }
            start = end;
        }
        Ok(out.into_iter().map(|v| v as f32).collect())
    }
}

impl Client for StandardClient {
    fn train(&mut self, ins: &TrainIns, state: &mut LocalState) -> Result<TrainRes> {
        if let InsExtras::Personal(p) = &ins.extras {
            return crate::personal::train(self.id, self.model.as_mut(), &self.data, ins, p, state);
        }
        let mut params = (*ins.params).clone();
        let steps = ins.plan.steps_for(self.data.train.len());
        let rng = stream(ins.seed, ins.round as u64, self.id, Purpose::Shuffle);
        let mut opt_state = match ins.plan.state_mode {
            StateMode::Reset => None,
            StateMode::Keep => state.optimizer.take(),
            // The server's averaged state when it sent one (none yet in the first round).
            StateMode::ServerInit => match &ins.extras {
                InsExtras::OptimizerState(s) => Some((**s).clone()),
                _ => None,
            },
        };
        let x = ins.params.as_slice();
        let len = x.len();
        let check = |what: &str, v: &[f32]| -> Result<()> {
            if v.len() == len {
                Ok(())
            } else {
                Err(Error::invalid(
                    what,
                    format!("{} values", v.len()),
                    format!("one per parameter ({len})"),
                ))
            }
        };
        // Drift-control terms added to every local gradient.
        let mut mu = ins.plan.prox_mu;
        let mut clip = None;
        let linear: Option<Vec<f32>> = match &ins.extras {
            // Personalised recipes returned above.
            InsExtras::None | InsExtras::OptimizerState(_) | InsExtras::Personal(_) => None,
            InsExtras::Scaffold { server_control, .. } => {
                check("extras.server_control", server_control)?;
                let mut l = server_control.to_vec();
                if let Some(ci) = &state.control_variate {
                    check("state.control_variate", ci)?;
                    for (a, c) in l.iter_mut().zip(ci) {
                        *a -= c;
                    }
                }
                Some(l)
            }
            InsExtras::FedDyn {
                alpha,
                max_grad_norm,
            } => {
                if !(alpha.is_finite() && *alpha > 0.0) {
                    return Err(Error::invalid("extras.alpha", alpha, "a finite α > 0"));
                }
                if let Some(c) = max_grad_norm {
                    if !(c.is_finite() && *c > 0.0) {
                        return Err(Error::invalid(
                            "extras.max_grad_norm",
                            c,
                            "a finite norm > 0",
                        ));
                    }
                }
                clip = *max_grad_norm;
                mu += alpha;
                match &state.feddyn_gradient {
                    Some(g) => {
                        check("state.feddyn_gradient", g)?;
                        Some(g.iter().map(|v| -v).collect())
                    }
                    None => None,
                }
            }
        };
        let mut report = local_train_with(
            self.model.as_mut(),
            self.data.train.as_ref(),
            &mut params,
            &ins.plan,
            steps,
            state.steps_done,
            rng,
            &mut opt_state,
            GradientCorrection {
                proximal: Some((mu, x)),
                linear: linear.as_deref(),
                clip,
            },
        )?;
        let optimizer_extras = match ins.plan.state_mode {
            StateMode::Keep => {
                state.optimizer = opt_state;
                ResExtras::None
            }
            StateMode::ServerInit => opt_state.map_or(ResExtras::None, ResExtras::OptimizerState),
            StateMode::Reset => ResExtras::None,
        };
        let mut delta = params.into_vec();
        for (d, x) in delta.iter_mut().zip(x) {
            *d -= x;
        }
        let extras = match &ins.extras {
            InsExtras::None | InsExtras::OptimizerState(_) | InsExtras::Personal(_) => {
                optimizer_extras
            }
            InsExtras::Scaffold {
                server_control,
                option,
            } => {
                let old = state
                    .control_variate
                    .take()
                    .unwrap_or_else(|| vec![0.0; len]);
                let new = match option {
                    ScaffoldOption::I => self.full_gradient(&ins.params)?,
                    ScaffoldOption::II => {
                        // c_i⁺ = c_i − c + (x − y)/Λ_{i,g}, per group g.
                        let group = ins.params.spec().group_of_each_value();
                        let mut new = old.clone();
                        for (j, v) in new.iter_mut().enumerate() {
                            let lam = report.rate_sum[group[j] as usize];
                            if lam > 0.0 {
                                *v += -server_control[j] + (-delta[j] as f64 / lam) as f32;
                            }
                        }
                        new
                    }
                };
                let control_delta = new.iter().zip(&old).map(|(a, b)| a - b).collect();
                state.control_variate = Some(new);
                ResExtras::Scaffold { control_delta }
            }
            InsExtras::FedDyn { alpha, .. } => {
                // g_k ← g_k − α(θ_k − θ^{t−1})
                let a = *alpha as f32;
                let mut g = state
                    .feddyn_gradient
                    .take()
                    .unwrap_or_else(|| vec![0.0; len]);
                for (gv, d) in g.iter_mut().zip(&delta) {
                    *gv -= a * d;
                }
                state.feddyn_gradient = Some(g);
                ResExtras::None
            }
        };
        report.update_norm = l2_norm(&delta);
        state.rounds_trained += 1;
        state.steps_done += steps as u64;
        Ok(TrainRes {
            delta: ParamTree::from_vec(ins.params.spec().clone(), delta)?,
            num_examples: self.data.train.len() as u64,
            report,
            extras,
        })
    }

    fn evaluate(&mut self, ins: &EvalIns, state: &mut LocalState) -> Result<EvalRes> {
        if let InsExtras::Personal(p) = &ins.extras {
            return crate::personal::evaluate(
                self.id,
                self.model.as_mut(),
                &self.data,
                ins,
                p,
                state,
            );
        }
        let limit = ins.max_test_samples;
        let global = evaluate_on(
            self.model.as_mut(),
            self.data.test.as_ref(),
            &ins.params,
            limit,
        )?;
        // Without a personal recipe the personal model is the global model itself.
        let personalized = if ins.personalized == PersonalEval::Finetune
            && ins.finetune_steps > 0
            && !self.data.train.is_empty()
        {
            let mut p = (*ins.params).clone();
            let rng = stream(ins.seed, ins.round as u64, self.id, Purpose::FineTune);
            local_train(
                self.model.as_mut(),
                self.data.train.as_ref(),
                &mut p,
                &ins.plan,
                ins.finetune_steps,
                state.steps_done,
                rng,
                &mut None,
            )?;
            Some(evaluate_on(
                self.model.as_mut(),
                self.data.test.as_ref(),
                &p,
                limit,
            )?)
        } else {
            None
        };
        Ok(EvalRes {
            global,
            personalized,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batch_order_covers_each_epoch_exactly_once() {
        let rng = rand_chacha_like();
        let mut o = BatchOrder::new(10, 4, rng);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(o.next_batch());
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(o.next_batch().len(), 4);
    }

    fn rand_chacha_like() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }
}
