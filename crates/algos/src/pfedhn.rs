//! pFedHN (Shamsian et al., ICML 2021; docs/algorithms.md §D.4): a server hypernetwork
//! generates each client's whole model from a learned client embedding, and learns from
//! the clients' returned updates — the model-generating baseline of the hypernetwork
//! rate policy. Spec, what differs from the paper and costs: docs/hypernetworks.md
//! ("pFedHN").
//!
//! pFedHN is its own [`Strategy`] rather than hooks on the FedAvg pipeline: nothing is
//! averaged. Clients run the standard local loop from their generated model (their
//! instruction's `params`); evaluation instructions carry each client's generated model
//! ([`PfedhnModel`], [`Strategy::eval_ext_for`]), which its recipe evaluates.

use crate::aggregate::usable;
use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::fedopt::ServerOptimizerConfig;
use crate::hypernet::{normal, Activation, Learner, LearnerState, Mlp};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::pipeline::{AggregationPath, Settings};
use crate::registry::Algorithms;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::ext::Payload;
use fedpace_core::rng::{mix64, stream, Purpose};
use fedpace_core::{
    AggregateSummary, ClientAggregate, ClientId, ClientPool, Error, EvalIns, Extensions,
    LocalState, RatePlan, RatePolicy, Reply, Result, RoundSummary, Strategy, TrainIns, TrainRes,
};
use fedpace_optim::{OptimizerSpec, StateMode};
use fedpace_params::{l2_norm, ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `pfedhn`: the paper's defaults (its reference code's command-line defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PFedHnConfig {
    /// Embedding length e (0: the paper's `1 + N/4`, N = clients in the pool).
    pub embedding_dim: usize,
    /// Hidden width h of the hypernetwork (default 100).
    pub hidden: usize,
    /// Hidden blocks `ReLU → Linear(h, h)` after the first layer (default 1).
    pub n_hidden: usize,
    /// SGD rate of the hypernetwork (default 0.01).
    pub lr: f64,
    /// SGD rate of the embeddings (default: `lr`).
    pub embedding_lr: Option<f64>,
    /// Momentum of the hypernetwork's SGD (default 0.9).
    pub momentum: f64,
    /// L2 weight decay of the hypernetwork's SGD (default 1e-3).
    pub weight_decay: f64,
    /// Global-norm clip of each client's gradient (default 50).
    pub clip: f64,
}

impl Default for PFedHnConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 0,
            hidden: 100,
            n_hidden: 1,
            lr: 1e-2,
            embedding_lr: None,
            momentum: 0.9,
            weight_decay: 1e-3,
            clip: 50.0,
        }
    }
}

/// The model the hypernetwork generated for one client, sent with its evaluation
/// instruction (flat, in the model's layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PfedhnModel(#[serde(with = "fedpace_core::ext::f32s::arc")] pub Arc<Vec<f32>>);

impl Payload for PfedhnModel {
    const NAME: &'static str = "pfedhn-model";
    fn heap_bytes(&self) -> usize {
        4 * self.0.len()
    }
}

impl PfedhnModel {
    fn tree(&self, spec: &Arc<ParamSpec>) -> Result<ParamTree> {
        ParamTree::from_vec(spec.clone(), self.0.to_vec()).map_err(|e| {
            Error::invalid(
                "pfedhn-model payload",
                format!("{} values ({e})", self.0.len()),
                format!("the model's {} parameters", spec.total_len()),
            )
        })
    }
}

impl Recipe for PfedhnModel {
    fn payload(&self) -> &'static str {
        Self::NAME
    }
    fn train(
        &self,
        _cx: &mut RecipeCx<'_>,
        _ins: &TrainIns,
        _state: &mut LocalState,
        _reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        Err(Error::invalid(
            "instruction",
            "a pfedhn-model payload in a train instruction",
            "pFedHN's generated model as the instruction's params (the payload is for \
             evaluation)",
        ))
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        match ins.ext.get::<PfedhnModel>() {
            Some(m) => m.tree(ins.params.spec()).map(Some),
            None => Ok(None),
        }
    }
}

fn check(ok: bool, key: &str, v: impl ToString, expected: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("strategy.{key}"), v, expected))
    }
}

