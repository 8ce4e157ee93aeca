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

use crate::aggregate::{
    aggregate_linear, aggregate_masked, common_scale, usable, Aggregated, Normalize,
};
use crate::fedopt::{average_states, ServerStep};
use crate::local::{OptimizerStateDown, OptimizerStateUp, PreScale};
use crate::sampling::Sampling;
use crate::stages::robust;
use crate::stages::server::{upload_bytes, ServerStages};
use crate::stages::StagesConfig;
use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{
    AggregateSummary, ClientId, ClientInfo, ClientPool, Error, ExchangeIns, Extensions, RatePlan,
    RatePolicy, Reply, Result, RoundSummary, Strategy, TrainIns, TrainReport, TrainRes,
};
use fedpace_optim::{State, StateMode};
use fedpace_params::{l2_norm, ParamTree};
use rayon::prelude::*;
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
    /// Differential privacy, secure aggregation, robust aggregation, compression
    /// (`crate::stages`; none by default).
    pub stages: StagesConfig,
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
        self.stages.validate()?;
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
    /// Sets the algorithm's part of one client's plan, after the rate policy (FedEx's
    /// drawn configuration, a learned rate). `seed` is the run's seed.
    fn plan(
        &mut self,
        _round: u32,
        _info: &ClientInfo,
        _pool: &dyn ClientPool,
        _seed: u64,
        _plan: &mut RatePlan,
    ) -> Result<()> {
        Ok(())
    }
    /// What a learned controller reports each round (named scalars: FedEx's θ,
    /// FedHyper's rate), written to `metrics.jsonl` as `learned`.
    fn learned(&self) -> std::collections::BTreeMap<String, f64> {
        Default::default()
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
    /// The stages' runtime (built before the first round or a restore).
    stages: Option<ServerStages>,
    /// The run seed, for protocol exchanges.
    seed: u64,
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
    #[serde(default)]
    stages: Vec<u8>,
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
            stages: None,
            seed: 0,
        }
    }

    /// The stages' runtime, built on first use.
    fn stages(&mut self) -> Result<&mut ServerStages> {
        if self.stages.is_none() {
            self.stages = Some(ServerStages::new(
                &self.settings.stages,
                &self.settings,
                self.weighting,
            )?);
        }
        Ok(self.stages.as_mut().expect("built above"))
    }

    /// Secure aggregation's server stage, when on (to read the last round's raw sum).
    pub fn secure_stage(&self) -> Option<&crate::stages::secure::SecureStage> {
        self.stages.as_ref()?.secure()
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
        pool: &dyn ClientPool,
        global: &Arc<ParamTree>,
        seed: u64,
        sampled: bool,
    ) -> Result<TrainIns> {
        let mut plan = self.policy.plan(round, info, &self.settings.base_plan)?;
        self.hooks.plan(round, info, pool, seed, &mut plan)?;
        plan.validate(global.spec().num_groups())?;
        let server_init = plan.state_mode == StateMode::ServerInit;
        let mut ins = TrainIns::new(round, global.clone(), plan, seed);
        if server_init {
            if let Some(s) = &self.client_state {
                ins.ext.insert(OptimizerStateDown(s.clone()));
            }
        }
        let stages = self.stages()?;
        let own_scaling = stages.scales_linear();
        stages.attach(&mut ins, info, sampled)?;
        if self.settings.aggregation == AggregationPath::Linear && !own_scaling {
            ins.ext.insert(PreScale {
                by_examples: self.weighting == Weighting::Examples,
                normalize: self.settings.normalize == Normalize::On,
                weight_scale: 1.0,
            });
        }
        self.hooks.attach(round, &mut ins)?;
        crate::probe::attach_for_policy(self.policy.as_ref(), &mut ins);
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
        if let Some(rule) = self.stages.as_ref().and_then(|s| s.robust()) {
            let total: f64 = weights.iter().sum();
            let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
            let (coef, normalized) = common_scale(
                used,
                &p,
                self.settings.normalize,
                &shared,
                global.spec().num_groups(),
            );
            return robust::aggregate(rule, global.spec(), used, &p, &coef, normalized);
        }
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

    /// The clients whose training is aggregated this round: sampled, successful, with data.
    fn participants(&self, replies: &[Reply<TrainRes>]) -> Vec<ClientId> {
        replies
            .iter()
            .filter(|r| self.sampled.binary_search(&r.client).is_ok())
            .filter(|r| r.result.as_ref().is_ok_and(|res| res.num_examples > 0))
            .map(|r| r.client)
            .collect()
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
        let stages = ServerStages::new(&self.settings.stages, &self.settings, self.weighting)
            .map(|s| s.describe())
            .unwrap_or_default();
        format!(
            "{}({}server={}, normalize={:?}, aggregation={:?}, policy={}{})",
            self.name,
            if hooks.is_empty() {
                String::new()
            } else {
                format!("{hooks}, ")
            },
            self.server.describe(),
            self.settings.normalize,
            self.settings.aggregation,
            self.policy.describe(),
            if stages.is_empty() {
                String::new()
            } else {
                format!(", {stages}")
            }
        )
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>> {
        let groups = global.spec().num_groups();
        if !self.started {
            self.policy.seed(seed);
            self.policy.start(pool)?;
            self.hooks.start(global)?;
            let settings = self.settings.clone();
            self.stages()?.start(pool, &settings, groups)?;
            self.started = true;
        }
        self.seed = seed;
        // Stage 1: sample (Poisson under differential privacy).
        self.sampled = match self.stages()?.sample(pool, round, seed) {
            Some(s) => s,
            None => self.settings.sampling.sample(pool, round, seed),
        };
        let sampled = self.sampled.clone();
        self.stages()?.plan_round(pool, &sampled, groups, seed)?;
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
                let aggregated = sampled.binary_search(&id).is_ok();
                Ok((
                    id,
                    self.instruction(round, &info, pool, global, seed, aggregated)?,
                ))
            })
            .collect()
    }

    fn exchange(
        &mut self,
        round: u32,
        trained: &[Reply<TrainRes>],
        answers: Option<Vec<Reply<Extensions>>>,
    ) -> Result<Vec<(ClientId, ExchangeIns)>> {
        let participants = self.participants(trained);
        let len = trained
            .iter()
            .find_map(|r| r.result.as_ref().ok().map(|r| r.delta.as_slice().len()))
            .unwrap_or(0);
        self.stages()?.exchange(round, len, &participants, answers)
    }

    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary> {
        let takes_over = self.stages()?.aggregates();
        // Stage 5: accept (under DP a Poisson-sampled round may have nobody).
        let sampled = &self.sampled;
        let received = if replies.is_empty() && takes_over {
            Vec::new()
        } else {
            usable(round, replies, |c| sampled.binary_search(&c).is_ok())?
        };
        let upload_bytes = upload_bytes(&received)?;
        let decoded = self.stages()?.decompress(&received)?;
        let accepted: Vec<(ClientId, &TrainRes)> = match &decoded {
            Some(d) => received.iter().map(|(id, _)| *id).zip(d.iter()).collect(),
            None => received,
        };
        let (agg, sq_norms, privacy, secure) = if takes_over {
            // Stages 6–7 under DP or secure aggregation: clip, weight, sum, noise.
            let participants = self.participants(replies);
            let shared = self.hooks.shared_groups();
            let st = self.stages()?.aggregate(
                round,
                global.spec(),
                &accepted,
                &participants,
                &shared,
            )?;
            (st.agg, st.sq_norms, st.privacy, st.secure)
        } else {
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
            let sq_norms: Vec<f64> = match self.settings.aggregation {
                // Only FedExP's server step reads the clients' norms; the others skip a
                // pass over every update.
                _ if !self.server.uses_client_norms() => Vec::new(),
                // One norm per client, each computed whole on one thread (the same
                // value on any thread count); in parallel because a pass over every
                // update otherwise runs on one thread while the others wait.
                AggregationPath::PerClient => used
                    .par_iter()
                    .map(|(_, r)| l2_norm(r.delta.as_slice()).powi(2))
                    .collect(),
                AggregationPath::Linear => used
                    .iter()
                    .map(|(_, r)| r.report.update_norm.powi(2))
                    .collect(),
            };
            (agg, sq_norms, None, None)
        };
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
        // Stage 11: observe every trained client that reported (what the private-rates
        // mode lets the policy see).
        let stages = self.stages.as_ref().filter(|s| !s.is_empty());
        for r in replies {
            if let Ok(res) = &r.result {
                if res.num_examples > 0 {
                    if let Ok(info) = pool.info(r.client) {
                        match stages {
                            None => self.policy.observe(round, &info, &res.report),
                            Some(st) => {
                                if let Some(report) = st.observed(res) {
                                    self.policy.observe(round, &info, &report);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(AggregateSummary {
            clients: agg.clients,
            normalized: agg.normalized,
            step_norm,
            server_lr,
            learned: self.hooks.learned(),
            privacy,
            secure,
            upload_bytes,
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
            stages: match &self.stages {
                Some(s) => s.save_state()?,
                None => Vec::new(),
            },
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let s: PipelineState = from_cbor(bytes, "strategy state")?;
        self.server.restore_state(&s.server)?;
        self.hooks.restore_state(&s.hooks)?;
        self.policy.restore_state(&s.policy)?;
        self.stages()?.restore_state(&s.stages)?;
        self.started = false;
        self.client_state = s.client_state.map(Arc::new);
        Ok(())
    }
}
