//! `fedpace bench`: the standard workloads of docs/benchmarks.md (W-LR, W-MLP, W-CNN) run
//! through the same code as `fedpace run` (the configs are `examples/bench-*.toml`),
//! plus the machine's own ceilings measured in the same process: a 512×512 sgemm and a
//! memory copy, against which the CNN's arithmetic rate and the aggregation are stated.
//!
//! The only ratios printed are those measured side by side in this process (GEMM share,
//! aggregation vs copy). Peers' figures (Flower, PyTorch) are stored figures from another
//! day and are printed only as dated references, never divided into: a speed ratio
//! against a peer comes from running both in one window (`scripts/peers/run.sh`).
//! See docs/benchmarks.md.

use crate::runner;
use anyhow::Result;
use fedpace_core::rng::{derive_seed, stream, Purpose};
use fedpace_core::{ClientId, TrainReport, TrainRes};
use fedpace_experiment::{ExperimentConfig, RunOptions};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;
use std::time::Instant;

/// A workload of docs/benchmarks.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// W-LR: logistic regression, 30 clients, 20 rounds.
    Lr,
    /// W-MLP: the 2NN, 100 clients, 5 rounds.
    Mlp,
    /// W-CNN: the FedAvg CNN, 100 clients, 5 rounds.
    Cnn,
    /// Aggregation of 10 clients × 10 M parameters against a memory copy.
    Agg,
    /// The LEAF Shakespeare char-LSTM: local step on one thread, and the example's round.
    Lstm,
    /// Client-epochs per second per core, W-LR and W-MLP, 10,000 registered clients; the
    /// scaling from 1 to 2 threads as the median of 5 alternating pairs of runs.
    Throughput,
    /// Secure aggregation against plain summation in the same run: 100 clients × 100 k
    /// parameters (SecAgg, SecAgg+, with 10 % dropped), time and bytes (docs/privacy.md,
    /// "Cost").
    Secagg,
    /// W-MLP's rounds over loopback (TLS server and node threads, real sockets) against
    /// the same rounds in simulation, the runs taking turns round by round in one
    /// process: the ratio of round times.
    Loopback,
    /// LR, MLP, CNN, Agg, Lstm, Throughput and Loopback.
    All,
    /// One `fedpace server` (this process) holding 10,000 connected clients (1,000 with
    /// `--quick`) hosted by 4 `fedpace node` processes over TLS, through 5 rounds of
    /// 1,000 clients (100): wall times and the server's memory (docs/network.md).
    #[value(name = "federation-10k")]
    Federation10k,
    /// Scale: `--clients` registered clients (default 1,000,000), 1,000 per round,
    /// W-LR-sized model, a stateful algorithm (`--algorithm`) whose client states are
    /// spilled past 8 MiB (examples/scale-1m*.toml).
    Scale,
}

/// The stateful algorithm of the scale workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ScaleAlgorithm {
    /// FedAvg with local Adam whose moments are kept across rounds
    /// (examples/scale-1m.toml).
    #[default]
    Adam,
    /// SCAFFOLD, each client's control variate kept (examples/scale-1m-scaffold.toml).
    Scaffold,
    /// FedPer on a 60→10→10 MLP, each client's head kept
    /// (examples/scale-1m-fedper.toml).
    Fedper,
}

impl ScaleAlgorithm {
    fn describe(self) -> &'static str {
        match self {
            ScaleAlgorithm::Adam => "local Adam, moments kept",
            ScaleAlgorithm::Scaffold => "SCAFFOLD, control variates kept",
            ScaleAlgorithm::Fedper => "FedPer, personal heads kept",
        }
    }

    fn config(self) -> (&'static str, &'static str) {
        match self {
            ScaleAlgorithm::Adam => (include_str!("../../../examples/scale-1m.toml"), "scale-1m"),
            ScaleAlgorithm::Scaffold => (
                include_str!("../../../examples/scale-1m-scaffold.toml"),
                "scale-1m-scaffold",
            ),
            ScaleAlgorithm::Fedper => (
                include_str!("../../../examples/scale-1m-fedper.toml"),
                "scale-1m-fedper",
            ),
        }
    }
}

/// Options of `fedpace bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Which workload(s).
    pub workload: Workload,
    /// Fewer repetitions and a smaller aggregation (for a smoke test).
    pub quick: bool,
    /// Clients trained in parallel (0 = one per core).
    pub threads: usize,
    /// Scale only: registered clients (default: the example's 1,000,000).
    pub clients: Option<usize>,
    /// Scale only: rounds (default: the example's 5).
    pub rounds: Option<u32>,
    /// Scale only: memory budget of the state store in MiB (default: the example's 8).
    pub state_mb: Option<u64>,
    /// Scale only: which stateful algorithm.
    pub algorithm: ScaleAlgorithm,
}

/// Peer figures stored from a side-by-side measurement on another day (docs/benchmarks.md):
/// printed as dated references only, never as ratios.
struct Reference {
    flower_total_s: f64,
    pytorch_total_s: f64,
    pytorch_epoch_ms: f64,
    flower_peak_gb: f64,
}