impl Algorithm for PFedHnConfig {
    const NAME: &'static str = "pfedhn";
    const UNUSED_ROUND_KEYS: &'static [&'static str] =
        &["server_lr", "normalize", "server_optimizer", "aggregation"];
    fn validate(&self, round: &RoundConfig) -> Result<()> {
        check(
            self.embedding_dim <= 4096,
            "embedding_dim",
            self.embedding_dim,
            "at most 4096 (0: 1 + N/4)",
        )?;
        check(
            (1..=4096).contains(&self.hidden),
            "hidden",
            self.hidden,
            "a width in [1, 4096]",
        )?;
        check(self.n_hidden <= 16, "n_hidden", self.n_hidden, "at most 16")?;
        let pos = |v: f64| v.is_finite() && v > 0.0 && crate::config::fits_f32(v);
        check(pos(self.lr), "lr", self.lr, "finite and > 0")?;
        if let Some(e) = self.embedding_lr {
            check(
                e.is_finite() && e >= 0.0,
                "embedding_lr",
                e,
                "finite and >= 0",
            )?;
        }
        check(
            (0.0..1.0).contains(&self.momentum),
            "momentum",
            self.momentum,
            "in [0, 1)",
        )?;
        check(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight_decay",
            self.weight_decay,
            "finite and >= 0",
        )?;
        check(pos(self.clip), "clip", self.clip, "finite and > 0")?;
        // Unreachable from a config file (the keys are not pfedhn's); built in code.
        if round.server_optimizer != ServerOptimizerConfig::Sgd
            || round.server_lr.is_some()
            || round.aggregation == AggregationPath::Linear
            || round.normalize == crate::Normalize::On
        {
            return Err(Error::invalid(
                "strategy",
                "server_optimizer, server_lr, aggregation or normalize",
                "left out: pfedhn averages no updates (its hypernetwork has its own optimiser: \
                 strategy.lr, momentum, weight_decay)",
            ));
        }
        Ok(())
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        if let Some(p) = c.policy.adjusting_aggregation() {
            return Err(format!(
                "policy {p}: not supported by pfedhn (it scales updates for averaging; pfedhn \
                 averages none)"
            ));
        }
        if c.state_mode == StateMode::ServerInit {
            return Err(format!(
                "{}: not supported by pfedhn (no average of client optimiser states; use reset \
                 or keep)",
                c.state_source
            ));
        }
        Ok(())
    }
    fn register(a: &mut Algorithms) {
        let dummy = PfedhnModel(Arc::new(Vec::new()));
        a.payload::<PfedhnModel>();
        a.parts().add_recipe(dummy);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(PFedHn::new(
            self.clone(),
            cx.settings,
            cx.policy,
        ))))
    }
}

/// The client embeddings with their SGD state. Momentum and weight decay act on every
/// row at every step, as on PyTorch's dense embedding table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Embeddings {
    dim: usize,
    rows: BTreeMap<u64, Vec<f32>>,
    momentum: BTreeMap<u64, Vec<f32>>,
}

const INIT_TAG: u64 = 0x7066_6564_686e_696e; // "pfedhnin"
const EMBED_TAG: u64 = 0x7066_6564_686e_656d;

impl Embeddings {
    /// A client's initial embedding, `N(0, 1)` from `(seed, client)`.
    fn initial(dim: usize, seed: u64, id: u64) -> Vec<f32> {
        let mut rng = stream(seed ^ mix64(EMBED_TAG), 0, id, Purpose::Algorithm);
        (0..dim).map(|_| normal(&mut rng) as f32).collect()
    }

    /// One SGD step (momentum μ, weight decay λ) with gradient `g` on row `id` and 0 on
    /// every other row: `d = g + λ·v`, `b ← μ·b + d`, `v ← v − lr·b`.
    fn step(&mut self, id: u64, g: &[f32], lr: f32, momentum: f32, wd: f32) {
        for (rid, v) in self.rows.iter_mut() {
            let b = self
                .momentum
                .entry(*rid)
                .or_insert_with(|| vec![0.0; v.len()]);
            for j in 0..v.len() {
                let d = if *rid == id { g[j] } else { 0.0 } + wd * v[j];
                b[j] = momentum * b[j] + d;
                v[j] -= lr * b[j];
            }
        }
    }

