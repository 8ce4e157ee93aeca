//! Federated algorithms, one file each, assembled from parts: a client recipe
//! ([`client::StandardClient`]), a strategy ([`fedavg::FedAvg`]), rate policies
//! ([`policy`]) and aggregation ([`aggregate`]).

pub mod aggregate;
pub mod client;
pub mod config;
pub mod fedavg;
pub mod fedopt;
pub mod policies;
pub mod policy;
pub mod sampling;

pub use client::StandardClient;
pub use config::{StrategyConfig, StrategyName};
pub use fedavg::{FedAvg, FedAvgConfig, Normalize};
pub use policy::{ByDataSize, Constant, PolicyConfig};
pub use sampling::Sampling;
