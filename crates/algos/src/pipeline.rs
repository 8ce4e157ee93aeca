//! The synchronous round as named stages — the one [`Strategy`] every synchronous
//! algorithm runs through:
//!
//! 1. **sample** the round's clients ([`Sampling`]);
//! 2. **plan**: the [`RatePolicy`] gives each its [`RatePlan`];
//! 3. **attach** payloads: the server-initialised optimiser state, the linear path's
//!    pre-scaling, then the algorithm's own ([`ServerHooks::attach`]);
//! 4. *(the grid trains the clients)*;
//! 5. **accept** the usable replies (successful, with data, of aggregated clients);
//! 6. **transform** each client's contribution: weight (examples or uniform) and the
//!    policy's aggregation-side weights and scales (clipping, inverse variance);
//! 7. **aggregate**: per client (normalised by Σ rates when asked, over the shared
//!    groups) or linear (clients pre-scaled, the server only sums);
//! 8. **post-aggregate hooks** of the algorithm (SCAFFOLD's c, FedDyn's h), which may
//!    hand the server step a correction of the model (FedDyn's −h/α);
//! 9. **server step**: the server optimiser on the aggregate (`sgd` = FedAvg's
//!    `x ← x + η_g·Δ̄`, or FedAvgM/FedAdagrad/FedAdam/FedYogi/FedExP);
//! 10. **server-init state**: the p̃-weighted average of returned optimiser states;
//! 11. **observe** every trained client's report, then (after evaluation) the round
//!     ([`RatePolicy::observe_round`]).
//!
//! An algorithm is a [`ServerHooks`] value plus its client half (`crate::client`), so
//! aggregation-side policies, server optimisers and server-initialised state work the
//! same under every synchronous algorithm. Every stage that keeps state across rounds
//! (server step, hooks, server-init state, policy) saves and restores it
//! ([`Strategy::save_state`]). See docs/arch/0009-algorithms-as-modules-and-stages.md.

use crate::aggregate::{aggregate_linear, aggregate_masked, usable, Aggregated, Normalize};
use crate::fedopt::{average_states, ServerStep};
use crate::local::{OptimizerStateDown, OptimizerStateUp, PreScale};
use crate::sampling::Sampling;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{
    AggregateSummary, ClientId, ClientInfo, ClientPool, Error, Extensions, RatePlan, RatePolicy,
    Reply, Result, RoundSummary, Strategy, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::{State, StateMode};
use fedpace_params::{l2_norm, ParamTree};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::Arc;

/// How clients' updates are weighted before aggregation (before any policy changes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weighting {
    /// By the number of training examples n_k (FedAvg).
    #[default]
    Examples,
    /// Equally (SCAFFOLD, FedDyn, FedExP: the papers' simple means).
    Uniform,
}

/// Which aggregation path a strategy takes (`strategy.aggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggregationPath {
    /// The server sees every client's update (weights, scaling, cosines per client).
    #[default]
    PerClient,
    /// Clients pre-scale their updates and the server only sums them (the shape secure
    /// aggregation needs); per-client diagnostics (cosines) are not computed.
    Linear,
}

/// What the stages of a synchronous algorithm need besides the policy and the hooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Who trains each round.
    pub sampling: Sampling,
    /// Server rate η_g of the default server step (`x ← x + η_g·Δ̄`).
    pub server_lr: f64,
    /// Objective-consistency normalisation.
    pub normalize: Normalize,
    /// Per-client or linear aggregation.
    pub aggregation: AggregationPath,
    /// The plan every client starts from before the policy adjusts it.
    pub base_plan: RatePlan,
}

impl Settings {
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

/// What the post-aggregate hooks see.
pub struct AfterAggregate<'a> {
    /// Round.
    pub round: u32,
    /// The pool (its size is SCAFFOLD's and FedDyn's N).
    pub pool: &'a dyn ClientPool,
    /// The accepted replies, as the clients sent them.
    pub accepted: &'a [(ClientId, &'a TrainRes)],
    /// The aggregate update Δ̄.
    pub aggregate: &'a [f32],
    /// The global model before the server step.
    pub global: &'a ParamTree,
}

