//! The `[strategy]` table and the one place that turns it into a [`Strategy`].
//!
//! Adding an algorithm: a variant in [`StrategyName`], its knobs as fields here (each
//! documented with its default and checked in [`StrategyConfig::validate`]), and an
//! arm in [`StrategyConfig::build`].

use crate::aggregate::Normalize;
use crate::fedavg::{FedAvg, FedAvgConfig};
use crate::sampling::Sampling;
use fedpace_core::{Error, RatePlan, RatePolicy, Result, Strategy};
use serde::{Deserialize, Serialize};

/// Strategy names (the lowercase paper names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// FedAvg (ALGORITHMS.md A.1).
    #[default]
    Fedavg,
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
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            name: StrategyName::Fedavg,
            clients_per_round: 10,
            fraction: None,
            server_lr: 1.0,
            normalize: Normalize::Auto,
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
        Ok(())
    }

    /// Builds the strategy around the base plan and the rate policy.
    pub fn build(
        &self,
        base_plan: RatePlan,
        policy: Box<dyn RatePolicy>,
    ) -> Result<Box<dyn Strategy>> {
        self.validate()?;
        match self.name {
            StrategyName::Fedavg => Ok(Box::new(FedAvg::new(
                FedAvgConfig {
                    sampling: self.sampling(),
                    server_lr: self.server_lr as f32,
                    normalize: self.normalize,
                    base_plan,
                },
                policy,
            ))),
        }
    }
}
