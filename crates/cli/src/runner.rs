//! Turns a validated [`ExperimentConfig`] into a running simulation and its outputs.

use crate::config::ExperimentConfig;
use crate::output::RunWriter;
use anyhow::{Context, Result};
use fedpace_algos::StandardClient;
use fedpace_algos::StrategyName;
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::rng::{derive_seed, Purpose};
use fedpace_core::round::RunOptions;
use fedpace_core::{ClientFactory, RatePlan, RatePolicy, Strategy};
use fedpace_sim::{AsyncOptions, DataPool, DeviceClasses, Devices, SimGrid, Systems};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// An error the user must fix (bad config, missing data): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// The data directory: the config's, else `$FEDPACE_DATA_DIR`, else `data`.
pub fn data_dir(cfg_dir: Option<&Path>) -> PathBuf {
    cfg_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FEDPACE_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// `runs/<name>-<UTC timestamp>`, made unique.
pub fn default_out_dir(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = PathBuf::from("runs").join(format!("{name}-{}", utc_stamp(secs)));
    let mut p = base.clone();
    let mut i = 2;
    while p.exists() {
        p = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    p
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// How the run is driven: the synchronous round loop or the asynchronous event loop.
#[allow(clippy::large_enum_variant)] // one value per run
pub enum Mode {
    /// `fedpace_core::run` (with the devices wrapper when `[devices]` is set).
    Sync(Box<dyn Strategy>),
    /// `fedpace_sim::run_async`.
    Async {
        /// Server half.
        strategy: Box<dyn AsyncStrategy>,
        /// Rate policy (plans per dispatch).
        policy: Box<dyn RatePolicy>,
        /// Base plan.
        base_plan: RatePlan,
        /// Device profiles (the simulated clock).
        devices: Devices,
    },
}

impl Mode {
    fn describe(&self) -> String {
        match self {
            Mode::Sync(s) => s.describe(),
            Mode::Async { strategy, .. } => strategy.describe(),
        }
    }
}

/// Everything built from a config, checked before any file is written.
pub struct Prepared {
    strategy: Mode,
    pub(crate) grid: SimGrid,
    init: fedpace_params::ParamTree,
    groups: Vec<String>,
    description: String,
}

/// Builds data, model, strategy and grid. Every user error surfaces here, before the
/// output directory exists.
pub fn prepare(cfg: &ExperimentConfig, threads: usize) -> Result<Prepared> {
    let dir = data_dir(cfg.data_dir.as_deref());
    let fed =
        fedpace_data::build(&cfg.data, cfg.seed, &dir).map_err(|e| UsageError(e.to_string()))?;
    let input = match &fed.sample_shape {
        fedpace_data::InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s.clone()),
        fedpace_data::InputShape::Tokens { seq_len, vocab } => fedpace_nn::InputShape::Tokens {
            seq_len: *seq_len,
            vocab: *vocab,
        },
    };
    let models =
        fedpace_nn::factory_with_grain(&cfg.model, &input, fed.num_classes, cfg.client_threads)
            .map_err(|e| UsageError(format!("model: {e}")))?;
    let model = models().map_err(|e| UsageError(format!("model: {e}")))?;
    let spec = model.spec();
    let init = model.init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?;
    let groups = spec.groups().to_vec();
    let base_plan = cfg.base_plan(&groups).map_err(UsageError)?;
    let data = fed.data.clone();
    let classes = DeviceClasses::new(&cfg.device_classes, data.num_clients(), cfg.seed);
    let central_models = models.clone();
    let pool = DataPool::new(data.clone(), classes).context("building the client pool")?;
    let factory: ClientFactory = Arc::new(move |id| {
        let d = data.client(id as usize)?;
        Ok(Box::new(StandardClient::new(id, models()?, d)) as Box<dyn fedpace_core::Client>)
    });
    let usage = |e: fedpace_core::Error| UsageError(e.to_string());
    let devices = cfg
        .devices
        .clone()
        .map(|d| Devices::new(d, cfg.seed))
        .transpose()
        .map_err(usage)?;
    // Group labels (`personal_groups`, `frozen_groups`) are checked against the model
    // here, before anything is written.
    cfg.strategy
        .check_groups(&spec, &base_plan)
        .map_err(usage)?;
    let strategy = if cfg.strategy.is_async() {
        let mut base_plan = base_plan;
        if cfg.strategy.name == StrategyName::Fedasync {
            // FedAsync's client-side proximal term ρ (ALGORITHMS.md C.8).
            base_plan.prox_mu = cfg.strategy.mu;
        }
        Mode::Async {
            strategy: cfg.strategy.build_async().map_err(usage)?,
            policy: cfg
                .policy
                .build_for(&groups)
                .map_err(|e| UsageError(e.to_string()))?,
            base_plan,
            devices: match devices {
                Some(d) => d,
                None => Devices::new(Default::default(), cfg.seed).map_err(usage)?,
            },
        }
    } else {
        let s = cfg
            .strategy
            .build(
                base_plan,
                cfg.policy
                    .build_for(&groups)
                    .map_err(|e| UsageError(e.to_string()))?,
            )
            .map_err(usage)?;
        Mode::Sync(match devices {
            Some(d) => Box::new(Systems::new(s, d)),
            None => s,
        })
    };
    let mut grid = SimGrid::new(pool, factory, threads)?;
    if let Some(mb) = cfg.state.memory_mb {
        let dir = cfg.state.dir.clone().unwrap_or_else(std::env::temp_dir);
        let store = fedpace_sim::SpillStore::new(&dir, (mb as usize) << 20).with_context(|| {
            format!("state.dir = {}: creating the state database", dir.display())
        })?;
        grid = grid.with_store(Box::new(store));
    }
    if let Some(test) = fed.global_test.clone() {
        grid = grid.with_central_test(test, central_models);
    }
    Ok(Prepared {
        description: format!(
            "{} · {} · {} clients · {} params · {}",
            fed.description,
            model_name(cfg),
            grid_len(&grid),
            spec.total_len(),
            strategy.describe()
        ),
        strategy,
        grid,
        init,
        groups,
    })
}

fn grid_len(g: &SimGrid) -> usize {
    use fedpace_core::Grid;
    g.pool().len()
}

fn model_name(cfg: &ExperimentConfig) -> String {
    serde_json::to_value(&cfg.model)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "model".into())
}

/// Runs a prepared experiment without writing anything (for `fedpace bench`).
pub fn run_quiet(cfg: &ExperimentConfig, p: Prepared) -> Result<fedpace_core::round::RunOutcome> {
    Ok(run_quiet_keep(cfg, p)?.0)
}

/// [`run_quiet`], also handing back the grid (to inspect its state store).
pub fn run_quiet_keep(
    cfg: &ExperimentConfig,
    p: Prepared,
) -> Result<(fedpace_core::round::RunOutcome, SimGrid)> {
    run_observed(cfg, p, &mut crate::bench::Quiet)
}

/// A synchronous run reporting to `observer` (benchmarks), handing back the grid.
pub fn run_observed(
    cfg: &ExperimentConfig,
    mut p: Prepared,
    observer: &mut dyn fedpace_core::round::Observer,
) -> Result<(fedpace_core::round::RunOutcome, SimGrid)> {
    let opts = run_options(cfg);
    let Mode::Sync(strategy) = &mut p.strategy else {
        anyhow::bail!("benchmarks run synchronous strategies only");
    };
    let outcome = fedpace_core::run(strategy.as_mut(), &mut p.grid, p.init, &opts, observer)?;
    Ok((outcome, p.grid))
}

/// The run options of a config (the synchronous loop's).
pub fn run_options(cfg: &ExperimentConfig) -> RunOptions {
    RunOptions {
        rounds: cfg.rounds,
        seed: cfg.seed,
        eval_every: cfg.eval.every,
        finetune_steps: cfg.eval.finetune_steps,
        personalized: cfg.eval.personalized,
        max_test_samples: cfg.eval.max_test_samples,
        keep_records: false,
        eval_clients: cfg.eval.max_clients,
    }
}

/// Runs a prepared experiment, writing into `out`. Returns `summary.json`'s content.
pub fn execute(
    cfg: &ExperimentConfig,
    mut p: Prepared,
    out: &Path,
    label: &str,
) -> Result<serde_json::Value> {
    let start = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("config.toml"), cfg.to_toml())?;
    eprintln!("{label}: {}", p.description);
    let mut writer = RunWriter::create(out, label, cfg.rounds, cfg.output.trace, p.groups.clone())?;
    let opts = run_options(cfg);
    let outcome = match &mut p.strategy {
        Mode::Sync(s) => fedpace_core::run(s.as_mut(), &mut p.grid, p.init, &opts, &mut writer)?,
        Mode::Async {
            strategy,
            policy,
            base_plan,
            devices,
        } => fedpace_sim::run_async(
            strategy.as_mut(),
            policy.as_mut(),
            base_plan,
            &mut p.grid,
            devices,
            p.init,
            &AsyncOptions {
                updates: cfg.rounds,
                concurrency: cfg.strategy.concurrency,
                rate_decay: cfg.strategy.rate_decay,
                seed: cfg.seed,
                eval_every: cfg.eval.every,
                finetune_steps: cfg.eval.finetune_steps,
                max_test_samples: cfg.eval.max_test_samples,
                keep_records: false,
                eval_clients: cfg.eval.max_clients,
            },
            &mut writer,
        )?,
    };
    let header = json!({
        "name": cfg.name,
        "seed": cfg.seed,
        "strategy": p.strategy.describe(),
        "policy": cfg.policy.name(),
        "threads": p.grid.threads(),
    });
    use fedpace_core::Grid;
    let pool = p.grid.pool();
    writer.finish(
        pool.as_ref(),
        &outcome.final_eval,
        &outcome.global,
        header,
        start.elapsed().as_secs_f64(),
    )
}
