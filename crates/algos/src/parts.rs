//! The client halves of algorithms, as values the client dispatch looks up by the
//! payloads of an instruction: [`LocalHook`]s (SCAFFOLD, FedDyn: terms added to the
//! local objective and a state update afterwards) and [`Recipe`]s (the personalised
//! algorithms: a local procedure of their own). [`ClientParts`] holds them; each
//! algorithm module adds its own in its `register` function, so the client
//! (`crate::client::StandardClient`) never names an algorithm.

use crate::local::{check_len, StepController};
use fedpace_core::{
    ClientData, ClientId, EvalIns, ExchangeIns, Extensions, LocalState, Model, RatePlan, Result,
    Session, TrainIns, TrainReport,
};
use fedpace_params::ParamTree;
use std::sync::Arc;

/// Terms the hooks of an instruction add to every local gradient (see
/// [`crate::local::GradientCorrection`]): owned, summed over hooks.
#[derive(Debug, Clone, Default)]
pub struct Terms {
    /// A constant vector added to every gradient (SCAFFOLD's `c − c_i`, FedDyn's `−g_k`).
    pub linear: Option<Vec<f32>>,
    /// Proximal coefficient μ towards the round's global model (the plan's `prox_mu`
    /// plus FedDyn's α).
    pub prox_mu: f64,
    /// Clip the corrected gradient to this norm.
    pub clip: Option<f64>,
}

impl Terms {
    /// Adds `v` to the linear term.
    pub fn add_linear(&mut self, v: &[f32]) -> Result<()> {
        match &mut self.linear {
            Some(l) => {
                check_len("gradient correction", v, l.len())?;
                for (a, b) in l.iter_mut().zip(v) {
                    *a += b;
                }
            }
            None => self.linear = Some(v.to_vec()),
        }
        Ok(())
    }
}

/// What a hook sees after local training.
pub struct Finish<'a> {
    /// The client.
    pub id: ClientId,
    /// The instruction.
    pub ins: &'a TrainIns,
    /// The client's state (the hook updates its own payload).
    pub state: &'a mut LocalState,
    /// `y − x`, the update.
    pub delta: &'a [f32],
    /// The training report (rate sums per group).
    pub report: &'a TrainReport,
    /// Payloads of the reply.
    pub reply: &'a mut Extensions,
    /// The client's model (SCAFFOLD option I takes a full gradient).
    pub model: &'a mut dyn Model,
    /// The client's data.
    pub data: &'a ClientData,
}

/// A client-side part of a drift-control algorithm, switched on by its payload in the
/// train instruction.
pub trait LocalHook: Send + Sync {
    /// The name of the payload that switches the hook on.
    fn payload(&self) -> &'static str;
    /// Reads the payload and the client's state; adds its terms.
    fn prepare(&self, ins: &TrainIns, state: &LocalState, terms: &mut Terms) -> Result<()>;
    /// Updates the client's state and adds reply payloads.
    fn finish(&self, cx: &mut Finish<'_>) -> Result<()>;
}

/// What a recipe works with: the client, its model and data, and the plan's step
/// controller.
pub struct RecipeCx<'a> {
    /// The client.
    pub id: ClientId,
    /// Its model.
    pub model: &'a mut dyn Model,
    /// Its data.
    pub data: &'a ClientData,
}

impl RecipeCx<'_> {
    /// The step controller `plan` needs (Δ-SGD for `delta-sgd`).
    pub fn controller(&self, plan: &RatePlan) -> Option<Box<dyn StepController>> {
        crate::policies::curvature::step_controller(plan)
    }
}

/// What a personalised recipe's round produced: the trained shared model (personal
/// groups are zeroed in the update by the dispatch) and the report.
pub struct RecipeRound {
    /// The model whose shared groups are sent (as `trained − global`).
    pub trained: ParamTree,
    /// The report.
    pub report: TrainReport,
}

