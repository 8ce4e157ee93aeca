//! The `[strategy]` table: the keys every synchronous algorithm shares
//! ([`RoundConfig`]) and one typed section per algorithm ([`AlgorithmConfig`], tagged by
//! `name`), each owned by its algorithm's module. The keys an algorithm accepts are read
//! off its types (the serialised defaults), never from a hand-kept list, and so are the
//! one-line errors: `strategy.mu: not used by fedavg (used by fedprox, fedasync)`,
//! `strategy.muu: unknown key (did you mean `mu`?); fedprox takes …`.
//!
//! Adding an algorithm: a module with a config type that implements [`Algorithm`], and
//! one line in `crate::registry`'s list. See docs/configuration.md (`[strategy]`) and
//! docs/arch/0009-algorithms-as-modules-and-stages.md.

use crate::aggregate::Normalize;
use crate::fedopt::{ServerOptimizerConfig, ServerStep};
use crate::pipeline::{AggregationPath, Settings};
use crate::policy::PolicyConfig;
use crate::registry::Algorithms;
use crate::sampling::Sampling;
use fedpace_core::asynchronous::AsyncStrategy;
use fedpace_core::{Error, RatePlan, RatePolicy, Result, Strategy};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::ParamSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The keys every synchronous algorithm's `[strategy]` table accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundConfig {
    /// Clients per round (default 10); ignored when `fraction` is set.
    pub clients_per_round: usize,
    /// Fraction C of clients per round instead of a count.
    pub fraction: Option<f64>,
    /// Server rate η_g (default: the server optimiser's, see
    /// [`ServerOptimizerConfig::default_server_lr`]).
    pub server_lr: Option<f64>,
    /// Normalise updates by clients' rate sums: `auto` (when they differ), `on`, `off`.
    pub normalize: Normalize,
    /// The server optimiser on the aggregate, e.g. `{ name = "adam" }` (default `sgd`:
    /// `x ← x + η_g·Δ̄`). Not accepted by the algorithms that are a server optimiser
    /// (fedavgm, fedadagrad, fedadam, fedyogi, fedexp).
    pub server_optimizer: ServerOptimizerConfig,
    /// `per-client` (default) or `linear` (clients pre-scale, the server only sums).
    pub aggregation: AggregationPath,
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            clients_per_round: 10,
            fraction: None,
            server_lr: None,
            normalize: Normalize::Auto,
            server_optimizer: ServerOptimizerConfig::Sgd,
            aggregation: AggregationPath::PerClient,
        }
    }
}

impl RoundConfig {
    /// The sampling rule.
    pub fn sampling(&self) -> Sampling {
        match self.fraction {
            Some(f) => Sampling::Fraction(f),
            None => Sampling::Count(self.clients_per_round),
        }
    }
}

/// What an algorithm's config builds from.
pub struct BuildCx {
    /// The stages' settings (sampling, η_g, normalisation, aggregation path, base plan).
    pub settings: Settings,
    /// The server step (`server_optimizer`, or the algorithm's own).
    pub server: ServerStep,
    /// The rate policy.
    pub policy: Box<dyn RatePolicy>,
}

/// The server half of an asynchronous algorithm with what `fedpace_sim::run_async`
/// needs beside it.
pub struct AsyncBuilt {
    /// The server half.
    pub strategy: Box<dyn AsyncStrategy>,
    /// The rate policy (plans per dispatch).
    pub policy: Box<dyn RatePolicy>,
    /// The base plan (FedAsync's client proximal term included).
    pub base_plan: RatePlan,
    /// Clients training at once.
    pub concurrency: usize,
    /// Decay a client's rate by s(its previous staleness).
    pub rate_decay: bool,
}

/// A built algorithm.
pub enum Built {
    /// Runs through `fedpace_core::run`.
    Sync(Box<dyn Strategy>),
    /// Runs through `fedpace_sim::run_async`.
    Async(AsyncBuilt),
}

