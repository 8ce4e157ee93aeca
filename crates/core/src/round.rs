//! The one round loop. Every synchronous algorithm runs through [`run`]:
//! `configure_train` (sample, plan, attach payloads) → the grid trains →
//! `aggregate_train` (validate, transform, aggregate, server step, post-aggregate
//! hooks, observe each client) → evaluation → `observe_round`. The stages inside the two
//! strategy calls are `fedpace_algos::pipeline`'s.

use crate::checkpoint::{wrong_loop, Bytes, Checkpoint, SavedEval, ServerState, Start, SyncLoop};
use crate::pool::ClientPool;
use crate::protocol::*;
use crate::summary::AggregateSummary;
pub use crate::summary::{EvalSummary, RoundTiming};
use crate::traits::{Grid, Progress, RoundSummary, Strategy};
use crate::{EvalStats, Result};
use fedpace_params::ParamTree;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Consecutive rounds in which no client trains (nobody available, every selected client
/// dropped or late, zero local steps, zero rates) after which [`run`] stops with
/// [`crate::Error::NoTraining`] — or all of a shorter run. A round that comes up empty by
/// chance with probability p (say one client per round and a dropout of 0.5) stops a
/// legitimate run of R rounds falsely with probability about R·p^20: 1e-3 for p = 0.5
/// over 1,000 rounds. A configuration that can never train stops after 20 rounds.
pub const NO_TRAINING_ROUNDS: u32 = 20;

/// Settings of the round loop itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Number of rounds.
    pub rounds: u32,
    /// Run seed.
    pub seed: u64,
    /// Evaluate every this many rounds (0 = only after the last round).
    pub eval_every: u32,
    /// Local fine-tuning steps before personalised evaluation.
    pub finetune_steps: u32,
    /// How personalised models are evaluated.
    pub personalized: PersonalEval,
    /// Evaluate each client on at most this many of its test samples (`None` = all).
    pub max_test_samples: Option<u32>,
    /// Keep every round's full record (one line per sampled client, ≈ 320 bytes each) in
    /// [`RunOutcome::rounds`]. Observers receive every record either way; a long run over
    /// many clients should leave this off, so that memory is bounded by the clients in
    /// flight and not by rounds × clients per round.
    pub keep_records: bool,
    /// Evaluate at most this many clients: a seeded sample of the pool, the same at
    /// every evaluation ([`eval_ids`]); `None` = every client.
    pub eval_clients: Option<u32>,
}

/// The clients an evaluation visits: every client of the pool, or with `max = Some(k)`
/// (fewer than the pool) `k` of them drawn once from `(seed, Evaluation)` — the same
/// clients at every evaluation, in pool order, so rounds stay comparable. Memory is
/// O(k) for a sample and nothing for the whole pool (the ids are produced one at a time);
/// clients without a test split are skipped by the caller.
pub fn eval_ids(
    pool: &dyn ClientPool,
    max: Option<u32>,
    seed: u64,
) -> Box<dyn Iterator<Item = ClientId> + '_> {
    match max {
        Some(k) if (k as usize) < pool.len() => {
            let mut rng = crate::rng::stream(seed, 0, 0, crate::rng::Purpose::Evaluation);
            let mut idx = rand::seq::index::sample(&mut rng, pool.len(), k as usize).into_vec();
            idx.sort_unstable();
            Box::new(idx.into_iter().map(|i| pool.id_at(i)))
        }
        _ => Box::new(pool.ids()),
    }
}

/// One client's line in a round record.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRoundRecord {
    /// Client.
    pub client: ClientId,
    /// Its plan.
    pub plan: RatePlan,
    /// Its report, when it succeeded.
    pub report: Option<TrainReport>,
    /// Its failure, when it failed.
    pub failure: Option<String>,
    /// The kind of its failure ([`crate::ClientFailure::kind`], or `"no reply"`), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<&'static str>,
    /// Aggregation weight p̃_k (0 when failed).
    pub weight: f64,
    /// Cosine between its update and the aggregate.
    pub cosine_to_aggregate: f64,
    /// Training samples.
    pub num_examples: u64,
}

