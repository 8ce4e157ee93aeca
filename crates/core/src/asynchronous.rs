//! Asynchronous FL (docs/algorithms.md §C.8, C.9): staleness functions, the server half of an
//! asynchronous algorithm ([`AsyncStrategy`]) and the loop that drives it, [`run_arrivals`],
//! beside the synchronous [`crate::run`] with the same [`Grid`], [`RatePolicy`] and
//! [`Observer`].
//!
//! **Driven by arrivals.** The loop keeps `concurrency` clients busy: it picks idle
//! clients, plans their work and hands it to an [`ArrivalSource`], then takes the
//! source's arrivals one at a time, in the source's order. Each arriving update goes to
//! the [`AsyncStrategy`] with staleness `version at arrival − version it started from`,
//! and a replacement client is dispatched at once. A record is emitted for every new
//! server version; `updates` versions end the run. The simulated clock is one source
//! (`fedpace_sim::SimulatedArrivals`: clients train when dispatched and their updates
//! arrive at `dispatch time + τ/speed + transfer time`); a networked server is another,
//! whose arrivals are replies as they come in.
//!
//! **Choosing clients.** Uniform among the idle clients (not in flight, with training
//! data, accepted by the strategy — FedBuff takes a client once per buffer — and
//! available to the source), drawn from `(seed, dispatch number)`, in one counting pass
//! over the pool and a second pass to find the drawn one, so nothing is kept per client.
//!
//! **Staleness-decayed client rates.** With `rate_decay`, a client dispatched now gets
//! its policy's plan with `base_lr × s(σ_k)`, where σ_k is the staleness of that
//! client's *previous* arrival (0 if it has none) and s the strategy's staleness
//! function, the same s that weights its update on arrival. A client that was stale
//! last time runs on a slow device or link and will most likely be stale again, so
//! it takes proportionally smaller local steps and drifts less from a model that will
//! have moved on by the time it reports. The rule reads only the past, so it needs
//! no prediction, and it is deterministic.
//!
//! **State and checkpoints.** Between versions the loop's state is a value — the server
//! version, the dispatch counter, every in-flight dispatch (its base model, version and
//! plan), each client's last staleness, the source's state (the simulated clock and its
//! queue of computed updates), the strategy's (FedBuff's buffer) and the policy's — that
//! a checkpoint saves and [`Start::Resume`] restores (docs/checkpoints.md). A stop
//! request takes effect at the next server version, where the state is whole.
//!
//! Determinism: dispatch draws come from `(seed, dispatch number)`; the source orders
//! arrivals totally (the simulated clock: by time, ties by client id).

use crate::checkpoint::{wrong_loop, AsyncLoop, Bytes, Checkpoint, SavedEval, ServerState, Start};
use crate::codec::{decode_params, encode_params};
use crate::protocol::{ClientId, ClientInfo, EvalIns, RatePlan, TrainIns, TrainRes};
use crate::rng::{stream, Purpose};
use crate::round::{evaluate_clients, ClientRoundRecord, Observer, RoundRecord, RunOutcome};
use crate::summary::{EvalSummary, RoundTiming};
use crate::traits::{Grid, Progress, RatePolicy};
use crate::{ClientFailure, Error, Result};
use fedpace_params::ParamTree;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// A staleness function s(τ) ∈ (0, 1], τ = server version at arrival − version the
/// client started from (docs/algorithms.md §C.8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Staleness {
    /// s = 1.
    Constant,
    /// s(τ) = (τ + 1)^(−a).
    Polynomial {
        /// a ≥ 0 (default 0.5).
        #[serde(default = "half")]
        a: f64,
    },
    /// s(τ) = 1 if τ ≤ b, else 1 / (a(τ − b) + 1).
    Hinge {
        /// a ≥ 0 (default 10).
        #[serde(default = "ten")]
        a: f64,
        /// b ≥ 0 (default 4).
        #[serde(default = "four")]
        b: f64,
    },
}

