//! FedAvg (ALGORITHMS.md A.1): uniform sampling, local SGD under each client's rate
//! plan, example-weighted averaging, server step `x ← x + η_g·Δ̄` (η_g = 1 is the
//! paper's FedAvg). Per-client plans come from a [`RatePolicy`]; when they make
//! clients' rate sums differ, updates are normalised (§1.1, [`Normalize`]).

use crate::aggregate::aggregate;
use crate::aggregate::usable;
pub use crate::aggregate::Normalize;
use crate::fedopt::{average_states, ServerStep};
use crate::sampling::Sampling;
use fedpace_core::{
    AggregateSummary, ClientId, ClientInfo, ClientPool, Error, InsExtras, RatePlan, RatePolicy,
    Reply, ResExtras, Result, Strategy, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::State;
use fedpace_params::ParamTree;
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

/// The FedAvg strategy with a rate policy, and the family that shares everything but
/// the server step (FedAvgM, FedOpt, FedExP, FedNova: see [`crate::fedopt`]).
pub struct FedAvg {
    cfg: FedAvgConfig,
    policy: Box<dyn RatePolicy>,
    started: bool,
    name: &'static str,
    server: ServerStep,
    uniform_weights: bool,
    client_state: Option<Arc<State>>,
}

impl FedAvg {
    /// FedAvg with the given settings and policy (server step `x ← x + η_g·Δ̄`).
    pub fn new(cfg: FedAvgConfig, policy: Box<dyn RatePolicy>) -> Self {
        let server = ServerStep::Sgd {
            server_lr: cfg.server_lr as f64,
        };
        Self {
            cfg,
            policy,
            started: false,
            name: "fedavg",
            server,
            uniform_weights: false,
            client_state: None,
        }
    }

    /// Replaces the server step, naming the strategy `name` in logs.
    pub fn with_server(mut self, name: &'static str, server: ServerStep) -> Self {
        self.name = name;
        self.server = server;
        self
    }

    /// Averages clients uniformly instead of by their number of examples (FedExP).
    pub fn with_uniform_weights(mut self, uniform: bool) -> Self {
        self.uniform_weights = uniform;
        self
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

impl Strategy for FedAvg {
    fn describe(&self) -> String {
        format!(
            "{}(server={}, normalize={:?}, policy={})",
            self.name,
            self.server.describe(),
            self.cfg.normalize,
            self.policy.describe()
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
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
                let info = pool.info(id)?;
                let plan = self.policy.plan(round, &info, &self.cfg.base_plan)?;
                plan.validate(groups)?;
                let extras = match (&self.client_state, plan.state_mode) {
                    (Some(s), fedpace_optim::StateMode::ServerInit) => {
                        InsExtras::OptimizerState(s.clone())
                    }
                    _ => InsExtras::None,
                };
                Ok((
                    id,
                    TrainIns {
                        round,
                        params: global.clone(),
                        plan,
                        seed,
                        extras,
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
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        let ok = usable(round, replies, |_| true)?;
        let mut weights: Vec<f64> = ok
            .iter()
            .map(|(_, r)| {
                if self.uniform_weights {
                    1.0
                } else {
                    r.num_examples as f64
                }
            })
            .collect();
        // Aggregation-side scaling from the policy (§C.6).
        let mut scales = vec![1.0f64; ok.len()];
        let infos: Option<Vec<ClientInfo>> = ok.iter().map(|(id, _)| pool.info(*id).ok()).collect();
        if let Some(infos) = infos {
            let infos: Vec<(&ClientInfo, &TrainReport)> = infos
                .iter()
                .zip(&ok)
                .map(|(i, (_, r))| (i, &r.report))
                .collect();
            self.policy
                .adjust_aggregation(round, &infos, &mut weights, &mut scales);
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().sum::<f64>() <= 0.0
        {
            return Err(Error::invalid(
                "policy",
                format!("{weights:?}"),
                "aggregation weights >= 0 with a positive sum",
            ));
        }
        let scaled: Vec<TrainRes>;
        let used: Vec<(ClientId, &TrainRes)> = if scales.iter().all(|s| *s == 1.0) {
            ok.clone()
        } else {
            scaled = ok
                .iter()
                .zip(&scales)
                .map(|((_, r), s)| {
                    let mut r2 = TrainRes {
                        delta: r.delta.clone(),
                        num_examples: r.num_examples,
                        report: r.report.clone(),
                        extras: ResExtras::None,
                    };
                    let f = *s as f32;
                    r2.delta.as_mut_slice().iter_mut().for_each(|x| *x *= f);
                    r2.report.update_norm *= s;
                    r2
                })
                .collect();
            ok.iter().map(|(id, _)| *id).zip(scaled.iter()).collect()
        };
        let agg = aggregate(global.spec(), &used, &weights, self.cfg.normalize);
        let spec = global.spec().clone();
        let before = global.as_slice().to_vec();
        let p: Vec<f64> = agg.clients.iter().map(|c| c.weight).collect();
        let deltas: Vec<&[f32]> = used.iter().map(|(_, r)| r.delta.as_slice()).collect();
        let server_lr =
            self.server
                .apply(global.as_mut_slice(), &agg.delta, &deltas, &p, &spec, round)?;
        let step_norm = before
            .iter()
            .zip(global.as_slice())
            .map(|(a, b)| ((b - a) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        // Server-initialised client optimiser state: the p̃-weighted average of returned states.
        let states: Vec<(&State, f64)> = ok
            .iter()
            .zip(&p)
            .filter_map(|((_, r), w)| match &r.extras {
                ResExtras::OptimizerState(s) => Some((s, *w)),
                _ => None,
            })
            .collect();
        if !states.is_empty() {
            let (s, w): (Vec<&State>, Vec<f64>) = states.into_iter().unzip();
            self.client_state = Some(Arc::new(average_states(&s, &w)?));
        }
        for (id, r) in &ok {
            if let Ok(info) = pool.info(*id) {
                self.policy.observe(round, &info, &r.report);
            }
        }
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm,
            server_lr,
        })
    }

    fn eval_plan(&self) -> RatePlan {
        self.cfg.base_plan.clone()
    }
}
