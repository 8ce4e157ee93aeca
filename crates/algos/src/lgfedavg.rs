//! LG-FedAvg (Liang et al. 2020), ALGORITHMS.md E.5.
//!
//! The mirror image of FedPer: the **local representation** (lower layers, group `body`)
//! stays on the client and the **global head** (top layer, group `head`) is averaged, so
//! only head parameters travel. Orientation follows the paper (local bottom, global top),
//! not FL-bench's `num_global_layers`. Personal groups default to `["body"]`; the
//! representation rate and the shared head rate are the plan's group multipliers.

use fedpace_core::ClientRecipe;

/// Groups that stay on the client unless `strategy.personal_groups` says otherwise.
pub const DEFAULT_PERSONAL_GROUPS: &[&str] = &["body"];

/// LG-FedAvg's client recipe: train everything, keep the local representation.
pub fn recipe() -> ClientRecipe {
    ClientRecipe::PartialShare
}
