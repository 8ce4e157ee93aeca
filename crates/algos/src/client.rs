//! The standard client recipe: local mini-batch training from the rate plan, and
//! evaluation of the global and the fine-tuned (personalised) model.

use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{
    Client, ClientData, ClientId, Dataset, Error, EvalIns, EvalRes, EvalStats, InsExtras,
    LocalState, Model, PersonalEval, RatePlan, ResExtras, Result, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::{apply_updates, State, StateMode, StepContext};
use fedpace_params::{l2_norm, ParamTree};
use rand::seq::SliceRandom;
use rand::Rng;

/// Batch size used for evaluation passes (does not change results).
const EVAL_BATCH: usize = 256;

/// A client that trains a [`Model`] on its [`ClientData`].
pub struct StandardClient {
    id: ClientId,
    model: Box<dyn Model>,
    data: ClientData,
}

impl StandardClient {
    /// A client `id` with its model instance and data.
    pub fn new(id: ClientId, model: Box<dyn Model>, data: ClientData) -> Self {
        Self { id, model, data }
    }
}

/// Yields mini-batch index lists: reshuffled every epoch, the last batch of an epoch
/// may be smaller.
pub struct BatchOrder<R: Rng> {
    n: usize,
    batch: usize,
    perm: Vec<usize>,
    pos: usize,
    rng: R,
}

impl<R: Rng> BatchOrder<R> {
    /// Batches over `n` samples of size `batch`.
    pub fn new(n: usize, batch: usize, rng: R) -> Self {
        Self {
            n,
            batch: batch.max(1),
            perm: Vec::new(),
            pos: n,
            rng,
        }
    }
    /// The next batch's indices (empty when `n == 0`).
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        if self.pos >= self.n {
            self.perm = (0..self.n).collect();
            self.perm.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let end = (self.pos + self.batch).min(self.n);
        let b = self.perm[self.pos..end].to_vec();
        self.pos = end;
        b
    }
}

/// Runs `steps` local steps from `params` under `plan`, starting at cumulative step
/// `step_offset`. `opt_state` is the optimiser state to continue from (`None`: fresh);
/// on return it holds the state after the last step. Returns the report (without
/// update norm).
#[allow(clippy::too_many_arguments)]
pub fn local_train(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &mut ParamTree,
    plan: &RatePlan,
    steps: u32,
    step_offset: u64,
    rng: impl Rng,
    opt_state: &mut Option<State>,
) -> Result<TrainReport> {
    let spec = params.spec().clone();
    let groups = spec.num_groups();
    let tx = plan.optimizer.build()?;
    let opt_state = opt_state.get_or_insert_with(|| tx.init(&spec));
    let mut order = BatchOrder::new(data.len(), plan.batch_size as usize, rng);
    let mut grad = vec![0f32; spec.total_len()];
    let mut rates = Vec::with_capacity(groups);
    let mut report = TrainReport {
        rate_sum: vec![0.0; groups],
        ..Default::default()
    };
    let per_epoch = data.len().div_ceil(plan.batch_size.max(1) as usize).max(1) as u32;
    let tail_from = steps.saturating_sub(per_epoch);
    let (mut loss_all, mut loss_tail, mut n_tail) = (0f64, 0f64, 0u32);
    for s in 0..steps {
        let idx = order.next_batch();
        let batch = data.batch(&idx);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let loss = model.loss_and_grad(params, &batch, &mut grad)?;
        if s == 0 {
            report.loss_before = loss;
            report.grad_norm = l2_norm(&grad);
        }
        loss_all += loss as f64;
        if s >= tail_from {
            loss_tail += loss as f64;
            n_tail += 1;
        }
        let step = step_offset + s as u64;
        plan.group_rates(groups, step, &mut rates);
        for (acc, r) in report.rate_sum.iter_mut().zip(&rates) {
            *acc += *r as f64;
        }
        let ctx = StepContext {
            spec: &spec,
            group_rates: &rates,
            step,
        };
        tx.update(&mut grad, opt_state, params.as_slice(), &ctx)?;
        apply_updates(params.as_mut_slice(), &grad);
    }
    report.steps = steps;
    if steps > 0 {
        report.train_loss = (loss_all / steps as f64) as f32;
        report.loss_after = (loss_tail / n_tail.max(1) as f64) as f32;
    }
    Ok(report)
}

/// Evaluates `params` on the first `limit` samples of `data` (all when `None`), in
/// fixed-size batches.
pub fn evaluate_on(
    model: &mut dyn Model,
    data: &dyn Dataset,
    params: &ParamTree,
    limit: Option<u32>,
) -> Result<EvalStats> {
    let mut stats = EvalStats::default();
    let n = limit.map_or(data.len(), |l| data.len().min(l as usize));
    let mut start = 0;
    while start < n {
        let end = (start + EVAL_BATCH).min(n);
        let idx: Vec<usize> = (start..end).collect();
        stats.merge(&model.evaluate(params, &data.batch(&idx))?);
        start = end;
    }
    Ok(stats)
}

impl Client for StandardClient {
    fn train(&mut self, ins: &TrainIns, state: &mut LocalState) -> Result<TrainRes> {
        if let InsExtras::Personal(p) = &ins.extras {
            return crate::personal::train(self.id, self.model.as_mut(), &self.data, ins, p, state);
        }
        let mut params = (*ins.params).clone();
        let steps = ins.plan.steps_for(self.data.train.len());
        let rng = stream(ins.seed, ins.round as u64, self.id, Purpose::Shuffle);
        let mut opt_state = match ins.plan.state_mode {
            StateMode::Reset => None,
            StateMode::Keep => state.optimizer.take(),
            StateMode::ServerInit => {
                return Err(Error::invalid(
                    "plan.state_mode",
                    "server-init",
                    "reset or keep (no strategy sends optimiser moments yet)",
                ))
            }
        };
        let mut report = local_train(
            self.model.as_mut(),
            self.data.train.as_ref(),
            &mut params,
            &ins.plan,
            steps,
            state.steps_done,
            rng,
            &mut opt_state,
        )?;
        if ins.plan.state_mode == StateMode::Keep {
            state.optimizer = opt_state;
        }
        let mut delta = params.into_vec();
        for (d, x) in delta.iter_mut().zip(ins.params.as_slice()) {
            *d -= x;
        }
        report.update_norm = l2_norm(&delta);
        state.rounds_trained += 1;
        state.steps_done += steps as u64;
        Ok(TrainRes {
            delta: ParamTree::from_vec(ins.params.spec().clone(), delta)?,
            num_examples: self.data.train.len() as u64,
            report,
            extras: ResExtras::None,
        })
    }

    fn evaluate(&mut self, ins: &EvalIns, state: &mut LocalState) -> Result<EvalRes> {
        if let InsExtras::Personal(p) = &ins.extras {
            return crate::personal::evaluate(
                self.id,
                self.model.as_mut(),
                &self.data,
                ins,
                p,
                state,
            );
        }
        let limit = ins.max_test_samples;
        let global = evaluate_on(
            self.model.as_mut(),
            self.data.test.as_ref(),
            &ins.params,
            limit,
        )?;
        // Without a personal recipe the personal model is the global model itself.
        let personalized = if ins.personalized == PersonalEval::Finetune
            && ins.finetune_steps > 0
            && !self.data.train.is_empty()
        {
            let mut p = (*ins.params).clone();
            let rng = stream(ins.seed, ins.round as u64, self.id, Purpose::FineTune);
            local_train(
                self.model.as_mut(),
                self.data.train.as_ref(),
                &mut p,
                &ins.plan,
                ins.finetune_steps,
                state.steps_done,
                rng,
                &mut None,
            )?;
            Some(evaluate_on(
                self.model.as_mut(),
                self.data.test.as_ref(),
                &p,
                limit,
            )?)
        } else {
            None
        };
        Ok(EvalRes {
            global,
            personalized,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batch_order_covers_each_epoch_exactly_once() {
        let rng = rand_chacha_like();
        let mut o = BatchOrder::new(10, 4, rng);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(o.next_batch());
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(o.next_batch().len(), 4);
    }

    fn rand_chacha_like() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }
}
