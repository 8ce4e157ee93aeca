//! The run directory (docs/outputs.md): resolved config, `metrics.jsonl` and
//! `metrics.csv` (a line per round, each written whole in one call), `clients.csv`,
//! `model.safetensors`, `summary.json` (last: it marks a finished or cleanly
//! interrupted run), with `--trace` the per-round audit log under `trace/`
//! (docs/trace-format.md) and with `[output] tensorboard` event files under
//! `tensorboard/`. Final files are written atomically ([`crate::files`]).

use crate::files::{replace_with, write_atomic, write_bytes_atomic};
use crate::tensorboard::{EventWriter, Histogram, Value};
use anyhow::{Context, Result};
use fedpace_core::round::{EvalSummary, Observer, RoundRecord, RunOutcome};
use fedpace_core::{AggregateSummary, ClientId, ClientPool, Progress, Reply, TrainIns, TrainRes};
use fedpace_params::ParamTree;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
                .map_err(|e| anyhow::anyhow!("tensor {n}: {e:?}"))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    replace_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, &None, tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => anyhow::Error::new(io),
            other => anyhow::anyhow!("{other:?}"),
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

struct Counter {
    done: AtomicUsize,
    bar: ProgressBar,
}

impl Progress for Counter {
    fn client_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bar.tick();
    }
}

#[derive(Default, Clone)]
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

fn mean_or_empty(sum: f64, n: u32) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{}", sum / n as f64)
    }
}

/// Observer that writes the run directory and draws the progress bar.
pub struct RunWriter {
    /// The run's name, for warnings.
    label: String,
    dir: PathBuf,
    metrics: File,
    metrics_csv: File,
    tensorboard: Option<EventWriter>,
    counter: Counter,
    phase: (&'static str, usize),
    rounds: u32,
    last_eval: Option<EvalSummary>,
    last_loss: f64,
    clients: BTreeMap<ClientId, ClientLine>,
    trace: bool,
    trace_index: Vec<serde_json::Value>,
    groups: Vec<String>,
    /// Rejected updates over the run, the rounds with any, and the first one.
    rejected: usize,
    rejected_rounds: u32,
    first_rejection: Option<(u32, String)>,
    /// The first evaluated round whose global loss was NaN or infinite.
    nonfinite_loss_round: Option<u32>,
}

impl RunWriter {
    /// Creates the directory and the per-round files (`metrics.jsonl`, `metrics.csv`,
    /// `trace/`, `tensorboard/` as asked).
    pub fn create(
        dir: &Path,
        label: &str,
        rounds: u32,
        outputs: &crate::config::OutputConfig,
        groups: Vec<String>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let trace = outputs.trace;
        if trace {
            let t = dir.join("trace");
            std::fs::create_dir_all(&t).with_context(|| format!("creating {}", t.display()))?;
        }
        let create = |name: &str| {
            let p = dir.join(name);
            File::create(&p).with_context(|| format!("creating {}", p.display()))
        };
        let metrics = create("metrics.jsonl")?;
        let mut metrics_csv = create("metrics.csv")?;
        let header = metrics_csv_header(&groups);
        metrics_csv
            .write_all(header.as_bytes())
            .with_context(|| format!("writing {}", dir.join("metrics.csv").display()))?;
        let tensorboard = if outputs.tensorboard {
            let t = dir.join("tensorboard");
            Some(EventWriter::create(&t).with_context(|| format!("creating {}", t.display()))?)
        } else {
            None
        };
        let bar = ProgressBar::new(rounds as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:25}] {pos}/{len} rounds · {msg} · ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Ok(Self {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            metrics,
            metrics_csv,
            tensorboard,
            counter: Counter {
                done: AtomicUsize::new(0),
                bar,
            },
            phase: ("train", 0),
            rounds,
            last_eval: None,
            last_loss: f64::NAN,
            clients: BTreeMap::new(),
            trace,
            trace_index: Vec::new(),
            groups,
            rejected: 0,
            rejected_rounds: 0,
            first_rejection: None,
            nonfinite_loss_round: None,
        })
    }

