//! `fedpace server`, `fedpace node`, `fedpace client`, `fedpace keys` and `fedpace run
//! --grid loopback`: the experiment of a config run over the network with
//! `fedpace-deploy` (docs/network.md, "Commands").

use crate::runner::UsageError;
use anyhow::{Context, Result};
use fedpace_core::checkpoint::Loaded;
use fedpace_deploy::{meta, StateDir};
use fedpace_deploy::{
    ClientHost, ClientTraffic, Loopback, LoopbackOptions, NetGrid, NetGridConfig,
};
use fedpace_experiment::files::write_bytes_atomic;
use fedpace_experiment::network::OwnClient;
use fedpace_experiment::{Experiment, Prepared};
use fedpace_net::{keys, ClientTls, Credential, KeySource, Limits, Node, NodeConfig, Server};
use fedpace_net::{ServerConfig, ServerTls};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Deadlines and quorum from the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct GridArgs {
    /// Seconds a client may take for one training or evaluation instruction.
    #[arg(long, default_value_t = 600.0)]
    pub deadline: f64,
    /// Fewest successful replies per round, as a fraction of the clients sent to.
    #[arg(long, default_value_t = 0.0)]
    pub quorum_fraction: f64,
    /// The clock of an asynchronous strategy (fedasync, fedbuff): `simulated` (arrival
    /// order from `[devices]`, bit-identical to the simulation) or `real` (the order
    /// replies reach the server).
    #[arg(long, value_enum, default_value = "simulated")]
    pub clock: Clock,
}

/// Which clock orders an asynchronous strategy's arrivals over the network.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The simulated clock of `[devices]`: the same results as `fedpace run`.
    Simulated,
    /// The order in which replies reach the server.
    Real,
}

impl GridArgs {
    /// Refuses `--clock real` where it has no meaning or cannot work.
    fn check_clock(&self, cfg: &fedpace_experiment::ExperimentConfig) -> Result<()> {
        if self.clock == Clock::Simulated {
            return Ok(());
        }
        if !cfg.strategy.is_async() {
            return Err(UsageError(
                "--clock real: the strategy is synchronous; expected an asynchronous one \
                 (fedasync, fedbuff)"
                    .into(),
            )
            .into());
        }
        Ok(())
    }
}

