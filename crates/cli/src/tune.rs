//! `fedpace tune SPACE.toml`: a hyper-parameter search over `fedpace run` trials, and the
//! [`TrialRunner`] the search and `fedpace study` use (docs/tuning.md).
//!
//! A trial is the base experiment with the search file's and the point's `--set`
//! overrides, a seed and a number of rounds, run through `CliRunner::execute` — the one
//! call into the experiment runner — into its own run directory, whose `summary.json`,
//! `metrics.jsonl` and `clients.csv` give the metrics, the per-round curve, the cost in
//! client-epochs and the per-client scores.
//!
//! The `val_*` metrics are read from the validation splits when the experiment has them
//! (`data.validation_fraction > 0`, docs/learned-rates.md); without them they are the
//! test-split numbers and say so ([`MetricSource::StandIn`]).
//!
//! For the methods that continue trials (halving, Hyperband, PBT) a trial writes a
//! checkpoint after its last round, and a continued trial starts from a copy of its
//! source's run directory and checkpoint, with the new point's values of the searched keys
//! (docs/tuning.md, "Continuing a trial"; docs/checkpoints.md).

use crate::runner::{self, UsageError};
use anyhow::Result;
use fedpace_experiment::{Experiment, ExperimentConfig};
use fedpace_tune::files::{self, TuneFile};
use fedpace_tune::trial::{
    MetricInfo, MetricSource, RoundMetrics, Trial, TrialError, TrialOutput, TrialRunner, UnitScore,
};
use fedpace_tune::{plan_search, run_search, space};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The metrics a trial reports: (name, higher is better, key in `summary.json`, key in a
/// `metrics.jsonl` evaluation, what it is). The global ones come from the central
/// evaluation when there is one, as `summary.json`'s do.
const METRICS: [(&str, bool, &str, &str, &str); 6] = [
    (
        "personalized_mean",
        true,
        "personalized.mean_accuracy",
        "personalized_mean_accuracy",
        "personalised mean accuracy over clients",
    ),
    (
        "personalized_worst10",
        true,
        "personalized.worst10_accuracy",
        "personalized_worst10_accuracy",
        "mean personalised accuracy of the worst 10 % of clients",
    ),
    (
        "personalized_weighted",
        true,
        "personalized.weighted_accuracy",
        "personalized_weighted_accuracy",
        "sample-weighted personalised accuracy",
    ),
    (
        "personalized_best10",
        true,
        "personalized.best10_accuracy",
        "personalized_best10_accuracy",
        "mean personalised accuracy of the best 10 % of clients",
    ),
    (
        "global_accuracy",
        true,
        "global.accuracy",
        "global_accuracy",
        "global-model accuracy",
    ),
    (
        "global_loss",
        false,
        "global.loss",
        "global_loss",
        "global-model loss",
    ),
];

/// The metrics of one split's evaluation (a `metrics.jsonl` `eval` object or its
/// `validation` object): the global ones from the central evaluation when there is one,
/// as `summary.json`'s are.
fn split_metrics(e: &serde_json::Value) -> BTreeMap<&'static str, f64> {
    let central = e["central"].as_object().map(|c| {
        let count = c["count"].as_f64().unwrap_or(0.0).max(1.0);
        let get = |k: &str| c[k].as_f64().unwrap_or(f64::NAN) / count;
        (get("correct"), get("loss_sum"))
    });
    METRICS
        .iter()
        .map(|&(name, _, _, key, _)| {
            let v = match (name, central) {
                ("global_accuracy", Some((acc, _))) => acc,
                ("global_loss", Some((_, loss))) => loss,
                _ => e[key].as_f64().unwrap_or(f64::NAN),
            };
            (name, v)
        })
        .collect()
}

/// `test_X` from `test` and `val_X` from `validation` (the test numbers again when the
/// run has no validation splits: the stand-in).
fn both(
    test: &BTreeMap<&'static str, f64>,
    validation: Option<&BTreeMap<&'static str, f64>>,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (name, v) in test {
        m.insert(format!("test_{name}"), *v);
        let val = validation.map_or(*v, |x| x.get(name).copied().unwrap_or(f64::NAN));
        m.insert(format!("val_{name}"), val);
    }
    m
}

