//! The experiment file (docs/configuration.md; in code, docs/library.md): typed,
//! defaulted, validated before anything runs.
//!
//! Every field has a default, so an empty file is a valid experiment. Errors name the
//! file, the dotted key, the value and what was expected, on one line.

use crate::Error;
use fedpace_algos::attack::AttackConfig;
use fedpace_algos::stages::compress::CompressionConfig;
use fedpace_algos::stages::dp::PrivacyConfig;
use fedpace_algos::stages::robust::RobustConfig;
use fedpace_algos::stages::secure::SecureConfig;
use fedpace_algos::{PolicyConfig, StagesConfig, StrategyConfig};
use fedpace_core::{LocalWork, RatePlan};
use fedpace_data::DataConfig;
use fedpace_nn::ModelConfig;
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::GroupRules;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Name, used for the output directory (default `experiment`).
    pub name: String,
    /// Run seed: same seed ⇒ bit-identical results (default 0).
    pub seed: u64,
    /// Number of rounds (default 20).
    pub rounds: u32,
    /// Clients trained in parallel; 0 = one per core (default 0).
    pub threads: usize,
    /// The most threads of the client pool one client's CNN batch may use: `0` (the
    /// default) for as many as are idle, `1` to keep each client on its own thread. The
    /// batch is cut into fixed blocks whatever this says, so results are bit-identical
    /// for every value and every `threads`.
    pub client_threads: usize,
    /// Where fetched data sets are cached (default `data`, or `$FEDPACE_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// Data set and partition.
    pub data: DataConfig,
    /// Model.
    pub model: ModelConfig,
    /// `[model] init`: start from the weights in this safetensors file (tensor names and
    /// shapes of the model, f32; a run's `model.safetensors` is one) instead of the
    /// seeded initialisation. Relative paths are made absolute against the current
    /// directory when the config is read. Kept beside `model` because the model kinds
    /// are `fedpace_nn`'s.
    #[serde(skip)]
    pub model_init: Option<PathBuf>,
    /// Local training (the base rate plan).
    pub client: ClientConfig,
    /// Server strategy.
    pub strategy: StrategyConfig,
    /// Rate policy.
    pub policy: PolicyConfig,
    /// Simulated devices: speeds, bandwidths, availability, dropouts, stragglers and a
    /// round deadline on a simulated clock (default none: every client is ideal).
    pub devices: Option<fedpace_sim::DevicesConfig>,
    /// Evaluation.
    pub eval: EvalConfig,
    /// Output.
    pub output: OutputConfig,
    /// Device classes by fraction of the clients, e.g. `{ slow = 0.3, fast = 0.7 }`;
    /// clients are assigned at random (seeded), the rest have no class (default none).
    /// Rate policies read the class (`by-device`, `straggler-compensation`).
    pub device_classes: std::collections::BTreeMap<String, f64>,
    /// Where clients' states live between rounds (default: all in memory).
    pub state: StateConfig,
    /// Parameter groups (the unit of per-layer rates and of personal and frozen layers):
    /// `"model"` (the model's `body`/`head`, the default), `"per-tensor"`,
    /// `"per-layer"`, or a table `label = [glob patterns]` such as
    /// `{ conv = ["conv*"], head = ["fc2.*"] }` (unmatched tensors keep the model's label).
    pub groups: GroupRules,
    /// Checkpoints for `fedpace resume` (default: only when a signal stops the run).
    pub checkpoint: CheckpointConfig,
    /// What `[model]` and `[data]` name from a [`crate::Registry`] instead of a built-in
    /// (only through [`crate::Registry::experiment`]; default: nothing).
    #[serde(skip)]
    pub registered: Registered,
    /// `[privacy]`: client-level differential privacy and private rates
    /// (docs/privacy.md; default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyConfig>,
    /// `[secure_aggregation]`: SecAgg+ on the linear aggregation path (default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<SecureConfig>,
    /// `[robust]`: a robust aggregation rule in place of the weighted mean (default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robust: Option<RobustConfig>,
    /// `[compression]`: update compression (default none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionConfig>,
    /// `[attack]` (simulation): a share of the clients sends malicious updates (default
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackConfig>,
    /// `[input]`: the model's input and classes, for a federation whose server holds no
    /// data and whose clients bring their own (docs/network.md; default none: from the
    /// data set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<crate::network::InputConfig>,
}

/// The parts of an experiment taken from a [`crate::Registry`] (docs/library.md). While
/// one is set, the config's own `model` (or `data`, or `policy`) is unused, and
/// [`ExperimentConfig::to_toml`] writes the registered name instead.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registered {
    /// `[model] name = "…"`: a registered model and the table's other keys.
    pub model: Option<(String, toml::Table)>,
    /// `[data] source = "…"`: a registered data set.
    pub data: Option<String>,
    /// `[policy] name = "…"`: a registered rate policy and the table's other keys.
    pub policy: Option<(String, toml::Table)>,
}