/// When and how the stored peer figures were measured.
const REFERENCE_SOURCE: &str = "Flower 1.42 / PyTorch 2.15, measured side by side with \
     fedpace on 2026-12-04 (2 cores, load 0.8–1.7; docs/benchmarks.md)";

fn reference(w: Workload) -> Reference {
    match w {
        Workload::Lr => Reference {
            flower_total_s: 15.9,
            pytorch_total_s: 3.35,
            pytorch_epoch_ms: 1.53,
            flower_peak_gb: 1.92,
        },
        Workload::Mlp => Reference {
            flower_total_s: 14.0,
            pytorch_total_s: 3.50,
            pytorch_epoch_ms: 9.27,
            flower_peak_gb: 1.99,
        },
        _ => Reference {
            flower_total_s: 26.6,
            pytorch_total_s: 21.2,
            pytorch_epoch_ms: 388.0,
            flower_peak_gb: 2.27,
        },
    }
}

fn config_text(w: Workload) -> &'static str {
    match w {
        Workload::Lr => include_str!("../../../examples/bench-lr.toml"),
        Workload::Mlp => include_str!("../../../examples/bench-mlp.toml"),
        _ => include_str!("../../../examples/bench-cnn.toml"),
    }
}

/// The workload's config, exactly as `fedpace run examples/bench-<w>.toml` reads it.
pub fn workload_config(w: Workload) -> Result<ExperimentConfig> {
    Ok(ExperimentConfig::parse(
        config_text(w),
        &format!("bench-{w:?}"),
        &[],
    )?)
}

