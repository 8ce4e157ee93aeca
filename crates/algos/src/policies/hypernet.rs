//! `hypernet` (docs/algorithms.md §D.6): a server hypernetwork from a client's context vector
//! to that client's optimiser parameters — a rate multiplier, per-group multipliers,
//! Adam's β1/β2 and the proximal μ — trained from the clients' loss improvement by a
//! Gaussian score-function estimate on the clients' **validation** loss: every planned
//! client answers the validation probe (`crate::probe`) and the policy reads the signal
//! from its report. Spec and defaults: docs/hypernetworks.md ("The hypernetwork policy").
//!
//! The output layer starts at zero, so until the network has learned something every
//! plan is the base plan (plus the exploration noise ξ).

use crate::hypernet::{normal, Learner, LearnerState, Mlp};
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::rng::{mix64, stream, Purpose};
use fedpace_core::{ClientInfo, ClientPool, Error, RatePlan, RatePolicy, Result, TrainReport};
use fedpace_optim::OptimizerSpec;
use fedpace_params::{l2_norm, ParamSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A part of the context vector (`policy.features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// `ln(n_k / n̄)`.
    LogSize,
    /// Label entropy over `ln C` (needs the shared label histogram).
    LabelEntropy,
    /// The label distribution, C values (needs the shared label histogram).
    LabelHistogram,
    /// `[seen, ln(1 + loss_before), ln(1 + grad_norm)]` of the client's last report.
    History,
}

/// What the network sets (`policy.outputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// The base-rate multiplier.
    Lr,
    /// One multiplier per parameter group (with at least two groups).
    Groups,
    /// β1 and β2 of an Adam-family client optimiser.
    Betas,
    /// The proximal coefficient μ.
    Mu,
}

/// `[policy] name = "hypernet"`: see docs/hypernetworks.md for each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HypernetConfig {
    /// The context vector's parts.
    pub features: Vec<Feature>,
    /// Length of the learned client embedding appended to the context (0: none).
    pub embedding_dim: usize,
    /// Width of the two hidden layers.
    pub hidden: usize,
    /// What the network sets.
    pub outputs: Vec<Output>,
    /// Standard deviation σ of the exploration noise in output space.
    pub sigma: f64,
    /// Adam rate of the network.
    pub lr: f64,
    /// SGD rate of the client embeddings.
    pub embedding_lr: f64,
    /// Global-norm clip of every gradient step.
    pub clip: f64,
    /// Discount of each client's baseline (0: the last signal).
    pub baseline_decay: f64,
    /// Lower clamp of the rate, group and μ multipliers.
    pub min: f64,
    /// Upper clamp of the rate, group and μ multipliers.
    pub max: f64,
    /// μ⁰ when the plan's μ is 0 and `mu` is learned.
    pub mu_init: f64,
}

impl Default for HypernetConfig {
    fn default() -> Self {
        Self {
            features: vec![Feature::LogSize, Feature::History],
            embedding_dim: 4,
            hidden: 64,
            outputs: vec![Output::Lr, Output::Groups],
            sigma: 0.1,
            lr: 1e-3,
            embedding_lr: 1e-2,
            clip: 1.0,
            baseline_decay: 0.5,
            min: 0.1,
            max: 10.0,
            mu_init: 0.01,
        }
    }
}

fn check(ok: bool, key: &str, v: impl ToString, expected: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("policy.{key}"), v, expected))
    }
}

