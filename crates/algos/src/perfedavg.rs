//! Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020), docs/algorithms.md §E.1;
//! docs/personalization.md.
//!
//! MAML objective `F(w) = (1/N) Σ_i f_i(w − α∇f_i(w))`. Each local step draws three
//! independent batches D, D', D'' (three seeded streams) and
//!
//! ```text
//! w̃ = w − α ∇f(w; D)
//! FO: w ← w − β ∇f(w̃; D')
//! HF: v = ∇f(w̃; D');  Hv ≈ [∇f(w + δv; D'') − ∇f(w − δv; D'')] / (2δ);  w ← w − β (v − α Hv)
//! ```
//!
//! α is the plan's rate (the client lr, as in FL-bench), β the recipe's `meta_lr`; both
//! carry the plan's per-group multipliers and schedule, so per-layer and per-client
//! rates apply. The meta step `w ← w − β·v` is the plan's optimiser (and state mode) on
//! the meta-gradient; the adaptation step w̃ is MAML's plain gradient step. The server
//! is FedAvg. The personal model is one adaptation step `w − α∇f(w; D)` on a local
//! training batch (fine-tuning repeats it K times).

use crate::config::{Algorithm, BuildCx, Built, Combination, RoundConfig};
use crate::local::{
    end_state, local_train_controlled, optimizer_step, rates_with_base, start_state, BatchOrder,
    GradientCorrection, GroupMap,
};
use crate::parts::{Recipe, RecipeCx, RecipeRound};
use crate::personal::{build, own_steps, PersonalHooks};
use crate::registry::Algorithms;
use fedpace_core::ext::Payload;
use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{Error, EvalIns, Extensions, LocalState, Model, Result, TrainIns, TrainReport};
use fedpace_params::{l2_norm, ParamTree};
use serde::{Deserialize, Serialize};

/// Per-FedAvg's meta-gradient approximation (docs/algorithms.md §E.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerFedAvgVariant {
    /// First order: `w ← w − β ∇f(w − α∇f(w; D); D')`.
    #[default]
    Fo,
    /// Hessian-free: the Hessian-vector product by a central difference with step δ.
    Hf,
}

/// Per-FedAvg's recipe. The plan's rate is the adaptation rate α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PerFedAvg {
    /// FO or HF.
    pub variant: PerFedAvgVariant,
    /// Meta rate β (scaled by the plan's group multipliers).
    pub meta_lr: f32,
    /// Finite-difference step δ (HF only).
    pub hf_delta: f32,
}

impl Payload for PerFedAvg {
    const NAME: &'static str = "perfedavg";
}

/// `[∇f(w + δv) − ∇f(w − δv)] / (2δ)` on one batch (`tmp` is scratch).
pub fn hessian_vector(
    model: &mut dyn Model,
    w: &ParamTree,
    v: &[f32],
    batch: &fedpace_core::Batch,
    delta: f32,
    tmp: &mut ParamTree,
) -> Result<Vec<f32>> {
    let d = v.len();
    let (mut gp, mut gm) = (vec![0f32; d], vec![0f32; d]);
    for (t, (x, vi)) in tmp
        .as_mut_slice()
        .iter_mut()
        .zip(w.as_slice().iter().zip(v))
    {
        *t = x + delta * vi;
    }
    model.loss_and_grad(tmp, batch, &mut gp)?;
    for (t, (x, vi)) in tmp
        .as_mut_slice()
        .iter_mut()
        .zip(w.as_slice().iter().zip(v))
    {
        *t = x - delta * vi;
    }
    model.loss_and_grad(tmp, batch, &mut gm)?;
    Ok(gp
        .iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * delta))
        .collect())
}

struct PerFedAvgClient;

