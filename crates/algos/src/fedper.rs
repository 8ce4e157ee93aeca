//! FedPer (Arivazhagan et al. 2019), docs/algorithms.md §E.4; docs/personalization.md.
//!
//! Base layers shared, top personalisation layers kept on the client. Each round the
//! client trains the **whole** model (its stored head + the global body) for the plan's
//! local work and sends only the base layers; the server averages them (mask-aware
//! FedAvg). Personal groups default to `["head"]`; separate head and base rates come from
//! the plan's group multipliers (`client.group_lr = { head = 10.0 }`) or a policy. The
//! recipe ([`PartialShare`]) is shared with LG-FedAvg.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::local::{plan_zeroing, run_local, GradientCorrection};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, check_labels, labels, masks, merge_personal, PersonalHooks};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{EvalIns, Extensions, LocalState, Result, TrainIns};
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};

/// Groups that stay on the client unless `strategy.personal_groups` says otherwise.
pub const DEFAULT_PERSONAL_GROUPS: &[&str] = &["head"];

/// The partial-sharing recipe (FedPer, LG-FedAvg): the whole model trains locally
/// (frozen groups excepted), the personal groups stay on the client.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartialShare;

impl Payload for PartialShare {
    const NAME: &'static str = "partial-share";
}

impl Recipe for PartialShare {
    fn payload(&self) -> &'static str {
        Self::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let p = masks(&ins.ext);
        let groups = ins.params.spec().num_groups();
        let mut x = merge_personal(&ins.params, &p, state);
        let plan = plan_zeroing(&ins.plan, groups, |g| p.is_frozen(g));
        let steps = plan.steps_for(cx.data.train.len());
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        // FedProx's term, towards where the round started (the client's own personal groups).
        let start = (plan.prox_mu > 0.0).then(|| x.as_slice().to_vec());
        let mut controller = cx.controller(&plan);
        let report = run_local(
            cx.model,
            cx.data.train.as_ref(),
            &mut x,
            &plan,
            steps,
            state.steps_done,
            rng,
            &ins.ext,
            state,
            reply,
            GradientCorrection {
                proximal: start.as_deref().map(|s| (plan.prox_mu, s)),
                ..Default::default()
            },
            controller.as_deref_mut(),
        )?;
        Ok(RecipeRound { trained: x, report })
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        Ok(Some(merge_personal(&ins.params, &masks(&ins.ext), state)))
    }
}

/// `fedper`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedPerConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// Labels of the groups that stay on the client (default `["head"]`).
    pub personal_groups: Vec<String>,
}

impl Default for FedPerConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            personal_groups: labels(DEFAULT_PERSONAL_GROUPS),
        }
    }
}

impl FedPerConfig {
    pub(crate) fn hooks(&self) -> PersonalHooks {
        PersonalHooks::new(
            Extensions::new().with(PartialShare),
            self.personal_groups.clone(),
            Vec::new(),
            true,
            self.train_all,
        )
    }
}

impl Algorithm for FedPerConfig {
    const NAME: &'static str = "fedper";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        check_labels("strategy.personal_groups", &self.personal_groups)
    }
    fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        self.hooks().resolve(spec).map(|_| ())
    }
    fn register(a: &mut Algorithms) {
        a.payload::<PartialShare>();
        a.parts().add_recipe(PartialShare);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        build(Self::NAME, cx, self.hooks())
    }
}