/// Updates of one round that could not be aggregated ([`RoundRecord::rejected`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rejected {
    /// How many.
    pub count: usize,
    /// How many of each kind ([`crate::ClientFailure::kind`]).
    pub reasons: BTreeMap<&'static str, usize>,
    /// The first failure message, in client-id order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// Everything that happened in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRecord {
    /// Round index (1-based).
    pub round: u32,
    /// Clients sampled.
    pub sampled: Vec<ClientId>,
    /// Sample-weighted mean training loss of the successful clients.
    pub train_loss: f64,
    /// Per-client details.
    pub clients: Vec<ClientRoundRecord>,
    /// Aggregation summary.
    pub aggregate: AggregateSummary,
    /// Evaluation, when this round was evaluated.
    pub eval: Option<EvalSummary>,
    /// Wall-clock seconds since the run started.
    pub wall_seconds: f64,
    /// The simulated clock, when devices are simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<RoundTiming>,
    /// The bytes of the round's messages, when the grid counts them
    /// ([`crate::Grid::take_round_traffic`]: over the network, or a counted simulation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::summary::RoundTraffic>,
}

impl RoundRecord {
    /// The updates of this round that were rejected (NaN/Inf, wrong shape, a bad report,
    /// a client error or panic), counted by reason. Simulated dropouts and dropped
    /// stragglers are device behaviour, not rejections.
    pub fn rejected(&self) -> Rejected {
        let mut r = Rejected::default();
        for c in &self.clients {
            if let (Some(f), Some(kind)) = (&c.failure, c.failure_kind) {
                r.count += 1;
                *r.reasons.entry(kind).or_default() += 1;
                r.first.get_or_insert_with(|| f.clone());
            }
        }
        r
    }
}

/// Receives progress and results; the CLI writes files and draws the progress bar.
pub trait Observer {
    /// A phase of a round starts with `clients` clients (`phase` is "train", "exchange"
    /// or "eval").
    fn phase_started(&mut self, _round: u32, _phase: &'static str, _clients: usize) {}
    /// Counter of finished clients, shared with the grid.
    fn progress(&self) -> &dyn Progress;
    /// The server's own evaluation of `global` on data it holds (a held-out test set;
    /// [`crate::CentralEval`]), asked at every evaluation after the clients': it becomes
    /// [`EvalSummary::central`]. `None` (the default): the server holds no such data.
    fn evaluate_central(&mut self, _global: &ParamTree) -> Option<Result<EvalStats>> {
        None
    }
    /// The server's own evaluation of `global` on its validation set (the validation
    /// part of its held-out set, `data.validation_fraction > 0`): it becomes the
    /// `central` of [`EvalSummary::validation`]. `None` (the default): none.
    fn evaluate_central_validation(&mut self, _global: &ParamTree) -> Option<Result<EvalStats>> {
        None
    }
    /// Whether the observer wants the full per-round trace.
    fn wants_trace(&self) -> bool {
        false
    }
    /// The full trace of a round (only called when [`Observer::wants_trace`]).
    fn trace(
        &mut self,
        _round: u32,
        _global_in: &ParamTree,
        _ins: &[(ClientId, TrainIns)],
        _replies: &[Reply<TrainRes>],
        _summary: &AggregateSummary,
        _global_out: &ParamTree,
    ) -> Result<()> {
        Ok(())
    }
    /// One protocol step after training ([`crate::Strategy::exchange`]): what the server
    /// sent and what came back (only called when [`Observer::wants_trace`]).
    fn exchanged(
        &mut self,
        _round: u32,
        _sent: &[(ClientId, ExchangeIns)],
        _received: &[Reply<crate::Extensions>],
    ) -> Result<()> {
        Ok(())
    }
    /// A round finished.
    fn round_finished(&mut self, record: &RoundRecord, global: &ParamTree) -> Result<()>;
    /// Whether the run should stop early (a signal, a user's request). The loops ask
    /// before each round and again before its evaluation: a round whose training has
    /// run is aggregated and recorded (without its evaluation, unless a checkpoint is
    /// due there), then the run ends with [`RunOutcome::stopped`] set.
    fn should_stop(&self) -> bool {
        false
    }
    /// Whether to save a checkpoint after `round` rounds (asynchronously: server
    /// versions); `stopping`: the run ends there because [`Observer::should_stop`] said
    /// so. Default: never.
    fn checkpoint_due(&self, _round: u32, _stopping: bool) -> bool {
        false
    }
    /// Saves a checkpoint at a round boundary (called where
    /// [`Observer::checkpoint_due`] said so; docs/checkpoints.md).
    fn checkpoint(&mut self, _checkpoint: Checkpoint<'_>) -> Result<()> {
        Ok(())
    }
}

/// What a run ends with.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Final global parameters.
    pub global: ParamTree,
    /// The last evaluation.
    pub final_eval: EvalSummary,
    /// Every round's record, when [`RunOptions::keep_records`] is set (else empty).
    pub rounds: Vec<RoundRecord>,
    /// Wall-clock seconds since the start of the run at the end of each round (always kept).
    pub round_wall_seconds: Vec<f64>,
    /// Rounds (asynchronously: server versions) completed; fewer than asked when stopped.
    pub completed_rounds: u32,
    /// The round of [`RunOutcome::final_eval`] (`None`: no evaluation ran).
    pub final_eval_round: Option<u32>,
    /// The run ended early because [`Observer::should_stop`] said so.
    pub stopped: bool,
}

