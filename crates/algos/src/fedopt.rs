//! Server optimisers as the server step of the round's stages (`crate::pipeline`):
//! FedAvgM (docs/algorithms.md §A.2), FedAdagrad / FedAdam / FedYogi (§A.3, paper or Flower
//! 1.42 rules, Appendix F) and FedExP (§A.4); docs/server-optimisers.md.
//!
//! The aggregate update Δ̄ (normalised when clients' rate sums differ) is handed to a
//! [`ServerStep`], which applies the optimiser from `fedpace_optim::server` to the
//! pseudo-gradient `−Δ̄`. FedAvg itself is `sgd` at η_g. Any synchronous algorithm can
//! take any of them through `strategy.server_optimizer` ([`ServerOptimizerConfig`]);
//! `fedavgm`, `fedadagrad`, `fedadam`, `fedyogi` and `fedexp` are FedAvg with theirs
//! fixed, keeping their hyper-parameters as top-level keys.
//!
//! FedExP: η_g^t = max{1, Σ_k p̃_k‖Δ_k‖² / (2(‖Δ̄‖² + ε))}; with the paper's uniform
//! weights `p̃_k = 1/M` this is exactly §A.4. The `fedexp` algorithm averages clients
//! uniformly (as the paper does) unless a policy changes the weights, and the model
//! evaluated each round is the training iterate `x^{t+1}` (the paper reports the
//! average of the last two iterates; we do not).
//!
//! Server-initialised client state (plan `state_mode = server-init`, §C.3 option 4):
//! the stages keep the p̃-weighted average of the optimiser states that clients return
//! ([`average_states`]) and send it with the next round's instructions.

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::pipeline::{NoHooks, Pipeline, Weighting};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{Error, Result};
use fedpace_optim::server::ServerOptimizer;
use fedpace_optim::{FedOptConfig, ServerRule, State};
use fedpace_params::{l2_norm, ParamSpec};
use serde::{Deserialize, Serialize};

/// The server's step from the aggregate update.
#[derive(Debug)]
pub enum ServerStep {
    /// `x ← x + η_g·Δ̄` (FedAvg).
    Sgd {
        /// η_g.
        server_lr: f64,
    },
    /// A server optimiser on `−Δ̄` (FedAvgM, FedAdagrad, FedAdam, FedYogi), with its state.
    Optimizer {
        /// The optimiser and its η_g.
        opt: ServerOptimizer,
        /// Its state (created at the first step).
        state: Option<State>,
    },
    /// FedExP's adaptive extrapolation `x ← x + η_g^t·Δ̄`.
    FedExp {
        /// ε > 0.
        eps: f64,
    },
}

impl ServerStep {
    /// Short description for logs.
    pub fn describe(&self) -> String {
        match self {
            ServerStep::Sgd { server_lr } => format!("sgd(η_g={server_lr})"),
            ServerStep::Optimizer { opt, .. } => {
                format!("{}(η_g={})", opt.name(), opt.server_lr())
            }
            ServerStep::FedExp { eps } => format!("fedexp(ε={eps})"),
        }
    }

    /// Whether [`ServerStep::apply`] reads the clients' squared update norms (FedExP
    /// only; the others may be given an empty slice).
    pub fn uses_client_norms(&self) -> bool {
        matches!(self, ServerStep::FedExp { .. })
    }

