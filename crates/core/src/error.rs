//! The core error type and client failures.

use serde::{Deserialize, Serialize};

/// Errors raised by core operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Parameter layout problem.
    #[error(transparent)]
    Params(#[from] fedpace_params::Error),
    /// Optimiser problem.
    #[error(transparent)]
    Optim(#[from] fedpace_optim::Error),
    /// A value is out of its allowed range.
    #[error("{field} = {value}: {expected}")]
    Invalid {
        /// Field name (dotted path where possible).
        field: String,
        /// Offending value, rendered.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A model or data operation failed.
    #[error("{0}")]
    Backend(String),
    /// Every sampled client failed, so the round cannot aggregate.
    #[error("round {round}: all {clients} sampled clients failed (first: {first})")]
    AllClientsFailed {
        /// Round index.
        round: u32,
        /// Number of clients sampled.
        clients: usize,
        /// First failure message.
        first: String,
    },
    /// Bytes that do not decode (see [`crate::codec`]): what was read and why it failed.
    #[error("{0}")]
    Decode(String),
    /// The observer failed to record the run (its files, its checkpoint).
    #[error("recording the run: {0}")]
    Observer(String),
    /// No client trained for `rounds` rounds in a row: the run cannot learn.
    #[error(
        "round {round}: no client trained in {rounds} consecutive round(s) ({cause}); the model \
         would stay untrained"
    )]
    NoTraining {
        /// The round at which the run stopped.
        round: u32,
        /// Consecutive rounds without training.
        rounds: u32,
        /// Why the last of them trained nothing.
        cause: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a client produced no usable update. Failures are values handed to aggregation,
/// never panics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFailure {
    /// The client returned an error.
    Error(String),
    /// The client panicked; the message is kept.
    Panicked(String),
    /// The update contained NaN or infinite values.
    NonFinite,
    /// The report broke the protocol (e.g. a rate sum that is negative or not finite).
    BadReport(String),
    /// The update had the wrong length.
    WrongShape {
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
}

impl ClientFailure {
    /// A short, stable name of the kind of failure, for counting rejected updates by
    /// reason (`metrics.jsonl`'s `rejected.reasons`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFailure::Error(_) => "client error",
            ClientFailure::Panicked(_) => "client panicked",
            ClientFailure::NonFinite => "non-finite update",
            ClientFailure::BadReport(_) => "bad report",
            ClientFailure::WrongShape { .. } => "wrong shape",
        }
    }
}

impl std::fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientFailure::Error(m) => write!(f, "error: {m}"),
            ClientFailure::Panicked(m) => write!(f, "panicked: {m}"),
            ClientFailure::NonFinite => write!(f, "update has NaN/Inf values"),
            ClientFailure::BadReport(m) => write!(f, "bad report: {m}"),
            ClientFailure::WrongShape { expected, got } => {
                write!(f, "update has {got} values, expected {expected}")
            }
        }
    }
}
