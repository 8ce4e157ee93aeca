//! The `[strategy]` table and the one place that turns it into a [`Strategy`].
//!
//! Adding an algorithm: a variant in [`StrategyName`], its knobs as fields here (each
//! documented with its default and checked in [`StrategyConfig::validate`]), and an
//! arm in [`StrategyConfig::build`].

use crate::aggregate::Normalize;
use crate::fedavg::{FedAvg, FedAvgConfig};
use crate::feddyn::FedDyn;
use crate::fedopt::ServerStep;
use crate::fedprox::FedProx;
use crate::personal::{Personalized, PersonalizedConfig};
use crate::sampling::Sampling;
use crate::scaffold::Scaffold;
use fedpace_core::{ClientRecipe, Error, PerFedAvgVariant, RatePlan, RatePolicy, Result, Strategy};
use fedpace_optim::{FedOptConfig, ServerRule};
use fedpace_params::ParamSpec;
use serde::{Deserialize, Serialize};

/// Strategy names (the lowercase paper names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// FedAvg (ALGORITHMS.md A.1).
    #[default]
    Fedavg,
    /// FedAvgM, server momentum (A.2).
    Fedavgm,
    /// FedAdagrad (A.3).
    Fedadagrad,
    /// FedAdam (A.3).
    Fedadam,
    /// FedYogi (A.3).
    Fedyogi,
    /// FedExP, adaptive server extrapolation (A.4).
    Fedexp,
    /// FedNova (B.3): FedAvg that always normalises updates by each client's Σ rates.
    Fednova,
    /// FedProx (ALGORITHMS.md B.1): FedAvg with a proximal term `mu`.
    Fedprox,
    /// SCAFFOLD (ALGORITHMS.md B.2), option `scaffold_option`.
    Scaffold,
    /// FedDyn (ALGORITHMS.md B.4) with regulariser `alpha`.
    Feddyn,
    /// FedAsync (ALGORITHMS.md C.8), asynchronous: `async_alpha`, `staleness`.
    Fedasync,
    /// FedBuff (ALGORITHMS.md C.9), asynchronous: `buffer_size`, `staleness`, `server_lr`.
    Fedbuff,
    /// Per-FedAvg (E.1): `variant`, `meta_lr`, `hf_delta`; α is `client.lr`.
    Perfedavg,
    /// pFedMe (E.2): `inner_steps`, `lambda`, `personal_lr`, `mu_reg`; β is `server_lr`.
    Pfedme,
    /// Ditto (E.3): `lambda`, `personal_lr`.
    Ditto,
    /// FedPer (E.4): `personal_groups` (default `["head"]`).
    Fedper,
    /// LG-FedAvg (E.5): `personal_groups` (default `["body"]`).
    LgFedavg,
    /// FedRep (E.6): `personal_groups` (default `["head"]`), `head_epochs`, `body_epochs`.
    Fedrep,
    /// FedBABU (E.8): `frozen_groups` (default `["head"]`); personalise by fine-tuning.
    Fedbabu,
    /// APFL (E.7): `alpha_init`, `alpha_lr`.
    Apfl,
}

/// `[strategy]` keys every algorithm accepts.
pub const COMMON_KNOBS: &[&str] = &["name"];

/// Keys every synchronous algorithm uses (sampling, server step, normalisation).
const SYNC: [&str; 4] = ["clients_per_round", "fraction", "server_lr", "normalize"];

/// Builds a `&'static [&'static str]` of the synchronous keys plus `extra`.
macro_rules! sync_knobs {
    ($($k:literal),* $(,)?) => {{
        const K: &[&str] = &[SYNC[0], SYNC[1], SYNC[2], SYNC[3], $($k),*];
        K
    }};
}

