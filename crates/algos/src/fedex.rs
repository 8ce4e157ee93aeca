//! FedEx (docs/learned-rates.md, "FedEx"; Khodak et al., NeurIPS 2021): FedAvg whose
//! clients' local configurations — rate, epochs, batch size, proximal μ — are drawn each
//! round from categorical distributions θ that the server moves by exponentiated
//! gradient on the clients' **validation** losses after local training, within one run.
//! One θ per hyper-parameter (a product of categoricals), kept for the whole population
//! (`by = "population"`) or per device class (`by = "device"`).
//!
//! Each round, for client i with configuration indices c_i and validation signal
//! (L_i^before, L_i^after, |V_i|) from [`crate::probe`], per cluster and hyper-parameter h:
//!
//! ```text
//! ω_i = |V_i| / Σ_j |V_j|,   L_i = L_i^after (or L_i^after − L_i^before with `diff`)
//! λ_t = Σ_s γ^{t−s} L̄_s / Σ_s γ^{t−s},   L̄_s = Σ_i ω_i L_i at round s  (γ = `discount`)
//! ∇̃_j = Σ_i ω_i (L_i − λ_t) 1[c_i^h = j] / θ_j
//! z ← z − η_t ∇̃,  z ← z − logsumexp(z),  θ = exp(z)
//! ```
//!
//! with `η_t` from `step`: `aggressive` η_0/‖∇̃‖_∞ (the default), `auto` η_0/√t,
//! `adaptive` η_0/√(Σ‖∇̃‖_∞²), `constant` η_0, where η_0 = √(2 log k). A θ whose entropy
//! falls below `entropy_cutoff` stops moving. θ and the baseline are the hooks' state
//! (saved and restored); every θ_j goes to `metrics.jsonl` (`learned`) each round.

use crate::config::{check_f32, Algorithm, BuildCx, Built, RoundConfig};
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks};
use crate::probe::{ValidationProbe, ValidationSignal};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    ClientId, ClientInfo, ClientPool, Error, LocalWork, RatePlan, Result, TrainIns,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// Which clients share a θ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FedExScope {
    /// One θ for everyone.
    #[default]
    Population,
    /// One θ per device class (clients without one share the `none` θ).
    Device,
}

/// The step-size schedule of the exponentiated-gradient update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FedExStep {
    /// η_0 / ‖∇̃‖_∞.
    #[default]
    Aggressive,
    /// η_0 / √t.
    Auto,
    /// η_0 / √(Σ_s ‖∇̃_s‖_∞²).
    Adaptive,
    /// η_0.
    Constant,
}

/// Which validation number is the loss L of the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FedExSignal {
    /// Mean validation cross-entropy.
    #[default]
    Loss,
    /// Validation error rate (1 − accuracy), the paper's.
    Error,
}

/// `fedex`: candidate values per local hyper-parameter (an empty list keeps the base
/// plan's value) and the update's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedExConfig {
    /// Candidate local rates η_k.
    pub rates: Vec<f64>,
    /// Candidate local epochs.
    pub epochs: Vec<u32>,
    /// Candidate batch sizes.
    pub batch_sizes: Vec<u32>,
    /// Candidate proximal coefficients μ.
    pub mus: Vec<f64>,
    /// Who shares a θ (default `population`).
    pub by: FedExScope,
    /// Step-size schedule (default `aggressive`).
    pub step: FedExStep,
    /// Discount γ ∈ [0, 1] of the baseline's mean of past losses (default 0: this round's).
    pub discount: f64,
    /// Use L^after − L^before (default false: L^after).
    pub diff: bool,
    /// Validation loss or error (default `loss`).
    pub signal: FedExSignal,
    /// θ stops moving below this entropy (nats; default 1e-4).
    pub entropy_cutoff: f64,
}

impl Default for FedExConfig {
    fn default() -> Self {
        Self {
            rates: vec![0.003, 0.01, 0.03, 0.1],
            epochs: Vec::new(),
            batch_sizes: Vec::new(),
            mus: Vec::new(),
            by: FedExScope::Population,
            step: FedExStep::Aggressive,
            discount: 0.0,
            diff: false,
            signal: FedExSignal::Loss,
            entropy_cutoff: 1e-4,
        }
    }
}