/// Runs `opts.rounds` rounds of `strategy` on `grid`, starting from `init`.
pub fn run(
    strategy: &mut dyn Strategy,
    grid: &mut dyn Grid,
    init: ParamTree,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    run_from(strategy, grid, Start::Fresh(init), opts, observer)
}

/// [`run`] from `start`: round 1, or the round after a checkpoint (the strategy's state
/// is restored from it; the grid's client states must have been restored by the caller).
/// Rounds continue until `opts.rounds` in all.
pub fn run_from(
    strategy: &mut dyn Strategy,
    grid: &mut dyn Grid,
    start: Start,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    let (mut global, mut state) = match start {
        Start::Fresh(init) => (init, SyncLoop::default()),
        Start::Resume { global, server } => match ServerState::decode(&server)? {
            ServerState::Sync {
                state,
                strategy: saved,
            } => {
                strategy.restore_state(&saved.0)?;
                (global, state)
            }
            other => return Err(wrong_loop(&other, "the synchronous round loop")),
        },
    };
    let start = Instant::now();
    let wall = |state: &SyncLoop| state.wall_seconds + start.elapsed().as_secs_f64();
    let mut records = Vec::new();
    let mut round_wall_seconds = Vec::with_capacity(opts.rounds as usize);
    let mut stopped = false;
    let mut checkpointed = None;
    let pool = grid.pool();
    // Offers a checkpoint of the state after `state.completed` rounds.
    let mut offer = |state: &mut SyncLoop,
                     strategy: &dyn Strategy,
                     global: &ParamTree,
                     grid: &mut dyn Grid,
                     observer: &mut dyn Observer,
                     stopping: bool|
     -> Result<()> {
        let round = state.completed;
        if checkpointed == Some(round) || !observer.checkpoint_due(round, stopping) {
            return Ok(());
        }
        let mut saved = state.clone();
        saved.wall_seconds = wall(state);
        let server = ServerState::Sync {
            state: saved,
            strategy: Bytes(strategy.save_state()?),
        }
        .encode()?;
        observer.checkpoint(Checkpoint {
            round,
            global,
            server,
            grid,
        })?;
        checkpointed = Some(round);
        Ok(())
    };
    for round in state.completed + 1..=opts.rounds {
        if observer.should_stop() {
            stopped = true;
            offer(&mut state, strategy, &global, grid, observer, true)?;
            break;
        }
        let shared = Arc::new(global.clone());
        let ins = strategy.configure_train(round, &shared, pool.as_ref(), opts.seed)?;
        let plans: Vec<(ClientId, RatePlan)> =
            ins.iter().map(|(c, i)| (*c, i.plan.clone())).collect();
        observer.phase_started(round, "train", ins.len());
        let trace = observer.wants_trace();
        let ins_for_trace = if trace { ins.clone() } else { Vec::new() };
        let replies = grid.train(ins, observer.progress());
        exchange(strategy, grid, round, &replies, observer)?;
        let summary = strategy.aggregate_train(round, &mut global, &replies, pool.as_ref())?;
        if trace {
            observer.trace(round, &shared, &ins_for_trace, &replies, &summary, &global)?;
        }
        let record_clients = client_records(&plans, &replies, &summary);
        let (mut loss, mut n) = (0.0, 0.0);
        for r in &replies {
            if let Ok(res) = &r.result {
                loss += res.report.train_loss as f64 * res.num_examples as f64;
                n += res.num_examples as f64;
            }
        }
        let evaluate =
            round == opts.rounds || (opts.eval_every > 0 && round % opts.eval_every == 0);
        stopped = observer.should_stop();
        // A stop skips the round's evaluation unless a checkpoint is taken there: a run
        // resumed from it must record (and let the policy observe) what a straight run does.
        let eval = if evaluate && (!stopped || observer.checkpoint_due(round, true)) {
            let e = evaluate_all(strategy, grid, &global, round, opts, observer)?;
            state.final_eval = Some(SavedEval::new(round, &e));
            Some(e)
        } else {
            None
        };
        strategy.observe_round(
            round,
            &RoundSummary {
                aggregate: &summary,
                eval: eval.as_ref(),
                global: &global,
            },
        );
        let record = RoundRecord {
            round,
            sampled: plans.iter().map(|p| p.0).collect(),
            train_loss: if n > 0.0 { loss / n } else { f64::NAN },
            clients: record_clients,
            aggregate: summary,
            eval,
            wall_seconds: wall(&state),
            timing: strategy.round_timing(),
            traffic: grid.take_round_traffic(),
        };
        observer.round_finished(&record, &global)?;
        match no_training_cause(&record) {
            None => state.idle_rounds = 0,
            Some(cause) => {
                state.idle_rounds += 1;
                if state.idle_rounds >= NO_TRAINING_ROUNDS.min(opts.rounds) {
                    return Err(crate::Error::NoTraining {
                        round,
                        rounds: state.idle_rounds,
                        cause,
                    });
                }
            }
        }
        round_wall_seconds.push(record.wall_seconds);
        state.completed = round;
        if opts.keep_records {
            records.push(record);
        }
        offer(&mut state, strategy, &global, grid, observer, stopped)?;
        if stopped {
            break;
        }
    }
    let final_eval = state.final_eval.map(SavedEval::into_eval);
    Ok(RunOutcome {
        global,
        final_eval_round: final_eval.as_ref().map(|e| e.0),
        final_eval: final_eval.map(|e| e.1).unwrap_or_default(),
        rounds: records,
        round_wall_seconds,
        completed_rounds: state.completed,
        stopped,
    })
}

