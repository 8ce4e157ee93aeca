//! Server optimisers: the client transforms applied to the pseudo-gradient `−Δ̄`
//! (docs/algorithms.md §0.2, §A.2–A.4, Appendix F).
//!
//! A [`ServerOptimizer`] is a transform ending in `scale_by_rate` plus a server rate
//! `η_g`; [`ServerOptimizer::step`] forms `g = −Δ̄`, runs the transform with every
//! group's rate = `η_g` (or per-group server rates with
//! [`ServerOptimizer::step_with_rates`]) and applies `x ← x + u`. FedAvg is `sgd` with
//! `η_g = 1`.
//!
//! The one decision: the paper rules are the default ([`ServerRule::Paper`], Reddi et
//! al. 2021 Algorithm 2: `v₀ = τ²`, no bias correction); [`ServerRule::Flower`]
//! reproduces Flower 1.42's strategies to float tolerance (`v₀ = 0`; FedAdam's step
//! size `η·√(1−β2^(t+1))/(1−β1^(t+1))` with `t` the server round; FedAdagrad without
//! momentum). Both place τ outside the square root. FedAvgM is the same under both.

use crate::alias::sgd;
use crate::combine::chain;
use crate::transforms::*;
use crate::{check_len, check_param, Error, Result, State, StepContext, Transform};
use fedpace_params::{l2_norm, ParamSpec};
use serde::{Deserialize, Serialize};

/// A server transform with its server rate η_g.
#[derive(Debug)]
pub struct ServerOptimizer {
    name: &'static str,
    transform: Box<dyn Transform>,
    server_lr: f64,
}

impl ServerOptimizer {
    /// Wraps any transform that ends in `scale_by_rate` (so `server_lr` sets its step).
    pub fn new<T: Transform + 'static>(name: &'static str, transform: T, server_lr: f64) -> Self {
        ServerOptimizer {
            name,
            transform: Box::new(transform),
            server_lr,
        }
    }
    /// Short name (`"fedadam"`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The server rate η_g.
    pub fn server_lr(&self) -> f64 {
        self.server_lr
    }
    /// The underlying transform.
    pub fn transform(&self) -> &dyn Transform {
        self.transform.as_ref()
    }
    /// Gives up the rate, keeping the transform (to compose or test it directly).
    pub fn into_transform(self) -> Box<dyn Transform> {
        self.transform
    }
    /// Fresh server state (momenta, second moments).
    pub fn init(&self, spec: &ParamSpec) -> State {
        self.transform.init(spec)
    }

    /// One server step: `g = −Δ̄`, `u = transform(g)` at rate η_g, `x ← x + u`.
    /// `round` is the 1-based server round (Flower's `server_round`; only the Flower
    /// FedAdam step size reads it).
    ///
    /// ```
    /// use fedpace_optim::server::fedavgm;
    /// use fedpace_params::ParamSpec;
    /// let spec = ParamSpec::builder().add("w", &[1], "body").build().unwrap();
    /// let opt = fedavgm(1.0, 0.9);
    /// let mut state = opt.init(&spec);
    /// let mut x = vec![0.0f32];
    /// opt.step(&mut x, &[1.0], &mut state, &spec, 1).unwrap();
    /// opt.step(&mut x, &[1.0], &mut state, &spec, 2).unwrap();
    /// assert!((x[0] - 2.9).abs() < 1e-6); // 1 + (0.9 + 1)
    /// ```
    pub fn step(
        &self,
        params: &mut [f32],
        mean_delta: &[f32],
        state: &mut State,
        spec: &ParamSpec,
        round: u64,
    ) -> Result<()> {
        let rates = vec![self.server_lr as f32; spec.num_groups()];
        self.step_with_rates(params, mean_delta, state, spec, round, &rates)
    }

    /// As [`step`](Self::step) with one server rate per parameter group.
    pub fn step_with_rates(
        &self,
        params: &mut [f32],
        mean_delta: &[f32],
        state: &mut State,
        spec: &ParamSpec,
        round: u64,
        group_rates: &[f32],
    ) -> Result<()> {
        check_len("params", params.len(), spec.total_len())?;
        check_len("mean_delta", mean_delta.len(), spec.total_len())?;
        let mut u: Vec<f32> = mean_delta.iter().map(|d| -d).collect();
        let ctx = StepContext {
            spec,
            group_rates,
            step: round,
        };
        self.transform.update(&mut u, state, params, &ctx)?;
        crate::apply_updates(params, &u);
        Ok(())
    }
}

/// FedAvg's server step `x ← x + Δ̄` (sgd at η_g = 1).
pub fn fedavg() -> ServerOptimizer {
    ServerOptimizer::new("fedavg", sgd(), 1.0)
}

