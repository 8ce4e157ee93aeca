//! From a validated [`ExperimentConfig`] to a [`Prepared`] experiment: data, model,
//! parameter groups, strategy, rate policy and the simulation grid, every user error
//! surfacing before anything runs or is written (docs/library.md).

use crate::config::ExperimentConfig;
use crate::{Error, Result};
use fedpace_algos::{Built, StandardClient};
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::rng::{derive_seed, Purpose};
use fedpace_core::{ClientFactory, ClientPool, Disclosed, RatePlan, RatePolicy, Strategy};
use fedpace_params::ParamTree;
use fedpace_sim::{DataPool, DeviceClasses, Devices, SimGrid, Systems};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The data directory: the config's, else `$FEDPACE_DATA_DIR`, else `data`.
pub fn data_dir(cfg_dir: Option<&Path>) -> PathBuf {
    cfg_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FEDPACE_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// How the run is driven: the synchronous round loop or the asynchronous event loop.
#[allow(clippy::large_enum_variant)] // one value per run
pub(crate) enum Mode {
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
        /// Clients training at once.
        concurrency: usize,
        /// Staleness-decayed client rates.
        rate_decay: bool,
    },
}

impl Mode {
    pub(crate) fn describe(&self) -> String {
        match self {
            Mode::Sync(s) => s.describe(),
            Mode::Async { strategy, .. } => strategy.describe(),
        }
    }
}

/// An experiment built from its config and checked, ready to [`Prepared::run`]: nothing
/// has been written yet.
pub struct Prepared {
    pub(crate) config: ExperimentConfig,
    pub(crate) strategy: Mode,
    pub(crate) grid: SimGrid,
    /// Every client's metadata as the simulator knows it (for `clients.csv`); the grid,
    /// and so the strategy, sees only what clients share.
    pub(crate) pool: Arc<dyn ClientPool>,
    pub(crate) init: ParamTree,
    pub(crate) groups: Vec<String>,
    pub(crate) description: String,
}

impl Prepared {
    /// One line: data, model, clients, parameters, strategy.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The parameter group labels (after the `groups` rules).
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    /// Clients trained at once (the grid's thread pool).
    pub fn threads(&self) -> usize {
        self.grid.threads()
    }
    /// The initial global model.
    pub fn initial_model(&self) -> &ParamTree {
        &self.init
    }
    /// The configuration it was built from.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }
}

/// The most parameters a model may have: 2^28 (1 GiB of f32 a copy; a run holds several
/// copies per thread). fedpace's models are CPU models of at most a few million.
pub const MAX_PARAMS: u128 = 1 << 28;

/// The most f32 values one client's bench data may hold (samples × values per sample):
/// 2^28, 1 GiB.
pub const MAX_CLIENT_VALUES: u128 = 1 << 28;

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux; `None` elsewhere).
fn mem_available() -> Option<u128> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The product of `xs` in u128, `None` past u128 (so past any limit).
fn product(xs: impl IntoIterator<Item = usize>) -> Option<u128> {
    xs.into_iter()
        .try_fold(1u128, |acc, x| acc.checked_mul(x as u128))
}

/// Checks sizes the config decides before anything is allocated: a bench source's
/// `sample_shape × samples_per_client` (checked arithmetic).
fn check_data_sizes(cfg: &ExperimentConfig) -> Result<()> {
    let fedpace_data::DataConfig::Bench(bench) = &cfg.data else {
        return Ok(());
    };
    let shape = bench.sample_shape.clone();
    let samples = bench.samples_per_client;
    let values = product(shape.iter().copied().chain([samples]));
    if values.is_none_or(|v| v > MAX_CLIENT_VALUES) {
        return Err(Error::Setup(format!(
            "data.sample_shape = {shape:?}: with samples_per_client = {samples} a client holds \
             {} values; expected at most {MAX_CLIENT_VALUES} (1 GiB of f32)",
            values.map_or("more than 2^128".to_string(), |v| v.to_string())
        )));
    }
    Ok(())
}

