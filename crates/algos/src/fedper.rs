//! FedPer (Arivazhagan et al. 2019), ALGORITHMS.md E.4.
//!
//! Base layers shared, top personalisation layers kept on the client. Each round the
//! client trains the **whole** model (its stored head + the global body) for the plan's
//! local work and sends only the base layers; the server averages them (mask-aware
//! FedAvg). Personal groups default to `["head"]`; separate head and base rates come from
//! the plan's group multipliers (`client.group_lr = { head = 10.0 }`) or a policy.

use fedpace_core::ClientRecipe;

/// Groups that stay on the client unless `strategy.personal_groups` says otherwise.
pub const DEFAULT_PERSONAL_GROUPS: &[&str] = &["head"];

/// FedPer's client recipe: train everything, keep the personal groups.
pub fn recipe() -> ClientRecipe {
    ClientRecipe::PartialShare
}