/// FedAvgM (§A.2; identical to Flower's FedAvgM): `v ← βv + (−Δ̄)`, `x ← x − η_g·v`.
/// Defaults of the paper: `β = 0.9`, `η_g = 1`.
pub fn fedavgm(server_lr: f64, momentum: f64) -> ServerOptimizer {
    ServerOptimizer::new(
        "fedavgm",
        crate::alias::momentum(momentum, false),
        server_lr,
    )
}

/// Which published rule a FedOpt server follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerRule {
    /// Reddi et al. 2021 Algorithm 2: `v₀ = τ²`, no bias correction.
    #[default]
    Paper,
    /// Flower 1.42 (docs/algorithms.md App. F): `v₀ = 0`; FedAdam bias-corrects the step
    /// size with the server round (`η_t = η·√(1−β2^(t+1))/(1−β1^(t+1))`).
    Flower,
}

/// Configuration of the FedOpt family (§A.3). `Default` gives the paper defaults
/// `η_g = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3` under [`ServerRule::Paper`].
///
/// ```
/// use fedpace_optim::{FedOptConfig, ServerRule};
/// let cfg = FedOptConfig::default().with_server_lr(0.01).with_rule(ServerRule::Flower);
/// let opt = cfg.fedyogi().unwrap();
/// assert_eq!(opt.name(), "fedyogi");
/// assert!(FedOptConfig::default().with_tau(0.0).fedadam().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FedOptConfig {
    /// Server rate η_g > 0.
    pub server_lr: f64,
    /// β1 ∈ [0, 1) (ignored by FedAdagrad, which has no momentum).
    pub beta1: f64,
    /// β2 ∈ [0, 1) (Adam, Yogi).
    pub beta2: f64,
    /// τ > 0, the adaptivity (ε outside the square root).
    pub tau: f64,
    /// Paper or Flower rule.
    pub rule: ServerRule,
}

impl Default for FedOptConfig {
    fn default() -> Self {
        FedOptConfig {
            server_lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            rule: ServerRule::Paper,
        }
    }
}

impl FedOptConfig {
    /// Flower 1.42 message-API defaults of `FedAdam` / `FedAdagrad` (η 0.1, τ 1e-3).
    pub fn flower() -> Self {
        FedOptConfig {
            rule: ServerRule::Flower,
            ..Self::default()
        }
    }
    /// Flower 1.42 defaults of `FedYogi` (η 1e-2, τ 1e-3).
    pub fn flower_fedyogi() -> Self {
        Self::flower().with_server_lr(1e-2)
    }
    /// Sets η_g.
    pub fn with_server_lr(mut self, v: f64) -> Self {
        self.server_lr = v;
        self
    }
    /// Sets β1.
    pub fn with_beta1(mut self, v: f64) -> Self {
        self.beta1 = v;
        self
    }
    /// Sets β2.
    pub fn with_beta2(mut self, v: f64) -> Self {
        self.beta2 = v;
        self
    }
    /// Sets τ.
    pub fn with_tau(mut self, v: f64) -> Self {
        self.tau = v;
        self
    }
    /// Sets the rule.
    pub fn with_rule(mut self, v: ServerRule) -> Self {
        self.rule = v;
        self
    }
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        check_param(
            "server_lr",
            self.server_lr,
            self.server_lr > 0.0,
            "finite and > 0",
        )?;
        check_betas(self.beta1, self.beta2)?;
        check_param("tau", self.tau, self.tau > 0.0, "finite and > 0")
    }
    fn v0(&self) -> f64 {
        match self.rule {
            ServerRule::Paper => self.tau * self.tau,
            ServerRule::Flower => 0.0,
        }
    }
    /// FedAdagrad: `v ← v + Δ̄²`, `x ← x + η_g·Δ̄/(√v + τ)` (no momentum).
    pub fn fedadagrad(&self) -> Result<ServerOptimizer> {
        self.validate()?;
        let tx = chain(vec![
            Box::new(scale_by_adagrad(self.tau, self.v0())),
            Box::new(scale_by_rate()),
        ]);
        Ok(ServerOptimizer::new("fedadagrad", tx, self.server_lr))
    }
    /// FedAdam: `m ← β1m + (1−β1)Δ̄`, `v ← β2v + (1−β2)Δ̄²`, `x ← x + η_t·m/(√v + τ)`
    /// (`η_t = η_g` under the paper rule; Flower's bias-corrected step size otherwise).
    pub fn fedadam(&self) -> Result<ServerOptimizer> {
        self.validate()?;
        let rule = match self.rule {
            ServerRule::Paper => AdamBiasCorrection::None,
            ServerRule::Flower => AdamBiasCorrection::FlowerServerRound,
        };
        let tx = chain(vec![
            Box::new(
                scale_by_adam(self.beta1, self.beta2, self.tau)
                    .with_bias_correction(rule)
                    .with_initial_v(self.v0()),
            ),
            Box::new(scale_by_rate()),
        ]);
        Ok(ServerOptimizer::new("fedadam", tx, self.server_lr))
    }
    /// FedYogi: `v ← v − (1−β2)Δ̄²·sign(v − Δ̄²)`, otherwise as FedAdam without bias
    /// correction.
    pub fn fedyogi(&self) -> Result<ServerOptimizer> {
        self.validate()?;
        let tx = chain(vec![
            Box::new(scale_by_yogi(self.beta1, self.beta2, self.tau, self.v0())),
            Box::new(scale_by_rate()),
        ]);
        Ok(ServerOptimizer::new("fedyogi", tx, self.server_lr))
    }
}

