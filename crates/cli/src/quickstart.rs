//! `fedpace run` without a file: the quickstart (examples/quickstart.toml) with one
//! uniform rate and with the file's personalised policy, on [`SEEDS`] paired seeds, and
//! a table of mean ± standard error of each variant and of their paired difference.
//!
//! One seed is one draw of the data, the partition, the initialisation and the client
//! sampling; a single seed can make either variant look better than it is, so the table
//! reports what the seeds say together. The first seed's two runs are written in full
//! (`<out>/uniform`, `<out>/<policy>`); every seed's figures go to `<out>/seeds.csv`.

use crate::{runner, signals};
use anyhow::Result;
use fedpace_core::round::EvalSummary;
use fedpace_experiment::{files, ExperimentConfig, RunOptions};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The quickstart experiment, embedded so that `fedpace run` needs no file.
const QUICKSTART: &str = include_str!("../../../examples/quickstart.toml");

/// Paired seeds (the config's seed and the next ones). Ten are not enough here: on
/// seeds 0–9 by-data-size gains +1.0 ± 0.4 points of personalised mean accuracy, on
/// seeds 10–19 +0.1 ± 0.3. Twenty runs of each variant still take only seconds.
pub const SEEDS: u64 = 20;

/// The three figures the table reports for one run, as fractions.
#[derive(Debug, Clone, Copy)]
struct Figures {
    global: f64,
    mean: f64,
    worst10: f64,
}

impl Figures {
    fn from_summary(s: &serde_json::Value) -> Figures {
        let get = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        Figures {
            global: get(&s["global"]["accuracy"]),
            mean: get(&s["personalized"]["mean_accuracy"]),
            worst10: get(&s["personalized"]["worst10_accuracy"]),
        }
    }

    /// The same figures as `summary.json` reports them (global: the held-out test set
    /// when the source has one, else the clients' test splits pooled).
    fn from_eval(e: &EvalSummary) -> Figures {
        Figures {
            global: e
                .central
                .as_ref()
                .map_or(e.global_accuracy, |c| c.accuracy()),
            mean: e.personalized_mean_accuracy,
            worst10: e.personalized_worst10_accuracy,
        }
    }

    fn get(&self, k: usize) -> f64 {
        [self.global, self.mean, self.worst10][k]
    }
}

/// Mean and standard error of the mean (sample standard deviation / √n).
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Runs the quickstart and prints its table. A signal stops it after the run in
/// progress (the first seed's runs are then written as usual, the table is not).
pub fn run(
    out: Option<PathBuf>,
    threads: Option<usize>,
    data_dir: Option<PathBuf>,
    overrides: &[String],
    force: bool,
) -> Result<()> {
    let mut base = ExperimentConfig::parse(QUICKSTART, "quickstart", overrides)?;
    if data_dir.is_some() {
        base.data_dir = data_dir;
    }
    let first = base.seed;
    let last = first.checked_add(SEEDS - 1).ok_or_else(|| {
        runner::UsageError(format!(
            "seed = {first}: the quickstart runs {SEEDS} seeds from it, so it must be at most {}",
            u64::MAX - (SEEDS - 1)
        ))
    })?;
    let root = out.unwrap_or_else(|| runner::default_out_dir(&base.name));
    let _lock = fedpace_experiment::lock::claim(&root, force, "--out")?;
    let mut uniform = base.clone();
    uniform.policy = fedpace_algos::PolicyConfig::Constant;
    let policy = base.policy.name().to_string();
    let variants = [
        ("uniform".to_string(), uniform),
        (policy.clone(), base.clone()),
    ];
    let config = |seed: u64, v: usize| {
        let (label, cfg) = &variants[v];
        let mut cfg = cfg.clone();
        cfg.seed = seed;
        cfg.name = format!("{}-{label}", base.name);
        cfg
    };
    // figures[v][i]: variant v, seed first + i. The first seed's runs are written in full.
    let mut figures: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for (v, (label, _)) in variants.iter().enumerate() {
        let mut cfg = config(first, v);
        if let Some(t) = threads {
            cfg.threads = t;
        }
        let prepared = runner::prepare(&cfg, cfg.threads)?;
        let summary = runner::execute(prepared, &root.join(label), label)?;
        figures[v].push(Figures::from_summary(&summary));
        if signals::requested().is_some() {
            return crate::check_stopped(&summary, &root.join(label));
        }
    }
    // The other seeds write no files and report only the final evaluation (evaluation
    // does not change training, so skipping the intermediate ones changes no figure).
    // Each run is small, so they run side by side on one thread each (same results
    // whatever the thread count).
    let jobs: Vec<(u64, usize)> = (first + 1..=last)
        .flat_map(|seed| [(seed, 0), (seed, 1)])
        .collect();
    let workers = match threads {
        Some(t) if t > 0 => t,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
    .clamp(1, jobs.len().max(1));
    let quiet = |&(seed, v): &(u64, usize)| -> Result<Figures> {
        if let Some(stop) = signals::requested() {
            anyhow::bail!(crate::Interrupted {
                stop,
                message: format!(
                    "stopped by {}: seed {first}'s two runs are complete in {}; the other \
                     seeds were not all run, so no table",
                    stop.name(),
                    root.display()
                ),
            });
        }
        let mut cfg = config(seed, v);
        cfg.eval.every = 0;
        let prepared = runner::prepare(&cfg, 1)?;
        let result = prepared.run(RunOptions::default().keep(false, false))?;
        Ok(Figures::from_eval(&result.outcome.final_eval))
    };
    let done: Vec<Vec<Result<Figures>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (jobs, quiet) = (&jobs, &quiet);
                scope.spawn(move || jobs.iter().skip(w).step_by(workers).map(quiet).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a quickstart run panicked"))
            .collect()
    });
    let mut done: Vec<_> = done.into_iter().map(Vec::into_iter).collect();
    for (j, &(_, v)) in jobs.iter().enumerate() {
        let f = done[j % workers].next().expect("one result per job")?;
        figures[v].push(f);
    }
    let mut csv =
        String::from("seed,run,global_accuracy,personal_mean_accuracy,personal_worst10_accuracy\n");
    for (i, seed) in (first..=last).enumerate() {
        for (v, (label, _)) in variants.iter().enumerate() {
            let f = figures[v][i];
            let _ = writeln!(csv, "{seed},{label},{},{},{}", f.global, f.mean, f.worst10);
        }
    }
    files::write_bytes_atomic(&root.join("seeds.csv"), csv.as_bytes())?;
    print!(
        "{}",
        table(&base, &[&variants[0].0, &policy], &figures, first)
    );
    println!(
        "results in {} (seed {first} in full in {}/uniform and {}/{policy}; every seed in seeds.csv)",
        root.display(),
        root.display(),
        root.display()
    );
    Ok(())
}

