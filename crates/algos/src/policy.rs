//! Rate policies: how the server assigns each sampled client its rate plan.
//!
//! `constant` gives everyone the base plan. `by-data-size` scales the base rate by
//! `clamp((n_k / n̄)^γ, min, max)` where n̄ is the mean training-set size of the pool
//! (docs/algorithms.md §C.5). With γ < 0, clients with much data (and so many local steps)
//! take smaller steps, which limits their drift; with γ = −1 and a fixed number of
//! epochs every client's total step Λ_k = η_k·τ_k is about the same.

use crate::policies::{
    clip_updates::ClipUpdates, compose::Compose, curvature::Curvature, device::ByDevice,
    fedlalr::FedLalr, grad_norm::GradNormRatio, inverse_variance::InverseVariance,
    label_skew::ByLabelSkew, loss_based::LossBased, per_layer::PerLayer, prox_mu::ProxMu,
    straggler::StragglerCompensation, trust_ratio::TrustRatio,
};
use fedpace_core::{ClientInfo, ClientPool, Error, RatePlan, RatePolicy, Result};
use fedpace_optim::OptimizerSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rate policy as written in the config (`[policy] name = "..."`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Every client gets the base plan. Takes no keys besides `name` (an unknown key is
    /// an error, as for every other policy).
    #[default]
    #[serde(deserialize_with = "no_keys")]
    Constant,
    /// η_k = η · clamp((n_k / n̄)^γ, min, max).
    ByDataSize {
        /// Exponent γ (default −0.5).
        #[serde(default = "default_gamma")]
        gamma: f64,
        /// Lower clamp of the multiplier (default 0.25).
        #[serde(default = "default_min")]
        min: f64,
        /// Upper clamp of the multiplier (default 4).
        #[serde(default = "default_max")]
        max: f64,
    },
    /// η_k = η · clamp(exp(κ(D_k − D̄)), min, max), D_k the total variation between the
    /// client's label distribution and the pool's ([`crate::policies::label_skew`]).
    ByLabelSkew {
        /// κ (default −1: skewed clients slower).
        #[serde(default = "minus_one")]
        kappa: f64,
        /// Lower clamp (default 0.25).
        #[serde(default = "default_min")]
        min: f64,
        /// Upper clamp (default 4).
        #[serde(default = "default_max")]
        max: f64,
    },
    /// η_k = η · rates[device class] ([`crate::policies::device`]).
    ByDevice {
        /// Multiplier per device class, e.g. `{ phone = 0.5, laptop = 1.0 }`.
        #[serde(default)]
        rates: BTreeMap<String, f64>,
        /// Multiplier for clients of other or no class (default 1).
        #[serde(default = "one")]
        default: f64,
    },
    /// η_k = η · clamp((‖ĝ‖/‖ĝ_k‖)^κ, min, max) from the last reports
    /// ([`crate::policies::grad_norm`]).
    GradNormRatio {
        /// κ (default 1; −1 = direct ratio ‖∇F_k‖/‖∇F‖).
        #[serde(default = "one")]
        kappa: f64,
        /// Lower clamp (default 0.1).
        #[serde(default = "tenth")]
        min: f64,
        /// Upper clamp (default 10).
        #[serde(default = "ten")]
        max: f64,
    },
    /// η_k = η · clamp((L_k/L̄)^κ, min, max) ([`crate::policies::loss_based`]).
    LossBased {
        /// κ (default 0.5).
        #[serde(default = "half")]
        kappa: f64,
        /// Lower clamp (default 0.1).
        #[serde(default = "tenth")]
        min: f64,
        /// Upper clamp (default 10).
        #[serde(default = "ten")]
        max: f64,
    },
    /// Δ-SGD: each client adapts its step to a local smoothness estimate
    /// ([`crate::policies::curvature`], docs/algorithms.md §C.1).
    Curvature {
        /// γ (default 2).
        #[serde(default = "two")]
        gamma: f64,
        /// δ (default 0.1).
        #[serde(default = "tenth")]
        delta: f64,
        /// η_init (default: the client's base rate).
        #[serde(default)]
        eta_init: Option<f64>,
    },
    /// FedLALR: client AMSGrad with server-synchronised moments
    /// ([`crate::policies::fedlalr`], docs/algorithms.md §C.2).
    Fedlalr {
        /// β1 (default 0.9).
        #[serde(default = "beta1")]
        beta1: f64,
        /// β2 (default 0.99).
        #[serde(default = "beta2")]
        beta2: f64,
        /// ε (default 1e-8).
        #[serde(default = "eps8")]
        eps: f64,
        /// Rate α/√t (default true).
        #[serde(default = "yes")]
        decay: bool,
    },
    /// A rate multiplier per parameter-group label, e.g. `{ head = 10.0 }`
    /// ([`crate::policies::per_layer`]).
    PerLayer {
        /// Multiplier per group label.
        #[serde(default)]
        multipliers: BTreeMap<String, f64>,
    },
    /// Layer-wise trust ratio on the client (LARS, [`crate::policies::trust_ratio`], §C.7).
    TrustRatio {
        /// φ_max (default 10).
        #[serde(default = "ten")]
        max_ratio: f64,
        /// ε (default 1e-8).
        #[serde(default = "eps8")]
        eps: f64,
        /// Momentum (default 0).
        #[serde(default)]
        momentum: f64,
    },
    /// Slow devices run τ_k < τ steps with η_k = η·min(τ/τ_k, max_boost)
    /// ([`crate::policies::straggler`]).
    StragglerCompensation {
        /// Fraction of the steps each device class completes, e.g. `{ slow = 0.25 }`.
        #[serde(default)]
        speeds: BTreeMap<String, f64>,
        /// Bound on the boost (default 4; 1 = no compensation).
        #[serde(default = "default_max")]
        max_boost: f64,
    },
    /// Aggregation-side update-norm clipping with an adaptive bound
    /// ([`crate::policies::clip_updates`], §C.6).
    ClipUpdates {
        /// Target quantile γ (default 0.5).
        #[serde(default = "half")]
        quantile: f64,
        /// Adaptation rate η_C (default 0.2).
        #[serde(default = "fifth")]
        lr: f64,
        /// First bound C (default: median of the first round's norms).
        #[serde(default)]
        initial: Option<f64>,
    },
    /// Inverse-norm-variance aggregation weights ([`crate::policies::inverse_variance`], §C.6).
    InverseVariance {
        /// EMA factor (default 0.9).
        #[serde(default = "nine_tenths")]
        decay: f64,
    },
    /// FedProx's μ per client, rates untouched ([`crate::policies::prox_mu`]):
    /// `clients[k]`, else `devices[class_k]`, else `mu·(n_k/n̄)^γ`.
    ProxMu {
        /// μ before data-size scaling (default: the plan's μ, e.g. `strategy.mu`).
        #[serde(default)]
        mu: Option<f64>,
        /// Data-size exponent γ (default 0: the same μ for all).
        #[serde(default)]
        gamma: f64,
        /// μ per device class, e.g. `{ phone = 1.0 }`.
        #[serde(default)]
        devices: BTreeMap<String, f64>,
        /// μ per client id, e.g. `{ "3" = 0.5 }`.
        #[serde(default)]
        clients: BTreeMap<String, f64>,
    },
    /// A hypernetwork from each client's context to its optimiser parameters, trained
    /// on the clients' loss improvement ([`crate::policies::hypernet`], D.6).
    Hypernet(crate::policies::hypernet::HypernetConfig),
    /// Several policies: product of their rates, clamp, per-client overrides
    /// ([`crate::policies::compose`]).
    Compose {
        /// The parts, applied in order.
        policies: Vec<PolicyConfig>,
        /// Lower clamp on η_k/η_base (default 0.1).
        #[serde(default = "tenth")]
        min: f64,
        /// Upper clamp on η_k/η_base (default 10).
        #[serde(default = "ten")]
        max: f64,
        /// Client id → multiplier of η_base, e.g. `{ "3" = 0.5 }`.
        #[serde(default)]
        overrides: BTreeMap<String, f64>,
    },
}

/// Deserialises a unit variant of the internally tagged enum, rejecting any key (serde
/// ignores `deny_unknown_fields` for unit variants).
fn no_keys<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<(), D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoKeys {}
    NoKeys::deserialize(d).map(|_| ())
}

