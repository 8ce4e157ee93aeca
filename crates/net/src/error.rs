//! The crate's one error type (docs/network.md).

use std::path::PathBuf;

/// Everything that can go wrong in fedpace-net.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file was read but its content is wrong.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Which field, what value, what was expected.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("{field} = {value}: {expected}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// TLS setup failed (certificate, key or handshake configuration).
    #[error("tls: {0}")]
    Tls(String),
    /// The listening socket could not be opened.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server could not be reached or answered with an error. Shown in one line: the
    /// call, the server's message and the status code (not tonic's debug form of the
    /// status with its metadata).
    #[error("{rpc}: {} (gRPC status {:?})", if status.message().is_empty() { "no message" } else { status.message() }, status.code())]
    Rpc {
        /// The call (`Register`, `Pull`, …).
        rpc: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// A message from the peer broke the protocol (field named).
    #[error("invalid {message}.{field}: {reason}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Value and expectation.
        reason: String,
    },
    /// A round ended without the quorum of successful replies.
    #[error("round {round}: {replied} of {sent} clients replied, quorum is {quorum} ({failed} failed, {missing} missing at the deadline)")]
    QuorumNotMet {
        /// The round.
        round: u64,
        /// Successful replies required.
        quorum: usize,
        /// Instructions sent.
        sent: usize,
        /// Successful replies received.
        replied: usize,
        /// Failures received (client errors, gone nodes).
        failed: usize,
        /// Neither replied nor failed by the deadline.
        missing: usize,
    },
    /// The server answered nothing for longer than the node's `give_up`.
    #[error("server {server}: unreachable for {waited:.1?} (give_up = {give_up:?}; expected it to answer within that); last error: {last}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// How long the node had been without an answer.
        waited: std::time::Duration,
        /// The limit (`NodeConfig::give_up`).
        give_up: std::time::Duration,
        /// The last error seen.
        last: String,
    },
    /// The server or node has been shut down.
    #[error("shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn rpc(rpc: &'static str, status: tonic::Status) -> Self {
        Error::Rpc {
            rpc,
            status: Box::new(status),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The gRPC code, when the error is a status from the peer.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
