//! FedL2P (Lee et al., NeurIPS 2023, "Federated Learning to Personalize"): a meta-net,
//! run by each client on statistics of its own data, gives the per-group rates of its
//! personalised fine-tuning; it is learned federatedly from the validation loss after
//! fine-tuning. The global model trains as FedAvg (the pipeline's stages) meanwhile.
//! Spec, sources and what differs from the paper: docs/hypernetworks.md ("FedL2P").
//!
//! Server half: [`Fedl2pHooks`] sends the meta-net ([`Fedl2pNet`]) with train and
//! evaluation instructions and takes one optimiser step on the clients' mean
//! meta-gradient ([`Fedl2pGrad`]) after aggregation. Client half: the [`Fedl2p`] recipe —
//! the standard local round, then the meta-step — and its fine-tuning plan at evaluation
//! ([`Recipe::finetune_plan`]).

use crate::config::{Algorithm, BuildCx, Built, RoundConfig};
use crate::hypernet::{Learner, LearnerState, Mlp, Tape};
use crate::local::{
    evaluate_on, local_train_controlled, run_local, GradientCorrection, EVAL_BATCH,
};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::pipeline::{AfterAggregate, Pipeline, ServerHooks};
use crate::registry::Algorithms;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::ext::Payload;
use fedpace_core::rng::{mix64, stream, Purpose};
use fedpace_core::{
    Dataset, Error, EvalIns, Extensions, Inputs, LocalState, LocalWork, Model, RatePlan, Result,
    TrainIns,
};
use fedpace_optim::OptimizerSpec;
use fedpace_params::{ParamSpec, ParamTree};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::Arc;

/// `fedl2p`: see docs/hypernetworks.md for each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fedl2pConfig {
    /// Fine-tuning steps of the meta-step (set it to `[eval] finetune_steps`; default 5).
    pub meta_steps: u32,
    /// Width of the meta-net's two hidden layers (default 100, the paper's).
    pub hidden: usize,
    /// Rate of the meta-net's optimiser (default 0.01).
    pub meta_lr: f64,
    /// The meta-net's optimiser (default Adam).
    pub meta_optimizer: OptimizerSpec,
    /// Element-wise clamp of each client's meta-gradient (default 1, the paper's).
    pub clip: f64,
    /// Lower clamp of a learned rate multiplier (default 0.01).
    pub min: f64,
    /// Upper clamp of a learned rate multiplier (default 100).
    pub max: f64,
    /// First round with meta-steps (default 1).
    pub meta_from_round: u32,
}