/// The `[checkpoint]` table (docs/checkpoints.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write `checkpoint.fdpc` every this many rounds (asynchronously: server versions)
    /// and after the last one. Default: unset, a checkpoint only when SIGINT or SIGTERM
    /// stops the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<u32>,
}

/// The `[state]` table: the per-client state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Keep at most this many MiB of client states in memory and spill the rest to an
    /// embedded database (redb) in `dir`. Default: unset, every state in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Directory of the spill database (a scratch file, removed at exit). Default: the
    /// system temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            seed: 0,
            rounds: 20,
            threads: 0,
            client_threads: 0,
            data_dir: None,
            data: DataConfig::default(),
            model: ModelConfig::LogisticRegression,
            model_init: None,
            client: ClientConfig::default(),
            strategy: StrategyConfig::default(),
            policy: PolicyConfig::default(),
            devices: None,
            eval: EvalConfig::default(),
            output: OutputConfig::default(),
            state: StateConfig::default(),
            device_classes: Default::default(),
            groups: GroupRules::Model,
            registered: Registered::default(),
            checkpoint: CheckpointConfig::default(),
            privacy: None,
            secure_aggregation: None,
            robust: None,
            compression: None,
            attack: None,
            input: None,
        }
    }
}

/// Local training settings: the base rate plan every client starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Base learning rate η (default 0.05).
    pub lr: f64,
    /// Mini-batch size (default 10).
    pub batch_size: u32,
    /// Local epochs per round (default 1); ignored when `steps` is set.
    pub epochs: u32,
    /// Local steps per round instead of epochs.
    pub steps: Option<u32>,
    /// Largest number of local steps in a round.
    pub max_steps: Option<u32>,
    /// Rate multiplier per parameter group label, e.g. `{ head = 10.0 }` (default none).
    pub group_lr: std::collections::BTreeMap<String, f64>,
    /// Local optimiser, e.g. `{ name = "momentum", momentum = 0.9 }` (default plain sgd).
    pub optimizer: OptimizerSpec,
    /// Local optimiser state between rounds: `reset` (default) or `keep`.
    pub state_mode: StateMode,
    /// Learning-rate schedule over each client's cumulative steps (default constant).
    pub schedule: fedpace_optim::Schedule,
    /// Metadata clients share with the server beyond their sizes and device class
    /// (default none): `"label-histogram"` (needed by `by-label-skew`).
    pub share: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            batch_size: 10,
            epochs: 1,
            steps: None,
            max_steps: None,
            group_lr: Default::default(),
            optimizer: OptimizerSpec::default(),
            state_mode: StateMode::Reset,
            schedule: Default::default(),
            share: Vec::new(),
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many rounds; 0 = only after the last (default 1).
    pub every: u32,
    /// Local fine-tuning steps before the personalised evaluation (default 5).
    pub finetune_steps: u32,
    /// Personalised evaluation: `finetune` (default: the personal model, or the global
    /// model for algorithms without one, fine-tuned `finetune_steps` steps, then tested)
    /// or `personal-model` (each client's personal model on its own test split).
    pub personalized: fedpace_core::PersonalEval,
    /// Evaluate each client on at most this many of its test samples (default: all).
    pub max_test_samples: Option<u32>,
    /// Evaluate at most this many clients, a seeded sample of the pool that stays the
    /// same at every evaluation (default: every client).
    pub max_clients: Option<u32>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 1,
            finetune_steps: 5,
            personalized: Default::default(),
            max_test_samples: None,
            max_clients: None,
        }
    }
}

/// Output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output directory (default `runs/<name>-<timestamp>`).
    pub dir: Option<PathBuf>,
    /// Record the full per-round trace (default false).
    pub trace: bool,
    /// Write TensorBoard event files under `tensorboard/` (default false).
    pub tensorboard: bool,
}

/// The largest experiment file read (1 MiB): configs are a few hundred bytes, and a
/// 50 MB file of generated keys took 29 s and 3 GB to parse.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Bounds on values whose only effect above them is a run that never ends or a typo's
/// worth of work (each documented in docs/configuration.md).
pub mod limits {
    /// `rounds` (and asynchronous server updates).
    pub const ROUNDS: u32 = 10_000_000;
    /// `client.epochs` per round.
    pub const EPOCHS: u32 = 1_000;
    /// `client.steps` per round.
    pub const STEPS: u32 = 10_000_000;
    /// `eval.finetune_steps`.
    pub const FINETUNE_STEPS: u32 = 1_000_000;
    /// `data.num_clients` (the largest pool tested is 10 M).
    pub const NUM_CLIENTS: usize = 100_000_000;
    /// Keys of `device_classes`.
    pub const DEVICE_CLASSES: usize = 10_000;
    /// Bytes of `name` (it names a directory).
    pub const NAME_BYTES: usize = 200;
    /// `threads` and `--threads`, as a multiple of the machine's cores.
    pub const THREADS_PER_CORE: usize = 4;
}