impl Algorithm for FedExConfig {
    const NAME: &'static str = "fedex";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        for (i, &r) in self.rates.iter().enumerate() {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::invalid(format!("strategy.rates[{i}]"), r, "> 0"));
            }
            check_f32(&format!("strategy.rates[{i}]"), r)?;
        }
        for (key, v) in [("epochs", &self.epochs), ("batch_sizes", &self.batch_sizes)] {
            if let Some(i) = v.iter().position(|&x| x == 0) {
                return Err(Error::invalid(format!("strategy.{key}[{i}]"), 0, ">= 1"));
            }
        }
        for (i, &m) in self.mus.iter().enumerate() {
            if !(m.is_finite() && m >= 0.0) {
                return Err(Error::invalid(format!("strategy.mus[{i}]"), m, ">= 0"));
            }
        }
        if self.dims().is_empty() {
            return Err(Error::invalid(
                "strategy.rates",
                "[]",
                "candidates for at least one of rates, epochs, batch_sizes, mus",
            ));
        }
        if !(0.0..=1.0).contains(&self.discount) {
            return Err(Error::invalid(
                "strategy.discount",
                self.discount,
                "in [0, 1]",
            ));
        }
        if !(self.entropy_cutoff.is_finite() && self.entropy_cutoff >= 0.0) {
            return Err(Error::invalid(
                "strategy.entropy_cutoff",
                self.entropy_cutoff,
                ">= 0",
            ));
        }
        Ok(())
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(FedEx::new(self.clone())),
            )
            .with_server(cx.server),
        )))
    }
}

/// One searched hyper-parameter: its name in metrics and its number of candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Rate,
    Epochs,
    Batch,
    Mu,
}

impl Dim {
    fn name(self) -> &'static str {
        match self {
            Dim::Rate => "rate",
            Dim::Epochs => "epochs",
            Dim::Batch => "batch_size",
            Dim::Mu => "mu",
        }
    }
}

impl FedExConfig {
    /// The searched hyper-parameters with their candidate counts, in a fixed order.
    fn dims(&self) -> Vec<(Dim, usize)> {
        [
            (Dim::Rate, self.rates.len()),
            (Dim::Epochs, self.epochs.len()),
            (Dim::Batch, self.batch_sizes.len()),
            (Dim::Mu, self.mus.len()),
        ]
        .into_iter()
        .filter(|(_, k)| *k > 0)
        .collect()
    }

    /// Candidate `j` of `dim`, as text for metrics.
    fn label(&self, dim: Dim, j: usize) -> String {
        match dim {
            Dim::Rate => self.rates[j].to_string(),
            Dim::Epochs => self.epochs[j].to_string(),
            Dim::Batch => self.batch_sizes[j].to_string(),
            Dim::Mu => self.mus[j].to_string(),
        }
    }

    /// Writes candidate `j` of `dim` into `plan`.
    fn apply(&self, dim: Dim, j: usize, plan: &mut RatePlan) {
        match dim {
            Dim::Rate => plan.base_lr = self.rates[j] as f32,
            Dim::Epochs => plan.work = LocalWork::Epochs(self.epochs[j]),
            Dim::Batch => plan.batch_size = self.batch_sizes[j],
            Dim::Mu => plan.prox_mu = self.mus[j],
        }
    }
}

/// One categorical θ = exp(z) and its step-size bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categorical {
    /// Log-probabilities z (logsumexp(z) = 0).
    pub z: Vec<f64>,
    /// Σ_s ‖∇̃_s‖_∞² (the `adaptive` schedule).
    pub grad_sq_sum: f64,
    /// Updates made.
    pub updates: u32,
    /// Entropy fell below the cutoff: θ no longer moves.
    pub frozen: bool,
}

impl Categorical {
    fn uniform(k: usize) -> Self {
        Self {
            z: vec![-(k as f64).ln(); k],
            grad_sq_sum: 0.0,
            updates: 0,
            frozen: false,
        }
    }

    /// θ.
    pub fn probs(&self) -> Vec<f64> {
        self.z.iter().map(|z| z.exp()).collect()
    }