/// The pool size and the training-set sizes of at most 2000 of its clients (a
/// deterministic stride), for the nominal cost.
struct PoolSizes {
    clients: usize,
    train: Vec<usize>,
}

/// Trials of one base experiment with fixed overrides.
pub struct CliRunner {
    text: String,
    origin: String,
    fixed: Vec<String>,
    base: ExperimentConfig,
    threads: Option<usize>,
    /// Reuse a finished run found in a trial's directory (`--resume`).
    resume: bool,
    /// Trials end with a checkpoint and can be continued ([`TrialRunner::resume`]).
    continues: bool,
    /// Training-set sizes per (data config, seed), for the nominal cost.
    sizes: Mutex<HashMap<String, Arc<PoolSizes>>>,
}

impl CliRunner {
    /// The experiment in `path` with `fixed` overrides; `threads` overrides each trial's
    /// `threads` (clients trained at once). Errors name the file and key.
    pub fn new(
        path: &Path,
        fixed: Vec<String>,
        threads: Option<usize>,
    ) -> Result<Self, fedpace_experiment::Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            fedpace_experiment::Error::Config(format!("{}: cannot read: {e}", path.display()))
        })?;
        let origin = path.display().to_string();
        let base = ExperimentConfig::parse(&text, &origin, &fixed)?;
        Ok(Self {
            text,
            origin,
            fixed,
            base,
            threads,
            resume: false,
            continues: false,
            sizes: Mutex::new(HashMap::new()),
        })
    }

    /// With `resume`, a trial whose directory already holds a finished run of the same
    /// configuration (`summary.json` of a complete, uninterrupted run of as many rounds,
    /// and a `config.toml` equal to the trial's but for `threads` and the other keys
    /// `fedpace resume` lets differ) is read back instead of trained again; any other
    /// content of the directory (an interrupted run) is replaced.
    pub fn resuming(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// With `continues`, every trial writes a checkpoint after its last round, and a
    /// trial can be continued from it with another point ([`TrialRunner::resume`]): for
    /// the methods that continue trials (halving, Hyperband, PBT). The checkpoints are
    /// removed when the search ends ([`remove_checkpoints`]).
    pub fn continuing(mut self, continues: bool) -> Self {
        self.continues = continues;
        self
    }

    /// A trial's configuration, ending with a checkpoint when trials are continued.
    fn trial_config(
        &self,
        trial: &Trial,
        rounds: u32,
    ) -> Result<ExperimentConfig, fedpace_experiment::Error> {
        let mut cfg = self.config(trial, Some(rounds))?;
        if self.continues {
            cfg.checkpoint.every = Some(rounds);
        }
        Ok(cfg)
    }

    /// The trial's state for [`TrialRunner::resume`]: its run directory, when it ended
    /// with a checkpoint.
    fn state_of(&self, dir: &Path) -> Option<PathBuf> {
        (self.continues && dir.join(fedpace_core::checkpoint::FILE_NAME).is_file())
            .then(|| dir.to_path_buf())
    }

    /// Runs `cfg` into `dir` (continuing from `resume`) and returns its `summary.json`,
    /// its errors as trial errors: the one call into the experiment library.
    fn execute(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        resume: Option<fedpace_core::checkpoint::Loaded>,
    ) -> Result<serde_json::Value, TrialError> {
        let label = dir
            .file_name()
            .map_or_else(|| cfg.name.clone(), |n| n.to_string_lossy().into_owned());
        let run = || -> Result<serde_json::Value> {
            let prepared = Experiment::from_config(cfg.clone())?.prepare()?;
            runner::execute_from(prepared, dir, &label, resume)
        };
        run().map_err(|e| {
            if e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<fedpace_experiment::Error>()
                    .is_some_and(|e| e.is_usage())
            {
                TrialError::Fatal(format!("{e}"))
            } else {
                TrialError::Failed(format!("{e:#}"))
            }
        })
    }

    /// With `--resume`, a finished trial of `cfg` in `dir` read back (rounds after `from`
    /// charged); otherwise `None`, and whatever an interrupted run left in `dir` removed.
    fn read_back_or_clear(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        from: u32,
    ) -> Result<Option<TrialOutput<PathBuf>>, TrialError> {
        if self.resume {
            if let Some(summary) = self.finished_trial(cfg, dir) {
                return self
                    .read_outputs(cfg, &summary, dir, from)
                    .map(Some)
                    .map_err(TrialError::Failed);
            }
        }
        if dir.exists() {
            fedpace_experiment::files::claim_out_dir(dir, true, "trial directory")
                .map_err(|e| TrialError::Fatal(e.to_string()))?;
        }
        Ok(None)
    }

    /// The `summary.json` of a finished run of `cfg` in `dir`, or `None`; a trial to be
    /// continued must also still have its checkpoint.
    fn finished_trial(&self, cfg: &ExperimentConfig, dir: &Path) -> Option<serde_json::Value> {
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()?;
        let complete = summary.get("interrupted") == Some(&serde_json::json!(false))
            && summary.get("rounds") == Some(&serde_json::json!(cfg.rounds))
            && summary.get("rounds_completed") == Some(&serde_json::json!(cfg.rounds));
        let saved = std::fs::read_to_string(dir.join("config.toml")).ok()?;
        let same = matches!(
            fedpace_experiment::checkpoint::config_difference(&saved, &cfg.to_toml()),
            Ok(None)
        );
        let resumable = !self.continues || self.state_of(dir).is_some();
        (complete && same && resumable).then_some(summary)
    }

    /// The configuration of a trial.
    pub fn config(
        &self,
        trial: &Trial,
        rounds: Option<u32>,
    ) -> Result<ExperimentConfig, fedpace_experiment::Error> {
        let mut o = self.fixed.clone();
        o.extend(space::overrides(&trial.point));
        o.push(format!("seed={}", trial.seed));
        if let Some(r) = rounds {
            o.push(format!("rounds={r}"));
        }
        let mut cfg = ExperimentConfig::parse(&self.text, &self.origin, &o)?;
        if let Some(t) = self.threads {
            cfg.threads = t;
        }
        Ok(cfg)
    }

    /// Whether the trials' clients have validation splits (`data.validation_fraction > 0`
    /// in the base experiment), so that `val_*` is read from them.
    fn has_validation(&self) -> bool {
        self.base.data.effective_validation_fraction() > 0.0
    }

    /// Pool sizes for a config's data and seed, cached.
    fn train_sizes(&self, cfg: &ExperimentConfig) -> Result<Arc<PoolSizes>, String> {
        let key = format!(
            "{}|{}",
            serde_json::to_string(&cfg.data).unwrap_or_default(),
            cfg.seed
        );
        if let Some(s) = self.sizes.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(s);
        }
        let fed = fedpace_data::build(
            &cfg.data,
            cfg.seed,
            &runner::data_dir(cfg.data_dir.as_deref()),
        )
        .map_err(|e| e.to_string())?;
        let n = fed.data.num_clients();
        let sizes: Vec<usize> = (0..n)
            .step_by(n.div_ceil(2000).max(1))
            .map(|i| fed.data.train_len(i))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let entry = Arc::new(PoolSizes {
            clients: n,
            train: sizes,
        });
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(key, entry.clone());
        }
        Ok(entry)
    }

    /// Reads a finished run directory into a trial output.
    /// Rounds up to `from` (a continued trial's source's) are neither charged nor in
    /// the curve.
    fn read_outputs(
        &self,
        cfg: &ExperimentConfig,
        summary: &serde_json::Value,
        dir: &Path,
        from: u32,
    ) -> Result<TrialOutput<PathBuf>, String> {
        let from_summary = |root: &serde_json::Value| -> BTreeMap<&'static str, f64> {
            METRICS
                .iter()
                .map(|&(name, _, path, _, _)| {
                    let v = path.split('.').fold(root, |v, k| &v[k]);
                    (name, v.as_f64().unwrap_or(f64::NAN))
                })
                .collect()
        };
        let validation = self
            .has_validation()
            .then(|| from_summary(&summary["validation"]));
        let metrics = both(&from_summary(summary), validation.as_ref());
        let batch = cfg.client.batch_size.max(1) as u64;
        let text = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .map_err(|e| format!("{}: {e}", dir.join("metrics.jsonl").display()))?;
        let mut cost = 0.0;
        let mut curve = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("metrics.jsonl: {e}"))?;
            if v["round"].as_u64().unwrap_or(0) <= u64::from(from) {
                continue;
            }
            for c in v["clients"].as_array().into_iter().flatten() {
                if let (Some(steps), Some(n)) = (c["steps"].as_u64(), c["num_examples"].as_u64()) {
                    cost += steps as f64 / n.div_ceil(batch).max(1) as f64;
                }
            }
            let e = &v["eval"];
            if e.is_object() {
                let validation = self
                    .has_validation()
                    .then(|| split_metrics(&e["validation"]));
                let m = both(&split_metrics(e), validation.as_ref());
                curve.push(RoundMetrics {
                    round: v["round"].as_u64().unwrap_or(0) as u32,
                    cost,
                    metrics: m,
                });
            }
        }
        Ok(TrialOutput {
            metrics,
            cost,
            curve,
            units: read_units(cfg, dir)?,
            state: self.state_of(dir),
        })
    }
}

