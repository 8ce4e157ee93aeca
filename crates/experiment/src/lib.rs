//! fedpace as a library (docs/library.md): an experiment built from a config — data,
//! model, parameter groups, strategy, rate policy, simulated devices, the simulation
//! grid — and run to its metrics, per-client table, summary and final model, optionally
//! writing the run directory (docs/outputs.md). The `fedpace` command, `fedpace
//! tune`/`study` and the network server (`fedpace server`, crates/deploy) all start here.
//!
//! The one decision a reader needs: the library never prints, never exits and keeps no
//! global state. Results are return values, progress and stop requests go through a
//! [`Monitor`] the caller passes in, and errors are an [`Error`] whose message is the
//! one line a user sees (`exp.toml: strategy.server_lr = -0.1: must be > 0`).
//!
//! ```no_run
//! use fedpace_experiment::{Experiment, RunOptions};
//! let exp = Experiment::from_toml_str("rounds = 3\n", "inline", &["seed=1".into()])?;
//! let result = exp.run(RunOptions::default())?;
//! println!("{}", result.summary["global"]["accuracy"]);
//! # Ok::<(), fedpace_experiment::Error>(())
//! ```

#![deny(missing_docs)]

pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod files;
pub mod lock;
pub mod output;
pub mod tensorboard;

pub mod registry;

mod build;
pub mod network;
mod run;

pub use build::{data_dir, Prepared, MAX_CLIENT_VALUES, MAX_PARAMS};
pub use config::{limits, ExperimentConfig, Registered, MAX_CONFIG_BYTES};
pub use output::{ClientRow, RecordOptions, Recorded, RunRecorder};
pub use registry::{
    federation_from_arrays, federation_from_pooled, ClientArrays, ModelBuilder, ModelInput,
    PolicyBuilder, PolicyInput, Registry,
};
pub use run::{RunOptions, RunResult};

use fedpace_core::round::RoundRecord;
use std::path::Path;

/// An error of building or running an experiment, formatted as the one line a user
/// sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The experiment file or an override is wrong: syntax, an unknown key, a value out
    /// of range, a combination that cannot do what it says. Names the file (or
    /// `--set KEY=VALUE`), the key, the value and what was expected.
    #[error("{0}")]
    Config(String),
    /// The experiment cannot be built as configured: missing or malformed data, a model
    /// or pool too large for this machine, an output directory that is taken.
    #[error("{0}")]
    Setup(String),
    /// The run failed after it started (a model error, no client trained for many
    /// rounds in a row, …).
    #[error(transparent)]
    Run(#[from] fedpace_core::Error),
    /// Something else failed (writing a file, reading the client pool); the message says
    /// what and where.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Whether the user can fix it in the config or the setup ([`Error::Config`],
    /// [`Error::Setup`]): the `fedpace` command exits with code 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Setup(_))
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a run tells its caller while it goes: progress, each round's record, and
/// whether to stop. Every method has a default that does nothing.
///
/// `client_done` is called from the worker threads that train clients, hence `Sync`.
pub trait Monitor: Sync {
    /// The run starts (after everything was built and checked).
    fn started(&mut self, _run: &RunInfo<'_>) {}
    /// A phase of a round starts with `clients` clients (`phase` is "train" or "eval").
    fn phase_started(&mut self, _round: u32, _phase: &'static str, _clients: usize) {}
    /// One client finished its part of the current phase.
    fn client_done(&self) {}
    /// A round (asynchronously: a server version) finished; `metrics` is its line of
    /// `metrics.jsonl` (docs/outputs.md).
    fn round_finished(&mut self, _record: &RoundRecord, _metrics: &serde_json::Value) {}
    /// `Some(reason)` to stop the run at the next round boundary (a signal, a user's
    /// request): the round in progress is aggregated and recorded, then the run ends
    /// with its results, marked interrupted by `reason`.
    fn stop_requested(&self) -> Option<String> {
        None
    }
}

/// A [`Monitor`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Monitor for Silent {}

/// What [`Monitor::started`] is told.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo<'a> {
    /// The run's label (its name, or the label given in [`RunOptions`]).
    pub label: &'a str,
    /// Rounds (asynchronously: server versions) asked for.
    pub rounds: u32,
    /// One line: data, model, clients, parameters, strategy.
    pub description: &'a str,
    /// Parameter group labels.
    pub groups: &'a [String],
}

/// An experiment: a validated configuration (and the [`Registry`] it was parsed
/// through, if any), ready to be prepared and run.
#[derive(Debug, Clone)]
pub struct Experiment {
    config: ExperimentConfig,
    registry: Option<Registry>,
}

impl Experiment {
    /// Parses TOML text (`origin` names it in errors, e.g. a file name), applies
    /// `key=value` overrides (as `fedpace run --set`), and validates.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        Ok(Self {
            config: ExperimentConfig::parse(text, origin, overrides)?,
            registry: None,
        })
    }

    /// Reads an experiment file (at most [`MAX_CONFIG_BYTES`]), then as
    /// [`Experiment::from_toml_str`].
    pub fn from_path(path: impl AsRef<Path>, overrides: &[String]) -> Result<Self> {
        Ok(Self {
            config: ExperimentConfig::load(path.as_ref(), overrides)?,
            registry: None,
        })
    }

    /// A configuration built in code, validated. One that names registered parts
    /// ([`ExperimentConfig::registered`]) goes through [`Registry::from_config`].
    pub fn from_config(config: ExperimentConfig) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        Registry::new().check(&config)?;
        Ok(Self {
            config,
            registry: None,
        })
    }

    pub(crate) fn with_registry(config: ExperimentConfig, registry: Registry) -> Self {
        Self {
            config,
            registry: Some(registry),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// Builds data, model, strategy, policy and grid, checking everything a config
    /// alone cannot (data present and well formed, model and pool sizes against this
    /// machine, group labels against the model). Nothing is written.
    pub fn prepare(&self) -> Result<Prepared> {
        build::prepare(&self.config, self.registry.as_ref())
    }

    /// [`Experiment::prepare`], then [`Prepared::run`].
    pub fn run(&self, options: RunOptions<'_>) -> Result<RunResult> {
        self.prepare()?.run(options)
    }
}
