//! What every personalised algorithm shares (docs/algorithms.md Part E, §0.4;
//! docs/personalization.md): the server hooks that send a recipe and the group masks and
//! aggregate only the shared groups ([`PersonalHooks`]), the payloads
//! ([`PersonalGroups`], [`PersonalModel`]), and the client-side round around a
//! [`Recipe`] (keep the personal model, never send personal groups).
//!
//! The one decision a reader needs: personal parameters never leave the client. They
//! live in the client's state as a [`PersonalModel`] (full length, laid out by the
//! model's spec; for partial sharing only the personal groups' values are meaningful),
//! and the server aggregates with a per-group mask so that personal groups never move
//! the global model. Which groups are personal is decided by group labels (any grouping:
//! `groups` in the experiment file), resolved against the model's spec.
//!
//! Optimisers: the plan's optimiser and state mode apply to the parameters a recipe
//! sends (the shared half); a personal half (Ditto's v, APFL's v, FedRep's head) runs the
//! same optimiser with its own state, kept under `state_mode = "keep"` and fresh
//! otherwise.

use crate::local::{evaluate_splits, local_train_controlled, GradientCorrection};
use crate::parts::{Recipe, RecipeCx};
use crate::pipeline::{AfterAggregate, ServerHooks};
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    Error, EvalIns, EvalRes, Extensions, LocalState, LocalWork, PersonalEval, Result, TrainIns,
    TrainRes,
};
use fedpace_params::{l2_norm, ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};
use std::any::Any;

/// Per parameter group (spec order): whether it is personal (kept on the client) and
/// whether it is frozen during federated rounds. Sent with every personalised
/// instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalGroups {
    /// `personal[g]`: group g never leaves the client.
    pub personal: Vec<bool>,
    /// `frozen[g]`: group g does not train during federated rounds (FedBABU's head).
    pub frozen: Vec<bool>,
}

impl PersonalGroups {
    /// Whether group `g` is personal.
    pub fn is_personal(&self, g: usize) -> bool {
        self.personal.get(g).copied().unwrap_or(false)
    }
    /// Whether group `g` is frozen.
    pub fn is_frozen(&self, g: usize) -> bool {
        self.frozen.get(g).copied().unwrap_or(false)
    }
    /// Whether any group is personal.
    pub fn any_personal(&self) -> bool {
        self.personal.iter().any(|p| *p)
    }
}

impl Payload for PersonalGroups {
    const NAME: &'static str = "personal-groups";
}

/// The client's personal parameters, full length in spec layout (for partial sharing
/// only the personal groups are used). Initialised from the global model the client
/// first receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalModel(#[serde(with = "fedpace_core::ext::f32s")] pub Vec<f32>);

impl Payload for PersonalModel {
    const NAME: &'static str = "personal-model";
    fn heap_bytes(&self) -> usize {
        4 * self.0.len()
    }
}

/// Resolves group labels against `spec`; an unknown label is an error naming `key`.
pub fn group_mask(spec: &ParamSpec, labels: &[String], key: &str) -> Result<Vec<bool>> {
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
}

/// The server half every personalised algorithm shares: sends the recipe and the masks,
/// aggregates the shared groups only, trains everyone with `train_all`.
pub struct PersonalHooks {
    /// The recipe payload sent with every instruction (one entry).
    recipe: Extensions,
    /// Labels of the personal groups.
    personal_groups: Vec<String>,
    /// Labels of the frozen groups.
    frozen_groups: Vec<String>,
    /// Whether the personal groups must split the model (partial sharing).
    split: bool,
    train_all: bool,
    masks: Option<PersonalGroups>,
}

impl PersonalHooks {
    /// Hooks sending `recipe`, with the given group labels. `split`: the personal groups
    /// must be some but not all of the model's (partial sharing).
    pub fn new(
        recipe: Extensions,
        personal_groups: Vec<String>,
        frozen_groups: Vec<String>,
        split: bool,
        train_all: bool,
    ) -> Self {
        Self {
            recipe,
            personal_groups,
            frozen_groups,
            split,
            train_all,
            masks: None,
        }
    }

