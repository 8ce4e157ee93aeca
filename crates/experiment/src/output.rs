//! Recording a run (docs/outputs.md, docs/library.md): the per-round metrics line, the
//! per-client table and the summary, kept in memory and, for a run directory, written
//! as the resolved config, `metrics.jsonl` and `metrics.csv` (a line per round, each
//! written whole in one call), `clients.csv`, `model.safetensors`, `summary.json` (last:
//! it marks a finished or cleanly interrupted run), with `[output] trace` the per-round
//! audit log under `trace/` (docs/trace-format.md) and with `[output] tensorboard` event
//! files under `tensorboard/`. Final files are written atomically ([`crate::files`]).
//!
//! [`RunRecorder`] is a `fedpace_core::Observer`, so any round loop over any grid (the
//! simulation's, a network server's) records the same way.

use crate::config::OutputConfig;
use crate::files::{replace_with, write_atomic, write_bytes_atomic};
use crate::tensorboard::{EventWriter, Histogram, Value};
use crate::{Error, Monitor, Result};
use fedpace_core::round::{Observer, RoundRecord, RunOutcome};
use fedpace_core::{
    AggregateSummary, CentralEval, ClientId, ClientInfo, ClientPool, EvalStats, EvalSummary,
    Progress, Reply, TrainIns, TrainRes,
};
use fedpace_params::ParamTree;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes safetensors with the given `(name, shape, values)` tensors (atomically).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map_err(|e| Error::Failed(format!("tensor {n}: {e:?}")))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    replace_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, &None, tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        })
    })
}

/// The tensors of a parameter tree, names prefixed.
pub fn tree_tensors<'a>(prefix: &str, p: &'a ParamTree) -> Vec<(String, Vec<usize>, &'a [f32])> {
    p.spec()
        .entries()
        .iter()
        .map(|e| {
            (
                format!("{prefix}{}", e.name),
                e.shape.clone(),
                &p.as_slice()[e.range()],
            )
        })
        .collect()
}

/// What the recorder accumulates per client over the run.
#[derive(Default, Clone, Serialize, Deserialize)]
struct ClientLine {
    rounds: u32,
    lr_sum: f64,
    last_group_rates: Vec<f32>,
    failures: u32,
    reports: u32,
    effective_step_sum: f64,
    update_norm_sum: f64,
    cosine_sum: f64,
    loss_before_sum: f64,
    loss_after_sum: f64,
}

/// One client's row of the per-client table (`clients.csv`, docs/outputs.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRow {
    /// Client id.
    pub id: ClientId,
    /// Device class, if any.
    pub device: Option<String>,
    /// Training samples.
    pub train_samples: u64,
    /// Test samples.
    pub test_samples: u64,
    /// Entropy of its label histogram (0 when not known).
    pub label_entropy: f64,
    /// Rounds it was sampled in.
    pub rounds_trained: u32,
    /// Rounds whose training failed.
    pub failures: u32,
    /// Mean assigned base rate over the rounds it was sampled (`None`: never sampled).
    pub mean_assigned_lr: Option<f64>,
    /// Its last assigned rate per parameter group (empty: never sampled).
    pub last_rates: Vec<f32>,
    /// Mean over its reports of the mean Σ-rate across groups.
    pub mean_effective_step: Option<f64>,
    /// Mean ‖Δ_k‖ over its reports.
    pub mean_update_norm: Option<f64>,
    /// Mean cosine between its update and the aggregate.
    pub mean_cosine_to_aggregate: Option<f64>,
    /// Mean loss before local training.
    pub mean_loss_before: Option<f64>,
    /// Mean loss after local training.
    pub mean_loss_after: Option<f64>,
    /// Personalised accuracy at the last evaluation (`None`: not evaluated).
    pub personalized_accuracy: Option<f64>,
}

fn mean(sum: f64, n: u32) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl ClientLine {
    fn row(&self, c: ClientInfo, personal: Option<f64>) -> ClientRow {
        let n = self.reports;
        ClientRow {
            id: c.id,
            label_entropy: c.label_entropy().max(0.0),
            device: c.device,
            train_samples: c.num_train,
            test_samples: c.num_test,
            rounds_trained: self.rounds,
            failures: self.failures,
            mean_assigned_lr: mean(self.lr_sum, self.rounds),
            last_rates: self.last_group_rates.clone(),
            mean_effective_step: mean(self.effective_step_sum, n),
            mean_update_norm: mean(self.update_norm_sum, n),
            mean_cosine_to_aggregate: mean(self.cosine_sum, n),
            mean_loss_before: mean(self.loss_before_sum, n),
            mean_loss_after: mean(self.loss_after_sum, n),
            personalized_accuracy: personal,
        }
    }
}

/// The header line of `clients.csv`.
fn clients_csv_header(groups: &[String]) -> String {
    let rate_cols: Vec<String> = groups.iter().map(|g| format!("last_rate_{g}")).collect();
    format!(
        "id,device,train_samples,test_samples,label_entropy,rounds_trained,failures,mean_assigned_lr,{},mean_effective_step,mean_update_norm,mean_cosine_to_aggregate,mean_loss_before,mean_loss_after,personalized_accuracy\n",
        rate_cols.join(",")
    )
}