/// Refuses what only the simulation has in a run over the network (`how`: the command):
/// `secure_aggregation.dropout`, the simulation's injected dropouts (over the network
/// clients drop out for real; docs/privacy.md).
fn check_networked(cfg: &fedpace_experiment::ExperimentConfig, how: &str) -> Result<()> {
    match &cfg.secure_aggregation {
        Some(s) if s.dropout != 0.0 => Err(UsageError(format!(
            "secure_aggregation.dropout = {}: the simulation's injected dropouts; expected 0 \
             (or no key) with {how}, where clients drop out for real",
            s.dropout
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Refuses to resume a checkpoint on the other clock than the one it was written on
/// (`how`: the command, for the message): the real clock's saved source is not the
/// simulated clock's (docs/network.md, "Checkpoints on the real clock").
pub fn check_resume_clock(loaded: &Loaded, clock: Clock, how: &str) -> Result<()> {
    // The other way round, the real clock's source refuses the simulated one's state.
    let real = fedpace_deploy::arrivals::written_on_real_clock(&loaded.server);
    match (real, clock) {
        (true, Clock::Simulated) => Err(UsageError(format!(
            "{how}: the checkpoint was written on the real clock (--clock real); expected \
             `fedpace server --resume RUN_DIR --clock real`"
        ))
        .into()),
        _ => Ok(()),
    }
}

impl GridArgs {
    /// The checked settings (a usage error names the flag).
    pub fn config(&self) -> Result<NetGridConfig> {
        if !(self.deadline.is_finite() && self.deadline > 0.0 && self.deadline < 1e9) {
            return Err(UsageError(format!(
                "--deadline = {}: expected a positive number of seconds",
                self.deadline
            ))
            .into());
        }
        let d = Duration::from_secs_f64(self.deadline);
        let c = NetGridConfig {
            train_deadline: d,
            eval_deadline: d,
            quorum_fraction: self.quorum_fraction,
            ..Default::default()
        };
        c.validate()
            .map_err(|e| UsageError(e.to_string().replace("grid.", "--").replace('_', "-")))?;
        Ok(c)
    }
}

fn model_bytes(p: &Prepared) -> usize {
    fedpace_core::codec::encode_params(p.initial_model()).len()
}

/// Writes `traffic.csv`: bytes per client, round and kind (docs/network.md).
fn write_traffic(dir: &Path, rows: &[ClientTraffic]) -> Result<()> {
    let mut s = String::from(
        "round,client,kind,sent,received,wire_sent,wire_received,\
         model,plan,instruction_payloads,update,reply_payloads\n",
    );
    for t in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            t.round,
            t.client,
            t.kind.name(),
            t.sent,
            t.received,
            t.wire_sent,
            t.wire_received,
            t.model,
            t.plan,
            t.instruction_payloads,
            t.update,
            t.reply_payloads
        ));
    }
    Ok(write_bytes_atomic(&dir.join("traffic.csv"), s.as_bytes())?)
}

/// `fedpace run --traffic`: the simulation, its communication computed per client and
/// round (`fedpace_deploy::CountingGrid`) into `traffic.csv`.
pub fn run_counted(prepared: Prepared, out: &Path, label: &str) -> Result<serde_json::Value> {
    if let Some(mb) = prepared.config().state.memory_mb {
        return Err(UsageError(format!(
            "--traffic: state.memory_mb = {mb}: the counted simulation keeps client states in \
             memory; expected no [state] memory budget with --traffic"
        ))
        .into());
    }
    let sim = fedpace_sim::SimGrid::new(
        prepared.shared_pool(),
        prepared.client_factory(),
        prepared.threads(),
    )?;
    let mut grid = fedpace_deploy::CountingGrid::new(sim);
    let summary = run_with(prepared, &mut grid, out, label, None)?;
    write_traffic(out, &grid.take_traffic())?;
    Ok(summary)
}

/// Runs `prepared` on `grid` into `out` (from `resume` when given) with the progress
/// bar; writes `traffic.csv`.
fn run_networked(
    prepared: Prepared,
    grid: &mut NetGrid,
    out: &Path,
    label: &str,
    resume: Option<Loaded>,
    clock: Clock,
) -> Result<serde_json::Value> {
    if clock == Clock::Simulated {
        let summary = run_with(prepared, grid, out, label, resume)?;
        write_traffic(out, &grid.take_traffic())?;
        return Ok(summary);
    }
    let mut source = grid.real_clock();
    let summary =
        crate::runner::execute_on(prepared, Some(grid), Some(&mut source), out, label, resume)?;
    eprintln!(
        "{label}: real clock: {} dispatches sent, {} arrived",
        source.sent(),
        source.arrived()
    );
    let mut rows = grid.take_traffic();
    rows.extend(source.take_traffic());
    rows.sort_by_key(|r| (r.round, r.client, r.kind));
    write_traffic(out, &rows)?;
    Ok(summary)
}

/// Runs `prepared` on `grid` into `out` with the progress bar.
fn run_with(
    prepared: Prepared,
    grid: &mut dyn fedpace_core::Grid,
    out: &Path,
    label: &str,
    resume: Option<Loaded>,
) -> Result<serde_json::Value> {
    crate::runner::execute_on(prepared, Some(grid), None, out, label, resume)
}

/// `--nodes` of `--grid loopback` for `clients` clients: as given, or 2 and more when
/// the clients need more (a node hosts at most `Limits::max_clients_per_node`); a
/// number given that is too small is refused, saying how many are needed.
fn loopback_nodes(given: Option<usize>, clients: usize) -> Result<usize> {
    let limits = fedpace_net::Limits::default();
    let need = limits.nodes_for(clients);
    let per_node = limits.max_clients_per_node;
    match given {
        Some(0) => Err(UsageError("--nodes = 0: expected at least 1".into()).into()),
        Some(n) if n < need => Err(UsageError(format!(
            "--nodes = {n}: {clients} clients need at least {need} nodes (a node hosts at \
             most {per_node}); pass --nodes {need} or more, or leave it out"
        ))
        .into()),
        Some(n) => Ok(n),
        None => Ok(need.max(2)),
    }
}

/// `fedpace run --grid loopback`: a TLS server and node threads on this machine.
pub fn run_loopback(
    prepared: Prepared,
    out: &Path,
    label: &str,
    nodes: Option<usize>,
    grid: &GridArgs,
) -> Result<serde_json::Value> {
    grid.check_clock(prepared.config())?;
    check_networked(prepared.config(), "--grid loopback")?;
    let nodes = loopback_nodes(nodes, prepared.shared_pool().len())?;
    let opts = LoopbackOptions {
        nodes,
        workers_per_node: prepared.threads().div_ceil(nodes.max(1)).max(1),
        model_bytes: Some(model_bytes(&prepared)),
        grid: grid.config()?,
        ..Default::default()
    };
    let mut lb = Loopback::start(
        prepared.shared_pool(),
        prepared.client_factory(),
        fedpace_algos::builtin().codecs.clone(),
        &opts,
    )
    .map_err(anyhow::Error::msg)?;
    let summary = run_networked(prepared, lb.grid(), out, label, None, grid.clock)?;
    lb.finish().map_err(anyhow::Error::msg)?;
    Ok(summary)
}

/// TLS and key files of `fedpace server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on, e.g. 127.0.0.1:7150 or 0.0.0.0:7150.
    #[arg(long)]
    pub listen: String,
    /// The key ring (TOML) of the nodes allowed to join (`fedpace keys generate`).
    #[arg(long)]
    pub keys: PathBuf,
    /// Server certificate chain (PEM); with --tls-key. `fedpace keys ca` writes one.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    pub tls_key: PathBuf,
    /// Clients to wait for before the first round (default: every client of the pool).
    #[arg(long)]
    pub min_clients: Option<usize>,
    /// Seconds to wait for them.
    #[arg(long, default_value_t = 600)]
    pub wait: u64,
    /// Check a signature on every request, instead of once per connection and a token after
    /// it (for a TLS-terminating proxy that is not trusted with the nodes' bodies;
    /// docs/network.md, "Authentication").
    #[arg(long)]
    pub sign_every_request: bool,
}

/// `--listen`: HOST:PORT, the host an address or a name (`localhost:7150`).
fn listen_address(listen: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = |e: &dyn std::fmt::Display| -> anyhow::Error {
        UsageError(format!(
            "--listen = {listen}: {e}; expected HOST:PORT, e.g. 127.0.0.1:7150 or 0.0.0.0:7150"
        ))
        .into()
    };
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    match listen.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| bad(&"the name has no address")),
        Err(e) => Err(bad(&e)),
    }
}

