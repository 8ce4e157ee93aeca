//! fedpace over the network (docs/network.md, "Deployment").
//!
//! [`NetGrid`] is a [`fedpace_core::Grid`] whose clients sit behind a
//! [`fedpace_net::Server`]: it encodes each instruction with [`fedpace_core::codec`],
//! sends it, and decodes and checks every reply before the strategy sees it. On the other
//! side, [`ClientHost`] is the handler a [`fedpace_net::Node`] runs: it decodes the
//! instruction, runs the same client code as the simulation (a [`fedpace_core::Client`]
//! from a factory) against the client's [`fedpace_core::LocalState`], which it keeps
//! between rounds, and encodes the reply. The round loops (`fedpace_core::run`,
//! `fedpace_sim::run_async`) are unchanged: the grid is the only thing that differs, so
//! the same config and seed give the same model over loopback as in simulation.
//!
//! [`accounting`] holds the communication figures: measured on the wire by the
//! [`NetGrid`], computed by [`accounting::CountingGrid`] around a simulation grid.
//!
//! This crate sits above `fedpace-core` and `fedpace-net`, which know nothing of each
//! other; the algorithms come in as a [`fedpace_core::ClientFactory`] and a
//! [`fedpace_core::Registry`], so it does not depend on them either.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounting;
pub mod arrivals;
pub mod grid;
pub mod host;
pub mod loopback;
pub mod meta;

pub use accounting::{ClientTraffic, CountingGrid};
pub use arrivals::NetArrivals;
pub use grid::{NetGrid, NetGridConfig};
pub use host::{ClientHost, StateDir};
pub use loopback::{Loopback, LoopbackOptions};
