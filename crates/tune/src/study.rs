//! Studies: variants × seeds × benchmarks from one file, each tuned variant tuned under
//! the same budget on its own seeds, then every variant run on the study's seeds and
//! compared, seed by seed, with a named baseline (docs/tuning.md, "Studies").

use crate::files::{
    check_budget, check_name, check_objective, check_seeds, parse_toml, read, write,
};
use crate::methods::MethodConfig;
use crate::report::{csv_field, csv_num, stand_in_warning};
use crate::search::{plan_search, run_jobs, run_search, Job, SearchReport, SearchSpec, Start};
use crate::space::{describe, overrides, short_float, Point, Space};
use crate::stats::{
    bootstrap_worst, mean_se, paired_t, sign_test, wilcoxon, Interval, WilcoxonMethod,
};
use crate::svg::{render, IntervalChart, IntervalRow, Panel};
use crate::trial::{MetricInfo, Metrics, Trial, TrialError, TrialResult, TrialRunner, UnitScore};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A study file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// Name (default `study`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Seeds every variant is run and compared on (paired by seed).
    pub seeds: Vec<u64>,
    /// The variant every other is compared with (e.g. the tuned uniform rate).
    pub baseline: String,
    /// Metrics reported (default test personalised mean, worst-10 %, global accuracy).
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    /// Runs trained at once (default 1; 0 = one per core). Never changes results.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Tuning settings shared by every tuned variant (the equal-budget rule).
    #[serde(default)]
    pub tuning: Option<StudyTuning>,
    /// The worst-fraction rule.
    #[serde(default)]
    pub worst: WorstRule,
    /// Benchmarks.
    #[serde(rename = "benchmark", default)]
    pub benchmarks: Vec<Benchmark>,
    /// Variants.
    #[serde(rename = "variant", default)]
    pub variants: Vec<Variant>,
}

/// `[tuning]`: one budget and one set of tuning seeds for every tuned variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyTuning {
    /// Budget of every variant's tuning, in client-epochs.
    pub budget: f64,
    /// Seeds the tuning trains on; must not overlap the study's seeds.
    pub seeds: Vec<u64>,
    /// Selection metric (a `val_*` name).
    #[serde(default = "crate::files::default_objective")]
    pub objective: String,
    /// Cut fixed plans over the budget instead of refusing them (default false).
    #[serde(default)]
    pub truncate: bool,
    /// Seed of the methods' own draws.
    #[serde(default)]
    pub seed: u64,
}

/// `[worst]`: when a worst-fraction metric rests on too few clients or samples, it carries
/// a bootstrap interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorstRule {
    /// The metric this applies to (default `test_personalized_worst10`).
    pub metric: String,
    /// Its fraction (default 0.1).
    pub fraction: f64,
    /// Clients the worst fraction must hold (default 10).
    pub min_units: usize,
    /// Test samples each of them must have (default 30).
    pub min_samples: u64,
    /// Bootstrap replicates (default 2000).
    pub bootstrap: usize,
}

impl Default for WorstRule {
    fn default() -> Self {
        Self {
            metric: "test_personalized_worst10".into(),
            fraction: 0.1,
            min_units: 10,
            min_samples: 30,
            bootstrap: 2000,
        }
    }
}

/// A `[[benchmark]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmark {
    /// Name.
    pub name: String,
    /// Experiment file, relative to the study file.
    pub config: PathBuf,
    /// Overrides on it.
    #[serde(default)]
    pub set: Vec<String>,
}

/// A `[[variant]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Name.
    pub name: String,
    /// Overrides applied after the benchmark's.
    #[serde(default)]
    pub set: Vec<String>,
    /// Its tuning, if it is tuned.
    #[serde(default)]
    pub tune: Option<VariantTune>,
}

/// `[variant.tune]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantTune {
    /// Method.
    pub method: MethodConfig,
    /// Space.
    pub space: toml::Table,
    /// Budget; if given it must equal `[tuning] budget` (the equal-budget rule).
    #[serde(default)]
    pub budget: Option<f64>,
}

fn default_name() -> String {
    "study".into()
}
fn default_metrics() -> Vec<String> {
    vec![
        "test_personalized_mean".into(),
        "test_personalized_worst10".into(),
        "test_global_accuracy".into(),
    ]
}
fn one() -> usize {
    1
}