/// `--tls-cert` and `--tls-key`, read and checked to be what they say (each error names
/// its flag).
fn server_tls(args: &ServerArgs) -> Result<ServerTls> {
    let read = |flag: &str, path: &Path, kind: &str, what: &str| -> Result<Vec<u8>> {
        let pem = std::fs::read(path)
            .map_err(|e| UsageError(format!("{flag} {}: {e}", path.display())))?;
        if !contains_pem(&pem, kind) {
            return Err(UsageError(format!(
                "{flag} {}: no {kind} block; expected {what} in PEM, e.g. from `fedpace keys ca`",
                path.display()
            ))
            .into());
        }
        Ok(pem)
    };
    Ok(ServerTls {
        cert_pem: read(
            "--tls-cert",
            &args.tls_cert,
            "CERTIFICATE",
            "the server certificate (server.pem)",
        )?,
        key_pem: read(
            "--tls-key",
            &args.tls_key,
            "PRIVATE KEY",
            "the server's private key (server-key.pem)",
        )?,
    })
}

/// Seconds a finished server waits for every node to hear that the run is over (and
/// leave, which is how the server knows it heard).
const FINISH_LINGER: Duration = Duration::from_secs(10);

/// Where a run directory records the server's own test set (`--test-data`), so that
/// `fedpace server --resume` evaluates on the same one.
const TEST_SET_FILE: &str = "server-test-set.json";

/// `server-test-set.json`'s record of a test set: absolute paths, the format's name, the
/// role.
fn test_set_record(t: &fedpace_data::OwnData) -> serde_json::Value {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let format = fedpace_data::OwnFormat::ALL
        .iter()
        .find(|(_, g)| *g == t.format)
        .map_or("?", |(n, _)| *n);
    serde_json::json!({
        "path": abs(&t.path),
        "format": format,
        "labels": t.labels.as_deref().map(abs),
        "role": t.role,
    })
}

