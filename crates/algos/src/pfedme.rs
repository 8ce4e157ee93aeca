//! pFedMe (Dinh, Tran, Nguyen, NeurIPS 2020), ALGORITHMS.md E.2.
//!
//! Moreau-envelope objective `F_i(w) = min_θ f_i(θ) + (λ/2)‖θ − w‖²`. Per local round
//! (one mini-batch D each; the round count is the plan's local work):
//!
//! ```text
//! repeat K times on the same D:  θ ← θ − η_p (∇f(θ; D) + λ(θ − w_local) + μ_reg θ)
//! w_local ← w_local − η λ (w_local − θ)
//! ```
//!
//! θ and w_local start from the global model each round (as in the reference code);
//! θ at the end of the round is the client's personal model (kept in
//! `LocalState::personal`). The server mixes `w ← (1 − β) w + β · avg(w_local)`, i.e. the
//! FedAvg step with server rate η_g = β. η is the plan's rate and η_p the recipe's
//! `personal_lr`, both scaled per group by the plan's multipliers and schedule.

use crate::client::BatchOrder;
use crate::personal::{rates_with_base, GroupMap};
use fedpace_core::{Dataset, Model, RatePlan, Result, TrainReport};
use fedpace_params::{l2_norm, ParamTree};
use rand::Rng;

/// pFedMe's client knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PFedMeStep {
    /// Inner steps K.
    pub inner_steps: u32,
    /// λ.
    pub lambda: f32,
    /// Personal rate η_p.
    pub personal_lr: f32,
    /// μ_reg.
    pub mu_reg: f32,
}

/// The inner problem on one batch: K steps of
/// `θ ← θ − η_p,g (∇f(θ; D) + λ(θ − w) + μ θ)` from `theta`.
pub fn inner_solve(
    model: &mut dyn Model,
    batch: &fedpace_core::Batch,
    theta: &mut ParamTree,
    w: &ParamTree,
    k: PFedMeStep,
    personal_rates: &[f32],
    map: &GroupMap,
) -> Result<f32> {
    let d = w.as_slice().len();
    let mut g = vec![0f32; d];
    let mut first = 0.0;
    for i in 0..k.inner_steps {
        g.fill(0.0);
        let loss = model.loss_and_grad(theta, batch, &mut g)?;
        if i == 0 {
            first = loss;
        }
        for ((gi, t), wi) in g.iter_mut().zip(theta.as_slice()).zip(w.as_slice()) {
            *gi += k.lambda * (t - wi) + k.mu_reg * t;
        }
        map.step(theta.as_mut_slice(), &g, personal_rates);
    }
    Ok(first)
}

/// Runs `steps` pFedMe local rounds on `w` (from the global model); returns θ.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    w: &mut ParamTree,
    plan: &RatePlan,
    k: PFedMeStep,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
) -> Result<(ParamTree, TrainReport)> {
    let spec = w.spec().clone();
    let groups = spec.num_groups();
    let map = GroupMap::new(&spec);
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let mut theta = w.clone();
    let mut eta = Vec::with_capacity(groups);
    let mut report = TrainReport {
        rate_sum: vec![0.0; groups],
        ..Default::default()
    };
    let mut loss_sum = 0f64;
    for s in 0..steps {
        let step = step_offset + s as u64;
        let batch = data.batch(&order.next_batch());
        let personal = rates_with_base(plan, k.personal_lr, groups, step);
        let loss = inner_solve(model, &batch, &mut theta, w, k, &personal, &map)?;
        if s == 0 {
            report.loss_before = loss;
            let mut g = vec![0f32; spec.total_len()];
            model.loss_and_grad(w, &batch, &mut g)?;
            report.grad_norm = l2_norm(&g);
        }
        loss_sum += loss as f64;
        plan.group_rates(groups, step, &mut eta);
        for (i, (wi, t)) in w
            .as_mut_slice()
            .iter_mut()
            .zip(theta.as_slice())
            .enumerate()
        {
            *wi -= eta[map.group(i)] * k.lambda * (*wi - t);
        }
        for (acc, r) in report.rate_sum.iter_mut().zip(&eta) {
            *acc += *r as f64;
        }
    }
    report.steps = steps;
    if steps > 0 {
        report.train_loss = (loss_sum / steps as f64) as f32;
        report.loss_after = report.train_loss;
    }
    Ok((theta, report))
}