/// An algorithm's server half: hooks on the stages of [`Pipeline`]. Every method has a
/// default, so FedAvg's hooks are empty.
pub trait ServerHooks: Send {
    /// Key settings for logs (`option=II`, `alpha=0.1`).
    fn describe(&self) -> String {
        String::new()
    }
    /// Before the first round, with the global model (size state, resolve group
    /// labels); called again after a restore, so it must keep state it already has.
    fn start(&mut self, _global: &ParamTree) -> Result<()> {
        Ok(())
    }
    /// Whether every client trains each round while only the sampled ones are
    /// aggregated (personalised `train_all`).
    fn train_everyone(&self) -> bool {
        false
    }
    /// Adds the algorithm's payloads to one client's instruction.
    fn attach(&mut self, _round: u32, _ins: &mut TrainIns) -> Result<()> {
        Ok(())
    }
    /// `shared[g] == false` marks a personal group: never aggregated, never moved.
    fn shared_groups(&self) -> Vec<bool> {
        Vec::new()
    }
    /// After aggregation, before the server step: update the algorithm's server state
    /// from the accepted replies; may return an additive correction of the model that
    /// the server step applies with Δ̄ (FedDyn's −h/α).
    fn after_aggregate(&mut self, _cx: &AfterAggregate<'_>) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    /// Payloads of evaluation instructions (a personalised recipe).
    fn eval_ext(&self) -> Extensions {
        Extensions::new()
    }
    /// The hooks' state across rounds, encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores [`ServerHooks::save_state`]'s bytes.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        fedpace_core::traits::stateless("strategy hooks", bytes)
    }
    /// For inspection (tests, tools): the hooks as `Any`.
    fn as_any(&self) -> &dyn Any;
}

/// FedAvg's hooks: none.
#[derive(Debug, Default)]
pub struct NoHooks;

