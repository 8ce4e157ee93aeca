//! The asynchronous loop (docs/algorithms.md §C.8, C.9) on the simulated clock: beside
//! `fedpace_core::run`, with the same [`Grid`], [`RatePolicy`] and [`Observer`].
//!
//! `concurrency` clients train at once. Each is sent the current model (version v) and
//! its plan; its update arrives at `dispatch time + τ/speed + transfer time` (its
//! device profile, [`crate::clock`]). Arrivals are processed in simulated-time order,
//! ties by client id; each is handed to the [`AsyncStrategy`] with staleness
//! `version at arrival − v`, and a replacement client (uniform among the idle,
//! available ones the strategy accepts) is dispatched at once. A record is emitted
//! for every new server version; `updates` versions end the run.
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
//! **Devices.** Each dispatch gets the client's drawn local epochs, its device's step
//! limit (`max_steps`) and the straggler protocol per dispatch: with probability
//! `stragglers` a dispatch is a straggler, which keeps a partial budget of `U{1..E−1}`
//! epochs (`late = partial`) or whose update is discarded on arrival (`late = drop`).
//! A round `deadline` has no meaning without rounds and is rejected by the config.
//!
//! Determinism: the dispatch draws come from `(seed, dispatch number)`, training
//! from `(seed, dispatch number, client)`, and events are totally ordered.

use crate::clock::{completion_seconds, model_bytes, EventQueue};
use crate::devices::Devices;
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::round::{evaluate_clients, ClientRoundRecord, Observer, RoundRecord, RunOutcome};
use fedpace_core::{
    ClientId, Error, EvalIns, Grid, RatePlan, RatePolicy, Result, TrainIns, TrainRes,
};
use fedpace_core::{EvalSummary, RoundTiming};
use fedpace_params::ParamTree;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

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
    /// `fedpace_core::RunOptions::keep_records`).
    pub keep_records: bool,
    /// Evaluate at most this many clients (see `fedpace_core::round::eval_ids`).
    pub eval_clients: Option<u32>,
}

/// Failed arrivals in a row (at least; 100 × concurrency when larger) after which the
/// loop stops with an error instead of dispatching forever.
const MAX_FAILURES_IN_ROW: u64 = 1000;

struct InFlight {
    base: Arc<ParamTree>,
    base_version: u64,
    plan: RatePlan,
    /// The update, or why it never arrives: the message and, for a rejected update, the
    /// kind of failure (`None` for a simulated dropout or a dropped straggler).
    result: std::result::Result<TrainRes, (String, Option<&'static str>)>,
}

/// Runs an asynchronous algorithm (see the module doc).
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
    let start = Instant::now();
    let pool = grid.pool();
    policy.start(pool.as_ref())?;
    let groups = init.spec().num_groups();
    let bytes = model_bytes(init.as_slice().len());
    let mut global = init;
    let mut version: u64 = 0;
    let mut now = 0.0f64;
    let mut last_version_time = 0.0f64;
    let mut dispatches: u64 = 0;
    let mut last_staleness: BTreeMap<ClientId, u64> = BTreeMap::new();
    let mut busy: BTreeSet<ClientId> = BTreeSet::new();
    let mut queue: EventQueue<InFlight> = EventQueue::default();
    let mut pending: Vec<ClientRoundRecord> = Vec::new();
    let mut timing = RoundTiming::default();
    let mut records = Vec::new();
    let mut round_wall_seconds = Vec::new();
    let mut final_eval = None;
    let mut final_eval_round = None;
    let mut stopped = false;
    let mut loss = (0.0f64, 0.0f64);
    let mut failures_in_row: u64 = 0;

    // Sends `n` idle clients the current model; trains them (in parallel on the grid).
    let mut dispatch = |n: usize,
                        now: f64,
                        version: u64,
                        global: &ParamTree,
                        busy: &mut BTreeSet<ClientId>,
                        queue: &mut EventQueue<InFlight>,
                        strategy: &dyn AsyncStrategy,
                        policy: &mut dyn RatePolicy,
                        grid: &mut dyn Grid,
                        last_staleness: &BTreeMap<ClientId, u64>,
                        observer: &mut dyn Observer|
     -> Result<()> {
        let shared = Arc::new(global.clone());
        let mut ins = Vec::new();
        for _ in 0..n {
            dispatches += 1;
            let round_key = dispatches as u32;
            // Uniform among the idle clients: counted in one pass over the pool, the
            // drawn one found in a second, so nothing is kept per client.
            let idle = |id: ClientId| -> Result<bool> {
                Ok(!busy.contains(&id)
                    && pool.info(id)?.num_train > 0
                    && strategy.may_dispatch(id)
                    && devices.available(id, round_key))
            };
            let mut count = 0usize;
            for id in pool.ids() {
                count += usize::from(idle(id)?);
            }
            if count == 0 {
                break;
            }
            let mut rng = stream(opts.seed, dispatches, 0, Purpose::Sampling);
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
            let info = &info;
            let mut plan = policy.plan(version as u32 + 1, info, base_plan)?;
            if opts.rate_decay {
                let s = strategy
                    .staleness()
                    .weight(last_staleness.get(&info.id).copied().unwrap_or(0));
                plan.base_lr = (plan.base_lr as f64 * s) as f32;
            }
            if let Some(e) = devices.local_epochs(info.id, round_key) {
                plan.work = fedpace_core::LocalWork::Epochs(e);
            }
            // A partial straggler's budget and the device's step limit cap the plan's
            // steps, as in the synchronous wrapper (a dropped straggler trains in full
            // and its update is discarded on arrival).
            let budget = (devices.async_straggler(info.id, round_key)
                && devices.config().late == crate::devices::LatePolicy::Partial)
                .then(|| devices.straggler_budget(info.id, round_key, &plan, info.num_train))
                .flatten();
            for m in [budget, devices.profile(info.id).max_steps]
                .into_iter()
                .flatten()
            {
                plan.max_steps = Some(plan.max_steps.map_or(m, |x| x.min(m)));
            }
            plan.validate(groups)?;
            busy.insert(info.id);
            ins.push((
                info.id,
                TrainIns::new(round_key, shared.clone(), plan, opts.seed),
            ));
        }
        if ins.is_empty() {
            return Ok(());
        }
        let plans: Vec<(ClientId, RatePlan, u32)> = ins
            .iter()
            .map(|(c, i)| (*c, i.plan.clone(), i.round))
            .collect();
        observer.phase_started(version as u32 + 1, "train", ins.len());
        let replies = grid.train(ins, observer.progress());
        for (id, plan, key) in plans {
            let reply = replies.iter().find(|r| r.client == id);
            let planned = plan.steps_for(pool.info(id).map_or(0, |c| c.num_train) as usize);
            let result = match reply.map(|r| &r.result) {
                Some(Ok(res)) => Ok(res.clone()),
                Some(Err(f)) => Err((f.to_string(), Some(f.kind()))),
                None => Err(("no reply".into(), Some("no reply"))),
            };
            let result = if devices.drops_out(id, key) {
                Err(("dropped out".to_string(), None))
            } else if devices.async_straggler(id, key)
                && devices.config().late == crate::devices::LatePolicy::Drop
            {
                Err(("straggler, dropped (late = drop)".to_string(), None))
            } else {
                result
            };
            let steps = result.as_ref().map_or(planned, |r| r.report.steps);
            let t = now + completion_seconds(&devices.profile(id), steps, bytes);
            queue.push(
                t,
                id,
                InFlight {
                    base: shared.clone(),
                    base_version: version,
                    plan,
                    result,
                },
            );
        }
        Ok(())
    };

