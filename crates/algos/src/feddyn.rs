//! FedDyn (ALGORITHMS.md B.4): dynamic regularisation.
//!
//! Client k (holding g_k in its [`LocalState`](fedpace_core::LocalState)) minimises
//! `L_k(θ) − ⟨g_k, θ⟩ + (α/2)‖θ − θ^{t−1}‖²` under its rate plan (the linear term and
//! the proximal term are added to every gradient), then sets
//! `g_k ← g_k − α(θ_k − θ^{t−1})`. The plan's own `prox_mu` adds on top of α.
//!
//! Server (state h, m = N the whole pool):
//! `h ← h − α (1/m) Σ_{k∈P} (θ_k − θ^{t−1})`,
//! `θ^t = θ^{t−1} + η_g · (1/|P|) Σ_{k∈P} (θ_k − θ^{t−1}) − h/α` (η_g = 1 is the paper).
//!
//! As in the reference code (FL-bench, Acar et al.'s), the client clips the gradient
//! of its whole local objective (loss gradient, linear and proximal terms) to global
//! L2 norm `max_grad_norm` (`strategy.feddyn_clip`, default 10; 0 turns it off)
//! before its local optimiser's step.

use crate::aggregate::aggregate;
use crate::aggregate::usable;
use crate::fedavg::{FedAvg, FedAvgConfig};
use fedpace_core::{
    AggregateSummary, ClientId, ClientPool, Error, InsExtras, RatePlan, RatePolicy, Reply, Result,
    Strategy, TrainIns, TrainRes,
};
use fedpace_params::{l2_norm, ParamTree};
use std::sync::Arc;

/// The FedDyn strategy.
pub struct FedDyn {
    inner: FedAvg,
    alpha: f64,
    max_grad_norm: Option<f64>,
    h: Vec<f64>,
}

impl FedDyn {
    /// FedDyn with regulariser α > 0 and no gradient clipping.
    pub fn new(cfg: FedAvgConfig, alpha: f64, policy: Box<dyn RatePolicy>) -> Result<Self> {
        Self::with_clip(cfg, alpha, None, policy)
    }

    /// FedDyn whose clients clip every corrected local gradient to global norm
    /// `max_grad_norm` (`None`: no clipping; the reference code uses 10).
    pub fn with_clip(
        cfg: FedAvgConfig,
        alpha: f64,
        max_grad_norm: Option<f64>,
        policy: Box<dyn RatePolicy>,
    ) -> Result<Self> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::invalid("strategy.alpha", alpha, "a finite α > 0"));
        }
        if let Some(c) = max_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(
                    "strategy.feddyn_clip",
                    c,
                    "a finite norm >= 0 (0 turns clipping off)",
                ));
            }
        }
        Ok(Self {
            inner: FedAvg::new(cfg, policy),
            alpha,
            max_grad_norm,
            h: Vec::new(),
        })
    }

    /// The server state h (empty before the first round).
    pub fn h(&self) -> &[f64] {
        &self.h
    }
}

impl Strategy for FedDyn {
    fn describe(&self) -> String {
        match self.max_grad_norm {
            Some(c) => format!(
                "feddyn(alpha={}, clip={c}) on {}",
                self.alpha,
                self.inner.describe()
            ),
            None => format!("feddyn(alpha={}) on {}", self.alpha, self.inner.describe()),
        }
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        let mut ins = self.inner.configure_train(round, global, pool, seed)?;
        for (_, i) in &mut ins {
            i.extras = InsExtras::FedDyn {
                alpha: self.alpha,
                max_grad_norm: self.max_grad_norm,
            };
        }
        Ok(ins)
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        let ok = usable(round, replies, |_| true)?;
        let len = global.as_slice().len();
        if self.h.len() != len {
            self.h = vec![0.0; len];
        }
        let m = pool.len().max(1) as f64;
        for (_, r) in &ok {
            for (h, d) in self.h.iter_mut().zip(r.delta.as_slice()) {
                *h -= self.alpha * *d as f64 / m;
            }
        }
        let weights = vec![1.0; ok.len()];
        let agg = aggregate(global.spec(), &ok, &weights, self.inner.config().normalize);
        let lr = self.inner.config().server_lr as f64;
        let before = global.as_slice().to_vec();
        for ((x, d), h) in global
            .as_mut_slice()
            .iter_mut()
            .zip(&agg.delta)
            .zip(&self.h)
        {
            *x = (*x as f64 + lr * *d as f64 - h / self.alpha) as f32;
        }
        for (id, r) in &ok {
            if let Ok(info) = pool.info(*id) {
                self.inner.policy_mut().observe(round, &info, &r.report);
            }
        }
        let step: Vec<f32> = global
            .as_slice()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm: l2_norm(&step),
            server_lr: self.inner.config().server_lr as f64,
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.inner.eval_plan()
    }
}