    /// Applies the step to `params` given the aggregate `delta`, the clients' squared
    /// update norms ‖Δ_k‖² (after any aggregation-side scaling; read by FedExP only, see
    /// [`ServerStep::uses_client_norms`]) and their normalised weights, plus an additive
    /// `correction` of the model from the post-aggregate hooks (FedDyn's −h/α; added in
    /// f64 with the step). Returns the server rate used.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        params: &mut [f32],
        delta: &[f32],
        client_sq_norms: &[f64],
        weights: &[f64],
        spec: &ParamSpec,
        round: u32,
        correction: Option<&[f64]>,
    ) -> Result<f64> {
        let lr = match self {
            ServerStep::Sgd { server_lr } => {
                match correction {
                    // x ← x + η_g·Δ̄ + c, in f64 (η_g as the f32 the plain step uses).
                    Some(c) => {
                        let lr = (*server_lr as f32) as f64;
                        for ((x, d), c) in params.iter_mut().zip(delta).zip(c) {
                            *x = (*x as f64 + lr * *d as f64 + c) as f32;
                        }
                        return Ok(*server_lr);
                    }
                    None => {
                        let lr = *server_lr as f32;
                        for (x, d) in params.iter_mut().zip(delta) {
                            *x += lr * d;
                        }
                    }
                }
                *server_lr
            }
            ServerStep::Optimizer { opt, state } => {
                let st = state.get_or_insert_with(|| opt.init(spec));
                opt.step(params, delta, st, spec, round as u64)
                    .map_err(|e| Error::invalid("strategy", opt.name(), e.to_string()))?;
                opt.server_lr()
            }
            ServerStep::FedExp { eps } => {
                let lr = fedexp_lr(delta, client_sq_norms, weights, *eps);
                for (x, d) in params.iter_mut().zip(delta) {
                    *x = (*x as f64 + lr * *d as f64) as f32;
                }
                lr
            }
        };
        if let Some(c) = correction {
            for (x, c) in params.iter_mut().zip(c) {
                *x = (*x as f64 + c) as f32;
            }
        }
        Ok(lr)
    }

    /// The server optimiser's state (moments), encoded.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        match self {
            ServerStep::Optimizer { state, .. } => to_cbor(state),
            _ => Ok(Vec::new()),
        }
    }

    /// Restores [`ServerStep::save_state`]'s bytes.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            ServerStep::Optimizer { state, .. } => {
                *state = from_cbor(bytes, "server optimiser state")?;
                Ok(())
            }
            _ => fedpace_core::traits::stateless("server step", bytes),
        }
    }
}

/// FedExP's server rate with weights `p̃` (summing to 1):
/// `max{1, Σ_k p̃_k‖Δ_k‖² / (2(‖Δ̄‖² + ε))}`; uniform `p̃` gives §A.4.
pub fn fedexp_lr(mean: &[f32], sq_norms: &[f64], weights: &[f64], eps: f64) -> f64 {
    let num: f64 = sq_norms.iter().zip(weights).map(|(n, p)| p * n).sum();
    (num / (2.0 * (l2_norm(mean).powi(2) + eps))).max(1.0)
}

/// The `weights`-weighted average of optimiser states of the same shape (buffers
/// averaged element-wise, recursively through children; count = the largest). Errors
/// when the shapes differ (clients ran different optimisers).
pub fn average_states(states: &[&State], weights: &[f64]) -> Result<State> {
    let first = states
        .first()
        .ok_or_else(|| Error::invalid("server-init state", "none", "at least one state"))?;
    let total: f64 = weights.iter().sum();
    let mut out = State {
        count: states.iter().map(|s| s.count).max().unwrap_or(0),
        buffers: first.buffers.iter().map(|b| vec![0f32; b.len()]).collect(),
        children: Vec::new(),
    };
    for (s, w) in states.iter().zip(weights) {
        let same = s.buffers.len() == first.buffers.len()
            && s.children.len() == first.children.len()
            && s.buffers
                .iter()
                .zip(&first.buffers)
                .all(|(a, b)| a.len() == b.len());
        if !same {
            return Err(Error::invalid(
                "plan.state_mode",
                "server-init",
                "every client of a round running the same optimiser (their states differ in shape)",
            ));
        }
        let p = (w / total) as f32;
        for (acc, b) in out.buffers.iter_mut().zip(&s.buffers) {
            for (a, x) in acc.iter_mut().zip(b) {
                *a += p * x;
            }
        }
    }
    for c in 0..first.children.len() {
        let kids: Vec<&State> = states.iter().map(|s| &s.children[c]).collect();
        out.children.push(average_states(&kids, weights)?);
    }
    Ok(out)
}

fn d_momentum() -> f64 {
    0.9
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.99
}
fn d_tau() -> f64 {
    1e-3
}

