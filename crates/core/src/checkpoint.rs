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
//! An observer that keeps checkpoints on disk writes them as one file
//! ([`FileWriter`], read back by [`read_file`]): the model, the server state and every
//! client state in the codec's frames, closed by a checksum. The decision (one file, its
//! layout, what is compared on resume) is docs/arch/0013-checkpoints.md.

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
#[allow(clippy::large_enum_variant)] // one value per checkpoint, never in a collection
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

/// The file name of a run's checkpoint inside its run directory.
pub const FILE_NAME: &str = "checkpoint.fdpc";

/// The codec frame kind byte of a checkpoint file (after the codec's magic and version).
const FILE_KIND: u8 = 0x43;

/// What a checkpoint file says about itself: who wrote it, from which config, after
/// which round, and the recorder's position (docs/checkpoints.md, "The file").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The version of fedpace that wrote it (`CARGO_PKG_VERSION` of `fedpace-core`).
    pub fedpace_version: String,
    /// The resolved experiment config the run was started with (TOML).
    pub config: String,
    /// [`checksum`] of `config`, hex.
    pub config_hash: String,
    /// Rounds (asynchronously: server versions) completed.
    pub round: u32,
    /// The recorder's own state (lines written, per-client sums), opaque to the core.
    pub recorder: Bytes,
}

impl FileMeta {
    /// A header for `config` after `round` rounds, by this build.
    pub fn new(config: &str, round: u32, recorder: Vec<u8>) -> Self {
        Self {
            fedpace_version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.to_string(),
            config_hash: format!("{:016x}", checksum(config.as_bytes())),
            round,
            recorder: Bytes(recorder),
        }
    }
}

/// FNV-1a (64-bit) of `bytes`: the checksum closing a checkpoint file and the config
/// hash in its header. Detects truncation and corruption, not tampering.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.update(bytes);
    h.0
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Writes a checkpoint file as a stream (client states one at a time, so a spilled pool
/// is never held in memory). The layout (all numbers little-endian):
///
/// ```text
/// "FDPC" u16 version  u8 0x43  u8 0          the codec's frame header
/// u64 n, n bytes                             FileMeta (CBOR)
/// u64 n, n bytes                             the global model (codec ParamTree frame)
/// u64 n, n bytes                             Checkpoint::server
/// { u8 1, u64 client id, u64 n, n bytes }*   client states (codec LocalState frames)
/// u8 0, u64 count of client states
/// u64 checksum of every byte before it
/// ```
pub struct FileWriter<W: std::io::Write> {
    out: W,
    hash: Fnv,
    states: u64,
}

impl<W: std::io::Write> FileWriter<W> {
    /// Writes the header, the model and the server state.
    pub fn begin(out: W, meta: &FileMeta, global: &ParamTree, server: &[u8]) -> Result<Self> {
        let mut w = Self {
            out,
            hash: Fnv::default(),
            states: 0,
        };
        let mut head = crate::codec::MAGIC.to_vec();
        head.extend_from_slice(&crate::codec::FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&[FILE_KIND, 0]);
        w.put(&head)?;
        w.put_bytes(&to_cbor(meta)?)?;
        w.put_bytes(&crate::codec::encode_params(global))?;
        w.put_bytes(server)?;
        Ok(w)
    }

    /// Appends one client's state.
    pub fn state(&mut self, id: ClientId, state: &crate::LocalState) -> Result<()> {
        self.put(&[1])?;
        self.put(&id.to_le_bytes())?;
        self.put_bytes(&crate::codec::encode_local_state(state)?)?;
        self.states += 1;
        Ok(())
    }

    /// Closes the stream (count and checksum) and hands the writer back.
    pub fn finish(mut self) -> Result<W> {
        self.put(&[0])?;
        self.put(&self.states.to_le_bytes())?;
        let sum = self.hash.0.to_le_bytes();
        self.out.write_all(&sum).map_err(io)?;
        Ok(self.out)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.out.write_all(b).map_err(io)
    }

    fn put_bytes(&mut self, b: &[u8]) -> Result<()> {
        self.put(&(b.len() as u64).to_le_bytes())?;
        self.put(b)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Observer(format!("writing the checkpoint: {e}"))
}

/// A checkpoint file read back.
#[derive(Debug)]
pub struct Loaded {
    /// Its header.
    pub meta: FileMeta,
    /// The global model after [`FileMeta::round`] rounds.
    pub global: ParamTree,
    /// [`Checkpoint::server`] as saved (hand it to [`Start::Resume`]).
    pub server: Vec<u8>,
    /// Every client state, in the order saved (client-id order).
    pub states: Vec<(ClientId, crate::LocalState)>,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Decode(format!("checkpoint: {msg}"))
}

/// Checks a checkpoint file's frame header and checksum, and returns its body (from the
/// header on, without the checksum).
fn verified(bytes: &[u8]) -> Result<&[u8]> {
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes is shorter than a header (8): the file is truncated",
            bytes.len()
        )));
    }
    if bytes[..4] != crate::codec::MAGIC || bytes[6] != FILE_KIND || bytes[7] != 0 {
        return Err(bad(format!(
            "not a fedpace checkpoint (starts with {:02x?}, expected \"FDPC\" and kind {FILE_KIND:#x})",
            &bytes[..8]
        )));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != crate::codec::FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}; this build reads version {}",
            crate::codec::FORMAT_VERSION
        )));
    }
    let Some(split) = bytes.len().checked_sub(8).filter(|&s| s >= 8) else {
        return Err(bad("the file ends after its header: it is truncated"));
    };
    let (body, sum) = bytes.split_at(split);
    let sum = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    if checksum(body) != sum {
        return Err(bad(format!(
            "the checksum does not match ({} bytes): the file is truncated or corrupt",
            bytes.len()
        )));
    }
    Ok(body)
}

