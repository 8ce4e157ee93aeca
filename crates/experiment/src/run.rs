//! Running a [`Prepared`] experiment: the synchronous round loop or the asynchronous
//! event loop, recorded by a [`RunRecorder`] (docs/library.md).

use crate::build::{Mode, Prepared};
use crate::checkpoint::Checkpointer;
use crate::files::write_bytes_atomic;
use crate::output::{ClientRow, RecordOptions, RunRecorder};
use crate::{Error, Monitor, Result, RunInfo, Silent};
use fedpace_core::asynchronous::ArrivalSource;
use fedpace_core::checkpoint::Loaded;
use fedpace_core::round::RunOutcome;
use fedpace_core::{Grid, Start};
use fedpace_params::ParamTree;
use fedpace_sim::AsyncOptions;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// How to run a prepared experiment: where to write, what to keep in memory, who to
/// tell. The default writes nothing and keeps everything.
pub struct RunOptions<'a> {
    /// Write the run directory here (docs/outputs.md); it is created if missing. Claim
    /// it first ([`crate::files::claim_out_dir`]) so that two runs never mix. `None`
    /// (the default): nothing is written.
    pub dir: Option<PathBuf>,
    /// The run's label for the monitor and warnings (default: the config's `name`).
    pub label: Option<String>,
    /// Keep every round's metrics line in [`RunResult::metrics`] (default true).
    pub keep_metrics: bool,
    /// Keep the per-client table in [`RunResult::clients`] (default true; a pool of
    /// millions of clients is better streamed to `clients.csv` alone).
    pub keep_clients: bool,
    /// Told of progress and asked whether to stop (default: [`Silent`]).
    pub monitor: Option<&'a mut dyn Monitor>,
    /// Continue the run in `dir` from this checkpoint (read and checked by
    /// [`crate::checkpoint::prepare_resume`]) instead of starting at round 1.
    pub resume: Option<Loaded>,
    /// Where an asynchronous strategy's arrivals come from (default: the simulated
    /// clock of `[devices]`); a networked server's replies in the order they reach it
    /// (`fedpace_deploy::NetArrivals`) run it on the real clock.
    pub arrivals: Option<&'a mut dyn ArrivalSource>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        Self {
            dir: None,
            label: None,
            keep_metrics: true,
            keep_clients: true,
            monitor: None,
            resume: None,
            arrivals: None,
        }
    }
}

impl<'a> RunOptions<'a> {
    /// Writes the run directory `dir`.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// Labels the run.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    /// Reports to `monitor`.
    pub fn with_monitor(mut self, monitor: &'a mut dyn Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }
    /// Continues the run in the run directory from `checkpoint` (docs/checkpoints.md).
    pub fn with_resume(mut self, checkpoint: Loaded) -> Self {
        self.resume = Some(checkpoint);
        self
    }
    /// Takes an asynchronous strategy's arrivals from `source` instead of the simulated
    /// clock (see [`RunOptions::arrivals`]).
    pub fn with_arrivals(mut self, source: &'a mut dyn ArrivalSource) -> Self {
        self.arrivals = Some(source);
        self
    }
    /// Keeps (or not) the per-round metrics and the per-client table in memory.
    pub fn keep(mut self, metrics: bool, clients: bool) -> Self {
        self.keep_metrics = metrics;
        self.keep_clients = clients;
        self
    }
}

/// What a run ends with.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// `summary.json`'s content: final global and personalised numbers, rounds
    /// completed, whether it was interrupted, rejections, wall time.
    pub summary: serde_json::Value,
    /// Every round's line of `metrics.jsonl` (empty unless kept).
    pub metrics: Vec<serde_json::Value>,
    /// The per-client table of `clients.csv` (empty unless kept).
    pub clients: Vec<ClientRow>,
    /// The round loop's outcome: the final model ([`RunResult::model`]), the last
    /// evaluation, per-round wall times, whether it stopped early.
    pub outcome: RunOutcome,
    /// Warnings for the user (rejected updates, a diverged model), one line each.
    pub warnings: Vec<String>,
    /// The run directory, when one was written.
    pub dir: Option<PathBuf>,
    /// The state store's own description (how many client states are in memory, on
    /// disk).
    pub state_store: String,
}

impl RunResult {
    /// The final global model.
    pub fn model(&self) -> &ParamTree {
        &self.outcome.global
    }
}

impl Prepared {
    /// Runs the experiment: every round, its evaluations, the summary; with
    /// `options.dir` the run directory is written as it goes.
    pub fn run(self, options: RunOptions<'_>) -> Result<RunResult> {
        self.run_grid(None, options)
    }

    /// [`Prepared::run`] with the clients reached through `grid` (a network grid whose
    /// clients are made by [`Prepared::client_factory`] over [`Prepared::shared_pool`])
    /// instead of the simulation grid; the held-out test set stays on this side.
    pub fn run_on(self, grid: &mut dyn Grid, options: RunOptions<'_>) -> Result<RunResult> {
        self.run_grid(Some(grid), options)
    }