fn half() -> f64 {
    0.5
}
fn ten() -> f64 {
    10.0
}
fn four() -> f64 {
    4.0
}

impl Default for Staleness {
    fn default() -> Self {
        Staleness::Polynomial { a: 0.5 }
    }
}

impl Staleness {
    /// s(τ).
    ///
    /// ```
    /// use fedpace_core::asynchronous::Staleness;
    /// let s = Staleness::Hinge { a: 10.0, b: 4.0 };
    /// assert_eq!(s.weight(4), 1.0);
    /// assert!((s.weight(5) - 1.0 / 11.0).abs() < 1e-12);
    /// ```
    pub fn weight(&self, staleness: u64) -> f64 {
        let t = staleness as f64;
        match *self {
            Staleness::Constant => 1.0,
            Staleness::Polynomial { a } => (t + 1.0).powf(-a),
            Staleness::Hinge { a, b } => {
                if t <= b {
                    1.0
                } else {
                    1.0 / (a * (t - b) + 1.0)
                }
            }
        }
    }

    /// Checks ranges; `field` names the config key.
    pub fn validate(&self, field: &str) -> Result<()> {
        let bad =
            |k: &str, v: f64| Err(Error::invalid(format!("{field}.{k}"), v, "finite and >= 0"));
        match *self {
            Staleness::Constant => Ok(()),
            Staleness::Polynomial { a } if !(a.is_finite() && a >= 0.0) => bad("a", a),
            Staleness::Hinge { a, .. } if !(a.is_finite() && a >= 0.0) => bad("a", a),
            Staleness::Hinge { b, .. } if !(b.is_finite() && b >= 0.0) => bad("b", b),
            _ => Ok(()),
        }
    }
}

/// What the server did with one arriving update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalOutcome {
    /// The weight the update got (FedAsync α_t; FedBuff s(τ)/K).
    pub weight: f64,
    /// Whether the global model changed (the server version advances).
    pub new_version: bool,
}

/// The server half of an asynchronous algorithm: it sees one update at a time.
pub trait AsyncStrategy: Send {
    /// Name and key settings, for logs.
    fn describe(&self) -> String;
    /// Applies client `client`'s update, computed from `base` (the model it was sent),
    /// `staleness` server versions ago.
    fn on_arrival(
        &mut self,
        global: &mut ParamTree,
        base: &ParamTree,
        client: ClientId,
        res: &TrainRes,
        staleness: u64,
    ) -> Result<ArrivalOutcome>;
    /// The staleness function (also used to decay client rates).
    fn staleness(&self) -> Staleness;
    /// Whether `client` may be sent work now (FedBuff: at most once per buffer).
    fn may_dispatch(&self, _client: ClientId) -> bool {
        true
    }
    /// The server state across arrivals (FedBuff's buffer), encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores [`AsyncStrategy::save_state`]'s bytes.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        crate::traits::stateless("asynchronous strategy", bytes)
    }
}

/// Settings of the asynchronous loop.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncOptions {
    /// Server versions (model updates) to run.
    pub updates: u32,
    /// Clients training at once.
    pub concurrency: usize,
    /// Decay each client's rate by s(its previous staleness).
    pub rate_decay: bool,
    /// Run seed.
    pub seed: u64,
    /// Evaluate every this many versions (0 = only at the end).
    pub eval_every: u32,
    /// Fine-tuning steps before personalised evaluation.
    pub finetune_steps: u32,
    /// Cap on each client's test samples at evaluation (`None` = all).
    pub max_test_samples: Option<u32>,
    /// Keep every version's record in `RunOutcome::rounds` (see
    /// [`crate::RunOptions::keep_records`]).
    pub keep_records: bool,
    /// Evaluate at most this many clients (see [`crate::round::eval_ids`]).
    pub eval_clients: Option<u32>,
}

/// What became of one dispatch.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The client's update.
    Update(TrainRes),
    /// The client failed, or its update was rejected (NaN, wrong shape, …).
    Failed(ClientFailure),
    /// No reply came back.
    NoReply,
    /// The update was lost to device behaviour (a dropout, a dropped straggler): not a
    /// rejection. The message says which.
    Lost(String),
}

