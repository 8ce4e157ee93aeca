//! The shell every personalised algorithm shares (ALGORITHMS.md Part E, §0.4): a
//! FedAvg-like server that sends a typed [`ClientRecipe`] and aggregates only the shared
//! parameter groups (mask-aware [`aggregate_masked`]), and the client-side dispatch that
//! runs the recipe and keeps the personal model in [`LocalState::personal`].
//!
//! Which groups are personal is decided by group labels (`personal_groups = ["head"]`),
//! resolved against the model's `ParamSpec` on the first round. Personal groups are never
//! sent: the client zeroes their delta and the server's mask ignores them anyway.

use crate::aggregate::usable;
use crate::aggregate::{aggregate_masked, Normalize};
use crate::client::{evaluate_on, local_train};
use crate::sampling::Sampling;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    AggregateSummary, ClientData, ClientId, ClientPool, ClientRecipe, Error, EvalIns, EvalRes,
    InsExtras, LocalState, LocalWork, Model, PersonalEval, PersonalIns, PersonalState, RatePlan,
    RatePolicy, Reply, ResExtras, Result, Strategy, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::StateMode;
use fedpace_params::{l2_norm, ParamSpec, ParamTree};
use rand::Rng;
use std::sync::Arc;

/// Settings of a personalised strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalizedConfig {
    /// Algorithm name for logs (`fedper`, `pfedme`, …).
    pub name: &'static str,
    /// Who is aggregated each round.
    pub sampling: Sampling,
    /// Server rate η_g (pFedMe's β).
    pub server_lr: f32,
    /// Objective-consistency normalisation over the shared groups.
    pub normalize: Normalize,
    /// The plan every client starts from before the policy adjusts it.
    pub base_plan: RatePlan,
    /// The client recipe.
    pub recipe: ClientRecipe,
    /// Labels of the groups that stay on the client.
    pub personal_groups: Vec<String>,
    /// Labels of the groups that do not train during rounds (FedBABU).
    pub frozen_groups: Vec<String>,
    /// Train every client each round and aggregate only the sampled ones (the pFedMe
    /// reference code's behaviour); `false` trains only the sampled clients.
    pub train_all: bool,
}

impl PersonalizedConfig {
    /// Resolves group labels against `spec`; an unknown label is an error naming the key.
    pub fn resolve(&self, spec: &ParamSpec) -> Result<PersonalIns> {
        let mask = |labels: &[String], key: &str| -> Result<Vec<bool>> {
            for l in labels {
                if spec.group_index(l).is_none() {
                    return Err(Error::invalid(
                        key,
                        format!("{l:?}"),
                        format!("a parameter group of the model ({:?})", spec.groups()),
                    ));
                }
            }
            Ok(spec.groups().iter().map(|g| labels.contains(g)).collect())
        };
        let personal = mask(&self.personal_groups, "strategy.personal_groups")?;
        let frozen = mask(&self.frozen_groups, "strategy.frozen_groups")?;
        if matches!(
            self.recipe,
            ClientRecipe::PartialShare | ClientRecipe::FedRep { .. }
        ) && (personal.iter().all(|p| *p) || personal.iter().all(|p| !*p))
        {
            return Err(Error::invalid(
                "strategy.personal_groups",
                format!("{:?}", self.personal_groups),
                format!(
                    "some but not all of the model's groups {:?} (a model whose groups are all \
                     personal or all shared cannot be split; use an MLP or CNN)",
                    spec.groups()
                ),
            ));
        }
        Ok(PersonalIns {
            recipe: self.recipe.clone(),
            personal,
            frozen,
        })
    }
}

/// A personalised strategy: FedAvg over the shared groups plus a client recipe.
pub struct Personalized {
    cfg: PersonalizedConfig,
    policy: Box<dyn RatePolicy>,
    started: bool,
    ins: Option<PersonalIns>,
    sampled: Vec<ClientId>,
}

impl Personalized {
    /// The strategy with its settings and rate policy.
    pub fn new(cfg: PersonalizedConfig, policy: Box<dyn RatePolicy>) -> Self {
        Self {
            cfg,
            policy,
            started: false,
            ins: None,
            sampled: Vec::new(),
        }
    }
}

