//! The model contract: a loss and its gradient on flat parameters.

use crate::{Batch, Result};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// Loss and accuracy counts over some samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalStats {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Number of correct predictions.
    pub correct: u64,
    /// Number of samples.
    pub count: u64,
}

impl EvalStats {
    /// Mean loss (0 when empty).
    pub fn loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }
    /// Accuracy in `[0, 1]` (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }
    /// Adds another set of counts.
    pub fn merge(&mut self, o: &EvalStats) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.count += o.count;
    }
}

/// A differentiable model over flat parameters. The model owns no parameters: it is
/// handed them at every call, so optimisers, aggregation and state live outside it.
/// One instance is used by one thread at a time; make more with a [`ModelFactory`].
pub trait Model: Send {
    /// The parameter layout, with group labels (e.g. `body`, `head`).
    fn spec(&self) -> Arc<ParamSpec>;
    /// Fresh parameters drawn from the model's initialiser.
    fn init(&self, seed: u64) -> Result<ParamTree>;
    /// Mean loss over the batch; writes ∂loss/∂params into `grad` (same layout).
    fn loss_and_grad(&mut self, params: &ParamTree, batch: &Batch, grad: &mut [f32])
        -> Result<f32>;
    /// Whether [`loss_and_grad`](Model::loss_and_grad) writes every value of `grad`
    /// whatever it held before (so a caller need not zero it first). `false` by default:
    /// callers then zero `grad` before every call.
    fn overwrites_grad(&self) -> bool {
        false
    }
    /// The tensors (indices into the spec) whose plain-SGD step
    /// [`loss_and_grad_sgd`](Model::loss_and_grad_sgd) takes itself. Empty by default.
    fn fused_sgd_tensors(&self) -> Vec<usize> {
        Vec::new()
    }
    /// [`loss_and_grad`](Model::loss_and_grad), except that each tensor of
    /// [`fused_sgd_tensors`](Model::fused_sgd_tensors) is stepped in `params` at once,
    /// `p ← p + g·(−η)` with `η = group_rates[its group]` (an f32 product, then an f32
    /// sum: the bits of writing `g` and stepping after), instead of its gradient being
    /// written (those values of `grad` are left unspecified). Only for a step whose
    /// gradient nothing but plain SGD reads; the caller decides that
    /// (docs/arch/0038-fc1-backward-sgd-step.md). Default: `loss_and_grad`.
    fn loss_and_grad_sgd(
        &mut self,
        params: &mut ParamTree,
        batch: &Batch,
        grad: &mut [f32],
        group_rates: &[f32],
    ) -> Result<f32> {
        let _ = group_rates;
        self.loss_and_grad(params, batch, grad)
    }
    /// Loss sum and correct count over the batch, without gradients.
    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> Result<EvalStats>;
}

/// Makes model instances (one per worker thread).
pub type ModelFactory = Arc<dyn Fn() -> Result<Box<dyn Model>> + Send + Sync>;
