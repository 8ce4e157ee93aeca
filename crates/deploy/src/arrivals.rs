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

use crate::accounting::ClientTraffic;
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
            time: self.start.elapsed().as_secs_f64(),
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
        // clock (it cannot be checkpointed).
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
                                let row = ClientTraffic::sent(ins.round, client, Kind::Train, len);
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
        if let Some(mut row) = self.rows.remove(&a.instruction) {
            if let Ok(b) = &a.result {
                row.received = b.len() as u64;
            }
            for w in self.server.take_traffic(a.round) {
                if (w.client, w.kind) == (a.client, Kind::Train) {
                    row.wire_sent += w.sent_bytes;
                    row.wire_received += w.received_bytes;
                }
            }
            self.traffic.push(row);
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
        Some(self.arrival(a.client, outcome))
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        Err(Error::invalid(
            "checkpoint",
            "an asynchronous run on the real clock",
            "the simulated clock (replies in flight on the network cannot be saved)",
        ))
    }
}