/// Checks one sample of every split against the input shape the model is built for, so
/// a test set of another image size (or a degenerate one) is an error before the run.
fn check_sample_shapes(fed: &fedpace_data::Federation) -> Result<()> {
    use fedpace_core::data::Inputs;
    let want = match &fed.sample_shape {
        fedpace_data::InputShape::Dense(s) => s.clone(),
        fedpace_data::InputShape::Tokens { .. } => return Ok(()),
    };
    let check = |what: &str, d: &dyn fedpace_core::Dataset| -> Result<()> {
        if d.is_empty() {
            return Ok(());
        }
        if let Inputs::Dense { data, sample_shape } = d.batch(&[0]).inputs {
            let n = product(want.iter().copied());
            if data.is_empty() || n != Some(data.len() as u128) {
                return Err(Error::Setup(format!(
                    "data: {} ({what}) has samples of shape {sample_shape:?} ({} values); \
                     expected {want:?} like the training samples",
                    fed.description,
                    data.len()
                )));
            }
        }
        Ok(())
    };
    if fed.data.num_clients() > 0 {
        let c = fed
            .data
            .client(0)
            .map_err(|e| Error::Setup(format!("data: client 0: {e}")))?;
        check("client 0's training split", c.train.as_ref())?;
        check("client 0's test split", c.test.as_ref())?;
    }
    if let Some(t) = &fed.global_test {
        check("the held-out test set", t.as_ref())?;
    }
    Ok(())
}

/// Checks the model's parameter count (checked arithmetic over its tensor shapes)
/// against [`MAX_PARAMS`] and, where `/proc/meminfo` tells, the memory a run needs —
/// about 4 bytes × params × (4 + 4 × threads): the global model, the aggregate, and per
/// training thread a model, a gradient, an update and optimiser state.
fn check_model_size(
    cfg: &ExperimentConfig,
    spec: &fedpace_params::ParamSpec,
    threads: usize,
) -> Result<()> {
    let params = spec.entries().iter().try_fold(0u128, |acc, e| {
        acc.checked_add(product(e.shape.iter().copied())?)
    });
    let name = model_name(cfg);
    match params {
        Some(p) if p <= MAX_PARAMS => {
            let threads = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                threads
            } as u128;
            let need = 4 * p * (4 + 4 * threads);
            if let Some(avail) = mem_available().filter(|&a| need > a) {
                return Err(Error::Setup(format!(
                    "model: {name} has {p} parameters: a run on {threads} thread(s) needs about \
                     {} MiB, more than the {} MiB available; expected a smaller model or fewer \
                     threads",
                    need >> 20,
                    avail >> 20
                )));
            }
            Ok(())
        }
        p => Err(Error::Setup(format!(
            "model: {name} has {} parameters; expected at most {MAX_PARAMS} (1 GiB of f32 a \
             copy): check model.hidden and data.sample_shape",
            p.map_or("more than 2^128".to_string(), |p| p.to_string())
        ))),
    }
}