    fn mean(&self) -> Vec<f32> {
        let mut m = vec![0f64; self.dim];
        for v in self.rows.values() {
            for (a, b) in m.iter_mut().zip(v) {
                *a += *b as f64;
            }
        }
        let n = self.rows.len().max(1) as f64;
        m.into_iter().map(|x| (x / n) as f32).collect()
    }
}

/// The hypernetwork and the embeddings.
#[derive(Debug)]
struct Net {
    mlp: Mlp,
    learner: Learner,
    embeddings: Embeddings,
}

/// What [`PFedHn::save_state`] encodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedState {
    net: Option<(LearnerState, Embeddings)>,
    policy: Vec<u8>,
}

/// The pFedHN strategy (see the module doc).
pub struct PFedHn {
    cfg: PFedHnConfig,
    settings: Settings,
    policy: Box<dyn RatePolicy>,
    net: Option<Net>,
    restored: Option<(LearnerState, Embeddings)>,
    seed: u64,
    started: bool,
    sampled: Vec<ClientId>,
}

impl PFedHn {
    /// The strategy with its settings (sampling, base plan) and rate policy.
    pub fn new(cfg: PFedHnConfig, settings: Settings, policy: Box<dyn RatePolicy>) -> Self {
        Self {
            cfg,
            settings,
            policy,
            net: None,
            restored: None,
            seed: 0,
            started: false,
            sampled: Vec::new(),
        }
    }

    /// Builds the hypernetwork for a pool of `clients` and a model of `d` parameters.
    fn build_net(&self, clients: &[u64], d: usize) -> Result<Net> {
        let e = match self.cfg.embedding_dim {
            0 => 1 + clients.len() / 4,
            e => e,
        };
        let h = self.cfg.hidden;
        let mut sizes = vec![e, h];
        sizes.extend(std::iter::repeat_n(h, self.cfg.n_hidden));
        sizes.push(d);
        let mut acts = vec![Activation::Relu; self.cfg.n_hidden];
        acts.extend([Activation::Identity, Activation::Identity]);
        let mlp = Mlp::new(sizes, acts)?;
        let spec = Arc::new(
            mlp.add_to_spec(ParamSpec::builder(), "", "hypernet")
                .build()
                .map_err(|e| Error::invalid("pfedhn hypernetwork", e, "a valid layout"))?,
        );
        let mut params = vec![0f32; mlp.len()];
        let mut rng = stream(self.seed ^ mix64(INIT_TAG), 0, 0, Purpose::Algorithm);
        mlp.init_default(&mut params, &mut rng);
        let optimizer = OptimizerSpec::Momentum {
            momentum: self.cfg.momentum,
            nesterov: false,
            weight_decay: self.cfg.weight_decay,
        };
        let learner = Learner::new(spec, params, optimizer, vec![self.cfg.lr as f32], None)?;
        let rows = clients
            .iter()
            .map(|&id| (id, Embeddings::initial(e, self.seed, id)))
            .collect();
        Ok(Net {
            mlp,
            learner,
            embeddings: Embeddings {
                dim: e,
                rows,
                momentum: BTreeMap::new(),
            },
        })
    }

