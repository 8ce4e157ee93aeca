//! The `[strategy]` table and the one place that turns it into a [`Strategy`].
//!
//! Adding an algorithm: a variant in [`StrategyName`], its knobs as fields here (each
//! documented with its default and checked in [`StrategyConfig::validate`]), and an
//! arm in [`StrategyConfig::build`].

use crate::aggregate::Normalize;
use crate::fedavg::{FedAvg, FedAvgConfig};
use crate::personal::{Personalized, PersonalizedConfig};
use crate::sampling::Sampling;
use fedpace_core::{ClientRecipe, Error, PerFedAvgVariant, RatePlan, RatePolicy, Result, Strategy};
use serde::{Deserialize, Serialize};

/// Strategy names (the lowercase paper names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// FedAvg (ALGORITHMS.md A.1).
    #[default]
    Fedavg,
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
            server_lr: 1.0,
            normalize: Normalize::Auto,
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
        if !(self.server_lr.is_finite() && self.server_lr > 0.0) {
            return Err(Error::invalid(
                "strategy.server_lr",
                self.server_lr,
                "must be > 0",
            ));
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
            StrategyName::Fedavg => unreachable!("fedavg is not personalised"),
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
        };
        PersonalizedConfig {
            name,
            sampling: self.sampling(),
            server_lr: self.server_lr as f32,
            normalize: self.normalize,
            base_plan,
            recipe,
            personal_groups: personal,
            frozen_groups: frozen,
            train_all: self.train_all,
        }
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
            _ => {
                let cfg = self.personalized(base_plan);
                cfg.base_plan
                    .validate(cfg.base_plan.group_multipliers.len())?;
                Ok(Box::new(Personalized::new(cfg, policy)))
            }
        }
    }
}
