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

use crate::grid::check_train;
use crate::host::from_wire;
use bytes::Bytes;
use fedpace_core::asynchronous::{Arrival, ArrivalSource, Outcome};
use fedpace_core::{
    codec, ClientFailure, ClientId, ClientPool, Error, Grid, Progress, Registry, Result, TrainIns,
};
use fedpace_net::{Batch, FailureKind, Kind, Server};
use fedpace_params::ParamSpec;
use std::collections::VecDeque;
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
        }
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
                Ok(b) => self
                    .batch
                    .send(
                        key,
                        Kind::Train,
                        vec![(client, Bytes::from(b))],
                        self.deadline,
                    )
                    .err()
                    .map(|e| format!("sending: {e}")),
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
        // The wire ledger of this dispatch is not kept on the real clock (see the docs).
        let _ = self.server.take_traffic(a.round);
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
