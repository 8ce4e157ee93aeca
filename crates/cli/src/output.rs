//! The run directory: resolved config, `metrics.jsonl`, `clients.csv`, `summary.json`,
//! `model.safetensors`, and with `--trace` the per-round audit log under `trace/`
//! (format: docs/trace-format.md).

use anyhow::{Context, Result};
use fedpace_core::round::{EvalSummary, Observer, RoundRecord};
use fedpace_core::{AggregateSummary, ClientId, ClientPool, Progress, Reply, TrainIns, TrainRes};
use fedpace_params::ParamTree;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Writes safetensors with the given `(name, shape, values)` tensors.
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
    safetensors::tensor::serialize_to_file(views, &None, path)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))
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
    dir: PathBuf,
    label: String,
    metrics: BufWriter<File>,
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
    /// Creates the directory and the metrics file.
    pub fn create(
        dir: &Path,
        label: &str,
        rounds: u32,
        trace: bool,
        groups: Vec<String>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if trace {
            std::fs::create_dir_all(dir.join("trace"))?;
        }
        let metrics = BufWriter::new(File::create(dir.join("metrics.jsonl"))?);
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
            dir: dir.to_path_buf(),
            label: label.to_string(),
            metrics,
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

    /// Writes `clients.csv`, `summary.json` and the final model; returns the summary.
    pub fn finish(
        mut self,
        pool: &dyn ClientPool,
        final_eval: &EvalSummary,
        global: &ParamTree,
        header: serde_json::Value,
        wall: f64,
    ) -> Result<serde_json::Value> {
        self.counter.bar.finish_and_clear();
        self.metrics.flush()?;
        let personal: BTreeMap<ClientId, f64> = final_eval.per_client.iter().copied().collect();
        let mut csv = BufWriter::new(File::create(self.dir.join("clients.csv"))?);
        let rate_cols: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("last_rate_{g}"))
            .collect();
        writeln!(
            csv,
            "id,device,train_samples,test_samples,label_entropy,rounds_trained,failures,mean_assigned_lr,{},mean_effective_step,mean_update_norm,mean_cosine_to_aggregate,mean_loss_before,mean_loss_after,personalized_accuracy",
            rate_cols.join(",")
        )?;
        // One row at a time: a pool of a million clients is never held in memory.
        for c in pool.iter() {
            let c = c?;
            let l = self.clients.get(&c.id).cloned().unwrap_or_default();
            let mean_lr = if l.rounds > 0 {
                l.lr_sum / l.rounds as f64
            } else {
                f64::NAN
            };
            let rates: Vec<String> = (0..self.groups.len())
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
                if mean_lr.is_nan() {
                    String::new()
                } else {
                    format!("{mean_lr}")
                },
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
        csv.flush()?;
        write_safetensors(
            &self.dir.join("model.safetensors"),
            &tree_tensors("", global),
        )?;
        if self.trace {
            std::fs::write(
                self.dir.join("trace").join("index.json"),
                serde_json::to_string_pretty(
                    &json!({ "format": "fedpace-trace/1", "rounds": self.trace_index }),
                )?,
            )?;
        }
        let mut summary = header;
        let obj = summary.as_object_mut().expect("header is an object");
        obj.insert("rounds".into(), json!(self.rounds));
        // `global.accuracy` is on the source's own held-out test set when it has one
        // (MNIST's 10k images), else on all clients' test splits pooled.
        // No test sample anywhere (no test split, `test_fraction = 0`): null, never 0.
        let (acc, loss, on) = match &final_eval.central {
            Some(c) => (c.accuracy(), c.loss(), "held-out test set"),
            None if final_eval.samples == 0 => (f64::NAN, f64::NAN, "none"),
            None => (
                final_eval.global_accuracy,
                final_eval.global_loss,
                "client test splits",
            ),
        };
        obj.insert(
            "global".into(),
            json!({
                "accuracy": acc,
                "loss": loss,
                "evaluated_on": on,
                "client_splits_accuracy": final_eval.global_accuracy,
                "mean_client_accuracy": final_eval.global_mean_accuracy,
            }),
        );
        obj.insert(
            "personalized".into(),
            json!({
                "mean_accuracy": final_eval.personalized_mean_accuracy,
                "weighted_accuracy": final_eval.personalized_weighted_accuracy,
                "worst10_accuracy": final_eval.personalized_worst10_accuracy,
                "best10_accuracy": final_eval.personalized_best10_accuracy,
                "std_accuracy": final_eval.personalized_std_accuracy,
            }),
        );
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
        std::fs::write(
            self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(summary)
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
        Ok(())
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
        let mut write = || -> std::io::Result<()> {
            serde_json::to_writer(&mut self.metrics, &line)?;
            self.metrics.write_all(b"\n")?;
            self.metrics.flush()
        };
        write().map_err(|e| fedpace_core::Error::Observer(format!("metrics.jsonl: {e}")))?;
        self.counter.bar.set_position(rec.round as u64);
        let m = self.message();
        self.counter.bar.set_message(m);
        Ok(())
    }
}
