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
    /// Named scalars a learned controller reports this round (FedEx's θ, FedHyper's
    /// server rate; docs/learned-rates.md); empty for the others.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub learned: std::collections::BTreeMap<String, f64>,
    /// Differential privacy of the round, when `[privacy]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySummary>,
    /// Secure aggregation of the round, when `[secure_aggregation]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<SecureSummary>,
    /// Mean bytes of a training reply as the wire carries it (its encoded frame, the
    /// compressed update included), over the replies aggregated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_bytes: Option<f64>,
}

/// What client-level differential privacy spent and did in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrivacySummary {
    /// ε spent by every round so far, this one included, at [`PrivacySummary::delta`].
    pub epsilon: f64,
    /// ε of this round alone.
    pub round_epsilon: f64,
    /// δ of the (ε, δ) guarantee.
    pub delta: f64,
    /// Noise multiplier z of the round's mechanism, as the accountant sees it.
    pub noise_multiplier: f64,
    /// Sampling probability q (Poisson).
    pub sampling_rate: f64,
    /// The clip bound C used this round.
    pub clip: f64,
    /// Standard deviation of the noise on the aggregate update.
    pub noise_std: f64,
    /// Adaptive clipping: the noised fraction of updates within C (None for a fixed C).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unclipped_fraction: Option<f64>,
}

/// What secure aggregation did in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecureSummary {
    /// Clients that started the protocol (trained successfully).
    pub participants: usize,
    /// Clients whose masked input is in the sum.
    pub survivors: usize,
    /// Shares needed to rebuild a secret, and the fewest inputs the server may sum.
    pub threshold: usize,
    /// Neighbourhood size k (the cohort for SecAgg).
    pub neighbourhood: usize,
    /// Mean protocol bytes a surviving client uploaded (keys, shares, masked input).
    pub upload_bytes: f64,
    /// Mean protocol bytes a surviving client downloaded.
    pub download_bytes: f64,
    /// Surviving clients with at least one value outside the quantisation range (clipped
    /// to it, which biases the sum); counted under the secure sum itself.
    pub saturated_clients: f64,
}

/// Evaluation results of one round.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
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

/// The bytes of one round's messages (docs/network.md, "Communication accounting"): the
/// encoded instructions sent and replies received (fedpace's codec frames, what travels
/// as the network messages' payloads), and what the training messages carried. A failed
/// client's reply counts 0 in a simulation; over the network a reply that arrived and was
/// then rejected counts its bytes in `received` (and nothing in the parts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RoundTraffic {
    /// Bytes sent to clients (training and evaluation instructions).
    pub sent: u64,
    /// Bytes received from clients (training and evaluation replies).
    pub received: u64,
    /// Bytes of the training instructions.
    pub train_sent: u64,
    /// Bytes of the training replies.
    pub train_received: u64,
    /// Of the training instructions: the global model (layout and values).
    pub model: u64,
    /// Of the training instructions: the rate plans.
    pub plan: u64,
    /// Of the training instructions: the payloads the strategy and policy attached
    /// (control variates, personal recipes, requests).
    pub instruction_payloads: u64,
    /// Of the training replies: the updates (layout and values; the layout alone when the
    /// update travels in a payload, compressed or masked).
    pub update: u64,
    /// Of the training replies: the payloads and report statistics the strategy or
    /// policy asked for (per-group gradient norms, compressed updates, control variates).
    pub reply_payloads: u64,
    /// Instructions sent.
    pub messages: u64,
}

impl RoundTraffic {
    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &RoundTraffic) {
        self.sent += other.sent;
        self.received += other.received;
        self.train_sent += other.train_sent;
        self.train_received += other.train_received;
        self.model += other.model;
        self.plan += other.plan;
        self.instruction_payloads += other.instruction_payloads;
        self.update += other.update;
        self.reply_payloads += other.reply_payloads;
        self.messages += other.messages;
    }
}
