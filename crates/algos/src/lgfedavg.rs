//! LG-FedAvg (Liang et al. 2020), docs/algorithms.md §E.5; docs/personalization.md.
//!
//! The mirror image of FedPer: the **local representation** (lower layers, group `body`)
//! stays on the client and the **global head** (top layer, group `head`) is averaged, so
//! only head parameters travel. Orientation follows the paper (local bottom, global top),
//! not FL-bench's `num_global_layers`. Personal groups default to `["body"]`; the
//! representation rate and the shared head rate are the plan's group multipliers. The
//! client recipe is FedPer's ([`crate::fedper::PartialShare`]).

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::fedper::FedPerConfig;
use crate::personal::{build, labels};
use fedpace_core::Result;
use fedpace_params::ParamSpec;
use serde::{Deserialize, Serialize};

/// Groups that stay on the client unless `strategy.personal_groups` says otherwise.
pub const DEFAULT_PERSONAL_GROUPS: &[&str] = &["body"];

/// `lg-fedavg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LgFedAvgConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// Labels of the groups that stay on the client (default `["body"]`).
    pub personal_groups: Vec<String>,
}

impl Default for LgFedAvgConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            personal_groups: labels(DEFAULT_PERSONAL_GROUPS),
        }
    }
}

impl LgFedAvgConfig {
    fn as_fedper(&self) -> FedPerConfig {
        FedPerConfig {
            train_all: self.train_all,
            personal_groups: self.personal_groups.clone(),
        }
    }
}

impl Algorithm for LgFedAvgConfig {
    const NAME: &'static str = "lg-fedavg";
    fn validate(&self, round: &RoundConfig) -> Result<()> {
        self.as_fedper().validate(round)
    }
    fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        self.as_fedper().check_model(spec)
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        build(Self::NAME, cx, self.as_fedper().hooks())
    }
}
