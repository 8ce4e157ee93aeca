//! The search driver: plans against the budget, runs batches of trials in parallel, and
//! records every trial (docs/tuning.md, "The budget rule" and "Determinism").
//!
//! Budget: every request is admitted only if its nominal cost fits what is left; a fixed
//! plan that exceeds the budget is refused before anything runs (or, with `truncate`,
//! run until the next request would not fit). What was spent is the runners' reported
//! cost, written beside the nominal one.
//!
//! Determinism: a batch is expanded into jobs in (request, seed) order and numbered
//! before anything runs; workers take jobs in any order, but results are stored by job
//! number and told to the method in request order. Nothing a method sees depends on
//! completion order or on `parallel`.

use crate::methods::{Ctx, Method, MethodConfig, Outcome, Plan, Request};
use crate::space::{describe, overrides, short_float, Point, Space};
use crate::trial::{
    MetricInfo, Metrics, RoundMetrics, Trial, TrialError, TrialResult, TrialRunner, UnitScore,
};
use crate::Error;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A search to run.
#[derive(Debug, Clone)]
pub struct SearchSpec {
    /// The space.
    pub space: Space,
    /// The method.
    pub method: MethodConfig,
    /// Metric selected on (a `val_*` name the runner knows).
    pub objective: String,
    /// Seeds every configuration is trained on.
    pub seeds: Vec<u64>,
    /// Budget in client-epochs.
    pub budget: f64,
    /// Run a fixed plan over the budget until the budget ends, instead of refusing it.
    pub truncate: bool,
    /// Seed of the method's own draws.
    pub search_seed: u64,
    /// Trials at once (0 = one per core).
    pub parallel: usize,
}

/// One training run of the search (a request on one seed).
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Job number, in proposal order.
    pub job: usize,
    /// The evaluation (request) it belongs to.
    pub evaluation: usize,
    /// Lineage.
    pub lineage: usize,
    /// Seed.
    pub seed: u64,
    /// Configuration.
    pub point: Point,
    /// Rounds it started from (0: from scratch).
    pub from_rounds: u32,
    /// Rounds at its end.
    pub rounds: u32,
    /// Nominal client-epochs (what admission counted).
    pub nominal_cost: f64,
    /// Client-epochs the runner reported.
    pub cost: f64,
    /// Final metrics.
    pub metrics: Metrics,
    /// Per-round metrics.
    pub curve: Vec<RoundMetrics>,
    /// Per-client scores.
    #[serde(skip)]
    pub units: Vec<UnitScore>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Its directory, relative to the search's.
    pub dir: PathBuf,
}

/// A configuration evaluated on every seed (one request).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Index, in proposal order.
    pub index: usize,
    /// The batch it ran in.
    pub batch: usize,
    /// Lineage.
    pub lineage: usize,
    /// The lineage whose state it continued, if any.
    pub from: Option<usize>,
    /// What the method called it.
    pub label: String,
    /// Configuration.
    pub point: Point,
    /// Rounds at its end.
    pub rounds: u32,
    /// Whether it is a candidate for the final choice.
    pub last: bool,
    /// Mean objective over the seeds (`None`: a seed failed).
    pub objective: Option<f64>,
    /// Standard error of that mean across seeds (`None` with one seed).
    pub objective_se: Option<f64>,
    /// Objective per seed.
    pub per_seed: Vec<Option<f64>>,
    /// Client-epochs its jobs reported.
    pub cost: f64,
    /// Its jobs.
    pub jobs: Vec<usize>,
}