    /// The embedding of `id` (its initial value for a client the pool did not have).
    fn embedding(net: &Net, seed: u64, id: u64) -> Vec<f32> {
        net.embeddings
            .rows
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Embeddings::initial(net.embeddings.dim, seed, id))
    }

    /// The model the hypernetwork generates for client `id`.
    pub fn generate(&self, id: ClientId) -> Option<Vec<f32>> {
        let net = self.net.as_ref()?;
        let v = Self::embedding(net, self.seed, id);
        Some(net.mlp.forward(&net.learner.params, &v).output().to_vec())
    }

    /// The paper's update for one client whose update was `delta = θ̃ − θ`:
    /// back-propagates `Δθ = θ − θ̃ = −delta` to the hypernetwork and the client's
    /// embedding, clips both together to `clip`, and takes one SGD step.
    fn learn_from(&mut self, id: ClientId, delta: &[f32]) -> Result<()> {
        let seed = self.seed;
        let (clip, lr_e) = (
            self.cfg.clip,
            self.cfg.embedding_lr.unwrap_or(self.cfg.lr) as f32,
        );
        let (momentum, wd) = (self.cfg.momentum as f32, self.cfg.weight_decay as f32);
        let Some(net) = self.net.as_mut() else {
            return Ok(());
        };
        let v = Self::embedding(net, seed, id);
        net.embeddings.rows.entry(id).or_insert_with(|| v.clone());
        let tape = net.mlp.forward(&net.learner.params, &v);
        let d_out: Vec<f32> = delta.iter().map(|d| -d).collect();
        let mut g = vec![0f32; net.mlp.len()];
        let mut g_v = net.mlp.backward(&net.learner.params, &tape, &d_out, &mut g);
        let norm = (l2_norm(&g).powi(2) + l2_norm(&g_v).powi(2)).sqrt();
        if !norm.is_finite() {
            return Ok(());
        }
        if norm > clip {
            let s = (clip / norm) as f32;
            g.iter_mut().chain(g_v.iter_mut()).for_each(|x| *x *= s);
        }
        net.learner.step(&mut g)?;
        net.embeddings.step(id, &g_v, lr_e, momentum, wd);
        Ok(())
    }
}