/// FedAdagrad under the paper rule (τ = 1e-3 is the recommended start).
pub fn fedadagrad(server_lr: f64, tau: f64) -> Result<ServerOptimizer> {
    FedOptConfig::default()
        .with_server_lr(server_lr)
        .with_tau(tau)
        .fedadagrad()
}

/// FedAdam under the paper rule (defaults β1 0.9, β2 0.99, τ 1e-3).
pub fn fedadam(server_lr: f64, beta1: f64, beta2: f64, tau: f64) -> Result<ServerOptimizer> {
    FedOptConfig {
        server_lr,
        beta1,
        beta2,
        tau,
        rule: ServerRule::Paper,
    }
    .fedadam()
}

/// FedYogi under the paper rule (defaults β1 0.9, β2 0.99, τ 1e-3).
pub fn fedyogi(server_lr: f64, beta1: f64, beta2: f64, tau: f64) -> Result<ServerOptimizer> {
    FedOptConfig {
        server_lr,
        beta1,
        beta2,
        tau,
        rule: ServerRule::Paper,
    }
    .fedyogi()
}

/// FedExP's server rate (§A.4), from the clients' deltas with uniform averaging:
/// `η_g = max{1, Σ_k ‖Δ_k‖² / (2M(‖Δ̄‖² + ε))}` with `Δ̄ = (1/M)Σ_k Δ_k`.
/// Returns `(η_g, Δ̄)`; the step is `x ← x + η_g·Δ̄` (see [`fedexp_step`]). Paper default
/// `ε = 1e-3` (decay it by γ² when the client rate decays by γ per round). Flower's
/// port uses `ε·M`, a rescaling of ε.
///
/// ```
/// use fedpace_optim::server::fedexp_server_lr;
/// // two opposite updates: the mean is ~0, so the step extrapolates hard
/// let (lr, mean) = fedexp_server_lr(&[&[1.0, 0.0], &[-0.9, 0.0]], 1e-3).unwrap();
/// assert!((mean[0] - 0.05).abs() < 1e-7 && mean[1] == 0.0);
/// assert!(lr > 100.0);
/// let (lr, _) = fedexp_server_lr(&[&[1.0], &[1.0]], 1e-3).unwrap();
/// assert_eq!(lr, 1.0);
/// ```
pub fn fedexp_server_lr(deltas: &[&[f32]], eps: f64) -> Result<(f64, Vec<f32>)> {
    let m = deltas.len();
    if m == 0 {
        return Err(Error::InvalidHyperParameter {
            name: "deltas",
            value: 0.0,
            expected: "at least one client delta",
        });
    }
    // ε > 0 keeps η_g finite when the clients' deltas cancel exactly.
    check_param("eps", eps, eps > 0.0, "finite and > 0")?;
    let d = deltas[0].len();
    let mut sum = vec![0.0f64; d];
    let mut sq = 0.0f64;
    for delta in deltas {
        check_len("delta", delta.len(), d)?;
        sq += l2_norm(delta).powi(2);
        for (s, &x) in sum.iter_mut().zip(delta.iter()) {
            *s += x as f64;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / m as f64) as f32).collect();
    let mean_sq = sum.iter().map(|s| (s / m as f64).powi(2)).sum::<f64>();
    let lr = (sq / (2.0 * m as f64 * (mean_sq + eps))).max(1.0);
    Ok((lr, mean))
}

/// FedExP's step: `x ← x + η_g·Δ̄` with η_g from [`fedexp_server_lr`]; returns η_g.
/// For evaluation the paper reports `(x^{t+1} + x^t)/2`; keep training from `x^{t+1}`.
pub fn fedexp_step(params: &mut [f32], deltas: &[&[f32]], eps: f64) -> Result<f64> {
    let (lr, mean) = fedexp_server_lr(deltas, eps)?;
    check_len("params", params.len(), mean.len())?;
    for (p, d) in params.iter_mut().zip(&mean) {
        *p += (lr * *d as f64) as f32;
    }
    Ok(lr)
}
