//! The core of fedpace: protocol types, the traits every part implements, and the one
//! round loop [`run`].
//!
//! No threads, no async runtime, no network here. A [`Grid`] (in-memory simulation or
//! network) runs clients; a [`Strategy`] decides who trains with which [`RatePlan`] and
//! how replies are combined; [`run`] drives rounds and reports every round to an
//! [`Observer`]. See `docs/arch/0001-architecture.md` for the shape and why.

pub mod asynchronous;
pub mod central;
pub mod checkpoint;
pub mod codec;
pub mod data;
pub mod error;
pub mod ext;
pub mod model;
pub mod pool;
pub mod protocol;
pub mod rng;
pub mod round;
pub mod summary;
pub mod testing;
pub mod traits;

pub use central::CentralEval;
pub use checkpoint::{Checkpoint, Start};
pub use data::{Batch, ClientData, Dataset, FederatedDataset, Inputs};
pub use error::{ClientFailure, Error, Result};
pub use ext::{Extensions, Payload, Registry};
pub use model::{EvalStats, Model, ModelFactory};
pub use pool::{ClientPool, Disclosed, PoolSubset};
pub use protocol::*;
pub use round::{run, run_from, Observer, RoundRecord, RunOptions, RunOutcome};
pub use summary::{
    AggregateSummary, ClientAggregate, EvalSummary, PrivacySummary, RoundTiming, RoundTraffic,
    SecureSummary,
};
pub use traits::{
    Client, ClientFactory, Grid, Progress, RatePolicy, RoundSummary, Session, Strategy,
};
