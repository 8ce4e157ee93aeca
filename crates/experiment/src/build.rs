//! From a validated [`ExperimentConfig`] to a [`Prepared`] experiment: data, model,
//! parameter groups, strategy, rate policy and the simulation grid, every user error
//! surfacing before anything runs or is written (docs/library.md).

use crate::config::ExperimentConfig;
use crate::registry::{ModelInput, PolicyInput, Registry};
use crate::{Error, Result};
use fedpace_algos::{Built, StandardClient};
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::rng::{derive_seed, Purpose};
use fedpace_core::{
    CentralEval, ClientFactory, ClientPool, Disclosed, ModelFactory, RatePlan, RatePolicy, Strategy,
};
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
    /// The server's own evaluation (the data's held-out test set, if it has one).
    pub(crate) central: Option<Box<dyn CentralEval>>,
    /// The server's evaluation on the validation part of the held-out set
    /// (`data.validation_fraction > 0`).
    pub(crate) central_validation: Option<Box<dyn CentralEval>>,
    pub(crate) init: ParamTree,
    pub(crate) groups: Vec<String>,
    pub(crate) description: String,
    /// Makes the clients (the simulation grid's, and a network node's).
    pub(crate) factory: ClientFactory,
    /// The pool as the strategy sees it (what clients share).
    pub(crate) shared: Arc<dyn ClientPool>,
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
    /// The server's central evaluation, if it has one (the data's held-out test set:
    /// `summary.json`'s `central`).
    pub fn central(&self) -> Option<&dyn CentralEval> {
        self.central.as_deref()
    }
    /// Replaces the server's central evaluation (`None`: none): a test set of the user's
    /// own, or one the data source does not hold out.
    pub fn with_central(mut self, central: Option<Box<dyn CentralEval>>) -> Self {
        self.central = central;
        self
    }
    /// Makes the experiment's clients: what a network node hosting them runs
    /// ([`Prepared::run_on`]).
    pub fn client_factory(&self) -> ClientFactory {
        self.factory.clone()
    }
    /// The client pool as the strategy sees it (the metadata clients share): what a
    /// server running this experiment over the network knows of its clients.
    pub fn shared_pool(&self) -> Arc<dyn ClientPool> {
        self.shared.clone()
    }
}

/// The most parameters a model may have: 2^28 (1 GiB of f32 a copy; a run holds several
/// copies per thread). fedpace's models are CPU models of at most a few million.
pub const MAX_PARAMS: u128 = 1 << 28;

/// The most f32 values one client's bench data may hold (samples × values per sample):
/// 2^28, 1 GiB; checked by the data crate when the config is read.
pub const MAX_CLIENT_VALUES: u128 = fedpace_data::bench::MAX_VALUES_PER_CLIENT as u128;

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
pub(crate) fn prepare(cfg: &ExperimentConfig, registry: Option<&Registry>) -> Result<Prepared> {
    prepare_with(cfg, registry, None)
}