impl StudyFile {
    /// Reads and checks a study file; benchmark paths are made relative to its directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::parse(&read(path)?, path)
    }

    /// Parses study text; `path` names it and anchors relative benchmark paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let mut f: StudyFile = parse_toml(text, &origin)?;
        let at = |k: &str| format!("{origin}: {k}");
        let bad = |k: &str, m: String| Err(Error::Config(format!("{origin}: {k}{m}")));
        check_name(&f.name, &at("name"))?;
        check_seeds(&f.seeds, &at("seeds"))?;
        if f.metrics.is_empty() {
            return bad("metrics", " = []: expected at least one metric".into());
        }
        if f.benchmarks.is_empty() {
            return bad(
                "benchmark",
                ": none; expected at least one [[benchmark]] with a name and a config".into(),
            );
        }
        if f.variants.len() < 2 {
            return bad(
                "variant",
                ": expected at least two [[variant]]s, the baseline and one to compare".into(),
            );
        }
        for (i, b) in f.benchmarks.iter().enumerate() {
            check_name(&b.name, &at(&format!("benchmark[{i}].name")))?;
            if f.benchmarks[..i].iter().any(|o| o.name == b.name) {
                return bad(
                    &format!("benchmark[{i}].name"),
                    format!(" = {:?}: used twice", b.name),
                );
            }
        }
        for (i, v) in f.variants.iter().enumerate() {
            check_name(&v.name, &at(&format!("variant[{i}].name")))?;
            if f.variants[..i].iter().any(|o| o.name == v.name) {
                return bad(
                    &format!("variant[{i}].name"),
                    format!(" = {:?}: used twice", v.name),
                );
            }
        }
        if !f.variants.iter().any(|v| v.name == f.baseline) {
            return bad(
                "baseline",
                format!(
                    " = {:?}: not a variant; expected one of {}",
                    f.baseline,
                    f.variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let w = &f.worst;
        if !(w.fraction > 0.0 && w.fraction <= 1.0) {
            return bad(
                "worst.fraction",
                format!(" = {}: expected a fraction in (0, 1]", w.fraction),
            );
        }
        if w.bootstrap < 100 {
            return bad(
                "worst.bootstrap",
                format!(" = {}: expected at least 100 replicates", w.bootstrap),
            );
        }
        let tuned: Vec<usize> = (0..f.variants.len())
            .filter(|&i| f.variants[i].tune.is_some())
            .collect();
        match (&f.tuning, tuned.is_empty()) {
            (None, false) => {
                return bad(
                    "tuning",
                    format!(
                        ": missing; variant {:?} is tuned, so the study needs [tuning] with the budget every tuned variant gets and the tuning seeds",
                        f.variants[tuned[0]].name
                    ),
                )
            }
            (Some(t), _) => {
                check_budget(t.budget, &at("tuning.budget"))?;
                check_seeds(&t.seeds, &at("tuning.seeds"))?;
                check_objective(&t.objective, &at("tuning.objective"))?;
                if let Some(s) = t.seeds.iter().find(|s| f.seeds.contains(s)) {
                    return bad(
                        "tuning.seeds",
                        format!(": seed {s} is also a study seed; tuning must not see the seeds it is reported on"),
                    );
                }
            }
            (None, true) => {}
        }
        for &i in &tuned {
            let v = &f.variants[i];
            let tune = v.tune.as_ref().expect("tuned");
            let k = format!("variant[{i}] ({}).tune", v.name);
            if let (Some(b), Some(t)) = (tune.budget, &f.tuning) {
                if (b - t.budget).abs() > 1e-9 * t.budget.abs() {
                    return bad(
                        &format!("{k}.budget"),
                        format!(
                            " = {b}: the equal-budget rule gives every tuned variant the study's [tuning] budget ({}); remove it or make it equal",
                            t.budget
                        ),
                    );
                }
            }
            if matches!(tune.method, MethodConfig::Pbt { .. }) {
                return bad(
                    &format!("{k}.method"),
                    ": pbt chooses a schedule, not a configuration, so it cannot be re-run on the study's seeds; use grid, random, halving, hyperband or bo".into(),
                );
            }
            Space::from_table(&tune.space, &at(&format!("{k}.space")))?;
        }
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        for b in &mut f.benchmarks {
            if b.config.is_relative() {
                b.config = dir.join(&b.config);
            }
        }
        Ok(f)
    }
}

/// One run of the study.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Benchmark.
    pub benchmark: String,
    /// Variant.
    pub variant: String,
    /// Seed.
    pub seed: u64,
    /// The configuration chosen by its tuning (empty when untuned).
    pub point: Point,
    /// Final metrics.
    pub metrics: Metrics,
    /// Client-epochs.
    pub cost: f64,
    /// Per-client scores.
    #[serde(skip)]
    pub units: Vec<UnitScore>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its directory, relative to the study's.
    pub dir: PathBuf,
}

/// What a worst-fraction number rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WorstBasis {
    /// Fewest clients in the worst fraction, over the runs compared.
    pub units: usize,
    /// Fewest test samples of a client in it.
    pub min_samples: u64,
    /// Whether the rule holds for every run.
    pub ok: bool,
}