/// The server's test set for this start: `given` (`--test-data …`) on a new run (recorded
/// in `out/server-test-set.json` once it is read); on `--resume`, the one recorded there
/// — `given` may repeat it but not change it, and a run that had none cannot gain one
/// halfway.
fn recorded_test_set(
    out: &Path,
    given: Option<fedpace_data::OwnData>,
    resume: bool,
) -> Result<Option<fedpace_data::OwnData>> {
    if !resume {
        return Ok(given);
    }
    let file = out.join(TEST_SET_FILE);
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", file.display()))?;
            let field = |k: &str| v[k].as_str().map(PathBuf::from);
            let format = v["format"].as_str().and_then(|n| {
                fedpace_data::OwnFormat::ALL
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map(|(_, f)| *f)
            });
            match (field("path"), format) {
                (Some(path), Some(format)) => Some(fedpace_data::OwnData {
                    format,
                    path,
                    labels: field("labels"),
                    role: v["role"].as_str().map(str::to_string),
                }),
                _ => {
                    return Err(UsageError(format!(
                        "{}: not a test-set record (expected path and format)",
                        file.display()
                    ))
                    .into())
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", file.display())),
    };
    match (given, recorded) {
        (None, recorded) => {
            if let Some(r) = &recorded {
                eprintln!(
                    "fedpace server --resume: the run's test set, {} (from {})",
                    r.path.display(),
                    file.display()
                );
            }
            Ok(recorded)
        }
        (Some(g), Some(r)) if test_set_record(&g) == test_set_record(&r) => Ok(Some(r)),
        (Some(g), Some(r)) => Err(UsageError(format!(
            "--test-data {}: this run evaluates on {} ({}); expected the same test set, \
             or no --test-data, with --resume",
            g.path.display(),
            r.path.display(),
            file.display()
        ))
        .into()),
        (Some(g), None) => Err(UsageError(format!(
            "--test-data {}: this run had no test set of the server's own before its \
             checkpoint; expected no --test-data with --resume",
            g.path.display()
        ))
        .into()),
    }
}

/// `fedpace server CONFIG --listen ADDR`: waits for the clients, builds its pool from
/// what they reported at registration (`fedpace_deploy::meta`), and runs the rounds. With
/// `[input]` in the file the server reads no data (docs/network.md). With `resume`
/// (`fedpace server --resume RUN_DIR`) it continues the run in `out` from its checkpoint.
/// When the run is over the nodes are told so (they exit); a run stopped by a signal or a
/// crash does not tell them, and they wait for the server to come back. `test` is a test
/// set of the server's own (`--test-data`), read and checked before listening.
pub fn server(
    experiment: Experiment,
    args: &ServerArgs,
    test: Option<fedpace_data::OwnData>,
    grid: &GridArgs,
    out: &Path,
    label: &str,
    resume: Option<Loaded>,
) -> Result<serde_json::Value> {
    grid.check_clock(experiment.config())?;
    check_networked(experiment.config(), "fedpace server")?;
    let clock = grid.clock;
    if let Some(cp) = &resume {
        check_resume_clock(cp, clock, "fedpace server --resume")?;
    }
    let listen = listen_address(&args.listen)?;
    let tls = server_tls(args)?;
    if !args.keys.is_file() {
        return Err(UsageError(format!(
            "--keys {}: no such key ring; expected the file `fedpace keys generate` writes",
            args.keys.display()
        ))
        .into());
    }
    keys::list(&args.keys).map_err(|e| {
        UsageError(format!(
            "--keys {e}; expected the key ring `fedpace keys generate --ring` writes"
        ))
    })?;
    let cfg = experiment.config().clone();
    let test = recorded_test_set(out, test, resume.is_some())?;
    let test = match test {
        Some(t) => {
            let set = fedpace_experiment::network::server_test_set(&cfg, &t)?;
            if resume.is_none() {
                std::fs::create_dir_all(out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let text = serde_json::to_string_pretty(&test_set_record(&t))? + "\n";
                write_bytes_atomic(&out.join(TEST_SET_FILE), text.as_bytes())?;
            }
            Some(set)
        }
        None => None,
    };
    // Before any client: the model's size (the message limits) and, from the file, how
    // many clients to wait for. Without [input] the server reads the data set for these.
    let (bytes, expected) = match fedpace_experiment::network::input_model_bytes(&cfg)? {
        Some(b) => (b, cfg.data.num_clients()),
        None => {
            let p = experiment.prepare()?;
            (model_bytes(&p), Some(p.shared_pool().len()))
        }
    };
    let want = match (args.min_clients, expected) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(UsageError(format!(
                "--min-clients: data.source = \"{}\" does not say how many clients there are; \
                 expected --min-clients N",
                cfg.data.source().name()
            ))
            .into())
        }
    };
    let mut scfg = ServerConfig::new(listen, Some(tls), KeySource::File(args.keys.clone()));
    scfg.limits = Limits::for_model(bytes);
    scfg.connection_tokens = !args.sign_every_request;
    let server = Arc::new(Server::start(scfg).map_err(|e| match e {
        fedpace_net::Error::Listen { .. } => {
            UsageError(format!("--listen: {e} (another server on that port?)"))
        }
        e => UsageError(e.to_string()),
    })?);
    eprintln!(
        "{label}: listening on {}, waiting for {want} clients",
        server.local_addr()
    );
    // In slices, so that SIGINT/SIGTERM ends the wait (nothing has run: nothing to write).
    let until = std::time::Instant::now() + Duration::from_secs(args.wait);
    let got = loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let got = server.wait_for_clients(want, left.min(Duration::from_millis(100)));
        if got >= want || left.is_zero() {
            break got;
        }
        if let Some(stop) = crate::signals::requested() {
            let message = format!(
                "stopped by {} while waiting for clients ({got} of {want} registered): no round \
                 ran, nothing written",
                stop.name()
            );
            return Err(crate::Interrupted { stop, message }.into());
        }
    };
    if got < want {
        anyhow::bail!(
            "{got} of {want} clients connected within {} s (--wait)",
            args.wait
        );
    }
    let registry = fedpace_algos::builtin().codecs.clone();
    let pool = meta::registered_pool(
        &server,
        server.clients(),
        &registry,
        Some(&cfg.client.share),
    )
    .map_err(anyhow::Error::msg)?;
    let samples: u64 = pool.iter().map(|c| c.num_train).sum();
    eprintln!(
        "{label}: {} clients registered, {samples} training samples in all",
        pool.len()
    );
    let mut prepared = experiment.prepare_server(Arc::new(pool))?;
    if let Some(test) = test {
        eprintln!(
            "{label}: central evaluation on --test-data, {} samples",
            test.len()
        );
        prepared = prepared.with_test_set(test)?;
    }
    if prepared.central().is_none() {
        eprintln!(
            "{label}: no held-out test set on the server: central evaluation off (every \
             client evaluates on its own test split)"
        );
    }
    let mut grid = NetGrid::new(
        server.clone(),
        prepared.shared_pool(),
        registry,
        grid.config()?,
    )?;
    if let Some(cp) = &resume {
        // The checkpoint's round counts training rounds; an asynchronous run's
        // dispatch numbers are not in the checkpoint's header: 0 keeps every state.
        let round = if prepared.config().strategy.is_async() {
            0
        } else {
            u64::from(cp.meta.round)
        };
        grid.resumed_from(round);
    }
    let summary = run_networked(prepared, &mut grid, out, label, resume, clock)?;
    if summary["interrupted"].as_bool() != Some(true) {
        let told = server.finish(FINISH_LINGER);
        eprintln!("{label}: the run is over; {told} node(s) told");
    }
    let s = server.stats();
    eprintln!(
        "{label}: requests admitted: {} signed, {} by connection token; {} refused",
        s.signed_requests, s.token_requests, s.refused_requests
    );
    Ok(summary)
}