    dispatch(
        opts.concurrency,
        now,
        version,
        &global,
        &mut busy,
        &mut queue,
        strategy,
        policy,
        grid,
        &last_staleness,
        observer,
    )?;
    while version < opts.updates as u64 {
        if observer.should_stop() {
            stopped = true;
            break;
        }
        let Some(ev) = queue.pop() else {
            return Err(Error::invalid(
                "asynchronous run",
                format!("version {version}"),
                "clients to dispatch (none is idle and available)",
            ));
        };
        now = ev.time;
        busy.remove(&ev.client);
        let staleness = version - ev.payload.base_version;
        let mut rec = ClientRoundRecord {
            client: ev.client,
            plan: ev.payload.plan,
            report: None,
            failure: None,
            failure_kind: None,
            weight: 0.0,
            cosine_to_aggregate: 0.0,
            num_examples: 0,
        };
        timing.completion.push((ev.client, now - last_version_time));
        let mut advanced = false;
        match &ev.payload.result {
            Ok(res) => {
                last_staleness.insert(ev.client, staleness);
                let out = strategy.on_arrival(
                    &mut global,
                    &ev.payload.base,
                    ev.client,
                    res,
                    staleness,
                )?;
                if let Ok(info) = pool.info(ev.client) {
                    policy.observe(version as u32 + 1, &info, &res.report);
                }
                rec.report = Some(res.report.clone());
                rec.weight = out.weight;
                rec.num_examples = res.num_examples;
                loss.0 += res.report.train_loss as f64 * res.num_examples as f64;
                loss.1 += res.num_examples as f64;
                advanced = out.new_version;
            }
            Err((f, kind)) => {
                rec.failure = Some(f.clone());
                rec.failure_kind = *kind;
                timing.dropped.push(ev.client);
                failures_in_row += 1;
                if failures_in_row > MAX_FAILURES_IN_ROW.max(100 * opts.concurrency as u64) {
                    return Err(Error::invalid(
                        "asynchronous run",
                        format!("version {version}: {failures_in_row} arrivals in a row failed (last: {f})"),
                        "some arrivals that succeed (check devices.dropout, devices.stragglers with late = \"drop\", and the clients' failures)",
                    ));
                }
            }
        }
        if rec.failure.is_none() {
            failures_in_row = 0;
        }
        pending.push(rec);
        if advanced {
            version += 1;
            let round = version as u32;
            let evaluate = round == opts.updates
                || (opts.eval_every > 0 && round.is_multiple_of(opts.eval_every));
            stopped = observer.should_stop();
            let eval = if evaluate && !stopped {
                let e = evaluate_async(grid, &global, round, base_plan, opts, observer)?;
                final_eval = Some(e.clone());
                final_eval_round = Some(round);
                Some(e)
            } else {
                None
            };
            timing.round_seconds = now - last_version_time;
            timing.sim_seconds = now;
            last_version_time = now;
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
                wall_seconds: start.elapsed().as_secs_f64(),
                timing: Some(std::mem::take(&mut timing)),
            };
            loss = (0.0, 0.0);
            observer.round_finished(&record, &global)?;
            round_wall_seconds.push(record.wall_seconds);
            if opts.keep_records {
                records.push(record);
            }
            if stopped {
                break;
            }
        }
        if version < opts.updates as u64 {
            // Keep `concurrency` clients busy.
            let want = opts.concurrency.saturating_sub(busy.len());
            dispatch(
                want,
                now,
                version,
                &global,
                &mut busy,
                &mut queue,
                strategy,
                policy,
                grid,
                &last_staleness,
                observer,
            )?;
        }
    }
    Ok(RunOutcome {
        global,
        final_eval: final_eval.unwrap_or_default(),
        rounds: records,
        round_wall_seconds,
        completed_rounds: version as u32,
        final_eval_round,
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
    evaluate_clients(grid, global, template, opts.eval_clients, observer)
}
