//! FedNova (docs/algorithms.md §B.3): FedAvg that always normalises each client's update by
//! its sum of rates Λ_k (`normalize` may not be `off`); see docs/drift-and-systems.md.

use crate::aggregate::Normalize;
use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::pipeline::{NoHooks, Pipeline};
use fedpace_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// `fednova`: no keys beyond the shared ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedNovaConfig {}

impl Algorithm for FedNovaConfig {
    const NAME: &'static str = "fednova";
    fn validate(&self, round: &RoundConfig) -> Result<()> {
        if round.normalize == Normalize::Off {
            return Err(Error::invalid(
                "strategy.normalize",
                "off",
                "auto or on (fednova always normalises)",
            ));
        }
        Ok(())
    }
    fn build(&self, mut cx: BuildCx) -> Result<Built> {
        cx.settings.normalize = Normalize::On;
        Ok(Built::Sync(Box::new(
            Pipeline::new(Self::NAME, cx.settings, cx.policy, Box::new(NoHooks))
                .with_server(cx.server),
        )))
    }
}