    /// Entropy of θ in nats.
    pub fn entropy(&self) -> f64 {
        -self
            .z
            .iter()
            .map(|z| if z.is_finite() { z.exp() * z } else { 0.0 })
            .sum::<f64>()
    }

    /// An index drawn from θ with one uniform `u ∈ [0, 1)`.
    fn draw(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (j, p) in self.probs().iter().enumerate() {
            acc += p;
            if u < acc {
                return j;
            }
        }
        self.z.len() - 1
    }

    /// One exponentiated-gradient step with the gradient estimate `grad`.
    fn step(&mut self, grad: &[f64], schedule: FedExStep, cutoff: f64) {
        if self.frozen {
            return;
        }
        let k = self.z.len();
        let eta0 = (2.0 * (k as f64).ln()).sqrt();
        let inf = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        self.updates += 1;
        self.grad_sq_sum += inf * inf;
        let eta = match schedule {
            FedExStep::Aggressive if inf > 0.0 => eta0 / inf,
            FedExStep::Aggressive => 0.0,
            FedExStep::Auto => eta0 / (self.updates as f64).sqrt(),
            FedExStep::Adaptive if self.grad_sq_sum > 0.0 => eta0 / self.grad_sq_sum.sqrt(),
            FedExStep::Adaptive => 0.0,
            FedExStep::Constant => eta0,
        };
        for (z, g) in self.z.iter_mut().zip(grad) {
            *z -= eta * g;
        }
        let m = self.z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + self.z.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        self.z.iter_mut().for_each(|z| *z -= lse);
        if self.entropy() < cutoff {
            self.frozen = true;
        }
    }
}

/// The θs and the baseline of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// One θ per searched hyper-parameter.
    pub theta: Vec<Categorical>,
    /// Σ_s γ^{t−s} L̄_s.
    pub baseline_num: f64,
    /// Σ_s γ^{t−s}.
    pub baseline_den: f64,
}

/// FedEx's server state: what [`ServerHooks::save_state`] encodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FedExState {
    /// θ per cluster key.
    pub clusters: BTreeMap<String, Cluster>,
    /// This round's draws: client → (cluster, candidate index per hyper-parameter).
    pub pending: BTreeMap<ClientId, (String, Vec<usize>)>,
}

/// The server half (see the module doc).
pub struct FedEx {
    cfg: FedExConfig,
    dims: Vec<(Dim, usize)>,
    state: FedExState,
}

impl FedEx {
    /// FedEx with uniform θs.
    pub fn new(cfg: FedExConfig) -> Self {
        Self {
            dims: cfg.dims(),
            cfg,
            state: FedExState::default(),
        }
    }

    /// The state (θ per cluster, the baseline).
    pub fn state(&self) -> &FedExState {
        &self.state
    }

    fn cluster_key(&self, info: &ClientInfo) -> String {
        match self.cfg.by {
            FedExScope::Population => "all".into(),
            FedExScope::Device => info.device.clone().unwrap_or_else(|| "none".into()),
        }
    }

    fn cluster(&mut self, key: &str) -> &mut Cluster {
        let dims = &self.dims;
        self.state
            .clusters
            .entry(key.to_string())
            .or_insert_with(|| Cluster {
                theta: dims.iter().map(|&(_, k)| Categorical::uniform(k)).collect(),
                baseline_num: 0.0,
                baseline_den: 0.0,
            })
    }

    /// L of one client's signal.
    fn loss(&self, s: &ValidationSignal) -> f64 {
        let of = |e: &fedpace_core::EvalStats| match self.cfg.signal {
            FedExSignal::Loss => e.loss(),
            FedExSignal::Error => 1.0 - e.accuracy(),
        };
        if self.cfg.diff {
            of(&s.after) - of(&s.before)
        } else {
            of(&s.after)
        }
    }

