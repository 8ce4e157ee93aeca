//! The command line's side of a run: the progress bar and the stop signals as a
//! [`Monitor`], and the calls into `fedpace-experiment`, which builds and runs
//! everything (docs/library.md).

use anyhow::Result;
use fedpace_core::round::{EvalSummary, RoundRecord};
use fedpace_experiment::{Experiment, ExperimentConfig, Monitor, Prepared, RunInfo, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use fedpace_experiment::data_dir;
pub use fedpace_experiment::files::default_out_dir;

/// An error the user must fix (bad arguments, a report of no runs): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Builds `cfg` with `threads` clients trained at once (for `fedpace bench`).
pub fn prepare(cfg: &ExperimentConfig, threads: usize) -> Result<Prepared> {
    let mut cfg = cfg.clone();
    cfg.threads = threads;
    Ok(Experiment::from_config(cfg)?.prepare()?)
}

/// Runs a prepared experiment into the run directory `out`, with a progress bar and
/// the signal handlers' stop requests; prints its description and warnings. Returns
/// `summary.json`'s content.
pub fn execute(prepared: Prepared, out: &Path, label: &str) -> Result<serde_json::Value> {
    execute_from(prepared, out, label, None)
}

/// [`execute`], or with `resume` the continuation of the run in `out` from its
/// checkpoint (docs/checkpoints.md).
pub fn execute_from(
    prepared: Prepared,
    out: &Path,
    label: &str,
    resume: Option<fedpace_core::checkpoint::Loaded>,
) -> Result<serde_json::Value> {
    execute_on(prepared, None, None, out, label, resume)
}

/// [`execute_from`] with the clients reached through `grid` (over the network) instead
/// of the simulation grid, and an asynchronous strategy's arrivals from `arrivals`
/// instead of the simulated clock.
pub fn execute_on(
    prepared: Prepared,
    grid: Option<&mut dyn fedpace_core::Grid>,
    arrivals: Option<&mut dyn fedpace_core::asynchronous::ArrivalSource>,
    out: &Path,
    label: &str,
    resume: Option<fedpace_core::checkpoint::Loaded>,
) -> Result<serde_json::Value> {
    eprintln!("{label}: {}", prepared.description());
    let mut console = Console::default();
    let mut options = RunOptions::default()
        .with_dir(out)
        .with_label(label)
        .keep(false, false);
    if let Some(cp) = resume {
        options = options.with_resume(cp);
    }
    if let Some(source) = arrivals {
        options = options.with_arrivals(source);
    }
    let options = options.with_monitor(&mut console);
    let result = match grid {
        Some(grid) => prepared.run_on(grid, options),
        None => prepared.run(options),
    };
    console.finish();
    let result = result?;
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    Ok(result.summary)
}

/// The progress bar of a run (drawn only on a terminal), and SIGINT/SIGTERM as stop
/// requests.
#[derive(Default)]
pub struct Console {
    bar: Option<ProgressBar>,
    done: AtomicUsize,
    phase: (&'static str, usize),
    last_eval: Option<EvalSummary>,
    last_loss: Option<f64>,
}

impl Console {
    /// Clears the progress bar (after the run).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn message(&self) -> String {
        let acc = match self.last_eval.as_ref().map(|e| e.global_accuracy) {
            Some(a) if a.is_finite() => format!("{:.1}%", 100.0 * a),
            Some(_) => "n/a".to_string(),
            None => "–".to_string(),
        };
        // Before the first round (and after a round without any update) there is no loss.
        let loss = match self.last_loss {
            Some(l) if l.is_finite() => format!("{l:.4}"),
            _ => "–".to_string(),
        };
        format!(
            "{} {}/{} clients · loss {loss} · acc {acc}",
            self.phase.0,
            self.done.load(Ordering::Relaxed),
            self.phase.1,
        )
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
    }
}

impl Monitor for Console {
    fn started(&mut self, run: &RunInfo<'_>) {
        let bar = ProgressBar::new(run.rounds as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:25}] {pos}/{len} rounds · {msg} · ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(run.label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        self.phase = ("train", 0);
    }

    fn phase_started(&mut self, _round: u32, phase: &'static str, clients: usize) {
        self.phase = (phase, clients);
        self.done.store(0, Ordering::Relaxed);
        self.refresh();
    }

    fn client_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.tick();
        }
    }

    fn round_finished(&mut self, record: &RoundRecord, _metrics: &serde_json::Value) {
        self.last_loss = Some(record.train_loss);
        if let Some(e) = &record.eval {
            self.last_eval = Some(e.clone());
        }
        if let Some(bar) = &self.bar {
            bar.set_position(record.round as u64);
        }
        self.refresh();
    }

    fn stop_requested(&self) -> Option<String> {
        crate::signals::requested().map(|s| s.name().to_string())
    }
}