fn table(base: &ExperimentConfig, labels: &[&str; 2], f: &[Vec<Figures>; 2], first: u64) -> String {
    let n = f[0].len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{n} paired seeds ({first}–{}): both variants on the same data, initialisation and \
         client sampling; mean ± standard error in %, the difference seed by seed in points",
        first + n as u64 - 1
    );
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>14} {:>14}",
        "run", "global acc", "personal mean", "personal w10%"
    );
    for (v, label) in labels.iter().enumerate() {
        let cells: Vec<String> = (0..3)
            .map(|k| {
                let (m, se) = mean_se(&f[v].iter().map(|x| 100.0 * x.get(k)).collect::<Vec<_>>());
                format!("{m:.1} ± {se:.1}")
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<22} {:>14} {:>14} {:>14}",
            label, cells[0], cells[1], cells[2]
        );
    }
    let diffs: Vec<Vec<f64>> = (0..3)
        .map(|k| {
            (0..n)
                .map(|i| 100.0 * (f[1][i].get(k) - f[0][i].get(k)))
                .collect()
        })
        .collect();
    let cells: Vec<String> = diffs
        .iter()
        .map(|d| {
            let (m, se) = mean_se(d);
            format!("{m:+.2} ± {:.2}", se)
        })
        .collect();
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>14} {:>14}",
        format!("{} − uniform", labels[1]),
        cells[0],
        cells[1],
        cells[2]
    );
    let counts: Vec<String> = diffs
        .iter()
        .map(|d| {
            let better = d.iter().filter(|x| **x > 0.0).count();
            let worse = d.iter().filter(|x| **x < 0.0).count();
            format!("{better} / {worse} / {}", n - better - worse)
        })
        .collect();
    let _ = writeln!(
        s,
        "{:<22} {:>14} {:>14} {:>14}",
        "seeds better/worse/tied", counts[0], counts[1], counts[2]
    );
    let clients = base
        .data
        .num_clients()
        .map_or_else(|| "its".to_string(), |n| n.to_string());
    let _ = writeln!(
        s,
        "({} data, {clients} clients, {} rounds; personal: each client's accuracy on its own test \
         split after {} local fine-tuning steps; w10%: the mean of the worst tenth)",
        base.data.source().name(),
        base.rounds,
        base.eval.finetune_steps
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand derivation: values 1, 2, 4 → mean 7/3, sample variance
    /// ((4/3)² + (1/3)² + (5/3)²)/2 = (16 + 1 + 25)/18 = 7/3, SE = √(7/9) = 0.881917…
    #[test]
    fn mean_se_uses_the_sample_standard_deviation() {
        let (m, se) = mean_se(&[1.0, 2.0, 4.0]);
        assert!((m - 7.0 / 3.0).abs() < 1e-12, "{m}");
        assert!((se - (7.0f64 / 9.0).sqrt()).abs() < 1e-12, "{se}");
        let (m, se) = mean_se(&[0.5]);
        assert_eq!(m, 0.5);
        assert!(se.is_nan(), "one value has no standard error");
    }
}