impl Default for Fedl2pConfig {
    fn default() -> Self {
        Self {
            meta_steps: 5,
            hidden: 100,
            meta_lr: 0.01,
            meta_optimizer: OptimizerSpec::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            clip: 1.0,
            min: 0.01,
            max: 100.0,
            meta_from_round: 1,
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

/// Statistics before the per-group ones: `ln n`, input mean, input std, label entropy
/// over `ln C`, `ln` of the global model's training loss.
const FIXED_STATS: usize = 5;

/// The meta-net for `groups` parameter groups.
fn meta_net(hidden: usize, groups: usize) -> Result<Mlp> {
    Mlp::relu(FIXED_STATS + groups, &[hidden, hidden], groups)
}

impl Algorithm for Fedl2pConfig {
    const NAME: &'static str = "fedl2p";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        check(
            (1..=100_000).contains(&self.meta_steps),
            "meta_steps",
            self.meta_steps,
            "in [1, 100000]",
        )?;
        check(
            (1..=4096).contains(&self.hidden),
            "hidden",
            self.hidden,
            "a width in [1, 4096]",
        )?;
        let pos = |v: f64| v.is_finite() && v > 0.0 && crate::config::fits_f32(v);
        check(pos(self.meta_lr), "meta_lr", self.meta_lr, "finite and > 0")?;
        self.meta_optimizer
            .validate()
            .map_err(|e| Error::invalid("strategy.meta_optimizer", e, "a valid optimiser"))?;
        check(pos(self.clip), "clip", self.clip, "finite and > 0")?;
        check(
            pos(self.min),
            "min",
            self.min,
            "a multiplier > 0 that fits an f32",
        )?;
        if !(self.max >= self.min && pos(self.max)) {
            return Err(Error::invalid(
                "strategy.max",
                self.max,
                format!(
                    "a multiplier >= strategy.min ({}) that fits an f32",
                    self.min
                ),
            ));
        }
        check(
            self.meta_from_round >= 1,
            "meta_from_round",
            self.meta_from_round,
            "a round >= 1",
        )
    }
    fn register(a: &mut Algorithms) {
        a.payload::<Fedl2pNet>()
            .payload::<Fedl2pGrad>()
            .payload::<Fedl2pReport>();
        a.parts().add_recipe(Fedl2p);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        Ok(Built::Sync(Box::new(
            Pipeline::new(
                Self::NAME,
                cx.settings,
                cx.policy,
                Box::new(Fedl2pHooks::new(self.clone())),
            )
            .with_server(cx.server),
        )))
    }
}

/// The meta-net sent to clients, with what they need to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fedl2pNet {
    /// Hidden width.
    pub hidden: u32,
    /// Parameters (layout of `Mlp::relu(5 + G, [h, h], G)`).
    #[serde(with = "fedpace_core::ext::f32s::arc")]
    pub params: Arc<Vec<f32>>,
    /// Fine-tuning steps of the meta-step.
    pub meta_steps: u32,
    /// Clamp of the multipliers.
    pub min: f32,
    /// Clamp of the multipliers.
    pub max: f32,
    /// Element-wise clamp of the meta-gradient.
    pub clip: f32,
    /// Whether the client takes a meta-step this round (false in evaluation).
    pub meta_step: bool,
}

impl Payload for Fedl2pNet {
    const NAME: &'static str = "fedl2p-net";
    fn heap_bytes(&self) -> usize {
        4 * self.params.len()
    }
}

/// A client's meta-gradient and its weight (validation samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fedl2pGrad {
    /// Hidden width of the net it is the gradient of.
    pub hidden: u32,
    /// ∂L_val/∂λ, clamped element-wise.
    #[serde(with = "fedpace_core::ext::f32s")]
    pub grad: Vec<f32>,
    /// Validation samples.
    pub weight: f64,
}

impl Payload for Fedl2pGrad {
    const NAME: &'static str = "fedl2p-grad";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        let want = meta_net(self.hidden as usize, spec.num_groups()).map_or(0, |m| m.len());
        if self.grad.len() != want {
            return Err(format!(
                "{} values for a meta-net of {want} parameters",
                self.grad.len()
            ));
        }
        let finite = self.weight.is_finite() && self.grad.iter().all(|g| g.is_finite());
        if !(finite && self.weight >= 0.0) {
            return Err("values and weight must be finite (weight >= 0)".into());
        }
        Ok(())
    }
    fn heap_bytes(&self) -> usize {
        4 * self.grad.len()
    }
}

/// What a client's meta-step saw and did, in its report (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fedl2pReport {
    /// The per-group rate multipliers r_g it fine-tuned with.
    pub multipliers: Vec<f32>,
    /// Validation loss of the global model.
    pub val_loss_before: f64,
    /// Validation loss after fine-tuning.
    pub val_loss_after: f64,
    /// ∂L_val/∂ln r_g.
    pub hypergrad: Vec<f32>,
    /// The meta-net's input (the client's statistics).
    pub stats: Vec<f32>,
    /// Where the validation loss comes from: `"validation"` (the client's validation
    /// split), or `"train-stand-in"` (the training split: the client has none).
    pub signal: String,
}

impl Payload for Fedl2pReport {
    const NAME: &'static str = "fedl2p-report";
}

/// The server half: the meta-net and its optimiser.
pub struct Fedl2pHooks {
    cfg: Fedl2pConfig,
    groups: usize,
    mlp: Option<Mlp>,
    learner: Option<Learner>,
    restored: Option<LearnerState>,
    /// The parameters as sent this round (shared by every instruction).
    sent: Option<Arc<Vec<f32>>>,
}

const INIT_TAG: u64 = 0x6665_646c_3270_696e; // "fedl2pin"
const META_TAG: u64 = 0x6665_646c_3270_6d73;

