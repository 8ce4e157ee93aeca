//! Ditto (Li, Hu, Beirami, Smith, ICML 2021), ALGORITHMS.md E.3.
//!
//! Per client `min_v F_k(v) + (λ/2)‖v − w^t‖²`. The global half is FedAvg's local
//! training under the plan (optimiser, rates, state mode); the personal half runs the
//! same number of steps on the **same batches** (same shuffle stream):
//! `v ← v − η_p,g (∇F(v; b) + λ(v − w^t))`. Because the personal step depends only on
//! `w^t` (fixed for the round) and the batch, running the two halves one after the other
//! gives exactly the reference code's interleaved result. `v` persists in
//! `LocalState::personal` (initialised from the first global model the client receives).
//! η_p is `personal_lr` (default: the plan's rate) with the plan's group multipliers.

use crate::client::BatchOrder;
use crate::personal::{rates_with_base, GroupMap};
use fedpace_core::{Dataset, Model, RatePlan, Result};
use fedpace_params::ParamTree;
use rand::Rng;

/// Runs `steps` personal steps on `v`, pulled towards `global` with strength `lambda`.
#[allow(clippy::too_many_arguments)]
pub fn train_personal(
    model: &mut dyn Model,
    data: &dyn Dataset,
    v: &mut ParamTree,
    global: &ParamTree,
    plan: &RatePlan,
    lambda: f32,
    personal_lr: Option<f32>,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
) -> Result<()> {
    let spec = v.spec().clone();
    let groups = spec.num_groups();
    let map = GroupMap::new(&spec);
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let mut g = vec![0f32; spec.total_len()];
    for s in 0..steps {
        let step = step_offset + s as u64;
        let rates = rates_with_base(plan, personal_lr.unwrap_or(plan.base_lr), groups, step);
        let batch = data.batch(&order.next_batch());
        g.fill(0.0);
        model.loss_and_grad(v, &batch, &mut g)?;
        for ((gi, vi), wi) in g.iter_mut().zip(v.as_slice()).zip(global.as_slice()) {
            *gi += lambda * (vi - wi);
        }
        map.step(v.as_mut_slice(), &g, &rates);
    }
    Ok(())
}
