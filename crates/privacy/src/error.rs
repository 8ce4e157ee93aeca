//! The crate's one error type.

/// Everything that can go wrong in `fedpace-privacy`; each message names the field or the
/// protocol stage, the value, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its valid range.
    #[error("{field} = {value}: {expected}")]
    InvalidParameter {
        /// Parameter name as a user would write it (`noise_multiplier`, `beta`, …).
        field: &'static str,
        /// The value received, formatted.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// Vectors that must have one length do not.
    #[error("{what}: length {got}, expected {expected}")]
    LengthMismatch {
        /// Which vector.
        what: String,
        /// Length required.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A value is NaN or infinite where a finite number is required.
    #[error("{what}: value {value} at index {index} is not finite")]
    NonFinite {
        /// Which vector.
        what: String,
        /// First offending index.
        index: usize,
        /// The value found there.
        value: f32,
    },
    /// The operating system's entropy source failed.
    #[error("operating-system entropy unavailable: {0}")]
    Entropy(String),
    /// A secure-aggregation message broke the protocol (wrong stage, unknown sender, bad
    /// share, failed decryption, …). The round must be aborted.
    #[error("secure aggregation, {stage}: {detail}")]
    Protocol {
        /// Protocol stage (`share keys`, `unmask`, …).
        stage: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Too few clients are left to finish secure aggregation; the round is aborted.
    #[error("secure aggregation, {stage}: {available} {what} left, the threshold is {threshold}; round aborted")]
    TooFewSurvivors {
        /// Protocol stage at which the shortfall was found.
        stage: &'static str,
        /// The set that is too small (`survivors`, `live share holders of client 7`, …).
        what: String,
        /// How many are left.
        available: usize,
        /// How many are needed.
        threshold: usize,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds [`Error::InvalidParameter`].
pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> Error {
    Error::InvalidParameter {
        field,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Fails with [`Error::NonFinite`] at the first NaN or infinity in `x`.
pub(crate) fn check_finite(what: &str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            what: what.to_string(),
            index,
            value: x[index],
        }),
    }
}

/// Fails with [`Error::LengthMismatch`] unless `got == expected`.
pub(crate) fn check_len(what: impl Into<String>, expected: usize, got: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what: what.into(),
            expected,
            got,
        })
    }
}
