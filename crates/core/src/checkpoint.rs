//! What the round loops hand an [`Observer`](crate::Observer) to checkpoint, and how a
//! run starts again from it (docs/checkpoints.md).
//!
//! A loop offers a checkpoint at a round boundary (every N rounds, at the last round, at
//! a stop request: [`Observer::checkpoint_due`](crate::Observer::checkpoint_due)). It
//! hands over the global model, the server's state as one opaque value
//! ([`Checkpoint::server`]: the loop's own counters, the strategy's stages, the policy,
//! and for the asynchronous loop its in-flight dispatches and the arrival source's
//! clock) and the grid, whose clients' states the observer streams out
//! ([`Grid::visit_states`]). Giving the same value back through [`Start::Resume`]
//! continues the run bit-exactly: the loops keep nothing else across rounds.
//!
//! The decision (one directory per checkpoint, what the files hold) is
//! docs/arch/0013-checkpoints.md.

use crate::codec::{from_cbor, to_cbor};
use crate::protocol::ClientId;
use crate::summary::EvalSummary;
use crate::traits::Grid;
use crate::{Error, Result};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// Where a run starts: from an initial model, or from a checkpoint.
#[derive(Debug, Clone)]
pub enum Start {
    /// Round 1, from this model.
    Fresh(ParamTree),
    /// After the checkpoint's round, from its model and [`Checkpoint::server`] bytes.
    Resume {
        /// The global model saved with the checkpoint.
        global: ParamTree,
        /// [`Checkpoint::server`] as it was saved.
        server: Vec<u8>,
    },
}

impl From<ParamTree> for Start {
    fn from(init: ParamTree) -> Self {
        Start::Fresh(init)
    }
}

/// A round boundary offered to [`Observer::checkpoint`](crate::Observer::checkpoint).
pub struct Checkpoint<'a> {
    /// Rounds (asynchronously: server versions) completed.
    pub round: u32,
    /// The global model after that round.
    pub global: &'a ParamTree,
    /// Everything the server side keeps (loop, strategy stages, policy, in-flight work),
    /// encoded; hand it back as [`Start::Resume`].
    pub server: Vec<u8>,
    /// The grid: its clients' states go into the checkpoint through
    /// [`Grid::visit_states`].
    pub grid: &'a mut dyn Grid,
}

/// An evaluation kept across a checkpoint (the run's last one, for its summary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedEval {
    pub round: u32,
    pub summary: EvalSummary,
    /// `EvalSummary::per_client` is left out of its serde form (metrics lines).
    pub per_client: Vec<(ClientId, f64)>,
}

impl SavedEval {
    pub fn new(round: u32, e: &EvalSummary) -> Self {
        Self {
            round,
            summary: e.clone(),
            per_client: e.per_client.clone(),
        }
    }
    pub fn into_eval(self) -> (u32, EvalSummary) {
        let mut e = self.summary;
        e.per_client = self.per_client;
        (self.round, e)
    }
}

/// The synchronous loop's own state at a round boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SyncLoop {
    pub completed: u32,
    pub idle_rounds: u32,
    pub final_eval: Option<SavedEval>,
    pub wall_seconds: f64,
}

/// The asynchronous loop's own state at a server-version boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AsyncLoop {
    pub version: u64,
    pub dispatches: u64,
    pub last_version_time: f64,
    pub last_staleness: Vec<(ClientId, u64)>,
    /// (client, base version, plan) of every dispatch whose update has not arrived.
    pub in_flight: Vec<(ClientId, u64, crate::RatePlan)>,
    /// The models in-flight clients started from, by version (codec `ParamTree` frames).
    pub bases: Vec<(u64, Bytes)>,
    pub final_eval: Option<SavedEval>,
    pub wall_seconds: f64,
    pub source: Bytes,
    pub strategy: Bytes,
    pub policy: Bytes,
}

/// Bytes that serde writes as one byte string (CBOR: not an array of small integers), for
/// encoded parts inside a saved state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let b: crate::ext::f32s::serde_bytes_buf::ByteBuf = Deserialize::deserialize(d)?;
        Ok(Bytes(b.0))
    }
}

/// Which loop saved a server state.
#[derive(Serialize, Deserialize)]
pub(crate) enum ServerState {
    Sync {
        #[serde(rename = "loop")]
        state: SyncLoop,
        strategy: Bytes,
    },
    Async(Box<AsyncLoop>),
}

impl ServerState {
    pub fn encode(&self) -> Result<Vec<u8>> {
        to_cbor(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self> {
        from_cbor(b, "checkpoint server state")
    }
    pub fn kind(&self) -> &'static str {
        match self {
            ServerState::Sync { .. } => "the synchronous round loop",
            ServerState::Async(_) => "the asynchronous loop",
        }
    }
}

/// The error for a server state saved by the other loop.
pub(crate) fn wrong_loop(saved: &ServerState, want: &str) -> Error {
    Error::invalid(
        "checkpoint",
        format!("a state of {}", saved.kind()),
        format!("a state of {want} (the strategy changed between synchronous and asynchronous)"),
    )
}
