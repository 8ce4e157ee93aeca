//! Federated algorithms, one module each, assembled from parts: the round's stages
//! ([`pipeline`]), the local training loop ([`local`]), the client dispatch
//! ([`client::StandardClient`]), rate policies ([`policy`], [`policies`]) and
//! aggregation ([`aggregate`]). An algorithm module owns its `[strategy]` section, its
//! server hooks, its client half, its payloads and its state; [`registry`] lists them,
//! one line each. See docs/arch/0009-algorithms-as-modules-and-stages.md.
//!
//! Layers (each depends only on those above it): `local` → `parts` → `pipeline`,
//! `personal` → the algorithm modules → `config`, `registry` → `client`.

pub mod aggregate;
pub mod apfl;
pub mod client;
pub mod config;
pub mod ditto;
pub mod fedasync;
pub mod fedavg;
pub mod fedbabu;
pub mod fedbuff;
pub mod feddyn;
pub mod fednova;
pub mod fedopt;
pub mod fedper;
pub mod fedprox;
pub mod fedrep;
pub mod flat;
pub mod lgfedavg;
pub mod local;
pub mod parts;
pub mod perfedavg;
pub mod personal;
pub mod pfedme;
pub mod pipeline;
pub mod policies;
pub mod policy;
pub mod registry;
pub mod sampling;
pub mod scaffold;

pub use aggregate::Normalize;
pub use client::StandardClient;
pub use config::{AlgorithmConfig, Built, RoundConfig, StrategyConfig};
pub use fedasync::FedAsync;
pub use fedbuff::FedBuff;
pub use fedopt::ServerOptimizerConfig;
pub use pipeline::{AggregationPath, Pipeline, ServerHooks, Settings};
pub use policy::{ByDataSize, Constant, PolicyConfig};
pub use registry::{builtin, Algorithms};
pub use sampling::Sampling;