/// One line of `clients.csv`.
fn clients_csv_line(r: &ClientRow, groups: usize) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    let rates: Vec<String> = (0..groups)
        .map(|g| {
            r.last_rates
                .get(g)
                .map_or(String::new(), |x| format!("{x}"))
        })
        .collect();
    format!(
        "{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{}\n",
        r.id,
        r.device.as_deref().unwrap_or(""),
        r.train_samples,
        r.test_samples,
        r.label_entropy,
        r.rounds_trained,
        r.failures,
        opt(r.mean_assigned_lr),
        rates.join(","),
        opt(r.mean_effective_step),
        opt(r.mean_update_norm),
        opt(r.mean_cosine_to_aggregate),
        opt(r.mean_loss_before),
        opt(r.mean_loss_after),
        r.personalized_accuracy
            .map_or(String::new(), |a| format!("{a:.6}"))
    )
}

/// Where and what a [`RunRecorder`] records.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// The run's name in warnings.
    pub label: String,
    /// Rounds asked for (`summary.json`'s `rounds`).
    pub rounds: u32,
    /// Parameter group labels (the per-group rate columns).
    pub groups: Vec<String>,
    /// The run directory to write; `None`: nothing is written.
    pub dir: Option<PathBuf>,
    /// What goes into the run directory besides the standard files (trace, TensorBoard).
    pub output: OutputConfig,
    /// Keep every round's metrics line in memory ([`Recorded::metrics`]).
    pub keep_metrics: bool,
    /// Keep the per-client table in memory ([`Recorded::clients`]); a pool of millions
    /// of clients is better streamed to `clients.csv` only.
    pub keep_clients: bool,
}

/// The open per-round files of a run directory.
struct RunFiles {
    dir: PathBuf,
    metrics: File,
    metrics_csv: File,
    tensorboard: Option<EventWriter>,
    trace: bool,
    trace_index: Vec<serde_json::Value>,
}

impl RunFiles {
    fn create(dir: &Path, outputs: &OutputConfig, groups: &[String]) -> Result<Self> {
        let failed =
            |p: &Path, e: std::io::Error| Error::Failed(format!("creating {}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let trace = outputs.trace;
        if trace {
            let t = dir.join("trace");
            std::fs::create_dir_all(&t).map_err(|e| failed(&t, e))?;
        }
        let create = |name: &str| {
            let p = dir.join(name);
            File::create(&p).map_err(|e| failed(&p, e))
        };
        let metrics = create("metrics.jsonl")?;
        let mut metrics_csv = create("metrics.csv")?;
        metrics_csv
            .write_all(metrics_csv_header(groups).as_bytes())
            .map_err(|e| {
                Error::Failed(format!(
                    "writing {}: {e}",
                    dir.join("metrics.csv").display()
                ))
            })?;
        let tensorboard = if outputs.tensorboard {
            let t = dir.join("tensorboard");
            Some(EventWriter::create(&t).map_err(|e| failed(&t, e))?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics,
            metrics_csv,
            tensorboard,
            trace,
            trace_index: Vec::new(),
        })
    }

    /// Continues the files of the run in `dir` at a checkpoint: the per-round files are
    /// cut back to their length then (the lines of later rounds are written again).
    fn reopen(dir: &Path, outputs: &OutputConfig, saved: &RecorderState) -> Result<Self> {
        let trace = outputs.trace;
        if trace {
            let t = dir.join("trace");
            std::fs::create_dir_all(&t)
                .map_err(|e| Error::Failed(format!("creating {}: {e}", t.display())))?;
        }
        let t = dir.join("tensorboard");
        let tensorboard = match (outputs.tensorboard, &saved.tensorboard) {
            (false, _) => None,
            (true, Some((name, len))) => {
                let p = t.join(name);
                Some(EventWriter::reopen(&p, cut_back(&p, *len)?))
            }
            (true, None) => Some(
                EventWriter::create(&t)
                    .map_err(|e| Error::Failed(format!("creating {}: {e}", t.display())))?,
            ),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: cut_back(&dir.join("metrics.jsonl"), saved.metrics_len)?,
            metrics_csv: cut_back(&dir.join("metrics.csv"), saved.metrics_csv_len)?,
            tensorboard,
            trace,
            trace_index: serde_json::from_str(&saved.trace_index).map_err(|e| {
                Error::Failed(format!("checkpoint recorder state: the trace index: {e}"))
            })?,
        })
    }

    /// Records in `state` how far the files go (synced to disk first) and the trace
    /// index, for a checkpoint.
    fn position(&self, state: &mut RecorderState) -> Result<()> {
        let len = |f: &File, p: &Path| {
            f.sync_all()
                .and_then(|()| f.metadata())
                .map(|m| m.len())
                .map_err(|e| Error::Failed(format!("writing {}: {e}", p.display())))
        };
        state.metrics_len = len(&self.metrics, &self.dir.join("metrics.jsonl"))?;
        state.metrics_csv_len = len(&self.metrics_csv, &self.dir.join("metrics.csv"))?;
        state.tensorboard = match &self.tensorboard {
            None => None,
            Some(tb) => {
                let name = tb
                    .path()
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned());
                Some((name, len(tb.file(), tb.path())?))
            }
        };
        state.trace_index =
            serde_json::to_string(&self.trace_index).map_err(|e| Error::Failed(e.to_string()))?;
        Ok(())
    }

    /// `trace/index.json`, atomically (rewritten after every round, so an interrupted
    /// traced run has an index of the rounds whose files exist).
    fn write_trace_index(&self) -> Result<()> {
        write_bytes_atomic(
            &self.dir.join("trace").join("index.json"),
            json_pretty(&json!({ "format": "fedpace-trace/1", "rounds": self.trace_index }))
                .as_bytes(),
        )
    }
}