fn minus_one() -> f64 {
    -1.0
}
fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn ten() -> f64 {
    10.0
}
fn tenth() -> f64 {
    0.1
}
fn fifth() -> f64 {
    0.2
}
fn half() -> f64 {
    0.5
}
fn nine_tenths() -> f64 {
    0.9
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.99
}
fn eps8() -> f64 {
    1e-8
}
fn yes() -> bool {
    true
}

fn check(ok: bool, key: &str, v: impl ToString, expected: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("policy.{key}"), v, expected))
    }
}

fn check_clamp(min: f64, max: f64) -> Result<()> {
    // Multipliers are applied to f32 rates: they must be f32s too.
    let f32_ok = |v: f64| (v as f32).is_finite() && v as f32 > 0.0;
    check(
        min > 0.0 && f32_ok(min),
        "min",
        min,
        "a multiplier > 0 that fits an f32",
    )?;
    if !(max >= min && f32_ok(max)) {
        return Err(Error::invalid(
            "policy.max",
            max,
            format!("a multiplier >= policy.min ({min}) that fits an f32"),
        ));
    }
    Ok(())
}

fn check_table(key: &str, t: &BTreeMap<String, f64>, lo_exclusive: bool, hi: f64) -> Result<()> {
    for (k, v) in t {
        let ok = v.is_finite()
            && (*v as f32).is_finite()
            && (if lo_exclusive { *v > 0.0 } else { *v >= 0.0 })
            && *v <= hi;
        let exp = if hi.is_finite() {
            format!("in (0, {hi}]")
        } else {
            "a finite multiplier >= 0 that fits an f32".into()
        };
        if !ok {
            return Err(Error::invalid(format!("policy.{key}.{k}"), v, exp));
        }
    }
    Ok(())
}

