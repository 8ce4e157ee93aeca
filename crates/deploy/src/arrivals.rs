//! Asynchronous strategies on the real clock (docs/network.md, "Asynchronous strategies
//! on the real clock").
//!
//! [`NetArrivals`] is an [`ArrivalSource`] for `fedpace_core::asynchronous::run_arrivals`
//! whose arrivals are the replies of the network in the order they reach the server: a
//! dispatch is sent at once as one instruction and the loop folds whichever reply comes
//! next. The simulated clock (`fedpace_sim::SimulatedArrivals` over a [`crate::NetGrid`])
//! stays the mode for parity with the simulation; this one differs from it only in the
//! order of arrivals (and so in which version each update is folded into, and with
//! which staleness).
//!
//! Every instruction settles exactly once in the source's [`Batch`] (a reply, a client
//! failure, `gone`, `not connected`, or `deadline` at its deadline), so every dispatch
//! arrives exactly once. Replies are checked as [`crate::NetGrid`] checks them.

use crate::accounting::{AddParts, ClientTraffic};
use crate::grid::check_train;
use crate::host::from_wire;
use bytes::Bytes;
use fedpace_core::asynchronous::{Arrival, ArrivalSource, Outcome};
use fedpace_core::{
    codec, ClientFailure, ClientId, ClientPool, Error, Grid, Progress, Registry, Result, TrainIns,
};
use fedpace_net::{Batch, FailureKind, Kind, Server};
use fedpace_params::ParamSpec;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arrivals in the order replies reach the server (see the module doc).
pub struct NetArrivals {
    server: Arc<Server>,
    pool: Arc<dyn ClientPool>,
    registry: Registry,
    deadline: Duration,
    batch: Batch,
    start: Instant,
    /// Seconds of the run before `start` (restored from a checkpoint).
    offset: f64,
    spec: Option<ParamSpec>,
    /// Dispatches that failed before reaching the network (encoding), delivered first.
    ready: VecDeque<Arrival>,
    /// The highest dispatch number sent.
    last_sent: u64,
    sent: u64,
    arrived: u64,
    /// Traffic rows of dispatches in flight (by instruction id) and of settled ones.
    rows: HashMap<u64, ClientTraffic>,
    traffic: Vec<ClientTraffic>,
}

impl NetArrivals {
    /// A source sending through `server` to the clients of `pool`, each dispatch due
    /// within `deadline`.
    pub fn new(
        server: Arc<Server>,
        pool: Arc<dyn ClientPool>,
        registry: Registry,
        deadline: Duration,
    ) -> NetArrivals {
        let batch = server.batch();
        NetArrivals {
            server,
            pool,
            registry,
            deadline,
            batch,
            start: Instant::now(),
            offset: 0.0,
            spec: None,
            ready: VecDeque::new(),
            last_sent: 0,
            sent: 0,
            arrived: 0,
            rows: HashMap::new(),
            traffic: Vec::new(),
        }
    }

    /// Takes the communication figures of the dispatches settled since the last call:
    /// one training row per dispatch (its dispatch number as the round), as
    /// [`crate::NetGrid::take_traffic`] gives them for the synchronous loop.
    pub fn take_traffic(&mut self) -> Vec<ClientTraffic> {
        let mut t = std::mem::take(&mut self.traffic);
        t.sort_by_key(|r| (r.round, r.client, r.kind));
        t
    }

    /// Dispatches sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Arrivals handed to the loop so far (each dispatch arrives once).
    pub fn arrived(&self) -> u64 {
        self.arrived
    }

    fn arrival(&mut self, client: ClientId, outcome: Outcome) -> Arrival {
        self.arrived += 1;
        Arrival {
            client,
            time: self.offset + self.start.elapsed().as_secs_f64(),
            outcome,
        }
    }
}

impl ArrivalSource for NetArrivals {
    fn available(&self, client: ClientId, _key: u32) -> bool {
        self.server.is_connected(client)
    }

    fn send(
        &mut self,
        _grid: &mut dyn Grid,
        work: Vec<(ClientId, TrainIns)>,
        _progress: &dyn Progress,
    ) -> Result<()> {
        // Each client keeps its newest state only: nothing is ever replayed on the real
        // clock (a resumed run dispatches afresh instead of sending again).
        self.server.set_durable_round(self.last_sent);
        for (client, ins) in work {
            self.sent += 1;
            if self.spec.is_none() {
                self.spec = Some(ins.params.spec().as_ref().clone());
            }
            let key = u64::from(ins.round);
            self.last_sent = self.last_sent.max(key);
            let failed = match codec::encode_train_ins(&ins) {
                Ok(b) => {
                    let len = b.len();
                    let items = vec![(client, Bytes::from(b))];
                    match self.batch.send(key, Kind::Train, items, self.deadline) {
                        Ok(ids) => {
                            for id in ids {
                                let mut row =
                                    ClientTraffic::sent(ins.round, client, Kind::Train, len);
                                row.add_instruction(&ins);
                                self.rows.insert(id, row);
                            }
                            None
                        }
                        Err(e) => Some(format!("sending: {e}")),
                    }
                }
                Err(e) => Some(format!("encoding the instruction: {e}")),
            };
            if let Some(why) = failed {
                let a = self.arrival(client, Outcome::Failed(ClientFailure::Error(why)));
                self.ready.push_back(a);
            }
        }
        Ok(())
    }

