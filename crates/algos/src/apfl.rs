//! APFL (Deng, Kamani, Mahdavi 2020), ALGORITHMS.md E.7.
//!
//! Per client: the global copy `w`, a local model `v_i` and a learned mixing weight
//! `α_i ∈ [0, 1]`; the personal model is `v̄ = α v + (1 − α) w` (parameter mixing).
//! Each step on a batch b, with every gradient taken at the step's starting point:
//!
//! ```text
//! g_w = ∇f(w; b);   v̄ = α v + (1 − α) w;   g = ∇f(v̄; b)
//! w ← w − η g_w
//! v ← v − η α g                                  (∇_v f(v̄) = α ∇f(v̄))
//! α ← clip(α − η_α ⟨v − w, g⟩, 0, 1)              (∂f(v̄)/∂α = ⟨v − w, ∇f(v̄)⟩)
//! ```
//!
//! η is the plan's per-group rate; η_α the recipe's `alpha_lr` (0 = fixed α). `v` and α
//! persist in `LocalState::personal`; the server averages `w` (FedAvg).

use crate::client::BatchOrder;
use crate::personal::GroupMap;
use fedpace_core::{Dataset, Model, RatePlan, Result, TrainReport};
use fedpace_params::{l2_norm, ParamTree};
use rand::Rng;

/// `α v + (1 − α) w`.
pub fn mix(alpha: f32, v: &ParamTree, w: &ParamTree) -> ParamTree {
    let mut out = w.clone();
    for (o, (vi, wi)) in out
        .as_mut_slice()
        .iter_mut()
        .zip(v.as_slice().iter().zip(w.as_slice()))
    {
        *o = alpha * vi + (1.0 - alpha) * wi;
    }
    out
}

/// Runs `steps` APFL steps on `(w, v, α)`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    w: &mut ParamTree,
    v: &mut ParamTree,
    alpha: &mut f32,
    alpha_lr: f32,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
) -> Result<TrainReport> {
    let spec = w.spec().clone();
    let groups = spec.num_groups();
    let map = GroupMap::new(&spec);
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let d = spec.total_len();
    let (mut gw, mut g) = (vec![0f32; d], vec![0f32; d]);
    let mut eta = Vec::with_capacity(groups);
    let mut report = TrainReport {
        rate_sum: vec![0.0; groups],
        ..Default::default()
    };
    let mut loss_sum = 0f64;
    for s in 0..steps {
        let step = step_offset + s as u64;
        plan.group_rates(groups, step, &mut eta);
        let batch = data.batch(&order.next_batch());
        gw.fill(0.0);
        let loss = model.loss_and_grad(w, &batch, &mut gw)?;
        if s == 0 {
            report.loss_before = loss;
            report.grad_norm = l2_norm(&gw);
        }
        loss_sum += loss as f64;
        let bar = mix(*alpha, v, w);
        g.fill(0.0);
        model.loss_and_grad(&bar, &batch, &mut g)?;
        let grad_alpha: f64 = v
            .as_slice()
            .iter()
            .zip(w.as_slice())
            .zip(&g)
            .map(|((vi, wi), gi)| (*vi as f64 - *wi as f64) * *gi as f64)
            .sum();
        map.step(w.as_mut_slice(), &gw, &eta);
        let a = *alpha;
        for (i, (vi, gi)) in v.as_mut_slice().iter_mut().zip(&g).enumerate() {
            *vi -= eta[map.group(i)] * a * gi;
        }
        *alpha = (a as f64 - alpha_lr as f64 * grad_alpha).clamp(0.0, 1.0) as f32;
        for (acc, r) in report.rate_sum.iter_mut().zip(&eta) {
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