/// What a node needs to reach the server.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// The server, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// This node's credential (`fedpace keys generate --out`).
    #[arg(long)]
    pub key: PathBuf,
    /// The CA certificate that signed the server's (`fedpace keys ca` writes ca.pem).
    #[arg(long)]
    pub ca: PathBuf,
    /// The name in the server's certificate.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Clients run at once.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Keep each client's state (optimiser moments, control variates, personal layers)
    /// in this directory, across restarts (default: in memory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds without an answer from the server (gone, restarting) after which the node
    /// exits with an error; a server restarted within this is ridden out.
    #[arg(long, default_value_t = 600)]
    pub give_up: u64,
}

impl NodeArgs {
    /// Refuses flag values that cannot work, before any data is read: `--server` must be
    /// HOST:PORT (no scheme: the node always speaks TLS), `--workers` and `--give-up`
    /// positive.
    pub fn check(&self) -> Result<()> {
        let bad = |expected: &str| -> anyhow::Error {
            UsageError(format!("--server = {}: expected {expected}", self.server)).into()
        };
        if self.server.contains("://") {
            return Err(bad(
                "HOST:PORT without a scheme, e.g. 127.0.0.1:7150 (the node always uses TLS)",
            ));
        }
        match self.server.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(bad(
                    "HOST:PORT with a port in 1..=65535, e.g. 127.0.0.1:7150",
                ))
            }
        }
        if self.workers == 0 {
            return Err(UsageError("--workers = 0: expected at least 1".into()).into());
        }
        if self.give_up == 0 {
            return Err(
                UsageError("--give-up = 0: expected a positive number of seconds".into()).into(),
            );
        }
        Ok(())
    }
}