impl StrategyName {
    /// Every algorithm, in declaration order.
    pub const ALL: [StrategyName; 20] = [
        StrategyName::Fedavg,
        StrategyName::Fedavgm,
        StrategyName::Fedadagrad,
        StrategyName::Fedadam,
        StrategyName::Fedyogi,
        StrategyName::Fedexp,
        StrategyName::Fednova,
        StrategyName::Fedprox,
        StrategyName::Scaffold,
        StrategyName::Feddyn,
        StrategyName::Fedasync,
        StrategyName::Fedbuff,
        StrategyName::Perfedavg,
        StrategyName::Pfedme,
        StrategyName::Ditto,
        StrategyName::Fedper,
        StrategyName::LgFedavg,
        StrategyName::Fedrep,
        StrategyName::Fedbabu,
        StrategyName::Apfl,
    ];

    /// The `[strategy]` keys this algorithm uses besides [`COMMON_KNOBS`]. A key written
    /// in the table that the chosen algorithm does not use is an error
    /// ([`check_strategy_keys`]); every field of [`StrategyConfig`] must belong to at
    /// least one algorithm (checked by a test).
    pub fn knobs(self) -> &'static [&'static str] {
        match self {
            StrategyName::Fedavg | StrategyName::Fednova => sync_knobs!(),
            StrategyName::Fedavgm => sync_knobs!("momentum"),
            StrategyName::Fedadagrad => sync_knobs!("tau", "flower_compatible"),
            StrategyName::Fedadam | StrategyName::Fedyogi => {
                sync_knobs!("beta1", "beta2", "tau", "flower_compatible")
            }
            StrategyName::Fedexp => sync_knobs!("eps"),
            StrategyName::Fedprox => sync_knobs!("mu"),
            StrategyName::Scaffold => sync_knobs!("scaffold_option"),
            StrategyName::Feddyn => sync_knobs!("alpha", "feddyn_clip"),
            StrategyName::Fedasync => &[
                "async_alpha",
                "staleness",
                "mu",
                "concurrency",
                "rate_decay",
            ],
            StrategyName::Fedbuff => &[
                "buffer_size",
                "server_lr",
                "staleness",
                "concurrency",
                "rate_decay",
            ],
            StrategyName::Perfedavg => sync_knobs!("train_all", "variant", "meta_lr", "hf_delta"),
            StrategyName::Pfedme => sync_knobs!(
                "train_all",
                "inner_steps",
                "lambda",
                "personal_lr",
                "mu_reg"
            ),
            StrategyName::Ditto => sync_knobs!("train_all", "lambda", "personal_lr"),
            StrategyName::Fedper | StrategyName::LgFedavg => {
                sync_knobs!("train_all", "personal_groups")
            }
            StrategyName::Fedrep => {
                sync_knobs!("train_all", "personal_groups", "head_epochs", "body_epochs")
            }
            StrategyName::Fedbabu => sync_knobs!("train_all", "frozen_groups"),
            StrategyName::Apfl => sync_knobs!("train_all", "alpha_init", "alpha_lr"),
        }
    }

    /// Whether `[strategy] key` is used by this algorithm.
    pub fn uses(self, key: &str) -> bool {
        COMMON_KNOBS.contains(&key) || self.knobs().contains(&key)
    }
}

/// Checks the keys *written* in a `[strategy]` table (read from the raw table, since many
/// knobs have defaults) against the chosen algorithm: a key the algorithm does not use is
/// an error `strategy.KEY: not used by NAME (used by A, B)`; a key no algorithm knows is
/// an error listing the keys NAME takes, with a "did you mean" hint for near misses.
pub fn check_strategy_keys<'a>(
    name: StrategyName,
    keys: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<(), String> {
    for key in keys {
        if name.uses(key) {
            continue;
        }
        let users: Vec<&str> = StrategyName::ALL
            .iter()
            .filter(|n| n.knobs().contains(&key))
            .map(|n| n.as_str())
            .collect();
        if users.is_empty() {
            let takes: Vec<&str> = COMMON_KNOBS.iter().chain(name.knobs()).copied().collect();
            let all = StrategyName::ALL.iter().flat_map(|n| n.knobs().iter());
            let hint = COMMON_KNOBS
                .iter()
                .chain(all)
                .map(|k| (edit_distance(key, k), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "strategy.{key}: unknown key{hint}; {} takes {}",
                name.as_str(),
                takes.join(", ")
            ));
        }
        return Err(format!(
            "strategy.{key}: not used by {} (used by {})",
            name.as_str(),
            users.join(", ")
        ));
    }
    Ok(())
}