impl Recipe for PerFedAvgClient {
    fn payload(&self) -> &'static str {
        PerFedAvg::NAME
    }
    fn train(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &TrainIns,
        state: &mut LocalState,
        reply: &mut Extensions,
    ) -> Result<RecipeRound> {
        let k = *ins
            .ext
            .get::<PerFedAvg>()
            .expect("switched on by its payload");
        let plan = &ins.plan;
        let mut w = ins.params.as_ref().clone();
        let spec = w.spec().clone();
        let groups = spec.num_groups();
        let map = GroupMap::new(&spec);
        let data = cx.data.train.clone();
        let steps = plan.steps_for(data.len());
        let offset = state.steps_done;
        let b = plan.batch_size as usize;
        let (round, id) = (ins.round as u64, cx.id);
        let mut orders = [
            BatchOrder::new(data.len(), b, stream(ins.seed, round, id, Purpose::Shuffle)),
            BatchOrder::new(
                data.len(),
                b,
                stream(ins.seed, round, id, Purpose::Algorithm),
            ),
            BatchOrder::new(
                data.len(),
                b,
                stream(ins.seed, round, id ^ (1 << 63), Purpose::Algorithm),
            ),
        ];
        let tx = plan.optimizer.build()?;
        let mut opt = start_state(plan, &ins.ext, state).unwrap_or_else(|| tx.init(&spec));
        let d = spec.total_len();
        let (mut g, mut v) = (vec![0f32; d], vec![0f32; d]);
        let mut tmp = w.clone();
        let mut alpha = Vec::with_capacity(groups);
        let mut report = TrainReport {
            rate_sum: vec![0.0; groups],
            ..Default::default()
        };
        let mut loss_sum = 0f64;
        for s in 0..steps {
            let step = offset + s as u64;
            plan.group_rates(groups, step, &mut alpha);
            let beta = rates_with_base(plan, k.meta_lr, groups, step);
            // w̃ = w − α ∇f(w; D)
            let batch = data.batch(&orders[0].next_batch());
            g.fill(0.0);
            let loss = cx.model.loss_and_grad(&w, &batch, &mut g)?;
            if s == 0 {
                report.loss_before = loss;
                report.grad_norm = l2_norm(&g);
            }
            loss_sum += loss as f64;
            tmp.as_mut_slice().copy_from_slice(w.as_slice());
            map.step(tmp.as_mut_slice(), &g, &alpha);
            // v = ∇f(w̃; D')
            let batch1 = data.batch(&orders[1].next_batch());
            v.fill(0.0);
            cx.model.loss_and_grad(&tmp, &batch1, &mut v)?;
            if k.variant == PerFedAvgVariant::Hf {
                let batch2 = data.batch(&orders[2].next_batch());
                let hv = hessian_vector(cx.model, &w, &v, &batch2, k.hf_delta, &mut tmp)?;
                for (i, (vi, h)) in v.iter_mut().zip(&hv).enumerate() {
                    *vi -= alpha[map.group(i)] * h;
                }
            }
            // The meta step, with the plan's optimiser: w ← w − β·v under SGD.
            optimizer_step(tx.as_ref(), &mut opt, &mut w, &mut v, &beta, step)?;
            for (acc, r) in report.rate_sum.iter_mut().zip(&beta) {
                *acc += *r as f64;
            }
        }
        end_state(plan, Some(opt), state, reply);
        report.steps = steps;
        if steps > 0 {
            report.train_loss = (loss_sum / steps as f64) as f32;
            report.loss_after = report.train_loss;
        }
        Ok(RecipeRound { trained: w, report })
    }
    fn personal_model(
        &self,
        cx: &mut RecipeCx<'_>,
        ins: &EvalIns,
        state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        // One adaptation step w − α∇f(w; D) on a local training batch (E.1).
        let mut x = ins.params.as_ref().clone();
        if !cx.data.train.is_empty() {
            let rng = stream(ins.seed, ins.round as u64, cx.id, Purpose::FineTune);
            local_train_controlled(
                cx.model,
                cx.data.train.as_ref(),
                &mut x,
                &ins.plan,
                1,
                state.steps_done,
                rng,
                &mut None,
                GradientCorrection::default(),
                None,
            )?;
        }
        Ok(Some(x))
    }
    fn finetune_start(
        &self,
        _cx: &mut RecipeCx<'_>,
        _ins: &EvalIns,
        _state: &LocalState,
    ) -> Result<Option<ParamTree>> {
        // Per-FedAvg's fine-tuning is its adaptation step repeated K times from w.
        Ok(None)
    }
}

/// `perfedavg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerFedAvgConfig {
    /// Train every client each round, aggregate only the sampled ones (default false).
    pub train_all: bool,
    /// `fo` (first order, default) or `hf` (Hessian-free).
    pub variant: PerFedAvgVariant,
    /// Meta rate β (default 1e-3).
    pub meta_lr: f64,
    /// HF's finite-difference step δ (default 1e-3).
    pub hf_delta: f64,
}

impl Default for PerFedAvgConfig {
    fn default() -> Self {
        Self {
            train_all: false,
            variant: PerFedAvgVariant::Fo,
            meta_lr: 1e-3,
            hf_delta: 1e-3,
        }
    }
}

impl Algorithm for PerFedAvgConfig {
    const NAME: &'static str = "perfedavg";
    fn validate(&self, _round: &RoundConfig) -> Result<()> {
        for (k, v) in [
            ("strategy.meta_lr", self.meta_lr),
            ("strategy.hf_delta", self.hf_delta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(k, v, "must be > 0"));
            }
            crate::config::check_f32(k, v)?;
        }
        Ok(())
    }
    fn check(&self, c: &Combination<'_>) -> std::result::Result<(), String> {
        own_steps(Self::NAME, c)
    }
    fn register(a: &mut Algorithms) {
        a.payload::<PerFedAvg>();
        a.parts().add_recipe(PerFedAvgClient);
    }
    fn build(&self, cx: BuildCx) -> Result<Built> {
        let recipe = PerFedAvg {
            variant: self.variant,
            meta_lr: self.meta_lr as f32,
            hf_delta: self.hf_delta as f32,
        };
        let hooks = PersonalHooks::new(
            Extensions::new().with(recipe),
            Vec::new(),
            Vec::new(),
            false,
            self.train_all,
        );
        build(Self::NAME, cx, hooks)
    }
}