fn json_pretty(v: &serde_json::Value) -> String {
    // A `Value` always serialises.
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// What a finished recording holds.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `summary.json`'s content.
    pub summary: serde_json::Value,
    /// Every round's metrics line (`metrics.jsonl`), when kept.
    pub metrics: Vec<serde_json::Value>,
    /// The per-client table (`clients.csv`), when kept.
    pub clients: Vec<ClientRow>,
    /// Warnings for the user (rejected updates, a diverged model), one line each.
    pub warnings: Vec<String>,
}

/// The `fedpace_core::Observer` that records a run: metrics lines, per-client
/// accumulations, the run directory when asked, and the caller's [`Monitor`].
pub struct RunRecorder<'m> {
    opts: RecordOptions,
    files: Option<RunFiles>,
    monitor: &'m mut dyn Monitor,
    clients: BTreeMap<ClientId, ClientLine>,
    metrics: Vec<serde_json::Value>,
    /// Rejected updates over the run, the rounds with any, and the first one.
    rejected: usize,
    rejected_rounds: u32,
    first_rejection: Option<(u32, String)>,
    /// The first evaluated round whose global loss was NaN or infinite.
    nonfinite_loss_round: Option<u32>,
    /// The server's own evaluation, answered to the loops at every evaluation.
    central: Option<Box<dyn CentralEval>>,
    /// The server's evaluation on its validation set.
    central_validation: Option<Box<dyn CentralEval>>,
    /// Writes checkpoints (docs/checkpoints.md); `None`: never.
    checkpointer: Option<crate::checkpoint::Checkpointer>,
    /// The round of the last checkpoint written.
    checkpointed: Option<u32>,
    /// The rounds after which this run was resumed.
    resumed_after: Vec<u32>,
    /// The last round's differential privacy (cumulative ε), when `[privacy]` is on.
    privacy: Option<fedpace_core::PrivacySummary>,
    /// Σ over rounds of the mean upload bytes per client, and the rounds counted.
    upload: (f64, u32),
    /// Σ over rounds of the bytes of the messages, and the rounds counted, when the
    /// grid counts them.
    traffic: Option<(fedpace_core::RoundTraffic, u32)>,
}

/// What a [`RunRecorder`] keeps across a checkpoint: how far its files go and the sums
/// `clients.csv` and `summary.json` are made of.
#[derive(Serialize, Deserialize)]
struct RecorderState {
    metrics_len: u64,
    metrics_csv_len: u64,
    /// The TensorBoard event file (its name in `tensorboard/`) and its length.
    tensorboard: Option<(String, u64)>,
    clients: BTreeMap<ClientId, ClientLine>,
    /// `trace/index.json`'s rounds, as JSON text.
    trace_index: String,
    rejected: usize,
    rejected_rounds: u32,
    first_rejection: Option<(u32, String)>,
    nonfinite_loss_round: Option<u32>,
    resumed_after: Vec<u32>,
    /// Σ over rounds of the mean upload bytes per client, and the rounds counted.
    upload: (f64, u32),
    /// Σ over rounds of the messages' bytes, and the rounds counted.
    #[serde(default)]
    traffic: Option<(fedpace_core::RoundTraffic, u32)>,
}

impl<'m> RunRecorder<'m> {
    /// Opens the per-round files of `opts.dir` (when set; the directory is created).
    pub fn new(opts: RecordOptions, monitor: &'m mut dyn Monitor) -> Result<Self> {
        let files = match &opts.dir {
            Some(dir) => Some(RunFiles::create(dir, &opts.output, &opts.groups)?),
            None => None,
        };
        Ok(Self {
            opts,
            files,
            monitor,
            clients: BTreeMap::new(),
            metrics: Vec::new(),
            rejected: 0,
            rejected_rounds: 0,
            first_rejection: None,
            nonfinite_loss_round: None,
            central: None,
            central_validation: None,
            checkpointer: None,
            checkpointed: None,
            resumed_after: Vec::new(),
            privacy: None,
            upload: (0.0, 0),
            traffic: None,
        })
    }