/// Levenshtein distance (for "did you mean" hints on short keys).
fn edit_distance(a: &str, b: &str) -> usize {
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

impl StrategyName {
    /// The default server rate η_g: 1 for fedavg/fedavgm/fednova (and FedExP's floor),
    /// 0.1 for fedadagrad/fedadam (Flower's and [`FedOptConfig`]'s default), 0.1 for
    /// fedyogi under the paper rule and 0.01 under `flower_compatible` (Flower's).
    pub fn default_server_lr(self, flower: bool) -> f64 {
        match self {
            StrategyName::Fedavg
            | StrategyName::Fedavgm
            | StrategyName::Fednova
            | StrategyName::Fedexp => 1.0,
            StrategyName::Fedadagrad | StrategyName::Fedadam => 0.1,
            StrategyName::Fedyogi if flower => 0.01,
            StrategyName::Fedyogi => 0.1,
            StrategyName::Fedprox
            | StrategyName::Scaffold
            | StrategyName::Feddyn
            | StrategyName::Fedasync
            | StrategyName::Fedbuff => 1.0,
            StrategyName::Perfedavg
            | StrategyName::Pfedme
            | StrategyName::Ditto
            | StrategyName::Fedper
            | StrategyName::LgFedavg
            | StrategyName::Fedrep
            | StrategyName::Fedbabu
            | StrategyName::Apfl => 1.0,
        }
    }
}

/// Server strategy settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    /// Algorithm (default `fedavg`).
    pub name: StrategyName,
    /// Clients per round (default 10); ignored when `fraction` is set.
    pub clients_per_round: usize,
    /// Fraction C of clients per round instead of a count.
    pub fraction: Option<f64>,
    /// Server rate η_g (default per strategy: see [`StrategyName::default_server_lr`]).
    pub server_lr: Option<f64>,
    /// Normalise updates by clients' rate sums: `auto` (when they differ), `on`, `off`.
    pub normalize: Normalize,
    /// FedAvgM's server momentum β (default 0.9, Hsu et al.).
    pub momentum: f64,
    /// FedAdam/FedYogi β1 (default 0.9).
    pub beta1: f64,
    /// FedAdam/FedYogi β2 (default 0.99).
    pub beta2: f64,
    /// FedOpt adaptivity τ (default 1e-3).
    pub tau: f64,
    /// FedExP's ε (default 1e-3).
    pub eps: f64,
    /// Reproduce Flower 1.42's server rules (ALGORITHMS.md App. F: v₀ = 0, FedAdam's
    /// bias-corrected step size) instead of the paper's (default false).
    pub flower_compatible: bool,
    /// FedProx: proximal coefficient μ ≥ 0 put in every client's plan (default 0.01).
    pub mu: f64,
    /// SCAFFOLD: control-variate refresh, `"i"` or `"ii"` (default `"ii"`).
    pub scaffold_option: fedpace_core::ScaffoldOption,
    /// FedDyn: regulariser α > 0 (default 0.1).
    pub alpha: f64,
    /// FedDyn: clip each corrected local gradient to this global L2 norm (default 10,
    /// the reference code's; 0 = no clipping).
    pub feddyn_clip: f64,
    /// FedAsync: mixing weight α ∈ (0, 1] (default 0.6).
    pub async_alpha: f64,
    /// Asynchronous: staleness function s(τ), e.g. `{ name = "hinge", a = 10, b = 4 }`
    /// (default `{ name = "polynomial", a = 0.5 }`).
    pub staleness: fedpace_core::asynchronous::Staleness,
    /// FedBuff: updates per server step K (default 10).
    pub buffer_size: usize,
    /// Asynchronous: clients training at once (default 10).
    pub concurrency: usize,
    /// Asynchronous: multiply a client's rate by s(its previous staleness) (default true).
    pub rate_decay: bool,
    /// Personalised algorithms: labels of the parameter groups that stay on the client
    /// (fedper/fedrep default `["head"]`, lg-fedavg `["body"]`).
    pub personal_groups: Option<Vec<String>>,
    /// fedbabu: labels of the groups frozen during rounds (default `["head"]`).
    pub frozen_groups: Option<Vec<String>>,
    /// perfedavg: `fo` (first order, default) or `hf` (Hessian-free).
    pub variant: PerFedAvgVariant,
    /// perfedavg: meta rate β (default 1e-3).
    pub meta_lr: f64,
    /// perfedavg hf: finite-difference step δ (default 1e-3).
    pub hf_delta: f64,
    /// pfedme: inner steps K per mini-batch (default 5).
    pub inner_steps: u32,
    /// pfedme: λ (default 15); ditto: λ (default 1).
    pub lambda: Option<f64>,
    /// pfedme: personal rate η_p (default 0.1); ditto: personal rate (default `client.lr`).
    pub personal_lr: Option<f64>,
    /// pfedme: L2 weight μ_reg of the inner problem (default 1e-3, the reference code's).
    pub mu_reg: f64,
    /// fedrep: epochs on the head per round, τ_h (default 10).
    pub head_epochs: u32,
    /// fedrep: epochs on the body per round, τ_b (default 1).
    pub body_epochs: u32,
    /// apfl: initial mixing weight α (default 0.5).
    pub alpha_init: f64,
    /// apfl: rate of the α update (default `client.lr`; 0 = fixed α).
    pub alpha_lr: Option<f64>,
    /// Personalised algorithms: train every client each round, aggregate only the
    /// sampled ones (the pFedMe reference code's behaviour; default false).
    pub train_all: bool,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            name: StrategyName::Fedavg,
            clients_per_round: 10,
            fraction: None,
            server_lr: None,
            normalize: Normalize::Auto,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            eps: 1e-3,
            flower_compatible: false,
            mu: 0.01,
            scaffold_option: Default::default(),
            alpha: 0.1,
            feddyn_clip: 10.0,
            async_alpha: 0.6,
            staleness: Default::default(),
            buffer_size: 10,
            concurrency: 10,
            rate_decay: true,
            personal_groups: None,
            frozen_groups: None,
            variant: PerFedAvgVariant::Fo,
            meta_lr: 1e-3,
            hf_delta: 1e-3,
            inner_steps: 5,
            lambda: None,
            personal_lr: None,
            mu_reg: 1e-3,
            head_epochs: 10,
            body_epochs: 1,
            alpha_init: 0.5,
            alpha_lr: None,
            train_all: false,
        }
    }
}