/// Checks a thread count against `limits::THREADS_PER_CORE` × this machine's cores;
/// `what` names the key or flag.
pub fn check_threads(threads: usize, what: &str) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = limits::THREADS_PER_CORE * cores;
    if threads > max {
        return Err(format!(
            "{what} = {threads}: at most {max} ({} × the {cores} cores here; 0 = one per core)",
            limits::THREADS_PER_CORE
        ));
    }
    Ok(())
}

/// Whether an f64 keeps its meaning as the f32 the models and optimisers use: finite,
/// and not rounded to 0 when it is not 0 (`1e308` and `1e-50` do not).
pub fn fits_f32(v: f64) -> bool {
    let f = v as f32;
    f.is_finite() && (v == 0.0 || f != 0.0)
}

impl ExperimentConfig {
    /// Parses TOML text (`origin` names it in errors), applies `key=value` overrides,
    /// and validates. An error caused by an override is attributed to it
    /// (`--set KEY=VALUE: …`), not to the file.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self, Error> {
        Self::parse_in(text, origin, overrides, None)
    }

    /// [`ExperimentConfig::parse`] where `[model] name` and `[data] source` may name
    /// what `registry` holds ([`ExperimentConfig::registered`]).
    pub(crate) fn parse_in(
        text: &str,
        origin: &str,
        overrides: &[String],
        registry: Option<&crate::Registry>,
    ) -> Result<Self, Error> {
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::Config(format!("{origin}: {}", one_line(&e.to_string())))
        })?;
        // The origin of a message about `key…`: the last override that set it (or a
        // table above or below it), else the file.
        let origin_of = |msg: &str| -> String {
            let key = msg.split([' ', ':']).next().unwrap_or("");
            overrides
                .iter()
                .rev()
                .find(|o| {
                    let k = o.split_once('=').map_or(o.as_str(), |kv| kv.0).trim();
                    !k.is_empty()
                        && (key == k
                            || key.starts_with(&format!("{k}."))
                            || k.starts_with(&format!("{key}.")))
                })
                .map_or_else(|| origin.to_string(), |o| format!("--set {o}"))
        };
        let located = |m: String| Error::Config(format!("{}: {m}", origin_of(&m)));
        for o in overrides {
            apply_override(&mut value, o).map_err(|m| Error::Config(format!("--set {o}: {m}")))?;
        }
        // `[model] init` is read here: the model kinds (`fedpace_nn::ModelConfig`) know
        // nothing of where weights come from.
        let model_init = match value
            .get_mut("model")
            .and_then(|m| m.as_table_mut())
            .and_then(|m| m.remove("init"))
        {
            None => None,
            Some(toml::Value::String(p)) if !p.is_empty() => {
                Some(std::path::absolute(&p).map_err(|e| {
                    Error::Config(format!(
                        "{}: model.init = {p:?}: {e}",
                        origin_of("model.init")
                    ))
                })?)
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "{}: model.init = {other}: expected the path of a safetensors file",
                    origin_of("model.init")
                )))
            }
        };
        if value
            .get("model")
            .and_then(|m| m.as_table())
            .is_some_and(|m| m.is_empty())
        {
            value.remove("model");
        }
        let registered = match registry {
            Some(r) => take_registered(&mut value, r).map_err(located)?,
            None => Registered::default(),
        };
        // `[strategy]` is read on its own: its keys depend on the algorithm, and its
        // errors name the key (`strategy.mu: not used by fedavg (used by …)`).
        let strategy = match value.remove("strategy") {
            None => StrategyConfig::default(),
            Some(toml::Value::Table(t)) => {
                let map = match serde_json::to_value(&t) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => return Err(Error::Config(format!("{origin}: strategy: not a table"))),
                };
                StrategyConfig::from_map(map).map_err(located)?
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "{origin}: strategy: expected a table, got {}",
                    other.type_str()
                )))
            }
        };
        let de = toml::Value::Table(value);
        let mut cfg: ExperimentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The value deserializer appends "in `key`" lines; the path already says it.
            let inner = e.inner().to_string();
            let msg = inner
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("in `"))
                .collect::<Vec<_>>()
                .join(" ");
            // A table that reports its own dotted keys (`[data]`) is not prefixed twice.
            let own = [".", ":"]
                .iter()
                .any(|c| msg.starts_with(&format!("{path}{c}")));
            if path == "." || path.is_empty() || own {
                Error::Config(format!("{origin}: {msg}"))
            } else {
                located(format!("{path}: {msg}"))
            }
        })?;
        cfg.strategy = strategy;
        cfg.registered = registered;
        cfg.model_init = model_init;
        cfg.validate().map_err(located)?;
        Ok(cfg)
    }

    /// Loads a file (at most [`MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, Error> {
        let text = read_config(path)?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Range checks beyond what the types enforce; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |k: &str, v: &dyn std::fmt::Display, e: &str| Err(format!("{k} = {v}: {e}"));
        // The name becomes a directory name (`runs/<name>-<timestamp>`) and goes into
        // summary.json and the console: keep it short, printable and not hidden.
        if self.name.is_empty()
            || self.name.contains(['/', '\\'])
            || self.name.starts_with('.')
            || self.name.chars().any(char::is_control)
            || self.name.len() > limits::NAME_BYTES
        {
            let shown: String = self.name.chars().take(40).collect();
            let shown = if shown.len() < self.name.len() {
                format!("{shown:?}… ({} bytes)", self.name.len())
            } else {
                format!("{shown:?}")
            };
            return bad(
                "name",
                &shown,
                &format!(
                    "a name of 1 to {} bytes, without slashes or control characters, not \
                     starting with '.'",
                    limits::NAME_BYTES
                ),
            );
        }
        if self.rounds == 0 {
            return bad("rounds", &0, "at least 1");
        }
        if self.rounds > limits::ROUNDS {
            return bad(
                "rounds",
                &self.rounds,
                &format!("at most {}", limits::ROUNDS),
            );
        }
        check_threads(self.threads, "threads")?;
        if self.checkpoint.every == Some(0) {
            return bad(
                "checkpoint.every",
                &0,
                "at least 1 round (or leave it out: a checkpoint only at a signal)",
            );
        }
        if self.eval.max_test_samples == Some(0) {
            return bad(
                "eval.max_test_samples",
                &0,
                "at least 1 (or leave it out for every test sample)",
            );
        }
        if self.eval.finetune_steps > limits::FINETUNE_STEPS {
            return bad(
                "eval.finetune_steps",
                &self.eval.finetune_steps,
                &format!("at most {}", limits::FINETUNE_STEPS),
            );
        }
        if self.eval.max_clients == Some(0) {
            return bad(
                "eval.max_clients",
                &0,
                "at least 1 (or leave it out for every client)",
            );
        }
        if !(self.client.lr.is_finite() && self.client.lr > 0.0) {
            return bad("client.lr", &self.client.lr, "a finite rate > 0");
        }
        if !fits_f32(self.client.lr) {
            return bad(
                "client.lr",
                &format!("{:e}", self.client.lr),
                "a rate that fits an f32 (about 1e-38 to 3.4e38): training runs in f32",
            );
        }
        if self.client.batch_size == 0 {
            return bad("client.batch_size", &0, "at least 1");
        }
        if self.client.steps.is_none() && self.client.epochs == 0 {
            return bad("client.epochs", &0, "at least 1 (or set client.steps)");
        }
        if self.client.steps == Some(0) {
            return bad("client.steps", &0, "at least 1");
        }
        if self.client.steps.is_none() && self.client.epochs > limits::EPOCHS {
            return bad(
                "client.epochs",
                &self.client.epochs,
                &format!("at most {} local epochs a round", limits::EPOCHS),
            );
        }
        if let Some(s) = self.client.steps.filter(|&s| s > limits::STEPS) {
            return bad(
                "client.steps",
                &s,
                &format!("at most {} local steps a round", limits::STEPS),
            );
        }
        if self.client.max_steps == Some(0) {
            return bad(
                "client.max_steps",
                &0,
                "at least 1 (0 would leave every client without a step)",
            );
        }
        for (k, v) in &self.client.group_lr {
            if !(v.is_finite() && *v >= 0.0 && fits_f32(*v)) {
                return bad(
                    &format!("client.group_lr.{k}"),
                    &format!("{v:e}"),
                    "a multiplier >= 0 that fits an f32",
                );
            }
            if !fits_f32(self.client.lr * v) {
                return bad(
                    &format!("client.group_lr.{k}"),
                    &format!("{v:e}"),
                    &format!(
                        "a multiplier whose rate client.lr × {v:e} fits an f32 (training runs \
                         in f32)"
                    ),
                );
            }
        }
        if self.device_classes.len() > limits::DEVICE_CLASSES {
            return bad(
                "device_classes",
                &format!("{} keys", self.device_classes.len()),
                &format!("at most {} classes", limits::DEVICE_CLASSES),
            );
        }
        if let Some(n) = self.data.num_clients().filter(|&n| n > limits::NUM_CLIENTS) {
            return bad(
                "data.num_clients",
                &n,
                &format!(
                    "at most {} (the largest pool tested is 10,000,000)",
                    limits::NUM_CLIENTS
                ),
            );
        }
        let mut total = 0.0;
        for (k, v) in &self.device_classes {
            if !(v.is_finite() && (0.0..=1.0).contains(v)) {
                return bad(
                    &format!("device_classes.{k}"),
                    v,
                    "a fraction of the clients in [0, 1]",
                );
            }
            total += v;
        }
        if total > 1.0 + 1e-9 {
            return bad("device_classes", &total, "fractions summing to at most 1");
        }
        self.client
            .optimizer
            .validate()
            .map_err(|e| format!("client.optimizer.{e}"))?;
        self.client
            .schedule
            .validate()
            .map_err(|e| format!("client.schedule.{e}"))?;
        self.strategy.validate().map_err(|e| e.to_string())?;
        self.policy.validate().map_err(|e| e.to_string())?;
        if let (Some((name, _)), Some(_)) = (&self.registered.policy, &self.privacy) {
            return Err(format!(
                "[privacy]: not supported with the registered policy {name:?} (a policy of \
                 your own sees every client's report in the clear, outside ε)"
            ));
        }
        self.strategy.check_combination(
            &self.policy,
            &self.client.optimizer,
            self.client.state_mode,
        )?;
        for m in self.policy.required_metadata() {
            if !self.client.share.iter().any(|s| s == m) {
                return Err(format!(
                    "policy {}: needs the clients' {m}, which they do not share (add \"{m}\" to \
                     client.share to let them)",
                    self.policy.name()
                ));
            }
        }
        if let Some(i) = &self.input {
            i.validate()?;
        }
        let shareable = [<fedpace_core::LabelHistogram as fedpace_core::Payload>::NAME];
        for s in &self.client.share {
            if !shareable.contains(&s.as_str()) {
                return bad(
                    "client.share",
                    &format!("{s:?}"),
                    &format!("metadata clients can share: {}", shareable.join(", ")),
                );
            }
        }
        if let Some(d) = &self.devices {
            d.validate().map_err(|e| e.to_string())?;
            // Synchronous rounds keep round(M·(1 − s)) of M selected clients.
            let keeps_none = match self.strategy.round.fraction {
                _ if d.stragglers >= 1.0 => true,
                None if !self.strategy.is_async() => {
                    (self.strategy.round.clients_per_round as f64 * (1.0 - d.stragglers)).round()
                        < 1.0
                }
                _ => false,
            };
            if keeps_none && d.late == fedpace_sim::devices::LatePolicy::Drop {
                return Err(format!(
                    "devices.stragglers = {}: with late = \"drop\" every update of {} would be \
                     discarded; expected a fraction that leaves at least one client, or \
                     late = \"partial\"",
                    d.stragglers,
                    self.strategy.name()
                ));
            }
            if let (Some(t), true) = (d.deadline, self.strategy.is_async()) {
                return Err(format!(
                    "devices.deadline = {t}: not used by {} (the asynchronous loop has no \
                     rounds to end; remove it, or use a synchronous strategy)",
                    self.strategy.name()
                ));
            }
        }
        self.data.validate().map_err(|e| e.to_string())?;
        let learner = if self.strategy.reads_validation() {
            Some(format!("strategy {}", self.strategy.name()))
        } else {
            self.policy
                .reads_validation()
                .map(|p| format!("policy {p}"))
        };
        if let Some(who) = learner {
            let f = self.data.effective_validation_fraction();
            if f <= 0.0 {
                return bad(
                    "data.validation_fraction",
                    &f,
                    &format!("> 0 (e.g. 0.2): {who} learns from the clients' validation splits"),
                );
            }
        }
        let stages = self.stages()?;
        stages.validate().map_err(|e| e.to_string())?;
        stages.check(&self.strategy, &self.policy, self.client.state_mode)?;
        if let Some(a) = &self.attack {
            a.validate().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The round's stages from `[privacy]`, `[secure_aggregation]`, `[robust]` and
    /// `[compression]`. Noise, masks and stochastic rounding are seeded from the run seed
    /// (a simulation, or one over loopback), or drawn from the operating system in a
    /// deployment (`fedpace server`; docs/privacy.md, "Randomness").
    pub fn stages(&self) -> Result<StagesConfig, String> {
        use fedpace_algos::stages::Randomness;
        StagesConfig {
            privacy: self.privacy.clone(),
            secure_aggregation: self.secure_aggregation.clone(),
            robust: self.robust,
            compression: self.compression,
            randomness: if fedpace_privacy::rng::in_deployment() {
                Randomness::Os {}
            } else {
                Randomness::Simulation {
                    seed: fedpace_core::rng::derive_seed(
                        self.seed,
                        0,
                        0,
                        fedpace_core::rng::Purpose::Algorithm,
                    ),
                }
            },
            local_rule: None,
            local_bounds: None,
        }
        .for_policy(&self.policy)
    }

    /// The base rate plan for a model whose groups are `groups`; errors on a
    /// `client.group_lr` label the model does not have.
    pub fn base_plan(&self, groups: &[String]) -> Result<RatePlan, String> {
        for k in self.client.group_lr.keys() {
            if !groups.contains(k) {
                return Err(format!(
                    "client.group_lr.{k}: the model has no parameter group {k:?} (it has {groups:?})"
                ));
            }
        }
        let group_multipliers = if self.client.group_lr.is_empty() {
            vec![]
        } else {
            groups
                .iter()
                .map(|g| self.client.group_lr.get(g).map_or(1.0, |&m| m as f32))
                .collect()
        };
        if !group_multipliers.is_empty() && group_multipliers.iter().all(|&m| m == 0.0) {
            return Err(format!(
                "client.group_lr: every parameter group of the model ({}) has multiplier 0, so \
                 nothing would train; expected at least one group above 0",
                groups.join(", ")
            ));
        }
        Ok(RatePlan {
            base_lr: self.client.lr as f32,
            group_multipliers,
            schedule: self.client.schedule.clone(),
            work: match self.client.steps {
                Some(s) => LocalWork::Steps(s),
                None => LocalWork::Epochs(self.client.epochs),
            },
            max_steps: self.client.max_steps,
            batch_size: self.client.batch_size,
            optimizer: self.client.optimizer,
            state_mode: self.client.state_mode,
            prox_mu: 0.0,
        })
    }

    /// The resolved configuration as TOML (every default written out, including the
    /// data source's own partition and test fraction).
    pub fn to_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.data = self.data.resolved();
        let mut value = match toml::Value::try_from(&resolved) {
            Ok(v) => v,
            Err(e) => return format!("# could not serialise: {e}\n"),
        };
        if let Some(t) = value.as_table_mut() {
            if let Some((name, options)) = &self.registered.model {
                let mut m = options.clone();
                m.insert("name".into(), name.clone().into());
                t.insert("model".into(), m.into());
            }
            if let Some((name, options)) = &self.registered.policy {
                let mut p = options.clone();
                p.insert("name".into(), name.clone().into());
                t.insert("policy".into(), p.into());
            }
            if let Some(name) = &self.registered.data {
                let mut d = toml::Table::new();
                d.insert("source".into(), name.clone().into());
                t.insert("data".into(), d.into());
            }
        }
        if let (Some(p), Some(m)) = (
            &self.model_init,
            value.get_mut("model").and_then(|m| m.as_table_mut()),
        ) {
            m.insert("init".into(), p.display().to_string().into());
        }
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }
}