    /// Continues the recording of the run in `opts.dir` from a checkpoint's recorder
    /// state (`fedpace_core::checkpoint::FileMeta::recorder`) after `round`: the
    /// per-round files are cut back to the checkpoint, the per-client sums restored, and
    /// the kept metrics lines read back from `metrics.jsonl`.
    pub fn resume(
        opts: RecordOptions,
        monitor: &'m mut dyn Monitor,
        state: &[u8],
        round: u32,
    ) -> Result<Self> {
        let Some(dir) = opts.dir.clone() else {
            return Err(Error::Setup(
                "resuming a run needs its run directory (RunOptions::with_dir)".into(),
            ));
        };
        let saved: RecorderState =
            fedpace_core::codec::from_cbor(state, "checkpoint recorder state")?;
        let files = RunFiles::reopen(&dir, &opts.output, &saved)?;
        let mut metrics = Vec::new();
        if opts.keep_metrics {
            let p = dir.join("metrics.jsonl");
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Error::Failed(format!("reading {}: {e}", p.display())))?;
            for (i, l) in text.lines().enumerate() {
                metrics.push(
                    serde_json::from_str(l).map_err(|e| {
                        Error::Setup(format!("{} line {}: {e}", p.display(), i + 1))
                    })?,
                );
            }
        }
        let mut resumed_after = saved.resumed_after;
        resumed_after.push(round);
        Ok(Self {
            opts,
            files: Some(files),
            monitor,
            clients: saved.clients,
            metrics,
            rejected: saved.rejected,
            rejected_rounds: saved.rejected_rounds,
            first_rejection: saved.first_rejection,
            nonfinite_loss_round: saved.nonfinite_loss_round,
            central: None,
            central_validation: None,
            checkpointer: None,
            checkpointed: None,
            resumed_after,
            privacy: None,
            upload: saved.upload,
            traffic: saved.traffic,
        })
    }

    /// Writes checkpoints through `c` (docs/checkpoints.md).
    pub fn with_checkpoints(mut self, c: crate::checkpoint::Checkpointer) -> Self {
        self.checkpointer = Some(c);
        self
    }

    /// The recorder's state for a checkpoint.
    fn saved_state(&self) -> Result<Vec<u8>> {
        let mut state = RecorderState {
            metrics_len: 0,
            metrics_csv_len: 0,
            tensorboard: None,
            clients: self.clients.clone(),
            trace_index: "[]".into(),
            rejected: self.rejected,
            rejected_rounds: self.rejected_rounds,
            first_rejection: self.first_rejection.clone(),
            nonfinite_loss_round: self.nonfinite_loss_round,
            resumed_after: self.resumed_after.clone(),
            upload: self.upload,
            traffic: self.traffic,
        };
        if let Some(f) = &self.files {
            f.position(&mut state)?;
        }
        Ok(fedpace_core::codec::to_cbor(&state)?)
    }

    /// The server's own evaluation of the global model (a held-out test set), run at
    /// every evaluation after the clients' ([`Observer::evaluate_central`]); `None`: none.
    pub fn with_central(mut self, central: Option<Box<dyn CentralEval>>) -> Self {
        self.central = central;
        self
    }

    /// The server's evaluation of the global model on its validation set
    /// ([`Observer::evaluate_central_validation`]); `None`: none.
    pub fn with_central_validation(mut self, central: Option<Box<dyn CentralEval>>) -> Self {
        self.central_validation = central;
        self
    }

    /// Ends the recording: the per-client table over `pool`, then (in a run directory)
    /// `clients.csv`, the final model, the trace index and, last, `summary.json`.
    /// `header` starts the summary (name, seed, strategy, …). For a stopped run
    /// (`outcome.stopped`) the summary says `"interrupted": true` with the rounds
    /// completed and the monitor's stop reason.
    pub fn finish(
        self,
        pool: &dyn ClientPool,
        outcome: &RunOutcome,
        header: serde_json::Value,
        wall: f64,
    ) -> Result<Recorded> {
        let final_eval = outcome.final_eval_round.map(|_| &outcome.final_eval);
        let personal: BTreeMap<ClientId, f64> = final_eval
            .map(|e| e.per_client.iter().copied().collect())
            .unwrap_or_default();
        let groups = self.opts.groups.len();
        let keep = self.opts.keep_clients;
        let row_of = |c: ClientInfo| {
            let line = self.clients.get(&c.id).cloned().unwrap_or_default();
            let p = personal.get(&c.id).copied();
            line.row(c, p)
        };
        let mut rows = Vec::new();
        // One row at a time: a pool of a million clients is never held in memory unless
        // the caller keeps the table.
        match &self.files {
            Some(f) => write_atomic(&f.dir.join("clients.csv"), |csv| {
                csv.write_all(clients_csv_header(&self.opts.groups).as_bytes())?;
                for c in pool.iter() {
                    let row = row_of(c.map_err(std::io::Error::other)?);
                    csv.write_all(clients_csv_line(&row, groups).as_bytes())?;
                    if keep {
                        rows.push(row);
                    }
                }
                Ok(())
            })?,
            None if keep => {
                for c in pool.iter() {
                    rows.push(row_of(c?));
                }
            }
            None => {}
        }
        if let Some(f) = &self.files {
            write_safetensors(
                &f.dir.join("model.safetensors"),
                &tree_tensors("", &outcome.global),
            )?;
            if f.trace {
                f.write_trace_index()?;
            }
            for (file, name) in [
                (&f.metrics, "metrics.jsonl"),
                (&f.metrics_csv, "metrics.csv"),
            ] {
                file.sync_all().map_err(|e| {
                    Error::Failed(format!("writing {}: {e}", f.dir.join(name).display()))
                })?;
            }
            if let Some(tb) = &f.tensorboard {
                tb.sync()
                    .map_err(|e| Error::Failed(format!("writing {}: {e}", tb.path().display())))?;
            }
        }
        let mut summary = header;
        if !summary.is_object() {
            summary = json!({});
        }
        let obj = summary.as_object_mut().expect("an object");
        obj.insert("rounds".into(), json!(self.opts.rounds));
        obj.insert("rounds_completed".into(), json!(outcome.completed_rounds));
        obj.insert("interrupted".into(), json!(outcome.stopped));
        if outcome.stopped {
            obj.insert(
                "interrupted_by".into(),
                json!(self
                    .monitor
                    .stop_requested()
                    .unwrap_or_else(|| "a stop request".into())),
            );
            // `fedpace resume` continues from the checkpoint written at the stop.
            obj.insert(
                "resumable".into(),
                json!(self.checkpointed == Some(outcome.completed_rounds)),
            );
        }
        if !self.resumed_after.is_empty() {
            obj.insert("resumed_after_rounds".into(), json!(self.resumed_after));
        }
        obj.insert("evaluated_at_round".into(), json!(outcome.final_eval_round));
        let (global, personalized) = match final_eval {
            Some(e) => eval_json(e, "test"),
            // Stopped before any evaluation: nothing was measured.
            None => (
                json!({ "accuracy": null, "loss": null, "evaluated_on": "none" }),
                json!({
                    "mean_accuracy": null, "weighted_accuracy": null, "worst10_accuracy": null,
                    "best10_accuracy": null, "std_accuracy": null,
                }),
            ),
        };
        // The same numbers on the validation splits, when the data has them: what
        // tuning selects on (docs/learned-rates.md).
        if let Some(v) = final_eval.and_then(|e| e.validation.as_deref()) {
            let (global, personalized) = eval_json(v, "validation");
            obj.insert(
                "validation".into(),
                json!({ "global": global, "personalized": personalized }),
            );
        }
        obj.insert("global".into(), global);
        obj.insert("personalized".into(), personalized);
        obj.insert("rejected_updates".into(), json!(self.rejected));
        obj.insert("rounds_with_rejections".into(), json!(self.rejected_rounds));
        obj.insert(
            "global_loss_nonfinite_round".into(),
            json!(self.nonfinite_loss_round),
        );
        let label = &self.opts.label;
        let mut warnings = Vec::new();
        if let Some((round, first)) = &self.first_rejection {
            warnings.push(format!(
                "{label}: {} update(s) rejected in {} of {} rounds (first in round {round}: \
                 {first}); per round in metrics.jsonl (\"rejected\")",
                self.rejected, self.rejected_rounds, self.opts.rounds
            ));
        }
        if let Some(round) = self.nonfinite_loss_round {
            warnings.push(format!(
                "{label}: the global loss is not finite from round {round} on: the model \
                 diverged (try a smaller client.lr or server_lr)"
            ));
        }
        if let Some(p) = &self.privacy {
            // The budget spent over the rounds run (the accountant's, docs/privacy.md).
            obj.insert(
                "privacy".into(),
                json!({
                    "epsilon": p.epsilon, "delta": p.delta,
                    "noise_multiplier": p.noise_multiplier, "sampling_rate": p.sampling_rate,
                    "final_clip": p.clip,
                }),
            );
        }
        if self.upload.1 > 0 {
            obj.insert(
                "upload_bytes_per_client".into(),
                json!(self.upload.0 / self.upload.1 as f64),
            );
        }
        if let Some((t, n)) = &self.traffic {
            // The run's communication: totals and the mean per round (docs/outputs.md).
            let per = |b: u64| b as f64 / (*n).max(1) as f64;
            obj.insert(
                "traffic".into(),
                json!({
                    "rounds": n,
                    "sent": t.sent, "received": t.received,
                    "sent_per_round": per(t.sent), "received_per_round": per(t.received),
                    "train_sent": t.train_sent, "train_received": t.train_received,
                    "model": t.model, "plan": t.plan,
                    "instruction_payloads": t.instruction_payloads,
                    "update": t.update, "reply_payloads": t.reply_payloads,
                    "messages": t.messages,
                }),
            );
        }
        obj.insert("wall_seconds".into(), json!(wall));
        obj.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
        if let Some(f) = &self.files {
            write_bytes_atomic(
                &f.dir.join("summary.json"),
                json_pretty(&summary).as_bytes(),
            )?;
        }
        Ok(Recorded {
            summary,
            metrics: self.metrics,
            clients: rows,
            warnings,
        })
    }
}