/// Per-client personalised accuracy and test samples from `clients.csv`.
fn read_units(cfg: &ExperimentConfig, dir: &Path) -> Result<Vec<UnitScore>, String> {
    let path = dir.join("clients.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{}: no column {name}", path.display()))
    };
    let (id, tests, acc) = (
        col("id")?,
        col("test_samples")?,
        col("personalized_accuracy")?,
    );
    let cap = cfg.eval.max_test_samples.map_or(u64::MAX, u64::from);
    // The device column is free text: read `id` from the front, the others from the end.
    let from_end = |c: usize| header.len() - c;
    let (tests, acc) = (from_end(tests), from_end(acc));
    let mut units = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < header.len() {
            continue;
        }
        let (i, t, a) = (f[id], f[f.len() - tests], f[f.len() - acc]);
        let (Ok(i), Ok(t), Ok(a)) = (i.parse::<u64>(), t.parse::<u64>(), a.parse::<f64>()) else {
            continue; // a client that was not evaluated (no test split) has no accuracy
        };
        units.push(UnitScore {
            id: i,
            value: a,
            samples: t.min(cap),
        });
    }
    Ok(units)
}

impl TrialRunner for CliRunner {
    /// The run directory of the trial to continue from (its checkpoint and files).
    type State = PathBuf;