/// Whether PEM text holds a `-----BEGIN …KIND-----` block.
fn contains_pem(pem: &[u8], kind: &str) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")))
}

/// `fedpace node` / `fedpace client --partition-of`: hosts `clients` of the experiment
/// (their partitions of its data set) until the server ends the session or the process
/// is stopped. Each client reports what the experiment's pool says of it (sizes, shared
/// statistics; `device`, when given, as its device class).
pub fn node(
    prepared: &Prepared,
    clients: Range<u64>,
    args: &NodeArgs,
    device: Option<&str>,
) -> Result<()> {
    let pool = prepared.shared_pool();
    let n = pool.len() as u64;
    if clients.end > n {
        return Err(UsageError(format!(
            "--clients {}..{}: the experiment has clients 0..{n}",
            clients.start, clients.end
        ))
        .into());
    }
    let mut metadata = Vec::new();
    for id in clients.clone() {
        let mut info = pool.info(id)?;
        if let Some(d) = device {
            info.device = Some(d.to_string());
        }
        metadata.push((id, meta::encode(&info).map_err(anyhow::Error::msg)?));
    }
    let what = format!("node: clients {}..{}", clients.start, clients.end);
    serve(
        prepared.client_factory(),
        clients,
        metadata,
        model_bytes(prepared),
        args,
        &what,
    )
}

/// `fedpace client CONFIG --data PATH`: one client with its own data.
pub fn own_client(client: OwnClient, args: &NodeArgs) -> Result<()> {
    let id = client.info.id;
    eprintln!("{}", client.description);
    let metadata = vec![(id, meta::encode(&client.info).map_err(anyhow::Error::msg)?)];
    serve(
        client.factory,
        id..id + 1,
        metadata,
        client.model_bytes,
        args,
        &format!("client {id}"),
    )
}