/// Peak resident memory of this process in MiB (Linux; `null` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl Progress for RunRecorder<'_> {
    fn client_done(&self) {
        self.monitor.client_done();
    }
}

impl Observer for RunRecorder<'_> {
    fn phase_started(&mut self, round: u32, phase: &'static str, clients: usize) {
        self.monitor.phase_started(round, phase, clients);
    }

    fn progress(&self) -> &dyn Progress {
        self
    }

    fn wants_trace(&self) -> bool {
        self.files.as_ref().is_some_and(|f| f.trace)
    }

    fn trace(
        &mut self,
        round: u32,
        global_in: &ParamTree,
        ins: &[(ClientId, TrainIns)],
        replies: &[Reply<TrainRes>],
        summary: &AggregateSummary,
        global_out: &ParamTree,
    ) -> fedpace_core::Result<()> {
        let Some(files) = &mut self.files else {
            return Ok(());
        };
        let file = format!("round-{round:04}.safetensors");
        let mut tensors = tree_tensors("global_in.", global_in);
        tensors.extend(tree_tensors("global_out.", global_out));
        let mut clients = Vec::new();
        for r in replies {
            let plan = ins.iter().find(|i| i.0 == r.client).map(|i| &i.1.plan);
            let weight = summary
                .clients
                .iter()
                .find(|c| c.client == r.client)
                .map_or(0.0, |c| c.weight);
            match &r.result {
                Ok(res) => {
                    tensors.extend(tree_tensors(
                        &format!("client.{}.delta.", r.client),
                        &res.delta,
                    ));
                    clients.push(json!({
                        "client": r.client, "weight": weight, "num_examples": res.num_examples,
                        "plan": plan, "report": res.report,
                        "delta_prefix": format!("client.{}.delta.", r.client),
                    }));
                }
                Err(f) => clients.push(json!({
                    "client": r.client, "weight": 0.0, "plan": plan, "failure": f.to_string(),
                })),
            }
        }
        write_safetensors(&files.dir.join("trace").join(&file), &tensors)
            .map_err(|e| fedpace_core::Error::Observer(e.to_string()))?;
        files.trace_index.push(json!({
            "round": round, "file": file, "normalized": summary.normalized,
            "global_in_prefix": "global_in.", "global_out_prefix": "global_out.", "clients": clients,
        }));
        files
            .write_trace_index()
            .map_err(|e| fedpace_core::Error::Observer(e.to_string()))
    }

    fn should_stop(&self) -> bool {
        self.monitor.stop_requested().is_some()
    }

    fn evaluate_central(&mut self, global: &ParamTree) -> Option<fedpace_core::Result<EvalStats>> {
        self.central.as_mut().map(|c| c.evaluate(global))
    }

    fn evaluate_central_validation(
        &mut self,
        global: &ParamTree,
    ) -> Option<fedpace_core::Result<EvalStats>> {
        self.central_validation.as_mut().map(|c| c.evaluate(global))
    }

    fn checkpoint_due(&self, round: u32, stopping: bool) -> bool {
        self.checkpointer
            .as_ref()
            .is_some_and(|c| c.due(round, stopping))
    }

    fn checkpoint(&mut self, cp: fedpace_core::Checkpoint<'_>) -> fedpace_core::Result<()> {
        let Some(c) = &self.checkpointer else {
            return Ok(());
        };
        let round = cp.round;
        let state = self
            .saved_state()
            .map_err(|e| fedpace_core::Error::Observer(e.to_string()))?;
        c.write(cp, state)?;
        self.checkpointed = Some(round);
        Ok(())
    }

    fn round_finished(
        &mut self,
        rec: &RoundRecord,
        _global: &ParamTree,
    ) -> fedpace_core::Result<()> {
        if let Some(e) = &rec.eval {
            let central_bad = e
                .central
                .is_some_and(|c| c.count > 0 && !c.loss().is_finite());
            let pooled_bad = e.samples > 0 && !e.global_loss.is_finite();
            if (central_bad || pooled_bad) && self.nonfinite_loss_round.is_none() {
                self.nonfinite_loss_round = Some(rec.round);
            }
        }
        let rejected = rec.rejected();
        if rejected.count > 0 {
            self.rejected += rejected.count;
            self.rejected_rounds += 1;
            if let (None, Some(first)) = (&self.first_rejection, &rejected.first) {
                self.first_rejection = Some((rec.round, first.clone()));
            }
        }
        let groups = &self.opts.groups;
        // The per-client table first (in client order, one thread), then each client's
        // entry of the metrics line, built in parallel (a thousand small JSON maps a
        // round otherwise run on one thread while the client threads wait); `collect`
        // keeps client order, so the line is the same on any thread count.
        let group_rates: Vec<Vec<f32>> = rec
            .clients
            .iter()
            .map(|c| {
                let line = self.clients.entry(c.client).or_default();
                line.rounds += 1;
                line.lr_sum += c.plan.base_lr as f64;
                line.last_group_rates = (0..groups.len())
                    .map(|g| {
                        c.plan.base_lr * c.plan.group_multipliers.get(g).copied().unwrap_or(1.0)
                    })
                    .collect();
                if c.failure.is_some() {
                    line.failures += 1;
                }
                if let Some(r) = &c.report {
                    line.reports += 1;
                    line.effective_step_sum +=
                        r.rate_sum.iter().sum::<f64>() / r.rate_sum.len().max(1) as f64;
                    line.update_norm_sum += r.update_norm;
                    line.cosine_sum += c.cosine_to_aggregate;
                    line.loss_before_sum += r.loss_before as f64;
                    line.loss_after_sum += r.loss_after as f64;
                }
                line.last_group_rates.clone()
            })
            .collect();
        let clients: Vec<serde_json::Value> = rec
            .clients
            .par_iter()
            .zip(group_rates)
            .map(|(c, group_rates)| {
                json!({
                    "id": c.client,
                    "lr": c.plan.base_lr,
                    "group_rates": group_rates,
                    "work": c.plan.work,
                    "max_steps": c.plan.max_steps,
                    "steps": c.report.as_ref().map(|r| r.steps),
                    "rate_sum": c.report.as_ref().map(|r| &r.rate_sum),
                    "effective_step": c.report.as_ref().map(|r| r.rate_sum.iter().sum::<f64>() / r.rate_sum.len().max(1) as f64),
                    "optimizer": c.plan.optimizer.name(),
                    "optimizer_spec": c.plan.optimizer,
                    "prox_mu": c.plan.prox_mu,
                    "loss_before": c.report.as_ref().map(|r| r.loss_before),
                    "loss_after": c.report.as_ref().map(|r| r.loss_after),
                    "update_norm": c.report.as_ref().map(|r| r.update_norm),
                    "grad_norm": c.report.as_ref().map(|r| r.grad_norm),
                    "num_examples": c.num_examples,
                    "weight": c.weight,
                    "cosine_to_aggregate": c.cosine_to_aggregate,
                    "failure": c.failure,
                    "report_ext": c.report.as_ref().filter(|r| !r.ext.is_empty()).map(|r| &r.ext),
                })
            })
            .collect();
        let lrs: Vec<f64> = rec.clients.iter().map(|c| c.plan.base_lr as f64).collect();
        let (lo, hi) = lrs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let mean = lrs.iter().sum::<f64>() / lrs.len().max(1) as f64;
        let mut line = json!({
            "round": rec.round,
            "sampled": rec.sampled,
            "train_loss": if rec.train_loss.is_finite() { Some(rec.train_loss) } else { None },
            "failures": rec.clients.iter().filter(|c| c.failure.is_some()).count(),
            "rejected": { "count": rejected.count, "reasons": rejected.reasons },
            "normalized": rec.aggregate.normalized,
            "step_norm": rec.aggregate.step_norm,
            "server_lr": rec.aggregate.server_lr,
            "groups": groups,
            "rates": { "min": lo, "mean": mean, "max": hi },
            "eval": rec.eval,
            "wall_seconds": rec.wall_seconds,
            "sim_seconds": rec.timing.as_ref().map(|t| t.sim_seconds),
            "timing": rec.timing,
            "privacy": rec.aggregate.privacy,
            "secure_aggregation": rec.aggregate.secure,
            "upload_bytes": rec.aggregate.upload_bytes,
            "traffic": rec.traffic,
        });
        // Moved in, not through `json!` (which would copy every client's map); the keys
        // of a line are kept in name order, so where it is inserted changes nothing.
        line["clients"] = serde_json::Value::Array(clients);
        if let Some(t) = &rec.traffic {
            let (sum, n) = self.traffic.get_or_insert_with(Default::default);
            sum.add(t);
            *n += 1;
        }
        if rec.aggregate.privacy.is_some() {
            self.privacy = rec.aggregate.privacy.clone();
        }
        if let Some(b) = rec.aggregate.upload_bytes {
            self.upload.0 += b;
            self.upload.1 += 1;
        }
        if let Some(files) = &mut self.files {
            if !rec.aggregate.learned.is_empty() {
                line["learned"] = json!(rec.aggregate.learned);
            }
            // One write per line (serialised first): a kill or a full disk can cut only
            // the last line, never interleave two.
            let dir = &files.dir;
            let observer = |name: &str, e: std::io::Error| {
                fedpace_core::Error::Observer(format!("{}: {e}", dir.join(name).display()))
            };
            let mut buf =
                serde_json::to_vec(&line).map_err(|e| observer("metrics.jsonl", e.into()))?;
            buf.push(b'\n');
            files
                .metrics
                .write_all(&buf)
                .map_err(|e| observer("metrics.jsonl", e))?;
            let csv = metrics_csv_line(rec, groups, &line);
            files
                .metrics_csv
                .write_all(csv.as_bytes())
                .map_err(|e| observer("metrics.csv", e))?;
            if let Some(tb) = &mut files.tensorboard {
                tb.write(rec.round as i64, &tensorboard_values(rec, groups, &line))
                    .map_err(|e| observer("tensorboard", e))?;
            }
        }
        self.monitor.round_finished(rec, &line);
        if self.opts.keep_metrics {
            self.metrics.push(line);
        } else if let serde_json::Value::Array(clients) = line["clients"].take() {
            // Freed in parallel too (a thousand maps a round).
            clients.into_par_iter().for_each(drop);
        }
        Ok(())
    }
}