impl Strategy for Personalized {
    fn describe(&self) -> String {
        format!(
            "{}(recipe={:?}, personal={:?}, frozen={:?}, server_lr={}, train_all={}, policy={})",
            self.cfg.name,
            self.cfg.recipe,
            self.cfg.personal_groups,
            self.cfg.frozen_groups,
            self.cfg.server_lr,
            self.cfg.train_all,
            self.policy.describe()
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        if !self.started {
            self.policy.start(pool)?;
            self.started = true;
        }
        if self.ins.is_none() {
            self.ins = Some(self.cfg.resolve(global.spec())?);
        }
        let ins = self.ins.clone().expect("resolved above");
        let groups = global.spec().num_groups();
        self.sampled = self.cfg.sampling.sample(pool, round, seed);
        let train: Vec<ClientId> = if self.cfg.train_all {
            pool.ids().collect()
        } else {
            self.sampled.clone()
        };
        train
            .into_iter()
            .map(|id| {
                let info = pool.info(id)?;
                let plan = self.policy.plan(round, &info, &self.cfg.base_plan)?;
                plan.validate(groups)?;
                Ok((
                    id,
                    TrainIns {
                        round,
                        params: global.clone(),
                        plan,
                        seed,
                        extras: InsExtras::Personal(ins.clone()),
                    },
                ))
            })
            .collect()
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        let ok = usable(round, replies, |c| self.sampled.binary_search(&c).is_ok())?;
        let shared: Vec<bool> = self
            .ins
            .as_ref()
            .map(|i| i.personal.iter().map(|p| !p).collect())
            .unwrap_or_default();
        let weights: Vec<f64> = ok.iter().map(|(_, r)| r.num_examples as f64).collect();
        let agg = aggregate_masked(global.spec(), &ok, &weights, self.cfg.normalize, &shared);
        let lr = self.cfg.server_lr;
        for (x, d) in global.as_mut_slice().iter_mut().zip(&agg.delta) {
            *x += lr * d;
        }
        for r in replies {
            if let (Ok(res), Ok(info)) = (&r.result, pool.info(r.client)) {
                self.policy.observe(round, &info, &res.report);
            }
        }
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm: lr as f64 * l2_norm(&agg.delta),
            server_lr: lr as f64,
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.cfg.base_plan.clone()
    }

    fn eval_extras(&self) -> InsExtras {
        match &self.ins {
            Some(i) => InsExtras::Personal(i.clone()),
            None => InsExtras::None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client side.

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
pub(crate) fn rates_with_base(plan: &RatePlan, base: f32, groups: usize, step: u64) -> Vec<f32> {
    let f = plan.schedule.factor(step);
    (0..groups)
        .map(|g| base * plan.group_multipliers.get(g).copied().unwrap_or(1.0) * f)
        .collect()
}

/// A copy of `plan` whose multipliers are 0 on the groups where `zero(g)`.
pub(crate) fn plan_zeroing(
    plan: &RatePlan,
    groups: usize,
    zero: impl Fn(usize) -> bool,
) -> RatePlan {
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

/// `global` with the personal groups replaced by the client's stored personal values.
pub(crate) fn merge_personal(global: &ParamTree, p: &PersonalIns, state: &LocalState) -> ParamTree {
    let mut out = global.clone();
    if let Some(ps) = &state.personal {
        if ps.params.len() == out.as_slice().len() {
            let spec = global.spec().clone();
            for e in spec.entries() {
                if p.is_personal(e.group) {
                    out.as_mut_slice()[e.range()].copy_from_slice(&ps.params[e.range()]);
                }
            }
        }
    }
    out
}

/// Runs `local_train` honouring the plan's optimiser-state mode (as the standard client).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_local(
    model: &mut dyn Model,
    data: &dyn fedpace_core::Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    state: &mut LocalState,
) -> Result<TrainReport> {
    let mut opt = match plan.state_mode {
        StateMode::Reset => None,
        StateMode::Keep => state.optimizer.take(),
        StateMode::ServerInit => {
            return Err(Error::invalid(
                "plan.state_mode",
                "server-init",
                "reset or keep (no strategy sends optimiser moments yet)",
            ))
        }
    };
    let r = local_train(model, data, params, plan, steps, step_offset, rng, &mut opt)?;
    if plan.state_mode == StateMode::Keep {
        state.optimizer = opt;
    }
    Ok(r)
}

/// The client's half: runs the recipe, keeps the personal model, returns the delta of
/// the shared groups (personal groups' delta is zero: they are never sent).
pub fn train(
    id: ClientId,
    model: &mut dyn Model,
    data: &ClientData,
    ins: &TrainIns,
    p: &PersonalIns,
    state: &mut LocalState,
) -> Result<TrainRes> {
    let global = ins.params.as_ref();
    let spec = global.spec().clone();
    let groups = spec.num_groups();
    let n = data.train.len();
    let rng = stream(ins.seed, ins.round as u64, id, Purpose::Shuffle);
    let offset = state.steps_done;
    let (trained, mut report) = match &p.recipe {
        ClientRecipe::PartialShare | ClientRecipe::FedBabu => {
            let mut x = merge_personal(global, p, state);
            let plan = plan_zeroing(&ins.plan, groups, |g| p.is_frozen(g));
            let steps = plan.steps_for(n);
            let r = run_local(
                model,
                data.train.as_ref(),
                &mut x,
                &plan,
                steps,
                offset,
                rng,
                state,
            )?;
            (x, r)
        }
        ClientRecipe::FedRep {
            head_epochs,
            body_epochs,
        } => {
            let mut x = merge_personal(global, p, state);
            let r = crate::fedrep::train(
                model,
                data.train.as_ref(),
                &mut x,
                &ins.plan,
                p,
                (*head_epochs, *body_epochs),
                offset,
                rng,
            )?;
            (x, r)
        }
        ClientRecipe::PerFedAvg {
            variant,
            meta_lr,
            hf_delta,
        } => {
            let mut x = global.clone();
            let steps = ins.plan.steps_for(n);
            let extra = [
                stream(ins.seed, ins.round as u64, id, Purpose::Algorithm),
                stream(
                    ins.seed,
                    ins.round as u64,
                    id ^ (1 << 63),
                    Purpose::Algorithm,
                ),
            ];
            let r = crate::perfedavg::train(
                model,
                data.train.as_ref(),
                &mut x,
                &ins.plan,
                crate::perfedavg::PerFedAvgStep {
                    variant: *variant,
                    meta_lr: *meta_lr,
                    hf_delta: *hf_delta,
                },
                steps,
                offset,
                [rng, extra[0].clone(), extra[1].clone()],
            )?;
            (x, r)
        }
        ClientRecipe::PFedMe {
            inner_steps,
            lambda,
            personal_lr,
            mu_reg,
        } => {
            let mut w = global.clone();
            let steps = ins.plan.steps_for(n);
            let (theta, r) = crate::pfedme::train(
                model,
                data.train.as_ref(),
                &mut w,
                &ins.plan,
                crate::pfedme::PFedMeStep {
                    inner_steps: *inner_steps,
                    lambda: *lambda,
                    personal_lr: *personal_lr,
                    mu_reg: *mu_reg,
                },
                steps,
                offset,
                rng,
            )?;
            state.personal = Some(PersonalState {
                params: theta.into_vec(),
                alpha: None,
            });
            (w, r)
        }
        ClientRecipe::Ditto {
            lambda,
            personal_lr,
        } => {
            let mut w = global.clone();
            let steps = ins.plan.steps_for(n);
            let r = run_local(
                model,
                data.train.as_ref(),
                &mut w,
                &ins.plan,
                steps,
                offset,
                rng,
                state,
            )?;
            let mut v = personal_or_global(global, state);
            let rng_v = stream(ins.seed, ins.round as u64, id, Purpose::Shuffle);
            crate::ditto::train_personal(
                model,
                data.train.as_ref(),
                &mut v,
                global,
                &ins.plan,
                *lambda,
                *personal_lr,
                steps,
                offset,
                rng_v,
            )?;
            state.personal = Some(PersonalState {
                params: v.into_vec(),
                alpha: None,
            });
            (w, r)
        }
        ClientRecipe::Apfl {
            alpha_init,
            alpha_lr,
        } => {
            let mut w = global.clone();
            let mut v = personal_or_global(global, state);
            let mut alpha = state
                .personal
                .as_ref()
                .and_then(|s| s.alpha)
                .unwrap_or(*alpha_init);
            let steps = ins.plan.steps_for(n);
            let r = crate::apfl::train(
                model,
                data.train.as_ref(),
                &mut w,
                &mut v,
                &mut alpha,
                *alpha_lr,
                &ins.plan,
                steps,
                offset,
                rng,
            )?;
            state.personal = Some(PersonalState {
                params: v.into_vec(),
                alpha: Some(alpha),
            });
            (w, r)
        }
    };
    // Keep personal groups (partial sharing) and zero their delta: they are never sent.
    let has_personal_groups = p.personal.iter().any(|x| *x);
    if has_personal_groups {
        state.personal = Some(PersonalState {
            params: trained.as_slice().to_vec(),
            alpha: state.personal.as_ref().and_then(|s| s.alpha),
        });
    }
    let mut delta = trained.into_vec();
    for (d, x) in delta.iter_mut().zip(global.as_slice()) {
        *d -= x;
    }
    for e in spec.entries() {
        if p.is_personal(e.group) {
            delta[e.range()].fill(0.0);
        }
    }
    report.update_norm = l2_norm(&delta);
    state.rounds_trained += 1;
    state.steps_done += report.steps as u64;
    Ok(TrainRes {
        delta: ParamTree::from_vec(spec, delta)?,
        num_examples: n as u64,
        report,
        extras: ResExtras::None,
    })
}

fn personal_or_global(global: &ParamTree, state: &LocalState) -> ParamTree {
    match &state.personal {
        Some(s) if s.params.len() == global.as_slice().len() => {
            ParamTree::from_vec(global.spec().clone(), s.params.clone()).expect("length checked")
        }
        _ => global.clone(),
    }
}

/// The client's personal model as its recipe defines it (ALGORITHMS.md §0.4), or `None`
/// when the recipe has none (FedBABU: personalisation is fine-tuning).
pub fn personal_model(
    id: ClientId,
    model: &mut dyn Model,
    data: &ClientData,
    ins: &EvalIns,
    p: &PersonalIns,
    state: &LocalState,
) -> Result<Option<ParamTree>> {
    let global = ins.params.as_ref();
    Ok(match &p.recipe {
        ClientRecipe::PartialShare | ClientRecipe::FedRep { .. } => {
            Some(merge_personal(global, p, state))
        }
        ClientRecipe::PFedMe { .. } | ClientRecipe::Ditto { .. } => {
            Some(personal_or_global(global, state))
        }
        ClientRecipe::Apfl { alpha_init, .. } => {
            let v = personal_or_global(global, state);
            let a = state
                .personal
                .as_ref()
                .and_then(|s| s.alpha)
                .unwrap_or(*alpha_init);
            Some(crate::apfl::mix(a, &v, global))
        }
        ClientRecipe::PerFedAvg { .. } => {
            // One adaptation step w − α∇f(w; D) on a local training batch (E.1).
            let mut x = global.clone();
            if !data.train.is_empty() {
                let rng = stream(ins.seed, ins.round as u64, id, Purpose::FineTune);
                local_train(
                    model,
                    data.train.as_ref(),
                    &mut x,
                    &ins.plan,
                    1,
                    state.steps_done,
                    rng,
                    &mut None,
                )?;
            }
            Some(x)
        }
        ClientRecipe::FedBabu => None,
    })
}

/// Personalised evaluation: the personal model as is, or fine-tuned for
/// `ins.finetune_steps` steps from it (from the global model for recipes without one).
/// The stored state is never changed by evaluation.
pub fn evaluate(
    id: ClientId,
    model: &mut dyn Model,
    data: &ClientData,
    ins: &EvalIns,
    p: &PersonalIns,
    state: &LocalState,
) -> Result<EvalRes> {
    let global = evaluate_on(model, data.test.as_ref(), &ins.params, ins.max_test_samples)?;
    let start = match (ins.personalized, &p.recipe) {
        // Per-FedAvg's fine-tuning is its adaptation step repeated K times from w.
        (PersonalEval::Finetune, ClientRecipe::PerFedAvg { .. }) => None,
        _ => personal_model(id, model, data, ins, p, state)?,
    };
    let personal = match ins.personalized {
        PersonalEval::PersonalModel => start,
        PersonalEval::Finetune => {
            let mut x = start.unwrap_or_else(|| ins.params.as_ref().clone());
            if ins.finetune_steps > 0 && !data.train.is_empty() {
                let rng = stream(ins.seed, ins.round as u64, id, Purpose::FineTune);
                let mut plan = ins.plan.clone();
                plan.work = LocalWork::Steps(ins.finetune_steps);
                local_train(
                    model,
                    data.train.as_ref(),
                    &mut x,
                    &plan,
                    ins.finetune_steps,
                    state.steps_done,
                    rng,
                    &mut None,
                )?;
            }
            Some(x)
        }
    };
    let personalized = match personal {
        Some(x) => Some(evaluate_on(
            model,
            data.test.as_ref(),
            &x,
            ins.max_test_samples,
        )?),
        None => None,
    };
    Ok(EvalRes {
        global,
        personalized,
    })
}
