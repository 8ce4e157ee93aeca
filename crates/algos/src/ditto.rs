//! Ditto (Li, Hu, Beirami, Smith, ICML 2021), docs/algorithms.md §E.3; docs/personalization.md.
//!
//! Per client `min_v F_k(v) + (λ/2)‖v − w^t‖²`. The global half is FedAvg's local
//! training under the plan (optimiser, rates, state mode, proximal term); the personal
//! half runs the same number of steps on the **same batches** (same shuffle stream):
//! `v ← v − η_p,g (∇F(v; b) + λ(v − w^t))`, with the plan's optimiser (its own state,
//! kept under `state_mode = "keep"`). Because the personal step depends only on `w^t`
//! (fixed for the round) and the batch, running the two halves one after the other
//! gives exactly the reference code's interleaved result. `v` persists as the client's
//! personal model (initialised from the first global model the client receives). η_p
//! is `personal_lr` (default: the plan's rate) with the plan's group multipliers.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::local::{
    local_train_controlled, plan_with_base, run_local, state_bytes, GradientCorrection,
};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, personal_or_global, PersonalHooks, PersonalModel};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{Error, EvalIns, Extensions, LocalState, Result, TrainIns};
use fedpace_optim::{State, StateMode};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// Ditto's recipe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ditto {
    /// Regularisation λ towards the global model.
    pub lambda: f32,
    /// Personal rate (scaled by group multipliers); `None` = the plan's base rate.
    pub personal_lr: Option<f32>,
}

impl Payload for Ditto {
    const NAME: &'static str = "ditto";
}

/// The personal half's optimiser state, kept under `state_mode = "keep"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DittoPersonalOptimizer(pub State);

impl Payload for DittoPersonalOptimizer {
    const NAME: &'static str = "ditto-personal-optimizer";
    fn heap_bytes(&self) -> usize {
        state_bytes(&self.0)
    }
}

/// Runs `steps` personal steps on `v`, pulled towards `global` with strength `lambda`,
/// under `plan` (its rates at `personal_lr`), from optimiser state `opt`.
#[allow(clippy::too_many_arguments)]
pub fn train_personal(
    cx: &mut RecipeCx<'_>,
    v: &mut ParamTree,
    global: &ParamTree,
    plan: &fedpace_core::RatePlan,
    k: Ditto,
    steps: u32,
    step_offset: u64,
    rng: impl rand::Rng,
    opt: &mut Option<State>,
) -> Result<()> {
    let plan = plan_with_base(plan, k.personal_lr.unwrap_or(plan.base_lr));
    let mut controller = cx.controller(&plan);
    local_train_controlled(
        cx.model,
        cx.data.train.as_ref(),
        v,
        &plan,
        steps,
        step_offset,
        rng,
        opt,
        GradientCorrection {
            proximal: Some((k.lambda as f64, global.as_slice())),
            ..Default::default()
        },
        controller.as_deref_mut(),
    )?;
    Ok(())
}

struct DittoClient;

impl Recipe for DittoClient {
    fn payload(&self) -> &'static str {
        Ditto::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let k = *ins.ext.get::<Ditto>().expect("switched on by its payload");
        let global = ins.params.as_ref();
        let mut w = global.clone();
        let steps = ins.plan.steps_for(cx.data.train.len());
        let offset = state.steps_done;
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let mut controller = cx.controller(&ins.plan);
        let report = run_local(
            cx.model,
            cx.data.train.as_ref(),
            &mut w,
            &ins.plan,
            steps,
            offset,
            rng,
            &ins.ext,
            state,
            reply,
            GradientCorrection {
                proximal: Some((ins.plan.prox_mu, global.as_slice())),
                ..Default::default()
            },
            controller.as_deref_mut(),
        )?;
        let mut v = personal_or_global(global, state);
        let rng_v = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let keep = ins.plan.state_mode == StateMode::Keep;
        let mut opt = if keep {
            state.ext.remove::<DittoPersonalOptimizer>().map(|s| s.0)
        } else {
            None
        };
        train_personal(
            cx, &mut v, global, &ins.plan, k, steps, offset, rng_v, &mut opt,
        )?;
        if keep {
            if let Some(s) = opt {
                state.ext.insert(DittoPersonalOptimizer(s));
            }
        }
        state.ext.insert(PersonalModel(v.into_vec()));
        Ok(RecipeRound { trained: w, report })
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        Ok(Some(personal_or_global(&ins.params, state)))
    }
}

/// `ditto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DittoConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// λ (default 1).
    pub lambda: f64,
    /// Personal rate (default: `client.lr`).
    pub personal_lr: Option<f64>,
}

impl Default for DittoConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            lambda: 1.0,
            personal_lr: None,
        }
    }
}

impl Algorithm for DittoConfig {
    const NAME: &'static str = "ditto";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::invalid(
                "strategy.lambda",
                self.lambda,
                "must be >= 0",
            ));
        }
        if let Some(l) = self.personal_lr {
            if !(l.is_finite() && l > 0.0) {
                return Err(Error::invalid("strategy.personal_lr", l, "must be > 0"));
            }
            crate::config::check_f32("strategy.personal_lr", l)?;
        }
        crate::config::check_f32("strategy.lambda", self.lambda)
    }
    fn register(a: &mut Algorithms) {
        a.payload::<Ditto>().payload::<DittoPersonalOptimizer>();
        a.parts().add_recipe(DittoClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        let recipe = Ditto {
            lambda: self.lambda as f32,
            personal_lr: self.personal_lr.map(|x| x as f32),
        };
        let hooks = PersonalHooks::new(
            Extensions::new().with(recipe),
            Vec::new(),
            Vec::new(),
            false,
            self.train_all,
        );
        build(Self::NAME, cx, hooks)
    }
}
