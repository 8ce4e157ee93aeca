//! Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020), ALGORITHMS.md E.1.
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
//! rates apply. The server is FedAvg. The personal model is one adaptation step
//! `w − α∇f(w; D)` on a local training batch (fine-tuning repeats it K times).

use crate::client::BatchOrder;
use crate::personal::{rates_with_base, GroupMap};
use fedpace_core::{Dataset, Model, PerFedAvgVariant, RatePlan, Result, TrainReport};
use fedpace_params::{l2_norm, ParamTree};
use rand::Rng;

/// One Per-FedAvg step's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerFedAvgStep {
    /// FO or HF.
    pub variant: PerFedAvgVariant,
    /// Meta rate β.
    pub meta_lr: f32,
    /// Finite-difference step δ (HF).
    pub hf_delta: f32,
}

/// Runs `steps` Per-FedAvg steps on `w`; `rngs` shuffle D, D' and D''.
#[allow(clippy::too_many_arguments)]
pub fn train<R: Rng>(
    model: &mut dyn Model,
    data: &dyn Dataset,
    w: &mut ParamTree,
    plan: &RatePlan,
    k: PerFedAvgStep,
    steps: u32,
    step_offset: u64,
    rngs: [R; 3],
) -> Result<TrainReport> {
    let spec = w.spec().clone();
    let groups = spec.num_groups();
    let map = GroupMap::new(&spec);
    let b = plan.batch_size as usize;
    let [r0, r1, r2] = rngs;
    let mut orders = [
        BatchOrder::new(data.len(), b, r0),
        BatchOrder::new(data.len(), b, r1),
        BatchOrder::new(data.len(), b, r2),
    ];
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
        let step = step_offset + s as u64;
        plan.group_rates(groups, step, &mut alpha);
        let beta = rates_with_base(plan, k.meta_lr, groups, step);
        // w̃ = w − α ∇f(w; D)
        let batch = data.batch(&orders[0].next_batch());
        g.fill(0.0);
        let loss = model.loss_and_grad(w, &batch, &mut g)?;
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
        model.loss_and_grad(&tmp, &batch1, &mut v)?;
        if k.variant == PerFedAvgVariant::Hf {
            let batch2 = data.batch(&orders[2].next_batch());
            let hv = hessian_vector(model, w, &v, &batch2, k.hf_delta, &mut tmp)?;
            for (i, (vi, h)) in v.iter_mut().zip(&hv).enumerate() {
                *vi -= alpha[map.group(i)] * h;
            }
        }
        map.step(w.as_mut_slice(), &v, &beta);
        for (acc, r) in report.rate_sum.iter_mut().zip(&beta) {
            *acc += *r as f64;
        }
    }
    report.steps = steps;
    if steps > 0 {
        report.train_loss = (loss_sum / steps as f64) as f32;
        report.loss_after = report.train_loss;
    }
    Ok(report)
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