/// `strategy.server_optimizer`: the server optimiser of any synchronous algorithm,
/// e.g. `{ name = "adam", beta2 = 0.999 }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServerOptimizerConfig {
    /// `x ← x + η_g·Δ̄` (FedAvg's).
    #[default]
    Sgd,
    /// Heavy-ball momentum β (FedAvgM, Hsu et al.; default 0.9).
    Momentum {
        /// β (default 0.9).
        #[serde(default = "d_momentum")]
        momentum: f64,
    },
    /// Adagrad (FedAdagrad).
    Adagrad {
        /// Adaptivity τ (default 1e-3).
        #[serde(default = "d_tau")]
        tau: f64,
        /// Flower 1.42's rule (v₀ = 0) instead of the paper's (default false).
        #[serde(default)]
        flower_compatible: bool,
    },
    /// Adam (FedAdam).
    Adam {
        /// β1 (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 (default 0.99).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// Adaptivity τ (default 1e-3).
        #[serde(default = "d_tau")]
        tau: f64,
        /// Flower 1.42's rule (v₀ = 0, bias-corrected step) instead of the paper's.
        #[serde(default)]
        flower_compatible: bool,
    },
    /// Yogi (FedYogi).
    Yogi {
        /// β1 (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// β2 (default 0.99).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// Adaptivity τ (default 1e-3).
        #[serde(default = "d_tau")]
        tau: f64,
        /// Flower 1.42's rule (v₀ = 0) instead of the paper's.
        #[serde(default)]
        flower_compatible: bool,
    },
    /// FedExP's adaptive extrapolation.
    Fedexp {
        /// ε (default 1e-3).
        #[serde(default = "d_tau")]
        eps: f64,
    },
}

impl ServerOptimizerConfig {
    /// The default server rate η_g: 1 for sgd/momentum/fedexp (FedExP's floor), 0.1 for
    /// adagrad/adam (Flower's and [`FedOptConfig`]'s default), 0.1 for yogi under the
    /// paper rule and 0.01 under `flower_compatible` (Flower's).
    pub fn default_server_lr(&self) -> f64 {
        match self {
            ServerOptimizerConfig::Sgd
            | ServerOptimizerConfig::Momentum { .. }
            | ServerOptimizerConfig::Fedexp { .. } => 1.0,
            ServerOptimizerConfig::Adagrad { .. } | ServerOptimizerConfig::Adam { .. } => 0.1,
            ServerOptimizerConfig::Yogi {
                flower_compatible: true,
                ..
            } => 0.01,
            ServerOptimizerConfig::Yogi { .. } => 0.1,
        }
    }

    /// Whether it follows Flower 1.42's rule (`flower_compatible = true`).
    pub fn flower_compatible(&self) -> bool {
        matches!(
            self,
            ServerOptimizerConfig::Adagrad {
                flower_compatible: true,
                ..
            } | ServerOptimizerConfig::Adam {
                flower_compatible: true,
                ..
            } | ServerOptimizerConfig::Yogi {
                flower_compatible: true,
                ..
            }
        )
    }