/// [`prepare`]; with `server`, as the server of a real federation whose clients are
/// `server` (what they reported at registration) and, with `[input]`, without data
/// (crate::network).
pub(crate) fn prepare_with(
    cfg: &ExperimentConfig,
    registry: Option<&Registry>,
    server: Option<Arc<dyn ClientPool>>,
) -> Result<Prepared> {
    let threads = cfg.threads;
    let registered = |what: &str, name: &str| {
        Error::Config(format!(
            "{what} = {name:?} is a registered name: build the experiment through the \
             fedpace_experiment::Registry that holds it"
        ))
    };
    let fed = match &cfg.registered.data {
        Some(name) => registry
            .and_then(|r| r.data(name))
            .cloned()
            .ok_or_else(|| registered("data.source", name))?,
        None => match (&server, &cfg.input) {
            (Some(_), Some(input)) => crate::network::no_data(input),
            _ => {
                let dir = data_dir(cfg.data_dir.as_deref());
                fedpace_data::build(&cfg.data, cfg.seed, &dir)
                    .map_err(|e| Error::Setup(e.to_string()))?
            }
        },
    };
    if let Some(input) = &cfg.input {
        crate::network::check_data(input, &fed, &format!("data: {}", fed.description))?;
    }
    check_sample_shapes(&fed)?;
    let models: ModelFactory = match &cfg.registered.model {
        Some((name, options)) => {
            let build = registry
                .and_then(|r| r.model(name))
                .cloned()
                .ok_or_else(|| registered("model.name", name))?;
            let input = ModelInput {
                sample_shape: fed.sample_shape.clone(),
                num_classes: fed.num_classes,
                options: options.clone(),
            };
            Arc::new(move || build(&input))
        }
        None => {
            let input = match &fed.sample_shape {
                fedpace_data::InputShape::Dense(s) => fedpace_nn::InputShape::Dense(s.clone()),
                fedpace_data::InputShape::Tokens { seq_len, vocab } => {
                    fedpace_nn::InputShape::Tokens {
                        seq_len: *seq_len,
                        vocab: *vocab,
                    }
                }
            };
            fedpace_nn::factory_with_grain(&cfg.model, &input, fed.num_classes, cfg.client_threads)
                .map_err(|e| Error::Setup(format!("model: {e}")))?
        }
    };
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
    let init = match &cfg.model_init {
        Some(path) => load_init(path, &spec)?,
        None => ParamTree::from_vec(
            spec.clone(),
            model
                .init(derive_seed(cfg.seed, 0, 0, Purpose::Init))?
                .into_vec(),
        )
        .map_err(|e| Error::Failed(e.to_string()))?,
    };
    let groups = spec.groups().to_vec();
    let base_plan = cfg.base_plan(&groups).map_err(Error::Setup)?;
    let data = fed.data.clone();
    let classes = DeviceClasses::new(&cfg.device_classes, data.num_clients(), cfg.seed);
    let central_models = models.clone();
    let pool: Arc<dyn ClientPool> = match server {
        Some(registered) => registered,
        None => Arc::new(
            DataPool::new(data.clone(), classes)
                .map_err(|e| Error::Failed(format!("building the client pool: {e}")))?,
        ),
    };
    // `[attack]`: an exact, seeded share of the pool attacks.
    let attack = cfg
        .attack
        .map(|a| (a.attackers(data.num_clients(), cfg.seed), a.attack()));
    let factory: ClientFactory = Arc::new(move |id| {
        let d = data.client(id as usize)?;
        let mut c = StandardClient::new(id, models()?, d);
        if let Some((who, a)) = &attack {
            if who.contains(&id) {
                c = c.with_attack(*a);
            }
        }
        Ok(Box::new(c) as Box<dyn fedpace_core::Client>)
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
    let policy = match &cfg.registered.policy {
        Some((name, options)) => {
            let build = registry
                .and_then(|r| r.policy(name))
                .ok_or_else(|| registered("policy.name", name))?;
            build(&PolicyInput {
                groups: groups.clone(),
                options: options.clone(),
            })
            .map_err(|e| Error::Setup(format!("policy {name:?}: {e}")))?
        }
        None => cfg
            .policy
            .build_for(&groups)
            .map_err(|e| Error::Setup(e.to_string()))?,
    };
    let stages = cfg.stages().map_err(Error::Setup)?;
    let strategy = match cfg
        .strategy
        .build_with(base_plan, policy, stages)
        .map_err(usage)?
    {
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
    let shared: Arc<dyn ClientPool> =
        Arc::new(Disclosed::new(pool.clone(), cfg.client.share.clone()));
    let mut grid = SimGrid::new(shared.clone(), factory.clone(), threads)?;
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
    // The validation part of the held-out set, for whatever tunes or learns.
    let central_validation = fed
        .global_validation
        .clone()
        .map(|validation| {
            fedpace_sim::HeldOut::new(validation, central_models.clone(), grid.threads())
                .map(|h| Box::new(h) as Box<dyn CentralEval>)
        })
        .transpose()?;
    // The server's held-out test set is evaluated by the server (the run's observer),
    // not by the grid, with as many threads as the grid trains clients.
    let central = fed
        .global_test
        .clone()
        .map(|test| {
            fedpace_sim::HeldOut::new(test, central_models, grid.threads())
                .map(|h| Box::new(h) as Box<dyn CentralEval>)
        })
        .transpose()?;
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
        central,
        central_validation,
        init,
        groups,
        factory,
        shared,
    })
}

/// The most bytes a `[model] init` file may have: the largest model fedpace builds
/// ([`MAX_PARAMS`] f32 values) and a header.
const MAX_INIT_BYTES: u64 = 4 * MAX_PARAMS as u64 + (1 << 20);

/// Reads `[model] init`: a safetensors file holding exactly the model's tensors (by
/// name, as in a run's `model.safetensors`), in f32 and of the model's shapes. Every
/// mismatch is an error naming the file and the tensor.
pub(crate) fn load_init(path: &Path, spec: &Arc<fedpace_params::ParamSpec>) -> Result<ParamTree> {
    let at = |m: String| Error::Setup(format!("model.init = {}: {m}", path.display()));
    let size = std::fs::metadata(path)
        .map_err(|e| at(format!("cannot read: {e}")))?
        .len();
    if size > MAX_INIT_BYTES {
        return Err(at(format!(
            "{size} bytes; expected at most {MAX_INIT_BYTES} (a model of at most {MAX_PARAMS} \
             parameters)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| at(format!("cannot read: {e}")))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| at(format!("not a safetensors file: {e}")))?;
    let mut values = Vec::with_capacity(spec.total_len());
    for e in spec.entries() {
        let t = file.tensor(&e.name).map_err(|_| {
            at(format!(
                "no tensor {:?}; the model's tensors are {}",
                e.name,
                spec.entries()
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(at(format!(
                "tensor {:?} is {:?}; expected F32",
                e.name,
                t.dtype()
            )));
        }
        if t.shape() != e.shape.as_slice() {
            return Err(at(format!(
                "tensor {:?} has shape {:?}; the model's is {:?}",
                e.name,
                t.shape(),
                e.shape
            )));
        }
        values.extend(
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| spec.entries().iter().all(|e| &e.name != *n))
        .cloned()
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(at(format!(
            "tensor(s) the model does not have: {} (a model of another architecture?)",
            extra.join(", ")
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let e = spec
            .entries()
            .iter()
            .find(|e| e.range().contains(&i))
            .map_or("?", |e| e.name.as_str());
        return Err(at(format!(
            "tensor {e:?} holds {}; expected finite values",
            values[i]
        )));
    }
    ParamTree::from_vec(spec.clone(), values).map_err(|e| at(e.to_string()))
}

fn grid_len(g: &SimGrid) -> usize {
    use fedpace_core::Grid;
    g.pool().len()
}

fn model_name(cfg: &ExperimentConfig) -> String {
    if let Some((name, _)) = &cfg.registered.model {
        return name.clone();
    }
    serde_json::to_value(&cfg.model)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "model".into())
}