    fn run_grid(
        mut self,
        net: Option<&mut dyn Grid>,
        options: RunOptions<'_>,
    ) -> Result<RunResult> {
        let networked = net.is_some();
        let start = Instant::now();
        let cfg = &self.config;
        let mut arrivals = options.arrivals;
        if let (Some(_), Mode::Sync(_)) = (&arrivals, &self.strategy) {
            return Err(Error::Config(format!(
                "strategy.name = {:?}: arrivals on the real clock are for the asynchronous \
                 strategies (fedasync, fedbuff)",
                self.strategy.describe()
            )));
        }
        let label = options.label.unwrap_or_else(|| cfg.name.clone());
        let config = cfg.to_toml();
        if let Some(dir) = &options.dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Failed(format!("creating {}: {e}", dir.display())))?;
            write_bytes_atomic(&dir.join("config.toml"), config.as_bytes())?;
            if options.resume.is_some() {
                // summary.json marks a finished run: the old one goes until this one ends.
                let p = dir.join("summary.json");
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::Failed(format!("removing {}: {e}", p.display())))
                    }
                    _ => {}
                }
            }
        }
        let mut silent = Silent;
        let monitor: &mut dyn Monitor = match options.monitor {
            Some(m) => m,
            None => &mut silent,
        };
        monitor.started(&RunInfo {
            label: &label,
            rounds: cfg.rounds,
            description: &self.description,
            groups: &self.groups,
        });
        let record = RecordOptions {
            label: label.clone(),
            rounds: cfg.rounds,
            groups: self.groups.clone(),
            dir: options.dir.clone(),
            output: cfg.output.clone(),
            keep_metrics: options.keep_metrics,
            keep_clients: options.keep_clients,
        };
        let (mut recorder, start_at) = match options.resume {
            None => (RunRecorder::new(record, monitor)?, Start::Fresh(self.init)),
            Some(cp) => {
                if cp.global.spec() != self.init.spec() {
                    return Err(Error::Setup(
                        "checkpoint: its model has another layout than the config builds \
                         (tensors, shapes or groups differ)"
                            .into(),
                    ));
                }
                let recorder =
                    RunRecorder::resume(record, monitor, &cp.meta.recorder.0, cp.meta.round)?;
                self.grid
                    .restore_states(cp.states)
                    .map_err(|e| Error::Failed(format!("restoring the clients' states: {e}")))?;
                (
                    recorder,
                    Start::Resume {
                        global: cp.global,
                        server: cp.server,
                    },
                )
            }
        };
        recorder = recorder
            .with_central(self.central.take())
            .with_central_validation(self.central_validation.take());
        // Over the network the clients keep their own states, one per round, and the
        // checkpoint holds none of them (docs/checkpoints.md, "Over the network").
        if let Some(dir) = &options.dir {
            recorder = recorder.with_checkpoints(Checkpointer::new(
                dir,
                config,
                cfg.checkpoint.every,
                cfg.rounds,
            ));
        }
        let grid: &mut dyn Grid = match net {
            Some(net) => net,
            None => &mut self.grid,
        };
        let outcome = match &mut self.strategy {
            Mode::Sync(s) => fedpace_core::run_from(
                s.as_mut(),
                grid,
                start_at,
                &fedpace_core::round::RunOptions {
                    rounds: cfg.rounds,
                    seed: cfg.seed,
                    eval_every: cfg.eval.every,
                    finetune_steps: cfg.eval.finetune_steps,
                    personalized: cfg.eval.personalized,
                    max_test_samples: cfg.eval.max_test_samples,
                    keep_records: false,
                    eval_clients: cfg.eval.max_clients,
                },
                &mut recorder,
            )?,
            Mode::Async {
                strategy,
                policy,
                base_plan,
                devices,
                concurrency,
                rate_decay,
            } => {
                let opts = AsyncOptions {
                    updates: cfg.rounds,
                    concurrency: *concurrency,
                    rate_decay: *rate_decay,
                    seed: cfg.seed,
                    eval_every: cfg.eval.every,
                    finetune_steps: cfg.eval.finetune_steps,
                    max_test_samples: cfg.eval.max_test_samples,
                    keep_records: false,
                    eval_clients: cfg.eval.max_clients,
                };
                match arrivals.take() {
                    Some(source) => fedpace_core::asynchronous::run_arrivals(
                        strategy.as_mut(),
                        policy.as_mut(),
                        base_plan,
                        source,
                        grid,
                        start_at,
                        &opts,
                        &mut recorder,
                    )?,
                    None => fedpace_sim::run_async_from(
                        strategy.as_mut(),
                        policy.as_mut(),
                        base_plan,
                        grid,
                        devices,
                        start_at,
                        &fedpace_algos::builtin().codecs,
                        &opts,
                        &mut recorder,
                    )?,
                }
            }
        };
        let header = json!({
            "name": cfg.name,
            "seed": cfg.seed,
            "strategy": self.strategy.describe(),
            "policy": cfg.registered.policy.as_ref().map_or(cfg.policy.name(), |(n, _)| n),
            "threads": self.grid.threads(),
        });
        let recorded = recorder.finish(
            self.pool.as_ref(),
            &outcome,
            header,
            start.elapsed().as_secs_f64(),
        )?;
        Ok(RunResult {
            summary: recorded.summary,
            metrics: recorded.metrics,
            clients: recorded.clients,
            outcome,
            warnings: recorded.warnings,
            dir: options.dir,
            state_store: if networked {
                "kept by the clients".to_string()
            } else {
                self.grid.store_stats()
            },
        })
    }
}
