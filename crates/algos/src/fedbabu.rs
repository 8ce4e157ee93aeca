//! FedBABU (Oh, Kim, Yun, ICLR 2022), ALGORITHMS.md E.8.
//!
//! The head is initialised once from the shared seed (the global init, identical for
//! all clients) and **never trained** during federated rounds: its group multiplier is 0
//! on the client (`frozen_groups`, default `["head"]`), so its delta is zero and the
//! global head stays at the init. Only the body trains and is averaged.
//! Personalisation is fine-tuning at evaluation: `[eval] personalized = "finetune"` with
//! `finetune_steps` K steps of the full model at the eval plan's rates (set
//! `client.group_lr = { body = 0.0 }` to fine-tune only the head). There is no persistent
//! client state.

use fedpace_core::ClientRecipe;

/// Groups frozen during rounds unless `strategy.frozen_groups` says otherwise.
pub const DEFAULT_FROZEN_GROUPS: &[&str] = &["head"];

/// FedBABU's client recipe.
pub fn recipe() -> ClientRecipe {
    ClientRecipe::FedBabu
}