/// An update arriving at the server (or the news that it never will).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Whose.
    pub client: ClientId,
    /// When, in seconds on the source's clock since the run started.
    pub time: f64,
    /// What arrived.
    pub outcome: Outcome,
}

/// Where the asynchronous loop's arrivals come from: the simulated clock
/// (`fedpace_sim::SimulatedArrivals`) or a transport's replies.
pub trait ArrivalSource {
    /// Whether `client` can take work now (`key`: the dispatch number): a device that is
    /// on, a node that is connected.
    fn available(&self, client: ClientId, key: u32) -> bool;
    /// Adapts the plan of dispatch `key` to the client's device (local epochs, step
    /// limits, straggler budgets). Default: unchanged.
    fn adapt_plan(&self, _client: &ClientInfo, _key: u32, _plan: &mut RatePlan) {}
    /// Sends work out (`TrainIns::round` is the dispatch number). The simulated clock
    /// trains it at once on `grid` and schedules each update's arrival.
    fn send(
        &mut self,
        grid: &mut dyn Grid,
        work: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Result<()>;
    /// The next arrival, in the source's order; `None` when nothing is in flight.
    fn next(&mut self) -> Option<Arrival>;
    /// The source's state between arrivals (a clock, updates not yet delivered), encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores [`ArrivalSource::save_state`]'s bytes.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        crate::traits::stateless("arrival source", bytes)
    }
}

/// Failed arrivals in a row (at least; 100 × concurrency when larger) after which the
/// loop stops with an error instead of dispatching forever.
const MAX_FAILURES_IN_ROW: u64 = 1000;

/// One dispatch whose update has not arrived.
struct InFlight {
    base: Arc<ParamTree>,
    base_version: u64,
    plan: RatePlan,
}

/// The asynchronous loop between arrivals (see the module doc): everything a
/// checkpoint saves of it.
struct Loop<'a> {
    strategy: &'a mut dyn AsyncStrategy,
    policy: &'a mut dyn RatePolicy,
    base_plan: &'a RatePlan,
    opts: &'a AsyncOptions,
    groups: usize,
    version: u64,
    dispatches: u64,
    last_version_time: f64,
    last_staleness: BTreeMap<ClientId, u64>,
    in_flight: BTreeMap<ClientId, InFlight>,
    final_eval: Option<SavedEval>,
}

