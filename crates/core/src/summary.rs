//! What a round produced: the aggregation summary, the evaluation summary and the
//! simulated clock. Plain values shared by the round loop, the traits (policies observe
//! them) and observers; they sit below both so that neither imports the other.

use crate::protocol::ClientId;
use crate::EvalStats;
use serde::Serialize;

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

/// Evaluation results of one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalSummary {
    /// Global model on the server's held-out test set, when there is one.
    pub central: Option<EvalStats>,
    /// Global model, all clients' test splits pooled (sample-weighted).
    pub global_loss: f64,
    /// Global model accuracy, pooled (sample-weighted).
    pub global_accuracy: f64,
    /// Global model accuracy, unweighted mean over clients.
    pub global_mean_accuracy: f64,
    /// Personalised accuracy, unweighted mean over clients.
    pub personalized_mean_accuracy: f64,
    /// Personalised accuracy, sample-weighted.
    pub personalized_weighted_accuracy: f64,
    /// Mean personalised accuracy over the worst 10 % of clients (at least one).
    pub personalized_worst10_accuracy: f64,
    /// Mean personalised accuracy over the best 10 % of clients (at least one).
    pub personalized_best10_accuracy: f64,
    /// Standard deviation of personalised accuracy across clients.
    pub personalized_std_accuracy: f64,
    /// Per-client personalised accuracy, by client id.
    #[serde(skip)]
    pub per_client: Vec<(ClientId, f64)>,
    /// Clients whose evaluation failed.
    pub failures: usize,
    /// Test samples behind the pooled statistics. 0 when no client had test data (no
    /// test split, `test_fraction = 0`): then every statistic above is NaN, which the
    /// output files write as `null`, never as a measured 0.
    pub samples: u64,
    /// The same statistics on the validation splits (the clients' and, in `central`, the
    /// server's validation part of its held-out set), when the data has validation
    /// splits (`data.validation_fraction > 0`); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Box<EvalSummary>>,
}

/// Where a round sits on the simulated clock (systems heterogeneity: device speeds,
/// bandwidths, deadlines). Set by strategies that simulate devices; `None` otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundTiming {
    /// Simulated seconds this round (or, asynchronously, this server update) took.
    pub round_seconds: f64,
    /// Simulated seconds since the run started, at the end of this round.
    pub sim_seconds: f64,
    /// Each dispatched client's simulated completion time within the round (s).
    pub completion: Vec<(ClientId, f64)>,
    /// Selected clients that dropped out (their update never arrives).
    pub dropped: Vec<ClientId>,
    /// Stragglers or late clients that were not aggregated.
    pub late_dropped: Vec<ClientId>,
    /// Clients that ran only part of their work (stragglers, deadline).
    pub partial: Vec<ClientId>,
}
