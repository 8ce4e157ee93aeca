//! The traits that every part implements.

use crate::pool::ClientPool;
use crate::protocol::*;
use crate::Result;
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
}

/// Makes the client for an id (its data loaded or generated on demand).
pub type ClientFactory = Arc<dyn Fn(ClientId) -> Result<Box<dyn Client>> + Send + Sync>;

/// Assigns each sampled client its rate plan and learns from what clients report.
pub trait RatePolicy: Send {
    /// A short description for logs.
    fn describe(&self) -> String;
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
    /// Aggregation-side scaling (ALGORITHMS.md §C.6), called before averaging with the
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
}

/// Per-client numbers the strategy computed while aggregating.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ClientAggregate {
    /// Client.
    pub client: ClientId,
    /// Normalised aggregation weight p̃_k.
    pub weight: f64,
    /// Cosine between the client's update and the aggregate update.
    pub cosine_to_aggregate: f64,
}

/// What aggregation did in one round.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AggregateSummary {
    /// Per successful client.
    pub clients: Vec<ClientAggregate>,
    /// Whether updates were normalised by Σ rates (objective consistency).
    pub normalized: bool,
    /// ‖x^{t+1} − x^t‖.
    pub step_norm: f64,
    /// The server rate η_g used this round (FedExP's adaptive value; the configured
    /// η_g of server optimisers, whose per-coordinate scaling comes on top).
    pub server_lr: f64,
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
    fn round_timing(&self) -> Option<crate::round::RoundTiming> {
        None
    }

    /// What evaluation instructions carry so clients can form their personal model
    /// (personalised strategies return their recipe).
    fn eval_extras(&self) -> InsExtras {
        InsExtras::None
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
    /// Evaluates the global model on a held-out test set kept by the server (e.g.
    /// MNIST's 10,000 test images), if the grid has one.
    fn evaluate_central(&mut self, _params: &ParamTree) -> Option<Result<crate::EvalStats>> {
        None
    }
}