/// A personalised algorithm's client procedure (docs/algorithms.md Part E), switched on by
/// its recipe payload.
pub trait Recipe: Send + Sync {
    /// The name of the recipe payload.
    fn payload(&self) -> &'static str;
    /// One round of local training; keeps the personal model in `state`, may add reply
    /// payloads (the shared half's optimiser state under `server-init`).
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound>;
    /// The personal model as the recipe defines it, or `None` when it has none
    /// (personalisation by fine-tuning from the global model).
    fn personal_model(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>>;
    /// Where `finetune` evaluation starts: the personal model by default; `None` for
    /// the global model (Per-FedAvg, whose fine-tuning repeats its adaptation step).
    fn finetune_start(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        self.personal_model(cx, ins, state)
    }
    /// The plan of `finetune` evaluation's steps: `None` (the default) for the
    /// evaluation plan; FedL2P returns it with its learned per-group rates.
    fn finetune_plan(
        &self,
        _cx: &mut RecipeCx<'_>,
        _ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<RatePlan>> {
        Ok(None)
    }
}

/// A client part that answers a protocol's messages after training
/// ([`fedpace_core::Client::exchange`]; secure aggregation's is
/// `crate::stages::secure::SecureClientPart`), switched on by the message's payloads.
pub trait ExchangeHandler: Send + Sync {
    /// The names of the message payloads it answers.
    fn payloads(&self) -> &'static [&'static str];
    /// Answers one message; `session` holds what the client keeps between the steps of
    /// one round.
    fn exchange(
        &self,
        id: ClientId,
        ins: &ExchangeIns,
        state: &mut LocalState,
        session: &mut Session,
    ) -> Result<Extensions>;
}

/// The client halves a process knows, looked up by payload name.
#[derive(Clone, Default)]
pub struct ClientParts {
    hooks: Vec<Arc<dyn LocalHook>>,
    recipes: Vec<Arc<dyn Recipe>>,
    exchanges: Vec<Arc<dyn ExchangeHandler>>,
    /// Payloads that need no part of their own (read by the local loop or by a recipe).
    passive: Vec<&'static str>,
}

impl std::fmt::Debug for ClientParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientParts")
            .field(
                "hooks",
                &self.hooks.iter().map(|h| h.payload()).collect::<Vec<_>>(),
            )
            .field(
                "recipes",
                &self.recipes.iter().map(|r| r.payload()).collect::<Vec<_>>(),
            )
            .field("passive", &self.passive)
            .field(
                "exchanges",
                &self
                    .exchanges
                    .iter()
                    .map(|h| h.payloads())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ClientParts {
    /// Adds a hook.
    pub fn add_hook(&mut self, h: impl LocalHook + 'static) -> &mut Self {
        self.hooks.push(Arc::new(h));
        self
    }
    /// Adds a recipe.
    pub fn add_recipe(&mut self, r: impl Recipe + 'static) -> &mut Self {
        self.recipes.push(Arc::new(r));
        self
    }
    /// Adds a protocol part.
    pub fn add_exchange(&mut self, h: impl ExchangeHandler + 'static) -> &mut Self {
        self.exchanges.push(Arc::new(h));
        self
    }
    /// The protocol part that answers a message, or an error naming its payloads.
    pub fn exchange_for(&self, msg: &Extensions) -> Result<Arc<dyn ExchangeHandler>> {
        self.exchanges
            .iter()
            .find(|h| h.payloads().iter().any(|p| msg.contains_name(p)))
            .cloned()
            .ok_or_else(|| {
                fedpace_core::Error::invalid(
                    "exchange",
                    format!("message {:?}", msg.names().collect::<Vec<_>>()),
                    "a message some part of this client answers (none does)",
                )
            })
    }
    /// Declares a payload that is read where it is needed (the local loop's optimiser
    /// state and pre-scaling, a recipe's group masks) rather than by a part of its own.
    pub fn add_passive(&mut self, name: &'static str) -> &mut Self {
        if !self.passive.contains(&name) {
            self.passive.push(name);
        }
        self
    }
    /// The hooks an instruction switches on, in registration order.
    pub fn hooks_for(&self, ext: &Extensions) -> Vec<Arc<dyn LocalHook>> {
        self.hooks
            .iter()
            .filter(|h| ext.contains_name(h.payload()))
            .cloned()
            .collect()
    }
    /// The recipe an instruction asks for (at most one), or an error naming two.
    pub fn recipe_for(&self, ext: &Extensions) -> Result<Option<Arc<dyn Recipe>>> {
        let mut found = self
            .recipes
            .iter()
            .filter(|r| ext.contains_name(r.payload()));
        let first = found.next().cloned();
        if let (Some(a), Some(b)) = (&first, found.next()) {
            return Err(fedpace_core::Error::invalid(
                "instruction",
                format!("recipes {} and {}", a.payload(), b.payload()),
                "at most one personalised recipe",
            ));
        }
        Ok(first)
    }
    /// Errors when the instruction carries a payload no part of this client handles
    /// (it would be ignored silently).
    pub fn check_handled(&self, ext: &Extensions) -> Result<()> {
        for name in ext.names() {
            let handled = self.passive.contains(&name)
                || self.hooks.iter().any(|h| h.payload() == name)
                || self.recipes.iter().any(|r| r.payload() == name);
            if !handled {
                return Err(fedpace_core::Error::invalid(
                    "instruction",
                    format!("payload {name:?}"),
                    "payloads this client has a part for (none handles this one)",
                ));
            }
        }
        Ok(())
    }
}
