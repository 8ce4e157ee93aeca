//! `curvature`: Δ-SGD (docs/algorithms.md §C.1). Each client sets its own step from a local
//! smoothness estimate, inside the round: the policy only tells the client to do so
//! (plan optimiser `delta-sgd`), starting from η_init = the plan's rate (or `eta_init`
//! when given). The client re-evaluates the previous iterate on the same mini-batch
//! (`L̂_k = ‖g(y_k) − g(y_{k−1})‖/‖y_k − y_{k−1}‖`,
//! `η_k = min{γ/(2L̂_k), √(1+δθ_{k−1})·η_{k−1}} + ε`) and reports the rates it used, so
//! the server's objective-consistency normalisation sees the real Σ rates.
//!
//! The client half is [`DeltaSgd`], a [`StepController`]: the local loop asks it for a
//! factor on the plan's rates at every step and knows nothing else about Δ-SGD.

use crate::local::StepController;
use fedpace_core::{Batch, ClientInfo, Model, RatePlan, RatePolicy, Result};
use fedpace_optim::OptimizerSpec;
use fedpace_params::ParamTree;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Curvature {
    /// γ (default 2).
    pub gamma: f64,
    /// δ (default 0.1).
    pub delta: f64,
    /// η_init; `None`: the plan's rate.
    pub eta_init: Option<f64>,
}

impl RatePolicy for Curvature {
    fn describe(&self) -> String {
        format!("curvature(Δ-SGD γ={}, δ={})", self.gamma, self.delta)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        if let Some(e) = self.eta_init {
            p.base_lr = e as f32;
        }
        p.optimizer = OptimizerSpec::DeltaSgd {
            gamma: self.gamma,
            delta: self.delta,
            eps: 1e-8,
        };
        Ok(p)
    }
}

/// The step controller a plan needs: Δ-SGD for the `delta-sgd` optimiser, none for the
/// others. Every local loop that runs a plan asks here.
pub fn step_controller(plan: &RatePlan) -> Option<Box<dyn StepController>> {
    match plan.optimizer {
        OptimizerSpec::DeltaSgd { gamma, delta, eps } => Some(Box::new(DeltaSgd::new(
            gamma,
            delta,
            eps,
            plan.base_lr as f64,
        ))),
        _ => None,
    }
}

/// Δ-SGD's per-round step-size state (docs/algorithms.md §C.1): with
/// `L̂_k = ‖g(y_k) − g(y_{k−1})‖/‖y_k − y_{k−1}‖` (the previous iterate re-evaluated on the
/// current mini-batch), `η_k = min{γ/(2L̂_k), √(1+δθ_{k−1})·η_{k−1}} + ε`,
/// `θ_k = η_k/η_{k−1}`, from `η_0 = η_init` and `θ_0 = 1`; the factor handed to the loop is
/// `η_k/η_init`.
pub struct DeltaSgd {
    gamma: f64,
    delta: f64,
    eps: f64,
    eta_init: f64,
    eta: f64,
    theta: f64,
    prev: Option<ParamTree>,
    prev_grad: Vec<f32>,
}

impl DeltaSgd {
    /// A controller starting from rate `eta_init`.
    pub fn new(gamma: f64, delta: f64, eps: f64, eta_init: f64) -> Self {
        Self {
            gamma,
            delta,
            eps,
            eta_init,
            eta: eta_init,
            theta: 1.0,
            prev: None,
            prev_grad: Vec::new(),
        }
    }

    /// The next step size given the smoothness estimate `L̂_k` (None at the first step
    /// or when a norm is 0), returned as a factor on the plan's rate η_init.
    pub fn step(&mut self, lhat: Option<f64>) -> f64 {
        if self.eta_init <= 0.0 {
            return 1.0;
        }
        let grow = (1.0 + self.delta * self.theta).sqrt() * self.eta;
        let next = match lhat {
            Some(l) => (self.gamma / (2.0 * l)).min(grow) + self.eps,
            None => grow,
        };
        self.theta = next / self.eta;
        self.eta = next;
        next / self.eta_init
    }
}

impl StepController for DeltaSgd {
    fn factor(
        &mut self,
        model: &mut dyn Model,
        batch: &Batch,
        params: &ParamTree,
        grad: &[f32],
    ) -> Result<f64> {
        let lhat = match self.prev.as_ref() {
            Some(prev) => {
                self.prev_grad.clear();
                self.prev_grad.resize(grad.len(), 0.0);
                model.loss_and_grad(prev, batch, &mut self.prev_grad)?;
                let dg = diff_norm(grad, &self.prev_grad);
                let dx = diff_norm(params.as_slice(), prev.as_slice());
                (dg > 0.0 && dx > 0.0).then(|| dg / dx)
            }
            None => None,
        };
        let f = self.step(lhat);
        match self.prev.as_mut() {
            Some(p) => p.as_mut_slice().copy_from_slice(params.as_slice()),
            None => self.prev = Some(params.clone()),
        }
        Ok(f)
    }
}

fn diff_norm(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}