/// Runs the strategy's protocol steps after training ([`Strategy::exchange`]) until it
/// sends no more messages.
fn exchange(
    strategy: &mut dyn Strategy,
    grid: &mut dyn Grid,
    round: u32,
    replies: &[Reply<TrainRes>],
    observer: &mut dyn Observer,
) -> Result<()> {
    let mut answers = None;
    loop {
        let msgs = strategy.exchange(round, replies, answers.take())?;
        if msgs.is_empty() {
            return Ok(());
        }
        observer.phase_started(round, "exchange", msgs.len());
        let sent = if observer.wants_trace() {
            msgs.clone()
        } else {
            Vec::new()
        };
        let got = grid.exchange(msgs, observer.progress());
        if observer.wants_trace() {
            observer.exchanged(round, &sent, &got)?;
        }
        answers = Some(got);
    }
}

/// Why no client trained in this round, or `None` when one did (ran at least one local
/// step with a rate above 0 and was aggregated).
fn no_training_cause(rec: &RoundRecord) -> Option<String> {
    let reports: Vec<&TrainReport> = rec
        .clients
        .iter()
        .filter_map(|c| c.report.as_ref())
        .collect();
    if reports
        .iter()
        .any(|r| r.steps > 0 && r.rate_sum.iter().any(|&x| x > 0.0))
    {
        return None;
    }
    if !reports.is_empty() {
        return Some(if reports.iter().all(|r| r.steps == 0) {
            "every client ran 0 local steps: client.max_steps, devices.max_steps or \
             devices.deadline left no step"
                .into()
        } else {
            "every client's rates were 0: client.group_lr or the rate policy".into()
        });
    }
    let mut parts = Vec::new();
    if let Some(t) = &rec.timing {
        if !t.dropped.is_empty() {
            parts.push(format!(
                "{} selected client(s) dropped out (devices.dropout)",
                t.dropped.len()
            ));
        }
        if !t.late_dropped.is_empty() {
            parts.push(format!(
                "{} straggler(s) or late client(s) dropped (devices.stragglers, \
                 devices.deadline, devices.late)",
                t.late_dropped.len()
            ));
        }
    }
    if parts.is_empty() {
        parts.push(if rec.timing.is_some() {
            "no client was available (devices.availability)".into()
        } else {
            "no client was sampled".into()
        });
    }
    Some(parts.join(", "))
}

