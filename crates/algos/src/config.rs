//! The `[strategy]` table and the one place that turns it into a [`Strategy`].
//!
//! Adding an algorithm: a variant in [`StrategyName`], its knobs as fields here (each
//! documented with its default and checked in [`StrategyConfig::validate`]), and an
//! arm in [`StrategyConfig::build`].

use crate::aggregate::Normalize;
use crate::fedavg::{FedAvg, FedAvgConfig};
use crate::feddyn::FedDyn;
use crate::fedprox::FedProx;
use crate::sampling::Sampling;
use crate::scaffold::Scaffold;
use fedpace_core::{Error, RatePlan, RatePolicy, Result, Strategy};
use serde::{Deserialize, Serialize};

/// Strategy names (the lowercase paper names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// FedAvg (ALGORITHMS.md A.1).
    #[default]
    Fedavg,
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
    /// Server rate η_g (default 1).
    pub server_lr: f64,
    /// Normalise updates by clients' rate sums: `auto` (when they differ), `on`, `off`.
    pub normalize: Normalize,
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
            server_lr: 1.0,
            normalize: Normalize::Auto,
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
        if !(self.server_lr.is_finite() && self.server_lr > 0.0) {
            return Err(Error::invalid(
                "strategy.server_lr",
                self.server_lr,
                "must be > 0",
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
                self.server_lr,
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
        let cfg = FedAvgConfig {
            sampling: self.sampling(),
            server_lr: self.server_lr as f32,
            normalize: self.normalize,
            base_plan,
        };
        match self.name {
            StrategyName::Fedavg => Ok(Box::new(FedAvg::new(cfg, policy))),
            StrategyName::Fedprox => Ok(Box::new(FedProx::new(cfg, self.mu, policy)?)),
            StrategyName::Scaffold => {
                Ok(Box::new(Scaffold::new(cfg, self.scaffold_option, policy)))
            }
            StrategyName::Feddyn => Ok(Box::new(FedDyn::new(cfg, self.alpha, policy)?)),
            StrategyName::Fedasync | StrategyName::Fedbuff => Err(Error::invalid(
                "strategy.name",
                format!("{:?}", self.name).to_lowercase(),
                "a synchronous algorithm here (asynchronous ones run with run_async)",
            )),
        }
    }
}
