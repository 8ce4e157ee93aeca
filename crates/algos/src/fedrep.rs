//! FedRep (Collins et al., ICML 2021), ALGORITHMS.md E.6.
//!
//! Model = body (shared representation) + head (personal, `personal_groups`, default
//! `["head"]`). Each round: `head_epochs` (τ_h) epochs on the head with the body frozen,
//! then `body_epochs` (τ_b) epochs on the body with the head frozen; only the body is
//! sent and averaged. Freezing is a zero group multiplier, so the head and body rates
//! are the plan's per-group rates (`client.group_lr`, or a policy) in each phase.

use crate::personal::plan_zeroing;
use fedpace_core::{Dataset, LocalWork, Model, PersonalIns, RatePlan, Result, TrainReport};
use fedpace_params::ParamTree;
use rand::Rng;

/// Runs the head phase then the body phase on `x`; the report sums both.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    x: &mut ParamTree,
    plan: &RatePlan,
    p: &PersonalIns,
    (head_epochs, body_epochs): (u32, u32),
    step_offset: u64,
    mut rng: impl Rng,
) -> Result<TrainReport> {
    let groups = x.spec().num_groups();
    let mut head = plan_zeroing(plan, groups, |g| !p.is_personal(g));
    head.work = LocalWork::Epochs(head_epochs);
    let mut body = plan_zeroing(plan, groups, |g| p.is_personal(g));
    body.work = LocalWork::Epochs(body_epochs);
    let (sh, sb) = (head.steps_for(data.len()), body.steps_for(data.len()));
    let a =
        crate::client::local_train(model, data, x, &head, sh, step_offset, &mut rng, &mut None)?;
    let b = crate::client::local_train(
        model,
        data,
        x,
        &body,
        sb,
        step_offset + sh as u64,
        &mut rng,
        &mut None,
    )?;
    let total = (sh + sb).max(1) as f64;
    Ok(TrainReport {
        steps: sh + sb,
        rate_sum: a
            .rate_sum
            .iter()
            .zip(&b.rate_sum)
            .map(|(x, y)| x + y)
            .collect(),
        loss_before: if sh > 0 { a.loss_before } else { b.loss_before },
        loss_after: if sb > 0 { b.loss_after } else { a.loss_after },
        train_loss: ((a.train_loss as f64 * sh as f64 + b.train_loss as f64 * sb as f64) / total)
            as f32,
        update_norm: 0.0,
        grad_norm: if sh > 0 { a.grad_norm } else { b.grad_norm },
    })
}