/// Builds data, model, strategy and grid. Every user error surfaces here, before the
/// output directory exists: sizes are checked before anything is allocated, and one
/// sample of every split is checked against the model's input.
pub(crate) fn prepare(cfg: &ExperimentConfig) -> Result<Prepared> {
    let threads = cfg.threads;
    let dir = data_dir(cfg.data_dir.as_deref());
    check_data_sizes(cfg)?;
    let fed =
        fedpace_data::build(&cfg.data, cfg.seed, &dir).map_err(|e| Error::Setup(e.to_string()))?;
    check_sample_shapes(&fed)?;
    let input = match &fed.sample_shape {
        fedpace_data::InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s.clone()),
        fedpace_data::InputShape::Tokens { seq_len, vocab } => fedpace_nn::InputShape::Tokens {
            seq_len: *seq_len,
            vocab: *vocab,
        },
    };
    let models =
        fedpace_nn::factory_with_grain(&cfg.model, &input, fed.num_classes, cfg.client_threads)
            .map_err(|e| Error::Setup(format!("model: {e}")))?;
    let model = models().map_err(|e| Error::Setup(format!("model: {e}")))?;
    // Parameter groups from the `groups` rules: the same layout with other labels.
    let spec = Arc::new(
        model
            .spec()
            .regroup(&cfg.groups)
            .map_err(|e| Error::Setup(format!("groups: {e}")))?,
    );
    check_model_size(cfg, &spec, threads)?;
    if let Some(d) = &cfg.devices {
        d.check_deadline(spec.total_len())
            .map_err(|e| Error::Setup(e.to_string()))?;
    }
    let init = ParamTree::from_vec(
        spec.clone(),
        model
            .init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?
            .into_vec(),
    )
    .map_err(|e| Error::Failed(e.to_string()))?;
    let groups = spec.groups().to_vec();
    let base_plan = cfg.base_plan(&groups).map_err(Error::Setup)?;
    let data = fed.data.clone();
    let classes = DeviceClasses::new(&cfg.device_classes, data.num_clients(), cfg.seed);
    let central_models = models.clone();
    let pool: Arc<dyn ClientPool> = Arc::new(
        DataPool::new(data.clone(), classes)
            .map_err(|e| Error::Failed(format!("building the client pool: {e}")))?,
    );
    let factory: ClientFactory = Arc::new(move |id| {
        let d = data.client(id as usize)?;
        Ok(Box::new(StandardClient::new(id, models()?, d)) as Box<dyn fedpace_core::Client>)
    });
    let usage = |e: fedpace_core::Error| Error::Setup(e.to_string());
    let devices = cfg
        .devices
        .clone()
        .map(|d| Devices::new(d, cfg.seed))
        .transpose()
        .map_err(usage)?;
    // Group labels (`personal_groups`, `frozen_groups`) are checked against the model
    // here, before anything is written.
    cfg.strategy.check_model(&spec).map_err(usage)?;
    let policy = cfg
        .policy
        .build_for(&groups)
        .map_err(|e| Error::Setup(e.to_string()))?;
    let strategy = match cfg.strategy.build(base_plan, policy).map_err(usage)? {
        Built::Async(a) => Mode::Async {
            strategy: a.strategy,
            policy: a.policy,
            base_plan: a.base_plan,
            devices: match devices {
                Some(d) => d,
                None => Devices::new(Default::default(), cfg.seed).map_err(usage)?,
            },
            concurrency: a.concurrency,
            rate_decay: a.rate_decay,
        },
        Built::Sync(s) => Mode::Sync(match devices {
            Some(d) => Box::new(Systems::new(s, d)),
            None => s,
        }),
    };
    let shared = Disclosed::new(pool.clone(), cfg.client.share.clone());
    let mut grid = SimGrid::new(shared, factory, threads)?;
    let clients = grid_len(&grid);
    if !cfg.strategy.is_async()
        && cfg.strategy.round.fraction.is_none()
        && cfg.strategy.round.clients_per_round > clients
    {
        return Err(Error::Setup(format!(
            "strategy.clients_per_round = {}: more than the {clients} clients of the pool; \
             expected at most {clients} (or strategy.fraction)",
            cfg.strategy.round.clients_per_round
        )));
    }
    // Evaluating every client at once holds each one's instruction, state and reply
    // (about 400 bytes a client; 10 M clients took 1.2 GB in the state store alone).
    if cfg.eval.max_clients.is_none() && cfg.data.effective_test_fraction() > 0.0 {
        let need = 400 * clients as u128;
        if let Some(avail) = mem_available().filter(|&a| need > a / 2) {
            return Err(Error::Setup(format!(
                "eval.max_clients: evaluating all {clients} clients at once needs about {} MiB, \
                 more than half the {} MiB available; set eval.max_clients (e.g. 10000)",
                need >> 20,
                avail >> 20
            )));
        }
    }
    if let Some(mb) = cfg.state.memory_mb {
        let dir = cfg.state.dir.clone().unwrap_or_else(std::env::temp_dir);
        let store = fedpace_sim::SpillStore::new(&dir, (mb as usize) << 20)
            .map_err(|e| {
                Error::Failed(format!(
                    "state.dir = {}: creating the state database: {e}",
                    dir.display()
                ))
            })?
            .with_registry(fedpace_algos::builtin().codecs.clone());
        grid = grid.with_store(Box::new(store));
    }
    if let Some(validation) = fed.global_validation.clone() {
        grid = grid.with_central_validation(validation, central_models.clone());
    }
    if let Some(test) = fed.global_test.clone() {
        grid = grid.with_central_test(test, central_models);
    }
    Ok(Prepared {
        config: cfg.clone(),
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
        pool,
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