fn default_gamma() -> f64 {
    -0.5
}
fn default_min() -> f64 {
    0.25
}
fn default_max() -> f64 {
    4.0
}

impl PolicyConfig {
    /// Checks ranges; errors name the field under `policy.`.
    pub fn validate(&self) -> Result<()> {
        match self {
            PolicyConfig::ByLabelSkew { kappa, min, max }
            | PolicyConfig::GradNormRatio { kappa, min, max }
            | PolicyConfig::LossBased { kappa, min, max } => {
                check(kappa.is_finite(), "kappa", kappa, "a finite number")?;
                check_clamp(*min, *max)?;
            }
            PolicyConfig::ByDevice { rates, default } => {
                check_table("rates", rates, false, f64::INFINITY)?;
                check(
                    default.is_finite() && *default >= 0.0,
                    "default",
                    default,
                    "a finite multiplier >= 0",
                )?;
            }
            PolicyConfig::Curvature {
                gamma,
                delta,
                eta_init,
            } => {
                check(
                    gamma.is_finite() && *gamma > 0.0,
                    "gamma",
                    gamma,
                    "finite and > 0",
                )?;
                check(
                    delta.is_finite() && *delta >= 0.0,
                    "delta",
                    delta,
                    "finite and >= 0",
                )?;
                if let Some(e) = eta_init {
                    check(e.is_finite() && *e > 0.0, "eta_init", e, "finite and > 0")?;
                }
            }
            PolicyConfig::Fedlalr {
                beta1, beta2, eps, ..
            } => {
                check((0.0..1.0).contains(beta1), "beta1", beta1, "in [0, 1)")?;
                check((0.0..1.0).contains(beta2), "beta2", beta2, "in [0, 1)")?;
                check(
                    eps.is_finite() && *eps >= 0.0,
                    "eps",
                    eps,
                    "finite and >= 0",
                )?;
            }
            PolicyConfig::PerLayer { multipliers } => {
                check_table("multipliers", multipliers, false, f64::INFINITY)?
            }
            PolicyConfig::TrustRatio {
                max_ratio,
                eps,
                momentum,
            } => {
                check(
                    max_ratio.is_finite() && *max_ratio > 0.0,
                    "max_ratio",
                    max_ratio,
                    "finite and > 0",
                )?;
                check(
                    eps.is_finite() && *eps >= 0.0,
                    "eps",
                    eps,
                    "finite and >= 0",
                )?;
                check(
                    (0.0..1.0).contains(momentum),
                    "momentum",
                    momentum,
                    "in [0, 1)",
                )?;
            }
            PolicyConfig::StragglerCompensation { speeds, max_boost } => {
                check_table("speeds", speeds, true, 1.0)?;
                check(
                    max_boost.is_finite() && *max_boost >= 1.0,
                    "max_boost",
                    max_boost,
                    "finite and >= 1",
                )?;
            }
            PolicyConfig::ClipUpdates {
                quantile,
                lr,
                initial,
            } => {
                check(
                    (0.0..=1.0).contains(quantile),
                    "quantile",
                    quantile,
                    "in [0, 1]",
                )?;
                check(lr.is_finite() && *lr >= 0.0, "lr", lr, "finite and >= 0")?;
                if let Some(c) = initial {
                    check(c.is_finite() && *c > 0.0, "initial", c, "finite and > 0")?;
                }
            }
            PolicyConfig::InverseVariance { decay } => {
                check((0.0..1.0).contains(decay), "decay", decay, "in [0, 1)")?;
            }
            PolicyConfig::Hypernet(c) => c.validate()?,
            PolicyConfig::ProxMu {
                mu,
                gamma,
                devices,
                clients,
            } => {
                if let Some(m) = mu {
                    check(m.is_finite() && *m >= 0.0, "mu", m, "a finite μ >= 0")?;
                }
                check(gamma.is_finite(), "gamma", gamma, "a finite number")?;
                for (table, t) in [("devices", devices), ("clients", clients)] {
                    for (k, v) in t {
                        check(
                            v.is_finite() && *v >= 0.0,
                            &format!("{table}.{k}"),
                            v,
                            "a finite μ >= 0",
                        )?;
                    }
                }
                for k in clients.keys() {
                    check(
                        k.parse::<u64>().is_ok(),
                        &format!("clients.{k}"),
                        k,
                        "a client id",
                    )?;
                }
            }
            PolicyConfig::Compose {
                policies,
                min,
                max,
                overrides,
            } => {
                check(
                    !policies.is_empty(),
                    "policies",
                    "[]",
                    "at least one policy",
                )?;
                for p in policies {
                    p.validate()?;
                }
                check_clamp(*min, *max)?;
                check_table("overrides", overrides, false, f64::INFINITY)?;
                for k in overrides.keys() {
                    check(
                        k.parse::<u64>().is_ok(),
                        &format!("overrides.{k}"),
                        k,
                        "a client id",
                    )?;
                }
            }
            _ => {}
        }
        if let PolicyConfig::ByDataSize { gamma, min, max } = *self {
            if !gamma.is_finite() {
                return Err(Error::invalid("policy.gamma", gamma, "a finite number"));
            }
            if !(min > 0.0 && min.is_finite()) {
                return Err(Error::invalid("policy.min", min, "a multiplier > 0"));
            }
            if !(max >= min && max.is_finite()) {
                return Err(Error::invalid(
                    "policy.max",
                    max,
                    format!("a multiplier >= policy.min ({min})"),
                ));
            }
        }
        Ok(())
    }