impl Built {
    /// The synchronous strategy, or an error for an asynchronous algorithm.
    pub fn into_sync(self) -> Result<Box<dyn Strategy>> {
        match self {
            Built::Sync(s) => Ok(s),
            Built::Async(a) => Err(Error::invalid(
                "strategy.name",
                a.strategy.describe(),
                "a synchronous algorithm here (asynchronous ones run with run_async)",
            )),
        }
    }
}

/// Everything a strategy is combined with, for [`Algorithm::check`]: which optimiser
/// and state mode clients will run, and where that comes from (for the message).
#[derive(Debug, Clone)]
pub struct Combination<'a> {
    /// The shared keys.
    pub round: &'a RoundConfig,
    /// The rate policy.
    pub policy: &'a PolicyConfig,
    /// The optimiser clients run.
    pub optimizer: OptimizerSpec,
    /// Where it comes from, e.g. `client.optimizer = "adam"` or `policy curvature`.
    pub optimizer_source: String,
    /// The state mode clients run.
    pub state_mode: StateMode,
    /// Where it comes from.
    pub state_source: String,
}

/// An algorithm's `[strategy]` section: its keys (a serde struct with defaults,
/// `deny_unknown_fields`), its checks and how it builds its server half. Implemented by
/// each algorithm module's config type.
pub trait Algorithm:
    Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The `name` in `[strategy]` (the paper's name, lowercase).
    const NAME: &'static str;
    /// Asynchronous (`fedpace_sim::run_async`) rather than round by round.
    const ASYNC: bool = false;
    /// Shared keys ([`RoundConfig`]) the algorithm has no use for: they are not among
    /// its keys, so setting one is an error naming the algorithms that use it.
    const UNUSED_ROUND_KEYS: &'static [&'static str] = &[];
    /// The server optimiser the algorithm is (fedavgm, fedadam, …): then
    /// `server_optimizer` is not one of its keys.
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
        None
    }
    /// Checks ranges; errors name the key under `strategy.`.
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        Ok(())
    }
    /// Refuses a combination the algorithm cannot run, in one line naming both sides.
    fn check(&self, _c: &Combination<'_>) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Checks the algorithm's settings against the model (group labels).
    fn check_model(&self, _spec: &ParamSpec) -> Result<()> {
        Ok(())
    }
    /// Registers the algorithm's payload types and client parts.
    fn register(_a: &mut Algorithms) {}
    /// Builds the server half.
    fn build(&self, cx: BuildCx) -> Result<Built>;
}

/// The object-safe view of [`Algorithm`] the dispatch uses.
pub(crate) trait DynAlgorithm {
    fn name(&self) -> &'static str;
    fn is_async(&self) -> bool;
    fn unused_round_keys(&self) -> &'static [&'static str];
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig>;
    fn validate(&self, round: &RoundConfig) -> Result<()>;
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String>;
    fn check_model(&self, spec: &ParamSpec) -> Result<()>;
    fn build(&self, cx: BuildCx) -> Result<Built>;
    fn to_json(&self) -> serde_json::Value;
    fn keys(&self) -> Vec<String>;
}

impl<T: Algorithm> DynAlgorithm for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn is_async(&self) -> bool {
        T::ASYNC
    }
    fn unused_round_keys(&self) -> &'static [&'static str] {
        T::UNUSED_ROUND_KEYS
    }
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
        Algorithm::own_server_optimizer(self)
    }
    fn validate(&self, round: &RoundConfig) -> Result<()> {
        Algorithm::validate(self, round)
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        Algorithm::check(self, c)
    }
    fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        Algorithm::check_model(self, spec)
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Algorithm::build(self, cx)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
    fn keys(&self) -> Vec<String> {
        keys_of(self)
    }
}