impl ServerHooks for NoHooks {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// No hooks, but key settings to show in logs (FedProx's μ).
#[derive(Debug, Default)]
pub struct Label(pub String);

impl ServerHooks for Label {
    fn describe(&self) -> String {
        self.0.clone()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The stages of a synchronous round (see the module doc).
pub struct Pipeline {
    name: &'static str,
    settings: Settings,
    policy: Box<dyn RatePolicy>,
    hooks: Box<dyn ServerHooks>,
    server: ServerStep,
    weighting: Weighting,
    started: bool,
    /// The clients sampled this round (the aggregated ones).
    sampled: Vec<ClientId>,
    /// Server-initialised client optimiser state.
    client_state: Option<Arc<State>>,
}

/// What [`Pipeline::save_state`] encodes.
/// Not saved: whether the policy and hooks were started (they are started again after
/// a restore, from the pool and the model, keeping what was restored).
#[derive(Serialize, Deserialize)]
struct PipelineState {
    client_state: Option<State>,
    server: Vec<u8>,
    hooks: Vec<u8>,
    policy: Vec<u8>,
}

impl Pipeline {
    /// The stages with `name` for logs, the default server step `sgd(η_g)` and
    /// example weights.
    pub fn new(
        name: &'static str,
        settings: Settings,
        policy: Box<dyn RatePolicy>,
        hooks: Box<dyn ServerHooks>,
    ) -> Self {
        let server = ServerStep::Sgd {
            server_lr: settings.server_lr,
        };
        Self {
            name,
            settings,
            policy,
            hooks,
            server,
            weighting: Weighting::Examples,
            started: false,
            sampled: Vec::new(),
            client_state: None,
        }
    }

    /// Replaces the server step.
    pub fn with_server(mut self, server: ServerStep) -> Self {
        self.server = server;
        self
    }

    /// Replaces the initial weighting of clients.
    pub fn with_weighting(mut self, weighting: Weighting) -> Self {
        self.weighting = weighting;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The algorithm's hooks, as `T` when they are one (e.g. SCAFFOLD's, to read c).
    pub fn hooks<T: 'static>(&self) -> Option<&T> {
        self.hooks.as_any().downcast_ref::<T>()
    }

    /// Stage 1–3 for one client: its plan from the policy and its payloads.
    fn instruction(
        &mut self,
        round: u32,
        info: &ClientInfo,
        global: &Arc<ParamTree>,
        seed: u64,
    ) -> Result<TrainIns> {
        let plan = self.policy.plan(round, info, &self.settings.base_plan)?;
        plan.validate(global.spec().num_groups())?;
        let server_init = plan.state_mode == StateMode::ServerInit;
        let mut ins = TrainIns::new(round, global.clone(), plan, seed);
        if server_init {
            if let Some(s) = &self.client_state {
                ins.ext.insert(OptimizerStateDown(s.clone()));
            }
        }
        if self.settings.aggregation == AggregationPath::Linear {
            ins.ext.insert(PreScale {
                by_examples: self.weighting == Weighting::Examples,
                normalize: self.settings.normalize == Normalize::On,
            });
        }
        self.hooks.attach(round, &mut ins)?;
        Ok(ins)
    }

    /// Stage 6: each accepted client's weight and the policy's scaling; the replies to
    /// aggregate (copies with scaled updates where a scale is not 1).
    fn transform(
        &mut self,
        round: u32,
        accepted: &[(ClientId, &TrainRes)],
        pool: &dyn ClientPool,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let mut weights: Vec<f64> = accepted
            .iter()
            .map(|(_, r)| match self.weighting {
                Weighting::Examples => r.num_examples as f64,
                Weighting::Uniform => 1.0,
            })
            .collect();
        let mut scales = vec![1.0f64; accepted.len()];
        let infos: Option<Vec<ClientInfo>> =
            accepted.iter().map(|(id, _)| pool.info(*id).ok()).collect();
        if let Some(infos) = infos {
            let pairs: Vec<(&ClientInfo, &TrainReport)> = infos
                .iter()
                .zip(accepted)
                .map(|(i, (_, r))| (i, &r.report))
                .collect();
            self.policy
                .adjust_aggregation(round, &pairs, &mut weights, &mut scales);
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
        Ok((weights, scales))
    }

    /// Stage 7.
    fn aggregate(
        &self,
        global: &ParamTree,
        used: &[(ClientId, &TrainRes)],
        weights: &[f64],
    ) -> Result<Aggregated> {
        let shared = self.hooks.shared_groups();
        match self.settings.aggregation {
            AggregationPath::PerClient => Ok(aggregate_masked(
                global.spec(),
                used,
                weights,
                self.settings.normalize,
                &shared,
            )),
            AggregationPath::Linear => aggregate_linear(
                global.spec(),
                used,
                self.settings.normalize == Normalize::On,
                &shared,
            ),
        }
    }

    /// Stage 10: the p̃-weighted average of the optimiser states clients returned.
    fn average_client_states(
        &mut self,
        accepted: &[(ClientId, &TrainRes)],
        p: &[f64],
    ) -> Result<()> {
        let states: Vec<(&State, f64)> = accepted
            .iter()
            .zip(p)
            .filter_map(|((_, r), w)| r.ext.get::<OptimizerStateUp>().map(|s| (&s.0, *w)))
            .collect();
        if !states.is_empty() {
            let (s, w): (Vec<&State>, Vec<f64>) = states.into_iter().unzip();
            self.client_state = Some(Arc::new(average_states(&s, &w)?));
        }
        Ok(())
    }
}

impl Strategy for Pipeline {
    fn describe(&self) -> String {
        let hooks = self.hooks.describe();
        format!(
            "{}({}server={}, normalize={:?}, aggregation={:?}, policy={})",
            self.name,
            if hooks.is_empty() {
                String::new()
            } else {
                format!("{hooks}, ")
            },
            self.server.describe(),
            self.settings.normalize,
            self.settings.aggregation,
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
            self.hooks.start(global)?;
            self.started = true;
        }
        // Stage 1: sample.
        self.sampled = self.settings.sampling.sample(pool, round, seed);
        let train: Vec<ClientId> = if self.hooks.train_everyone() {
            pool.ids().collect()
        } else {
            self.sampled.clone()
        };
        // Stages 2 and 3: plan, attach.
        train
            .into_iter()
            .map(|id| {
                let info = pool.info(id)?;
                Ok((id, self.instruction(round, &info, global, seed)?))
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
        // Stage 5: accept.
        let sampled = &self.sampled;
        let accepted = usable(round, replies, |c| sampled.binary_search(&c).is_ok())?;
        // Stage 6: transform.
        let (weights, scales) = self.transform(round, &accepted, pool)?;
        let scaled: Vec<TrainRes>;
        let used: Vec<(ClientId, &TrainRes)> = if scales.iter().all(|s| *s == 1.0) {
            accepted.clone()
        } else {
            scaled = accepted
                .iter()
                .zip(&scales)
                .map(|((_, r), s)| {
                    let mut r2 = TrainRes {
                        delta: r.delta.clone(),
                        num_examples: r.num_examples,
                        report: r.report.clone(),
                        ext: Extensions::new(),
                    };
                    let f = *s as f32;
                    r2.delta.as_mut_slice().iter_mut().for_each(|x| *x *= f);
                    r2.report.update_norm *= s;
                    r2
                })
                .collect();
            accepted
                .iter()
                .map(|(id, _)| *id)
                .zip(scaled.iter())
                .collect()
        };
        // Stage 7: aggregate.
        let agg = self.aggregate(global, &used, &weights)?;
        // Stage 8: post-aggregate hooks.
        let correction = self.hooks.after_aggregate(&AfterAggregate {
            round,
            pool,
            accepted: &accepted,
            aggregate: &agg.delta,
            global,
        })?;
        // Stage 9: server step.
        let spec = global.spec().clone();
        let before = global.as_slice().to_vec();
        let p: Vec<f64> = agg.clients.iter().map(|c| c.weight).collect();
        let sq_norms: Vec<f64> = match self.settings.aggregation {
            AggregationPath::PerClient => used
                .iter()
                .map(|(_, r)| l2_norm(r.delta.as_slice()).powi(2))
                .collect(),
            AggregationPath::Linear => used
                .iter()
                .map(|(_, r)| r.report.update_norm.powi(2))
                .collect(),
        };
        let server_lr = self.server.apply(
            global.as_mut_slice(),
            &agg.delta,
            &sq_norms,
            &p,
            &spec,
            round,
            correction.as_deref(),
        )?;
        let step_norm = before
            .iter()
            .zip(global.as_slice())
            .map(|(a, b)| ((b - a) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        // Stage 10: server-initialised optimiser state.
        self.average_client_states(&accepted, &p)?;
        // Stage 11: observe every trained client that reported.
        for r in replies {
            if let Ok(res) = &r.result {
                if res.num_examples > 0 {
                    if let Ok(info) = pool.info(r.client) {
                        self.policy.observe(round, &info, &res.report);
                    }
                }
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
        self.settings.base_plan.clone()
    }

    fn eval_ext(&self) -> Extensions {
        self.hooks.eval_ext()
    }

    fn observe_round(&mut self, round: u32, summary: &RoundSummary<'_>) {
        self.policy.observe_round(round, summary);
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        to_cbor(&PipelineState {
            client_state: self.client_state.as_deref().cloned(),
            server: self.server.save_state()?,
            hooks: self.hooks.save_state()?,
            policy: self.policy.save_state()?,
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: PipelineState = from_cbor(bytes, "strategy state")?;
        self.server.restore_state(&s.server)?;
        self.hooks.restore_state(&s.hooks)?;
        self.policy.restore_state(&s.policy)?;
        self.started = false;
        self.client_state = s.client_state.map(Arc::new);
        Ok(())
    }
}