impl HypernetConfig {
    /// Checks ranges; errors name the key under `policy.`.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f64| v.is_finite() && v > 0.0 && (v as f32) > 0.0;
        check(
            !self.features.is_empty() || self.embedding_dim > 0,
            "features",
            "[]",
            "at least one feature, or embedding_dim > 0",
        )?;
        check(
            self.embedding_dim <= 1024,
            "embedding_dim",
            self.embedding_dim,
            "at most 1024",
        )?;
        check(
            (1..=4096).contains(&self.hidden),
            "hidden",
            self.hidden,
            "a width in [1, 4096]",
        )?;
        check(
            !self.outputs.is_empty(),
            "outputs",
            "[]",
            "at least one of \"lr\", \"groups\", \"betas\", \"mu\"",
        )?;
        check(pos(self.sigma), "sigma", self.sigma, "finite and > 0")?;
        check(pos(self.lr), "lr", self.lr, "finite and > 0")?;
        check(
            self.embedding_lr.is_finite() && self.embedding_lr >= 0.0,
            "embedding_lr",
            self.embedding_lr,
            "finite and >= 0",
        )?;
        check(pos(self.clip), "clip", self.clip, "finite and > 0")?;
        check(
            (0.0..1.0).contains(&self.baseline_decay),
            "baseline_decay",
            self.baseline_decay,
            "in [0, 1)",
        )?;
        check(
            pos(self.min),
            "min",
            self.min,
            "a multiplier > 0 that fits an f32",
        )?;
        if !(self.max >= self.min && pos(self.max)) {
            return Err(Error::invalid(
                "policy.max",
                self.max,
                format!("a multiplier >= policy.min ({}) that fits an f32", self.min),
            ));
        }
        check(pos(self.mu_init), "mu_init", self.mu_init, "finite and > 0")?;
        let mut seen = Vec::new();
        for o in &self.outputs {
            check(
                !seen.contains(o),
                "outputs",
                format!("{o:?}").to_lowercase(),
                "each output at most once",
            )?;
            seen.push(*o);
        }
        Ok(())
    }

    /// Whether the policy reads the shared label histogram.
    pub fn needs_histogram(&self) -> bool {
        self.features
            .iter()
            .any(|f| matches!(f, Feature::LabelEntropy | Feature::LabelHistogram))
    }

    /// Why `outputs` cannot be learned for clients running `optimizer`, or `None`.
    pub fn refuses_optimizer(&self, optimizer: &OptimizerSpec) -> Option<String> {
        (self.outputs.contains(&Output::Betas) && !has_betas(optimizer)).then(|| {
            format!(
                "outputs \"betas\" need an optimiser with betas (adam, adamw, amsgrad, yogi), \
                 not {}",
                optimizer.name()
            )
        })
    }

    /// Whether the policy sets μ.
    pub fn sets_prox_mu(&self) -> bool {
        self.outputs.contains(&Output::Mu)
    }

    /// The policy for a model with `groups` parameter groups.
    pub fn build(&self, groups: usize) -> Result<Hypernet> {
        self.validate()?;
        Ok(Hypernet::new(self.clone(), groups))
    }
}

/// Where each learned quantity sits in the output vector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Layout {
    lr: Option<usize>,
    groups: Option<usize>,
    betas: Option<usize>,
    mu: Option<usize>,
    len: usize,
}

impl Layout {
    fn new(outputs: &[Output], groups: usize) -> Self {
        let mut l = Layout::default();
        for o in outputs {
            match o {
                Output::Lr => l.lr = Some(l.len),
                Output::Groups if groups >= 2 => l.groups = Some(l.len),
                Output::Groups => continue,
                Output::Betas => l.betas = Some(l.len),
                Output::Mu => l.mu = Some(l.len),
            }
            l.len += match o {
                Output::Groups => groups,
                Output::Betas => 2,
                _ => 1,
            };
        }
        l
    }
}

/// A planned client's perturbation, kept until its report arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    round: u32,
    input: Vec<f32>,
    xi: Vec<f32>,
}

/// What the policy keeps per client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Memo {
    embedding: Vec<f32>,
    baseline: Option<f64>,
    /// `[ln(1 + loss_before), ln(1 + grad_norm)]` of the last report.
    history: Option<[f32; 2]>,
    pending: Option<Pending>,
}

/// What [`Hypernet::save_state`] encodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    learner: Option<LearnerState>,
    clients: BTreeMap<u64, Memo>,
    scale: Option<f64>,
    #[serde(with = "fedpace_core::ext::f32s")]
    grad: Vec<f32>,
    embedding_grads: BTreeMap<u64, Vec<f32>>,
    grad_count: u32,
    grad_round: u32,
}

const NOISE_TAG: u64 = 0x6879_7065_726e_6574; // "hypernet"
const INIT_TAG: u64 = 0x6879_7065_7269_6e69;