/// Everything a search did.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    /// Method name.
    pub method: String,
    /// The plan, in a line.
    pub plan: String,
    /// Objective name.
    pub objective: String,
    /// What the runner says about it (a stand-in is flagged in every table).
    pub objective_info: MetricInfo,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Budget (client-epochs).
    pub budget: f64,
    /// Planned nominal cost.
    pub planned: f64,
    /// Nominal cost of what ran.
    pub nominal_spent: f64,
    /// Reported cost of what ran.
    pub spent: f64,
    /// Why the search ended.
    pub stop: String,
    /// Whether a fixed plan was cut by the budget.
    pub truncated: bool,
    /// Whether promotions continued trials (else re-ran them from round 0).
    pub continued: bool,
    /// Evaluations in order.
    pub evaluations: Vec<Evaluation>,
    /// Jobs in order.
    pub jobs: Vec<JobRecord>,
    /// The chosen evaluation: best objective among full-length ones (ties: first).
    pub best: Option<usize>,
    /// The configuration each lineage trained with, as (rounds reached, point) steps,
    /// following copies (PBT's schedules).
    pub schedules: BTreeMap<usize, Vec<(u32, Point)>>,
    /// The space.
    pub space: Space,
}

impl SearchReport {
    /// The chosen configuration.
    pub fn best_point(&self) -> Option<&Point> {
        self.best.map(|i| &self.evaluations[i].point)
    }
}

struct Lineage<S> {
    rounds: u32,
    point: Point,
    states: Vec<Option<S>>,
    schedule: Vec<(u32, Point)>,
}

/// How a job starts.
pub(crate) enum Start<S> {
    /// From round 0.
    Fresh,
    /// From a state after `done` rounds.
    Continue { state: S, done: u32 },
}

/// One training run to make.
pub(crate) struct Job<S> {
    pub trial: Trial,
    pub start: Start<S>,
    pub rounds: u32,
    pub dir: PathBuf,
}

/// Threads for `parallel` (0 = one per core).
pub fn threads(parallel: usize) -> usize {
    if parallel == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        parallel
    }
}

/// Runs jobs on `parallel` threads; results by job index. A fatal error stops workers from
/// taking further jobs (those report `None`).
pub(crate) fn run_jobs<R: TrialRunner>(
    runner: &R,
    jobs: Vec<Job<R::State>>,
    parallel: usize,
    done: &mut dyn FnMut(usize, &TrialResult<R::State>),
) -> Vec<Option<TrialResult<R::State>>> {
    let n = jobs.len();
    let jobs: Vec<Mutex<Option<Job<R::State>>>> =
        jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut results: Vec<Option<TrialResult<R::State>>> = (0..n).map(|_| None).collect();
    let workers = threads(parallel).min(n).max(1);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let tx = tx.clone();
            let (jobs, next, stop) = (&jobs, &next, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let Some(job) = jobs[i].lock().map(|mut j| j.take()).ok().flatten() else {
                    continue;
                };
                let out = match &job.start {
                    Start::Fresh => runner.run(&job.trial, job.rounds, &job.dir),
                    Start::Continue { state, done } => {
                        runner.resume(&job.trial, state, *done, job.rounds, &job.dir)
                    }
                };
                if matches!(out, Err(TrialError::Fatal(_))) {
                    stop.store(true, Ordering::SeqCst);
                }
                if tx.send((i, out)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, out) in rx {
            done(i, &out);
            results[i] = Some(out);
        }
    });
    results
}

/// Nominal cost per round of a point, summed over the seeds; checked and cached (the
/// runner may build data to answer).
struct Costs<'a, R> {
    runner: &'a R,
    seeds: &'a [u64],
    cache: Mutex<HashMap<String, f64>>,
}

impl<R: TrialRunner> Costs<'_, R> {
    fn per_round(&self, p: &Point) -> Result<f64, Error> {
        let key = overrides(p).join(" ");
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            return Ok(c);
        }
        let mut total = 0.0;
        for &seed in self.seeds {
            let t = Trial {
                point: p.clone(),
                seed,
            };
            self.runner
                .check(&t)
                .map_err(|e| Error::Config(format!("{}: {e}", describe(p))))?;
            total += self.runner.round_cost(&t).map_err(Error::Runner)?;
        }
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, total);
        }
        Ok(total)
    }
}