/// Defines [`AlgorithmConfig`] from the list of algorithms (`crate::registry`).
#[macro_export]
#[doc(hidden)]
macro_rules! __algorithms {
    ($($variant:ident => $cfg:ty),* $(,)?) => {
        /// The algorithm part of `[strategy]`: one variant per algorithm, its section.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AlgorithmConfig {
            $(
                #[doc = concat!("`", stringify!($variant), "`: see [`", stringify!($cfg), "`].")]
                $variant($cfg),
            )*
        }

        $(
            impl From<$cfg> for AlgorithmConfig {
                fn from(c: $cfg) -> Self {
                    AlgorithmConfig::$variant(c)
                }
            }
        )*

        impl AlgorithmConfig {
            /// Every algorithm's name, in declaration order.
            pub const NAMES: &'static [&'static str] =
                &[$(<$cfg as $crate::config::Algorithm>::NAME),*];

            pub(crate) fn as_dyn(&self) -> &dyn $crate::config::DynAlgorithm {
                match self {
                    $(AlgorithmConfig::$variant(c) => c,)*
                }
            }

            /// The algorithm `name` with its defaults.
            pub fn default_for(name: &str) -> Option<Self> {
                $(
                    if name == <$cfg as $crate::config::Algorithm>::NAME {
                        return Some(AlgorithmConfig::$variant(Default::default()));
                    }
                )*
                None
            }

            /// Deserialises the section of algorithm `name` from its keys.
            pub(crate) fn from_json(
                name: &str,
                v: serde_json::Value,
            ) -> Option<std::result::Result<Self, String>> {
                $(
                    if name == <$cfg as $crate::config::Algorithm>::NAME {
                        return Some(
                            serde_path_to_error::deserialize::<_, $cfg>(v)
                                .map(AlgorithmConfig::$variant)
                                .map_err(|e| $crate::config::path_error(e)),
                        );
                    }
                )*
                None
            }

            /// Registers every algorithm's payloads and client parts.
            pub(crate) fn register_all(a: &mut $crate::registry::Algorithms) {
                $(<$cfg as $crate::config::Algorithm>::register(a);)*
            }
        }
    };
}

/// Whether an f64 keeps its meaning as the f32 the models and optimisers use: finite,
/// and not rounded to 0 when it is not 0 (`1e308` and `1e-50` do not).
pub fn fits_f32(v: f64) -> bool {
    let f = v as f32;
    f.is_finite() && (v == 0.0 || f != 0.0)
}

/// Errors unless `v` fits an f32 ([`fits_f32`]); `key` names it.
pub fn check_f32(key: &str, v: f64) -> Result<()> {
    if fits_f32(v) {
        Ok(())
    } else {
        Err(Error::invalid(
            key,
            format!("{v:e}"),
            "a value that fits an f32 (about 1e-38 to 3.4e38): it is used as one",
        ))
    }
}

/// `path: message` of a nested deserialisation error.
pub(crate) fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    if path == "." || path.is_empty() {
        inner
    } else {
        format!("{path}: {inner}")
    }
}

pub use crate::registry::AlgorithmConfig;

impl AlgorithmConfig {
    /// The algorithm's name.
    pub fn name(&self) -> &'static str {
        self.as_dyn().name()
    }
    /// Whether it runs asynchronously.
    pub fn is_async(&self) -> bool {
        self.as_dyn().is_async()
    }
}

/// The `[strategy]` table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrategyConfig {
    /// The keys shared by synchronous algorithms.
    pub round: RoundConfig,
    /// The algorithm and its own keys.
    pub algorithm: AlgorithmConfig,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig::from(crate::fedavg::FedAvgConfig::default())
    }
}