impl StrategyConfig {
    /// The sampling rule.
    pub fn sampling(&self) -> Sampling {
        match self.fraction {
            Some(f) => Sampling::Fraction(f),
            None => Sampling::Count(self.clients_per_round),
        }
    }

    /// Checks ranges; errors name the key under `strategy.`.
    pub fn validate(&self) -> Result<()> {
        match self.fraction {
            Some(_) => self.sampling().validate("strategy.fraction")?,
            None => self.sampling().validate("strategy.clients_per_round")?,
        }
        let lr = self.server_lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::invalid("strategy.server_lr", lr, "must be > 0"));
        }
        let unit = |k: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!("strategy.{k}"), v, "in [0, 1)"))
            }
        };
        unit("momentum", self.momentum)?;
        unit("beta1", self.beta1)?;
        unit("beta2", self.beta2)?;
        for (k, v) in [("tau", self.tau), ("eps", self.eps)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(format!("strategy.{k}"), v, "finite and > 0"));
            }
        }
        if self.flower_compatible && self.normalize != Normalize::Off {
            return Err(Error::invalid(
                "strategy.normalize",
                format!("{:?}", self.normalize).to_lowercase(),
                "off with flower_compatible = true (Flower does not normalise; leave \
                 normalize out, or set flower_compatible = false)",
            ));
        }
        let f32_ok = |k: &str, v: f64| {
            if (v as f32).is_finite() && (v == 0.0 || v as f32 != 0.0) {
                Ok(())
            } else {
                Err(Error::invalid(
                    k,
                    format!("{v:e}"),
                    "a value that fits an f32 (about 1e-38 to 3.4e38): it is used as one",
                ))
            }
        };
        f32_ok("strategy.server_lr", lr)?;
        f32_ok("strategy.mu", self.mu)?;
        f32_ok("strategy.meta_lr", self.meta_lr)?;
        f32_ok("strategy.hf_delta", self.hf_delta)?;
        f32_ok("strategy.mu_reg", self.mu_reg)?;
        for (k, v) in [
            ("strategy.lambda", self.lambda),
            ("strategy.personal_lr", self.personal_lr),
            ("strategy.alpha_lr", self.alpha_lr),
        ] {
            if let Some(v) = v {
                f32_ok(k, v)?;
            }
        }
        if self.name == StrategyName::Fednova && self.normalize == Normalize::Off {
            return Err(Error::invalid(
                "strategy.normalize",
                "off",
                "auto or on (fednova always normalises)",
            ));
        }
        if !(self.mu.is_finite() && self.mu >= 0.0) {
            return Err(Error::invalid("strategy.mu", self.mu, "a finite μ >= 0"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::invalid(
                "strategy.alpha",
                self.alpha,
                "a finite α > 0",
            ));
        }
        if !(self.feddyn_clip.is_finite() && self.feddyn_clip >= 0.0) {
            return Err(Error::invalid(
                "strategy.feddyn_clip",
                self.feddyn_clip,
                "a finite norm >= 0 (0 turns clipping off)",
            ));
        }
        if !(self.async_alpha > 0.0 && self.async_alpha <= 1.0) {
            return Err(Error::invalid(
                "strategy.async_alpha",
                self.async_alpha,
                "in (0, 1]",
            ));
        }
        self.staleness.validate("strategy.staleness")?;
        if self.buffer_size == 0 {
            return Err(Error::invalid("strategy.buffer_size", 0, "at least 1"));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("strategy.concurrency", 0, "at least 1"));
        }
        let positive = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(k, v, "must be > 0"))
            }
        };
        let non_negative = |k: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(k, v, "must be >= 0"))
            }
        };
        positive("strategy.meta_lr", self.meta_lr)?;
        positive("strategy.hf_delta", self.hf_delta)?;
        if self.inner_steps == 0 {
            return Err(Error::invalid("strategy.inner_steps", 0, "at least 1"));
        }
        if let Some(l) = self.lambda {
            non_negative("strategy.lambda", l)?;
        }
        if let Some(l) = self.personal_lr {
            positive("strategy.personal_lr", l)?;
        }
        non_negative("strategy.mu_reg", self.mu_reg)?;
        if self.head_epochs + self.body_epochs == 0 {
            return Err(Error::invalid(
                "strategy.head_epochs",
                0,
                "head_epochs + body_epochs >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha_init) {
            return Err(Error::invalid(
                "strategy.alpha_init",
                self.alpha_init,
                "a weight in [0, 1]",
            ));
        }
        if let Some(a) = self.alpha_lr {
            non_negative("strategy.alpha_lr", a)?;
        }
        for (k, v) in [
            ("strategy.personal_groups", &self.personal_groups),
            ("strategy.frozen_groups", &self.frozen_groups),
        ] {
            if let Some(v) = v {
                if v.is_empty() {
                    return Err(Error::invalid(k, "[]", "at least one group label"));
                }
            }
        }
        Ok(())
    }

    /// The server rate η_g: `server_lr` if given, else the strategy's default.
    pub fn server_lr(&self) -> f64 {
        self.server_lr
            .unwrap_or_else(|| self.name.default_server_lr(self.flower_compatible))
    }

    fn fedopt(&self) -> FedOptConfig {
        FedOptConfig {
            server_lr: self.server_lr(),
            beta1: self.beta1,
            beta2: self.beta2,
            tau: self.tau,
            rule: if self.flower_compatible {
                ServerRule::Flower
            } else {
                ServerRule::Paper
            },
        }
    }

    /// Whether the algorithm is asynchronous (built by [`StrategyConfig::build_async`]
    /// and run by `fedpace_sim::run_async`).
    pub fn is_async(&self) -> bool {
        matches!(self.name, StrategyName::Fedasync | StrategyName::Fedbuff)
    }

    /// Builds the server half of an asynchronous algorithm.
    pub fn build_async(&self) -> Result<Box<dyn fedpace_core::asynchronous::AsyncStrategy>> {
        self.validate()?;
        match self.name {
            StrategyName::Fedasync => Ok(Box::new(crate::fedasync::FedAsync::new(
                self.async_alpha,
                self.staleness,
            )?)),
            StrategyName::Fedbuff => Ok(Box::new(crate::fedbuff::FedBuff::new(
                self.buffer_size,
                self.server_lr(),
                self.staleness,
            )?)),
            other => Err(Error::invalid(
                "strategy.name",
                format!("{other:?}").to_lowercase(),
                "an asynchronous algorithm (fedasync, fedbuff)",
            )),
        }
    }

    fn personalized(&self, base_plan: RatePlan) -> PersonalizedConfig {
        let labels = |v: &Option<Vec<String>>, d: &[&str]| {
            v.clone()
                .unwrap_or_else(|| d.iter().map(|s| s.to_string()).collect())
        };
        let lr = base_plan.base_lr;
        let (name, recipe, personal, frozen): (
            &'static str,
            ClientRecipe,
            Vec<String>,
            Vec<String>,
        ) = match self.name {
            StrategyName::Perfedavg => (
                "perfedavg",
                ClientRecipe::PerFedAvg {
                    variant: self.variant,
                    meta_lr: self.meta_lr as f32,
                    hf_delta: self.hf_delta as f32,
                },
                vec![],
                vec![],
            ),
            StrategyName::Pfedme => (
                "pfedme",
                ClientRecipe::PFedMe {
                    inner_steps: self.inner_steps,
                    lambda: self.lambda.unwrap_or(15.0) as f32,
                    personal_lr: self.personal_lr.unwrap_or(0.1) as f32,
                    mu_reg: self.mu_reg as f32,
                },
                vec![],
                vec![],
            ),
            StrategyName::Ditto => (
                "ditto",
                ClientRecipe::Ditto {
                    lambda: self.lambda.unwrap_or(1.0) as f32,
                    personal_lr: self.personal_lr.map(|x| x as f32),
                },
                vec![],
                vec![],
            ),
            StrategyName::Fedper => (
                "fedper",
                crate::fedper::recipe(),
                labels(
                    &self.personal_groups,
                    crate::fedper::DEFAULT_PERSONAL_GROUPS,
                ),
                vec![],
            ),
            StrategyName::LgFedavg => (
                "lg-fedavg",
                crate::lgfedavg::recipe(),
                labels(
                    &self.personal_groups,
                    crate::lgfedavg::DEFAULT_PERSONAL_GROUPS,
                ),
                vec![],
            ),
            StrategyName::Fedrep => (
                "fedrep",
                ClientRecipe::FedRep {
                    head_epochs: self.head_epochs,
                    body_epochs: self.body_epochs,
                },
                labels(
                    &self.personal_groups,
                    crate::fedper::DEFAULT_PERSONAL_GROUPS,
                ),
                vec![],
            ),
            StrategyName::Fedbabu => (
                "fedbabu",
                crate::fedbabu::recipe(),
                vec![],
                labels(&self.frozen_groups, crate::fedbabu::DEFAULT_FROZEN_GROUPS),
            ),
            StrategyName::Apfl => (
                "apfl",
                ClientRecipe::Apfl {
                    alpha_init: self.alpha_init as f32,
                    alpha_lr: self.alpha_lr.map_or(lr, |a| a as f32),
                },
                vec![],
                vec![],
            ),
            other => unreachable!("{} is not a personalised algorithm", other.as_str()),
        };
        PersonalizedConfig {
            name,
            sampling: self.sampling(),
            server_lr: self.server_lr() as f32,
            normalize: self.normalize,
            base_plan,
            recipe,
            personal_groups: personal,
            frozen_groups: frozen,
            train_all: self.train_all,
        }
    }

    /// Whether the server sends clients its optimiser state (plan `state_mode =
    /// "server-init"`): the FedAvg family only. SCAFFOLD and FedDyn use the message's one
    /// extras slot for their own payload, the personalised family and the asynchronous
    /// algorithms never send one.
    pub fn sends_optimizer_state(&self) -> bool {
        matches!(
            self.name,
            StrategyName::Fedavg
                | StrategyName::Fedavgm
                | StrategyName::Fedadagrad
                | StrategyName::Fedadam
                | StrategyName::Fedyogi
                | StrategyName::Fedexp
                | StrategyName::Fednova
                | StrategyName::Fedprox
        )
    }

    /// Whether the algorithm is one of the personalised family (ALGORITHMS.md Part E).
    pub fn is_personalized(&self) -> bool {
        matches!(
            self.name,
            StrategyName::Perfedavg
                | StrategyName::Pfedme
                | StrategyName::Ditto
                | StrategyName::Fedper
                | StrategyName::LgFedavg
                | StrategyName::Fedrep
                | StrategyName::Fedbabu
                | StrategyName::Apfl
        )
    }

    /// Checks `personal_groups` / `frozen_groups` (or the algorithm's defaults) against
    /// the model's group labels, so a bad label is reported before a run starts; the
    /// error names the key, the label and the model's labels. A no-op for algorithms
    /// without group labels.
    pub fn check_groups(&self, spec: &ParamSpec, base_plan: &RatePlan) -> Result<()> {
        if self.is_personalized() {
            self.personalized(base_plan.clone()).resolve(spec)?;
        }
        Ok(())
    }

    /// Builds the strategy around the base plan and the rate policy.
    pub fn build(
        &self,
        base_plan: RatePlan,
        policy: Box<dyn RatePolicy>,
    ) -> Result<Box<dyn Strategy>> {
        self.validate()?;
        let lr = self.server_lr();
        let cfg = FedAvgConfig {
            sampling: self.sampling(),
            server_lr: lr as f32,
            normalize: self.normalize,
            base_plan,
        };
        let fedavg = |normalize: Normalize, cfg: FedAvgConfig, policy| {
            FedAvg::new(FedAvgConfig { normalize, ..cfg }, policy)
        };
        let opt_err =
            |e: fedpace_optim::Error| Error::invalid("strategy", self.name.as_str(), e.to_string());
        let s = match self.name {
            StrategyName::Fedavg => fedavg(self.normalize, cfg, policy),
            StrategyName::Fednova => fedavg(Normalize::On, cfg, policy)
                .with_server("fednova", ServerStep::Sgd { server_lr: lr }),
            StrategyName::Fedavgm => fedavg(self.normalize, cfg, policy).with_server(
                "fedavgm",
                ServerStep::Optimizer {
                    opt: fedpace_optim::server::fedavgm(lr, self.momentum),
                    state: None,
                },
            ),
            StrategyName::Fedadagrad => {
                let opt = self.fedopt().fedadagrad().map_err(opt_err)?;
                fedavg(self.normalize, cfg, policy)
                    .with_server("fedadagrad", ServerStep::Optimizer { opt, state: None })
            }
            StrategyName::Fedadam => {
                let opt = self.fedopt().fedadam().map_err(opt_err)?;
                fedavg(self.normalize, cfg, policy)
                    .with_server("fedadam", ServerStep::Optimizer { opt, state: None })
            }
            StrategyName::Fedyogi => {
                let opt = self.fedopt().fedyogi().map_err(opt_err)?;
                fedavg(self.normalize, cfg, policy)
                    .with_server("fedyogi", ServerStep::Optimizer { opt, state: None })
            }
            StrategyName::Fedexp => fedavg(self.normalize, cfg, policy)
                .with_server("fedexp", ServerStep::FedExp { eps: self.eps })
                .with_uniform_weights(true),
            StrategyName::Fedprox => return Ok(Box::new(FedProx::new(cfg, self.mu, policy)?)),
            StrategyName::Scaffold => {
                return Ok(Box::new(Scaffold::new(cfg, self.scaffold_option, policy)))
            }
            StrategyName::Feddyn => {
                let clip = (self.feddyn_clip > 0.0).then_some(self.feddyn_clip);
                return Ok(Box::new(FedDyn::with_clip(cfg, self.alpha, clip, policy)?));
            }
            StrategyName::Perfedavg
            | StrategyName::Pfedme
            | StrategyName::Ditto
            | StrategyName::Fedper
            | StrategyName::LgFedavg
            | StrategyName::Fedrep
            | StrategyName::Fedbabu
            | StrategyName::Apfl => {
                let pcfg = self.personalized(cfg.base_plan);
                pcfg.base_plan
                    .validate(pcfg.base_plan.group_multipliers.len())?;
                return Ok(Box::new(Personalized::new(pcfg, policy)));
            }
            StrategyName::Fedasync | StrategyName::Fedbuff => {
                return Err(Error::invalid(
                    "strategy.name",
                    self.name.as_str(),
                    "a synchronous algorithm here (asynchronous ones run with run_async)",
                ))
            }
        };
        Ok(Box::new(s))
    }
}