/// One variant against the baseline on one metric of one benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Benchmark.
    pub benchmark: String,
    /// Metric.
    pub metric: String,
    /// Variant.
    pub variant: String,
    /// Seeds paired.
    pub n: usize,
    /// Variant's mean over its runs.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
    /// Mean paired difference (variant − baseline).
    pub diff: f64,
    /// Its standard error.
    pub diff_se: f64,
    /// Paired t statistic.
    pub t: Option<f64>,
    /// Its two-sided p-value.
    pub p_t: Option<f64>,
    /// Wilcoxon signed-rank p-value.
    pub p_wilcoxon: Option<f64>,
    /// How it was computed.
    pub wilcoxon_method: Option<WilcoxonMethod>,
    /// Seeds where the variant is higher.
    pub wins: usize,
    /// Seeds with no difference.
    pub ties: usize,
    /// Seeds where it is lower.
    pub losses: usize,
    /// Sign-test p-value.
    pub p_sign: f64,
    /// For the worst-fraction metric: what it rests on.
    pub basis: Option<WorstBasis>,
    /// For a worst-fraction metric failing the rule: 95 % bootstrap interval of the variant's mean.
    pub bootstrap_mean: Option<Interval>,
    /// … and of the paired difference.
    pub bootstrap_diff: Option<Interval>,
}

/// A variant on a benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct VariantRow {
    /// Benchmark.
    pub benchmark: String,
    /// Variant.
    pub variant: String,
    /// The configuration its tuning chose (`None`: untuned; empty point: tuned but nothing chosen).
    pub chosen: Option<Point>,
    /// Tuning client-epochs spent (0 untuned).
    pub tuning_spent: f64,
    /// Tuning budget (0 untuned).
    pub tuning_budget: f64,
    /// Mean client-epochs of one study run.
    pub run_cost: f64,
    /// Runs made and failed.
    pub runs: usize,
    /// Failed runs.
    pub failed: usize,
    /// Why nothing was run, if so.
    pub note: Option<String>,
}

/// Everything a study produced.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    /// Name.
    pub name: String,
    /// Baseline variant.
    pub baseline: String,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Reported metrics and what they are.
    pub metrics: Vec<(String, MetricInfo)>,
    /// The tuning objective and what it is (when anything is tuned).
    pub objective: Option<(String, MetricInfo)>,
    /// Variant rows.
    pub variants: Vec<VariantRow>,
    /// Every run.
    pub runs: Vec<RunRow>,
    /// Paired differences.
    pub differences: Vec<Difference>,
    /// Warnings every table repeats.
    pub warnings: Vec<String>,
    /// The worst-fraction rule applied.
    pub worst: WorstRule,
}