/// The keys of a serialised value, in declaration order (null values included).
fn keys_of<T: Serialize>(v: &T) -> Vec<String> {
    let mut b = Vec::new();
    if ciborium::into_writer(v, &mut b).is_err() {
        return Vec::new();
    }
    match ciborium::from_reader::<ciborium::Value, _>(b.as_slice()) {
        Ok(ciborium::Value::Map(m)) => m
            .into_iter()
            .filter_map(|(k, _)| k.into_text().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Levenshtein distance (for "did you mean" hints on short keys).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean `x`?)` for the nearest of `known` within edit distance 2.
fn hint<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

impl StrategyConfig {
    /// The strategy `algorithm` with the default shared keys.
    pub fn new(algorithm: impl Into<AlgorithmConfig>) -> Self {
        Self {
            round: RoundConfig::default(),
            algorithm: algorithm.into(),
        }
    }

    /// The algorithm `name` with its defaults.
    pub fn named(name: &str) -> Result<Self> {
        AlgorithmConfig::default_for(name)
            .map(Self::new)
            .ok_or_else(|| {
                Error::invalid(
                    "strategy.name",
                    name,
                    format!("one of {}", AlgorithmConfig::NAMES.join(", ")),
                )
            })
    }

    /// With `clients_per_round`.
    pub fn with_clients_per_round(mut self, n: usize) -> Self {
        self.round.clients_per_round = n;
        self
    }
    /// With `server_lr`.
    pub fn with_server_lr(mut self, lr: f64) -> Self {
        self.round.server_lr = Some(lr);
        self
    }
    /// With `normalize`.
    pub fn with_normalize(mut self, n: Normalize) -> Self {
        self.round.normalize = n;
        self
    }
    /// With `server_optimizer`.
    pub fn with_server_optimizer(mut self, s: ServerOptimizerConfig) -> Self {
        self.round.server_optimizer = s;
        self
    }
    /// With `aggregation`.
    pub fn with_aggregation(mut self, a: AggregationPath) -> Self {
        self.round.aggregation = a;
        self
    }

    /// The algorithm's name.
    pub fn name(&self) -> &'static str {
        self.algorithm.name()
    }

    /// Whether the algorithm is asynchronous (built into [`Built::Async`]).
    pub fn is_async(&self) -> bool {
        self.algorithm.is_async()
    }

    /// The server optimiser in effect: the algorithm's own, or `server_optimizer`.
    pub fn server_optimizer(&self) -> ServerOptimizerConfig {
        self.algorithm
            .as_dyn()
            .own_server_optimizer()
            .unwrap_or_else(|| self.round.server_optimizer.clone())
    }

    /// The server rate η_g: `server_lr` if given, else the server optimiser's default.
    pub fn server_lr(&self) -> f64 {
        self.round
            .server_lr
            .unwrap_or_else(|| self.server_optimizer().default_server_lr())
    }

    /// The shared keys `name` accepts (none for asynchronous algorithms).
    fn round_keys(algorithm: &AlgorithmConfig) -> Vec<String> {
        if algorithm.is_async() {
            return Vec::new();
        }
        let own = algorithm.as_dyn().own_server_optimizer().is_some();
        let unused = algorithm.as_dyn().unused_round_keys();
        keys_of(&RoundConfig::default())
            .into_iter()
            .filter(|k| !(unused.contains(&k.as_str()) || own && k == "server_optimizer"))
            .collect()
    }

    /// Every key the algorithm `name` accepts, `name` first, then the shared keys, then
    /// the algorithm's own, in declaration order.
    pub fn keys_of(name: &str) -> Vec<String> {
        let Some(a) = AlgorithmConfig::default_for(name) else {
            return Vec::new();
        };
        let mut keys = vec!["name".to_string()];
        keys.extend(Self::round_keys(&a));
        keys.extend(a.as_dyn().keys());
        keys
    }

    /// Reads a `[strategy]` table. Errors are one line naming the key:
    /// `strategy.KEY: not used by NAME (used by A, B)`, `strategy.KEY: unknown key (did
    /// you mean …?); NAME takes …`, `strategy.KEY: invalid type: …`.
    pub fn from_map(
        mut map: serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<Self, String> {
        let name = match map.remove("name") {
            None => crate::fedavg::FedAvgConfig::NAME.to_string(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(format!(
                    "strategy.name: invalid type: {other}, expected a string"
                ))
            }
        };
        let Some(default) = AlgorithmConfig::default_for(&name) else {
            return Err(format!(
                "strategy.name = {name:?}: unknown algorithm{}; expected one of {}",
                hint(&name, AlgorithmConfig::NAMES.iter().copied()),
                AlgorithmConfig::NAMES.join(", ")
            ));
        };
        let takes = Self::keys_of(&name);
        for key in map.keys() {
            if takes.contains(key) {
                continue;
            }
            let users: Vec<&str> = AlgorithmConfig::NAMES
                .iter()
                .filter(|n| Self::keys_of(n).contains(key))
                .copied()
                .collect();
            if users.is_empty() {
                let all: Vec<String> = AlgorithmConfig::NAMES
                    .iter()
                    .flat_map(|n| Self::keys_of(n))
                    .collect();
                return Err(format!(
                    "strategy.{key}: unknown key{}; {name} takes {}",
                    hint(key, all.iter().map(String::as_str)),
                    takes.join(", ")
                ));
            }
            return Err(format!(
                "strategy.{key}: not used by {name} (used by {})",
                users.join(", ")
            ));
        }
        if map.contains_key("fraction") && map.contains_key("clients_per_round") {
            return Err(
                "strategy.fraction: set together with strategy.clients_per_round; set \
                        one (fraction C samples ⌈C·N⌉ clients a round, clients_per_round a fixed \
                        count)"
                    .into(),
            );
        }
        let normalize_written = map.contains_key("normalize");
        let round_keys = Self::round_keys(&default);
        let (round, own): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
            map.into_iter().partition(|(k, _)| round_keys.contains(k));
        let round: RoundConfig = serde_path_to_error::deserialize(serde_json::Value::Object(round))
            .map_err(|e| format!("strategy.{}", path_error(e)))?;
        let algorithm = AlgorithmConfig::from_json(&name, serde_json::Value::Object(own))
            .expect("a known name")
            .map_err(|e| format!("strategy.{e}"))?;
        let mut s = Self { round, algorithm };
        // `flower_compatible` reproduces Flower, which does not normalise: normalisation
        // defaults to off with it (an explicit "auto" or "on" is refused by `validate`).
        if s.server_optimizer().flower_compatible() && !normalize_written {
            s.round.normalize = Normalize::Off;
        }
        Ok(s)
    }

    /// The table as JSON: `name`, the shared keys the algorithm takes, its own keys
    /// (unset optional keys left out).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), self.name().into());
        let keys = Self::round_keys(&self.algorithm);
        if let Ok(serde_json::Value::Object(r)) = serde_json::to_value(&self.round) {
            for (k, v) in r {
                let unused = k == "clients_per_round" && self.round.fraction.is_some();
                if keys.contains(&k) && !v.is_null() && !unused {
                    m.insert(k, v);
                }
            }
        }
        if let serde_json::Value::Object(a) = self.algorithm.as_dyn().to_json() {
            for (k, v) in a {
                if !v.is_null() {
                    m.insert(k, v);
                }
            }
        }
        m
    }

    /// Checks ranges; errors name the key under `strategy.`.
    pub fn validate(&self) -> Result<()> {
        if !self.is_async() {
            match self.round.fraction {
                Some(_) => self.round.sampling().validate("strategy.fraction")?,
                None => self
                    .round
                    .sampling()
                    .validate("strategy.clients_per_round")?,
            }
            let lr = self.server_lr();
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::invalid("strategy.server_lr", lr, "must be > 0"));
            }
            check_f32("strategy.server_lr", lr)?;
            let server = self.server_optimizer();
            server.validate(self.algorithm.as_dyn().own_server_optimizer().is_some())?;
            if server.flower_compatible() && self.round.normalize != Normalize::Off {
                return Err(Error::invalid(
                    "strategy.normalize",
                    format!("{:?}", self.round.normalize).to_lowercase(),
                    "off with flower_compatible = true (Flower does not normalise; leave \
                     normalize out, or set flower_compatible = false)",
                ));
            }
        }
        self.algorithm.as_dyn().validate(&self.round)
    }

    /// Whether the algorithm learns from the clients' validation splits (its clients
    /// answer the validation probe every round: FedEx, meta-rates), so that a run
    /// without them is refused before it starts. FedHyper learns from the aggregate
    /// updates and FedL2P falls back to the training split (docs/hypernetworks.md): neither
    /// needs them.
    pub fn reads_validation(&self) -> bool {
        matches!(self.name(), "fedex" | "meta-rates")
    }

    /// Refuses, in one line naming both sides, a combination of this strategy with a
    /// rate policy and the clients' optimiser and state mode that would not do what the
    /// docs say (rather than run and silently do something else).
    pub fn check_combination(
        &self,
        policy: &PolicyConfig,
        optimizer: &OptimizerSpec,
        state_mode: StateMode,
    ) -> std::result::Result<(), String> {
        let name = self.name();
        let (optimizer, optimizer_source) = match policy.forces_optimizer() {
            Some(o) => (o, format!("policy {}", policy.name())),
            None => (
                *optimizer,
                format!("client.optimizer = {:?}", optimizer.name()),
            ),
        };
        let (state_mode, state_source) = if policy.forces_server_init() {
            (
                StateMode::ServerInit,
                format!("policy {} (server-initialised moments)", policy.name()),
            )
        } else {
            (
                state_mode,
                format!(
                    "client.state_mode = {}",
                    serde_json::to_string(&state_mode).unwrap_or_default()
                ),
            )
        };
        if let Some(why) = policy.refuses_optimizer(&optimizer) {
            return Err(format!(
                "policy {}: {why} ({optimizer_source}, strategy {name})",
                policy.name()
            ));
        }
        if self.is_async() {
            if let Some(p) = policy.reads_validation() {
                return Err(format!(
                    "policy {p}: not supported by {name} (it learns from the clients' \
                     validation signal, which only the synchronous rounds ask for)"
                ));
            }
            if state_mode == StateMode::ServerInit {
                return Err(format!(
                    "{state_source}: not supported by {name} (the asynchronous server keeps no \
                     client optimiser state; use reset or keep)"
                ));
            }
            if let Some(p) = policy.adjusting_aggregation() {
                return Err(format!(
                    "policy {p}: not supported by {name} (aggregation-side policies need a \
                     synchronous round of updates to scale)"
                ));
            }
        } else if self.round.aggregation == AggregationPath::Linear {
            if let Some(p) = policy.adjusting_aggregation() {
                return Err(format!(
                    "policy {p}: not supported with strategy.aggregation = \"linear\" (the \
                     server only sees the sum of the updates, not each one to scale)"
                ));
            }
            if self.round.normalize == Normalize::Auto {
                return Err(format!(
                    "strategy.normalize = \"auto\": not supported with strategy.aggregation = \
                     \"linear\" for {name} (clients pre-scale before anyone knows whether rate \
                     sums differ); set \"on\" or \"off\""
                ));
            }
        }
        self.algorithm.as_dyn().check(&Combination {
            round: &self.round,
            policy,
            optimizer,
            optimizer_source,
            state_mode,
            state_source,
        })
    }

    /// Checks the algorithm's settings against the model (group labels), before a run.
    pub fn check_model(&self, spec: &ParamSpec) -> Result<()> {
        self.algorithm.as_dyn().check_model(spec)
    }

    /// Builds the algorithm around the base plan and the rate policy.
    pub fn build(&self, base_plan: RatePlan, policy: Box<dyn RatePolicy>) -> Result<Built> {
        self.build_with(base_plan, policy, crate::stages::StagesConfig::none())
    }

    /// [`StrategyConfig::build`] with the privacy, security, robustness and compression
    /// stages (`crate::stages`; check them first with `StagesConfig::check`).
    pub fn build_with(
        &self,
        base_plan: RatePlan,
        policy: Box<dyn RatePolicy>,
        stages: crate::stages::StagesConfig,
    ) -> Result<Built> {
        self.validate()?;
        if self.is_async() && !stages.is_empty() {
            return Err(Error::invalid(
                "strategy.name",
                self.name(),
                "a synchronous algorithm with [privacy], [secure_aggregation], [robust] or \
                 [compression]",
            ));
        }
        let server = self.server_optimizer().build(self.server_lr())?;
        self.algorithm.as_dyn().build(BuildCx {
            settings: Settings {
                sampling: self.round.sampling(),
                server_lr: self.server_lr(),
                normalize: self.round.normalize,
                aggregation: self.round.aggregation,
                base_plan,
                stages,
            },
            server,
            policy,
        })
    }
}

