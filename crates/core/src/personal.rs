//! Typed contract of the personalised algorithms (ALGORITHMS.md Part E, §0.4): which
//! parameter groups are personal, the client-side recipe the server asks for, the
//! personal state a client keeps between rounds, and how personalised evaluation runs.
//!
//! The one decision a reader needs: personal parameters never leave the client. They live
//! in [`LocalState::personal`](crate::LocalState) as a full-length buffer laid out by the
//! model's `ParamSpec` (only the personal groups' values are meaningful for partial
//! sharing), and the server aggregates with a per-group mask so that personal groups
//! never move the global model.

use serde::{Deserialize, Serialize};

/// Per-FedAvg's meta-gradient approximation (ALGORITHMS.md E.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerFedAvgVariant {
    /// First order: `w ← w − β ∇f(w − α∇f(w; D); D')`.
    #[default]
    Fo,
    /// Hessian-free: the Hessian-vector product by a central difference with step δ.
    Hf,
}

/// What a client runs locally for a personalised algorithm (sent in
/// [`InsExtras::Personal`](crate::InsExtras) and in [`EvalIns::extras`](crate::EvalIns)).
/// Rates come from the client's [`RatePlan`](crate::RatePlan) at every step, so per-client
/// and per-group rates apply to every recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "recipe", rename_all = "kebab-case")]
pub enum ClientRecipe {
    /// Per-FedAvg (E.1). The plan's rate is the adaptation rate α.
    PerFedAvg {
        /// FO or HF.
        variant: PerFedAvgVariant,
        /// Meta rate β (scaled by the plan's group multipliers).
        meta_lr: f32,
        /// Finite-difference step δ (HF only).
        hf_delta: f32,
    },
    /// pFedMe (E.2). The plan's rate is the local rate η of `w_local`.
    PFedMe {
        /// Inner steps K on the same mini-batch.
        inner_steps: u32,
        /// Moreau-envelope weight λ.
        lambda: f32,
        /// Personal rate η_p (scaled by the plan's group multipliers).
        personal_lr: f32,
        /// L2 term μ_reg of the inner problem (1e-3 in the reference code).
        mu_reg: f32,
    },
    /// Ditto (E.3): a personal model pulled towards the round's global model.
    Ditto {
        /// Regularisation λ towards the global model.
        lambda: f32,
        /// Personal rate (scaled by group multipliers); `None` = the plan's base rate.
        personal_lr: Option<f32>,
    },
    /// Partial sharing (FedPer E.4, LG-FedAvg E.5): the whole model trains locally, the
    /// personal groups stay on the client.
    PartialShare,
    /// FedRep (E.6): head epochs with the body frozen, then body epochs with the head frozen.
    FedRep {
        /// Epochs on the personal groups (the head), τ_h.
        head_epochs: u32,
        /// Epochs on the shared groups (the body), τ_b.
        body_epochs: u32,
    },
    /// FedBABU (E.8): the frozen groups (the head) never train during federated rounds.
    FedBabu,
    /// APFL (E.7): a local model mixed with the global one by a learned α_i.
    Apfl {
        /// Initial mixing weight α_i (first participation).
        alpha_init: f32,
        /// Rate η_α of the α update; 0 keeps α fixed.
        alpha_lr: f32,
    },
}

/// A personalised instruction: the recipe plus, per parameter group (spec order), whether
/// the group is personal (kept on the client) and whether it is frozen during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalIns {
    /// The client-side recipe.
    pub recipe: ClientRecipe,
    /// `personal[g]`: group g never leaves the client (its delta is zero and the server
    /// excludes it from aggregation).
    pub personal: Vec<bool>,
    /// `frozen[g]`: group g does not train during federated rounds (FedBABU's head).
    pub frozen: Vec<bool>,
}

impl PersonalIns {
    /// Whether group `g` is personal.
    pub fn is_personal(&self, g: usize) -> bool {
        self.personal.get(g).copied().unwrap_or(false)
    }
    /// Whether group `g` is frozen.
    pub fn is_frozen(&self, g: usize) -> bool {
        self.frozen.get(g).copied().unwrap_or(false)
    }
}

/// What a client keeps for its personal model between rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalState {
    /// Personal parameters, full length in spec layout (for partial sharing only the
    /// personal groups are used). Initialised from the global model the client first
    /// receives (for partial sharing that is the global init, since the server never
    /// moves personal groups).
    pub params: Vec<f32>,
    /// APFL's learned mixing weight α_i.
    #[serde(default)]
    pub alpha: Option<f32>,
}

/// How personalised evaluation runs (`[eval] personalized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersonalEval {
    /// Start from the client's personal model (the global model for recipes without one),
    /// run `finetune_steps` local steps, test (the default; FedAvg + fine-tuning).
    #[default]
    Finetune,
    /// Test each client's personal model as the recipe defines it, without extra steps.
    PersonalModel,
}