    /// Checks ranges; `top_level`: the keys are the algorithm's own (`strategy.beta1`),
    /// else under `strategy.server_optimizer.`.
    pub fn validate(&self, top_level: bool) -> Result<()> {
        let key = |k: &str| {
            if top_level {
                format!("strategy.{k}")
            } else {
                format!("strategy.server_optimizer.{k}")
            }
        };
        let unit = |k: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(key(k), v, "in [0, 1)"))
            }
        };
        let positive = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(key(k), v, "finite and > 0"))
            }
        };
        match *self {
            ServerOptimizerConfig::Sgd => Ok(()),
            ServerOptimizerConfig::Momentum { momentum } => unit("momentum", momentum),
            ServerOptimizerConfig::Adagrad { tau, .. } => positive("tau", tau),
            ServerOptimizerConfig::Adam {
                beta1, beta2, tau, ..
            }
            | ServerOptimizerConfig::Yogi {
                beta1, beta2, tau, ..
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                positive("tau", tau)
            }
            ServerOptimizerConfig::Fedexp { eps } => positive("eps", eps),
        }
    }

    fn fedopt(server_lr: f64, beta1: f64, beta2: f64, tau: f64, flower: bool) -> FedOptConfig {
        FedOptConfig {
            server_lr,
            beta1,
            beta2,
            tau,
            rule: if flower {
                ServerRule::Flower
            } else {
                ServerRule::Paper
            },
        }
    }

    /// The server step at rate `server_lr`.
    pub fn build(&self, server_lr: f64) -> Result<ServerStep> {
        let opt_err = |e: fedpace_optim::Error| {
            Error::invalid(
                "strategy.server_optimizer",
                format!("{self:?}"),
                e.to_string(),
            )
        };
        let optimizer = |opt: ServerOptimizer| ServerStep::Optimizer { opt, state: None };
        Ok(match *self {
            ServerOptimizerConfig::Sgd => ServerStep::Sgd { server_lr },
            ServerOptimizerConfig::Momentum { momentum } => {
                optimizer(fedpace_optim::server::fedavgm(server_lr, momentum))
            }
            ServerOptimizerConfig::Adagrad {
                tau,
                flower_compatible,
            } => optimizer(
                Self::fedopt(server_lr, 0.9, 0.99, tau, flower_compatible)
                    .fedadagrad()
                    .map_err(opt_err)?,
            ),
            ServerOptimizerConfig::Adam {
                beta1,
                beta2,
                tau,
                flower_compatible,
            } => optimizer(
                Self::fedopt(server_lr, beta1, beta2, tau, flower_compatible)
                    .fedadam()
                    .map_err(opt_err)?,
            ),
            ServerOptimizerConfig::Yogi {
                beta1,
                beta2,
                tau,
                flower_compatible,
            } => optimizer(
                Self::fedopt(server_lr, beta1, beta2, tau, flower_compatible)
                    .fedyogi()
                    .map_err(opt_err)?,
            ),
            ServerOptimizerConfig::Fedexp { eps } => ServerStep::FedExp { eps },
        })
    }
}

/// FedAvg with its server optimiser fixed by `name`: the family's shared build.
fn preset(name: &'static str, cx: BuildCx, weighting: Weighting) -> Result<Built> {
    Ok(Built::Sync(Box::new(
        Pipeline::new(name, cx.settings, cx.policy, Box::new(NoHooks))
            .with_server(cx.server)
            .with_weighting(weighting),
    )))
}

/// `fedavgm`: FedAvg with server momentum (docs/algorithms.md §A.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAvgMConfig {
    /// Server momentum β (default 0.9, Hsu et al.).
    pub momentum: f64,
}

impl Default for FedAvgMConfig {
    fn default() -> Self {
        Self { momentum: 0.9 }
    }
}

impl Algorithm for FedAvgMConfig {
    const NAME: &'static str = "fedavgm";
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
        Some(ServerOptimizerConfig::Momentum {
            momentum: self.momentum,
        })
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        preset(Self::NAME, cx, Weighting::Examples)
    }
}

/// `fedadagrad` (docs/algorithms.md §A.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAdagradConfig {
    /// Adaptivity τ (default 1e-3).
    pub tau: f64,
    /// Flower 1.42's rule (v₀ = 0) instead of the paper's (default false).
    pub flower_compatible: bool,
}

impl Default for FedAdagradConfig {
    fn default() -> Self {
        Self {
            tau: 1e-3,
            flower_compatible: false,
        }
    }
}

impl Algorithm for FedAdagradConfig {
    const NAME: &'static str = "fedadagrad";
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
        Some(ServerOptimizerConfig::Adagrad {
            tau: self.tau,
            flower_compatible: self.flower_compatible,
        })
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        preset(Self::NAME, cx, Weighting::Examples)
    }
}