impl StrategyName {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Fedavg => "fedavg",
            StrategyName::Fedavgm => "fedavgm",
            StrategyName::Fedadagrad => "fedadagrad",
            StrategyName::Fedadam => "fedadam",
            StrategyName::Fedyogi => "fedyogi",
            StrategyName::Fedexp => "fedexp",
            StrategyName::Fednova => "fednova",
            StrategyName::Fedprox => "fedprox",
            StrategyName::Scaffold => "scaffold",
            StrategyName::Feddyn => "feddyn",
            StrategyName::Fedasync => "fedasync",
            StrategyName::Fedbuff => "fedbuff",
            StrategyName::Perfedavg => "perfedavg",
            StrategyName::Pfedme => "pfedme",
            StrategyName::Ditto => "ditto",
            StrategyName::Fedper => "fedper",
            StrategyName::LgFedavg => "lg-fedavg",
            StrategyName::Fedrep => "fedrep",
            StrategyName::Fedbabu => "fedbabu",
            StrategyName::Apfl => "apfl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_field_belongs_to_some_algorithm() {
        let v = serde_json::to_value(StrategyConfig::default()).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(
                COMMON_KNOBS.contains(&key.as_str())
                    || StrategyName::ALL
                        .iter()
                        .any(|n| n.knobs().contains(&key.as_str())),
                "strategy.{key} is declared for no algorithm in StrategyName::knobs"
            );
        }
        // And every declared knob is a real field.
        for n in StrategyName::ALL {
            for k in n.knobs() {
                assert!(v.get(*k).is_some(), "{}: unknown knob {k}", n.as_str());
            }
        }
    }

    #[test]
    fn a_knob_of_another_algorithm_is_an_error_naming_the_key() {
        assert_eq!(
            check_strategy_keys(StrategyName::Fedper, ["name", "lambda"]).unwrap_err(),
            "strategy.lambda: not used by fedper (used by pfedme, ditto)"
        );
        assert_eq!(
            check_strategy_keys(StrategyName::Fedavg, ["mu"]).unwrap_err(),
            "strategy.mu: not used by fedavg (used by fedprox, fedasync)"
        );
        assert_eq!(
            check_strategy_keys(StrategyName::Fedasync, ["server_lr"]).unwrap_err(),
            "strategy.server_lr: not used by fedasync (used by fedavg, fedavgm, fedadagrad, \
             fedadam, fedyogi, fedexp, fednova, fedprox, scaffold, feddyn, fedbuff, perfedavg, \
             pfedme, ditto, fedper, lg-fedavg, fedrep, fedbabu, apfl)"
        );
        assert!(
            check_strategy_keys(StrategyName::Ditto, ["name", "lambda", "personal_lr"]).is_ok()
        );
        assert!(check_strategy_keys(StrategyName::Fedadam, ["beta1", "flower_compatible"]).is_ok());
        // A key no algorithm knows: the chosen algorithm's keys, and the nearest known key.
        assert_eq!(
            check_strategy_keys(StrategyName::Ditto, ["lamda"]).unwrap_err(),
            "strategy.lamda: unknown key (did you mean `lambda`?); ditto takes name, \
             clients_per_round, fraction, server_lr, normalize, train_all, lambda, personal_lr"
        );
        assert_eq!(edit_distance("lamda", "lambda"), 1);
        assert_eq!(edit_distance("mu", "tau"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
