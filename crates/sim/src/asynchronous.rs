//! The simulated clock as a source of arrivals for the asynchronous loop
//! (`fedpace_core::asynchronous::run_arrivals`, docs/algorithms.md §C.8, C.9).
//!
//! A dispatched client trains at once on the grid; its update arrives at
//! `dispatch time + τ/speed + transfer time` (its device profile, [`crate::clock`]), and
//! arrivals come out in simulated-time order, ties by client id. The source's state is
//! its clock and the queue of computed updates not yet delivered — what a checkpoint
//! saves of it ([`SimulatedArrivals::save_state`]).
//!
//! **Devices.** Each dispatch gets the client's drawn local epochs, its device's step
//! limit (`max_steps`) and the straggler protocol per dispatch: with probability
//! `stragglers` a dispatch is a straggler, which keeps a partial budget of `U{1..E−1}`
//! epochs (`late = partial`) or whose update is discarded on arrival (`late = drop`).
//! A round `deadline` has no meaning without rounds and is rejected by the config.
//!
//! Determinism: the device draws come from `(seed, dispatch number)`, training from
//! `(seed, dispatch number, client)`, and events are totally ordered.

use crate::clock::{completion_seconds, model_bytes, EventQueue};
use crate::devices::{Devices, LatePolicy};
use fedpace_core::asynchronous::{run_arrivals, Arrival, ArrivalSource, AsyncStrategy, Outcome};
use fedpace_core::checkpoint::Bytes;
use fedpace_core::codec::{decode_train_res, encode_train_res, from_cbor, to_cbor};
use fedpace_core::round::{Observer, RunOutcome};
use fedpace_core::{
    ClientFailure, ClientId, ClientInfo, Grid, LocalWork, Progress, RatePlan, RatePolicy, Registry,
    Result, Start, TrainIns,
};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

pub use fedpace_core::asynchronous::AsyncOptions;

/// Arrivals on the simulated clock (see the module doc).
pub struct SimulatedArrivals<'a> {
    devices: &'a Devices,
    /// Bytes of one model transfer.
    bytes: f64,
    /// The time of the last arrival taken out (when new work is sent).
    now: f64,
    queue: EventQueue<Outcome>,
    registry: Registry,
}

/// One queued arrival as saved: a computed update is a codec `TrainRes` frame.
#[derive(Serialize, Deserialize)]
enum SavedOutcome {
    Update(Bytes),
    Failed(ClientFailure),
    NoReply,
    Lost(String),
}

/// What [`SimulatedArrivals::save_state`] encodes.
#[derive(Serialize, Deserialize)]
struct SavedClock {
    now: f64,
    /// (time, client, outcome), in arrival order.
    queue: Vec<(f64, ClientId, SavedOutcome)>,
}

impl<'a> SimulatedArrivals<'a> {
    /// The clock for `devices` and a model of `params` values; `registry` decodes the
    /// payloads of saved updates on a restore.
    pub fn new(devices: &'a Devices, params: usize, registry: Registry) -> Self {
        Self {
            devices,
            bytes: model_bytes(params),
            now: 0.0,
            queue: EventQueue::default(),
            registry,
        }
    }
}

