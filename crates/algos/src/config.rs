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
use crate::sampling::Sampling;
use crate::scaffold::Scaffold;
use fedpace_core::{Error, RatePlan, RatePolicy, Result, Strategy};
use fedpace_optim::{FedOptConfig, ServerRule};
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
            async_alpha: 0.6,
            staleness: Default::default(),
            buffer_size: 10,
            concurrency: 10,
            rate_decay: true,
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
            StrategyName::Feddyn => return Ok(Box::new(FedDyn::new(cfg, self.alpha, policy)?)),
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
        }
    }
}
