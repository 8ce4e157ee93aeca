//! FedAvg (docs/algorithms.md §A.1): uniform sampling, local SGD under each client's rate
//! plan, example-weighted averaging, server step `x ← x + η_g·Δ̄` (η_g = 1 is the
//! paper's FedAvg). Per-client plans come from a rate policy; when they make clients'
//! rate sums differ, updates are normalised (§1.1, [`Normalize`]). FedAvg is the
//! stages of [`crate::pipeline`] with no hooks: every other synchronous algorithm adds
//! hooks to the same stages.

pub use crate::aggregate::Normalize;
use crate::config::{Algorithm, BuildCx, Built};
use crate::pipeline::{NoHooks, Pipeline};
use fedpace_core::Result;
use serde::{Deserialize, Serialize};

/// `fedavg`: no keys beyond the shared ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgConfig {}

impl Algorithm for FedAvgConfig {
    const NAME: &'static str = "fedavg";
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(Self::NAME, cx.settings, cx.policy, Box::new(NoHooks))
                .with_server(cx.server),
        )))
    }
}
