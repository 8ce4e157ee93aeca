//! fedpace-net: the transport of a real federation (docs/network.md,
//! docs/arch/0010-network-transport.md).
//!
//! A server holds the round loop; *nodes* (one process, one connection each) host one or
//! more logical clients and pull instructions for them over gRPC with TLS, in the manner
//! of Flower's Fleet API. Payloads are opaque bytes at this layer. Requests are signed
//! with the node's Ed25519 key ([`keys`]) — over TLS the first of each connection, the
//! later ones carrying the token it earned (docs/arch/0048-auth-once-per-connection.md);
//! everything received is size-limited and checked before use ([`wire`], [`envelope`]).
//!
//! ```
//! use std::time::Duration;
//! use fedpace_net::{keys, generate_local_ca, Credential, KeySource, Kind, Node, NodeConfig, Server, ServerConfig};
//!
//! # fn main() -> Result<(), fedpace_net::Error> {
//! let dir = std::env::temp_dir().join(format!("fedpace-net-doc-{}", std::process::id()));
//! let ca = generate_local_ca(&dir, &["localhost".into()])?;
//! let ring = dir.join("keys.toml");
//! keys::generate(&ring, "node-a", vec![0..2], &dir.join("node-a.key"))?;
//!
//! let listen = "127.0.0.1:0".parse().unwrap();
//! let server = Server::start(ServerConfig::new(listen, Some(ca.server_tls()?), KeySource::File(ring)))?;
//! let addr = format!("127.0.0.1:{}", server.local_addr().port());
//! let config = NodeConfig::new(addr, Some(ca.client_tls("localhost")?), Credential::load(&dir.join("node-a.key"))?, vec![0..2]);
//! let node = Node::connect(config)?;
//!
//! // The round loop sends; the node pulls, answers, pushes.
//! let mut batch = server.batch();
//! batch.send(1, Kind::Train, vec![(0, "model".into()), (1, "model".into())], Duration::from_secs(5))?;
//! let outcomes: Vec<_> = node.pull()?.iter()
//!     .map(|ins| fedpace_net::Outcome::for_instruction(ins, Ok(ins.payload.clone())))
//!     .collect();
//! node.push(&outcomes)?;
//! let replies = batch.collect(2)?;
//! assert_eq!(replies[1].result.as_deref().ok(), Some(&b"model"[..]));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Test support: signing raw requests (replay and tamper tests). Not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::auth::{sign_headers, sign_headers_with, BodyDigest};
    pub use crate::node::endpoint;
}

mod auth;
pub mod config;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod node;
mod read_ahead;
pub mod server;
pub mod tls;
pub mod wire;

/// Generated from `proto/fedpace/v1/fleet.proto` (package `fedpace.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("fedpace.v1");
}

/// Locks a mutex, taking the data even if a thread panicked while holding it (every
/// critical section leaves the state consistent).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use config::{LateReplies, Limits, NodeConfig, ServerConfig};
pub use error::{Error, Result};
pub use keys::{Credential, KeyEntry, KeyRing, KeySource};
pub use node::{Node, ServeStats};
pub use server::{Arrival, Batch, NodeStatus, Server, ServerStats, Traffic};
pub use tls::{generate_local_ca, ClientTls, LocalCa, ServerTls};
pub use wire::{ClientId, Failure, FailureKind, Instruction, Kind, Outcome};