impl Loop<'_> {
    /// Picks up to `n` idle clients, plans their work and sends it to `source`.
    fn dispatch(
        &mut self,
        n: usize,
        global: &ParamTree,
        source: &mut dyn ArrivalSource,
        grid: &mut dyn Grid,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let pool = grid.pool();
        let shared = Arc::new(global.clone());
        let mut work = Vec::new();
        let mut busy: BTreeSet<ClientId> = self.in_flight.keys().copied().collect();
        for _ in 0..n {
            self.dispatches += 1;
            let key = self.dispatches as u32;
            let strategy = &*self.strategy;
            let idle = |id: ClientId| -> Result<bool> {
                Ok(!busy.contains(&id)
                    && pool.info(id)?.num_train > 0
                    && strategy.may_dispatch(id)
                    && source.available(id, key))
            };
            let mut count = 0usize;
            for id in pool.ids() {
                count += usize::from(idle(id)?);
            }
            if count == 0 {
                break;
            }
            let mut rng = stream(self.opts.seed, self.dispatches, 0, Purpose::Sampling);
            let mut k = rng.gen_range(0..count);
            let mut chosen = None;
            for id in pool.ids() {
                if idle(id)? {
                    if k == 0 {
                        chosen = Some(id);
                        break;
                    }
                    k -= 1;
                }
            }
            let info = pool.info(chosen.expect("the k-th of the counted idle clients"))?;
            let mut plan = self
                .policy
                .plan(self.version as u32 + 1, &info, self.base_plan)?;
            if self.opts.rate_decay {
                let s = self
                    .strategy
                    .staleness()
                    .weight(self.last_staleness.get(&info.id).copied().unwrap_or(0));
                plan.base_lr = (plan.base_lr as f64 * s) as f32;
            }
            source.adapt_plan(&info, key, &mut plan);
            plan.validate(self.groups)?;
            busy.insert(info.id);
            work.push((
                info.id,
                TrainIns::new(key, shared.clone(), plan, self.opts.seed),
            ));
        }
        if work.is_empty() {
            return Ok(());
        }
        for (id, ins) in &work {
            self.in_flight.insert(
                *id,
                InFlight {
                    base: shared.clone(),
                    base_version: self.version,
                    plan: ins.plan.clone(),
                },
            );
        }
        observer.phase_started(self.version as u32 + 1, "train", work.len());
        source.send(grid, work, observer.progress())
    }

    /// The server state at a version boundary, encoded ([`Checkpoint::server`]).
    fn save(&self, source: &dyn ArrivalSource, wall_seconds: f64) -> Result<Vec<u8>> {
        let mut bases: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for f in self.in_flight.values() {
            bases
                .entry(f.base_version)
                .or_insert_with(|| encode_params(&f.base));
        }
        ServerState::Async(Box::new(AsyncLoop {
            version: self.version,
            dispatches: self.dispatches,
            last_version_time: self.last_version_time,
            last_staleness: self.last_staleness.iter().map(|(k, v)| (*k, *v)).collect(),
            in_flight: self
                .in_flight
                .iter()
                .map(|(id, f)| (*id, f.base_version, f.plan.clone()))
                .collect(),
            bases: bases.into_iter().map(|(v, b)| (v, Bytes(b))).collect(),
            final_eval: self.final_eval.clone(),
            wall_seconds,
            source: Bytes(source.save_state()?),
            strategy: Bytes(self.strategy.save_state()?),
            policy: Bytes(self.policy.save_state()?),
        }))
        .encode()
    }

    /// Restores [`Loop::save`]'s state (and the source's, strategy's and policy's);
    /// returns the wall seconds the run had taken.
    fn restore(&mut self, server: &[u8], source: &mut dyn ArrivalSource) -> Result<f64> {
        let s = match ServerState::decode(server)? {
            ServerState::Async(s) => s,
            other => return Err(wrong_loop(&other, "the asynchronous loop")),
        };
        let mut bases = BTreeMap::new();
        for (v, b) in s.bases {
            bases.insert(v, Arc::new(decode_params(&b.0)?));
        }
        self.in_flight = s
            .in_flight
            .into_iter()
            .map(|(id, base_version, plan)| {
                let base = bases.get(&base_version).cloned().ok_or_else(|| {
                    Error::Decode(format!(
                        "checkpoint server state: client {id} started from version \
                         {base_version}, whose model is not saved"
                    ))
                })?;
                Ok((
                    id,
                    InFlight {
                        base,
                        base_version,
                        plan,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        self.version = s.version;
        self.dispatches = s.dispatches;
        self.last_version_time = s.last_version_time;
        self.last_staleness = s.last_staleness.into_iter().collect();
        self.final_eval = s.final_eval;
        source.restore_state(&s.source.0)?;
        self.strategy.restore_state(&s.strategy.0)?;
        self.policy.restore_state(&s.policy.0)?;
        Ok(s.wall_seconds)
    }
}

/// Runs an asynchronous algorithm (see the module doc) from `start`, with arrivals from
/// `source`, until `opts.updates` server versions in all.
#[allow(clippy::too_many_arguments)]
pub fn run_arrivals(
    strategy: &mut dyn AsyncStrategy,
    policy: &mut dyn RatePolicy,
    base_plan: &RatePlan,
    source: &mut dyn ArrivalSource,
    grid: &mut dyn Grid,
    start: Start,
    opts: &AsyncOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let clock = Instant::now();
    let pool = grid.pool();
    let (mut global, resume) = match start {
        Start::Fresh(init) => (init, None),
        Start::Resume { global, server } => (global, Some(server)),
    };
    let mut lp = Loop {
        strategy,
        policy,
        base_plan,
        opts,
        groups: global.spec().num_groups(),
        version: 0,
        dispatches: 0,
        last_version_time: 0.0,
        last_staleness: BTreeMap::new(),
        in_flight: BTreeMap::new(),
        final_eval: None,
    };
    lp.policy.seed(opts.seed);
    let wall_before = match resume {
        Some(server) => lp.restore(&server, source)?,
        None => 0.0,
    };
    // After a restore, as the synchronous pipeline does: a policy keeps what it restored.
    lp.policy.start(pool.as_ref())?;
    let wall = || wall_before + clock.elapsed().as_secs_f64();
    // Arrivals since the last version (all empty at a version boundary).
    let mut pending: Vec<ClientRoundRecord> = Vec::new();
    let mut timing = RoundTiming::default();
    let mut loss = (0.0f64, 0.0f64);
    let mut failures_in_row: u64 = 0;
    let mut records = Vec::new();
    let mut round_wall_seconds = Vec::new();
    let mut stopped = false;
    let mut checkpointed = None;
    while lp.version < opts.updates as u64 {
        if pending.is_empty() && observer.should_stop() {
            stopped = true;
            let round = lp.version as u32;
            if checkpointed != Some(round) && observer.checkpoint_due(round, true) {
                let server = lp.save(source, wall())?;
                observer.checkpoint(Checkpoint {
                    round,
                    global: &global,
                    server,
                    grid,
                })?;
            }
            break;
        }
        // Keep `concurrency` clients busy.
        let want = opts.concurrency.saturating_sub(lp.in_flight.len());
        lp.dispatch(want, &global, source, grid, observer)?;
        let Some(arrival) = source.next() else {
            return Err(Error::invalid(
                "asynchronous run",
                format!("version {}", lp.version),
                "clients to dispatch (none is idle and available)",
            ));
        };
        let now = arrival.time;
        let Some(sent) = lp.in_flight.remove(&arrival.client) else {
            return Err(Error::invalid(
                "asynchronous run",
                format!("an update from client {}", arrival.client),
                "updates only from clients that were sent work",
            ));
        };
        let staleness = lp.version - sent.base_version;
        let mut rec = ClientRoundRecord {
            client: arrival.client,
            plan: sent.plan,
            report: None,
            failure: None,
            failure_kind: None,
            weight: 0.0,
            cosine_to_aggregate: 0.0,
            num_examples: 0,
        };
        timing
            .completion
            .push((arrival.client, now - lp.last_version_time));
        let mut advanced = false;
        let failed = match arrival.outcome {
            Outcome::Update(res) => {
                lp.last_staleness.insert(arrival.client, staleness);
                let out = lp.strategy.on_arrival(
                    &mut global,
                    &sent.base,
                    arrival.client,
                    &res,
                    staleness,
                )?;
                if let Ok(info) = pool.info(arrival.client) {
                    lp.policy.observe(lp.version as u32 + 1, &info, &res.report);
                }
                loss.0 += res.report.train_loss as f64 * res.num_examples as f64;
                loss.1 += res.num_examples as f64;
                rec.weight = out.weight;
                rec.num_examples = res.num_examples;
                rec.report = Some(res.report);
                advanced = out.new_version;
                None
            }
            Outcome::Failed(f) => Some((f.to_string(), Some(f.kind()))),
            Outcome::NoReply => Some(("no reply".to_string(), Some("no reply"))),
            Outcome::Lost(why) => Some((why, None)),
        };
        match failed {
            Some((f, kind)) => {
                timing.dropped.push(arrival.client);
                failures_in_row += 1;
                if failures_in_row > MAX_FAILURES_IN_ROW.max(100 * opts.concurrency as u64) {
                    return Err(Error::invalid(
                        "asynchronous run",
                        format!(
                            "version {}: {failures_in_row} arrivals in a row failed (last: {f})",
                            lp.version
                        ),
                        "some arrivals that succeed (check devices.dropout, devices.stragglers \
                         with late = \"drop\", and the clients' failures)",
                    ));
                }
                rec.failure = Some(f);
                rec.failure_kind = kind;
            }
            None => failures_in_row = 0,
        }
        pending.push(rec);
        if !advanced {
            continue;
        }
        lp.version += 1;
        let round = lp.version as u32;
        let evaluate =
            round == opts.updates || (opts.eval_every > 0 && round.is_multiple_of(opts.eval_every));
        stopped = observer.should_stop();
        // A stop skips the round's evaluation unless a checkpoint is taken there: a run
        // resumed from it must record (and let the policy observe) what a straight run does.
        let eval = if evaluate && (!stopped || observer.checkpoint_due(round, true)) {
            let e = evaluate_async(grid, &global, round, base_plan, opts, observer)?;
            lp.final_eval = Some(SavedEval::new(round, &e));
            Some(e)
        } else {
            None
        };
        timing.round_seconds = now - lp.last_version_time;
        timing.sim_seconds = now;
        lp.last_version_time = now;
        let clients = std::mem::take(&mut pending);
        let record = RoundRecord {
            round,
            sampled: clients.iter().map(|c| c.client).collect(),
            train_loss: if loss.1 > 0.0 {
                loss.0 / loss.1
            } else {
                f64::NAN
            },
            clients,
            aggregate: Default::default(),
            eval,
            wall_seconds: wall(),
            timing: Some(std::mem::take(&mut timing)),
            traffic: grid.take_round_traffic(),
        };
        loss = (0.0, 0.0);
        observer.round_finished(&record, &global)?;
        round_wall_seconds.push(record.wall_seconds);
        if opts.keep_records {
            records.push(record);
        }
        if observer.checkpoint_due(round, stopped) {
            let server = lp.save(source, wall())?;
            observer.checkpoint(Checkpoint {
                round,
                global: &global,
                server,
                grid,
            })?;
            checkpointed = Some(round);
        }
        if stopped {
            break;
        }
    }
    let final_eval = lp.final_eval.map(SavedEval::into_eval);
    Ok(RunOutcome {
        global,
        final_eval_round: final_eval.as_ref().map(|e| e.0),
        final_eval: final_eval.map(|e| e.1).unwrap_or_default(),
        rounds: records,
        round_wall_seconds,
        completed_rounds: lp.version as u32,
        stopped,
    })
}

fn evaluate_async(
    grid: &mut dyn Grid,
    global: &ParamTree,
    round: u32,
    plan: &RatePlan,
    opts: &AsyncOptions,
    observer: &mut dyn Observer,
) -> Result<EvalSummary> {
    let template = EvalIns {
        round,
        params: Arc::new(global.clone()),
        finetune_steps: opts.finetune_steps,
        max_test_samples: opts.max_test_samples,
        plan: plan.clone(),
        seed: opts.seed,
        personalized: Default::default(),
        ext: Default::default(),
    };
    evaluate_clients(
        grid,
        global,
        template,
        opts.eval_clients,
        &|_| Ok(Default::default()),
        observer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::approx_constant)] // the C.8 test vector, digits as printed there
    fn staleness_test_vectors_from_c8() {
        let taus = [0u64, 1, 3, 4, 5, 10];
        let poly = [1.0, 0.7071, 0.5, 0.4472, 0.4082, 0.3015];
        let hinge = [1.0, 1.0, 1.0, 1.0, 0.0909, 0.0164];
        for ((t, p), h) in taus.iter().zip(poly).zip(hinge) {
            let got = Staleness::Polynomial { a: 0.5 }.weight(*t);
            assert!((got - p).abs() < 5e-5, "poly({t}) = {got}, want {p}");
            let got = Staleness::Hinge { a: 10.0, b: 4.0 }.weight(*t);
            assert!((got - h).abs() < 5e-5, "hinge({t}) = {got}, want {h}");
        }
        assert_eq!(Staleness::Constant.weight(100), 1.0);
    }
}