/// The keys of `fedadam` and `fedyogi` (docs/algorithms.md §A.3).
macro_rules! adaptive {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $ty {
            /// β1 (default 0.9).
            pub beta1: f64,
            /// β2 (default 0.99).
            pub beta2: f64,
            /// Adaptivity τ (default 1e-3).
            pub tau: f64,
            /// Reproduce Flower 1.42's server rule (docs/algorithms.md App. F: v₀ = 0, FedAdam's
            /// bias-corrected step size) instead of the paper's (default false).
            pub flower_compatible: bool,
        }

        impl Default for $ty {
            fn default() -> Self {
                Self {
                    beta1: 0.9,
                    beta2: 0.99,
                    tau: 1e-3,
                    flower_compatible: false,
                }
            }
        }

        impl Algorithm for $ty {
            const NAME: &'static str = $name;
            fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
                Some(ServerOptimizerConfig::$variant {
                    beta1: self.beta1,
                    beta2: self.beta2,
                    tau: self.tau,
                    flower_compatible: self.flower_compatible,
                })
            }
            fn build(&self, cx: BuildCx) -> Result<Built> {
                preset(Self::NAME, cx, Weighting::Examples)
            }
        }
    };
}

adaptive!(
    /// `fedadam`: FedAvg with a server Adam.
    FedAdamConfig,
    "fedadam",
    Adam
);
adaptive!(
    /// `fedyogi`: FedAvg with a server Yogi.
    FedYogiConfig,
    "fedyogi",
    Yogi
);

/// `fedexp`: adaptive server extrapolation (docs/algorithms.md §A.4), uniform client weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedExpConfig {
    /// FedExP's ε (default 1e-3).
    pub eps: f64,
}

impl Default for FedExpConfig {
    fn default() -> Self {
        Self { eps: 1e-3 }
    }
}

impl Algorithm for FedExpConfig {
    const NAME: &'static str = "fedexp";
    fn own_server_optimizer(&self) -> Option<ServerOptimizerConfig> {
        Some(ServerOptimizerConfig::Fedexp { eps: self.eps })
    }
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        Ok(())
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        preset(Self::NAME, cx, Weighting::Uniform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedexp_lr_matches_the_uniform_formula_of_optim() {
        let a = [1.0f32, 0.0];
        let b = [-0.9f32, 0.0];
        let (lr, mean) = fedpace_optim::server::fedexp_server_lr(&[&a, &b], 1e-3).unwrap();
        let sq = [l2_norm(&a).powi(2), l2_norm(&b).powi(2)];
        let ours = fedexp_lr(&mean, &sq, &[0.5, 0.5], 1e-3);
        assert!((lr - ours).abs() < 1e-9 * lr, "{lr} vs {ours}");
    }

    #[test]
    fn average_states_by_hand() {
        let s1 = State {
            count: 3,
            buffers: vec![vec![1.0, 2.0]],
            children: vec![State {
                count: 1,
                buffers: vec![vec![4.0]],
                children: vec![],
            }],
        };
        let s2 = State {
            count: 5,
            buffers: vec![vec![3.0, 6.0]],
            children: vec![State {
                count: 2,
                buffers: vec![vec![0.0]],
                children: vec![],
            }],
        };
        let avg = average_states(&[&s1, &s2], &[1.0, 3.0]).unwrap();
        assert_eq!(avg.count, 5);
        assert_eq!(avg.buffers, vec![vec![2.5, 5.0]]);
        assert_eq!(avg.children[0].buffers, vec![vec![1.0]]);
        let bad = State {
            buffers: vec![vec![1.0]],
            ..Default::default()
        };
        let e = average_states(&[&s1, &bad], &[1.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("server-init"), "{e}");
    }

    #[test]
    fn the_server_optimiser_state_round_trips() {
        let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
        let mut a = ServerOptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            flower_compatible: false,
        }
        .build(0.1)
        .unwrap();
        let mut x = vec![1.0f32, 2.0];
        a.apply(&mut x, &[0.5, -0.5], &[], &[], &spec, 1, None)
            .unwrap();
        let saved = a.save_state().unwrap();
        let mut b = ServerOptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            flower_compatible: false,
        }
        .build(0.1)
        .unwrap();
        b.restore_state(&saved).unwrap();
        let mut y = x.clone();
        a.apply(&mut x, &[0.1, 0.3], &[], &[], &spec, 2, None)
            .unwrap();
        b.apply(&mut y, &[0.1, 0.3], &[], &[], &spec, 2, None)
            .unwrap();
        assert_eq!(x, y);
        assert!(ServerStep::Sgd { server_lr: 1.0 }
            .restore_state(&saved)
            .is_err());
    }
}