    fn next(&mut self) -> Option<Arrival> {
        if let Some(a) = self.ready.pop_front() {
            return Some(a);
        }
        // Every instruction settles by its deadline (the server's tick); the margin only
        // guards against a server that stopped.
        let a = self
            .batch
            .recv_timeout(self.deadline + Duration::from_secs(30))?;
        let mut row = self.rows.remove(&a.instruction);
        if let Some(row) = row.as_mut() {
            if let Ok(b) = &a.result {
                row.received = b.len() as u64;
            }
            // Training figures only: an evaluation round of the same number is the
            // grid's to take.
            for w in self.server.take_traffic_of(a.round, Kind::Train) {
                if w.client == a.client {
                    row.wire_sent += w.sent_bytes;
                    row.wire_received += w.received_bytes;
                }
            }
        }
        let outcome = match a.result {
            Ok(bytes) => match &self.spec {
                Some(spec) => {
                    match check_train(self.pool.as_ref(), &self.registry, a.client, &bytes, spec) {
                        Ok(res) => Outcome::Update(res),
                        Err(f) => Outcome::Failed(f),
                    }
                }
                None => Outcome::NoReply,
            },
            Err(f) if f.kind == FailureKind::Deadline => Outcome::NoReply,
            Err(f) => Outcome::Failed(from_wire(&f)),
        };
        if let Some(mut row) = row {
            if let Outcome::Update(res) = &outcome {
                row.add_reply(res);
            }
            self.traffic.push(row);
        }
        Some(self.arrival(a.client, outcome))
    }

    /// The clock (seconds so far), the counters and the clients whose dispatches are in
    /// flight: their replies cannot be saved, and a restored source hands them back as
    /// lost (docs/network.md, "Checkpoints on the real clock").
    fn save_state(&self) -> Result<Vec<u8>> {
        let mut clients: Vec<ClientId> = self.rows.values().map(|r| r.client).collect();
        clients.extend(self.ready.iter().map(|a| a.client));
        clients.sort_unstable();
        let mut b = MAGIC.to_vec();
        for v in [self.sent, self.arrived, self.last_sent] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let time = self.offset + self.start.elapsed().as_secs_f64();
        b.extend_from_slice(&time.to_le_bytes());
        b.extend_from_slice(&(clients.len() as u64).to_le_bytes());
        for c in clients {
            b.extend_from_slice(&c.to_le_bytes());
        }
        Ok(b)
    }

    /// Restores [`NetArrivals::save_state`]'s bytes: every dispatch in flight at the
    /// checkpoint arrives first, as lost (its reply went with the server that sent it);
    /// the loop counts it as failed and dispatches a replacement.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |why: &str| {
            Error::invalid(
                "checkpoint arrival source",
                why.to_string(),
                "the state of a real-clock run (the checkpoint was written with --clock \
                 simulated? resume with the clock it was written with)",
            )
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("no real-clock header"))?;
        let mut words = rest.chunks_exact(8);
        let mut next = || -> Result<[u8; 8]> {
            Ok(words
                .next()
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .expect("chunks of 8"))
        };
        let (sent, arrived, last_sent) = (
            u64::from_le_bytes(next()?),
            u64::from_le_bytes(next()?),
            u64::from_le_bytes(next()?),
        );
        let time = f64::from_le_bytes(next()?);
        let n = u64::from_le_bytes(next()?);
        if !time.is_finite() || time < 0.0 || n > rest.len() as u64 / 8 {
            return Err(bad("corrupt"));
        }
        let mut lost = Vec::new();
        for _ in 0..n {
            lost.push(u64::from_le_bytes(next()?));
        }
        if words.next().is_some() || !words.remainder().is_empty() {
            return Err(bad("trailing bytes"));
        }
        self.sent = sent;
        self.arrived = arrived;
        self.last_sent = last_sent;
        self.offset = time;
        self.start = Instant::now();
        for client in lost {
            let why = "lost: in flight when the server stopped (its reply went with it)";
            let a = self.arrival(client, Outcome::Lost(why.into()));
            self.ready.push_back(a);
        }
        Ok(())
    }
}

/// Whether a checkpoint's server state (`Loaded::server`) holds a [`NetArrivals`] state,
/// i.e. was written on the real clock: its header, a 21-byte text that the CBOR of the
/// loop's state carries verbatim inside the source's byte string.
pub fn written_on_real_clock(server_state: &[u8]) -> bool {
    server_state.windows(MAGIC.len()).any(|w| w == MAGIC)
}

/// Header of [`NetArrivals`]' saved state.
const MAGIC: &[u8] = b"fedpace-real-clock-1\n";
