//! fedpace-tune: hyper-parameter search under a budget in client-epochs, and studies of
//! variants × seeds × benchmarks with paired statistics (docs/tuning.md).
//!
//! The crate knows nothing about federated learning: a search space over dotted config
//! keys ([`space`]), trials that a [`TrialRunner`] trains and measures ([`trial`]), search
//! methods as ask/tell machines over batches ([`methods`]), the driver that enforces the
//! budget and runs batches in parallel with results independent of the thread count
//! ([`search`]), the study runner ([`study`]) with its statistics ([`stats`]), and small
//! writers for tables and SVG plots ([`report`], [`svg`]). The `fedpace` binary
//! implements [`TrialRunner`] on its experiment runner.

pub mod files;
pub mod gp;
pub mod methods;
pub mod report;
pub mod search;
pub mod space;
pub mod stats;
pub mod study;
pub mod svg;
pub mod trial;

pub use methods::MethodConfig;
pub use search::{plan_search, run_search, SearchReport, SearchSpec};
pub use space::{Point, Space, Value};
pub use study::{plan_study, run_study, StudyFile, StudyReport};
pub use trial::{MetricInfo, MetricSource, Trial, TrialError, TrialOutput, TrialRunner};

/// Errors of this crate, one line each, naming the file or key, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A search or study file is wrong.
    #[error("{0}")]
    Config(String),
    /// The search does not fit its budget.
    #[error("{0}")]
    Budget(String),
    /// The runner cannot run the search (a fatal trial error, a missing capability).
    #[error("{0}")]
    Runner(String),
    /// An internal computation failed (not a user error).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the user can fix it by editing a file or flag (exit code 2 in the binary).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Budget(_) | Error::Runner(_))
    }
}
