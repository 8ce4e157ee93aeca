//! The traits that every part implements.
//!
//! Every part that holds state across rounds (strategies, their stages, rate policies)
//! exposes it as a value: [`Strategy::save_state`] / [`Strategy::restore_state`] and the
//! same pair on [`RatePolicy`], CBOR bytes of a serde struct, so a run can be
//! checkpointed and resumed without knowing what any part keeps.

use crate::ext::Extensions;
use crate::pool::ClientPool;
use crate::protocol::*;
use crate::summary::{AggregateSummary, EvalSummary, RoundTiming};
use crate::{Error, Result};
use fedpace_params::ParamTree;
use std::sync::Arc;

/// A participant that trains and evaluates on its own data. Its long-lived state is a
/// [`LocalState`] value that the grid stores between rounds and hands back; the client
/// object itself may be created afresh each round.
pub trait Client: Send {
    /// Trains from `ins.params` under `ins.plan`.
    fn train(&mut self, ins: &TrainIns, state: &mut LocalState) -> Result<TrainRes>;
    /// Evaluates on the local test split.
    fn evaluate(&mut self, ins: &EvalIns, state: &mut LocalState) -> Result<EvalRes>;
    /// Answers one step of a protocol the strategy runs after training (secure
    /// aggregation): `session` holds what the client keeps between the steps of one round.
    /// Default: the client takes part in no such protocol.
    fn exchange(
        &mut self,
        ins: &ExchangeIns,
        _state: &mut LocalState,
        _session: &mut Session,
    ) -> Result<Extensions> {
        Err(Error::invalid(
            "exchange",
            format!("message {:?}", ins.msg.names().collect::<Vec<_>>()),
            "a client with a part for this protocol (this client has none)",
        ))
    }
}

/// What a client keeps between the protocol steps of one round ([`Client::exchange`]):
/// a protocol's secrets (secure aggregation's keys). The grid holds it beside the client
/// for the round only: it is never stored with the client's [`LocalState`], never
/// checkpointed, and dropped when the client next trains.
#[derive(Default)]
pub struct Session(Option<Box<dyn std::any::Any + Send>>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Session(held)"
        } else {
            "Session(empty)"
        })
    }
}

impl Session {
    /// Keeps `value` (replacing what was kept).
    pub fn insert<T: std::any::Any + Send>(&mut self, value: T) {
        self.0 = Some(Box::new(value));
    }
    /// What is kept, as `T`.
    pub fn get_mut<T: std::any::Any + Send>(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.downcast_mut::<T>()
    }
    /// Takes what is kept out, as `T` (left in place when it is another type).
    pub fn take<T: std::any::Any + Send>(&mut self) -> Option<T> {
        match self.0.take()?.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(other) => {
                self.0 = Some(other);
                None
            }
        }
    }
    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Makes the client for an id (its data loaded or generated on demand).
pub type ClientFactory = Arc<dyn Fn(ClientId) -> Result<Box<dyn Client>> + Send + Sync>;

/// Assigns each sampled client its rate plan and learns from what clients report.
pub trait RatePolicy: Send {
    /// A short description for logs.
    fn describe(&self) -> String;
    /// The run seed, given before [`RatePolicy::start`]: policies that draw random
    /// numbers (exploration noise, sampled configurations) derive their streams from it
    /// ([`crate::rng`]). Default: ignored.
    fn seed(&mut self, _seed: u64) {}
    /// Called once with the pool before the first plan (e.g. to compute means from
    /// [`ClientPool::total_train`]). A pass over the pool is allowed here, once; rows
    /// are computed on demand, so keep only what is needed.
    fn start(&mut self, _pool: &dyn ClientPool) -> Result<()> {
        Ok(())
    }
    /// The plan for `client` in `round`, derived from the strategy's `base` plan.
    fn plan(&mut self, round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan>;
    /// Sees every successful report after aggregation (adaptive policies learn here).
    fn observe(&mut self, _round: u32, _client: &ClientInfo, _report: &TrainReport) {}
    /// Aggregation-side scaling (docs/algorithms.md §C.6), called before averaging with the
    /// successful clients of a round: may change each client's aggregation weight
    /// (`weights[i]`, unnormalised, ≥ 0) and the factor its update is multiplied by
    /// (`update_scales[i]`, starts at 1). Default: no change.
    fn adjust_aggregation(
        &mut self,
        _round: u32,
        _clients: &[(&ClientInfo, &TrainReport)],
        _weights: &mut [f64],
        _update_scales: &mut [f64],
    ) {
    }
    /// Whether [`RatePolicy::adjust_aggregation`] may change anything: strategies that
    /// cannot apply aggregation-side scaling (the asynchronous ones, the linear
    /// aggregation path) refuse such a policy at configuration time. Default: false.
    fn adjusts_aggregation(&self) -> bool {
        false
    }
    /// Sees the whole round once it is over: the aggregate and, on evaluated rounds,
    /// the evaluation (the reward signal a learned rate controller trains on).
    fn observe_round(&mut self, _round: u32, _round_summary: &RoundSummary<'_>) {}
    /// Whether the policy learns from the clients' validation signal: the synchronous
    /// round then asks every trained client for it (the validation probe of
    /// `fedpace-algos`), and [`RatePolicy::observe`] finds it in the report's `ext`.
    /// Default: false.
    fn reads_validation(&self) -> bool {
        false
    }
    /// The names of the client metadata payloads ([`ClientInfo::metadata`]) this policy
    /// reads; a run whose clients do not share them is refused before it starts.
    fn required_metadata(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// The policy's state across rounds (EMAs, bounds, running means), encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores what [`RatePolicy::save_state`] returned.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        stateless("rate policy", bytes)
    }
}

/// What [`RatePolicy::observe_round`] and [`Strategy::observe_round`] see of a round.
#[derive(Debug, Clone, Copy)]
pub struct RoundSummary<'a> {
    /// What aggregation did.
    pub aggregate: &'a AggregateSummary,
    /// The evaluation, on evaluated rounds.
    pub eval: Option<&'a EvalSummary>,
    /// The global model after the round.
    pub global: &'a ParamTree,
}

/// The default `restore_state` of parts that keep nothing.
pub fn stateless(what: &str, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("{what} state"),
            format!("{} bytes", bytes.len()),
            "none (this part keeps no state)",
        ))
    }
}