fn client_records(
    plans: &[(ClientId, RatePlan)],
    replies: &[Reply<TrainRes>],
    summary: &AggregateSummary,
) -> Vec<ClientRoundRecord> {
    plans
        .iter()
        .map(|(id, plan)| {
            let reply = replies.iter().find(|r| r.client == *id);
            let agg = summary.clients.iter().find(|c| c.client == *id);
            let (report, failure, kind, n) = match reply.map(|r| &r.result) {
                Some(Ok(res)) => (Some(res.report.clone()), None, None, res.num_examples),
                Some(Err(f)) => (None, Some(f.to_string()), Some(f.kind()), 0),
                None => (None, Some("no reply".to_string()), Some("no reply"), 0),
            };
            ClientRoundRecord {
                client: *id,
                plan: plan.clone(),
                report,
                failure,
                failure_kind: kind,
                weight: agg.map_or(0.0, |a| a.weight),
                cosine_to_aggregate: agg.map_or(0.0, |a| a.cosine_to_aggregate),
                num_examples: n,
            }
        })
        .collect()
}

/// Evaluates the global model (and personalised models) on every client's test split
/// (or `opts.eval_clients` of them), with the strategy's evaluation plan and extras.
pub fn evaluate_all(
    strategy: &dyn Strategy,
    grid: &mut dyn Grid,
    global: &ParamTree,
    round: u32,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<EvalSummary> {
    let template = EvalIns {
        round,
        params: Arc::new(global.clone()),
        finetune_steps: opts.finetune_steps,
        max_test_samples: opts.max_test_samples,
        plan: strategy.eval_plan(),
        seed: opts.seed,
        personalized: opts.personalized,
        ext: strategy.eval_ext(),
    };
    evaluate_clients(
        grid,
        global,
        template,
        opts.eval_clients,
        &|id| strategy.eval_ext_for(id),
        observer,
    )
}

/// Sends `template`, with `per_client(id)`'s payloads added, to every client with a test
/// split among [`eval_ids`]`(max_clients)`, then summarises the replies and adds the
/// server's central evaluation of `global`
/// ([`Observer::evaluate_central`]). Shared by the synchronous and the asynchronous loops.
pub fn evaluate_clients(
    grid: &mut dyn Grid,
    global: &ParamTree,
    template: EvalIns,
    max_clients: Option<u32>,
    per_client: &dyn Fn(ClientId) -> Result<crate::Extensions>,
    observer: &mut dyn Observer,
) -> Result<EvalSummary> {
    let round = template.round;
    let mut ins: Vec<(ClientId, EvalIns)> = Vec::new();
    let pool = grid.pool();
    for id in eval_ids(pool.as_ref(), max_clients, template.seed) {
        if pool.info(id)?.num_test > 0 {
            let mut one = template.clone();
            one.ext.extend(per_client(id)?);
            ins.push((id, one));
        }
    }
    observer.phase_started(round, "eval", ins.len());
    let replies = grid.evaluate(ins, observer.progress());
    let mut summary = summarize_eval(&replies);
    summary.central = observer.evaluate_central(global).transpose()?;
    if let Some(c) = observer.evaluate_central_validation(global).transpose()? {
        summary
            .validation
            .get_or_insert_with(|| Box::new(summarize_eval(&[])))
            .central = Some(c);
    }
    Ok(summary)
}

/// Combines per-client evaluations into the summary statistics; the clients' validation
/// statistics, when any client reported some, into [`EvalSummary::validation`].
pub fn summarize_eval(replies: &[Reply<EvalRes>]) -> EvalSummary {
    let validation: Vec<Reply<EvalRes>> = replies
        .iter()
        .filter_map(|r| match &r.result {
            Ok(EvalRes {
                validation: Some(v),
                ..
            }) => Some(Reply {
                client: r.client,
                result: Ok(EvalRes::new(v.global, v.personalized)),
            }),
            _ => None,
        })
        .collect();
    let mut summary = summarize_split(replies);
    if !validation.is_empty() {
        summary.validation = Some(Box::new(summarize_split(&validation)));
    }
    summary
}

/// The statistics of one split.
fn summarize_split(replies: &[Reply<EvalRes>]) -> EvalSummary {
    let mut pooled = EvalStats::default();
    let mut pooled_p = EvalStats::default();
    let mut global_accs = Vec::new();
    let mut per_client = Vec::new();
    let mut failures = 0;
    for r in replies {
        match &r.result {
            Ok(e) => {
                pooled.merge(&e.global);
                if e.global.count > 0 {
                    global_accs.push(e.global.accuracy());
                }
                let p = e.personalized.unwrap_or(e.global);
                pooled_p.merge(&p);
                if p.count > 0 {
                    per_client.push((r.client, p.accuracy()));
                }
            }
            Err(_) => failures += 1,
        }
    }
    let accs: Vec<f64> = per_client.iter().map(|p| p.1).collect();
    let (mean, std) = mean_std(&accs);
    let mut sorted = accs.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let k = (sorted.len() as f64 * 0.1).ceil().max(1.0) as usize;
    let worst = if sorted.is_empty() {
        f64::NAN
    } else {
        mean_std(&sorted[..k.min(sorted.len())]).0
    };
    let best = if sorted.is_empty() {
        f64::NAN
    } else {
        mean_std(&sorted[sorted.len() - k.min(sorted.len())..]).0
    };
    let or_nan = |s: &EvalStats, v: f64| if s.count == 0 { f64::NAN } else { v };
    EvalSummary {
        central: None,
        global_loss: or_nan(&pooled, pooled.loss()),
        global_accuracy: or_nan(&pooled, pooled.accuracy()),
        global_mean_accuracy: mean_std(&global_accs).0,
        personalized_mean_accuracy: mean,
        personalized_weighted_accuracy: or_nan(&pooled_p, pooled_p.accuracy()),
        personalized_worst10_accuracy: worst,
        personalized_best10_accuracy: best,
        personalized_std_accuracy: std,
        per_client,
        failures,
        samples: pooled.count,
        validation: None,
    }
}

/// Mean and population standard deviation; NaN for no values (nothing was measured).
fn mean_std(x: &[f64]) -> (f64, f64) {
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64;
    (m, v.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(correct: u64, count: u64) -> EvalStats {
        EvalStats {
            loss_sum: 0.0,
            correct,
            count,
        }
    }

    #[test]
    fn eval_summary_statistics_by_hand() {
        // 10 clients with accuracies 0.0, 0.1, ..., 0.9 on 10 samples each, the last with
        // 30 samples (accuracy 0.9 → 27 correct).
        let replies: Vec<Reply<EvalRes>> = (0..10u64)
            .map(|i| {
                let n = if i == 9 { 30 } else { 10 };
                let s = stats(i * n / 10, n);
                Reply {
                    client: i,
                    result: Ok(EvalRes::new(s, Some(s))),
                }
            })
            .collect();
        let e = summarize_eval(&replies);
        assert!((e.personalized_mean_accuracy - 0.45).abs() < 1e-12);
        // weighted: (0+1+...+8 + 27) / (90 + 30) = 63/120
        assert!((e.personalized_weighted_accuracy - 63.0 / 120.0).abs() < 1e-12);
        assert_eq!(e.personalized_worst10_accuracy, 0.0);
        assert!((e.personalized_best10_accuracy - 0.9).abs() < 1e-12);
        // population std of 0..0.9 step 0.1 = sqrt(0.0825)
        assert!((e.personalized_std_accuracy - 0.0825f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn eval_ids_is_every_client_or_a_fixed_sample() {
        let pool: Vec<ClientInfo> = (0..100u64)
            .map(|id| ClientInfo::new(id * 3, 1, 1))
            .collect();
        let all: Vec<ClientId> = (0..100u64).map(|i| i * 3).collect();
        let ids = |max: Option<u32>, seed: u64| eval_ids(&pool, max, seed).collect::<Vec<_>>();
        assert_eq!(ids(None, 1), all);
        assert_eq!(ids(Some(100), 1), all);
        assert_eq!(ids(Some(500), 1), all);
        let some = ids(Some(10), 1);
        assert_eq!(some.len(), 10);
        assert!(
            some.windows(2).all(|w| w[0] < w[1]),
            "pool order, no repeats"
        );
        assert!(
            some.iter().all(|id| id % 3 == 0 && *id < 300),
            "ids of the pool"
        );
        assert_eq!(ids(Some(10), 1), some, "the same at every evaluation");
        assert_ne!(ids(Some(10), 2), some, "drawn from the seed");
    }
}