/// Builds every runner (benchmark-major, then variant) and checks, without training,
/// every metric and every tuning's plan against the budget rule; logs each plan.
pub fn plan_study<R, F>(
    study: &StudyFile,
    make_runner: &F,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<R>, Error>
where
    R: TrialRunner,
    F: Fn(&Benchmark, &Variant) -> Result<R, Error>,
{
    let mut runners = Vec::new();
    for b in &study.benchmarks {
        for v in &study.variants {
            let at =
                |e: String| Error::Config(format!("benchmark {} variant {}: {e}", b.name, v.name));
            let r = make_runner(b, v)?;
            for m in study.metrics.iter().chain([&study.worst.metric]) {
                r.metric(m).map_err(|e| at(format!("metric {m:?}: {e}")))?;
            }
            match (&study.tuning, &v.tune) {
                (Some(t), Some(tune)) => {
                    let plan = plan_search(&tuning_spec(study, t, tune, v)?, &r)
                        .map_err(|e| at(format!("tuning: {e}")))?;
                    log(&format!(
                        "{} · {}: {}; {} of {} client-epochs",
                        b.name,
                        v.name,
                        plan.description,
                        short_float(plan.cost),
                        short_float(t.budget)
                    ));
                }
                _ => log(&format!(
                    "{} · {}: untuned, {} seeds",
                    b.name,
                    v.name,
                    study.seeds.len()
                )),
            }
            runners.push(r);
        }
    }
    Ok(runners)
}

/// Runs a study; `make_runner` builds the runner of a benchmark with a variant's
/// overrides. Tuning outputs go to `dir/tuning/<benchmark>/<variant>/`, runs to
/// `dir/runs/<benchmark>/<variant>/`.
pub fn run_study<R, F>(
    study: &StudyFile,
    make_runner: F,
    dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<StudyReport, Error>
where
    R: TrialRunner,
    F: Fn(&Benchmark, &Variant) -> Result<R, Error>,
{
    let mut report = StudyReport {
        name: study.name.clone(),
        baseline: study.baseline.clone(),
        seeds: study.seeds.clone(),
        metrics: Vec::new(),
        objective: None,
        variants: Vec::new(),
        runs: Vec::new(),
        differences: Vec::new(),
        warnings: Vec::new(),
        worst: study.worst.clone(),
    };
    let runners = plan_study(study, &make_runner, log)?;
    for m in &study.metrics {
        let info = runners[0].metric(m).map_err(Error::Config)?;
        report.metrics.push((m.clone(), info));
    }
    if let Some(t) = &study.tuning {
        if let Some(i) = study.variants.iter().position(|v| v.tune.is_some()) {
            let info = runners[i].metric(&t.objective).map_err(Error::Config)?;
            if let Some(w) = stand_in_warning(&t.objective, &info) {
                report.warnings.push(format!(
                    "{w} (Tuning seeds are disjoint from the reported seeds.)"
                ));
            }
            report.objective = Some((t.objective.clone(), info));
        }
    }
    if study
        .variants
        .iter()
        .find(|v| v.name == study.baseline)
        .is_some_and(|v| v.tune.is_none())
        && study.variants.iter().any(|v| v.tune.is_some())
    {
        report.warnings.push(format!(
            "The baseline {:?} is not tuned while other variants are: the comparison is not at equal budget.",
            study.baseline
        ));
    }
    let mut runners = runners.into_iter();
    for b in &study.benchmarks {
        for v in &study.variants {
            let runner = runners
                .next()
                .expect("one runner per benchmark and variant");
            log(&format!("== benchmark {} · variant {}", b.name, v.name));
            let mut row = VariantRow {
                benchmark: b.name.clone(),
                variant: v.name.clone(),
                chosen: None,
                tuning_spent: 0.0,
                tuning_budget: 0.0,
                run_cost: 0.0,
                runs: 0,
                failed: 0,
                note: None,
            };
            let point = match (&v.tune, &study.tuning) {
                (Some(tune), Some(t)) => {
                    let tdir = dir.join("tuning").join(&b.name).join(&v.name);
                    std::fs::create_dir_all(&tdir).map_err(|e| Error::Io {
                        path: tdir.display().to_string(),
                        source: e,
                    })?;
                    let spec = tuning_spec(study, t, tune, v)?;
                    let r: SearchReport = run_search(&spec, &runner, &tdir, log).map_err(|e| {
                        Error::Config(format!(
                            "benchmark {} variant {}: tuning: {e}",
                            b.name, v.name
                        ))
                    })?;
                    r.write(&tdir, &format!("{} · {} · tuning", b.name, v.name))?;
                    row.tuning_spent = r.spent;
                    row.tuning_budget = t.budget;
                    match r.best_point() {
                        Some(p) => {
                            log(&format!("chosen for {}: {}", v.name, describe(p)));
                            row.chosen = Some(p.clone());
                            Some(p.clone())
                        }
                        None => {
                            row.chosen = Some(Point::new());
                            row.note = Some(
                                "tuning chose nothing (no full-length configuration finished)"
                                    .into(),
                            );
                            None
                        }
                    }
                }
                _ => Some(Point::new()),
            };
            if let Some(point) = point {
                let rdir = dir.join("runs").join(&b.name).join(&v.name);
                let jobs: Vec<(Trial, PathBuf)> = study
                    .seeds
                    .iter()
                    .map(|&seed| {
                        (
                            Trial {
                                point: point.clone(),
                                seed,
                            },
                            rdir.join(format!("s{seed}")),
                        )
                    })
                    .collect();
                let outs = run_all(&runner, &jobs, study.parallel, &study.metrics, log)?;
                for ((trial, run_dir), out) in jobs.into_iter().zip(outs) {
                    let (metrics, cost, units, error) = match out {
                        Ok(o) => (o.metrics, o.cost, o.units, None),
                        Err(e) => (Metrics::new(), 0.0, Vec::new(), Some(e.to_string())),
                    };
                    row.runs += 1;
                    row.failed += usize::from(error.is_some());
                    row.run_cost += cost;
                    report.runs.push(RunRow {
                        benchmark: b.name.clone(),
                        variant: v.name.clone(),
                        seed: trial.seed,
                        point: trial.point,
                        metrics,
                        cost,
                        units,
                        error,
                        dir: crate::files::relative(&run_dir, dir),
                    });
                }
                if row.runs > row.failed {
                    row.run_cost /= (row.runs - row.failed) as f64;
                }
            }
            report.variants.push(row);
        }
    }
    report.differences = differences(study, &report.runs, &report.metrics);
    Ok(report)
}

/// The search a tuned variant runs.
fn tuning_spec(
    study: &StudyFile,
    t: &StudyTuning,
    tune: &VariantTune,
    v: &Variant,
) -> Result<SearchSpec, Error> {
    Ok(SearchSpec {
        space: Space::from_table(&tune.space, &format!("variant {} tune.space", v.name))?,
        method: tune.method.clone(),
        objective: t.objective.clone(),
        seeds: t.seeds.clone(),
        budget: t.budget,
        truncate: t.truncate,
        search_seed: t.seed,
        parallel: study.parallel,
    })
}

/// Runs full-length trials on `parallel` threads; results in order.
fn run_all<R: TrialRunner>(
    runner: &R,
    jobs: &[(Trial, PathBuf)],
    parallel: usize,
    show: &[String],
    log: &mut dyn FnMut(&str),
) -> Result<Vec<TrialResult<R::State>>, Error> {
    let work = jobs
        .iter()
        .map(|(trial, dir)| Job {
            trial: trial.clone(),
            start: Start::Fresh,
            rounds: runner.max_rounds(),
            dir: dir.clone(),
        })
        .collect();
    let results = run_jobs(runner, work, parallel, &mut |i, out| {
        let what = match out {
            Ok(o) => show
                .iter()
                .filter_map(|k| o.metrics.get(k).map(|v| format!("{k} {}", short_float(*v))))
                .collect::<Vec<_>>()
                .join(" · "),
            Err(e) => format!("failed: {e}"),
        };
        log(&format!("seed {} → {what}", jobs[i].0.seed));
    });
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Some(Err(TrialError::Fatal(m))) => return Err(Error::Runner(m)),
            Some(r) => out.push(r),
            None => out.push(Err(TrialError::Failed("not run".into()))),
        }
    }
    Ok(out)
}