/// Reads an experiment file of at most [`MAX_CONFIG_BYTES`].
pub(crate) fn read_config(path: &Path) -> Result<String, Error> {
    let cannot = |e: std::io::Error| Error::Config(format!("{}: cannot read: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(Error::Config(format!(
            "{}: {size} bytes: an experiment file is at most {MAX_CONFIG_BYTES} bytes (1 MiB)",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(cannot)
}

/// Takes `[model]`, `[data]` and `[policy]` out of `value` where they name what
/// `registry` holds.
fn take_registered(
    value: &mut toml::Table,
    registry: &crate::Registry,
) -> Result<Registered, String> {
    let mut registered = Registered::default();
    let name_of = |t: Option<&toml::Value>, key: &str| {
        t.and_then(|t| t.get(key))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    if let Some(name) = name_of(value.get("model"), "name") {
        if registry.model(&name).is_some() {
            let Some(toml::Value::Table(mut t)) = value.remove("model") else {
                unreachable!("a table with a name")
            };
            t.remove("name");
            registered.model = Some((name, t));
        }
    }
    if let Some(name) = name_of(value.get("policy"), "name") {
        if registry.policy(&name).is_some() {
            let Some(toml::Value::Table(mut t)) = value.remove("policy") else {
                unreachable!("a table with a name")
            };
            t.remove("name");
            registered.policy = Some((name, t));
        }
    }
    if let Some(name) = name_of(value.get("data"), "source") {
        if registry.data(&name).is_some() {
            let Some(toml::Value::Table(t)) = value.remove("data") else {
                unreachable!("a table with a source")
            };
            if let Some(k) = t.keys().find(|k| *k != "source") {
                return Err(format!(
                    "data.{k}: not an option of the registered data set {name:?} (its clients \
                     are as registered); expected only data.source"
                ));
            }
            registered.data = Some(name);
        }
    }
    Ok(registered)
}

fn one_line(s: &str) -> String {
    // toml's messages span several lines (a source excerpt); keep the last meaningful one
    // and the location from the first.
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => {
            let loc = first
                .trim_start_matches("TOML parse error ")
                .trim_end_matches(':');
            format!("{last} ({loc})")
        }
    }
}

/// Sets `a.b.c = value` in a TOML table; the value is parsed as TOML, else taken as a string.
fn apply_override(root: &mut toml::Table, kv: &str) -> Result<(), String> {
    let (key, raw) = kv
        .split_once('=')
        .ok_or_else(|| "expected key=value".to_string())?;
    let key = key.trim();
    if key.is_empty() {
        return Err("empty key".into());
    }
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_experiment() {
        let c = ExperimentConfig::parse("", "x.toml", &[]).unwrap();
        assert_eq!(c, ExperimentConfig::default());
    }

    #[test]
    fn resolved_config_round_trips() {
        let c =
            ExperimentConfig::parse("rounds = 3\n[policy]\nname = \"by-data-size\"\n", "x", &[])
                .unwrap();
        let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.data, c.data.resolved());
        assert_eq!(again.to_toml(), c.to_toml());
        assert_eq!((again.rounds, again.policy.name()), (3, "by-data-size"));
        // Knobs of every algorithm round-trip (only the chosen one's are written).
        // With validation splits: FedEx and meta-rates refuse to run without them.
        let base =
            ExperimentConfig::parse("", "x", &["data.validation_fraction=0.2".into()]).unwrap();
        for name in fedpace_algos::AlgorithmConfig::NAMES {
            let c = ExperimentConfig {
                strategy: StrategyConfig::named(name).unwrap(),
                ..base.clone()
            };
            let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(again.strategy, c.strategy, "{name}");
        }
        // Group rules round-trip too.
        let c = ExperimentConfig::parse(
            "[groups]\nconv = [\"conv*\"]\nhead = [\"fc2.*\"]\n",
            "x",
            &[],
        )
        .unwrap();
        let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.groups, c.groups);
        let e = ExperimentConfig::parse("groups = \"per-block\"\n", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().starts_with("x: groups: invalid value"),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn overrides_set_nested_keys() {
        let c = ExperimentConfig::parse(
            "",
            "x",
            &[
                "rounds=3".into(),
                "strategy.server_lr=0.5".into(),
                "policy.name=by-data-size".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.strategy.round.server_lr, Some(0.5));
        assert_eq!(c.policy.name(), "by-data-size");
    }

    #[test]
    fn unknown_key_is_one_line_naming_the_key() {
        let e = ExperimentConfig::parse("[strategy]\nserver_lrr = 1.0\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().starts_with(
                "exp.toml: strategy.server_lrr: unknown key (did you mean `server_lr`?); \
                 fedavg takes name, clients_per_round, fraction, server_lr, normalize"
            ),
            "{}",
            e.to_string()
        );
        assert!(!e.to_string().contains('\n'));
        // Listed against the chosen algorithm's own keys, not every algorithm's.
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedprox\"\nmuu = 0.1\n",
            "exp.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e.to_string(),
            "exp.toml: strategy.muu: unknown key (did you mean `mu`?); fedprox takes name, \
             clients_per_round, fraction, server_lr, normalize, server_optimizer, aggregation, mu"
        );
        let e = ExperimentConfig::parse("[strategy]\nzzzzzz = 1\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string()
                .contains("strategy.zzzzzz: unknown key; fedavg takes"),
            "{}",
            e.to_string()
        );
        // A field of the wrong type is still the deserialiser's message.
        let e = ExperimentConfig::parse("[strategy]\nmu = \"a\"\nname = \"fedprox\"\n", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().starts_with("x: strategy.mu: invalid type"),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn async_strategies_reject_what_needs_rounds() {
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedbuff\"\n[devices]\ndeadline = 5.0\n",
            "exp.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string()
                .starts_with("exp.toml: devices.deadline = 5: not used by fedbuff"),
            "{}",
            e.to_string()
        );
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedasync\"\n[devices]\nstragglers = 1.0\nlate = \"drop\"\n",
            "exp.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string()
                .contains("devices.stragglers = 1: with late = \"drop\""),
            "{}",
            e.to_string()
        );
        // The same settings are fine for a synchronous strategy.
        ExperimentConfig::parse("[devices]\ndeadline = 5.0\n", "exp.toml", &[]).unwrap();
    }

    /// Regression (reliability review D16): a name with a newline, a hidden `..`, or
    /// 50 MB became a directory name, or filled summary.json and the console.
    #[test]
    fn a_name_that_cannot_be_a_directory_name_is_rejected() {
        for bad in ["x\\ny", "..", ".hidden", "a/b", ""] {
            let e = ExperimentConfig::parse(&format!("name = \"{bad}\"\n"), "exp.toml", &[])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("exp.toml: name = "), "{bad:?}: {e}");
        }
        let long = "n".repeat(5_000_000);
        let e = ExperimentConfig::parse(&format!("name = \"{long}\"\n"), "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.len() < 300 && e.contains("(5000000 bytes)"),
            "{}",
            &e[..300.min(e.len())]
        );
        let ok = "x".repeat(limits::NAME_BYTES);
        assert!(ExperimentConfig::parse(&format!("name = \"{ok}\"\n"), "x", &[]).is_ok());
        assert!(ExperimentConfig::parse("name = \"größe 1\"\n", "x", &[]).is_ok());
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = ExperimentConfig::parse("rounds = \"many\"\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string()
                .starts_with("exp.toml: rounds: invalid type: string \"many\""),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn out_of_range_names_key_value_and_expectation() {
        let e = ExperimentConfig::parse("[strategy]\nserver_lr = -0.1\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e.to_string(),
            "exp.toml: strategy.server_lr = -0.1: must be > 0"
        );
        // A value from `--set` is the override's fault, not the file's.
        let e = ExperimentConfig::parse("", "exp.toml", &["client.lr=0".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e.to_string(),
            "--set client.lr=0: client.lr = 0: a finite rate > 0"
        );
    }

    /// Issue 12: a method that learns from the clients' validation splits is refused
    /// before the run when there are none (it used to fail at round 1), in one line
    /// naming data.validation_fraction and the method; FedHyper, which learns from the
    /// aggregate updates, runs without them.
    #[test]
    fn learners_without_validation_splits_are_refused_naming_the_key() {
        let parse = |toml: &str, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            ExperimentConfig::parse(toml, "exp.toml", &sets).map_err(|e| e.to_string())
        };
        for (toml, who) in [
            ("[strategy]\nname = \"fedex\"\n", "strategy fedex"),
            ("[strategy]\nname = \"meta-rates\"\n", "strategy meta-rates"),
            ("[policy]\nname = \"hypernet\"\n", "policy hypernet"),
            (
                "[policy]\nname = \"compose\"\npolicies = [{ name = \"by-data-size\" }, { name = \"hypernet\" }]\n",
                "policy hypernet",
            ),
        ] {
            let e = parse(toml, &[]).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "exp.toml: data.validation_fraction = 0: > 0 (e.g. 0.2): {who} learns from \
                     the clients' validation splits"
                ),
                "{toml}"
            );
            assert!(!e.contains('\n'));
            parse(toml, &["data.validation_fraction=0.2"]).unwrap();
        }
        parse("[strategy]\nname = \"fedhyper\"\n", &[]).unwrap();
        parse(
            "[strategy]\nname = \"fedhyper\"\nserver_local = true\nclient_local = true\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn set_errors_are_attributed_to_the_override() {
        let e = ExperimentConfig::parse(
            "rounds = 3
",
            "exp.toml",
            &["rounds=abc".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string()
                .starts_with("--set rounds=abc: rounds: invalid type: string \"abc\""),
            "{}",
            e.to_string()
        );
        // A table set whole, and a key below it.
        let e = ExperimentConfig::parse("", "exp.toml", &["client={lr=-1.0}".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string()
                .starts_with("--set client={lr=-1.0}: client.lr = -1"),
            "{}",
            e.to_string()
        );
        // The file's own mistakes still name the file.
        let e = ExperimentConfig::parse("rounds = 0\n", "exp.toml", &["seed=3".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e.to_string(), "exp.toml: rounds = 0: at least 1");
    }

    #[test]
    fn flower_compatible_defaults_normalize_off_and_rejects_it_on() {
        let c = ExperimentConfig::parse(
            "[strategy]\nname = \"fedadam\"\nflower_compatible = true\n",
            "x",
            &[],
        )
        .unwrap();
        assert_eq!(c.strategy.round.normalize, fedpace_algos::Normalize::Off);
        // The resolved config says so, and parses again.
        let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.strategy, c.strategy);
        for n in ["auto", "on"] {
            let e = ExperimentConfig::parse(
                &format!(
                    "[strategy]\nname = \"fedadam\"\nflower_compatible = true\nnormalize = \"{n}\"\n"
                ),
                "x",
                &[],
            )
            .unwrap_err().to_string();
            assert!(
                e.to_string().starts_with(&format!(
                    "x: strategy.normalize = {n}: off with flower_compatible"
                )),
                "{}",
                e.to_string()
            );
        }
        // Without the flag the default stays auto.
        let c = ExperimentConfig::parse("[strategy]\nname = \"fedadam\"\n", "x", &[]).unwrap();
        assert_eq!(c.strategy.round.normalize, fedpace_algos::Normalize::Auto);
    }

    #[test]
    fn fraction_with_clients_per_round_is_rejected_and_fraction_round_trips() {
        let e = ExperimentConfig::parse(
            "[strategy]\nfraction = 0.5\nclients_per_round = 3\n",
            "x",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string()
                .starts_with("x: strategy.fraction: set together with"),
            "{}",
            e.to_string()
        );
        let c = ExperimentConfig::parse("[strategy]\nfraction = 0.5\n", "x", &[]).unwrap();
        let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.strategy.round.fraction, Some(0.5));
    }

    #[test]
    fn constant_policy_rejects_unknown_keys() {
        let e = ExperimentConfig::parse("[policy]\nname = \"constant\"\ngamma = 5.0\n", "x", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e.to_string(),
            "x: policy: unknown field `gamma`, there are no fields"
        );
        ExperimentConfig::parse("[policy]\nname = \"constant\"\n", "x", &[]).unwrap();
    }

    #[test]
    fn optimiser_and_schedule_ranges_are_checked_before_running() {
        let e = ExperimentConfig::parse(
            "[client]\noptimizer = { name = \"adam\", beta1 = 1.5 }\n",
            "exp.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string()
                .starts_with("exp.toml: client.optimizer.beta1 = 1.5"),
            "{}",
            e.to_string()
        );
        let e = ExperimentConfig::parse(
            "[client]\nschedule = { kind = \"step\", every = 10, gamma = 2.0 }\n",
            "exp.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.to_string().starts_with("exp.toml: client.schedule."),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn unknown_strategy_lists_the_known_ones() {
        let e = ExperimentConfig::parse("[strategy]\nname = \"fedmagic\"\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().contains("strategy.name") && e.to_string().contains("fedavg"),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn syntax_error_is_one_line_with_location() {
        let e = ExperimentConfig::parse("rounds = = 3\n", "exp.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.to_string().starts_with("exp.toml: ")
                && !e.to_string().contains('\n')
                && e.to_string().contains("line 1"),
            "{}",
            e.to_string()
        );
    }
}