impl Serialize for StrategyConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

impl<'de> Deserialize<'de> for StrategyConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        StrategyConfig::from_map(map).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> std::result::Result<StrategyConfig, String> {
        StrategyConfig::from_map(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_knob_of_another_algorithm_is_an_error_naming_the_key() {
        assert_eq!(
            parse(r#"{"name": "fedper", "lambda": 1}"#).unwrap_err(),
            "strategy.lambda: not used by fedper (used by pfedme, ditto)"
        );
        assert_eq!(
            parse(r#"{"mu": 1}"#).unwrap_err(),
            "strategy.mu: not used by fedavg (used by fedprox, fedasync)"
        );
        assert_eq!(
            parse(r#"{"name": "fedasync", "server_lr": 1}"#).unwrap_err(),
            "strategy.server_lr: not used by fedasync (used by fedavg, fedavgm, fedadagrad, \
             fedadam, fedyogi, fedexp, fednova, fedprox, scaffold, feddyn, fedbuff, perfedavg, \
             pfedme, ditto, fedper, lg-fedavg, fedrep, fedbabu, apfl, fedl2p, fedex, fedhyper, \
             meta-rates)"
        );
        assert_eq!(
            parse(r#"{"name": "fedadam", "server_optimizer": {"name": "sgd"}}"#).unwrap_err(),
            "strategy.server_optimizer: not used by fedadam (used by fedavg, fednova, fedprox, \
             scaffold, feddyn, perfedavg, pfedme, ditto, fedper, lg-fedavg, fedrep, fedbabu, apfl, \
             fedl2p, fedex, fedhyper, meta-rates)"
        );
        assert!(parse(r#"{"name": "ditto", "lambda": 2, "personal_lr": 0.1}"#).is_ok());
        assert!(parse(r#"{"name": "fedadam", "beta1": 0.5, "flower_compatible": true}"#).is_ok());
        // A key no algorithm knows: the chosen algorithm's keys, and the nearest known key.
        assert_eq!(
            parse(r#"{"name": "ditto", "lamda": 1}"#).unwrap_err(),
            "strategy.lamda: unknown key (did you mean `lambda`?); ditto takes name, \
             clients_per_round, fraction, server_lr, normalize, server_optimizer, aggregation, \
             train_all, lambda, personal_lr"
        );
        assert_eq!(
            parse(r#"{"name": "fedmagic"}"#).unwrap_err(),
            "strategy.name = \"fedmagic\": unknown algorithm; expected one of fedavg, fedavgm, \
             fedadagrad, fedadam, fedyogi, fedexp, fednova, fedprox, scaffold, feddyn, fedasync, \
             fedbuff, perfedavg, pfedme, ditto, fedper, lg-fedavg, fedrep, fedbabu, apfl, pfedhn, \
             fedl2p, fedex, fedhyper, meta-rates"
        );
        assert!(parse(r#"{"name": "fedprx"}"#)
            .unwrap_err()
            .contains("(did you mean `fedprox`?)"));
        assert_eq!(
            parse(r#"{"name": "fedprox", "mu": "a"}"#).unwrap_err(),
            "strategy.mu: invalid type: string \"a\", expected f64"
        );
        assert_eq!(edit_distance("lamda", "lambda"), 1);
        assert_eq!(edit_distance("mu", "tau"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn every_algorithm_round_trips_through_its_table() {
        for name in AlgorithmConfig::NAMES {
            let c = StrategyConfig::named(name).unwrap();
            let again = StrategyConfig::from_map(c.to_map()).unwrap();
            assert_eq!(again, c, "{name}");
            // Every written key is one the algorithm takes.
            for k in c.to_map().keys() {
                assert!(StrategyConfig::keys_of(name).contains(k), "{name}: {k}");
            }
        }
    }
}