/// Builds the method and its plan, and applies the budget rule: a fixed plan over the
/// budget is refused unless `truncate`.
fn planned<R: TrialRunner>(
    spec: &SearchSpec,
    runner: &R,
    ctx: &Ctx,
) -> Result<(Box<dyn Method>, Plan), Error> {
    let mut method = spec.method.build(spec.search_seed, ctx.max_rounds)?;
    if method.needs_continue() && !runner.can_continue() {
        return Err(Error::Runner(format!(
            "method {}: needs a runner that continues a trial from its saved state with a changed configuration; this one cannot",
            spec.method.name()
        )));
    }
    let plan = method.plan(ctx)?;
    if plan.fixed && plan.cost > spec.budget * (1.0 + 1e-9) && !spec.truncate {
        return Err(Error::Budget(format!(
            "{}: the plan ({}) costs {} client-epochs, over the budget of {}; lower the plan, raise the budget for every method compared, or set truncate = true to run it until the budget ends",
            spec.method.name(),
            plan.description,
            short_float(plan.cost),
            short_float(spec.budget)
        )));
    }
    Ok((method, plan))
}

/// Checks the objective, then calls `body` with the method context (costs checked and
/// cached per point).
fn with_ctx<R: TrialRunner, T>(
    spec: &SearchSpec,
    runner: &R,
    body: impl FnOnce(MetricInfo, &Ctx) -> Result<T, Error>,
) -> Result<T, Error> {
    let info = runner
        .metric(&spec.objective)
        .map_err(|e| Error::Config(format!("objective: {e}")))?;
    let costs = Costs {
        runner,
        seeds: &spec.seeds,
        cache: Mutex::new(HashMap::new()),
    };
    let round_cost = |p: &Point| costs.per_round(p);
    let ctx = Ctx {
        space: &spec.space,
        max_rounds: runner.max_rounds(),
        budget: spec.budget,
        seeds: spec.seeds.len(),
        can_continue: runner.can_continue(),
        round_cost: &round_cost,
    };
    body(info, &ctx)
}

/// Checks a search without training anything: the objective, every planned point's
/// configuration, the method's needs and the budget rule. Returns the plan.
pub fn plan_search<R: TrialRunner>(spec: &SearchSpec, runner: &R) -> Result<Plan, Error> {
    with_ctx(spec, runner, |_, ctx| Ok(planned(spec, runner, ctx)?.1))
}

