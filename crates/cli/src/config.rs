//! The experiment file: typed, defaulted, validated before anything runs.
//!
//! Every field has a default, so an empty file is a valid experiment. Errors name the
//! file, the dotted key, the value and what was expected, on one line.

use fedpace_algos::{PolicyConfig, StrategyConfig};
use fedpace_core::{LocalWork, RatePlan};
use fedpace_data::DataConfig;
use fedpace_nn::ModelConfig;
use fedpace_optim::{OptimizerSpec, StateMode};
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
            client: ClientConfig::default(),
            strategy: StrategyConfig::default(),
            policy: PolicyConfig::default(),
            devices: None,
            eval: EvalConfig::default(),
            output: OutputConfig::default(),
            state: StateConfig::default(),
            device_classes: Default::default(),
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
}

/// A configuration error, already formatted for the user.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

impl ExperimentConfig {
    /// Parses TOML text (`origin` names it in errors), applies `key=value` overrides,
    /// and validates.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(format!("{origin}: {}", one_line(&e.to_string())))
        })?;
        for o in overrides {
            apply_override(&mut value, o).map_err(|m| ConfigError(format!("--set {o}: {m}")))?;
        }
        // Which `[strategy]` keys were *written* (many have defaults): read them before
        // deserialising, check them against the chosen algorithm afterwards.
        let strategy_keys: Vec<String> = match value.get("strategy") {
            Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        };
        // Unknown keys are reported against the chosen algorithm's own keys, before the
        // deserialiser's list of every key of every algorithm.
        let chosen = match value.get("strategy").map(|t| t.get("name")) {
            Some(Some(n)) => n.clone().try_into().ok(),
            Some(None) => Some(fedpace_algos::config::StrategyConfig::default().name),
            None => None,
        };
        if let Some(name) = chosen {
            fedpace_algos::config::check_strategy_keys(
                name,
                strategy_keys.iter().map(String::as_str),
            )
            .map_err(|m| ConfigError(format!("{origin}: {m}")))?;
        }
        let de = toml::Value::Table(value);
        let cfg: ExperimentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
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
                ConfigError(format!("{origin}: {msg}"))
            } else {
                ConfigError(format!("{origin}: {path}: {msg}"))
            }
        })?;
        fedpace_algos::config::check_strategy_keys(
            cfg.strategy.name,
            strategy_keys.iter().map(String::as_str),
        )
        .map_err(|m| ConfigError(format!("{origin}: {m}")))?;
        cfg.validate()
            .map_err(|m| ConfigError(format!("{origin}: {m}")))?;
        Ok(cfg)
    }

    /// Loads a file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Range checks beyond what the types enforce; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |k: &str, v: &dyn std::fmt::Display, e: &str| Err(format!("{k} = {v}: {e}"));
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return bad(
                "name",
                &format!("{:?}", self.name),
                "a non-empty name without slashes",
            );
        }
        if self.rounds == 0 {
            return bad("rounds", &0, "at least 1");
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
        if self.client.batch_size == 0 {
            return bad("client.batch_size", &0, "at least 1");
        }
        if self.client.steps.is_none() && self.client.epochs == 0 {
            return bad("client.epochs", &0, "at least 1 (or set client.steps)");
        }
        if self.client.steps == Some(0) {
            return bad("client.steps", &0, "at least 1");
        }
        for (k, v) in &self.client.group_lr {
            if !(v.is_finite() && *v >= 0.0) {
                return bad(&format!("client.group_lr.{k}"), v, "a multiplier >= 0");
            }
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
        if let Some(d) = &self.devices {
            d.validate().map_err(|e| e.to_string())?;
            if self.strategy.is_async()
                && d.stragglers >= 1.0
                && d.late == fedpace_sim::devices::LatePolicy::Drop
            {
                return Err(format!(
                    "devices.stragglers = {}: with late = \"drop\" every update of {} would be \
                     discarded; expected below 1, or late = \"partial\"",
                    d.stragglers,
                    self.strategy.name.as_str()
                ));
            }
            if let (Some(t), true) = (d.deadline, self.strategy.is_async()) {
                return Err(format!(
                    "devices.deadline = {t}: not used by {} (the asynchronous loop has no \
                     rounds to end; remove it, or use a synchronous strategy)",
                    self.strategy.name.as_str()
                ));
            }
        }
        self.data.validate().map_err(|e| e.to_string())?;
        Ok(())
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
        // Only the `[strategy]` keys the chosen algorithm uses, so the file parses again
        // (a key of another algorithm is an error).
        if let Some(toml::Value::Table(t)) = value.get_mut("strategy") {
            t.retain(|k, _| self.strategy.name.uses(k));
        }
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }
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
        for name in fedpace_algos::StrategyName::ALL {
            let mut c = ExperimentConfig::default();
            c.strategy.name = name;
            let again = ExperimentConfig::parse(&c.to_toml(), "resolved", &[])
                .unwrap_or_else(|e| panic!("{}: {e}", name.as_str()));
            assert_eq!(again.strategy, c.strategy, "{}", name.as_str());
        }
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
        assert_eq!(c.strategy.server_lr, Some(0.5));
        assert_eq!(c.policy.name(), "by-data-size");
    }

    #[test]
    fn unknown_key_is_one_line_naming_the_key() {
        let e =
            ExperimentConfig::parse("[strategy]\nserver_lrr = 1.0\n", "exp.toml", &[]).unwrap_err();
        assert!(
            e.0.starts_with(
                "exp.toml: strategy.server_lrr: unknown key (did you mean `server_lr`?); \
                 fedavg takes name, clients_per_round, fraction, server_lr, normalize"
            ),
            "{}",
            e.0
        );
        assert!(!e.0.contains('\n'));
        // Listed against the chosen algorithm's own keys, not every algorithm's.
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedprox\"\nmuu = 0.1\n",
            "exp.toml",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "exp.toml: strategy.muu: unknown key (did you mean `mu`?); fedprox takes name, \
             clients_per_round, fraction, server_lr, normalize, mu"
        );
        let e = ExperimentConfig::parse("[strategy]\nzzzzzz = 1\n", "exp.toml", &[]).unwrap_err();
        assert!(
            e.0.contains("strategy.zzzzzz: unknown key; fedavg takes"),
            "{}",
            e.0
        );
        // A field of the wrong type is still the deserialiser's message.
        let e = ExperimentConfig::parse("[strategy]\nmu = \"a\"\nname = \"fedprox\"\n", "x", &[])
            .unwrap_err();
        assert!(e.0.starts_with("x: strategy.mu: invalid type"), "{}", e.0);
    }

    #[test]
    fn async_strategies_reject_what_needs_rounds() {
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedbuff\"\n[devices]\ndeadline = 5.0\n",
            "exp.toml",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("exp.toml: devices.deadline = 5: not used by fedbuff"),
            "{}",
            e.0
        );
        let e = ExperimentConfig::parse(
            "[strategy]\nname = \"fedasync\"\n[devices]\nstragglers = 1.0\nlate = \"drop\"\n",
            "exp.toml",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("devices.stragglers = 1: with late = \"drop\""),
            "{}",
            e.0
        );
        // The same settings are fine for a synchronous strategy.
        ExperimentConfig::parse("[devices]\ndeadline = 5.0\n", "exp.toml", &[]).unwrap();
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = ExperimentConfig::parse("rounds = \"many\"\n", "exp.toml", &[]).unwrap_err();
        assert!(
            e.0.starts_with("exp.toml: rounds: invalid type: string \"many\""),
            "{}",
            e.0
        );
    }

    #[test]
    fn out_of_range_names_key_value_and_expectation() {
        let e =
            ExperimentConfig::parse("[strategy]\nserver_lr = -0.1\n", "exp.toml", &[]).unwrap_err();
        assert_eq!(e.0, "exp.toml: strategy.server_lr = -0.1: must be > 0");
        let e = ExperimentConfig::parse("", "exp.toml", &["client.lr=0".into()]).unwrap_err();
        assert_eq!(e.0, "exp.toml: client.lr = 0: a finite rate > 0");
    }

    #[test]
    fn optimiser_and_schedule_ranges_are_checked_before_running() {
        let e = ExperimentConfig::parse(
            "[client]\noptimizer = { name = \"adam\", beta1 = 1.5 }\n",
            "exp.toml",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("exp.toml: client.optimizer.beta1 = 1.5"),
            "{}",
            e.0
        );
        let e = ExperimentConfig::parse(
            "[client]\nschedule = { kind = \"step\", every = 10, gamma = 2.0 }\n",
            "exp.toml",
            &[],
        )
        .unwrap_err();
        assert!(e.0.starts_with("exp.toml: client.schedule."), "{}", e.0);
    }

    #[test]
    fn unknown_strategy_lists_the_known_ones() {
        let e = ExperimentConfig::parse("[strategy]\nname = \"fedmagic\"\n", "exp.toml", &[])
            .unwrap_err();
        assert!(
            e.0.contains("strategy.name") && e.0.contains("fedavg"),
            "{}",
            e.0
        );
    }

    #[test]
    fn syntax_error_is_one_line_with_location() {
        let e = ExperimentConfig::parse("rounds = = 3\n", "exp.toml", &[]).unwrap_err();
        assert!(
            e.0.starts_with("exp.toml: ") && !e.0.contains('\n') && e.0.contains("line 1"),
            "{}",
            e.0
        );
    }
}