/// Worst-fraction basis of one run: the clients in the worst fraction and their fewest samples.
fn basis_of(units: &[UnitScore], rule: &WorstRule) -> (usize, u64) {
    let mut u: Vec<&UnitScore> = units.iter().collect();
    u.sort_by(|a, b| a.value.total_cmp(&b.value).then(a.id.cmp(&b.id)));
    let k = ((u.len() as f64 * rule.fraction).ceil() as usize)
        .clamp(usize::from(!u.is_empty()), u.len());
    (k, u[..k].iter().map(|x| x.samples).min().unwrap_or(0))
}

fn differences(
    study: &StudyFile,
    runs: &[RunRow],
    metrics: &[(String, MetricInfo)],
) -> Vec<Difference> {
    let mut out = Vec::new();
    let find = |b: &str, v: &str, s: u64| {
        runs.iter()
            .find(|r| r.benchmark == b && r.variant == v && r.seed == s && r.error.is_none())
    };
    for b in &study.benchmarks {
        for (m, _) in metrics {
            for v in &study.variants {
                let mut values = Vec::new();
                let mut diffs = Vec::new();
                let mut pairs = Vec::new();
                let mut basis: Option<WorstBasis> = None;
                for &seed in &study.seeds {
                    let Some(run) = find(&b.name, &v.name, seed) else {
                        continue;
                    };
                    let Some(x) = run.metrics.get(m).copied() else {
                        continue;
                    };
                    values.push(x);
                    let base = find(&b.name, &study.baseline, seed);
                    let bx = base.and_then(|r| r.metrics.get(m).copied());
                    if *m == study.worst.metric {
                        for r in std::iter::once(run).chain(base) {
                            let (k, s) = basis_of(&r.units, &study.worst);
                            let ok = k >= study.worst.min_units && s >= study.worst.min_samples;
                            basis = Some(match basis {
                                None => WorstBasis {
                                    units: k,
                                    min_samples: s,
                                    ok,
                                },
                                Some(w) => WorstBasis {
                                    units: w.units.min(k),
                                    min_samples: w.min_samples.min(s),
                                    ok: w.ok && ok,
                                },
                            });
                        }
                    }
                    if let (Some(bx), Some(base)) = (bx, base) {
                        diffs.push(x - bx);
                        pairs.push((run.units.clone(), base.units.clone()));
                    }
                }
                if values.is_empty() {
                    continue;
                }
                let (mean, se) = mean_se(&values);
                let t = paired_t(&diffs);
                let w = wilcoxon(&diffs);
                let s = sign_test(&diffs);
                let (diff, diff_se) = mean_se(&diffs);
                let needs_bootstrap = basis.is_some_and(|w| !w.ok);
                let seed = 0x5eed ^ (out.len() as u64);
                let bootstrap_diff = (needs_bootstrap && v.name != study.baseline)
                    .then(|| {
                        let p: Vec<_> = pairs
                            .iter()
                            .map(|(a, b)| (a.clone(), Some(b.clone())))
                            .collect();
                        bootstrap_worst(&p, study.worst.fraction, study.worst.bootstrap, seed)
                    })
                    .flatten();
                let bootstrap_mean = needs_bootstrap
                    .then(|| {
                        let p: Vec<_> = runs
                            .iter()
                            .filter(|r| {
                                r.benchmark == b.name && r.variant == v.name && r.error.is_none()
                            })
                            .map(|r| (r.units.clone(), None))
                            .collect();
                        bootstrap_worst(&p, study.worst.fraction, study.worst.bootstrap, seed + 1)
                    })
                    .flatten();
                out.push(Difference {
                    benchmark: b.name.clone(),
                    metric: m.clone(),
                    variant: v.name.clone(),
                    n: diffs.len(),
                    mean,
                    se,
                    diff,
                    diff_se,
                    t: t.map(|t| t.t),
                    p_t: t.map(|t| t.p),
                    p_wilcoxon: w.map(|w| w.p),
                    wilcoxon_method: w.map(|w| w.method),
                    wins: s.wins,
                    ties: s.ties,
                    losses: s.losses,
                    p_sign: s.p,
                    basis,
                    bootstrap_mean,
                    bootstrap_diff,
                });
            }
        }
    }
    out
}