    /// Resolves the labels against `spec`; errors name the key, the label and the
    /// model's groups.
    pub fn resolve(&self, spec: &ParamSpec) -> Result<PersonalGroups> {
        let personal = group_mask(spec, &self.personal_groups, "strategy.personal_groups")?;
        let frozen = group_mask(spec, &self.frozen_groups, "strategy.frozen_groups")?;
        if self.split && (personal.iter().all(|p| *p) || personal.iter().all(|p| !*p)) {
            return Err(Error::invalid(
                "strategy.personal_groups",
                format!("{:?}", self.personal_groups),
                format!(
                    "some but not all of the model's groups {:?} (a model whose groups are all \
                     personal or all shared cannot be split; use an MLP or CNN, or `groups`)",
                    spec.groups()
                ),
            ));
        }
        Ok(PersonalGroups { personal, frozen })
    }
}

impl ServerHooks for PersonalHooks {
    fn describe(&self) -> String {
        format!(
            "recipe={:?}, personal={:?}, frozen={:?}, train_all={}",
            self.recipe, self.personal_groups, self.frozen_groups, self.train_all
        )
    }
    fn start(&mut self, global: &ParamTree) -> Result<()> {
        self.masks = Some(self.resolve(global.spec())?);
        Ok(())
    }
    fn train_everyone(&self) -> bool {
        self.train_all
    }
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        ins.ext.extend(self.eval_ext());
        Ok(())
    }
    fn shared_groups(&self) -> Vec<bool> {
        self.masks
            .as_ref()
            .map(|m| m.personal.iter().map(|p| !p).collect())
            .unwrap_or_default()
    }
    fn after_aggregate(&mut self, _cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    fn eval_ext(&self) -> Extensions {
        let mut e = self.recipe.clone();
        if let Some(m) = &self.masks {
            e.insert(m.clone());
        }
        e
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------------------------------
// Client side.

/// The instruction's masks (none: every group shared, none frozen).
pub fn masks(ext: &Extensions) -> PersonalGroups {
    ext.get::<PersonalGroups>()
        .cloned()
        .unwrap_or(PersonalGroups {
            personal: Vec::new(),
            frozen: Vec::new(),
        })
}

/// `global` with the personal groups replaced by the client's stored personal values.
pub fn merge_personal(global: &ParamTree, p: &PersonalGroups, state: &LocalState) -> ParamTree {
    let mut out = global.clone();
    if let Some(ps) = state.ext.get::<PersonalModel>() {
        if ps.0.len() == out.as_slice().len() {
            let spec = global.spec().clone();
            for e in spec.entries() {
                if p.is_personal(e.group) {
                    out.as_mut_slice()[e.range()].copy_from_slice(&ps.0[e.range()]);
                }
            }
        }
    }
    out
}

/// The client's personal model, or the global model before it has one.
pub fn personal_or_global(global: &ParamTree, state: &LocalState) -> ParamTree {
    match state.ext.get::<PersonalModel>() {
        Some(s) if s.0.len() == global.as_slice().len() => {
            let mut out = global.clone();
            out.as_mut_slice().copy_from_slice(&s.0);
            out
        }
        _ => global.clone(),
    }
}

/// One round of a personalised client: runs the recipe, keeps the personal groups,
/// returns the delta of the shared groups (personal groups' delta is zero: they are
/// never sent).
pub fn train(
    recipe: &dyn Recipe,
    cx: &mut RecipeCx<'_>,
    ins: &TrainIns,
    state: &mut LocalState,
) -> Result<TrainRes> {
    let global = ins.params.as_ref();
    let spec = global.spec().clone();
    let p = masks(&ins.ext);
    let mut reply = Extensions::new();
    let round = recipe.train(cx, ins, state, &mut reply)?;
    let (trained, mut report) = (round.trained, round.report);
    if p.any_personal() {
        state.ext.insert(PersonalModel(trained.as_slice().to_vec()));
    }
    let mut delta = trained.into_vec();
    for (d, x) in delta.iter_mut().zip(global.as_slice()) {
        *d -= x;
    }
    // The validation probe (a learned rate policy under a personalised algorithm): on the
    // whole trained model, personal groups included.
    if ins.ext.get::<crate::probe::ValidationProbe>().is_some() {
        use crate::parts::LocalHook;
        crate::probe::ProbeHook.finish(&mut crate::parts::Finish {
            id: cx.id,
            ins,
            state,
            delta: &delta,
            report: &report,
            reply: &mut reply,
            model: &mut *cx.model,
            data: cx.data,
        })?;
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
        num_examples: cx.data.train.len() as u64,
        report,
        ext: reply,
    })
}

/// Personalised evaluation: the personal model as is, or fine-tuned for
/// `ins.finetune_steps` steps from it (from the global model for recipes without one).
/// The stored state is never changed by evaluation.
pub fn evaluate(
    recipe: &dyn Recipe,
    cx: &mut RecipeCx<'_>,
    ins: &EvalIns,
    state: &LocalState,
) -> Result<EvalRes> {
    let personal = match ins.personalized {
        PersonalEval::PersonalModel => recipe.personal_model(cx, ins, state)?,
        PersonalEval::Finetune => {
            let start = recipe.finetune_start(cx, ins, state)?;
            let plan = recipe
                .finetune_plan(cx, ins, state)?
                .unwrap_or_else(|| ins.plan.clone());
            Some(finetune_with(
                cx,
                start.unwrap_or_else(|| ins.params.as_ref().clone()),
                ins,
                &plan,
                state,
            )?)
        }
    };
    evaluate_splits(
        cx.model,
        cx.data,
        &ins.params,
        personal.as_ref(),
        ins.max_test_samples,
    )
}

/// `ins.finetune_steps` local steps from `x` under the evaluation plan (fresh optimiser
/// state, the fine-tuning stream), when there are steps and training data.
pub fn finetune(
    cx: &mut RecipeCx<'_>,
    x: ParamTree,
    ins: &EvalIns,
    state: &LocalState,
) -> Result<ParamTree> {
    finetune_with(cx, x, ins, &ins.plan, state)
}

/// [`finetune`] under `plan` rather than the evaluation plan.
pub fn finetune_with(
    cx: &mut RecipeCx<'_>,
    mut x: ParamTree,
    ins: &EvalIns,
    plan: &fedpace_core::RatePlan,
    state: &LocalState,
) -> Result<ParamTree> {
    if ins.finetune_steps > 0 && !cx.data.train.is_empty() {
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::FineTune);
        let mut plan = plan.clone();
        plan.work = LocalWork::Steps(ins.finetune_steps);
        let mut controller = cx.controller(&plan);
        local_train_controlled(
            cx.model,
            cx.data.train.as_ref(),
            &mut x,
            &plan,
            ins.finetune_steps,
            state.steps_done,
            rng,
            &mut None,
            GradientCorrection::default(),
            controller.as_deref_mut(),
        )?;
    }
    Ok(x)
}