    fn max_rounds(&self) -> u32 {
        self.base.rounds
    }

    fn metric(&self, name: &str) -> Result<MetricInfo, String> {
        let known = || {
            METRICS
                .iter()
                .flat_map(|m| [format!("val_{}", m.0), format!("test_{}", m.0)])
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((split, rest)) = name.split_once('_') else {
            return Err(format!("unknown metric {name:?}; known: {}", known()));
        };
        let Some(&(_, maximize, _, _, what)) = METRICS.iter().find(|m| m.0 == rest) else {
            return Err(format!("unknown metric {name:?}; known: {}", known()));
        };
        let on = if rest.starts_with("global") {
            "on the source's held-out test set, or the clients' test splits pooled"
        } else {
            "on the clients' test splits"
        };
        match split {
            "val" if self.has_validation() => Ok(MetricInfo {
                maximize,
                source: MetricSource::Validation,
            }),
            "val" => Ok(MetricInfo {
                maximize,
                source: MetricSource::StandIn {
                    actual: format!(
                        "the {what} {on} (the experiment has no validation splits: set \
                         data.validation_fraction)"
                    ),
                },
            }),
            "test" => Ok(MetricInfo {
                maximize,
                source: MetricSource::Test,
            }),
            _ => Err(format!("unknown metric {name:?}; known: {}", known())),
        }
    }

    fn check(&self, trial: &Trial) -> Result<(), String> {
        for key in ["seed", "rounds"] {
            if trial.point.contains_key(key) {
                return Err(format!(
                    "{key}: set by the search (`seeds`, and the method's rungs), not a searched key"
                ));
            }
        }
        self.config(trial, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Clients per round × their mean local epochs (steps / ⌈n_k / B⌉) under uniform
    /// sampling. Policies that change a client's work, stragglers and failures make the
    /// reported cost differ; the budget is charged what was reported.
    fn round_cost(&self, trial: &Trial) -> Result<f64, String> {
        let cfg = self.config(trial, None).map_err(|e| e.to_string())?;
        let pool = self.train_sizes(&cfg)?;
        let groups: Vec<String> = cfg.client.group_lr.keys().cloned().collect();
        let plan = cfg.base_plan(&groups)?;
        let batch = cfg.client.batch_size.max(1) as usize;
        let epochs = pool
            .train
            .iter()
            .map(|&n| plan.steps_for(n) as f64 / n.div_ceil(batch).max(1) as f64)
            .sum::<f64>()
            / pool.train.len().max(1) as f64;
        let clients = match &cfg.strategy.algorithm {
            fedpace_algos::AlgorithmConfig::Fedbuff(b) => b.buffer_size,
            _ if cfg.strategy.is_async() => 1,
            _ => cfg.strategy.round.sampling().per_round(pool.clients),
        };
        Ok(clients as f64 * epochs)
    }

    fn run(
        &self,
        trial: &Trial,
        rounds: u32,
        dir: &Path,
    ) -> Result<TrialOutput<PathBuf>, TrialError> {
        let cfg = self
            .trial_config(trial, rounds)
            .map_err(|e| TrialError::Fatal(e.to_string()))?;
        if let Some(out) = self.read_back_or_clear(&cfg, dir, 0)? {
            return Ok(out);
        }
        let summary = self.execute(&cfg, dir, None)?;
        self.read_outputs(&cfg, &summary, dir, 0)
            .map_err(TrialError::Failed)
    }

    fn can_continue(&self) -> bool {
        self.continues
    }

    /// Continues the trial whose run directory is `state` (`done` rounds, ended with a
    /// checkpoint) with `trial`'s point until `rounds` rounds: `dir` starts as a copy of
    /// that directory, `config.toml` becomes the new point's, and the run resumes from
    /// the checkpoint ([`fedpace_experiment::checkpoint`]). Only the searched keys may
    /// differ from the configuration the checkpoint was written with; the new rounds
    /// alone are charged.
    fn resume(
        &self,
        trial: &Trial,
        state: &PathBuf,
        done: u32,
        rounds: u32,
        dir: &Path,
    ) -> Result<TrialOutput<PathBuf>, TrialError> {
        let cfg = self
            .trial_config(trial, rounds)
            .map_err(|e| TrialError::Fatal(e.to_string()))?;
        if let Some(out) = self.read_back_or_clear(&cfg, dir, done)? {
            return Ok(out);
        }
        copy_run_dir(state, dir).map_err(TrialError::Failed)?;
        let loaded = fedpace_experiment::checkpoint::load(dir)
            .map_err(|e| TrialError::Failed(e.to_string()))?;
        if loaded.meta.round != done {
            return Err(TrialError::Failed(format!(
                "{}: the checkpoint is at round {}, the trial continued from round {done}",
                state.display(),
                loaded.meta.round
            )));
        }
        let searched: Vec<String> = trial.point.keys().cloned().collect();
        let difference = fedpace_experiment::checkpoint::config_difference_except(
            &loaded.meta.config,
            &cfg.to_toml(),
            &searched,
        )
        .map_err(|e| TrialError::Failed(e.to_string()))?;
        if let Some(d) = difference {
            return Err(TrialError::Fatal(format!(
                "{}: continuing it: {d}; only the searched keys may change",
                state.display()
            )));
        }
        std::fs::write(dir.join("config.toml"), cfg.to_toml())
            .map_err(|e| TrialError::Failed(format!("{}: {e}", dir.display())))?;
        let summary = self.execute(&cfg, dir, Some(loaded))?;
        self.read_outputs(&cfg, &summary, dir, done)
            .map_err(TrialError::Failed)
    }
}

/// Copies the files of the run directory `from` (not its subdirectories: TensorBoard's
/// events, which a resumed run writes anew) into the new directory `to`.
fn copy_run_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .map_err(|e| format!("copying {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Removes the checkpoints trials wrote to be continued (`trials/*/checkpoint.fdpc`
/// under `out`), once the search no longer needs them.
pub fn remove_checkpoints(out: &Path) {
    let Ok(trials) = std::fs::read_dir(out.join("trials")) else {
        return;
    };
    for t in trials.flatten() {
        let _ = std::fs::remove_file(t.path().join(fedpace_core::checkpoint::FILE_NAME));
    }
}

/// Options of `fedpace tune` and `fedpace study` given on the command line.
pub struct Options {
    /// Output directory (default `runs/<name>-<timestamp>`).
    pub out: Option<PathBuf>,
    /// Replace previous results in `out`.
    pub force: bool,
    /// Continue the study or search in `out`: finished runs of the same configuration
    /// are kept and read back, the rest run.
    pub resume: bool,
    /// Trials at once (overrides the file's `parallel`).
    pub parallel: Option<usize>,
    /// Clients trained at once inside each trial (default 1 when trials run in
    /// parallel, else the experiment's `threads`).
    pub threads: Option<usize>,
    /// Plan and check only.
    pub dry_run: bool,
}

impl Options {
    /// The output directory, checked (never overwritten without `--force`).
    pub fn out_dir(
        &self,
        name: &str,
    ) -> Result<(PathBuf, Option<fedpace_experiment::lock::RunLock>)> {
        let dir = self
            .out
            .clone()
            .unwrap_or_else(|| runner::default_out_dir(name));
        if self.resume && self.force {
            return Err(UsageError(
                "--resume keeps the finished runs in --out and --force removes them: give one of them"
                    .into(),
            )
            .into());
        }
        // Held until the search or study ends: a `--resume` or `--force` typed while it
        // still runs is refused before it reads or removes anything (docs/outputs.md).
        let lock = fedpace_experiment::lock::lock(&dir, true)?;
        if self.resume && dir.is_dir() {
            // Nothing is removed: finished runs are read back, the rest replaced one by one.
            let marker = dir.join("search.toml").exists() || dir.join("study.toml").exists();
            let empty = std::fs::read_dir(&dir)?.next().is_none();
            if !marker && !empty {
                return Err(UsageError(format!(
                    "{}: --resume: not the output of a search or study (no search.toml or study.toml)",
                    dir.display()
                ))
                .into());
            }
            return Ok((dir, lock));
        }
        files::prepare_dir(&dir, self.force).map_err(usage)?;
        Ok((dir, lock))
    }

    /// Per-trial client threads for `parallel` trials at once.
    pub fn trial_threads(&self, parallel: usize) -> Option<usize> {
        self.threads
            .or((fedpace_tune::search::threads(parallel) > 1).then_some(1))
    }
}

/// A fedpace-tune error as the binary reports it (exit code 2 for what the user can fix).
pub fn usage(e: fedpace_tune::Error) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        anyhow::anyhow!(e)
    }
}

/// `fedpace tune SPACE.toml`.
pub fn command(path: &Path, opts: &Options) -> Result<()> {
    let file = TuneFile::load(path).map_err(usage)?;
    let parallel = opts.parallel.unwrap_or(file.parallel);
    let runner = CliRunner::new(&file.base, file.set.clone(), opts.trial_threads(parallel))
        .map_err(|e| UsageError(format!("{}: base: {e}", path.display())))?
        .resuming(opts.resume);
    let mut spec = file
        .spec(&path.display().to_string(), runner.max_rounds())
        .map_err(usage)?;
    spec.parallel = parallel;
    let runner = runner.continuing(spec.method.continues_trials());
    // Everything is checked before the output directory exists.
    let plan = plan_search(&spec, &runner).map_err(usage)?;
    if opts.dry_run {
        println!(
            "{}\nplanned {} client-epochs of a budget of {}; nothing trained (--dry-run)",
            plan.description,
            space::short_float(plan.cost),
            space::short_float(spec.budget)
        );
        return Ok(());
    }
    let (dir, _lock) = opts.out_dir(&file.name)?;
    std::fs::copy(path, dir.join("search.toml"))?;
    let report =
        run_search(&spec, &runner, &dir, &mut |line| eprintln!("{line}")).map_err(usage)?;
    report.write(&dir, &file.name).map_err(usage)?;
    // The search is over: the trials' checkpoints served only to continue them (a
    // search stopped by a signal keeps them, for --resume).
    if runner.can_continue() && crate::signals::requested().is_none() {
        remove_checkpoints(&dir);
    }
    println!();
    print!("{}", report.table(10));
    println!("results in {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(fixed: &[&str]) -> CliRunner {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
        CliRunner::new(&path, fixed.iter().map(|s| s.to_string()).collect(), None).unwrap()
    }

    /// A run directory whose test numbers are all 0.25 and whose validation numbers are
    /// all 0.75: any `val_*` read from the wrong split shows.
    fn run_dir(dir: &Path) -> serde_json::Value {
        let split = |v: f64| {
            serde_json::json!({
                "personalized_mean_accuracy": v, "personalized_worst10_accuracy": v,
                "personalized_weighted_accuracy": v, "personalized_best10_accuracy": v,
                "global_accuracy": v, "global_loss": v,
            })
        };
        let mut eval = split(0.25);
        eval["validation"] = split(0.75);
        let line = serde_json::json!({ "round": 5, "eval": eval, "clients": [] });
        std::fs::write(dir.join("metrics.jsonl"), format!("{line}\n")).unwrap();
        std::fs::write(
            dir.join("clients.csv"),
            "id,test_samples,personalized_accuracy\n0,10,0.25\n",
        )
        .unwrap();
        let summary_split = |v: f64| {
            serde_json::json!({
                "global": { "accuracy": v, "loss": v },
                "personalized": { "mean_accuracy": v, "worst10_accuracy": v,
                    "weighted_accuracy": v, "best10_accuracy": v },
            })
        };
        let mut summary = summary_split(0.25);
        summary["validation"] = summary_split(0.75);
        summary
    }

    #[test]
    fn tuning_metrics_are_read_from_validation_never_from_test() {
        let dir = tempfile::tempdir().unwrap();
        let summary = run_dir(dir.path());
        let r = runner(&["data.validation_fraction=0.2"]);
        let info = r.metric("val_personalized_mean").unwrap();
        assert_eq!(info.source, MetricSource::Validation);
        let out = r.read_outputs(&r.base, &summary, dir.path(), 0).unwrap();
        for (name, v) in out.metrics.iter().chain(&out.curve[0].metrics) {
            let want = if name.starts_with("val_") { 0.75 } else { 0.25 };
            assert_eq!(*v, want, "{name}");
        }
        assert_eq!(out.metrics.len(), 12);
    }

    #[test]
    fn without_validation_splits_val_metrics_are_flagged_stand_ins() {
        let dir = tempfile::tempdir().unwrap();
        let summary = run_dir(dir.path());
        let r = runner(&[]);
        let info = r.metric("val_personalized_mean").unwrap();
        assert!(
            matches!(&info.source, MetricSource::StandIn { actual }
                if actual.contains("set data.validation_fraction")),
            "{info:?}"
        );
        let out = r.read_outputs(&r.base, &summary, dir.path(), 0).unwrap();
        assert_eq!(out.metrics["val_personalized_mean"], 0.25);
    }
}
