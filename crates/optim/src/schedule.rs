//! Learning-rate schedules: a multiplier of the base rate as a function of the step.

use serde::{Deserialize, Serialize};

/// A schedule gives the factor by which the base rate is multiplied at step `s`.
///
/// Steps are counted by the caller; a client that continues a schedule across rounds
/// passes its cumulative step count, so all clients agree on where the schedule is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// Always 1.
    #[default]
    Constant,
}

impl Schedule {
    /// The factor at step `step`.
    pub fn factor(&self, _step: u64) -> f32 {
        match self {
            Schedule::Constant => 1.0,
        }
    }
}
