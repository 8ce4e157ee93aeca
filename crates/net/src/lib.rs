//! fedpace-net: the transport of a real federation (docs/network.md,
//! docs/arch/0010-network-transport.md).
//!
//! A server holds the round loop; *nodes* (one process, one connection each) host one or
//! more logical clients and pull instructions for them over gRPC with TLS, in the manner
//! of Flower's Fleet API. Payloads are opaque bytes at this layer. Every request is
//! signed with the node's Ed25519 key ([`keys`]); everything received is size-limited
//! and checked before use ([`wire`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Test support: signing raw requests (replay and tamper tests). Not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::auth::sign_headers;
    pub use crate::node::endpoint;
}

mod auth;
pub mod config;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod node;
pub mod server;
pub mod tls;
pub mod wire;

/// Generated from `proto/fedpace/v1/fleet.proto` (package `fedpace.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("fedpace.v1");
}

pub use config::{LateReplies, Limits, NodeConfig, ServerConfig};
pub use error::{Error, Result};
pub use keys::{Credential, KeyEntry, KeyRing, KeySource};
pub use node::{Node, ServeStats};
pub use server::{Arrival, Batch, NodeStatus, Server, ServerStats, Traffic};
pub use tls::{generate_local_ca, ClientTls, LocalCa, ServerTls};
pub use wire::{ClientId, Failure, FailureKind, Instruction, Kind, Outcome};