impl Strategy for PFedHn {
    fn describe(&self) -> String {
        format!(
            "pfedhn(embedding_dim={}, hidden={}, n_hidden={}, lr={}, momentum={}, \
             weight_decay={}, clip={}, policy={})",
            self.net
                .as_ref()
                .map_or(self.cfg.embedding_dim, |n| n.embeddings.dim),
            self.cfg.hidden,
            self.cfg.n_hidden,
            self.cfg.lr,
            self.cfg.momentum,
            self.cfg.weight_decay,
            self.cfg.clip,
            self.policy.describe()
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        if !self.started {
            self.seed = seed;
            self.policy.seed(seed);
            self.policy.start(pool)?;
            if self.net.is_none() {
                let ids: Vec<u64> = pool.ids().collect();
                self.net = Some(self.build_net(&ids, global.spec().total_len())?);
            }
            if let (Some((l, e)), Some(net)) = (self.restored.take(), self.net.as_mut()) {
                if net.mlp.output() != global.spec().total_len() || e.dim != net.embeddings.dim {
                    return Err(Error::invalid(
                        "pfedhn state",
                        format!(
                            "embeddings of {} for a model of {}",
                            e.dim,
                            net.mlp.output()
                        ),
                        "the configured hypernetwork and model",
                    ));
                }
                net.learner.restore(l)?;
                net.embeddings = e;
            }
            self.started = true;
        }
        self.sampled = self.settings.sampling.sample(pool, round, seed);
        let groups = global.spec().num_groups();
        let mut out = Vec::with_capacity(self.sampled.len());
        for &id in &self.sampled {
            let info = pool.info(id)?;
            let plan = self.policy.plan(round, &info, &self.settings.base_plan)?;
            plan.validate(groups)?;
            let theta = self
                .generate(id)
                .unwrap_or_else(|| global.as_slice().to_vec());
            let params = ParamTree::from_vec(global.spec().clone(), theta)?;
            let mut ins = TrainIns::new(round, Arc::new(params), plan, seed);
            crate::probe::attach_for_policy(self.policy.as_ref(), &mut ins);
            out.push((id, ins));
        }
        Ok(out)
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        let sampled = &self.sampled;
        let accepted = usable(round, replies, |c| sampled.binary_search(&c).is_ok())?;
        for (id, res) in &accepted {
            self.learn_from(*id, res.delta.as_slice())?;
        }
        let before = global.as_slice().to_vec();
        if let Some(net) = &self.net {
            let theta = net.mlp.forward(&net.learner.params, &net.embeddings.mean());
            global.as_mut_slice().copy_from_slice(theta.output());
        }
        let step_norm = before
            .iter()
            .zip(global.as_slice())
            .map(|(a, b)| ((b - a) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        for r in replies {
            if let Ok(res) = &r.result {
                if res.num_examples > 0 {
                    if let Ok(info) = pool.info(r.client) {
                        self.policy.observe(round, &info, &res.report);
                    }
                }
            }
        }
        let w = 1.0 / accepted.len() as f64;
        Ok(AggregateSummary {
            clients: accepted
                .iter()
                .map(|(id, _)| ClientAggregate {
                    client: *id,
                    weight: w,
                    cosine_to_aggregate: 0.0,
                })
                .collect(),
            normalized: false,
            step_norm,
            server_lr: self.cfg.lr,
            ..Default::default()
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.settings.base_plan.clone()
    }

    fn eval_ext_for(&self, client: ClientId) -> Result<Extensions> {
        Ok(match self.generate(client) {
            Some(theta) => Extensions::new().with(PfedhnModel(Arc::new(theta))),
            None => Extensions::new(),
        })
    }

    fn observe_round(&mut self, round: u32, summary: &RoundSummary<'_>) {
        self.policy.observe_round(round, summary);
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&SavedState {
            net: self
                .net
                .as_ref()
                .map(|n| (n.learner.save(), n.embeddings.clone()))
                .or_else(|| self.restored.clone()),
            policy: self.policy.save_state()?,
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: SavedState = from_cbor(bytes, "pfedhn state")?;
        self.policy.restore_state(&s.policy)?;
        self.restored = s.net;
        self.started = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            sampling: crate::Sampling::Count(1),
            server_lr: 1.0,
            normalize: crate::Normalize::Auto,
            aggregation: AggregationPath::PerClient,
            base_plan: crate::policies::base_plan(),
            stages: Default::default(),
        }
    }

    /// e = 1, h = 1, no hidden block: `z = a·v + c`, `θ = w·z + u` (two outputs).
    fn tiny(momentum: f64, weight_decay: f64) -> PFedHn {
        let cfg = PFedHnConfig {
            embedding_dim: 1,
            hidden: 1,
            n_hidden: 0,
            lr: 0.1,
            embedding_lr: Some(0.5),
            momentum,
            weight_decay,
            clip: 1e9,
        };
        let mut s = PFedHn::new(cfg, settings(), Box::new(crate::Constant));
        let mut net = s.build_net(&[0, 1], 2).unwrap();
        // [a, c, w1, w2, u1, u2]
        net.learner.params = vec![2.0, 0.5, 1.0, -3.0, 0.25, 0.0];
        net.embeddings.rows.insert(0, vec![1.5]);
        net.embeddings.rows.insert(1, vec![-1.0]);
        s.net = Some(net);
        s
    }

    /// The paper's rule by hand: client 0 (v = 1.5) gets θ = w·z + u with
    /// z = 2·1.5 + 0.5 = 3.5, θ = [3.75, −10.5]; it returns δ = θ̃ − θ = [0.2, −0.4], so
    /// Δθ = [−0.2, 0.4]. Gradients: ∂u = Δθ = [−0.2, 0.4]; ∂w = Δθ·z = [−0.7, 1.4];
    /// ∂z = w·Δθ = −0.2 − 1.2 = −1.4; ∂a = ∂z·v = −2.1; ∂c = ∂z = −1.4; ∂v = ∂z·a = −2.8.
    /// SGD (first step, momentum has no history): φ ← φ − 0.1·∂φ; v ← v − 0.5·∂v.
    #[test]
    fn pfedhn_update_rule_by_hand_on_a_tiny_hypernetwork() {
        let mut s = tiny(0.9, 0.0);
        assert_eq!(s.generate(0).unwrap(), vec![3.75, -10.5]);
        s.learn_from(0, &[0.2, -0.4]).unwrap();
        let p = &s.net.as_ref().unwrap().learner.params;
        let want = [
            2.0 + 0.21,
            0.5 + 0.14,
            1.0 + 0.07,
            -3.0 - 0.14,
            0.25 + 0.02,
            0.0 - 0.04,
        ];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
        let e = &s.net.as_ref().unwrap().embeddings;
        assert!((e.rows[&0][0] - (1.5 + 0.5 * 2.8)).abs() < 1e-6);
        assert_eq!(
            e.rows[&1][0], -1.0,
            "another client's row: no gradient, no decay"
        );
        // The sign: the generated model moves towards what the client trained.
        let before = [3.75f32, -10.5];
        let after = s.generate(0).unwrap();
        let towards = (after[0] - before[0]) * 0.2 + (after[1] - before[1]) * -0.4;
        assert!(towards > 0.0, "{after:?}");
    }

    /// The rule against `tests/golden/hypernetworks.py` ("pfedhn"): a hypernetwork with a
    /// hidden block (some ReLUs off), three client updates (0, 1, 0) so that momentum,
    /// weight decay on φ and on every embedding row, and the joint clip (third update) all
    /// act; after each: φ, the embedding table and both clients' generated models.
    #[test]
    fn pfedhn_updates_match_the_derivation_script() {
        use crate::hypernet::golden::{assert_close, case, floats};
        let g = case("pfedhn");
        let cfg = PFedHnConfig {
            embedding_dim: 2,
            hidden: 3,
            n_hidden: 1,
            lr: 0.05,
            embedding_lr: Some(0.1),
            momentum: 0.9,
            weight_decay: 1e-3,
            clip: 3.0,
        };
        let mut s = PFedHn::new(cfg, settings(), Box::new(crate::Constant));
        let mut net = s.build_net(&[0, 1], 4).unwrap();
        net.learner.params = floats(&g["phi0"]);
        for id in 0..2u64 {
            net.embeddings
                .rows
                .insert(id, floats(&g["rows0"][id as usize]));
        }
        s.net = Some(net);
        let updates = g["updates"].as_array().unwrap();
        for (i, u) in updates.iter().enumerate() {
            let id = u["client"].as_u64().unwrap();
            s.learn_from(id, &floats(&u["delta"])).unwrap();
            let want = &g["steps"][i];
            let net = s.net.as_ref().unwrap();
            assert_close(
                &format!("φ after update {i}"),
                &net.learner.params,
                &want["phi"],
                1e-5,
            );
            for c in 0..2u64 {
                assert_close(
                    &format!("v_{c} after update {i}"),
                    &net.embeddings.rows[&c],
                    &want["rows"][c as usize],
                    1e-5,
                );
                assert_close(
                    &format!("θ_{c} after update {i}"),
                    &s.generate(c).unwrap(),
                    &want["theta"][c as usize],
                    1e-5,
                );
            }
        }
    }

    /// Weight decay λ and momentum on the whole table, as PyTorch's dense embedding:
    /// every row decays by `lr·λ·v` at every step, and keeps moving with its momentum.
    #[test]
    fn embedding_weight_decay_and_momentum_reach_every_row() {
        let mut s = tiny(0.5, 0.1);
        s.learn_from(0, &[0.0, 0.0]).unwrap();
        // Row 1: d = 0.1·(−1) = −0.1, b = −0.1, v = −1 + 0.5·0.1 = −0.95.
        let r1 = s.net.as_ref().unwrap().embeddings.rows[&1][0];
        assert!((r1 + 0.95).abs() < 1e-6, "{r1}");
        s.learn_from(0, &[0.0, 0.0]).unwrap();
        // d = 0.1·(−0.95) = −0.095, b = 0.5·(−0.1) − 0.095 = −0.145, v = −0.95 + 0.0725.
        let r1 = s.net.as_ref().unwrap().embeddings.rows[&1][0];
        assert!((r1 - (-0.95 + 0.0725)).abs() < 1e-6, "{r1}");
    }

    #[test]
    fn the_clip_bounds_the_joint_gradient() {
        let mut s = tiny(0.0, 0.0);
        s.cfg.clip = 0.1;
        let p0 = s.net.as_ref().unwrap().learner.params.clone();
        s.learn_from(0, &[5.0, -5.0]).unwrap();
        let net = s.net.as_ref().unwrap();
        let dp: f64 = net
            .learner
            .params
            .iter()
            .zip(&p0)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let gv = (net.embeddings.rows[&0][0] - 1.5) as f64 / 0.5;
        // The clipped gradient: ‖Δφ/lr‖² + (Δv/lr_e)² = clip².
        assert!(((dp / 0.01 + gv * gv).sqrt() - 0.1).abs() < 1e-5);
    }
}