impl Fedl2pHooks {
    /// Hooks for `cfg`.
    pub fn new(cfg: Fedl2pConfig) -> Self {
        Self {
            cfg,
            groups: 0,
            mlp: None,
            learner: None,
            restored: None,
            sent: None,
        }
    }

    /// The meta-net's parameters (for inspection and tests).
    pub fn params(&self) -> Option<&[f32]> {
        self.learner.as_ref().map(|l| l.params.as_slice())
    }

    /// Builds the learner at the first instruction, from the run seed (parameters
    /// restored from a checkpoint replace the fresh ones).
    fn ensure(&mut self, seed: u64) -> Result<()> {
        if self.learner.is_some() {
            return Ok(());
        }
        let Some(mlp) = self.mlp.as_ref() else {
            return Err(Error::invalid(
                "fedl2p",
                "not started",
                "start before attach",
            ));
        };
        let spec = Arc::new(
            mlp.add_to_spec(ParamSpec::builder(), "", "meta-net")
                .build()
                .map_err(|e| Error::invalid("fedl2p meta-net", e, "a valid layout"))?,
        );
        let mut params = vec![0f32; mlp.len()];
        let mut rng = stream(seed ^ mix64(INIT_TAG), 0, 0, Purpose::Algorithm);
        mlp.init_default(&mut params, &mut rng);
        mlp.zero_last(&mut params);
        let mut l = Learner::new(
            spec,
            params,
            self.cfg.meta_optimizer,
            vec![self.cfg.meta_lr as f32],
            None,
        )?;
        if let Some(s) = self.restored.take() {
            l.restore(s)?;
        }
        self.learner = Some(l);
        Ok(())
    }

    fn payload(&mut self, meta_step: bool) -> Option<Fedl2pNet> {
        let l = self.learner.as_ref()?;
        let params = self
            .sent
            .get_or_insert_with(|| Arc::new(l.params.clone()))
            .clone();
        Some(Fedl2pNet {
            hidden: self.cfg.hidden as u32,
            params,
            meta_steps: self.cfg.meta_steps,
            min: self.cfg.min as f32,
            max: self.cfg.max as f32,
            clip: self.cfg.clip as f32,
            meta_step,
        })
    }
}