/// The policy (see the module doc).
#[derive(Debug)]
pub struct Hypernet {
    cfg: HypernetConfig,
    groups: usize,
    layout: Layout,
    seed: u64,
    mean_n: f64,
    num_classes: usize,
    mlp: Option<Mlp>,
    learner: Option<Learner>,
    restored: Option<LearnerState>,
    clients: BTreeMap<u64, Memo>,
    scale: Option<f64>,
    grad: Vec<f32>,
    embedding_grads: BTreeMap<u64, Vec<f32>>,
    grad_count: u32,
    grad_round: u32,
}

/// The signal a report gives the policy: the improvement of the client's mean
/// **validation** loss over its round, `L_val(x) − L_val(x + Δ)` (the round's global model
/// against the trained one, from the validation signal in the report's `ext`);
/// `None` without a signal or with an empty validation split. Never the training or test
/// loss (docs/hypernetworks.md).
pub fn improvement(report: &TrainReport) -> Option<f64> {
    let s = report.ext.get::<crate::probe::ValidationSignal>()?;
    let d = s.before.loss() - s.after.loss();
    (report.steps > 0 && s.after.count > 0 && d.is_finite()).then_some(d)
}

fn has_betas(o: &OptimizerSpec) -> bool {
    matches!(
        o,
        OptimizerSpec::Adam { .. }
            | OptimizerSpec::AdamW { .. }
            | OptimizerSpec::Amsgrad { .. }
            | OptimizerSpec::Yogi { .. }
    )
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

impl Hypernet {
    fn new(cfg: HypernetConfig, groups: usize) -> Self {
        let layout = Layout::new(&cfg.outputs, groups);
        Self {
            cfg,
            groups,
            layout,
            seed: 0,
            mean_n: 0.0,
            num_classes: 0,
            mlp: None,
            learner: None,
            restored: None,
            clients: BTreeMap::new(),
            scale: None,
            grad: Vec::new(),
            embedding_grads: BTreeMap::new(),
            grad_count: 0,
            grad_round: 0,
        }
    }

    fn input_len(&self) -> usize {
        let f: usize = self
            .cfg
            .features
            .iter()
            .map(|f| match f {
                Feature::LogSize | Feature::LabelEntropy => 1,
                Feature::LabelHistogram => self.num_classes,
                Feature::History => 3,
            })
            .sum();
        f + self.cfg.embedding_dim
    }

    /// The context vector of a client, its embedding last.
    fn context(&self, c: &ClientInfo) -> Result<Vec<f32>> {
        let mut v = Vec::with_capacity(self.input_len());
        let memo = self.clients.get(&c.id);
        for f in &self.cfg.features {
            match f {
                Feature::LogSize => v.push(if self.mean_n > 0.0 && c.num_train > 0 {
                    (c.num_train as f64 / self.mean_n).ln() as f32
                } else {
                    0.0
                }),
                Feature::LabelEntropy | Feature::LabelHistogram => {
                    let h = c.label_histogram().ok_or_else(|| {
                        Error::invalid(
                            format!("client {} metadata", c.id),
                            "no label histogram",
                            "client.share = [\"label-histogram\"] (policy hypernet reads it)",
                        )
                    })?;
                    if *f == Feature::LabelEntropy {
                        let ln_c = (h.len().max(2) as f64).ln();
                        v.push((c.label_entropy() / ln_c) as f32);
                    } else {
                        if h.len() != self.num_classes {
                            return Err(Error::invalid(
                                format!("client {} label histogram", c.id),
                                format!("{} classes", h.len()),
                                format!("{} classes, as the first client's", self.num_classes),
                            ));
                        }
                        let n = h.iter().sum::<u64>().max(1) as f64;
                        v.extend(h.iter().map(|&x| (x as f64 / n) as f32));
                    }
                }
                Feature::History => match memo.and_then(|m| m.history) {
                    Some([l, g]) => v.extend([1.0, l, g]),
                    None => v.extend([0.0, 0.0, 0.0]),
                },
            }
        }
        match memo {
            Some(m) if m.embedding.len() == self.cfg.embedding_dim => {
                v.extend_from_slice(&m.embedding)
            }
            _ => v.extend(std::iter::repeat_n(0.0, self.cfg.embedding_dim)),
        }
        Ok(v)
    }

    /// Applies the round's summed gradients (mean over reports) to ψ and the embeddings.
    fn apply_gradients(&mut self) -> Result<()> {
        if self.grad_count == 0 {
            return Ok(());
        }
        let Some(learner) = self.learner.as_mut() else {
            return Ok(());
        };
        let n = self.grad_count as f32;
        self.grad.iter_mut().for_each(|g| *g /= n);
        learner.step(&mut self.grad)?;
        self.grad.iter_mut().for_each(|g| *g = 0.0);
        let grads = std::mem::take(&mut self.embedding_grads);
        for (id, mut g) in grads {
            let norm = l2_norm(&g);
            if !norm.is_finite() {
                continue;
            }
            if norm > self.cfg.clip {
                let s = (self.cfg.clip / norm) as f32;
                g.iter_mut().for_each(|x| *x *= s);
            }
            let memo = self.clients.entry(id).or_default();
            if memo.embedding.len() != g.len() {
                memo.embedding = vec![0.0; g.len()];
            }
            let lr = self.cfg.embedding_lr as f32;
            for (e, d) in memo.embedding.iter_mut().zip(&g) {
                *e -= lr * d;
            }
        }
        self.grad_count = 0;
        Ok(())
    }

    /// The network's parameters (for inspection and tests).
    pub fn params(&self) -> Option<&[f32]> {
        self.learner.as_ref().map(|l| l.params.as_slice())
    }
}

impl RatePolicy for Hypernet {
    fn describe(&self) -> String {
        format!(
            "hypernet(outputs={:?}, features={:?}, embedding={}, hidden={}, σ={}, lr={}, \
             signal=validation loss)",
            self.cfg.outputs,
            self.cfg.features,
            self.cfg.embedding_dim,
            self.cfg.hidden,
            self.cfg.sigma,
            self.cfg.lr
        )
    }

    fn seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    fn start(&mut self, pool: &dyn ClientPool) -> Result<()> {
        self.mean_n = pool.total_train()? as f64 / pool.len().max(1) as f64;
        if self.cfg.features.contains(&Feature::LabelHistogram) && !pool.is_empty() {
            self.num_classes = pool
                .info(pool.id_at(0))?
                .label_histogram()
                .map_or(0, <[u64]>::len);
        }
        if self.learner.is_none() {
            let mlp = Mlp::relu(
                self.input_len(),
                &[self.cfg.hidden, self.cfg.hidden],
                self.layout.len,
            )?;
            let spec = Arc::new(
                mlp.add_to_spec(ParamSpec::builder(), "", "hypernet")
                    .build()
                    .map_err(|e| Error::invalid("hypernetwork", e, "a valid layout"))?,
            );
            let mut params = vec![0f32; mlp.len()];
            let mut rng = stream(self.seed ^ mix64(INIT_TAG), 0, 0, Purpose::Algorithm);
            mlp.init_default(&mut params, &mut rng);
            mlp.zero_last(&mut params);
            let adam = OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            };
            self.learner = Some(Learner::new(
                spec,
                params,
                adam,
                vec![self.cfg.lr as f32],
                Some(self.cfg.clip),
            )?);
            if self.grad.is_empty() {
                self.grad = vec![0.0; mlp.len()];
            }
            self.mlp = Some(mlp);
        }
        if let (Some(s), Some(l)) = (self.restored.take(), self.learner.as_mut()) {
            l.restore(s)?;
        }
        if self.grad.len() != self.mlp.as_ref().map_or(0, Mlp::len) {
            return Err(Error::invalid(
                "hypernet state",
                format!("a gradient of {} values", self.grad.len()),
                "one value per parameter of the configured network",
            ));
        }
        Ok(())
    }

    fn plan(&mut self, round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        if round > self.grad_round {
            self.apply_gradients()?;
        }
        let (Some(mlp), Some(learner)) = (self.mlp.as_ref(), self.learner.as_ref()) else {
            return Err(Error::invalid(
                "policy hypernet",
                "not started",
                "start(pool) before the first plan",
            ));
        };
        let input = self.context(client)?;
        let out = mlp.forward(&learner.params, &input).output().to_vec();
        let mut rng = stream(
            self.seed ^ mix64(NOISE_TAG),
            round as u64,
            client.id,
            Purpose::Algorithm,
        );
        let xi: Vec<f32> = (0..out.len())
            .map(|_| (self.cfg.sigma * normal(&mut rng)) as f32)
            .collect();
        let o = |i: usize| (out[i] + xi[i]) as f64;
        let (lo, hi) = (self.cfg.min, self.cfg.max);
        let mut p = base.clone();
        if let Some(i) = self.layout.lr {
            p.base_lr = (base.base_lr as f64 * o(i).exp().clamp(lo, hi)) as f32;
        }
        if let Some(i) = self.layout.groups {
            p.group_multipliers = (0..self.groups)
                .map(|g| {
                    let m = base.group_multipliers.get(g).copied().unwrap_or(1.0) as f64;
                    (m * o(i + g).exp().clamp(lo, hi)) as f32
                })
                .collect();
        }
        if let Some(i) = self.layout.betas {
            let set = |b: f64, d: f64| sigmoid(logit(b) + d).clamp(0.0, 0.9999);
            match &mut p.optimizer {
                OptimizerSpec::Adam { beta1, beta2, .. }
                | OptimizerSpec::AdamW { beta1, beta2, .. }
                | OptimizerSpec::Amsgrad { beta1, beta2, .. }
                | OptimizerSpec::Yogi { beta1, beta2, .. } => {
                    *beta1 = set(*beta1, o(i));
                    *beta2 = set(*beta2, o(i + 1));
                }
                other => {
                    return Err(Error::invalid(
                        "policy.outputs",
                        "\"betas\"",
                        format!(
                            "an optimiser with betas (adam, adamw, amsgrad, yogi); the clients \
                             run {}",
                            other.name()
                        ),
                    ))
                }
            }
        }
        if let Some(i) = self.layout.mu {
            let mu0 = if base.prox_mu > 0.0 {
                base.prox_mu
            } else {
                self.cfg.mu_init
            };
            p.prox_mu = mu0 * o(i).exp().clamp(lo, hi);
        }
        self.clients.entry(client.id).or_default().pending = Some(Pending { round, input, xi });
        Ok(p)
    }

    fn observe(&mut self, round: u32, client: &ClientInfo, report: &TrainReport) {
        let memo = self.clients.entry(client.id).or_default();
        if report.steps > 0 && report.loss_before.is_finite() && report.grad_norm.is_finite() {
            memo.history = Some([
                (report.loss_before as f64).max(0.0).ln_1p() as f32,
                report.grad_norm.max(0.0).ln_1p() as f32,
            ]);
        }
        let Some(pending) = memo.pending.take_if(|p| p.round == round) else {
            return;
        };
        let Some(signal) = improvement(report).map(|d| -d) else {
            return;
        };
        let baseline = memo.baseline;
        let d = self.cfg.baseline_decay;
        memo.baseline = Some(match baseline {
            Some(b) => d * b + (1.0 - d) * signal,
            None => signal,
        });
        let Some(b) = baseline else {
            return;
        };
        let adv = signal - b;
        let s = match self.scale {
            Some(s) => 0.9 * s + 0.1 * adv.abs(),
            None => adv.abs(),
        };
        self.scale = Some(s);
        if s <= 0.0 || !s.is_finite() {
            return;
        }
        let (Some(mlp), Some(learner)) = (self.mlp.as_ref(), self.learner.as_ref()) else {
            return;
        };
        let sigma = self.cfg.sigma as f32;
        let a = (adv / s) as f32;
        let d_out: Vec<f32> = pending.xi.iter().map(|x| a * x / sigma).collect();
        let tape = mlp.forward(&learner.params, &pending.input);
        let d_in = mlp.backward(&learner.params, &tape, &d_out, &mut self.grad);
        if self.cfg.embedding_dim > 0 {
            let e = &d_in[d_in.len() - self.cfg.embedding_dim..];
            let acc = self
                .embedding_grads
                .entry(client.id)
                .or_insert_with(|| vec![0.0; e.len()]);
            acc.iter_mut().zip(e).for_each(|(a, b)| *a += b);
        }
        self.grad_count += 1;
        self.grad_round = round;
    }

    fn reads_validation(&self) -> bool {
        true
    }

    fn required_metadata(&self) -> Vec<&'static str> {
        if self.cfg.needs_histogram() {
            vec![<fedpace_core::LabelHistogram as fedpace_core::Payload>::NAME]
        } else {
            Vec::new()
        }
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&State {
            learner: self
                .learner
                .as_ref()
                .map(Learner::save)
                .or_else(|| self.restored.clone()),
            clients: self.clients.clone(),
            scale: self.scale,
            grad: self.grad.clone(),
            embedding_grads: self.embedding_grads.clone(),
            grad_count: self.grad_count,
            grad_round: self.grad_round,
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: State = from_cbor(bytes, "hypernet state")?;
        match (self.learner.as_mut(), s.learner) {
            (Some(l), Some(ls)) => l.restore(ls)?,
            (None, ls) => self.restored = ls,
            (Some(_), None) => {}
        }
        self.clients = s.clients;
        self.scale = s.scale;
        self.grad = s.grad;
        self.embedding_grads = s.embedding_grads;
        self.grad_count = s.grad_count;
        self.grad_round = s.grad_round;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    fn adam_plan() -> RatePlan {
        let mut p = base_plan();
        p.optimizer = OptimizerSpec::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        p.group_multipliers = vec![1.0, 2.0];
        p
    }

    /// A report whose validation signal has mean loss `before` at the global model and
    /// `after` at the trained one (one sample each, so the means are exact); its
    /// training losses are something else, which the policy must not learn from.
    fn report(before: f32, after: f32) -> TrainReport {
        let stats = |l: f32| fedpace_core::EvalStats {
            loss_sum: l as f64,
            correct: 0,
            count: 1,
        };
        let mut r = TrainReport {
            steps: 3,
            loss_before: before,
            loss_after: after - 3.0,
            grad_norm: 1.0,
            ..Default::default()
        };
        r.ext.insert(crate::probe::ValidationSignal {
            before: stats(before),
            after: stats(after),
            hypergradient: None,
            group_hypergradients: Vec::new(),
        });
        r
    }

    fn started(cfg: HypernetConfig) -> (Hypernet, Vec<ClientInfo>) {
        let pool: Vec<ClientInfo> = (0..3)
            .map(|i| info(i, 10 * (i + 1), vec![i + 1, 3], None))
            .collect();
        let mut h = cfg.build(2).unwrap();
        h.seed(5);
        h.start(&pool).unwrap();
        (h, pool)
    }

    #[test]
    fn config_parses_with_defaults_and_names_bad_keys() {
        let c: crate::PolicyConfig = serde_json::from_str(r#"{"name": "hypernet"}"#).unwrap();
        assert_eq!(c, crate::PolicyConfig::Hypernet(HypernetConfig::default()));
        let c: crate::PolicyConfig = serde_json::from_str(
            r#"{"name": "hypernet", "outputs": ["lr", "betas", "mu"], "sigma": 0.2}"#,
        )
        .unwrap();
        assert!(c.sets_prox_mu());
        let e = serde_json::from_str::<crate::PolicyConfig>(r#"{"name": "hypernet", "sgima": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sgima`"), "{e}");
        let bad = HypernetConfig {
            outputs: vec![Output::Lr, Output::Lr],
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "policy.outputs = lr: each output at most once"
        );
    }

    #[test]
    fn first_plans_are_the_base_plan_up_to_the_exploration_noise() {
        let cfg = HypernetConfig {
            outputs: vec![Output::Lr, Output::Groups, Output::Betas, Output::Mu],
            ..Default::default()
        };
        let (mut h, pool) = started(cfg);
        let base = adam_plan();
        let p = h.plan(1, &pool[0], &base).unwrap();
        let xi = h.clients[&0].pending.as_ref().unwrap().xi.clone();
        assert_eq!(xi.len(), 1 + 2 + 2 + 1);
        // Output 0 at the start: every value is the base value moved by its ξ alone.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
        assert!(close(p.base_lr as f64, 0.1 * (xi[0] as f64).exp()));
        assert!(close(
            p.group_multipliers[1] as f64,
            2.0 * (xi[2] as f64).exp()
        ));
        let OptimizerSpec::Adam { beta1, .. } = p.optimizer else {
            panic!()
        };
        assert!(close(beta1, sigmoid(logit(0.9) + xi[3] as f64)));
        assert!(close(p.prox_mu, 0.01 * (xi[5] as f64).exp()));
        // The same (seed, round, client) draws the same ξ; another client another.
        let mut h2 = started(HypernetConfig {
            outputs: vec![Output::Lr, Output::Groups, Output::Betas, Output::Mu],
            ..Default::default()
        })
        .0;
        assert_eq!(h2.plan(1, &pool[0], &base).unwrap(), p);
        assert_ne!(h2.plan(1, &pool[1], &base).unwrap().base_lr, p.base_lr);
    }

    #[test]
    fn betas_with_sgd_clients_are_refused_in_one_line() {
        let (mut h, pool) = started(HypernetConfig {
            outputs: vec![Output::Betas],
            ..Default::default()
        });
        let e = h.plan(1, &pool[0], &base_plan()).unwrap_err().to_string();
        assert_eq!(
            e,
            "policy.outputs = \"betas\": an optimiser with betas (adam, adamw, amsgrad, yogi); \
             the clients run sgd"
        );
    }

    /// Issue 12: the policy learns from the clients' validation signal only. A report
    /// with training losses but no validation signal teaches it nothing; with one, the
    /// validation losses set the baseline: ℓ = −(1.0 − 0.5) = −0.5, where the training
    /// losses of the same report (1.0 and −2.5) would give −3.5.
    #[test]
    fn learns_from_the_validation_signal_never_from_training_losses() {
        let cfg = HypernetConfig {
            outputs: vec![Output::Lr],
            features: vec![Feature::LogSize],
            embedding_dim: 0,
            hidden: 4,
            ..Default::default()
        };
        let (mut h, pool) = started(cfg);
        assert!(h.reads_validation());
        let base = base_plan();
        h.plan(1, &pool[0], &base).unwrap();
        let mut no_signal = report(1.0, 0.5);
        no_signal.ext = fedpace_core::Extensions::new();
        h.observe(1, &pool[0], &no_signal);
        assert_eq!(h.clients[&0].baseline, None);
        h.plan(2, &pool[0], &base).unwrap();
        h.observe(2, &pool[0], &report(1.0, 0.5));
        assert_eq!(h.clients[&0].baseline, Some(-0.5));
    }

    /// The score-function step by hand: with the output layer at zero, the gradient of the
    /// output layer's bias is the output gradient itself, `((ℓ − b)/s)·ξ/σ`, and with
    /// |ℓ − b| = s (the first advantage sets the scale) that is `sign(ℓ − b)·ξ/σ`; Adam's
    /// first step moves each bias by `−lr·sign(gradient)`.
    #[test]
    fn score_function_gradient_by_hand_moves_the_rate_against_a_worse_perturbation() {
        let cfg = HypernetConfig {
            outputs: vec![Output::Lr],
            features: vec![Feature::LogSize],
            embedding_dim: 0,
            hidden: 4,
            ..Default::default()
        };
        let (mut h, pool) = started(cfg);
        let base = base_plan();
        // Round 1 sets client 0's baseline ℓ = −(1.0 − 0.5) = −0.5.
        h.plan(1, &pool[0], &base).unwrap();
        h.observe(1, &pool[0], &report(1.0, 0.5));
        assert_eq!(h.grad_count, 0, "a first report only sets the baseline");
        // Round 2: improvement 0.2 → ℓ = −0.2, advantage +0.3 (worse than the baseline).
        h.plan(2, &pool[0], &base).unwrap();
        let xi = h.clients[&0].pending.as_ref().unwrap().xi[0];
        h.observe(2, &pool[0], &report(1.0, 0.8));
        assert_eq!(h.grad_count, 1);
        let n = h.grad.len();
        let bias_grad = h.grad[n - 1];
        assert!(
            (bias_grad - xi / 0.1).abs() < 1e-5,
            "{bias_grad} vs {}",
            xi / 0.1
        );
        let bias_before = h.params().unwrap()[n - 1];
        assert_eq!(bias_before, 0.0);
        // Round 3's first plan applies the step: the bias moves against ξ.
        h.plan(3, &pool[1], &base).unwrap();
        let bias_after = h.params().unwrap()[n - 1];
        assert!(
            (bias_after + 1e-3 * xi.signum()).abs() < 1e-6,
            "{bias_after} after ξ = {xi}"
        );
    }

    /// The whole rule against `tests/golden/hypernetworks.py` ("hypernet"): baselines, the
    /// running scale, the score-function gradient back-propagated into ψ and the
    /// embeddings, the mean over a round's reports, the clip, Adam on ψ and SGD on the
    /// embeddings — two steps, the second through the network the first one moved.
    #[test]
    fn score_function_steps_match_the_derivation_script() {
        use crate::hypernet::golden::{assert_close, case, floats};
        let g = case("hypernet");
        let cfg = HypernetConfig {
            features: vec![Feature::LogSize],
            embedding_dim: 1,
            hidden: 3,
            outputs: vec![Output::Lr, Output::Groups],
            sigma: 0.1,
            lr: 0.01,
            embedding_lr: 0.05,
            clip: 1.0,
            baseline_decay: 0.5,
            ..Default::default()
        };
        let pool = vec![info(0, 10, vec![], None), info(1, 30, vec![], None)];
        let mut h = cfg.build(2).unwrap();
        h.seed(5);
        h.start(&pool).unwrap();
        h.learner.as_mut().unwrap().params = floats(&g["psi0"]);
        let reports = [
            [(2.0, 1.5), (1.0, 0.9)],
            [(2.0, 1.2), (1.0, 0.95)],
            [(1.8, 1.5), (1.0, 0.7)],
        ];
        let base = adam_plan();
        for round in 1..=4u32 {
            for c in &pool {
                h.plan(round, c, &base).unwrap();
                let pending = h.clients.get_mut(&c.id).unwrap().pending.as_mut().unwrap();
                if round == 2 {
                    assert_close(
                        "context",
                        &pending.input,
                        &serde_json::json!([g["logsize"][c.id as usize], 0.0]),
                        1e-6,
                    );
                }
                if let Some(xi) = g["xi"][round.to_string()].get(c.id.to_string()) {
                    pending.xi = floats(xi);
                }
            }
            if round >= 3 {
                // The first plan of the round applied the previous round's gradients.
                let s = &g["steps"][round as usize - 3];
                assert_eq!(s["after_round"], round - 1);
                assert_close("ψ", h.params().unwrap(), &s["psi"], 1e-5);
                let e: Vec<f32> = pool.iter().map(|c| h.clients[&c.id].embedding[0]).collect();
                assert_close("embeddings", &e, &s["embeddings"], 1e-5);
                let b: Vec<f32> = pool
                    .iter()
                    .map(|c| h.clients[&c.id].baseline.unwrap() as f32)
                    .collect();
                assert_close("baselines", &b, &s["baselines"], 1e-6);
                assert_close(
                    "scale",
                    &[h.scale.unwrap() as f32],
                    &serde_json::json!([s["scale"]]),
                    1e-6,
                );
            }
            if let Some(r) = reports.get(round as usize - 1) {
                for (c, (before, after)) in pool.iter().zip(r) {
                    h.observe(round, c, &report(*before, *after));
                }
            }
        }
    }

    #[test]
    fn state_round_trips_and_a_restored_policy_plans_the_same() {
        let cfg = HypernetConfig {
            outputs: vec![Output::Lr, Output::Groups],
            features: vec![Feature::LogSize, Feature::LabelHistogram, Feature::History],
            ..Default::default()
        };
        let (mut a, pool) = started(cfg.clone());
        let base = adam_plan();
        for round in 1..=4u32 {
            for c in &pool {
                a.plan(round, c, &base).unwrap();
                a.observe(round, c, &report(1.0, 0.9 - 0.1 * (round % 3) as f32));
            }
        }
        let bytes = a.save_state().unwrap();
        // Restored before start, as a resumed pipeline does.
        let mut b = cfg.build(2).unwrap();
        b.seed(5);
        b.restore_state(&bytes).unwrap();
        b.start(&pool).unwrap();
        assert!(
            b.save_state().unwrap() == bytes,
            "the restored state differs"
        );
        for c in &pool {
            assert_eq!(a.plan(5, c, &base).unwrap(), b.plan(5, c, &base).unwrap());
        }
        assert_ne!(
            a.params().unwrap().iter().map(|v| v.abs()).sum::<f32>(),
            0.0
        );
    }
}