    /// The update of one cluster from `(indices, ω-unnormalised weight |V_i|, L_i)`.
    fn update(&mut self, key: &str, obs: &[(Vec<usize>, f64, f64)]) {
        let total: f64 = obs.iter().map(|o| o.1).sum();
        if total <= 0.0 {
            return;
        }
        let (discount, schedule, cutoff) =
            (self.cfg.discount, self.cfg.step, self.cfg.entropy_cutoff);
        let mean: f64 = obs.iter().map(|(_, w, l)| w / total * l).sum();
        let c = self.cluster(key);
        c.baseline_num = discount * c.baseline_num + mean;
        c.baseline_den = discount * c.baseline_den + 1.0;
        let baseline = c.baseline_num / c.baseline_den;
        for (h, theta) in c.theta.iter_mut().enumerate() {
            let probs = theta.probs();
            let mut grad = vec![0.0; probs.len()];
            for (idx, w, l) in obs {
                let j = idx[h];
                grad[j] += w / total * (l - baseline) / probs[j];
            }
            theta.step(&grad, schedule, cutoff);
        }
    }
}

impl ServerHooks for FedEx {
    fn describe(&self) -> String {
        let dims: Vec<&str> = self.dims.iter().map(|(d, _)| d.name()).collect();
        format!("search={}, by={:?}", dims.join("+"), self.cfg.by)
    }
    fn plan(
        &mut self,
        round: u32,
        info: &ClientInfo,
        _pool: &dyn ClientPool,
        seed: u64,
        plan: &mut RatePlan,
    ) -> Result<()> {
        let key = self.cluster_key(info);
        let mut rng = stream(seed, round as u64, info.id, Purpose::Policy);
        let idx: Vec<usize> = self
            .cluster(&key)
            .theta
            .iter()
            .map(|t| t.draw(rng.gen::<f64>()))
            .collect();
        for (&(dim, _), &j) in self.dims.iter().zip(&idx) {
            self.cfg.apply(dim, j, plan);
        }
        self.state.pending.insert(info.id, (key, idx));
        Ok(())
    }
    fn attach(&mut self, _round: u32, ins: &mut TrainIns) -> Result<()> {
        ins.ext.insert(ValidationProbe::default());
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let pending = std::mem::take(&mut self.state.pending);
        let mut by_cluster: BTreeMap<String, Vec<(Vec<usize>, f64, f64)>> = BTreeMap::new();
        for (id, res) in cx.accepted {
            let (Some((key, idx)), Some(s)) = (pending.get(id), res.ext.get::<ValidationSignal>())
            else {
                continue;
            };
            by_cluster.entry(key.clone()).or_default().push((
                idx.clone(),
                s.samples() as f64,
                self.loss(s),
            ));
        }
        for (key, obs) in by_cluster {
            self.update(&key, &obs);
        }
        Ok(None)
    }
    fn learned(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (key, c) in &self.state.clusters {
            for ((dim, _), theta) in self.dims.iter().zip(&c.theta) {
                for (j, p) in theta.probs().iter().enumerate() {
                    let v = self.cfg.label(*dim, j);
                    out.insert(format!("fedex.{key}.{}={v}", dim.name()), *p);
                }
            }
            if c.baseline_den > 0.0 {
                out.insert(
                    format!("fedex.{key}.baseline"),
                    c.baseline_num / c.baseline_den,
                );
            }
        }
        out
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&self.state)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = from_cbor(bytes, "fedex state")?;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pool() -> Vec<ClientInfo> {
        Vec::new()
    }

