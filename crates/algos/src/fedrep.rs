//! FedRep (Collins et al., ICML 2021), docs/algorithms.md §E.6; docs/personalization.md.
//!
//! Model = body (shared representation) + head (personal, `personal_groups`, default
//! `["head"]`). Each round: `head_epochs` (τ_h) epochs on the head with the body frozen,
//! then `body_epochs` (τ_b) epochs on the body with the head frozen; only the body is
//! sent and averaged. Freezing is a zero group multiplier, so the head and body rates
//! are the plan's per-group rates (`client.group_lr`, or a policy) in each phase.
//!
//! Optimiser state: the body phase (the shared half) follows the plan's state mode
//! (`keep`, `server-init`, `reset`); the head phase runs the same optimiser with its own
//! state ([`FedRepHead`]), kept under `keep` and fresh otherwise.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::fedper::DEFAULT_PERSONAL_GROUPS;
use crate::local::{
    end_state, local_train_controlled, plan_zeroing, start_state, state_bytes, GradientCorrection,
};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, check_labels, labels, masks, merge_personal, PersonalHooks};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    Error, EvalIns, Extensions, LocalState, LocalWork, Result, TrainIns, TrainReport,
};
use fedpace_optim::{State, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};

/// FedRep's recipe: head epochs, then body epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedRep {
    /// Epochs on the personal groups (the head), τ_h.
    pub head_epochs: u32,
    /// Epochs on the shared groups (the body), τ_b.
    pub body_epochs: u32,
}

impl Payload for FedRep {
    const NAME: &'static str = "fedrep";
}

/// The head phase's optimiser state, kept under `state_mode = "keep"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FedRepHead(pub State);

impl Payload for FedRepHead {
    const NAME: &'static str = "fedrep-head-optimizer";
    fn heap_bytes(&self) -> usize {
        state_bytes(&self.0)
    }
}

/// FedRep's client half (reads its [`FedRep`] payload).
struct FedRepClient;

impl Recipe for FedRepClient {
    fn payload(&self) -> &'static str {
        FedRep::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let k = *ins.ext.get::<FedRep>().expect("switched on by its payload");
        let p = masks(&ins.ext);
        let data = cx.data.train.clone();
        let groups = ins.params.spec().num_groups();
        let mut x = merge_personal(&ins.params, &p, state);
        let start = (ins.plan.prox_mu > 0.0).then(|| x.as_slice().to_vec());
        let correction = GradientCorrection {
            proximal: start.as_deref().map(|s| (ins.plan.prox_mu, s)),
            ..Default::default()
        };
        let mut head = plan_zeroing(&ins.plan, groups, |g| !p.is_personal(g));
        head.work = LocalWork::Epochs(k.head_epochs);
        let mut body = plan_zeroing(&ins.plan, groups, |g| p.is_personal(g));
        body.work = LocalWork::Epochs(k.body_epochs);
        let (sh, sb) = (head.steps_for(data.len()), body.steps_for(data.len()));
        let offset = state.steps_done;
        let mut rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let keep = ins.plan.state_mode == StateMode::Keep;
        let mut head_state = if keep {
            state.ext.remove::<FedRepHead>().map(|s| s.0)
        } else {
            None
        };
        let mut controller = cx.controller(&head);
        let a = local_train_controlled(
            cx.model,
            data.as_ref(),
            &mut x,
            &head,
            sh,
            offset,
            &mut rng,
            &mut head_state,
            correction,
            controller.as_deref_mut(),
        )?;
        if keep {
            if let Some(s) = head_state {
                state.ext.insert(FedRepHead(s));
            }
        }
        let mut body_state = start_state(&body, &ins.ext, state);
        let mut controller = cx.controller(&body);
        let b = local_train_controlled(
            cx.model,
            data.as_ref(),
            &mut x,
            &body,
            sb,
            offset + sh as u64,
            &mut rng,
            &mut body_state,
            correction,
            controller.as_deref_mut(),
        )?;
        end_state(&body, body_state, state, reply);
        let total = (sh + sb).max(1) as f64;
        let report = TrainReport {
            steps: sh + sb,
            rate_sum: a
                .rate_sum
                .iter()
                .zip(&b.rate_sum)
                .map(|(x, y)| x + y)
                .collect(),
            loss_before: if sh > 0 { a.loss_before } else { b.loss_before },
            loss_after: if sb > 0 { b.loss_after } else { a.loss_after },
            train_loss: ((a.train_loss as f64 * sh as f64 + b.train_loss as f64 * sb as f64)
                / total) as f32,
            update_norm: 0.0,
            grad_norm: if sh > 0 { a.grad_norm } else { b.grad_norm },
            ext: Extensions::new(),
        };
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

/// `fedrep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedRepConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// Labels of the groups that stay on the client (default `["head"]`).
    pub personal_groups: Vec<String>,
    /// Epochs on the head per round, τ_h (default 10).
    pub head_epochs: u32,
    /// Epochs on the body per round, τ_b (default 1).
    pub body_epochs: u32,
}

impl Default for FedRepConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            personal_groups: labels(DEFAULT_PERSONAL_GROUPS),
            head_epochs: 10,
            body_epochs: 1,
        }
    }
}

impl FedRepConfig {
    fn hooks(&self) -> PersonalHooks {
        PersonalHooks::new(
            Extensions::new().with(FedRep {
                head_epochs: self.head_epochs,
                body_epochs: self.body_epochs,
            }),
            self.personal_groups.clone(),
            Vec::new(),
            true,
            self.train_all,
        )
    }
}

impl Algorithm for FedRepConfig {
    const NAME: &'static str = "fedrep";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        check_labels("strategy.personal_groups", &self.personal_groups)?;
        if self.head_epochs + self.body_epochs == 0 {
            return Err(Error::invalid(
                "strategy.head_epochs",
                0,
                "head_epochs + body_epochs >= 1",
            ));
        }
        Ok(())
    }
    fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        self.hooks().resolve(spec).map(|_| ())
    }
    fn register(a: &mut Algorithms) {
        a.payload::<FedRep>().payload::<FedRepHead>();
        a.parts().add_recipe(FedRepClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        build(Self::NAME, cx, self.hooks())
    }
}