/// Reads the header of a checkpoint file (after checking the whole file's checksum).
pub fn read_meta(bytes: &[u8]) -> Result<FileMeta> {
    let mut r = Cursor {
        buf: verified(bytes)?,
        pos: 8,
    };
    from_cbor(r.bytes("the header")?, "checkpoint header")
}

/// Reads a whole checkpoint file; client states decode through `registry`.
pub fn read_file(bytes: &[u8], registry: &crate::Registry) -> Result<Loaded> {
    let mut r = Cursor {
        buf: verified(bytes)?,
        pos: 8,
    };
    let meta: FileMeta = from_cbor(r.bytes("the header")?, "checkpoint header")?;
    let global = crate::codec::decode_params(r.bytes("the model")?)?;
    let server = r.bytes("the server state")?.to_vec();
    let mut states = Vec::new();
    loop {
        match r.take(1, "a client state tag")?[0] {
            0 => break,
            1 => {}
            t => return Err(bad(format!("client state tag {t} (expected 0 or 1)"))),
        }
        let id = u64::from_le_bytes(r.take(8, "a client id")?.try_into().expect("8"));
        let state = crate::codec::decode_local_state(r.bytes("a client state")?, registry)
            .map_err(|e| bad(format!("client {id}: {e}")))?;
        states.push((id, state));
    }
    let count = u64::from_le_bytes(r.take(8, "the state count")?.try_into().expect("8"));
    if count != states.len() as u64 {
        return Err(bad(format!(
            "{} client states, the file says {count}",
            states.len()
        )));
    }
    if r.pos != r.buf.len() {
        return Err(bad(format!(
            "{} bytes after the client states",
            r.buf.len() - r.pos
        )));
    }
    Ok(Loaded {
        meta,
        global,
        server,
        states,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(bad(format!(
                "{what}: needs {n} bytes, {left} left at offset {}",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = u64::from_le_bytes(self.take(8, what)?.try_into().expect("8"));
        let n = usize::try_from(n).map_err(|_| bad(format!("{what}: length {n}")))?;
        self.take(n, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalState;
    use fedpace_params::ParamSpec;
    use std::sync::Arc;

    fn sample() -> Vec<u8> {
        let spec = Arc::new(ParamSpec::builder().add("w", &[3], "body").build().unwrap());
        let global = ParamTree::from_vec(spec, vec![1.0, -2.5, 3.25]).unwrap();
        let meta = FileMeta::new("rounds = 4\n", 2, vec![7, 8]);
        let mut w = FileWriter::begin(Vec::new(), &meta, &global, b"server").unwrap();
        for id in [3u64, 9] {
            let s = LocalState {
                rounds_trained: id as u32,
                steps_done: 10 * id,
                ..Default::default()
            };
            w.state(id, &s).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_checkpoint_file_reads_back_what_was_written() {
        let bytes = sample();
        let got = read_file(&bytes, &crate::Registry::default()).unwrap();
        assert_eq!(got.meta, FileMeta::new("rounds = 4\n", 2, vec![7, 8]));
        assert_eq!(got.global.as_slice(), &[1.0, -2.5, 3.25]);
        assert_eq!(got.server, b"server");
        let ids: Vec<_> = got
            .states
            .iter()
            .map(|(id, s)| (*id, s.rounds_trained, s.steps_done))
            .collect();
        assert_eq!(ids, vec![(3, 3, 30), (9, 9, 90)]);
        assert_eq!(read_meta(&bytes).unwrap().round, 2);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_of_a_checkpoint_is_an_error() {
        let bytes = sample();
        let reg = crate::Registry::default();
        for n in 0..bytes.len() {
            let e = read_file(&bytes[..n], &reg).unwrap_err().to_string();
            assert!(e.starts_with("checkpoint: "), "{e}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            let e = read_file(&b, &reg).unwrap_err().to_string();
            assert!(e.starts_with("checkpoint: "), "byte {i}: {e}");
        }
    }

    #[test]
    fn a_checkpoint_of_another_format_version_is_refused_naming_both() {
        let mut bytes = sample();
        bytes[4] = 9;
        let e = read_meta(&bytes).unwrap_err().to_string();
        assert!(
            e.contains("format version 9; this build reads version 1"),
            "{e}"
        );
    }
}