    /// The policy's short name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Constant => "constant",
            PolicyConfig::ByDataSize { .. } => "by-data-size",
            PolicyConfig::ByLabelSkew { .. } => "by-label-skew",
            PolicyConfig::ByDevice { .. } => "by-device",
            PolicyConfig::GradNormRatio { .. } => "grad-norm-ratio",
            PolicyConfig::LossBased { .. } => "loss-based",
            PolicyConfig::Curvature { .. } => "curvature",
            PolicyConfig::Fedlalr { .. } => "fedlalr",
            PolicyConfig::PerLayer { .. } => "per-layer",
            PolicyConfig::TrustRatio { .. } => "trust-ratio",
            PolicyConfig::StragglerCompensation { .. } => "straggler-compensation",
            PolicyConfig::ClipUpdates { .. } => "clip-updates",
            PolicyConfig::InverseVariance { .. } => "inverse-variance",
            PolicyConfig::ProxMu { .. } => "prox-mu",
            PolicyConfig::Hypernet(_) => "hypernet",
            PolicyConfig::Compose { .. } => "compose",
        }
    }

    /// The optimiser the policy puts in every plan, overriding `client.optimizer`
    /// (`curvature`: Δ-SGD, `fedlalr`: AMSGrad, `trust-ratio`: LARS; in `compose`, the
    /// last part that sets one).
    pub fn forces_optimizer(&self) -> Option<OptimizerSpec> {
        match *self {
            PolicyConfig::Curvature { gamma, delta, .. } => Some(OptimizerSpec::DeltaSgd {
                gamma,
                delta,
                eps: 1e-8,
            }),
            PolicyConfig::Fedlalr {
                beta1, beta2, eps, ..
            } => Some(OptimizerSpec::Amsgrad {
                beta1,
                beta2,
                eps,
                weight_decay: 0.0,
            }),
            PolicyConfig::TrustRatio {
                max_ratio,
                eps,
                momentum,
            } => Some(OptimizerSpec::Lars {
                momentum,
                max_ratio,
                eps,
                weight_decay: 0.0,
            }),
            PolicyConfig::Compose { ref policies, .. } => {
                policies.iter().rev().find_map(|p| p.forces_optimizer())
            }
            _ => None,
        }
    }

    /// Whether the policy makes clients start from the server's optimiser state
    /// (`fedlalr`'s synchronised moments).
    pub fn forces_server_init(&self) -> bool {
        match self {
            PolicyConfig::Fedlalr { .. } => true,
            PolicyConfig::Compose { policies, .. } => {
                policies.iter().any(|p| p.forces_server_init())
            }
            _ => false,
        }
    }

    /// The name of the (part of the) policy that scales updates on the server side
    /// (`clip-updates`, `inverse-variance`), which needs each client's update.
    pub fn adjusting_aggregation(&self) -> Option<&'static str> {
        match self {
            PolicyConfig::ClipUpdates { .. } | PolicyConfig::InverseVariance { .. } => {
                Some(self.name())
            }
            PolicyConfig::Compose { policies, .. } => {
                policies.iter().find_map(|p| p.adjusting_aggregation())
            }
            _ => None,
        }
    }

    /// Why the policy cannot work with clients running `optimizer` (`hypernet` learning
    /// Adam's betas of an optimiser without them), or `None`.
    pub fn refuses_optimizer(&self, optimizer: &OptimizerSpec) -> Option<String> {
        match self {
            PolicyConfig::Hypernet(c) => c.refuses_optimizer(optimizer),
            PolicyConfig::Compose { policies, .. } => {
                policies.iter().find_map(|p| p.refuses_optimizer(optimizer))
            }
            _ => None,
        }
    }

    /// The name of the (part of the) policy whose plans read statistics of clients'
    /// reports (`grad-norm-ratio`: update norms; `loss-based`: losses), which private-rate
    /// modes protect (docs/privacy.md, "Private rates").
    pub fn reads_client_statistics(&self) -> Option<&'static str> {
        match self {
            PolicyConfig::GradNormRatio { .. } | PolicyConfig::LossBased { .. } => {
                Some(self.name())
            }
            PolicyConfig::Compose { policies, .. } => {
                policies.iter().find_map(|p| p.reads_client_statistics())
            }
            _ => None,
        }
    }

    /// The name of the (part of the) policy that learns from the clients' validation
    /// splits (`hypernet`, docs/hypernetworks.md): its clients answer the validation
    /// probe, so a run without validation splits is refused before it starts.
    pub fn reads_validation(&self) -> Option<&'static str> {
        match self {
            PolicyConfig::Hypernet(_) => Some(self.name()),
            PolicyConfig::Compose { policies, .. } => {
                policies.iter().find_map(|p| p.reads_validation())
            }
            _ => None,
        }
    }

    /// Whether the policy sets clients' proximal coefficients (`prox-mu`).
    pub fn sets_prox_mu(&self) -> bool {
        match self {
            PolicyConfig::ProxMu { .. } => true,
            PolicyConfig::Hypernet(c) => c.sets_prox_mu(),
            PolicyConfig::Compose { policies, .. } => policies.iter().any(|p| p.sets_prox_mu()),
            _ => false,
        }
    }

    /// The client metadata the policy reads (see
    /// [`RatePolicy::required_metadata`]): `by-label-skew` needs the clients' label
    /// histograms.
    pub fn required_metadata(&self) -> Vec<&'static str> {
        match self {
            PolicyConfig::ByLabelSkew { .. } => {
                vec![<fedpace_core::LabelHistogram as fedpace_core::Payload>::NAME]
            }
            PolicyConfig::Hypernet(c) if c.needs_histogram() => {
                vec![<fedpace_core::LabelHistogram as fedpace_core::Payload>::NAME]
            }
            PolicyConfig::Compose { policies, .. } => {
                let mut v: Vec<&'static str> = policies
                    .iter()
                    .flat_map(|p| p.required_metadata())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            _ => Vec::new(),
        }
    }

    /// Builds the policy for a model whose parameter groups are `groups` (needed by
    /// `per-layer`, whose labels are checked here).
    pub fn build_for(&self, groups: &[String]) -> Result<Box<dyn RatePolicy>> {
        self.validate()?;
        Ok(match self {
            PolicyConfig::Constant => Box::new(Constant),
            PolicyConfig::ByDataSize { gamma, min, max } => Box::new(ByDataSize {
                gamma: *gamma,
                min: *min,
                max: *max,
                mean_n: 0.0,
            }),
            PolicyConfig::ByLabelSkew { kappa, min, max } => {
                Box::new(ByLabelSkew::new(*kappa, *min, *max))
            }
            PolicyConfig::ByDevice { rates, default } => Box::new(ByDevice {
                rates: rates.clone(),
                default: *default,
            }),
            PolicyConfig::GradNormRatio { kappa, min, max } => {
                Box::new(GradNormRatio::new(*kappa, *min, *max))
            }
            PolicyConfig::LossBased { kappa, min, max } => {
                Box::new(LossBased::new(*kappa, *min, *max))
            }
            PolicyConfig::Curvature {
                gamma,
                delta,
                eta_init,
            } => Box::new(Curvature {
                gamma: *gamma,
                delta: *delta,
                eta_init: *eta_init,
            }),
            PolicyConfig::Fedlalr {
                beta1,
                beta2,
                eps,
                decay,
            } => Box::new(FedLalr {
                beta1: *beta1,
                beta2: *beta2,
                eps: *eps,
                decay: *decay,
            }),
            PolicyConfig::PerLayer { multipliers } => Box::new(PerLayer::new(multipliers, groups)?),
            PolicyConfig::TrustRatio {
                max_ratio,
                eps,
                momentum,
            } => Box::new(TrustRatio {
                max_ratio: *max_ratio,
                eps: *eps,
                momentum: *momentum,
            }),
            PolicyConfig::StragglerCompensation { speeds, max_boost } => {
                Box::new(StragglerCompensation {
                    speeds: speeds.clone(),
                    max_boost: *max_boost,
                })
            }
            PolicyConfig::ClipUpdates {
                quantile,
                lr,
                initial,
            } => Box::new(ClipUpdates {
                quantile: *quantile,
                lr: *lr,
                bound: *initial,
            }),
            PolicyConfig::InverseVariance { decay } => Box::new(InverseVariance::new(*decay)),
            PolicyConfig::Hypernet(c) => Box::new(c.build(groups.len())?),
            PolicyConfig::ProxMu {
                mu,
                gamma,
                devices,
                clients,
            } => Box::new(ProxMu {
                mu: *mu,
                gamma: *gamma,
                devices: devices.clone(),
                clients: clients
                    .iter()
                    .map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), *v))
                    .collect(),
                mean_n: 0.0,
            }),
            PolicyConfig::Compose {
                policies,
                min,
                max,
                overrides,
            } => Box::new(Compose {
                parts: policies
                    .iter()
                    .map(|p| p.build_for(groups))
                    .collect::<Result<_>>()?,
                min: *min,
                max: *max,
                overrides: overrides
                    .iter()
                    .map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), *v))
                    .collect(),
            }),
        })
    }

    /// Builds the policy for a model with the default groups `body` and `head`
    /// (use [`PolicyConfig::build_for`] with the model's groups). A configuration that
    /// does not validate builds `constant`: call [`PolicyConfig::validate`] first.
    pub fn build(&self) -> Box<dyn RatePolicy> {
        self.build_for(&["body".to_string(), "head".to_string()])
            .unwrap_or_else(|_| Box::new(Constant))
    }
}