/// Runs a search with `runner`, writing trial directories under `dir/trials/`, printing
/// one line per finished trial through `log`.
pub fn run_search<R: TrialRunner>(
    spec: &SearchSpec,
    runner: &R,
    dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<SearchReport, Error> {
    with_ctx(spec, runner, |info, ctx| {
        search(spec, runner, dir, log, info, ctx)
    })
}

fn search<R: TrialRunner>(
    spec: &SearchSpec,
    runner: &R,
    dir: &Path,
    log: &mut dyn FnMut(&str),
    info: MetricInfo,
    ctx: &Ctx,
) -> Result<SearchReport, Error> {
    let (mut method, plan) = planned(spec, runner, ctx)?;
    log(&format!(
        "{}; planned {} client-epochs of a budget of {}",
        plan.description,
        short_float(plan.cost),
        short_float(spec.budget)
    ));
    let mut report = SearchReport {
        method: spec.method.name().into(),
        plan: plan.description.clone(),
        objective: spec.objective.clone(),
        objective_info: info.clone(),
        seeds: spec.seeds.clone(),
        budget: spec.budget,
        planned: plan.cost,
        nominal_spent: 0.0,
        spent: 0.0,
        stop: "finished".into(),
        truncated: false,
        continued: runner.can_continue(),
        evaluations: Vec::new(),
        jobs: Vec::new(),
        best: None,
        schedules: BTreeMap::new(),
        space: spec.space.clone(),
    };
    let mut lineages: HashMap<usize, Lineage<R::State>> = HashMap::new();
    let sign = if info.maximize { 1.0 } else { -1.0 };
    let mut batch_no = 0;
    while let Some(batch) = method.next(ctx)? {
        if batch.is_empty() {
            break;
        }
        // Admission against the budget, in proposal order.
        let mut admitted: Vec<(Request, f64)> = Vec::new();
        let mut committed = report.spent.max(report.nominal_spent);
        let mut cut = false;
        for req in batch {
            let done = req
                .from
                .and_then(|l| lineages.get(&l))
                .map_or(0, |l| l.rounds);
            let c = ctx.cost(&req.point, done, req.rounds)?;
            if committed + c > spec.budget * (1.0 + 1e-9) {
                cut = true;
                break;
            }
            committed += c;
            admitted.push((req, c));
        }
        if admitted.is_empty() {
            report.stop = "budget reached".into();
            report.truncated = plan.fixed;
            break;
        }
        // Jobs, numbered before anything runs; states read before the batch changes them.
        let mut jobs = Vec::new();
        let mut meta = Vec::new();
        for (req, nominal) in &admitted {
            let source = req.from.and_then(|l| lineages.get(&l));
            for (si, &seed) in spec.seeds.iter().enumerate() {
                let job_no = report.jobs.len() + jobs.len();
                let start = match (source, runner.can_continue()) {
                    (None, _) => Start::Fresh,
                    (Some(l), true) => match l.states.get(si).cloned().flatten() {
                        Some(state) => Start::Continue {
                            state,
                            done: l.rounds,
                        },
                        None => Start::Fresh, // the line failed on this seed: start over
                    },
                    (Some(l), false) => {
                        if Some(req.lineage) == req.from && l.point == req.point {
                            Start::Fresh // a promotion without resume: re-run from round 0
                        } else {
                            return Err(Error::Runner(format!(
                                "{}: a request continues lineage {:?} with another configuration, which needs a runner that continues trials",
                                spec.method.name(),
                                req.from
                            )));
                        }
                    }
                };
                let from_rounds = match &start {
                    Start::Continue { done, .. } => *done,
                    Start::Fresh => 0,
                };
                let rel = PathBuf::from("trials").join(format!(
                    "{job_no:05}-l{}-r{}-s{seed}",
                    req.lineage, req.rounds
                ));
                jobs.push(Job {
                    trial: Trial {
                        point: req.point.clone(),
                        seed,
                    },
                    start,
                    rounds: req.rounds,
                    dir: dir.join(&rel),
                });
                meta.push((job_no, si, from_rounds, *nominal / spec.seeds.len() as f64));
            }
        }
        let dirs: Vec<PathBuf> = jobs.iter().map(|j| j.dir.clone()).collect();
        let total = jobs.len();
        let mut finished = 0;
        let descriptions: Vec<String> = jobs
            .iter()
            .map(|j| {
                format!(
                    "seed {} {} · {} rounds",
                    j.trial.seed,
                    describe(&j.trial.point),
                    j.rounds
                )
            })
            .collect();
        let objective = spec.objective.clone();
        let first_job = report.jobs.len();
        let results = run_jobs(runner, jobs, spec.parallel, &mut |i, out| {
            finished += 1;
            let what = match out {
                Ok(o) => match o.metrics.get(&objective) {
                    Some(v) => format!(
                        "{objective} {} · {} client-epochs",
                        short_float(*v),
                        short_float(o.cost)
                    ),
                    None => format!("no {objective}"),
                },
                Err(e) => format!("failed: {e}"),
            };
            log(&format!(
                "[batch {} · {finished}/{total}] job {} {} → {what}",
                batch_no + 1,
                first_job + i,
                descriptions[i]
            ));
        });
        // Fatal errors stop the search, first in job order.
        for r in results.iter().flatten() {
            if let Err(TrialError::Fatal(m)) = r {
                return Err(Error::Runner(m.clone()));
            }
        }
        let mut outcomes = Vec::new();
        let mut updates: Vec<(usize, Lineage<R::State>)> = Vec::new();
        let mut results = results.into_iter();
        let mut meta_it = meta.into_iter();
        let mut dir_it = dirs.into_iter();
        for (req, _) in admitted {
            let index = report.evaluations.len();
            let mut per_seed = Vec::new();
            let mut states = Vec::new();
            let mut job_ids = Vec::new();
            let mut cost = 0.0;
            for _ in &spec.seeds {
                let (job_no, si, from_rounds, nominal) = meta_it.next().expect("one meta per job");
                let full_dir = dir_it.next().expect("one dir per job");
                let out = results
                    .next()
                    .flatten()
                    .unwrap_or(Err(TrialError::Failed("not run".into())));
                let (metrics, curve, units, job_cost, error, state) = match out {
                    Ok(o) => (o.metrics, o.curve, o.units, o.cost, None, o.state),
                    Err(e) => (
                        Metrics::new(),
                        Vec::new(),
                        Vec::new(),
                        0.0,
                        Some(e.to_string()),
                        None,
                    ),
                };
                let value = if error.is_none() {
                    match metrics.get(&spec.objective) {
                        Some(v) if v.is_finite() => Some(*v),
                        Some(_) => None,
                        None => {
                            return Err(Error::Runner(format!(
                                "the runner returned no metric {:?} (it returned {})",
                                spec.objective,
                                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                            )))
                        }
                    }
                } else {
                    None
                };
                per_seed.push(value);
                states.push(state);
                cost += job_cost;
                report.spent += job_cost;
                report.nominal_spent += nominal;
                job_ids.push(job_no);
                report.jobs.push(JobRecord {
                    job: job_no,
                    evaluation: index,
                    lineage: req.lineage,
                    seed: spec.seeds[si],
                    point: req.point.clone(),
                    from_rounds,
                    rounds: req.rounds,
                    nominal_cost: nominal,
                    cost: job_cost,
                    metrics,
                    curve,
                    units,
                    error,
                    dir: crate::files::relative(&full_dir, dir),
                });
            }
            let objective = if per_seed.iter().all(Option::is_some) {
                let v: Vec<f64> = per_seed.iter().flatten().copied().collect();
                Some(v.iter().sum::<f64>() / v.len() as f64)
            } else {
                None
            };
            let objective_se = (per_seed.len() > 1 && objective.is_some()).then(|| {
                let v: Vec<f64> = per_seed.iter().flatten().copied().collect();
                crate::stats::mean_se(&v).1
            });
            let mut schedule = req
                .from
                .and_then(|l| lineages.get(&l))
                .map_or_else(Vec::new, |l| l.schedule.clone());
            schedule.push((req.rounds, req.point.clone()));
            updates.push((
                req.lineage,
                Lineage {
                    rounds: req.rounds,
                    point: req.point.clone(),
                    states,
                    schedule: schedule.clone(),
                },
            ));
            report.schedules.insert(req.lineage, schedule);
            report.evaluations.push(Evaluation {
                index,
                batch: batch_no,
                lineage: req.lineage,
                from: req.from,
                label: req.label.clone(),
                point: req.point.clone(),
                rounds: req.rounds,
                last: req.last,
                objective,
                objective_se,
                per_seed,
                cost,
                jobs: job_ids,
            });
            outcomes.push(Outcome {
                request: req,
                score: objective.map(|v| sign * v),
            });
        }
        for (l, state) in updates {
            lineages.insert(l, state);
        }
        method.tell(&outcomes);
        batch_no += 1;
        if cut {
            report.stop = if plan.fixed {
                "truncated by the budget".into()
            } else {
                "budget reached".into()
            };
            report.truncated = plan.fixed;
            break;
        }
    }
    report.best = best(&report.evaluations, info.maximize);
    Ok(report)
}

/// Best full-length evaluation (ties: the first).
fn best(evals: &[Evaluation], maximize: bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for e in evals.iter().filter(|e| e.last) {
        if let Some(v) = e.objective {
            let s = if maximize { v } else { -v };
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((e.index, s));
            }
        }
    }
    best.map(|b| b.0)
}