impl ServerHooks for Fedl2pHooks {
    fn describe(&self) -> String {
        format!(
            "meta_steps={}, hidden={}, meta_lr={}, from_round={}, signal=validation split \
             (training split where a client has none)",
            self.cfg.meta_steps, self.cfg.hidden, self.cfg.meta_lr, self.cfg.meta_from_round
        )
    }
    fn start(&mut self, global: &ParamTree) -> Result<()> {
        let groups = global.spec().num_groups();
        if self.mlp.is_none() || self.groups != groups {
            self.groups = groups;
            self.mlp = Some(meta_net(self.cfg.hidden, groups)?);
        }
        Ok(())
    }
    fn attach(&mut self, round: u32, ins: &mut TrainIns) -> Result<()> {
        self.ensure(ins.seed)?;
        if round >= self.cfg.meta_from_round {
            if let Some(p) = self.payload(true) {
                ins.ext.insert(p);
            }
        }
        Ok(())
    }
    fn after_aggregate(&mut self, cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        let Some(l) = self.learner.as_mut() else {
            return Ok(None);
        };
        let n = l.params.len();
        let mut sum = vec![0f64; n];
        let mut total = 0.0;
        for (id, r) in cx.accepted {
            let Some(g) = r.ext.get::<Fedl2pGrad>() else {
                continue;
            };
            if g.grad.len() != n {
                return Err(Error::invalid(
                    format!("client {id}'s fedl2p-grad"),
                    format!("{} values", g.grad.len()),
                    format!("{n} (the server's meta-net)"),
                ));
            }
            for (s, v) in sum.iter_mut().zip(&g.grad) {
                *s += g.weight * *v as f64;
            }
            total += g.weight;
        }
        if total > 0.0 {
            let mut mean: Vec<f32> = sum.iter().map(|s| (s / total) as f32).collect();
            l.step(&mut mean)?;
            self.sent = None;
        }
        Ok(None)
    }
    fn eval_ext(&self) -> Extensions {
        match self.learner.as_ref() {
            Some(l) => Extensions::new().with(Fedl2pNet {
                hidden: self.cfg.hidden as u32,
                params: Arc::new(l.params.clone()),
                meta_steps: self.cfg.meta_steps,
                min: self.cfg.min as f32,
                max: self.cfg.max as f32,
                clip: self.cfg.clip as f32,
                meta_step: false,
            }),
            None => Extensions::new(),
        }
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(
            &self
                .learner
                .as_ref()
                .map(Learner::save)
                .or_else(|| self.restored.clone()),
        )
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: Option<LearnerState> = from_cbor(bytes, "fedl2p state")?;
        match (self.learner.as_mut(), s) {
            (Some(l), Some(s)) => l.restore(s)?,
            (_, s) => self.restored = s,
        }
        self.sent = None;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------------------------------
// Client side.

/// The split the meta-objective is computed on: the client's validation split
/// (`data.validation_fraction > 0`), or, without one (or an empty one), the training split
/// as a **stand-in**, as the reference code does (docs/hypernetworks.md).
fn validation_split(cx: &RecipeCx<'_>) -> (Arc<dyn Dataset>, &'static str) {
    match &cx.data.validation {
        Some(v) if !v.is_empty() => (v.clone(), "validation"),
        _ => (cx.data.train.clone(), "train-stand-in"),
    }
}

/// Mean loss and mean gradient of `x` over a whole split, in fixed-size batches.
fn loss_and_full_gradient(
    model: &mut dyn Model,
    data: &dyn Dataset,
    x: &ParamTree,
) -> Result<(f64, Vec<f32>)> {
    let n = data.len();
    let mut out = vec![0f64; x.as_slice().len()];
    let mut g = vec![0f32; out.len()];
    let mut loss = 0f64;
    let mut start = 0;
    while start < n {
        let end = (start + EVAL_BATCH).min(n);
        let idx: Vec<usize> = (start..end).collect();
        g.iter_mut().for_each(|v| *v = 0.0);
        let l = model.loss_and_grad(x, &data.batch(&idx), &mut g)?;
        let w = (end - start) as f64 / n as f64;
        loss += w * l as f64;
        for (o, v) in out.iter_mut().zip(&g) {
            *o += w * *v as f64;
        }
        start = end;
    }
    Ok((loss, out.into_iter().map(|v| v as f32).collect()))
}

/// The meta-net's input for a client at model `x`: `[ln n, mean(x), std(x), H/ln C,
/// ln L(x), ln rms(∇_g L(x)) per group]` over its training split (see the docs).
pub fn statistics(model: &mut dyn Model, data: &dyn Dataset, x: &ParamTree) -> Result<Vec<f32>> {
    let n = data.len();
    let (mut sum, mut sq, mut count) = (0f64, 0f64, 0f64);
    let mut start = 0;
    while start < n {
        let end = (start + EVAL_BATCH).min(n);
        let idx: Vec<usize> = (start..end).collect();
        if let Inputs::Dense { data: v, .. } = &data.batch(&idx).inputs {
            for &a in v {
                sum += a as f64;
                sq += a as f64 * a as f64;
            }
            count += v.len() as f64;
        }
        start = end;
    }
    let mean = if count > 0.0 { sum / count } else { 0.0 };
    let std = if count > 0.0 {
        (sq / count - mean * mean).max(0.0).sqrt()
    } else {
        0.0
    };
    let h = data.label_histogram();
    let total: u64 = h.iter().sum();
    let entropy: f64 = h
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum::<f64>()
        / (h.len().max(2) as f64).ln();
    let (loss, grad) = loss_and_full_gradient(model, data, x)?;
    let spec = x.spec();
    let ln = |v: f64| (v + 1e-8).ln().clamp(-20.0, 20.0) as f32;
    let mut s = vec![
        ln(n as f64),
        mean as f32,
        std as f32,
        entropy as f32,
        ln(loss),
    ];
    for g in 0..spec.num_groups() {
        let (mut ss, mut len) = (0f64, 0usize);
        for r in spec.group_ranges(g) {
            ss += grad[r.clone()]
                .iter()
                .map(|v| *v as f64 * *v as f64)
                .sum::<f64>();
            len += r.len();
        }
        s.push(ln((ss / len.max(1) as f64).sqrt()));
    }
    Ok(s)
}

/// The client's multipliers from the net: `r_g = clamp(exp(o_g), min, max)`.
fn multipliers(net: &Fedl2pNet, mlp: &Mlp, stats: &[f32]) -> (Vec<f32>, Tape) {
    let tape = mlp.forward(&net.params, stats);
    let r = tape
        .output()
        .iter()
        .map(|o| (o.exp()).clamp(net.min, net.max))
        .collect();
    (r, tape)
}

/// `plan` with its group multipliers scaled by `r`.
fn scaled_plan(plan: &RatePlan, r: &[f32]) -> RatePlan {
    let mut p = plan.clone();
    p.group_multipliers = r
        .iter()
        .enumerate()
        .map(|(g, m)| plan.group_multipliers.get(g).copied().unwrap_or(1.0) * m)
        .collect();
    p
}

/// The net an instruction carries, checked against the model.
fn net_of<'a>(ext: &'a Extensions, spec: &ParamSpec) -> Result<Option<(&'a Fedl2pNet, Mlp)>> {
    let Some(net) = ext.get::<Fedl2pNet>() else {
        return Ok(None);
    };
    let mlp = meta_net(net.hidden as usize, spec.num_groups())?;
    if net.params.len() != mlp.len() {
        return Err(Error::invalid(
            "fedl2p-net payload",
            format!("{} values", net.params.len()),
            format!(
                "{} (a meta-net for {} groups)",
                mlp.len(),
                spec.num_groups()
            ),
        ));
    }
    Ok(Some((net, mlp)))
}

/// FedL2P's client half (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fedl2p;

impl Fedl2p {
    /// The meta-step from the global model `x`: fine-tune with the net's rates, measure
    /// the validation loss, return the meta-gradient and the report.
    fn meta_step(
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &LocalState,
        net: &Fedl2pNet,
        mlp: &Mlp,
    ) -> Result<(Fedl2pGrad, Fedl2pReport)> {
        let x = ins.params.as_ref();
        let stats = statistics(cx.model, cx.data.train.as_ref(), x)?;
        let (r, tape) = multipliers(net, mlp, &stats);
        let mut plan = scaled_plan(&ins.plan, &r);
        plan.work = LocalWork::Steps(net.meta_steps);
        let mut theta = x.clone();
        let rng = stream(
            ins.seed ^ mix64(META_TAG),
            ins.round as u64,
            cx.id,
            Purpose::Algorithm,
        );
        let mut controller = cx.controller(&plan);
        local_train_controlled(
            cx.model,
            cx.data.train.as_ref(),
            &mut theta,
            &plan,
            net.meta_steps,
            state.steps_done,
            rng,
            &mut None,
            GradientCorrection::default(),
            controller.as_deref_mut(),
        )?;
        let (val, signal) = validation_split(cx);
        let before = evaluate_on(cx.model, val.as_ref(), x, None)?.loss();
        let (after, g_val) = loss_and_full_gradient(cx.model, val.as_ref(), &theta)?;
        // ∂L_val(θ_K)/∂ln r_g = ⟨∇_g L_val(θ_K), θ_{K,g} − x_g⟩ (local gradients held fixed).
        let spec = x.spec();
        let h: Vec<f32> = (0..spec.num_groups())
            .map(|g| {
                spec.group_ranges(g)
                    .flat_map(|rg| {
                        rg.map(|i| g_val[i] as f64 * (theta.as_slice()[i] - x.as_slice()[i]) as f64)
                    })
                    .sum::<f64>() as f32
            })
            .collect();
        let mut grad = vec![0f32; mlp.len()];
        mlp.backward(&net.params, &tape, &h, &mut grad);
        grad.iter_mut().for_each(|v| {
            *v = if v.is_finite() {
                v.clamp(-net.clip, net.clip)
            } else {
                0.0
            }
        });
        Ok((
            Fedl2pGrad {
                hidden: net.hidden,
                grad,
                weight: val.len() as f64,
            },
            Fedl2pReport {
                multipliers: r,
                val_loss_before: before,
                val_loss_after: after,
                hypergrad: h,
                stats,
                signal: signal.into(),
            },
        ))
    }
}

impl Recipe for Fedl2p {
    fn payload(&self) -> &'static str {
        Fedl2pNet::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let mut trained = (*ins.params).clone();
        let steps = ins.plan.steps_for(cx.data.train.len());
        let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::Shuffle);
        let mut controller = cx.controller(&ins.plan);
        let mut report = run_local(
            cx.model,
            cx.data.train.as_ref(),
            &mut trained,
            &ins.plan,
            steps,
            state.steps_done,
            rng,
            &ins.ext,
            state,
            reply,
            GradientCorrection {
                proximal: Some((ins.plan.prox_mu, ins.params.as_slice())),
                ..Default::default()
            },
            controller.as_deref_mut(),
        )?;
        if let Some((net, mlp)) = net_of(&ins.ext, ins.params.spec())? {
            if net.meta_step && !cx.data.train.is_empty() {
                let (grad, r) = Self::meta_step(cx, ins, state, net, &mlp)?;
                reply.insert(grad);
                report.ext.insert(r);
            }
        }
        Ok(RecipeRound { trained, report })
    }
    fn personal_model(
        &self,
        _cx: &mut RecipeCx<'_>,
        _ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        Ok(None)
    }
    fn finetune_plan(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<RatePlan>> {
        let Some((net, mlp)) = net_of(&ins.ext, ins.params.spec())? else {
            return Ok(None);
        };
        if cx.data.train.is_empty() || ins.finetune_steps == 0 {
            return Ok(None);
        }
        let stats = statistics(cx.model, cx.data.train.as_ref(), &ins.params)?;
        let (r, _) = multipliers(net, &mlp, &stats);
        Ok(Some(scaled_plan(&ins.plan, &r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpace_core::data::DenseDataset;
    use fedpace_core::{Batch, ClientData, EvalStats, TrainRes};

    /// One weight w per group, loss ½(w − t)² per sample (t = the sample's feature).
    struct Quad(Arc<ParamSpec>);

    impl Model for Quad {
        fn spec(&self) -> Arc<ParamSpec> {
            self.0.clone()
        }
        fn init(&self, _seed: u64) -> Result<ParamTree> {
            Ok(ParamTree::zeros(self.0.clone()))
        }
        fn loss_and_grad(&mut self, p: &ParamTree, b: &Batch, g: &mut [f32]) -> Result<f32> {
            let Inputs::Dense { data, .. } = &b.inputs else {
                unreachable!()
            };
            let n = b.len() as f32;
            let mut loss = 0.0;
            for x in data.chunks(2) {
                for i in 0..2 {
                    let d = p.as_slice()[i] - x[i];
                    loss += 0.5 * d * d / n;
                    g[i] += d / n;
                }
            }
            Ok(loss)
        }
        fn evaluate(&mut self, p: &ParamTree, b: &Batch) -> Result<EvalStats> {
            let mut g = vec![0.0; 2];
            let l = self.loss_and_grad(p, b, &mut g)?;
            Ok(EvalStats {
                loss_sum: (l * b.len() as f32) as f64,
                correct: 0,
                count: b.len() as u64,
            })
        }
    }

    fn spec() -> Arc<ParamSpec> {
        Arc::new(
            ParamSpec::builder()
                .add("a", &[1], "body")
                .add("b", &[1], "head")
                .build()
                .unwrap(),
        )
    }

    fn data() -> ClientData {
        // Two samples: targets (1, 3) and (1, 3): the optimum is w = (1, 3).
        let d =
            Arc::new(DenseDataset::new(vec![1.0, 3.0, 1.0, 3.0], vec![2], vec![0, 1], 2).unwrap());
        ClientData::new(d.clone(), d)
    }

    /// The hypergradient by hand. From w = 0 with rate η = 0.1, multipliers r = 1 and one
    /// step on the full batch: g = (−1, −3), θ = (0.1, 0.3); ∇L(θ) = θ − t = (−0.9, −2.7);
    /// h_g = ∇_g L(θ)·(θ_g − 0) = (−0.09, −0.81): raising either rate lowers the loss, the
    /// head's nine times as much.
    #[test]
    fn fedl2p_hypergradient_by_hand_on_a_quadratic() {
        let mut model = Quad(spec());
        let d = data();
        let mut cx = RecipeCx {
            id: 0,
            model: &mut model,
            data: &d,
        };
        let mlp = meta_net(3, 2).unwrap();
        let mut params = vec![0.0; mlp.len()];
        mlp.zero_last(&mut params);
        let net = Fedl2pNet {
            hidden: 3,
            params: Arc::new(params),
            meta_steps: 1,
            min: 0.01,
            max: 100.0,
            clip: 10.0,
            meta_step: true,
        };
        let mut plan = crate::policies::base_plan();
        plan.batch_size = 2;
        let ins = TrainIns::new(1, Arc::new(ParamTree::zeros(spec())), plan, 1);
        let (g, r) = Fedl2p::meta_step(&mut cx, &ins, &LocalState::default(), &net, &mlp).unwrap();
        assert_eq!(r.multipliers, vec![1.0, 1.0]);
        assert!((r.hypergrad[0] + 0.09).abs() < 1e-6, "{:?}", r.hypergrad);
        assert!((r.hypergrad[1] + 0.81).abs() < 1e-6, "{:?}", r.hypergrad);
        // L(0) = ½(1 + 9) = 5; L(θ) = ½(0.81 + 7.29) = 4.05.
        assert!((r.val_loss_before - 5.0).abs() < 1e-6);
        assert!((r.val_loss_after - 4.05).abs() < 1e-5);
        assert_eq!(r.signal, "train-stand-in");
        // The output layer's bias gradient is h itself (the last two values).
        let n = g.grad.len();
        assert!((g.grad[n - 2] + 0.09).abs() < 1e-6 && (g.grad[n - 1] + 0.81).abs() < 1e-6);
        assert_eq!(g.weight, 2.0);
        // Stats: ln 2, mean 2, std 1, entropy 1, ln L = ln 5, ln rms g = ln 1, ln 3.
        let s = &r.stats;
        let want = [2f32.ln(), 2.0, 1.0, 1.0, 5f32.ln(), 0.0, 3f32.ln()];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{s:?}");
        }
    }

    /// With a validation split the meta-objective is on it: losses, weight and marker.
    #[test]
    fn fedl2p_meta_objective_is_on_the_validation_split_when_there_is_one() {
        let mut model = Quad(spec());
        let mut d = data();
        // One validation sample at (3, 3): L(0) = ½(9 + 9) = 9.
        let v = Arc::new(DenseDataset::new(vec![3.0, 3.0], vec![2], vec![0], 2).unwrap());
        d.validation = Some(v);
        let mut cx = RecipeCx {
            id: 0,
            model: &mut model,
            data: &d,
        };
        let mlp = meta_net(3, 2).unwrap();
        let mut params = vec![0.0; mlp.len()];
        mlp.zero_last(&mut params);
        let net = Fedl2pNet {
            hidden: 3,
            params: Arc::new(params),
            meta_steps: 1,
            min: 0.01,
            max: 100.0,
            clip: 10.0,
            meta_step: true,
        };
        let mut plan = crate::policies::base_plan();
        plan.batch_size = 2;
        let ins = TrainIns::new(1, Arc::new(ParamTree::zeros(spec())), plan, 1);
        let (g, r) = Fedl2p::meta_step(&mut cx, &ins, &LocalState::default(), &net, &mlp).unwrap();
        assert_eq!(r.signal, "validation");
        assert_eq!(g.weight, 1.0);
        assert!(
            (r.val_loss_before - 9.0).abs() < 1e-6,
            "{}",
            r.val_loss_before
        );
        // θ = (0.1, 0.3) as in the hand test; ∇L_val(θ) = θ − (3, 3) = (−2.9, −2.7);
        // h = (−2.9·0.1, −2.7·0.3).
        assert!((r.hypergrad[0] + 0.29).abs() < 1e-5 && (r.hypergrad[1] + 0.81).abs() < 1e-5);
    }

    /// The client's meta-step and the server's step against
    /// `tests/golden/hypernetworks.py` ("fedl2p"): statistics, multipliers from a meta-net
    /// with a non-zero output layer, three fine-tuning steps at `η·m_g·r_g`, the
    /// first-order hypergradient, its back-propagation and element-wise clamp (some values
    /// clamped), then the server's validation-size-weighted mean over two clients and one
    /// Adam step.
    #[test]
    fn fedl2p_meta_and_server_steps_match_the_derivation_script() {
        use crate::hypernet::golden::{assert_close, case, floats};
        let g = case("fedl2p");
        let mlp = meta_net(3, 2).unwrap();
        let net = Fedl2pNet {
            hidden: 3,
            params: Arc::new(floats(&g["lambda0"])),
            meta_steps: 3,
            min: 0.01,
            max: 100.0,
            clip: 0.05,
            meta_step: true,
        };
        let mut plan = crate::policies::base_plan();
        plan.batch_size = 10;
        plan.group_multipliers = vec![1.0, 0.5];
        let x = ParamTree::from_vec(spec(), floats(&g["x"])).unwrap();
        let ins = TrainIns::new(1, Arc::new(x.clone()), plan, 1);
        let mut model = Quad(spec());
        let mut res = Vec::new();
        for c in g["clients"].as_array().unwrap() {
            let features: Vec<f32> = c["features"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(floats)
                .collect();
            let labels: Vec<u32> = c["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap() as u32)
                .collect();
            let d = Arc::new(DenseDataset::new(features, vec![2], labels, 2).unwrap());
            let data = ClientData::new(d.clone(), d);
            let mut cx = RecipeCx {
                id: 0,
                model: &mut model,
                data: &data,
            };
            let (grad, r) =
                Fedl2p::meta_step(&mut cx, &ins, &LocalState::default(), &net, &mlp).unwrap();
            let want = &c["result"];
            assert_close("stats", &r.stats, &want["stats"], 1e-5);
            assert_close("multipliers", &r.multipliers, &want["multipliers"], 1e-5);
            let losses = [r.val_loss_before as f32, r.val_loss_after as f32];
            let wl = serde_json::json!([want["val_loss_before"], want["val_loss_after"]]);
            assert_close("validation losses", &losses, &wl, 1e-5);
            assert_close("hypergradient", &r.hypergrad, &want["hypergrad"], 1e-5);
            assert_close("meta-gradient", &grad.grad, &want["meta_grad"], 1e-5);
            assert_eq!(grad.weight, want["weight"].as_f64().unwrap());
            res.push(TrainRes {
                delta: ParamTree::zeros(spec()),
                num_examples: grad.weight as u64,
                report: Default::default(),
                ext: Extensions::new().with(grad),
            });
        }
        // The server: weighted mean, one Adam step at meta_lr.
        let mut hooks = Fedl2pHooks::new(Fedl2pConfig {
            hidden: 3,
            meta_steps: 3,
            clip: 0.05,
            ..Default::default()
        });
        hooks.start(&x).unwrap();
        let mut t = TrainIns::new(1, Arc::new(x.clone()), crate::policies::base_plan(), 1);
        hooks.attach(1, &mut t).unwrap();
        hooks.learner.as_mut().unwrap().params = floats(&g["lambda0"]);
        let pool: Vec<fedpace_core::ClientInfo> = (0..2)
            .map(|i| fedpace_core::ClientInfo::new(i, 3, 0))
            .collect();
        let accepted: Vec<(u64, &TrainRes)> =
            res.iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
        hooks
            .after_aggregate(&AfterAggregate {
                round: 1,
                pool: &pool,
                accepted: &accepted,
                aggregate: &[0.0, 0.0],
                global: &x,
            })
            .unwrap();
        assert_close(
            "λ after the server step",
            hooks.params().unwrap(),
            &g["lambda1"],
            1e-5,
        );
    }
}