fn p_str(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => "<1e-4".into(),
        Some(p) => format!("{p:.4}"),
        None => "–".into(),
    }
}

fn num(v: f64, scale: f64) -> String {
    if v.is_finite() {
        format!("{:.2}", v * scale)
    } else {
        "–".into()
    }
}

impl StudyReport {
    /// Whether a metric is a fraction shown in points (×100).
    fn scale(&self, metric: &str) -> f64 {
        if metric.contains("accuracy")
            || metric.contains("mean")
            || metric.contains("worst")
            || metric.contains("weighted")
        {
            100.0
        } else {
            1.0
        }
    }

    /// The tables as markdown (also printed on the console).
    pub fn markdown(&self) -> String {
        let mut s = format!("# Study {}\n\n", self.name);
        let _ = writeln!(
            s,
            "Seeds {:?} (paired by seed). Baseline: **{}**. Differences are variant − baseline; accuracies in points (×100).\n",
            self.seeds, self.baseline
        );
        for w in &self.warnings {
            let _ = writeln!(s, "> **{w}**\n");
        }
        for (m, info) in &self.metrics {
            if let Some(w) = stand_in_warning(m, info).filter(|_| m.starts_with("val_")) {
                let _ = writeln!(s, "> **{w}**\n");
            }
        }
        let benches: Vec<&String> = {
            let mut v: Vec<&String> = self.variants.iter().map(|r| &r.benchmark).collect();
            v.dedup();
            v
        };
        for b in benches {
            let _ = writeln!(s, "## {b}\n");
            let _ = writeln!(s, "| variant | configuration | tuning spent / budget (client-epochs) | client-epochs per run | runs (failed) |");
            let _ = writeln!(s, "|---|---|---|---|---|");
            for r in self.variants.iter().filter(|r| &r.benchmark == b) {
                let conf = match (&r.chosen, &r.note) {
                    (_, Some(n)) => n.clone(),
                    (Some(p), None) => format!("tuned: {}", describe(p)),
                    (None, None) => "untuned".into(),
                };
                let tuning = if r.tuning_budget > 0.0 {
                    format!(
                        "{} / {}",
                        short_float(r.tuning_spent),
                        short_float(r.tuning_budget)
                    )
                } else {
                    "0 (untuned)".into()
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} ({}) |",
                    r.variant,
                    conf,
                    tuning,
                    short_float(r.run_cost),
                    r.runs,
                    r.failed
                );
            }
            for (m, info) in &self.metrics {
                let scale = self.scale(m);
                let better = if info.maximize {
                    "higher is better"
                } else {
                    "lower is better"
                };
                let _ = writeln!(s, "\n### {b} · {m} ({better})\n");
                let worst = *m == self.worst.metric;
                let extra = if worst {
                    " basis | 95 % bootstrap of mean / Δ |"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "| variant | mean ± se | Δ vs {} ± se | \\|Δ\\| > 2 se | t | p (t) | p (Wilcoxon) | p (sign) | wins/ties/losses | n |{extra}",
                    self.baseline
                );
                let _ = writeln!(
                    s,
                    "|---|---|---|---|---|---|---|---|---|---|{}",
                    if worst { "---|---|" } else { "" }
                );
                for d in self
                    .differences
                    .iter()
                    .filter(|d| &d.benchmark == b && &d.metric == m)
                {
                    let base = d.variant == self.baseline;
                    let delta = if base {
                        "(baseline)".into()
                    } else {
                        format!("{} ± {}", signed(d.diff * scale), num(d.diff_se, scale))
                    };
                    let beyond = if base || !d.diff_se.is_finite() {
                        "–".to_string()
                    } else if d.diff.abs() > 2.0 * d.diff_se {
                        match d.bootstrap_diff {
                            Some(i) if i.low <= 0.0 && i.high >= 0.0 => {
                                "yes, but the bootstrap interval holds 0".into()
                            }
                            _ => "yes".into(),
                        }
                    } else {
                        "no".into()
                    };
                    let record = if base {
                        "–".to_string()
                    } else {
                        format!("{}/{}/{}", d.wins, d.ties, d.losses)
                    };
                    let mut line = format!(
                        "| {} | {} ± {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        d.variant,
                        num(d.mean, scale),
                        num(d.se, scale),
                        delta,
                        beyond,
                        if base {
                            "–".into()
                        } else {
                            d.t.map_or("–".into(), |t| format!("{t:.2}"))
                        },
                        if base { "–".into() } else { p_str(d.p_t) },
                        if base {
                            "–".into()
                        } else {
                            p_str(d.p_wilcoxon)
                        },
                        if base {
                            "–".into()
                        } else {
                            p_str(Some(d.p_sign))
                        },
                        record,
                        d.n
                    );
                    if worst {
                        let basis = d.basis.map_or(
                            "no per-client data: rule not checked".to_string(),
                            |w| {
                                format!(
                                    "{} clients, ≥ {} samples{}",
                                    w.units,
                                    w.min_samples,
                                    if w.ok { "" } else { " (below the rule)" }
                                )
                            },
                        );
                        let iv = |i: Option<Interval>| {
                            i.map_or("–".to_string(), |i| {
                                format!("[{}, {}]", num(i.low, scale), num(i.high, scale))
                            })
                        };
                        let boot = if d.basis.is_some_and(|w| !w.ok) {
                            format!(
                                "{} / {}",
                                iv(d.bootstrap_mean),
                                if base {
                                    "–".into()
                                } else {
                                    iv(d.bootstrap_diff)
                                }
                            )
                        } else {
                            "not needed".into()
                        };
                        let _ = write!(line, " {basis} | {boot} |");
                    }
                    let _ = writeln!(s, "{line}");
                }
            }
            if self.metrics.iter().any(|(m, _)| *m == self.worst.metric) {
                let _ = writeln!(
                    s,
                    "\n{} rests on the worst {} % of clients; the rule asks for at least {} clients with at least {} test samples each. Where a run falls below it, the row carries a two-level bootstrap interval ({} replicates: seeds, then clients within a seed; paired when both sides share the clients).",
                    self.worst.metric,
                    short_float(self.worst.fraction * 100.0),
                    self.worst.min_units,
                    self.worst.min_samples,
                    self.worst.bootstrap
                );
            }
            let _ = writeln!(s);
        }
        s.push_str(
            "p (t): paired t-test; p (Wilcoxon): signed-rank test (exact, or every sign flip, or normal with tie correction, as scipy.stats.wilcoxon); p (sign): binomial sign test. Wins/ties/losses count seeds where the variant is above/equal to/below the baseline.\n",
        );
        s
    }

    /// Writes `results.csv`, `differences.csv`, `results.md`, `summary.json` and `plot.svg`.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let metric_names: Vec<&String> = {
            let mut v: Vec<&String> = self.runs.iter().flat_map(|r| r.metrics.keys()).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut r = format!(
            "benchmark,variant,seed,configuration,{},cost,error,dir\n",
            metric_names
                .iter()
                .map(|m| csv_field(m))
                .collect::<Vec<_>>()
                .join(",")
        );
        for run in &self.runs {
            let _ = writeln!(
                r,
                "{},{},{},{},{},{},{},{}",
                csv_field(&run.benchmark),
                csv_field(&run.variant),
                run.seed,
                csv_field(&overrides(&run.point).join(" ")),
                metric_names
                    .iter()
                    .map(|m| csv_num(run.metrics.get(*m).copied()))
                    .collect::<Vec<_>>()
                    .join(","),
                run.cost,
                csv_field(run.error.as_deref().unwrap_or("")),
                csv_field(&run.dir.display().to_string())
            );
        }
        write(&dir.join("results.csv"), &r)?;
        let mut d = String::from("benchmark,metric,variant,baseline,n,mean,se,diff,diff_se,t,p_t,p_wilcoxon,wilcoxon_method,wins,ties,losses,p_sign,worst_units,worst_min_samples,worst_rule_ok,bootstrap_mean_low,bootstrap_mean_high,bootstrap_diff_low,bootstrap_diff_high\n");
        for x in &self.differences {
            let _ = writeln!(
                d,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&x.benchmark),
                csv_field(&x.metric),
                csv_field(&x.variant),
                csv_field(&self.baseline),
                x.n,
                csv_num(Some(x.mean)),
                csv_num(Some(x.se)),
                csv_num(Some(x.diff)),
                csv_num(Some(x.diff_se)),
                csv_num(x.t),
                csv_num(x.p_t),
                csv_num(x.p_wilcoxon),
                x.wilcoxon_method
                    .map_or(String::new(), |m| format!("{m:?}").to_lowercase()),
                x.wins,
                x.ties,
                x.losses,
                csv_num(Some(x.p_sign)),
                x.basis.map_or(String::new(), |b| b.units.to_string()),
                x.basis.map_or(String::new(), |b| b.min_samples.to_string()),
                x.basis.map_or(String::new(), |b| b.ok.to_string()),
                csv_num(x.bootstrap_mean.map(|i| i.low)),
                csv_num(x.bootstrap_mean.map(|i| i.high)),
                csv_num(x.bootstrap_diff.map(|i| i.low)),
                csv_num(x.bootstrap_diff.map(|i| i.high)),
            );
        }
        write(&dir.join("differences.csv"), &d)?;
        write(&dir.join("results.md"), &self.markdown())?;
        write(
            &dir.join("summary.json"),
            &serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?,
        )?;
        write(&dir.join("plot.svg"), &self.plot())?;
        Ok(())
    }

    /// One interval panel per benchmark and metric: Δ ± 2 se per variant, with the
    /// bootstrap interval as a dashed box where the worst-fraction rule asks for one.
    pub fn plot(&self) -> String {
        let mut panels = Vec::new();
        let mut benches: Vec<&String> = self.variants.iter().map(|r| &r.benchmark).collect();
        benches.dedup();
        for b in benches {
            for (m, _) in &self.metrics {
                let scale = self.scale(m);
                let rows: Vec<IntervalRow> = self
                    .differences
                    .iter()
                    .filter(|d| &d.benchmark == b && &d.metric == m && d.variant != self.baseline)
                    .map(|d| IntervalRow {
                        label: d.variant.clone(),
                        estimate: d.diff * scale,
                        whisker: (
                            (d.diff - 2.0 * d.diff_se) * scale,
                            (d.diff + 2.0 * d.diff_se) * scale,
                        ),
                        alternative: d.bootstrap_diff.map(|i| (i.low * scale, i.high * scale)),
                    })
                    .collect();
                let boxed = rows.iter().any(|r| r.alternative.is_some());
                panels.push(Panel::Intervals(IntervalChart {
                    title: format!("{b} · {m}"),
                    x_label: format!(
                        "Δ vs {} (± 2 se{}{})",
                        self.baseline,
                        if scale > 1.0 { ", points" } else { "" },
                        if boxed {
                            "; dashed: 95 % bootstrap"
                        } else {
                            ""
                        }
                    ),
                    rows,
                }));
            }
        }
        render(&panels, 2)
    }
}

