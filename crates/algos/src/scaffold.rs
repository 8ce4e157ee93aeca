//! SCAFFOLD (ALGORITHMS.md B.2): control variates correct client drift.
//!
//! Client i (holding c_i in its [`LocalState`](fedpace_core::LocalState), which the grid
//! keeps between rounds) runs its plan on `g_i(y) − c_i + c`, then refreshes c_i by
//! option I (`∇F_i(x)`, an extra pass) or option II (`c_i − c + (x − y)/Λ_i`, per
//! parameter group, where Λ_i = Σ_s η_{i,s} is the client's own rate sum: the
//! rate-aware form of `(x − y)/(K η_l)`, so per-client and per-layer rates are exact).
//! It returns Δy_i and Δc_i ([`ResExtras::Scaffold`]).
//!
//! Server: `x ← x + η_g · (1/|S|) Σ Δy_i` (a simple mean, as the paper; objective-
//! consistency normalisation as in FedAvg when rate sums differ), then
//! `c ← c + (1/N) Σ_{i∈S} Δc_i` with N the whole pool.

use crate::aggregate::aggregate;
use crate::aggregate::usable;
use crate::fedavg::{FedAvg, FedAvgConfig};
use fedpace_core::{
    AggregateSummary, ClientId, ClientPool, Error, InsExtras, RatePlan, RatePolicy, Reply,
    ResExtras, Result, ScaffoldOption, Strategy, TrainIns, TrainRes,
};
use fedpace_params::{l2_norm, ParamTree};
use std::sync::Arc;

/// The SCAFFOLD strategy (FedAvg's sampling and rate plans, plus control variates).
pub struct Scaffold {
    inner: FedAvg,
    option: ScaffoldOption,
    control: Arc<Vec<f32>>,
}

impl Scaffold {
    /// SCAFFOLD with `option`; the server control variate starts at 0.
    pub fn new(cfg: FedAvgConfig, option: ScaffoldOption, policy: Box<dyn RatePolicy>) -> Self {
        Self {
            inner: FedAvg::new(cfg, policy),
            option,
            control: Arc::new(Vec::new()),
        }
    }

    /// The server control variate c (empty before the first round).
    pub fn server_control(&self) -> &[f32] {
        &self.control
    }
}

impl Strategy for Scaffold {
    fn describe(&self) -> String {
        format!(
            "scaffold(option={:?}) on {}",
            self.option,
            self.inner.describe()
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        if self.control.len() != global.as_slice().len() {
            self.control = Arc::new(vec![0.0; global.as_slice().len()]);
        }
        let mut ins = self.inner.configure_train(round, global, pool, seed)?;
        for (_, i) in &mut ins {
            i.extras = InsExtras::Scaffold {
                server_control: self.control.clone(),
                option: self.option,
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
        let mut dc = vec![0f64; global.as_slice().len()];
        for (id, r) in &ok {
            let ResExtras::Scaffold { control_delta } = &r.extras else {
                return Err(Error::invalid(
                    format!("client {id}: reply extras"),
                    "none",
                    "a SCAFFOLD control-variate delta",
                ));
            };
            for (a, d) in dc.iter_mut().zip(control_delta) {
                *a += *d as f64;
            }
        }
        let weights = vec![1.0; ok.len()];
        let agg = aggregate(global.spec(), &ok, &weights, self.inner.config().normalize);
        let lr = self.inner.config().server_lr;
        for (x, d) in global.as_mut_slice().iter_mut().zip(&agg.delta) {
            *x += lr * d;
        }
        let n = pool.len().max(1) as f64;
        let c = Arc::make_mut(&mut self.control);
        for (cv, d) in c.iter_mut().zip(&dc) {
            *cv = (*cv as f64 + d / n) as f32;
        }
        for (id, r) in &ok {
            if let Ok(info) = pool.info(*id) {
                self.inner.policy_mut().observe(round, &info, &r.report);
            }
        }
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm: lr as f64 * l2_norm(&agg.delta),
            server_lr: lr as f64,
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.inner.eval_plan()
    }
}