    fn message(&self) -> String {
        let acc = match self.last_eval.as_ref().map(|e| e.global_accuracy) {
            Some(a) if a.is_finite() => format!("{:.1}%", 100.0 * a),
            Some(_) => "n/a".to_string(),
            None => "–".to_string(),
        };
        // Before the first round (and after a round without any update) there is no loss.
        let loss = if self.last_loss.is_finite() {
            format!("{:.4}", self.last_loss)
        } else {
            "–".to_string()
        };
        format!(
            "{} {}/{} clients · loss {loss} · acc {acc}",
            self.phase.0,
            self.counter.done.load(Ordering::Relaxed),
            self.phase.1,
        )
    }

    /// Writes `clients.csv`, the final model, the trace index and, last,
    /// `summary.json`; returns the summary. For a stopped run (`outcome.stopped`) the
    /// summary says `"interrupted": true` with the rounds completed and the signal.
    pub fn finish(
        self,
        pool: &dyn ClientPool,
        outcome: &RunOutcome,
        stop: Option<crate::signals::Stop>,
        header: serde_json::Value,
        wall: f64,
    ) -> Result<serde_json::Value> {
        self.counter.bar.finish_and_clear();
        let final_eval = outcome.final_eval_round.map(|_| &outcome.final_eval);
        let personal: BTreeMap<ClientId, f64> = final_eval
            .map(|e| e.per_client.iter().copied().collect())
            .unwrap_or_default();
        let rate_cols: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("last_rate_{g}"))
            .collect();
        let clients = &self.clients;
        let groups = self.groups.len();
        write_atomic(&self.dir.join("clients.csv"), |csv| {
            writeln!(
                csv,
                "id,device,train_samples,test_samples,label_entropy,rounds_trained,failures,mean_assigned_lr,{},mean_effective_step,mean_update_norm,mean_cosine_to_aggregate,mean_loss_before,mean_loss_after,personalized_accuracy",
                rate_cols.join(",")
            )?;
            // One row at a time: a pool of a million clients is never held in memory.
            for c in pool.iter() {
                let c = c.map_err(std::io::Error::other)?;
                let l = clients.get(&c.id).cloned().unwrap_or_default();
                let mean_lr = if l.rounds > 0 {
                    format!("{}", l.lr_sum / l.rounds as f64)
                } else {
                    String::new()
                };
                let rates: Vec<String> = (0..groups)
                    .map(|g| {
                        l.last_group_rates
                            .get(g)
                            .map_or(String::new(), |r| format!("{r}"))
                    })
                    .collect();
                let n = l.reports;
                writeln!(
                    csv,
                    "{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{}",
                    c.id,
                    c.device.as_deref().unwrap_or(""),
                    c.num_train,
                    c.num_test,
                    c.label_entropy().max(0.0),
                    l.rounds,
                    l.failures,
                    mean_lr,
                    rates.join(","),
                    mean_or_empty(l.effective_step_sum, n),
                    mean_or_empty(l.update_norm_sum, n),
                    mean_or_empty(l.cosine_sum, n),
                    mean_or_empty(l.loss_before_sum, n),
                    mean_or_empty(l.loss_after_sum, n),
                    personal
                        .get(&c.id)
                        .map_or(String::new(), |a| format!("{a:.6}"))
                )?;
            }
            Ok(())
        })?;
        write_safetensors(
            &self.dir.join("model.safetensors"),
            &tree_tensors("", &outcome.global),
        )?;
        if self.trace {
            self.write_trace_index()?;
        }
        for (f, name) in [
            (&self.metrics, "metrics.jsonl"),
            (&self.metrics_csv, "metrics.csv"),
        ] {
            f.sync_all()
                .with_context(|| format!("writing {}", self.dir.join(name).display()))?;
        }
        if let Some(tb) = &self.tensorboard {
            tb.sync()
                .with_context(|| format!("writing {}", tb.path().display()))?;
        }
        let mut summary = header;
        let obj = summary.as_object_mut().expect("header is an object");
        obj.insert("rounds".into(), json!(self.rounds));
        obj.insert("rounds_completed".into(), json!(outcome.completed_rounds));
        obj.insert("interrupted".into(), json!(outcome.stopped));
        if outcome.stopped {
            obj.insert(
                "interrupted_by".into(),
                json!(stop.map_or("a stop request", |s| s.name())),
            );
            // No checkpoint exists yet: the model is the state after the last
            // completed round, and the run can only be started again from the start.
            obj.insert("resumable".into(), json!(false));
        }
        obj.insert("evaluated_at_round".into(), json!(outcome.final_eval_round));
        // `global.accuracy` is on the source's own held-out test set when it has one
        // (MNIST's 10k images), else on all clients' test splits pooled.
        // No test sample anywhere (no test split, `test_fraction = 0`): null, never 0.
        let (global, personalized) = match final_eval {
            Some(e) => {
                let (acc, loss, on) = match &e.central {
                    Some(c) => (c.accuracy(), c.loss(), "held-out test set"),
                    None if e.samples == 0 => (f64::NAN, f64::NAN, "none"),
                    None => (e.global_accuracy, e.global_loss, "client test splits"),
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
            // Stopped before any evaluation: nothing was measured.
            None => (
                json!({ "accuracy": null, "loss": null, "evaluated_on": "none" }),
                json!({
                    "mean_accuracy": null, "weighted_accuracy": null, "worst10_accuracy": null,
                    "best10_accuracy": null, "std_accuracy": null,
                }),
            ),
        };
        obj.insert("global".into(), global);
        obj.insert("personalized".into(), personalized);
        obj.insert("rejected_updates".into(), json!(self.rejected));
        obj.insert("rounds_with_rejections".into(), json!(self.rejected_rounds));
        obj.insert(
            "global_loss_nonfinite_round".into(),
            json!(self.nonfinite_loss_round),
        );
        if let Some((round, first)) = &self.first_rejection {
            eprintln!(
                "warning: {}: {} update(s) rejected in {} of {} rounds (first in round {round}: \
                 {first}); per round in metrics.jsonl (\"rejected\")",
                self.label, self.rejected, self.rejected_rounds, self.rounds
            );
        }
        if let Some(round) = self.nonfinite_loss_round {
            eprintln!(
                "warning: {}: the global loss is not finite from round {round} on: the model \
                 diverged (try a smaller client.lr or server_lr)",
                self.label
            );
        }
        obj.insert("wall_seconds".into(), json!(wall));
        obj.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
        write_bytes_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        Ok(summary)
    }

    /// `trace/index.json`, atomically (rewritten after every round, so an interrupted
    /// traced run has an index of the rounds whose files exist).
    fn write_trace_index(&self) -> Result<()> {
        write_bytes_atomic(
            &self.dir.join("trace").join("index.json"),
            serde_json::to_string_pretty(
                &json!({ "format": "fedpace-trace/1", "rounds": self.trace_index }),
            )?
            .as_bytes(),
        )
    }
}

/// Peak resident memory of this process in MiB (Linux; `null` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl Observer for RunWriter {
    fn phase_started(&mut self, _round: u32, phase: &'static str, clients: usize) {
        self.phase = (phase, clients);
        self.counter.done.store(0, Ordering::Relaxed);
        let m = self.message();
        self.counter.bar.set_message(m);
    }