/// Connects as a node hosting `clients` (made by `factory`, described by `metadata`)
/// and answers instructions until the server ends the session or a signal stops it.
fn serve(
    factory: fedpace_core::ClientFactory,
    clients: Range<u64>,
    metadata: Vec<(u64, bytes::Bytes)>,
    model_bytes: usize,
    args: &NodeArgs,
    what: &str,
) -> Result<()> {
    args.check()?;
    let tls = ClientTls::from_file(&args.ca, &args.server_name)
        .map_err(|e| UsageError(format!("--ca {e}")))?;
    if !contains_pem(&tls.ca_pem, "CERTIFICATE") {
        return Err(UsageError(format!(
            "--ca {}: no CERTIFICATE block; expected the CA certificate (PEM) that signed the \
             server's, e.g. ca.pem from `fedpace keys ca`",
            args.ca.display()
        ))
        .into());
    }
    let credential = Credential::load(&args.key).map_err(|e| {
        UsageError(format!(
            "--key {e}; expected the node credential `fedpace keys generate --out` writes"
        ))
    })?;
    let mut config = NodeConfig::new(args.server.clone(), Some(tls), credential, vec![clients]);
    let limits = Limits::for_model(model_bytes);
    config.max_instruction_payload = limits.max_instruction_payload;
    config.pull_max_bytes = limits.max_pull_bytes;
    config.metadata = metadata;
    config.give_up = Duration::from_secs(args.give_up);
    let registry = fedpace_algos::builtin().codecs.clone();
    let mut host = ClientHost::new(factory, registry.clone());
    if let Some(dir) = &args.state_dir {
        host = host.with_state_dir(StateDir::new(dir, registry).map_err(UsageError)?);
    }
    eprintln!(
        "{what}: waiting up to {} s for {} to answer (--give-up)",
        args.give_up, args.server
    );
    let node = Node::connect(config).with_context(|| format!("{what}: connecting"))?;
    eprintln!("{what} connected to {}", args.server);
    let stop = AtomicBool::new(false);
    let stats = std::thread::scope(|s| {
        s.spawn(|| {
            // Until a signal, or until serving ended (the server's run is over).
            while crate::signals::requested().is_none()
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let r = node.serve(args.workers, &stop, |ins| host.handle(ins));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    let stats = stats?;
    if stats.finished {
        eprintln!(
            "{what}: the server's run is over; {} instructions answered",
            stats.instructions
        );
        return Ok(());
    }
    let _ = node.leave();
    eprintln!("{what}: {} instructions answered", stats.instructions);
    Ok(())
}

/// `fedpace keys …`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysAction {
    /// Write a local CA and a server certificate for trying a federation (DIR/ca.pem,
    /// ca-key.pem, server.pem, server-key.pem).
    Ca {
        /// Directory to write into.
        #[arg(long)]
        dir: PathBuf,
        /// Names the server certificate is valid for (DNS names or IP addresses).
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
    /// Add a node to the key ring (created if missing) and write its credential.
    Generate {
        /// The key ring.
        #[arg(long)]
        ring: PathBuf,
        /// The node's name.
        #[arg(long)]
        name: String,
        /// Client ids it may host, START..END (end excluded); repeat for several ranges.
        #[arg(long = "clients", required = true)]
        clients: Vec<String>,
        /// Where to write the node's credential (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the nodes of a key ring.
    List {
        /// The key ring.
        #[arg(long)]
        ring: PathBuf,
    },
    /// Revoke a node (the server refuses it within seconds, without a restart).
    Revoke {
        /// The key ring.
        #[arg(long)]
        ring: PathBuf,
        /// The node's name.
        #[arg(long)]
        name: String,
    },
}

/// Parses `START..END`.
pub fn parse_range(s: &str, what: &str) -> Result<Range<u64>> {
    keys::parse_range(s).map_err(|e| UsageError(format!("{what} {s}: {e}")).into())
}

/// Runs a `fedpace keys` action.
pub fn keys_command(action: KeysAction) -> Result<()> {
    let usage = |e: fedpace_net::Error| UsageError(e.to_string());
    match action {
        KeysAction::Ca { dir, names } => {
            let ca = fedpace_net::generate_local_ca(&dir, &names).map_err(usage)?;
            println!(
                "CA {} (give it to every node); server certificate {} and key {} for {}",
                ca.ca_cert.display(),
                ca.server_cert.display(),
                ca.server_key.display(),
                names.join(", ")
            );
        }
        KeysAction::Generate {
            ring,
            name,
            clients,
            out,
        } => {
            let ranges = clients
                .iter()
                .map(|c| parse_range(c, "--clients"))
                .collect::<Result<Vec<_>>>()?;
            if out.exists() {
                // Never over another node's credential (its key would be lost).
                return Err(UsageError(format!(
                    "--out {}: exists; expected a new file (remove it first to replace it)",
                    out.display()
                ))
                .into());
            }
            keys::generate(&ring, &name, ranges, &out).map_err(usage)?;
            println!(
                "{name}: added to {}, credential in {}",
                ring.display(),
                out.display()
            );
        }
        KeysAction::List { ring } => {
            println!(
                "{:<20} {:<9} {:<24} PUBLIC KEY",
                "NAME", "REVOKED", "CLIENTS"
            );
            for e in keys::list(&ring).map_err(usage)? {
                let ranges: Vec<String> = e
                    .clients
                    .iter()
                    .map(|r| format!("{}..{}", r.start, r.end))
                    .collect();
                let key: String = e.public_key.iter().map(|b| format!("{b:02x}")).collect();
                println!(
                    "{:<20} {:<9} {:<24} {key}",
                    e.name,
                    if e.revoked { "yes" } else { "no" },
                    ranges.join(",")
                );
            }
        }
        KeysAction::Revoke { ring, name } => {
            keys::revoke(&ring, &name).map_err(usage)?;
            println!("{name}: revoked in {}", ring.display());
        }
    }
    Ok(())
}