fn signed(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.2}")
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StudyFile, Error> {
        StudyFile::parse(text, Path::new("dir/study.toml"))
    }

    const BASE: &str = "seeds = [0, 1]\nbaseline = \"uniform\"\n[tuning]\nbudget = 100\nseeds = [10]\n[[benchmark]]\nname = \"syn\"\nconfig = \"syn.toml\"\n[[variant]]\nname = \"uniform\"\n[variant.tune]\nmethod = { name = \"grid\" }\nspace = { \"client.lr\" = { log = [0.01, 0.1], grid = 2 } }\n[[variant]]\nname = \"other\"\nset = [\"policy.name=by-data-size\"]\n";

    #[test]
    fn a_study_file_parses_and_paths_are_relative_to_it() {
        let s = parse(BASE).unwrap();
        assert_eq!(s.benchmarks[0].config, Path::new("dir/syn.toml"));
        assert_eq!(s.metrics.len(), 3);
        assert_eq!(s.worst.min_units, 10);
    }

    #[test]
    fn equal_budget_and_fresh_seed_rules_are_enforced() {
        let e = parse(&BASE.replace("space = {", "budget = 200\nspace = {"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("variant[0] (uniform).tune.budget = 200: the equal-budget rule gives every tuned variant the study's [tuning] budget (100)"), "{e}");
        let e = parse(&BASE.replace("seeds = [10]", "seeds = [1]"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tuning.seeds: seed 1 is also a study seed"),
            "{e}"
        );
        let e = parse(&BASE.replace("baseline = \"uniform\"", "baseline = \"uniforn\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("baseline = \"uniforn\": not a variant; expected one of uniform, other"),
            "{e}"
        );
        let e = parse(&BASE.replace("[tuning]\nbudget = 100\nseeds = [10]\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tuning: missing; variant \"uniform\" is tuned"),
            "{e}"
        );
        let e = parse(&BASE.replace("{ name = \"grid\" }", "{ name = \"pbt\" }"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pbt chooses a schedule"), "{e}");
        let e = parse(&BASE.replace(
            "[tuning]\n",
            "[tuning]\nobjective = \"test_personalized_mean\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("tuning.objective = \"test_personalized_mean\": selection must be on validation data"), "{e}");
    }

    #[test]
    fn worst_basis_counts_the_worst_clients_and_their_fewest_samples() {
        let units: Vec<UnitScore> = (0..30)
            .map(|i| UnitScore {
                id: i,
                value: i as f64,
                samples: 100 - i,
            })
            .collect();
        let (k, s) = basis_of(&units, &WorstRule::default());
        assert_eq!((k, s), (3, 98));
    }
}