    fn progress(&self) -> &dyn Progress {
        &self.counter
    }

    fn wants_trace(&self) -> bool {
        self.trace
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
        write_safetensors(&self.dir.join("trace").join(&file), &tensors)
            .map_err(|e| fedpace_core::Error::Observer(e.to_string()))?;
        self.trace_index.push(json!({
            "round": round, "file": file, "normalized": summary.normalized,
            "global_in_prefix": "global_in.", "global_out_prefix": "global_out.", "clients": clients,
        }));
        self.write_trace_index()
            .map_err(|e| fedpace_core::Error::Observer(format!("{e:#}")))
    }

    fn should_stop(&self) -> bool {
        crate::signals::requested().is_some()
    }

    fn round_finished(
        &mut self,
        rec: &RoundRecord,
        _global: &ParamTree,
    ) -> fedpace_core::Result<()> {
        self.last_loss = rec.train_loss;
        if let Some(e) = &rec.eval {
            self.last_eval = Some(e.clone());
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
        let clients: Vec<serde_json::Value> = rec
            .clients
            .iter()
            .map(|c| {
                let line = self.clients.entry(c.client).or_default();
                line.rounds += 1;
                line.lr_sum += c.plan.base_lr as f64;
                let groups = self.groups.len();
                line.last_group_rates = (0..groups)
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
                json!({
                    "id": c.client,
                    "lr": c.plan.base_lr,
                    "group_rates": line.last_group_rates,
                    "work": c.plan.work,
                    "max_steps": c.plan.max_steps,
                    "steps": c.report.as_ref().map(|r| r.steps),
                    "rate_sum": c.report.as_ref().map(|r| &r.rate_sum),
                    "effective_step": c.report.as_ref().map(|r| r.rate_sum.iter().sum::<f64>() / r.rate_sum.len().max(1) as f64),
                    "optimizer": c.plan.optimizer.name(),
                    "loss_before": c.report.as_ref().map(|r| r.loss_before),
                    "loss_after": c.report.as_ref().map(|r| r.loss_after),
                    "update_norm": c.report.as_ref().map(|r| r.update_norm),
                    "grad_norm": c.report.as_ref().map(|r| r.grad_norm),
                    "num_examples": c.num_examples,
                    "weight": c.weight,
                    "cosine_to_aggregate": c.cosine_to_aggregate,
                    "failure": c.failure,
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
        let line = json!({
            "round": rec.round,
            "sampled": rec.sampled,
            "train_loss": if rec.train_loss.is_finite() { Some(rec.train_loss) } else { None },
            "failures": rec.clients.iter().filter(|c| c.failure.is_some()).count(),
            "rejected": { "count": rejected.count, "reasons": rejected.reasons },
            "normalized": rec.aggregate.normalized,
            "step_norm": rec.aggregate.step_norm,
            "server_lr": rec.aggregate.server_lr,
            "groups": self.groups,
            "rates": { "min": lo, "mean": mean, "max": hi },
            "eval": rec.eval,
            "clients": clients,
            "wall_seconds": rec.wall_seconds,
            "sim_seconds": rec.timing.as_ref().map(|t| t.sim_seconds),
            "timing": rec.timing,
        });
        // One write per line (serialised first): a kill or a full disk can cut only the
        // last line, never interleave two.
        let observer = |name: &str, e: std::io::Error| {
            fedpace_core::Error::Observer(format!("{}: {e}", self.dir.join(name).display()))
        };
        let mut buf = serde_json::to_vec(&line).map_err(|e| observer("metrics.jsonl", e.into()))?;
        buf.push(b'\n');
        self.metrics
            .write_all(&buf)
            .map_err(|e| observer("metrics.jsonl", e))?;
        let csv = metrics_csv_line(rec, &self.groups, &line);
        self.metrics_csv
            .write_all(csv.as_bytes())
            .map_err(|e| observer("metrics.csv", e))?;
        if let Some(tb) = &mut self.tensorboard {
            tb.write(
                rec.round as i64,
                &tensorboard_values(rec, &self.groups, &line),
            )
            .map_err(|e| observer("tensorboard", e))?;
        }
        self.counter.bar.set_position(rec.round as u64);
        let m = self.message();
        self.counter.bar.set_message(m);
        Ok(())
    }
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