    /// The update rule by hand: k = 2 candidate rates, two clients, θ uniform, baseline
    /// = this round's weighted mean (discount 0).
    ///
    /// |V| = (1, 3), L = (2, 1), choices (0, 1): ω = (1/4, 3/4), λ = 2/4 + 3/4 = 1.25,
    /// ∇̃_0 = (1/4)(2 − 1.25)/0.5 = 0.375, ∇̃_1 = (3/4)(1 − 1.25)/0.5 = −0.375.
    /// aggressive: η = √(2 ln 2)/0.375; z_j = ln ½ − η∇̃_j, normalised:
    /// θ_1/θ_0 = exp(2·η·0.375) = exp(2√(2 ln 2)) ⇒ θ_0 = 1/(1 + exp(2√(2 ln 2))).
    #[test]
    fn fedex_update_matches_the_hand_derivation() {
        let mut f = FedEx::new(FedExConfig {
            rates: vec![0.01, 0.1],
            ..Default::default()
        });
        f.update("all", &[(vec![0], 1.0, 2.0), (vec![1], 3.0, 1.0)]);
        let c = &f.state.clusters["all"];
        let theta = c.theta[0].probs();
        let want0 = 1.0 / (1.0 + (2.0 * (2.0 * 2f64.ln()).sqrt()).exp());
        assert!((theta[0] - want0).abs() < 1e-12, "{theta:?} vs {want0}");
        assert!((theta[0] + theta[1] - 1.0).abs() < 1e-12);
        assert!((c.baseline_num / c.baseline_den - 1.25).abs() < 1e-12);
        // A second round with discount 0.5: λ = (0.5·1.25 + 1.5)/(0.5 + 1).
        let mut g = FedEx::new(FedExConfig {
            rates: vec![0.01, 0.1],
            discount: 0.5,
            ..Default::default()
        });
        g.update("all", &[(vec![0], 1.0, 2.0), (vec![1], 3.0, 1.0)]);
        g.update("all", &[(vec![0], 1.0, 1.5)]);
        let c = &g.state.clusters["all"];
        assert!((c.baseline_num / c.baseline_den - (0.5 * 1.25 + 1.5) / 1.5).abs() < 1e-12);
    }

    #[test]
    fn fedex_schedules_and_freezing() {
        // constant: η = η_0 = √(2 ln 2) with ∇̃ = (1, −1): θ_0 = 1/(1 + e^{2η_0}).
        let mut t = Categorical::uniform(2);
        t.step(&[1.0, -1.0], FedExStep::Constant, 0.0);
        let eta0 = (2.0 * 2f64.ln()).sqrt();
        assert!((t.probs()[0] - 1.0 / (1.0 + (2.0 * eta0).exp())).abs() < 1e-12);
        // auto: the second step uses η_0/√2.
        let mut a = Categorical::uniform(2);
        a.step(&[0.0, 0.0], FedExStep::Auto, 0.0);
        a.step(&[1.0, -1.0], FedExStep::Auto, 0.0);
        let e = eta0 / 2f64.sqrt();
        assert!((a.probs()[0] - 1.0 / (1.0 + (2.0 * e).exp())).abs() < 1e-12);
        // A confident θ freezes and stops moving.
        let mut f = Categorical::uniform(2);
        f.step(&[100.0, -100.0], FedExStep::Constant, 1e-4);
        assert!(f.frozen, "entropy {}", f.entropy());
        let before = f.z.clone();
        f.step(&[-100.0, 100.0], FedExStep::Constant, 1e-4);
        assert_eq!(f.z, before);
    }

    #[test]
    fn fedex_draws_follow_theta_and_the_seed() {
        let mut f = FedEx::new(FedExConfig {
            rates: vec![0.01, 0.1],
            epochs: vec![1, 2, 3],
            ..Default::default()
        });
        let info = ClientInfo::new(4, 10, 2);
        let base = crate::policies::base_plan();
        let mut p1 = base.clone();
        f.plan(3, &info, &no_pool(), 7, &mut p1).unwrap();
        let mut p2 = base.clone();
        f.plan(3, &info, &no_pool(), 7, &mut p2).unwrap();
        assert_eq!(p1, p2, "same seed, round and client: same draw");
        assert!([0.01f32, 0.1].contains(&p1.base_lr));
        assert!(matches!(p1.work, LocalWork::Epochs(1..=3)));
        // A θ concentrated on one candidate always draws it.
        f.state.clusters.get_mut("all").unwrap().theta[0].z = vec![0.0, f64::NEG_INFINITY];
        for c in 0..20 {
            let mut p = base.clone();
            f.plan(3, &ClientInfo::new(c, 10, 2), &no_pool(), 7, &mut p)
                .unwrap();
            assert_eq!(p.base_lr, 0.01);
        }
    }

    #[test]
    fn fedex_refuses_an_empty_search_naming_the_key() {
        let cfg = FedExConfig {
            rates: Vec::new(),
            ..Default::default()
        };
        let e = cfg
            .validate(&RoundConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("strategy.rates"), "{e}");
        let cfg = FedExConfig {
            epochs: vec![1, 0],
            ..Default::default()
        };
        let e = cfg
            .validate(&RoundConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("strategy.epochs[1] = 0"), "{e}");
    }
}