impl ArrivalSource for SimulatedArrivals<'_> {
    fn available(&self, client: ClientId, key: u32) -> bool {
        self.devices.available(client, key)
    }

    fn adapt_plan(&self, info: &ClientInfo, key: u32, plan: &mut RatePlan) {
        let d = self.devices;
        if let Some(e) = d.local_epochs(info.id, key) {
            plan.work = LocalWork::Epochs(e);
        }
        // A partial straggler's budget and the device's step limit cap the plan's
        // steps, as in the synchronous wrapper (a dropped straggler trains in full and
        // its update is discarded on arrival).
        let budget = (d.async_straggler(info.id, key) && d.config().late == LatePolicy::Partial)
            .then(|| d.straggler_budget(info.id, key, plan, info.num_train))
            .flatten();
        for m in [budget, d.profile(info.id).max_steps].into_iter().flatten() {
            plan.max_steps = Some(plan.max_steps.map_or(m, |x| x.min(m)));
        }
    }

    fn send(
        &mut self,
        grid: &mut dyn Grid,
        work: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let pool = grid.pool();
        let sent: Vec<(ClientId, RatePlan, u32)> = work
            .iter()
            .map(|(c, i)| (*c, i.plan.clone(), i.round))
            .collect();
        let mut replies = grid.train(work, progress);
        for (id, plan, key) in sent {
            let planned = plan.steps_for(pool.info(id).map_or(0, |c| c.num_train) as usize);
            let reply = replies
                .iter()
                .position(|r| r.client == id)
                .map(|i| replies.swap_remove(i).result);
            let outcome = if self.devices.drops_out(id, key) {
                Outcome::Lost("dropped out".into())
            } else if self.devices.async_straggler(id, key)
                && self.devices.config().late == LatePolicy::Drop
            {
                Outcome::Lost("straggler, dropped (late = drop)".into())
            } else {
                match reply {
                    Some(Ok(res)) => Outcome::Update(res),
                    Some(Err(f)) => Outcome::Failed(f),
                    None => Outcome::NoReply,
                }
            };
            // The steps the device ran: the report's, or the plan's when none came back.
            let steps = match &outcome {
                Outcome::Update(res) => res.report.steps,
                _ => planned,
            };
            let t = self.now + completion_seconds(&self.devices.profile(id), steps, self.bytes);
            self.queue.push(t, id, outcome);
        }
        Ok(())
    }

    fn next(&mut self) -> Option<Arrival> {
        let ev = self.queue.pop()?;
        self.now = ev.time;
        Some(Arrival {
            client: ev.client,
            time: ev.time,
            outcome: ev.payload,
        })
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let mut queue = self
            .queue
            .iter()
            .map(|e| {
                let o = match &e.payload {
                    Outcome::Update(res) => SavedOutcome::Update(Bytes(encode_train_res(res)?)),
                    Outcome::Failed(f) => SavedOutcome::Failed(f.clone()),
                    Outcome::NoReply => SavedOutcome::NoReply,
                    Outcome::Lost(m) => SavedOutcome::Lost(m.clone()),
                };
                Ok((e.time, e.client, o))
            })
            .collect::<Result<Vec<_>>>()?;
        queue.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        to_cbor(&SavedClock {
            now: self.now,
            queue,
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: SavedClock = from_cbor(bytes, "simulated clock")?;
        let mut queue = EventQueue::default();
        for (t, id, o) in s.queue {
            let o = match o {
                SavedOutcome::Update(b) => Outcome::Update(decode_train_res(&b.0, &self.registry)?),
                SavedOutcome::Failed(f) => Outcome::Failed(f),
                SavedOutcome::NoReply => Outcome::NoReply,
                SavedOutcome::Lost(m) => Outcome::Lost(m),
            };
            queue.push(t, id, o);
        }
        self.now = s.now;
        self.queue = queue;
        Ok(())
    }
}

/// Runs an asynchronous algorithm on the simulated clock of `devices`, from `init`.
#[allow(clippy::too_many_arguments)]
pub fn run_async(
    strategy: &mut dyn AsyncStrategy,
    policy: &mut dyn RatePolicy,
    base_plan: &RatePlan,
    grid: &mut dyn Grid,
    devices: &Devices,
    init: ParamTree,
    opts: &AsyncOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    run_async_from(
        strategy,
        policy,
        base_plan,
        grid,
        devices,
        Start::Fresh(init),
        &Registry::new(),
        opts,
        observer,
    )
}

/// [`run_async`] from `start` (a checkpoint's state included); `registry` decodes the
/// payloads of the updates a checkpoint holds in flight.
#[allow(clippy::too_many_arguments)]
pub fn run_async_from(
    strategy: &mut dyn AsyncStrategy,
    policy: &mut dyn RatePolicy,
    base_plan: &RatePlan,
    grid: &mut dyn Grid,
    devices: &Devices,
    start: Start,
    registry: &Registry,
    opts: &AsyncOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let params = match &start {
        Start::Fresh(t) | Start::Resume { global: t, .. } => t.as_slice().len(),
    };
    let mut source = SimulatedArrivals::new(devices, params, registry.clone());
    run_arrivals(
        strategy,
        policy,
        base_plan,
        &mut source,
        grid,
        start,
        opts,
        observer,
    )
}
