//! Trials and the [`TrialRunner`] trait: the one seam between the search and whatever
//! trains a model (docs/tuning.md, "The runner").
//!
//! A trial is a point of the space, a seed and a number of rounds. The runner applies the
//! point as `--set`-style overrides on its own base configuration, trains, and returns
//! named metrics, the client-epochs it spent, and the per-round curve. It never learns
//! which method asked, so every method gets the same runner and the same accounting.

use crate::space::Point;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One training run to make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// Values of the searched keys.
    pub point: Point,
    /// Run seed (data partition, initialisation, sampling).
    pub seed: u64,
}

/// Where a metric's numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MetricSource {
    /// Held-out validation data, as its name says.
    Validation,
    /// Not yet on validation data: `actual` says what it is computed on instead. Every
    /// table that selects on it says so.
    StandIn {
        /// What the numbers really are, e.g. "personalised mean accuracy on the clients' test splits".
        actual: String,
    },
    /// Reported test data (never for selection).
    Test,
}

/// What the runner says about a metric name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricInfo {
    /// Whether larger is better.
    pub maximize: bool,
    /// Where it comes from.
    pub source: MetricSource,
}

/// Named metrics at the end of a round (or of a run).
pub type Metrics = BTreeMap<String, f64>;

/// Metrics of an evaluated round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundMetrics {
    /// Round (1-based, counted from the start of the trial's line, across continuations).
    pub round: u32,
    /// Client-epochs spent up to the end of this round, in this call.
    pub cost: f64,
    /// The metrics.
    pub metrics: Metrics,
}

/// One unit (a client) behind a per-unit statistic such as worst-10 %.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitScore {
    /// Unit id (stable across runs of one data partition).
    pub id: u64,
    /// Its score (e.g. personalised accuracy).
    pub value: f64,
    /// Samples the score rests on (e.g. test samples).
    pub samples: u64,
}

/// What a finished trial hands back.
#[derive(Debug, Clone)]
pub struct TrialOutput<S> {
    /// Final metrics by name.
    pub metrics: Metrics,
    /// Client-epochs spent by this call (what the budget is charged).
    pub cost: f64,
    /// Metrics of the evaluated rounds, in order (for early stopping and plots).
    pub curve: Vec<RoundMetrics>,
    /// Per-client scores at the end (for worst-10 % rules and bootstrap intervals).
    pub units: Vec<UnitScore>,
    /// Resumable state, when the runner can continue trials ([`TrialRunner::can_continue`]).
    pub state: Option<S>,
}

/// What running a trial gives.
pub type TrialResult<S> = Result<TrialOutput<S>, TrialError>;

/// Why a trial did not finish.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialError {
    /// This trial failed (diverged, a client error): recorded as failed, ranked last, the
    /// search goes on.
    Failed(String),
    /// Nothing can run (bad config key, missing data): the search stops with this error.
    Fatal(String),
}

impl std::fmt::Display for TrialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrialError::Failed(m) | TrialError::Fatal(m) => f.write_str(m),
        }
    }
}

/// Runs trials. Implemented by the `fedpace` binary on its experiment runner; by fakes in
/// tests. Must be deterministic: the same trial and rounds give the same output, whatever
/// else runs at the same time.
pub trait TrialRunner: Sync {
    /// A trial's resumable state (model, server, policy and client states). `()` when
    /// the runner cannot continue trials.
    type State: Clone + Send + Sync;

    /// The rounds of a full-length trial (the base configuration's).
    fn max_rounds(&self) -> u32;

    /// What a metric name means, or an error listing the names it knows.
    fn metric(&self, name: &str) -> Result<MetricInfo, String>;

    /// Checks that the trial's configuration is valid, without training.
    fn check(&self, trial: &Trial) -> Result<(), String>;

    /// Nominal client-epochs one round of this trial costs (planning and admission
    /// against the budget; the charge is [`TrialOutput::cost`]).
    fn round_cost(&self, trial: &Trial) -> Result<f64, String>;

    /// Trains `trial` from scratch for `rounds` rounds, writing its files (if any) under
    /// `dir`, a new directory.
    fn run(
        &self,
        trial: &Trial,
        rounds: u32,
        dir: &Path,
    ) -> Result<TrialOutput<Self::State>, TrialError>;

    /// Whether [`TrialRunner::resume`] works (population-based training needs it;
    /// successive halving uses it to avoid re-running promoted trials).
    fn can_continue(&self) -> bool {
        false
    }

    /// Continues from `state` (after `done` rounds) with `trial`'s point, which may differ
    /// from the one that produced the state, until `rounds` rounds in all. The output's
    /// cost and curve cover the new rounds only.
    fn resume(
        &self,
        trial: &Trial,
        state: &Self::State,
        done: u32,
        rounds: u32,
        dir: &Path,
    ) -> Result<TrialOutput<Self::State>, TrialError> {
        let _ = (trial, state, done, rounds, dir);
        Err(TrialError::Fatal(
            "this runner cannot continue a trial from its state".into(),
        ))
    }
}
