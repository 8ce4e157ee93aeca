//! The typed optimiser recipe a rate plan carries ([`OptimizerSpec`]) and what a client
//! does with optimiser state between rounds ([`StateMode`], docs/algorithms.md §C.3).
//!
//! Serialised as an internally tagged table, e.g. in TOML
//! `optimizer = { name = "adam", beta2 = 0.99 }`; missing fields take PyTorch's
//! defaults and unknown fields are rejected.

use crate::alias::{adam, adamw, amsgrad, momentum, sgd};
use crate::combine::{chain, Chain};
use crate::transforms::*;
use crate::{check_param, Result, Transform};
use serde::{Deserialize, Serialize};

fn d_momentum() -> f64 {
    0.9
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_adam_eps() -> f64 {
    1e-8
}
fn d_adamw_wd() -> f64 {
    1e-2
}
fn d_adagrad_eps() -> f64 {
    1e-10
}
fn d_yogi_eps() -> f64 {
    1e-3
}
fn d_yogi_v0() -> f64 {
    1e-6
}
fn d_dsgd_gamma() -> f64 {
    2.0
}
fn d_dsgd_delta() -> f64 {
    0.1
}
fn d_dsgd_eps() -> f64 {
    1e-8
}
fn d_trust_max() -> f64 {
    10.0
}

/// A local optimiser as data: what the server puts in a rate plan and the client
/// [`build`](OptimizerSpec::build)s. Every built optimiser ends with `scale_by_rate`, so
/// the plan's per-group rates (× schedule) apply unchanged.
///
/// `weight_decay` is L2 decay added to the gradient (PyTorch's `weight_decay`) except
/// for `AdamW`, where it is decoupled: `p ← p − η·λ·p`.
///
/// ```
/// use fedpace_optim::OptimizerSpec;
/// let spec: OptimizerSpec = serde_json::from_str(r#"{"name": "adam", "beta2": 0.99}"#).unwrap();
/// assert_eq!(spec, OptimizerSpec::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 });
/// spec.validate().unwrap();
/// let _tx = spec.build().unwrap();
/// let bad: OptimizerSpec = serde_json::from_str(r#"{"name": "momentum", "momentum": 1.5}"#).unwrap();
/// assert_eq!(bad.validate().unwrap_err().to_string(), "momentum = 1.5: in [0, 1)");
/// assert!(serde_json::from_str::<OptimizerSpec>(r#"{"name": "sgd", "lr": 0.1}"#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Plain SGD.
    Sgd {
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// SGD with heavy-ball or Nesterov momentum.
    Momentum {
        /// ρ ∈ [0, 1) (default 0.9).
        #[serde(default = "d_momentum")]
        momentum: f64,
        /// Nesterov look-ahead (default false; needs ρ > 0).
        #[serde(default)]
        nesterov: bool,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with L2 weight decay.
    Adam {
        /// β1 ∈ [0, 1) (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 ∈ [0, 1) (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// ε ≥ 0 (default 1e-8).
        #[serde(default = "d_adam_eps")]
        eps: f64,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW {
        /// β1 ∈ [0, 1) (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 ∈ [0, 1) (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// ε ≥ 0 (default 1e-8).
        #[serde(default = "d_adam_eps")]
        eps: f64,
        /// Decoupled decay λ ≥ 0 (default 1e-2, as PyTorch).
        #[serde(default = "d_adamw_wd")]
        weight_decay: f64,
    },
    /// Adagrad.
    Adagrad {
        /// ε ≥ 0 (default 1e-10).
        #[serde(default = "d_adagrad_eps")]
        eps: f64,
        /// Initial accumulator s₀ ≥ 0 (default 0).
        #[serde(default)]
        initial_accumulator: f64,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Yogi.
    Yogi {
        /// β1 ∈ [0, 1) (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 ∈ [0, 1) (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// ε > 0 (default 1e-3).
        #[serde(default = "d_yogi_eps")]
        eps: f64,
        /// Initial second moment v₀ ≥ 0 (default 1e-6).
        #[serde(default = "d_yogi_v0")]
        initial_accumulator: f64,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// AMSGrad.
    Amsgrad {
        /// β1 ∈ [0, 1) (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 ∈ [0, 1) (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// ε ≥ 0 (default 1e-8).
        #[serde(default = "d_adam_eps")]
        eps: f64,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Δ-SGD (docs/algorithms.md §C.1): SGD whose step is set inside the client from a local
    /// smoothness estimate, starting each round from the plan's rate (η_init). The
    /// transform itself is plain `scale_by_rate`; the client (which owns the model, and
    /// so can re-evaluate the previous iterate on the same mini-batch) multiplies the
    /// plan's rates by η_s/η_init at every step and reports the rates it used.
    #[serde(rename = "delta-sgd")]
    DeltaSgd {
        /// γ in `γ/(2L̂)` (default 2).
        #[serde(default = "d_dsgd_gamma")]
        gamma: f64,
        /// Amplifier δ in `√(1+δθ)` (default 0.1, the paper's experiments).
        #[serde(default = "d_dsgd_delta")]
        delta: f64,
        /// ε added to the step (default 1e-8).
        #[serde(default = "d_dsgd_eps")]
        eps: f64,
    },
    /// LARS: SGD (optionally with momentum) whose update of each tensor is scaled by the
    /// layer-wise trust ratio `clip(‖p‖/(‖u‖+ε), 0, φ_max)` before the rate
    /// (docs/algorithms.md §C.7).
    Lars {
        /// Momentum ρ ∈ [0, 1) applied before the ratio (default 0: none).
        #[serde(default)]
        momentum: f64,
        /// φ_max > 0 (default 10).
        #[serde(default = "d_trust_max")]
        max_ratio: f64,
        /// ε ≥ 0 (default 1e-8).
        #[serde(default = "d_dsgd_eps")]
        eps: f64,
        /// L2 weight decay λ ≥ 0 (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Sgd { weight_decay: 0.0 }
    }
}

fn check_wd(wd: f64) -> Result<()> {
    check_param("weight_decay", wd, wd >= 0.0, "finite and >= 0")
}
fn check_eps(eps: f64) -> Result<()> {
    check_param("eps", eps, eps >= 0.0, "finite and >= 0")
}

/// `[add_decayed_weights(λ)] + inner` when λ > 0.
fn with_l2(wd: f64, inner: Chain) -> Chain {
    if wd == 0.0 {
        inner
    } else {
        let mut parts: Vec<Box<dyn Transform>> = vec![Box::new(add_decayed_weights(wd))];
        parts.extend(inner.0);
        chain(parts)
    }
}

impl OptimizerSpec {
    /// The `name` tag of this variant.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerSpec::Sgd { .. } => "sgd",
            OptimizerSpec::Momentum { .. } => "momentum",
            OptimizerSpec::Adam { .. } => "adam",
            OptimizerSpec::AdamW { .. } => "adamw",
            OptimizerSpec::Adagrad { .. } => "adagrad",
            OptimizerSpec::Yogi { .. } => "yogi",
            OptimizerSpec::Amsgrad { .. } => "amsgrad",
            OptimizerSpec::DeltaSgd { .. } => "delta-sgd",
            OptimizerSpec::Lars { .. } => "lars",
        }
    }

    /// Checks every field's range; the error names the field, the value and the range.
    pub fn validate(&self) -> Result<()> {
        match *self {
            OptimizerSpec::DeltaSgd { gamma, delta, eps } => {
                check_param("gamma", gamma, gamma > 0.0, "finite and > 0")?;
                check_param("delta", delta, delta >= 0.0, "finite and >= 0")?;
                check_eps(eps)
            }
            OptimizerSpec::Lars {
                momentum,
                max_ratio,
                eps,
                weight_decay,
            } => {
                check_param(
                    "momentum",
                    momentum,
                    (0.0..1.0).contains(&momentum),
                    "in [0, 1)",
                )?;
                check_param("max_ratio", max_ratio, max_ratio > 0.0, "finite and > 0")?;
                check_eps(eps)?;
                check_wd(weight_decay)
            }
            OptimizerSpec::Sgd { weight_decay } => check_wd(weight_decay),
            OptimizerSpec::Momentum {
                momentum,
                nesterov,
                weight_decay,
            } => {
                check_param(
                    "momentum",
                    momentum,
                    (0.0..1.0).contains(&momentum),
                    "in [0, 1)",
                )?;
                if nesterov {
                    check_param(
                        "momentum",
                        momentum,
                        momentum > 0.0,
                        "> 0 when nesterov = true",
                    )?;
                }
                check_wd(weight_decay)
            }
            OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | OptimizerSpec::Amsgrad {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                check_betas(beta1, beta2)?;
                check_eps(eps)?;
                check_wd(weight_decay)
            }
            OptimizerSpec::Adagrad {
                eps,
                initial_accumulator,
                weight_decay,
            } => {
                check_eps(eps)?;
                check_param(
                    "initial_accumulator",
                    initial_accumulator,
                    initial_accumulator >= 0.0,
                    "finite and >= 0",
                )?;
                check_wd(weight_decay)
            }
            OptimizerSpec::Yogi {
                beta1,
                beta2,
                eps,
                initial_accumulator,
                weight_decay,
            } => {
                check_betas(beta1, beta2)?;
                check_param("eps", eps, eps > 0.0, "finite and > 0")?;
                check_param(
                    "initial_accumulator",
                    initial_accumulator,
                    initial_accumulator >= 0.0,
                    "finite and >= 0",
                )?;
                check_wd(weight_decay)
            }
        }
    }

    /// Validates, then builds the chain (always ending with `scale_by_rate`).
    pub fn build(&self) -> Result<Box<dyn Transform>> {
        self.validate()?;
        let sgd_chain = || chain(vec![Box::new(sgd())]);
        Ok(match *self {
            OptimizerSpec::Sgd { weight_decay } => Box::new(with_l2(weight_decay, sgd_chain())),
            OptimizerSpec::DeltaSgd { .. } => Box::new(sgd_chain()),
            OptimizerSpec::Lars {
                momentum,
                max_ratio,
                eps,
                weight_decay,
            } => {
                let mut parts: Vec<Box<dyn Transform>> = Vec::new();
                if momentum > 0.0 {
                    parts.push(Box::new(trace(momentum, false)));
                }
                parts.push(Box::new(
                    scale_by_trust_ratio()
                        .with_max_ratio(max_ratio)
                        .with_eps(eps),
                ));
                parts.push(Box::new(scale_by_rate()));
                Box::new(with_l2(weight_decay, chain(parts)))
            }
            OptimizerSpec::Momentum {
                momentum: rho,
                nesterov,
                weight_decay,
            } => Box::new(with_l2(weight_decay, momentum(rho, nesterov))),
            OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(with_l2(weight_decay, adam(beta1, beta2, eps))),
            OptimizerSpec::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(adamw(beta1, beta2, eps, weight_decay)),
            OptimizerSpec::Adagrad {
                eps,
                initial_accumulator,
                weight_decay,
            } => Box::new(with_l2(
                weight_decay,
                crate::alias::adagrad(eps, initial_accumulator),
            )),
            OptimizerSpec::Yogi {
                beta1,
                beta2,
                eps,
                initial_accumulator,
                weight_decay,
            } => Box::new(with_l2(
                weight_decay,
                chain(vec![
                    Box::new(scale_by_yogi(beta1, beta2, eps, initial_accumulator)),
                    Box::new(scale_by_rate()),
                ]),
            )),
            OptimizerSpec::Amsgrad {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(with_l2(weight_decay, amsgrad(beta1, beta2, eps))),
        })
    }
}

/// What a client does with its optimiser state between rounds (docs/algorithms.md §C.3).
///
/// ```
/// use fedpace_optim::StateMode;
/// assert_eq!(serde_json::to_string(&StateMode::ServerInit).unwrap(), "\"server-init\"");
/// assert_eq!(StateMode::default(), StateMode::Reset);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateMode {
    /// Fresh `init` state at the start of every round (stateless clients, the
    /// cross-device default). Adam's first step per round is then ≈ η per coordinate.
    #[default]
    Reset,
    /// Kept in the client's local state across rounds and checkpoints (cross-silo). The
    /// moments may be stale after missed rounds and refer to an older model.
    Keep,
    /// The server sends the state (e.g. moments from aggregated pseudo-gradients,
    /// Mime-style); the client starts the round from it and does not keep its own.
    ServerInit,
}
