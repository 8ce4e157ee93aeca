//! Federated algorithms, one file each, assembled from parts: a client recipe
//! ([`client::StandardClient`]), a strategy ([`fedavg::FedAvg`]), rate policies
//! ([`policy`]) and aggregation ([`aggregate`]).

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
pub mod fedopt;
pub mod fedper;
pub mod fedprox;
pub mod fedrep;
pub mod flat;
pub mod lgfedavg;
pub mod perfedavg;
pub mod personal;
pub mod pfedme;
pub mod policies;
pub mod policy;
pub mod sampling;
pub mod scaffold;

pub use client::StandardClient;
pub use config::{StrategyConfig, StrategyName};
pub use fedasync::FedAsync;
pub use fedavg::{FedAvg, FedAvgConfig, Normalize};
pub use fedbuff::FedBuff;
pub use feddyn::FedDyn;
pub use fedprox::FedProx;
pub use personal::{Personalized, PersonalizedConfig};
pub use policy::{ByDataSize, Constant, PolicyConfig};
pub use sampling::Sampling;
pub use scaffold::Scaffold;
