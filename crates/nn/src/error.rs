//! The crate's error type. Every error converts into [`fedpace_core::Error`] so the
//! [`fedpace_core::Model`] methods can return it directly.

/// Errors raised by models and the factory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model cannot be built for this input (e.g. a CNN on tokens).
    #[error("model {model}: cannot take input {input}: {reason}")]
    UnsupportedInput {
        /// Model name (as in the config, e.g. `cnn`).
        model: String,
        /// The input shape, rendered.
        input: String,
        /// Why not.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("model {model}: {field} = {value}: {expected}")]
    InvalidConfig {
        /// Model name.
        model: String,
        /// Field name.
        field: String,
        /// Offending value, rendered.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A batch does not match what the model was built for.
    #[error("model {model}: batch {what}: expected {expected}, got {got}")]
    BadBatch {
        /// Model name.
        model: String,
        /// Which part of the batch.
        what: String,
        /// What the model expects.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// Parameter layout problem.
    #[error(transparent)]
    Params(#[from] fedpace_params::Error),
    /// The tensor backend failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn bad_batch(
        model: &str,
        what: &str,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::BadBatch {
            model: model.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}

impl From<Error> for fedpace_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Params(p) => fedpace_core::Error::Params(p),
            Error::InvalidConfig {
                model,
                field,
                value,
                expected,
            } => fedpace_core::Error::Invalid {
                field: format!("model.{field} ({model})"),
                value,
                expected,
            },
            other => fedpace_core::Error::Backend(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