/// Runs `fedpace bench`.
pub fn run(opts: &BenchOptions) -> Result<()> {
    if let (Workload::Loopback | Workload::All, Some(r)) = (opts.workload, opts.rounds) {
        if r < 2 {
            return Err(runner::UsageError(format!(
                "--rounds {r}: the loopback workload needs at least 2 (each set's first round \
                 is left out)"
            ))
            .into());
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fedpace bench — docs/benchmarks.md workloads; medians; every ratio printed is measured in \
         this run"
    );
    println!(
        "cores: {cores} · load average at start: {} · malloc tuning: {}",
        load_average(),
        if std::env::var_os("FEDPACE_MALLOC_TUNING").is_some_and(|v| v == "0") {
            "off (FEDPACE_MALLOC_TUNING=0)"
        } else {
            "on"
        }
    );
    let reps = if opts.quick { 3 } else { 9 };
    let gemm1 = sgemm_gflops(reps, 1);
    let gemm_all = sgemm_gflops(reps, cores);
    println!(
        "sgemm 512×512 (gemm crate), measured now: {gemm1:.1} GFLOP/s on 1 thread, {gemm_all:.1} GFLOP/s on {cores}"
    );
    println!(
        "peer figures are stored references ([ref], not measured now, never divided into); \
         for ratios run scripts/peers/run.sh\n"
    );
    if opts.workload == Workload::Scale {
        return scale(opts);
    }
    if opts.workload == Workload::Federation10k {
        return federation(opts);
    }
    let list: Vec<Workload> = match opts.workload {
        Workload::All => vec![
            Workload::Lr,
            Workload::Mlp,
            Workload::Cnn,
            Workload::Agg,
            Workload::Lstm,
            Workload::Throughput,
            Workload::Loopback,
        ],
        w => vec![w],
    };
    for w in list {
        match w {
            Workload::Agg => aggregation(opts.quick)?,
            Workload::Lstm => crate::bench_training::char_lstm(opts.quick, gemm1, opts.threads)?,
            Workload::Throughput => crate::bench_training::throughput(opts.quick, cores)?,
            Workload::Secagg => secure_aggregation(opts.quick)?,
            Workload::Loopback => loopback(opts)?,
            _ => workload(w, opts, gemm1)?,
        }
        println!();
    }
    Ok(())
}

fn workload(w: Workload, opts: &BenchOptions, gemm1: f64) -> Result<()> {
    let r = reference(w);
    let cfg = workload_config(w)?;
    reset_peak_memory();
    let start = Instant::now();
    let prepared = runner::prepare(&cfg, opts.threads)?;
    let threads = prepared.threads();
    let outcome = prepared
        .run(RunOptions::default().keep(false, false))?
        .outcome;
    let total = start.elapsed().as_secs_f64();
    let peak = peak_memory_bytes();
    let first = outcome.round_wall_seconds.first().copied().unwrap_or(0.0);
    let later = if outcome.round_wall_seconds.len() > 1 {
        (total - first) / (outcome.round_wall_seconds.len() - 1) as f64
    } else {
        f64::NAN
    };
    let epoch = local_epoch_seconds(&cfg, if opts.quick { 3 } else { 7 })?;
    println!(
        "{} ({}): {} rounds, {} clients/round, {threads} clients in parallel",
        cfg.name,
        describe(w),
        cfg.rounds,
        cfg.strategy.round.clients_per_round
    );
    println!(
        "  whole run            {total:>9.3} s   (in-process: data, pool, model, every round)"
    );
    println!(
        "  rounds per second    {:>9.2}     (first round {:.3} s, later rounds {:.3} s/round)",
        cfg.rounds as f64 / total,
        first,
        later
    );
    println!(
        "  local epoch, 1 thr.  {:>9.2} ms  wall, {:.2} ms thread CPU",
        epoch.wall * 1e3,
        epoch.cpu * 1e3,
    );
    println!("  peak memory (VmHWM)  {:>9.1} MB", peak as f64 / 1e6);
    println!(
        "  [ref] whole process: Flower {:.1} s, PyTorch loop {:.2} s; one epoch, 1 thread: \
         PyTorch {} ms; peak memory: Flower {:.2} GB",
        r.flower_total_s, r.pytorch_total_s, r.pytorch_epoch_ms, r.flower_peak_gb
    );
    println!("  [ref] {REFERENCE_SOURCE}");
    if w == Workload::Cnn {
        let gflop = cnn_epoch_gflop(600);
        let (rate, rate_cpu) = (gflop / epoch.wall, gflop / epoch.cpu);
        println!(
            "  CNN epoch rate       {:>9.1} GFLOP/s by wall, {:.1} by CPU = {:.0}% / {:.0}% of the 1-thread sgemm rate measured above (in-run ratio; target ≥ 60%)",
            rate,
            rate_cpu,
            100.0 * rate / gemm1,
            100.0 * rate_cpu / gemm1
        );
    }
    Ok(())
}

/// The scale benchmark: round time and memory against registered clients.
fn scale(opts: &BenchOptions) -> Result<()> {
    let (text, name) = opts.algorithm.config();
    let mut cfg = ExperimentConfig::parse(text, name, &[])?;
    if let Some(n) = opts.clients {
        cfg.data = cfg.data.clone().with_num_clients(n);
    }
    if let Some(r) = opts.rounds {
        cfg.rounds = r;
    }
    if let Some(mb) = opts.state_mb {
        cfg.state.memory_mb = Some(mb);
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    reset_peak_memory();
    let rss0 = rss_bytes();
    let start = Instant::now();
    let prepared = runner::prepare(&cfg, opts.threads)?;
    let setup = start.elapsed().as_secs_f64();
    let rss_setup = rss_bytes();
    let threads = prepared.threads();
    let result = prepared.run(RunOptions::default().keep(false, false))?;
    let outcome = result.outcome;
    let total = start.elapsed().as_secs_f64();
    let mut prev = setup;
    let rounds: Vec<f64> = outcome
        .round_wall_seconds
        .iter()
        .map(|&w| {
            let d = w + setup - prev;
            prev = w + setup;
            d
        })
        .collect();
    let store = result.state_store;
    println!(
        "scale: {} ({name}): {} registered clients, {} per round, {} rounds, {threads} clients \
         in parallel, state budget {} MiB",
        opts.algorithm.describe(),
        cfg.data.num_clients().unwrap_or(0),
        cfg.strategy.round.clients_per_round,
        cfg.rounds,
        cfg.state
            .memory_mb
            .map_or("∞".to_string(), |m| m.to_string())
    );
    println!(
        "  setup (data, pool metadata, model)  {setup:>8.3} s   RSS after setup {:.1} MB (start {:.1} MB)",
        rss_setup as f64 / 1e6,
        rss0 as f64 / 1e6
    );
    println!(
        "  round time, median                  {:>8.3} s   (first {:.3} s, all {:?})",
        median(rounds.clone()),
        rounds.first().copied().unwrap_or(f64::NAN),
        rounds
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "  whole run                           {total:>8.3} s   peak memory (VmHWM) {:.1} MB",
        peak_memory_bytes() as f64 / 1e6
    );
    println!("  client states: {store}");
    println!("  load average at the end: {}", load_average());
    Ok(())
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The federation workload's experiment: `clients` clients of a small bench data set,
/// logistic regression, fedavg with `per_round` clients a round, 5 rounds.
fn federation_config(clients: usize, per_round: usize, rounds: u32) -> String {
    format!(
        r#"name = "bench-federation"
seed = 0
rounds = {rounds}
[data]
source = "bench"
num_clients = {clients}
sample_shape = [20]
samples_per_client = 20
[model]
name = "logistic-regression"
[client]
lr = 0.05
batch_size = 10
epochs = 1
[strategy]
name = "fedavg"
clients_per_round = {per_round}
[policy]
name = "constant"
[eval]
every = 0
max_clients = {per_round}
"#
    )
}

/// `--workload federation-10k`: this process is the server; 4 `fedpace node` child
/// processes (this binary; more when `--clients` needs them, a node hosting at most
/// 100,000) host the clients over TLS on 127.0.0.1, so the memory figures are the
/// server's alone.
fn federation(opts: &BenchOptions) -> Result<()> {
    let clients = opts
        .clients
        .unwrap_or(if opts.quick { 1_000 } else { 10_000 });
    let per_round = (clients / 10).max(1);
    let rounds = opts.rounds.unwrap_or(5);
    let nodes = fedpace_net::Limits::default().nodes_for(clients).max(4);
    let dir = TempDir(
        std::env::temp_dir().join(format!("fedpace-bench-federation-{}", std::process::id())),
    );
    std::fs::create_dir_all(dir.path())?;
    let cfg_path = dir.path().join("federation.toml");
    std::fs::write(&cfg_path, federation_config(clients, per_round, rounds))?;
    let ca = fedpace_net::generate_local_ca(dir.path(), &["localhost".into()])?;
    let ring = dir.path().join("ring.toml");
    let chunk = clients.div_ceil(nodes) as u64;
    let mut keys = Vec::new();
    for i in 0..nodes as u64 {
        let range = i * chunk..((i + 1) * chunk).min(clients as u64);
        let key = dir.path().join(format!("node-{i}.key"));
        fedpace_net::keys::generate(&ring, &format!("node-{i}"), vec![range.clone()], &key)?;
        keys.push((key, range));
    }
    let cfg = ExperimentConfig::load(&cfg_path, &[])?;
    let rss0 = rss_bytes();
    let start = Instant::now();
    let prepared = runner::prepare(&cfg, opts.threads)?;
    let model_bytes = fedpace_core::codec::encode_params(prepared.initial_model()).len();
    let mut server_cfg = fedpace_net::ServerConfig::new(
        "127.0.0.1:0".parse()?,
        Some(ca.server_tls()?),
        fedpace_net::KeySource::File(ring),
    );
    server_cfg.limits = fedpace_net::Limits::for_model(model_bytes);
    let server = Arc::new(fedpace_net::Server::start(server_cfg)?);
    let rss_setup = rss_bytes();
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for (key, range) in &keys {
        children.push(
            std::process::Command::new(&exe)
                .arg("node")
                .arg(&cfg_path)
                .args(["--clients", &format!("{}..{}", range.start, range.end)])
                .args(["--server", &addr, "--key"])
                .arg(key)
                .arg("--ca")
                .arg(&ca.ca_cert)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?,
        );
    }
    let t_connect = Instant::now();
    let got = server.wait_for_clients(clients, std::time::Duration::from_secs(600));
    let connect = t_connect.elapsed().as_secs_f64();
    let rss_connected = rss_bytes();
    if got < clients {
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        anyhow::bail!("federation-10k: {got} of {clients} clients connected within 600 s");
    }
    let mut grid = fedpace_deploy::NetGrid::new(
        server.clone(),
        prepared.shared_pool(),
        fedpace_algos::builtin().codecs.clone(),
        fedpace_deploy::NetGridConfig::default(),
    )?;
    reset_peak_memory();
    let t_rounds = Instant::now();
    let result = prepared.run_on(&mut grid, RunOptions::default().keep(false, false));
    let run_seconds = t_rounds.elapsed().as_secs_f64();
    let peak = peak_memory_bytes();
    let told = server.finish(std::time::Duration::from_secs(10));
    let mut node_ok = 0;
    for c in children {
        let out = c.wait_with_output()?;
        node_ok += usize::from(out.status.success());
    }
    let outcome = result?.outcome;
    let total = start.elapsed().as_secs_f64();
    let rounds_s = {
        let mut prev = 0.0;
        outcome
            .round_wall_seconds
            .iter()
            .map(|&w| {
                let d = w - prev;
                prev = w;
                d
            })
            .collect::<Vec<f64>>()
    };
    println!(
        "federation-10k: one server (this process), {clients} clients on {nodes} node \
         processes over TLS (127.0.0.1), logistic regression 20→10, fedavg, {per_round} \
         clients a round, {rounds} rounds"
    );
    println!(
        "  setup (data, pool, server)          {:>8.3} s   server RSS {:.1} MB (start {:.1} MB)",
        (t_connect - start).as_secs_f64(),
        rss_setup as f64 / 1e6,
        rss0 as f64 / 1e6
    );
    println!(
        "  clients connected in                {connect:>8.3} s   server RSS holding them {:.1} MB",
        rss_connected as f64 / 1e6
    );
    println!(
        "  round time, median                  {:>8.3} s   (all {:?})",
        median(rounds_s.clone()),
        rounds_s
            .iter()
            .map(|r| (r * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "  {rounds} rounds                            {run_seconds:>8.3} s   server peak RSS during the rounds (VmHWM) {:.1} MB",
        peak as f64 / 1e6
    );
    println!(
        "  whole workload                      {total:>8.3} s   nodes told the run is over: {told}, exited 0: {node_ok} of {nodes}"
    );
    println!("  load average at the end: {}", load_average());
    Ok(())
}

/// Runs that take turns round by round ([`loopback`]): each, after its round, hands the
/// machine to the next run still going and waits for its turn again, so the rounds
/// compared are seconds apart at most, not a run apart (the host's own speed moved a
/// simulated run's median round by ±15 % between runs two seconds apart).
struct Turns {
    state: std::sync::Mutex<TurnState>,
    wake: std::sync::Condvar,
}

struct TurnState {
    /// Whose round it is.
    turn: usize,
    /// Runs that reached their first round (or ended before it).
    ready: usize,
    /// Runs that ended.
    done: Vec<bool>,
}

impl Turns {
    fn new(runs: usize) -> Turns {
        Turns {
            state: std::sync::Mutex::new(TurnState {
                turn: 0,
                ready: 0,
                done: vec![false; runs],
            }),
            wake: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `me` is built and about to start its first round.
    fn arrive(&self, me: usize) {
        self.lock().ready += 1;
        self.wake.notify_all();
        self.wait_for(me);
    }

    /// Blocks until every run arrived and it is `me`'s turn.
    fn wait_for(&self, me: usize) {
        let mut s = self.lock();
        while s.turn != me || s.ready < s.done.len() {
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Run `me` finished a round (`ended`: its last, or it stopped): the next run still
    /// going takes its turn.
    fn pass(&self, me: usize, ended: bool) {
        let mut s = self.lock();
        let n = s.done.len();
        if ended && !s.done[me] {
            s.done[me] = true;
            if s.ready < n {
                // Ended before its first round (an error): count it as arrived.
                s.ready += 1;
            }
        }
        if s.turn == me {
            s.turn = (1..=n)
                .map(|k| (me + k) % n)
                .find(|&i| !s.done[i])
                .unwrap_or(me);
        }
        drop(s);
        self.wake.notify_all();
    }
}

/// A run's side of [`Turns`]: its rounds' wall times, each from the moment it got the
/// machine back to the round's end.
struct TakeTurns<'a> {
    me: usize,
    turns: &'a Turns,
    rounds: u32,
    resumed: Instant,
    times: Vec<f64>,
    started: bool,
}

impl<'a> TakeTurns<'a> {
    fn new(me: usize, turns: &'a Turns, rounds: u32) -> Self {
        TakeTurns {
            me,
            turns,
            rounds,
            resumed: Instant::now(),
            times: Vec::new(),
            started: false,
        }
    }
}

impl fedpace_experiment::Monitor for TakeTurns<'_> {
    fn started(&mut self, _run: &fedpace_experiment::RunInfo<'_>) {
        self.started = true;
        self.turns.arrive(self.me);
        self.resumed = Instant::now();
    }

    fn round_finished(
        &mut self,
        record: &fedpace_core::round::RoundRecord,
        _metrics: &serde_json::Value,
    ) {
        self.times.push(self.resumed.elapsed().as_secs_f64());
        let last = record.round >= self.rounds;
        self.turns.pass(self.me, last);
        if !last {
            self.turns.wait_for(self.me);
        }
        self.resumed = Instant::now();
    }
}

/// W-MLP over loopback against W-MLP in simulation, in one process: three runs at once
/// that take turns round by round (simulation, then loopback with one node, then with
/// two, then the simulation's next round; [`Turns`]), repeated in fresh sets (new
/// server, nodes and connections). Loopback runs two layouts: one node whose workers
/// take the round's clients from one queue, as the simulation's threads do (the
/// target's comparison: only the transport differs), and two nodes holding half the
/// clients each (a round waits for the node that drew more of its clients).
fn loopback(opts: &BenchOptions) -> Result<()> {
    let mut cfg = workload_config(Workload::Mlp)?;
    if let Some(r) = opts.rounds {
        cfg.rounds = r;
    } else if !opts.quick {
        cfg.rounds = 20;
    }
    let sets = if opts.quick { 2 } else { 5 };
    let rounds = cfg.rounds;
    let (mut sim, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new());
    // Round by round, loopback (1 node) over the simulation's round just before it.
    let mut per_round = Vec::new();
    // Each set's own ratio of medians (1 node).
    let mut per_set = Vec::with_capacity(sets);
    let mut identical = true;
    let mut parallel = 0;
    for _ in 0..sets {
        let turns = Turns::new(3);
        let results: Vec<Result<(fedpace_params::ParamTree, Vec<f64>)>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..3usize)
                    .map(|me| {
                        let (cfg, turns) = (&cfg, &turns);
                        scope.spawn(move || {
                            let mut monitor = TakeTurns::new(me, turns, rounds);
                            let out = run_one_way(cfg, opts.threads, me, &mut monitor);
                            turns.pass(me, true);
                            out.map(|(global, threads)| {
                                (global, threads, std::mem::take(&mut monitor.times))
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("a bench run panicked"))?
                            .map(|(global, threads, times)| {
                                parallel = parallel.max(threads);
                                (global, times)
                            })
                    })
                    .collect()
            });
        let mut results = results.into_iter().collect::<Result<Vec<_>>>()?;
        let (g2, t2) = results.pop().expect("three runs");
        let (g1, t1) = results.pop().expect("three runs");
        let (g0, t0) = results.pop().expect("three runs");
        identical &= g0 == g1 && g0 == g2;
        // The first round is left out (it warms allocators and the connections).
        let (t0, t1, t2) = (&t0[1..], &t1[1..], &t2[1..]);
        per_round.extend(t1.iter().zip(t0).map(|(l, s)| l / s));
        per_set.push(median(t1.to_vec()) / median(t0.to_vec()));
        sim.extend_from_slice(t0);
        one.extend_from_slice(t1);
        two.extend_from_slice(t2);
    }
    let (s, n1, n2) = (
        median(sim.clone()),
        median(one.clone()),
        median(two.clone()),
    );
    println!(
        "loopback ({}): {sets} sets of {rounds} rounds, the three runs of a set taking turns \
         round by round; {} clients/round; {parallel} clients at once (TLS on 127.0.0.1)",
        describe(Workload::Mlp),
        cfg.strategy.round.clients_per_round
    );
    println!(
        "  round, simulation    {:>9.3} s   median of {} rounds (each set's first left out)",
        s,
        sim.len()
    );
    println!(
        "  round, loopback      {:>9.3} s   1 node, {parallel} workers on one queue (as the simulation's threads)",
        n1
    );
    println!(
        "  round, loopback      {:>9.3} s   2 nodes, half the clients each",
        n2
    );
    println!(
        "  loopback / sim       {:>9.2}×    1 node (target ≤ 1.3×); 2 nodes {:.2}×; final models bit-identical: {}",
        n1 / s,
        n2 / s,
        if identical { "yes" } else { "NO" }
    );
    per_round.sort_by(f64::total_cmp);
    per_set.sort_by(f64::total_cmp);
    let q = |v: &[f64], f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    println!(
        "  round by round       {:>9.2}×    median of {} rounds' own ratios (1 node); quartiles {:.2}–{:.2}×",
        q(&per_round, 0.5),
        per_round.len(),
        q(&per_round, 0.25),
        q(&per_round, 0.75),
    );
    println!(
        "  set by set           {:>9.2}×    median of the {sets} sets' ratios (1 node); range {:.2}–{:.2}×",
        q(&per_set, 0.5),
        per_set[0],
        per_set[per_set.len() - 1]
    );
    if let Some(path) = std::env::var_os("FEDPACE_BENCH_ROUNDS") {
        // Every round's time, for a closer look (docs/network.md, "Speed").
        let text = format!(
            "{{\"simulation\":{sim:?},\"loopback_1_node\":{one:?},\"loopback_2_nodes\":{two:?}}}\n"
        );
        if let Err(e) = std::fs::write(&path, text) {
            anyhow::bail!(
                "FEDPACE_BENCH_ROUNDS {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
    println!("  load average at the end: {}", load_average());
    Ok(())
}

/// One of [`loopback`]'s three runs: `which` 0 is the simulation, 1 and 2 loopback
/// with that many nodes. Returns the final model and the clients trained at once.
fn run_one_way(
    cfg: &ExperimentConfig,
    threads: usize,
    which: usize,
    monitor: &mut TakeTurns<'_>,
) -> Result<(ParamTree, usize)> {
    let prepared = runner::prepare(cfg, threads)?;
    let parallel = prepared.threads();
    let options = RunOptions::default()
        .keep(false, false)
        .with_monitor(monitor);
    if which == 0 {
        return Ok((prepared.run(options)?.outcome.global, parallel));
    }
    let lb_opts = fedpace_deploy::LoopbackOptions {
        nodes: which,
        workers_per_node: parallel.div_ceil(which),
        model_bytes: Some(fedpace_core::codec::encode_params(prepared.initial_model()).len()),
        ..Default::default()
    };
    let mut lb = fedpace_deploy::Loopback::start(
        prepared.shared_pool(),
        prepared.client_factory(),
        fedpace_algos::builtin().codecs.clone(),
        &lb_opts,
    )
    .map_err(anyhow::Error::msg)?;
    let outcome = prepared.run_on(lb.grid(), options);
    lb.finish().map_err(anyhow::Error::msg)?;
    Ok((outcome?.outcome.global, parallel))
}

fn describe(w: Workload) -> &'static str {
    match w {
        Workload::Lr => "W-LR, logistic regression 60→10",
        Workload::Mlp => "W-MLP, 784-200-200-10",
        _ => "W-CNN, FedAvg CNN",
    }
}

/// GFLOP of one FedAvg-CNN epoch over `samples` 1×28×28 images, forward + backward
/// (conv1 has no input gradient): ≈ 43.4 for 600 samples, as in docs/benchmarks.md.
pub fn cnn_epoch_gflop(samples: usize) -> f64 {
    let conv1 = 2.0 * (28 * 28 * 32 * 25) as f64;
    let conv2 = 2.0 * (14 * 14 * 64 * 32 * 25) as f64;
    let fc = 2.0 * (3136 * 512 + 512 * 10) as f64;
    samples as f64 * (2.0 * conv1 + 3.0 * conv2 + 3.0 * fc) / 1e9
}

/// Median seconds of one local epoch of client 0 of the workload, on one thread,
/// through the same client code as a run (`local_train`: batch gathering, rate plan,
/// optimiser).
fn local_epoch_seconds(cfg: &ExperimentConfig, reps: usize) -> Result<EpochTime> {
    let dir = runner::data_dir(cfg.data_dir.as_deref());
    let fed = fedpace_data::build(&cfg.data, cfg.seed, &dir)?;
    let input = match &fed.sample_shape {
        fedpace_data::InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s.clone()),
        fedpace_data::InputShape::Tokens { seq_len, vocab } => fedpace_nn::InputShape::Tokens {
            seq_len: *seq_len,
            vocab: *vocab,
        },
    };
    let models = fedpace_nn::factory(&cfg.model, &input, fed.num_classes)?;
    let mut model = models()?;
    let init = model.init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?;
    let plan = cfg
        .base_plan(init.spec().groups())
        .map_err(anyhow::Error::msg)?;
    let data = fed.data.client(0)?;
    let steps = data.train.len().div_ceil(cfg.client.batch_size as usize) as u32;
    let mut times = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    fedpace_nn::threads::single_threaded(|| -> Result<()> {
        for rep in 0..=reps {
            let mut params = init.clone();
            let mut state = None;
            let rng = stream(cfg.seed, rep as u64, 0, Purpose::Shuffle);
            let t = Instant::now();
            let c0 = thread_cpu_seconds();
            fedpace_algos::client::local_train(
                model.as_mut(),
                data.train.as_ref(),
                &mut params,
                &plan,
                steps,
                0,
                rng,
                &mut state,
            )?;
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64());
                cpu.push(thread_cpu_seconds() - c0);
            }
        }
        Ok(())
    })?;
    Ok(EpochTime {
        wall: median(times),
        cpu: median(cpu),
    })
}

/// Median wall-clock and thread-CPU seconds of one local epoch. On a shared machine the
/// CPU time (time the thread actually ran) is the steadier figure.
#[derive(Debug, Clone, Copy)]
struct EpochTime {
    wall: f64,
    cpu: f64,
}

/// CPU seconds used by the calling thread so far.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Aggregation of 10 clients × 10 M parameters (FedAvg's `aggregate`: weighted mean,
/// per-client norms and cosines) against copying the same bytes once.
/// Secure aggregation's cost against a plain sum of the same updates, measured side by
/// side in one run (one thread; `fedpace_privacy::secagg::bench_secagg`).
fn secure_aggregation(quick: bool) -> Result<()> {
    let (clients, dimension) = if quick { (20, 10_000) } else { (100, 100_000) };
    // SecAgg+'s neighbourhood: about 3·log2(n), odd.
    let k = ((3.0 * (clients as f64).log2()).ceil() as usize) | 1;
    println!(
        "secure aggregation, {clients} clients × {dimension} parameters (one thread): time \
         ratio = (all clients' + server's work) / plain sum"
    );
    println!(
        "{:<8} {:>3} {:>7} {:>9} {:>10} {:>9} {:>7} {:>10} {:>10} {:>9} {:>9}",
        "protocol",
        "k",
        "dropped",
        "plain s",
        "clients s",
        "server s",
        "ratio",
        "up plain",
        "up secagg",
        "expansion",
        "max err"
    );
    for (name, shares, dropped) in [
        ("SecAgg", None, 0),
        ("SecAgg", None, clients / 10),
        ("SecAgg+", Some(k), 0),
        ("SecAgg+", Some(k), clients / 10),
    ] {
        let b = fedpace_privacy::secagg::bench_secagg(clients, dimension, shares, dropped, 1)
            .map_err(|e| anyhow::anyhow!("secure aggregation bench: {e}"))?;
        println!(
            "{name:<8} {:>3} {:>7} {:>9.2e} {:>10.3} {:>9.3} {:>6.0}× {:>10} {:>10.0} {:>8.3}× {:>9.1e}",
            b.neighbourhood,
            b.dropped,
            b.plain_seconds,
            b.secagg_client_seconds,
            b.secagg_server_seconds,
            b.time_ratio(),
            b.plain_upload_bytes_per_client,
            b.secagg_upload_bytes_per_client,
            b.upload_expansion(),
            b.max_abs_error
        );
    }
    Ok(())
}

fn aggregation(quick: bool) -> Result<()> {
    let (clients, len) = if quick {
        (10, 1_000_000)
    } else {
        (10, 10_000_000)
    };
    let reps = if quick { 3 } else { 7 };
    let spec = Arc::new(
        ParamSpec::builder()
            .add("body", &[len - 1000], "body")
            .add("head", &[1000], "head")
            .build()?,
    );
    let res: Vec<TrainRes> = (0..clients)
        .map(|k| {
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 31 + k * 17) % 1000) as f32 * 1e-3 - 0.5)
                .collect();
            Ok(TrainRes {
                delta: ParamTree::from_vec(spec.clone(), data)?,
                num_examples: 600,
                report: TrainReport {
                    rate_sum: vec![0.95, 0.95],
                    ..Default::default()
                },
                ext: Default::default(),
            })
        })
        .collect::<Result<_>>()?;
    let replies: Vec<(ClientId, &TrainRes)> =
        res.iter().enumerate().map(|(k, r)| (k as u64, r)).collect();
    let weights = vec![600.0; clients];
    let mut dst = vec![0f32; len];
    let copy = time_median(reps, || {
        for r in &res {
            dst.copy_from_slice(r.delta.as_slice());
            std::hint::black_box(&dst);
        }
    });
    let agg = time_median(reps, || {
        let a = fedpace_algos::aggregate::aggregate(
            &spec,
            &replies,
            &weights,
            fedpace_algos::Normalize::Auto,
        );
        std::hint::black_box(&a);
    });
    // The server optimiser's step on the same parameters (FedAdam: x, Δ̄, m, v).
    let mean = fedpace_algos::aggregate::aggregate(
        &spec,
        &replies,
        &weights,
        fedpace_algos::Normalize::Auto,
    )
    .delta;
    let opt = fedpace_optim::server::fedadam(0.01, 0.9, 0.99, 1e-3)?;
    let mut state = opt.init(&spec);
    let mut x = vec![0f32; len];
    let mut round = 0;
    let server = time_median(reps, || {
        round += 1;
        opt.step(&mut x, &mean, &mut state, &spec, round)
            .expect("valid lengths");
        std::hint::black_box(&x);
    });
    let bytes = (clients * len * 4) as f64;
    println!(
        "aggregation: {clients} clients × {len} parameters ({:.0} MB of updates)",
        bytes / 1e6
    );
    println!(
        "  memory copy of the same bytes  {:>8.2} ms  ({:.1} GB/s)",
        copy * 1e3,
        bytes / copy / 1e9
    );
    println!(
        "  FedAvg aggregate (+ norms, cosines) {:>8.2} ms  = {:.2}× the copy (in-run ratio; target ≤ 1.5×)",
        agg * 1e3,
        agg / copy
    );
    println!(
        "  FedAdam server step            {:>8.2} ms  = {:.2}× a copy of its 4 buffers (x, Δ̄, m, v; in-run)",
        server * 1e3,
        server / (copy * 4.0 / clients as f64)
    );
    println!(
        "  server side of a round (aggregate + FedAdam step) {:>8.2} ms = {:.2}× a copy of every byte it reads (updates + x, Δ̄, m, v)",
        (agg + server) * 1e3,
        (agg + server) / (copy * (clients + 4) as f64 / clients as f64)
    );
    Ok(())
}

/// Single-precision GEMM rate (GFLOP/s) of a 512×512×512 product, median of `reps`.
pub fn sgemm_gflops(reps: usize, threads: usize) -> f64 {
    let n = 512;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut c = vec![0.0f32; n * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("rayon pool");
    let secs = pool.install(|| {
        time_median(reps * 4, || {
            // Through the kernels crate's checked wrapper, as every product in fedpace.
            fedpace_kernels::sgemm(
                fedpace_kernels::MatMut::row_major(&mut c, n, n, n),
                fedpace_kernels::MatRef::row_major(&a, n, n, n),
                fedpace_kernels::MatRef::row_major(&b, n, n, n),
                false,
                threads,
            )
        })
    });
    2.0 * (n * n * n) as f64 / secs / 1e9
}

/// Median seconds of `reps` calls of `f`, after one warm-up call.
pub fn time_median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 1-minute load average (`/proc/loadavg`), or `?`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Resets the kernel's peak-RSS counter of this process (`/proc/self/clear_refs` 5).
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory (VmHWM) of this process in bytes, 0 if unknown.
pub fn peak_memory_bytes() -> u64 {
    status_kb("VmHWM:") * 1024
}

/// Current resident memory (VmRSS) in bytes, 0 if unknown.
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Turns;
    use std::sync::Mutex;

    /// Three runs of 4 rounds take turns in order, one round at a time; a run that ends
    /// before its first round (an error) holds no one up.
    #[test]
    fn runs_take_turns_round_by_round_and_an_early_end_blocks_no_one() {
        for failing in [None, Some(0), Some(1), Some(2)] {
            let turns = Turns::new(3);
            let order = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for me in 0..3usize {
                    let (turns, order) = (&turns, &order);
                    scope.spawn(move || {
                        if Some(me) == failing {
                            turns.pass(me, true);
                            return;
                        }
                        turns.arrive(me);
                        for round in 1..=4u32 {
                            order.lock().unwrap().push(me);
                            // Give the others every chance to run out of turn.
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            let last = round == 4;
                            turns.pass(me, last);
                            if !last {
                                turns.wait_for(me);
                            }
                        }
                    });
                }
            });
            let running: Vec<usize> = (0..3).filter(|&r| Some(r) != failing).collect();
            let want: Vec<usize> = (0..4).flat_map(|_| running.iter().copied()).collect();
            assert_eq!(
                order.into_inner().unwrap(),
                want,
                "failing run: {failing:?}"
            );
        }
    }
}
