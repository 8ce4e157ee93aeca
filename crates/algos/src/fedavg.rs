//! FedAvg (ALGORITHMS.md A.1): uniform sampling, local SGD under each client's rate
//! plan, example-weighted averaging, server step `x ← x + η_g·Δ̄` (η_g = 1 is the
//! paper's FedAvg). Per-client plans come from a [`RatePolicy`]; when they make
//! clients' rate sums differ, updates are normalised (§1.1, [`Normalize`]).

use crate::aggregate::aggregate;
pub use crate::aggregate::Normalize;
use crate::sampling::Sampling;
use fedpace_core::{
    AggregateSummary, ClientId, ClientInfo, Error, RatePlan, RatePolicy, Reply, Result, Strategy,
    TrainIns, TrainRes,
};
use fedpace_params::{l2_norm, ParamTree};
use std::sync::Arc;

/// FedAvg settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FedAvgConfig {
    /// Who trains each round.
    pub sampling: Sampling,
    /// Server rate η_g applied to the aggregate update.
    pub server_lr: f32,
    /// Objective-consistency normalisation.
    pub normalize: Normalize,
    /// The plan every client starts from before the policy adjusts it.
    pub base_plan: RatePlan,
}

impl FedAvgConfig {
    /// Checks ranges; errors name the field.
    pub fn validate(&self, num_groups: usize) -> Result<()> {
        self.sampling.validate("strategy.sampling")?;
        if !(self.server_lr.is_finite() && self.server_lr > 0.0) {
            return Err(Error::invalid(
                "strategy.server_lr",
                self.server_lr,
                "must be > 0",
            ));
        }
        self.base_plan.validate(num_groups)
    }
}

/// The FedAvg strategy with a rate policy.
pub struct FedAvg {
    cfg: FedAvgConfig,
    policy: Box<dyn RatePolicy>,
    started: bool,
}

impl FedAvg {
    /// FedAvg with the given settings and policy.
    pub fn new(cfg: FedAvgConfig, policy: Box<dyn RatePolicy>) -> Self {
        Self {
            cfg,
            policy,
            started: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &FedAvgConfig {
        &self.cfg
    }

    /// The rate policy (strategies built on FedAvg's sampling and plans let it observe).
    pub fn policy_mut(&mut self) -> &mut dyn RatePolicy {
        self.policy.as_mut()
    }
}

/// Looks a client up in a pool sorted by id.
pub fn find_client(pool: &[ClientInfo], id: ClientId) -> Option<&ClientInfo> {
    match pool.get(id as usize) {
        Some(c) if c.id == id => Some(c),
        _ => pool
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &pool[i]),
    }
}

impl Strategy for FedAvg {
    fn describe(&self) -> String {
        format!(
            "fedavg(server_lr={}, normalize={:?}, policy={})",
            self.cfg.server_lr,
            self.cfg.normalize,
            self.policy.describe()
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &[ClientInfo],
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        if !self.started {
            self.policy.start(pool)?;
            self.started = true;
        }
        let groups = global.spec().num_groups();
        let ids = self.cfg.sampling.sample(pool, round, seed);
        ids.into_iter()
            .map(|id| {
                let info = find_client(pool, id)
                    .ok_or_else(|| Error::invalid("client", id, "a client of the pool"))?;
                let plan = self.policy.plan(round, info, &self.cfg.base_plan)?;
                plan.validate(groups)?;
                Ok((
                    id,
                    TrainIns {
                        round,
                        params: global.clone(),
                        plan,
                        seed,
                        extras: Default::default(),
                    },
                ))
            })
            .collect()
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &[ClientInfo],
    ) -> Result<AggregateSummary> {
        let ok: Vec<(ClientId, &TrainRes)> = replies
            .iter()
            .filter_map(|r| r.result.as_ref().ok().map(|res| (r.client, res)))
            .filter(|(_, r)| r.num_examples > 0)
            .collect();
        if ok.is_empty() {
            let first = replies
                .iter()
                .find_map(|r| r.result.as_ref().err().map(|e| e.to_string()))
                .unwrap_or_else(|| "no client had training data".into());
            return Err(Error::AllClientsFailed {
                round,
                clients: replies.len(),
                first,
            });
        }
        let weights: Vec<f64> = ok.iter().map(|(_, r)| r.num_examples as f64).collect();
        let agg = aggregate(global.spec(), &ok, &weights, self.cfg.normalize);
        let lr = self.cfg.server_lr;
        for (x, d) in global.as_mut_slice().iter_mut().zip(&agg.delta) {
            *x += lr * d;
        }
        for (id, r) in &ok {
            if let Some(info) = find_client(pool, *id) {
                self.policy.observe(round, info, &r.report);
            }
        }
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm: lr as f64 * l2_norm(&agg.delta),
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.cfg.base_plan.clone()
    }
}
