//! FedBABU (Oh, Kim, Yun, ICLR 2022), docs/algorithms.md §E.8; docs/personalization.md.
//!
//! The head is initialised once from the shared seed (the global init, identical for
//! all clients) and **never trained** during federated rounds: its group multiplier is 0
//! on the client (`frozen_groups`, default `["head"]`), so its delta is zero and the
//! global head stays at the init. Only the body trains and is averaged.
//! Personalisation is fine-tuning at evaluation: `[eval] personalized = "finetune"` with
//! `finetune_steps` K steps of the full model at the eval plan's rates (set
//! `client.group_lr = { body = 0.0 }` to fine-tune only the head). There is no persistent
//! client state beyond the optimiser's under `state_mode = "keep"`. Freezing is a zero
//! rate: a stateful optimiser still sees the frozen group's gradients in its moments.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::fedper::PartialShare;
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, check_labels, labels, PersonalHooks};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::{EvalIns, Extensions, LocalState, Result, TrainIns};
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};

/// Groups frozen during rounds unless `strategy.frozen_groups` says otherwise.
pub const DEFAULT_FROZEN_GROUPS: &[&str] = &["head"];

/// FedBABU's recipe: partial sharing's training (frozen groups at rate 0), no personal
/// model (personalisation is fine-tuning from the global model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedBabu;

impl Payload for FedBabu {
    const NAME: &'static str = "fedbabu";
}

impl Recipe for FedBabu {
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
        PartialShare.train(cx, ins, state, reply)
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        _ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        Ok(None)
    }
}

/// `fedbabu`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedBabuConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// Labels of the groups frozen during rounds (default `["head"]`).
    pub frozen_groups: Vec<String>,
}

impl Default for FedBabuConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            frozen_groups: labels(DEFAULT_FROZEN_GROUPS),
        }
    }
}

impl FedBabuConfig {
    fn hooks(&self) -> PersonalHooks {
        PersonalHooks::new(
            Extensions::new().with(FedBabu),
            Vec::new(),
            self.frozen_groups.clone(),
            false,
            self.train_all,
        )
    }
}

impl Algorithm for FedBabuConfig {
    const NAME: &'static str = "fedbabu";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        check_labels("strategy.frozen_groups", &self.frozen_groups)
    }
    fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        self.hooks().resolve(spec).map(|_| ())
    }
    fn register(a: &mut Algorithms) {
        a.payload::<FedBabu>();
        a.parts().add_recipe(FedBabu);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        build(Self::NAME, cx, self.hooks())
    }
}