// ---------------------------------------------------------------------------------------
// What the personalised algorithms' configs share.

/// Labels as owned strings.
pub(crate) fn labels(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Errors unless a label list is non-empty.
pub(crate) fn check_labels(key: &str, v: &[String]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::invalid(key, "[]", "at least one group label"));
    }
    Ok(())
}

/// Builds a personalised algorithm: the stages with [`PersonalHooks`] sending `recipe`.
pub(crate) fn build(
    name: &'static str,
    cx: crate::config::BuildCx,
    hooks: PersonalHooks,
) -> Result<crate::config::Built> {
    Ok(crate::config::Built::Sync(Box::new(
        crate::pipeline::Pipeline::new(name, cx.settings, cx.policy, Box::new(hooks))
            .with_server(cx.server),
    )))
}

/// The checks of recipes whose local steps are their own update rules (pFedMe,
/// Per-FedAvg, APFL): no step controller, no proximal term.
pub(crate) fn own_steps(
    name: &str,
    c: &crate::config::Combination<'_>,
) -> std::result::Result<(), String> {
    if matches!(c.optimizer, fedpace_optim::OptimizerSpec::DeltaSgd { .. }) {
        return Err(format!(
            "{}: not supported by {name} (its local steps are its own update rules, with no \
             step controller for Δ-SGD)",
            c.optimizer_source
        ));
    }
    if c.policy.sets_prox_mu() {
        return Err(format!(
            "policy {}: not supported by {name} (its local steps have no proximal term)",
            c.policy.name()
        ));
    }
    Ok(())
}
