//! Privacy, security and robustness building blocks for federated rounds; the
//! specification is docs/privacy.md.
//!
//! Every block is a pure function or a small state value the caller owns, on flat `f32`
//! update vectors, so that the round's stages (per-client transform, aggregation, server
//! step, client side) can call them in simulation and over the network alike:
//!
//! - [`accountant`]: RDP accountant for the sampled Gaussian mechanism, (ε, δ) conversion,
//!   noise multiplier for a target ε.
//! - [`dp`]: clipping (fixed, adaptive), central and distributed Gaussian noise, and the
//!   order of rate normalisation and clipping.
//! - [`secagg`]: SecAgg+ secure aggregation (SecAgg is its complete-graph case).
//! - [`robust`]: median, trimmed mean, Krum / Multi-Krum, Bulyan, norm bounding.
//! - [`compress`]: QSGD stochastic quantisation and top-k with error feedback.
//! - [`rng`]: the ChaCha20 generator all of them draw from.

pub mod accountant;
pub mod compress;
pub mod dp;
mod error;
pub mod rng;
pub mod robust;
pub mod secagg;

pub use error::{Error, Result};
pub use rng::{Randomness, SecureRng};