/// Opens `path` for appending after cutting it to `len` bytes (what a checkpoint
/// recorded); a file shorter than that was changed after the checkpoint.
fn cut_back(path: &Path, len: u64) -> Result<File> {
    let failed = |e: std::io::Error| Error::Failed(format!("resuming: {}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(failed)?;
    let have = f.metadata().map_err(failed)?.len();
    if have < len {
        return Err(Error::Setup(format!(
            "{}: {have} bytes, shorter than the {len} it had at the checkpoint; the run \
             directory was changed and cannot be resumed",
            path.display()
        )));
    }
    f.set_len(len).map_err(failed)?;
    Ok(f)
}

/// `summary.json`'s `global` and `personalized` objects of an evaluation. `global` is
/// on the server's own held-out set when it has one (MNIST's 10k images), else on all
/// clients' splits pooled; with no sample anywhere (no test split, `test_fraction = 0`)
/// it is null, never 0.
fn eval_json(e: &EvalSummary, split: &str) -> (serde_json::Value, serde_json::Value) {
    let (acc, loss, on) = match &e.central {
        Some(c) => (c.accuracy(), c.loss(), format!("held-out {split} set")),
        None if e.samples == 0 => (f64::NAN, f64::NAN, "none".to_string()),
        None => (
            e.global_accuracy,
            e.global_loss,
            format!("client {split} splits"),
        ),
    };
    (
        json!({
            "accuracy": acc,
            "loss": loss,
            "evaluated_on": on,
            "client_splits_accuracy": e.global_accuracy,
            "mean_client_accuracy": e.global_mean_accuracy,
        }),
        json!({
            "mean_accuracy": e.personalized_mean_accuracy,
            "weighted_accuracy": e.personalized_weighted_accuracy,
            "worst10_accuracy": e.personalized_worst10_accuracy,
            "best10_accuracy": e.personalized_best10_accuracy,
            "std_accuracy": e.personalized_std_accuracy,
        }),
    )
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number for CSV: shortest round-trip form; empty when absent or not finite.
fn num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or(String::new(), |x| format!("{x}"))
}

/// Mean assigned rate per parameter group over a round's clients (base rate × the
/// group's multiplier).
fn group_rate_means(rec: &RoundRecord, groups: usize) -> Vec<Option<f64>> {
    (0..groups)
        .map(|g| {
            let rates: Vec<f64> = rec
                .clients
                .iter()
                .map(|c| {
                    c.plan.base_lr as f64
                        * c.plan.group_multipliers.get(g).copied().unwrap_or(1.0) as f64
                })
                .collect();
            (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
        })
        .collect()
}

fn update_norms(rec: &RoundRecord) -> Vec<f64> {
    rec.clients
        .iter()
        .filter_map(|c| c.report.as_ref().map(|r| r.update_norm))
        .collect()
}

const METRICS_CSV_EVAL: [&str; 9] = [
    "global_accuracy",
    "global_loss",
    "central_accuracy",
    "central_loss",
    "personalized_mean_accuracy",
    "personalized_weighted_accuracy",
    "personalized_worst10_accuracy",
    "personalized_best10_accuracy",
    "personalized_std_accuracy",
];

/// The header line of `metrics.csv` (docs/outputs.md).
fn metrics_csv_header(groups: &[String]) -> String {
    let mut cols: Vec<String> = [
        "round",
        "sampled",
        "failures",
        "train_loss",
        "server_lr",
        "step_norm",
        "rate_min",
        "rate_mean",
        "rate_max",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cols.extend(groups.iter().map(|g| csv_field(&format!("rate_{g}"))));
    cols.push("mean_update_norm".into());
    cols.extend(METRICS_CSV_EVAL.iter().map(|s| s.to_string()));
    cols.extend(["wall_seconds".into(), "sim_seconds".into()]);
    cols.join(",") + "\n"
}

/// One line of `metrics.csv`; `line` is the round's `metrics.jsonl` object.
fn metrics_csv_line(rec: &RoundRecord, groups: &[String], line: &serde_json::Value) -> String {
    let rates = &line["rates"];
    let mut f: Vec<String> = vec![
        rec.round.to_string(),
        rec.sampled.len().to_string(),
        rec.clients
            .iter()
            .filter(|c| c.failure.is_some())
            .count()
            .to_string(),
        num(Some(rec.train_loss)),
        num(Some(rec.aggregate.server_lr)),
        num(Some(rec.aggregate.step_norm)),
        num(rates["min"].as_f64()),
        num(rates["mean"].as_f64()),
        num(rates["max"].as_f64()),
    ];
    f.extend(group_rate_means(rec, groups.len()).into_iter().map(num));
    let norms = update_norms(rec);
    f.push(num(
        (!norms.is_empty()).then(|| norms.iter().sum::<f64>() / norms.len() as f64)
    ));
    match &rec.eval {
        Some(e) => {
            let central = e.central.as_ref();
            f.extend(
                [
                    Some(e.global_accuracy),
                    Some(e.global_loss),
                    central.map(|c| c.accuracy()),
                    central.map(|c| c.loss()),
                    Some(e.personalized_mean_accuracy),
                    Some(e.personalized_weighted_accuracy),
                    Some(e.personalized_worst10_accuracy),
                    Some(e.personalized_best10_accuracy),
                    Some(e.personalized_std_accuracy),
                ]
                .map(num),
            );
        }
        None => f.extend(METRICS_CSV_EVAL.map(|_| String::new())),
    }
    f.push(num(Some(rec.wall_seconds)));
    f.push(num(rec.timing.as_ref().map(|t| t.sim_seconds)));
    f.join(",") + "\n"
}

/// The TensorBoard values of a round (docs/outputs.md lists the tags).
fn tensorboard_values(
    rec: &RoundRecord,
    groups: &[String],
    line: &serde_json::Value,
) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = Vec::new();
    let mut scalar = |tag: &str, x: Option<f64>| {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            v.push((tag.to_string(), Value::Scalar(x as f32)));
        }
    };
    scalar("loss/train", Some(rec.train_loss));
    scalar("server/lr", Some(rec.aggregate.server_lr));
    scalar("server/step_norm", Some(rec.aggregate.step_norm));
    scalar(
        "clients/failures",
        Some(rec.clients.iter().filter(|c| c.failure.is_some()).count() as f64),
    );
    for k in ["min", "mean", "max"] {
        scalar(&format!("rate/{k}"), line["rates"][k].as_f64());
    }
    for (g, r) in groups.iter().zip(group_rate_means(rec, groups.len())) {
        scalar(&format!("rate/group/{g}"), r);
    }
    let norms = update_norms(rec);
    if !norms.is_empty() {
        scalar(
            "update_norm/mean",
            Some(norms.iter().sum::<f64>() / norms.len() as f64),
        );
        scalar("update_norm/max", norms.iter().copied().reduce(f64::max));
    }
    if let Some(e) = &rec.eval {
        let (acc, loss) = match &e.central {
            Some(c) => (c.accuracy(), c.loss()),
            None => (e.global_accuracy, e.global_loss),
        };
        scalar("accuracy/global", Some(acc));
        scalar("loss/global", Some(loss));
        scalar("accuracy/global_client_splits", Some(e.global_accuracy));
        scalar(
            "accuracy/personalized_mean",
            Some(e.personalized_mean_accuracy),
        );
        scalar(
            "accuracy/personalized_worst10",
            Some(e.personalized_worst10_accuracy),
        );
        scalar(
            "accuracy/personalized_best10",
            Some(e.personalized_best10_accuracy),
        );
    }
    if let Some(t) = &rec.timing {
        scalar("time/sim_seconds", Some(t.sim_seconds));
    }
    let rates: Vec<f64> = rec.clients.iter().map(|c| c.plan.base_lr as f64).collect();
    if let Some(h) = Histogram::of(&rates, 30) {
        v.push(("rate/clients".into(), Value::Histogram(h)));
    }
    if let Some(h) = Histogram::of(&norms, 30) {
        v.push(("update_norm/clients".into(), Value::Histogram(h)));
    }
    v
}