/// The server side of an algorithm: sampling, plans, aggregation. It never sees the
/// transport.
pub trait Strategy: Send {
    /// A short name (`fedavg`, …) and its key settings, for logs.
    fn describe(&self) -> String;
    /// Chooses clients and their plans for `round`. Look up only the clients you touch
    /// ([`ClientPool::info`]): the pool may have millions of them.
    fn configure_train(
        &mut self,
        round: u32,
        global: &Arc<ParamTree>,
        pool: &dyn ClientPool,
        seed: u64,
    ) -> Result<Vec<(ClientId, TrainIns)>>;
    /// Combines the replies (client-id order) into the new global parameters.
    fn aggregate_train(
        &mut self,
        round: u32,
        global: &mut ParamTree,
        replies: &[Reply<TrainRes>],
        pool: &dyn ClientPool,
    ) -> Result<AggregateSummary>;
    /// The plan used for fine-tuning at personalised evaluation.
    fn eval_plan(&self) -> RatePlan;
    /// The last round's place on the simulated clock, for strategies that simulate
    /// devices (read by the round loop after aggregation); `None` by default.
    fn round_timing(&self) -> Option<RoundTiming> {
        None
    }
    /// What evaluation instructions carry so clients can form their personal model
    /// (personalised strategies return their recipe).
    fn eval_ext(&self) -> Extensions {
        Extensions::new()
    }
    /// What one client's evaluation instruction carries beyond [`Strategy::eval_ext`]
    /// (pFedHN: the model its hypernetwork generates for that client). Default: nothing.
    fn eval_ext_for(&self, _client: ClientId) -> Result<Extensions> {
        Ok(Extensions::new())
    }
    /// Sees the round once it is over, evaluation included (forwarded to the policy).
    fn observe_round(&mut self, _round: u32, _summary: &RoundSummary<'_>) {}
    /// A protocol with the clients after training and before aggregation (secure
    /// aggregation's steps). The round loop calls it with the training replies and no
    /// answers, sends the messages it returns with [`Grid::exchange`], calls it again with
    /// the answers, and so on until it returns no message; then it calls
    /// [`Strategy::aggregate_train`]. Default: no protocol.
    fn exchange(
        &mut self,
        _round: u32,
        _trained: &[Reply<TrainRes>],
        _answers: Option<Vec<Reply<Extensions>>>,
    ) -> Result<Vec<(ClientId, ExchangeIns)>> {
        Ok(Vec::new())
    }
    /// Everything the strategy keeps across rounds (its stages' states, its policy's),
    /// encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores what [`Strategy::save_state`] returned.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        stateless("strategy", bytes)
    }
}

/// Counts finished clients for progress display.
pub trait Progress: Sync {
    /// One client finished.
    fn client_done(&self);
}

/// Runs clients: in memory (simulation) or over the network.
pub trait Grid {
    /// The registered clients (metadata computed on demand; see [`ClientPool`]).
    fn pool(&self) -> Arc<dyn ClientPool>;
    /// Trains the given clients; replies come back sorted by client id.
    fn train(
        &mut self,
        ins: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<TrainRes>>;
    /// Evaluates the given clients; replies come back sorted by client id.
    fn evaluate(
        &mut self,
        ins: Vec<(ClientId, EvalIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<EvalRes>>;
    /// Sends one step of a protocol ([`Strategy::exchange`]) to the given clients, each
    /// answered by its client's [`Client::exchange`]; replies come back sorted by client
    /// id. Default: a grid that carries no protocol fails every client.
    fn exchange(
        &mut self,
        ins: Vec<(ClientId, ExchangeIns)>,
        _progress: &dyn Progress,
    ) -> Vec<Reply<Extensions>> {
        let mut ids: Vec<ClientId> = ins.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|client| Reply {
                client,
                result: Err(crate::ClientFailure::Error(
                    "this grid carries no protocol exchanges".into(),
                )),
            })
            .collect()
    }
    /// The bytes of fedpace's messages sent and received since the last call, when the
    /// grid counts them (the round loops record one per round in
    /// [`crate::RoundRecord::traffic`]). Default: `None`, a grid that does not count.
    fn take_round_traffic(&mut self) -> Option<crate::summary::RoundTraffic> {
        None
    }
    /// Calls `visit` with every client state the grid keeps (for a checkpoint, between
    /// rounds: a consistent snapshot). A grid whose clients keep their own state (over
    /// the network) cannot, and says so (the default).
    fn visit_states(
        &mut self,
        _visit: &mut dyn FnMut(ClientId, &LocalState) -> Result<()>,
    ) -> Result<()> {
        Err(Error::invalid(
            "checkpoint",
            "this grid",
            "a grid that keeps its clients' states (the simulation's)",
        ))
    }
}