/// Every client gets the base plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Constant;

impl RatePolicy for Constant {
    fn describe(&self) -> String {
        "constant".into()
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        Ok(base.clone())
    }
}

/// η_k = η · clamp((n_k / n̄)^γ, min, max).
#[derive(Debug, Clone)]
pub struct ByDataSize {
    /// Exponent γ.
    pub gamma: f64,
    /// Lower clamp.
    pub min: f64,
    /// Upper clamp.
    pub max: f64,
    mean_n: f64,
}

impl ByDataSize {
    /// The multiplier for a client with `n` samples.
    pub fn multiplier(&self, n: u64) -> f64 {
        if self.mean_n <= 0.0 || n == 0 {
            return 1.0;
        }
        (n as f64 / self.mean_n)
            .powf(self.gamma)
            .clamp(self.min, self.max)
    }
}

impl RatePolicy for ByDataSize {
    fn describe(&self) -> String {
        format!(
            "by-data-size(γ={}, clamp [{}, {}])",
            self.gamma, self.min, self.max
        )
    }
    fn start(&mut self, pool: &dyn ClientPool) -> Result<()> {
        let total = pool.total_train()?;
        self.mean_n = total as f64 / pool.len().max(1) as f64;
        Ok(())
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        p.base_lr = (base.base_lr as f64 * self.multiplier(client.num_train)) as f32;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_data_size_multiplier_by_hand() {
        let mut p = ByDataSize {
            gamma: -0.5,
            min: 0.25,
            max: 4.0,
            mean_n: 0.0,
        };
        let pool: Vec<ClientInfo> = [100u64, 300, 800]
            .iter()
            .enumerate()
            .map(|(i, &n)| ClientInfo::new(i as u64, n, 0))
            .collect();
        p.start(&pool).unwrap();
        // n̄ = 400: (100/400)^-0.5 = 2, (800/400)^-0.5 = 1/√2
        assert!((p.multiplier(100) - 2.0).abs() < 1e-12);
        assert!((p.multiplier(800) - 0.5f64.sqrt()).abs() < 1e-12);
        // clamp: (1/400)^-0.5 = 20 → 4
        assert_eq!(p.multiplier(1), 4.0);
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_bad_ranges() {
        let c: PolicyConfig = serde_json::from_str(r#"{"name":"by-data-size"}"#).unwrap();
        assert_eq!(
            c,
            PolicyConfig::ByDataSize {
                gamma: -0.5,
                min: 0.25,
                max: 4.0
            }
        );
        let bad = PolicyConfig::ByDataSize {
            gamma: 1.0,
            min: 2.0,
            max: 1.0,
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "policy.max = 1: a multiplier >= policy.min (2)"
        );
    }
}
