//! What travels between server and client: typed instructions and replies.
//!
//! The server half and the client half of an algorithm agree through these types: the
//! fixed fields every algorithm uses, and typed [`Extensions`] for what one algorithm
//! adds (its payloads live in its own module) — never through string keys.

use crate::ext::{Extensions, Payload};
use crate::{ClientFailure, EvalStats};
use fedpace_optim::{OptimizerSpec, Schedule, StateMode};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A client's identifier: its index in the federation.
pub type ClientId = u64;

/// How much local work a client does in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalWork {
    /// Full passes over the local training split.
    Epochs(u32),
    /// A fixed number of mini-batch steps.
    Steps(u32),
}

/// The rate plan of one client for one round: everything that sets how far and how
/// fast it trains. Typed, validated and logged (and encoded by [`crate::codec`]).
///
/// The rate of group `g` at local step `s` is
/// `base_lr · group_multipliers[g] · schedule.factor(step_offset + s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatePlan {
    /// Base learning rate η_k.
    pub base_lr: f32,
    /// Multiplier per parameter group (same order as the spec's groups); empty = all 1.
    pub group_multipliers: Vec<f32>,
    /// Schedule over the client's cumulative steps.
    pub schedule: Schedule,
    /// Local work this round.
    pub work: LocalWork,
    /// Upper bound on local steps (e.g. a straggler's budget); `None` = no bound.
    pub max_steps: Option<u32>,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Local optimiser (its rate comes from this plan at every step).
    pub optimizer: OptimizerSpec,
    /// What happens to the local optimiser's state between rounds.
    pub state_mode: StateMode,
    /// FedProx's proximal coefficient μ_k ≥ 0 (docs/algorithms.md §B.1): the client adds
    /// `μ·(w − x^t)`, the gradient of `(μ/2)‖w − x^t‖²`, to every local gradient.
    /// 0 (the default) = no proximal term. Any policy may set it per client.
    #[serde(default)]
    pub prox_mu: f64,
}

impl RatePlan {
    /// The rate of every group at cumulative step `step`.
    pub fn group_rates(&self, num_groups: usize, step: u64, out: &mut Vec<f32>) {
        let f = self.schedule.factor(step);
        out.clear();
        for g in 0..num_groups {
            let m = self.group_multipliers.get(g).copied().unwrap_or(1.0);
            out.push(self.base_lr * m * f);
        }
    }

    /// Number of local steps for a training split of `n` samples.
    pub fn steps_for(&self, n: usize) -> u32 {
        let per_epoch = n.div_ceil(self.batch_size.max(1) as usize) as u32;
        let s = match self.work {
            LocalWork::Epochs(e) => e.saturating_mul(per_epoch),
            LocalWork::Steps(s) => s,
        };
        match self.max_steps {
            Some(m) => s.min(m),
            None => s,
        }
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self, num_groups: usize) -> crate::Result<()> {
        use crate::Error;
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            return Err(Error::invalid(
                "plan.base_lr",
                self.base_lr,
                "a finite rate >= 0",
            ));
        }
        if !self.group_multipliers.is_empty() && self.group_multipliers.len() != num_groups {
            return Err(Error::invalid(
                "plan.group_multipliers",
                format!("{} values", self.group_multipliers.len()),
                format!("one per parameter group ({num_groups})"),
            ));
        }
        if let Some(m) = self
            .group_multipliers
            .iter()
            .find(|m| !(m.is_finite() && **m >= 0.0))
        {
            return Err(Error::invalid(
                "plan.group_multipliers",
                m,
                "finite values >= 0",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("plan.batch_size", 0, "at least 1"));
        }
        if !(self.prox_mu.is_finite() && self.prox_mu >= 0.0) {
            return Err(Error::invalid(
                "plan.prox_mu",
                self.prox_mu,
                "a finite μ >= 0",
            ));
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        Ok(())
    }
}

/// What the server knows about a client before sampling it: what the client reports
/// about itself. The sizes and the device class always; anything else only when the
/// client chooses to share it, as typed payloads in [`ClientInfo::metadata`] (e.g. a
/// [`LabelHistogram`]). A rate policy that needs such metadata declares it
/// ([`crate::RatePolicy::required_metadata`]), so a configuration that asks for it
/// without clients that share it is refused before the run starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientInfo {
    /// Identifier.
    pub id: ClientId,
    /// Training samples.
    pub num_train: u64,
    /// Test samples.
    pub num_test: u64,
    /// Device class from metadata, if any.
    pub device: Option<String>,
    /// Metadata the client chose to share.
    #[serde(skip_serializing_if = "Extensions::is_empty")]
    pub metadata: Extensions,
}

impl ClientInfo {
    /// A client with sizes and no device class or shared metadata.
    pub fn new(id: ClientId, num_train: u64, num_test: u64) -> Self {
        Self {
            id,
            num_train,
            num_test,
            device: None,
            metadata: Extensions::new(),
        }
    }

    /// The label histogram of the training split, when the client shares it.
    pub fn label_histogram(&self) -> Option<&[u64]> {
        self.metadata
            .get::<LabelHistogram>()
            .map(|h| h.0.as_slice())
    }

    /// Shannon entropy (nats) of the training label distribution (0 when the client
    /// shares no histogram).
    pub fn label_entropy(&self) -> f64 {
        let Some(h) = self.label_histogram() else {
            return 0.0;
        };
        let n: u64 = h.iter().sum();
        if n == 0 {
            return 0.0;
        }
        h.iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n as f64;
                -p * p.ln()
            })
            .sum()
    }
}

/// Client metadata: the label histogram of the client's training split (counts per
/// class). Private to the client unless it shares it (`client.share`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelHistogram(pub Vec<u64>);

impl Payload for LabelHistogram {
    const NAME: &'static str = "label-histogram";
    fn heap_bytes(&self) -> usize {
        8 * self.0.len()
    }
}

/// A client's state that survives between rounds (and checkpoints): what every
/// algorithm keeps (counters, the optimiser state under `state_mode = "keep"`), and
/// typed payloads for what one algorithm keeps (SCAFFOLD's c_i, FedDyn's g_k, a personal
/// model) in [`LocalState::ext`]. The server never sees it. Encoded by
/// [`crate::codec::encode_local_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalState {
    /// Rounds this client has trained in.
    pub rounds_trained: u32,
    /// Cumulative local steps (round-aware schedules continue from here).
    pub steps_done: u64,
    /// Optimiser state kept across rounds, when the plan says to keep it.
    pub optimizer: Option<fedpace_optim::State>,
    /// Algorithm-specific state.
    pub ext: Extensions,
}

impl LocalState {
    /// Estimated heap bytes (every buffer held), for state stores with a memory budget.
    pub fn heap_bytes(&self) -> usize {
        fn opt(s: &fedpace_optim::State) -> usize {
            48 + s.buffers.iter().map(|b| 24 + 4 * b.len()).sum::<usize>()
                + s.children.iter().map(opt).sum::<usize>()
        }
        64 + self.optimizer.as_ref().map_or(0, opt) + self.ext.heap_bytes()
    }
}

/// Instruction to train.
#[derive(Debug, Clone)]
pub struct TrainIns {
    /// Round index (1-based).
    pub round: u32,
    /// Global parameters to start from.
    pub params: Arc<ParamTree>,
    /// This client's rate plan.
    pub plan: RatePlan,
    /// The run seed (clients derive their own streams from it).
    pub seed: u64,
    /// Algorithm payloads sent with the instruction (any number, one per type).
    pub ext: Extensions,
}

impl TrainIns {
    /// An instruction without payloads.
    pub fn new(round: u32, params: Arc<ParamTree>, plan: RatePlan, seed: u64) -> Self {
        Self {
            round,
            params,
            plan,
            seed,
            ext: Extensions::new(),
        }
    }
}

/// What a client reports about its local training, beside the update itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainReport {
    /// Local steps actually run, τ_k.
    pub steps: u32,
    /// Σ_s η_{k,g,s}: sum of the rates used, per parameter group (Λ_{k,g} for SGD).
    pub rate_sum: Vec<f64>,
    /// Loss of the first mini-batch at the global model.
    pub loss_before: f32,
    /// Mean mini-batch loss over the last epoch's worth of steps.
    pub loss_after: f32,
    /// Mean mini-batch loss over all local steps.
    pub train_loss: f32,
    /// ‖Δ_k‖.
    pub update_norm: f64,
    /// ‖g‖ of the first mini-batch gradient at the global model.
    pub grad_norm: f64,
    /// Further signals a client reports (typed payloads, e.g. per-group gradient norms).
    #[serde(skip_serializing_if = "Extensions::is_empty")]
    pub ext: Extensions,
}

/// A client's reply to [`TrainIns`].
#[derive(Debug, Clone)]
pub struct TrainRes {
    /// `Δ_k = y_k − x`: the change of the shared parameters.
    pub delta: ParamTree,
    /// Training samples n_k.
    pub num_examples: u64,
    /// Report.
    pub report: TrainReport,
    /// Algorithm payloads returned with the update.
    pub ext: Extensions,
}

/// One client's outcome in a round, in client-id order.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// Who.
    pub client: ClientId,
    /// What came back.
    pub result: Result<T, ClientFailure>,
}

/// One step of a protocol a strategy runs with a client inside a round, after training
/// (secure aggregation's key exchange, masked input and unmasking): a typed message the
/// client's registered part answers ([`crate::Client::exchange`]). Carried by
/// [`crate::Grid::exchange`] in simulation and over the network alike.
#[derive(Debug, Clone)]
pub struct ExchangeIns {
    /// Round index.
    pub round: u32,
    /// The run seed (simulated clients derive their protocol streams from it).
    pub seed: u64,
    /// The message: typed payloads, as in an instruction.
    pub msg: Extensions,
}

/// Instruction to evaluate.
#[derive(Debug, Clone)]
pub struct EvalIns {
    /// Round index.
    pub round: u32,
    /// Global parameters.
    pub params: Arc<ParamTree>,
    /// Local fine-tuning steps before the personalised evaluation (0 = none).
    pub finetune_steps: u32,
    /// Evaluate on at most this many test samples (the first ones); `None` = all.
    pub max_test_samples: Option<u32>,
    /// Plan for fine-tuning.
    pub plan: RatePlan,
    /// The run seed.
    pub seed: u64,
    /// How the personalised model is evaluated.
    pub personalized: PersonalEval,
    /// The strategy's payloads (a personalised recipe, so the client can form its
    /// personal model).
    pub ext: Extensions,
}

/// How personalised evaluation runs (`[eval] personalized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersonalEval {
    /// Start from the client's personal model (the global model for recipes without one),
    /// run `finetune_steps` local steps, test (the default; FedAvg + fine-tuning).
    #[default]
    Finetune,
    /// Test each client's personal model as the recipe defines it, without extra steps.
    PersonalModel,
}

/// A client's evaluation on its own test split (and on its validation split, when it
/// has one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalRes {
    /// The global model.
    pub global: EvalStats,
    /// The personalised model (after fine-tuning), if one was evaluated.
    pub personalized: Option<EvalStats>,
    /// The same two models on the client's validation split, when it has one
    /// (`data.validation_fraction > 0`): what tuning and learned rates select on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<SplitStats>,
}

impl EvalRes {
    /// Global and personalised statistics on the test split, no validation split.
    pub fn new(global: EvalStats, personalized: Option<EvalStats>) -> Self {
        Self {
            global,
            personalized,
            validation: None,
        }
    }
}

/// The global and the personalised model evaluated on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    /// The global model.
    pub global: EvalStats,
    /// The personalised model, if one was evaluated.
    pub personalized: Option<EvalStats>,
}

/// Checks a reply at the boundary: the update has the spec's length and only finite
/// values, the report's rate sums match the number of groups, and every payload of the
/// reply and the report validates against the layout ([`Payload::validate`]). Grids
/// call this on everything a client returns before the strategy sees it.
pub fn validate_train_res(
    res: &TrainRes,
    spec: &fedpace_params::ParamSpec,
) -> Result<(), ClientFailure> {
    if res.delta.as_slice().len() != spec.total_len() {
        return Err(ClientFailure::WrongShape {
            expected: spec.total_len(),
            got: res.delta.as_slice().len(),
        });
    }
    if !res.delta.all_finite() {
        return Err(ClientFailure::NonFinite);
    }
    if res.report.rate_sum.len() != spec.num_groups()
        || res
            .report
            .rate_sum
            .iter()
            .any(|r| !r.is_finite() || *r < 0.0)
    {
        return Err(ClientFailure::BadReport(format!(
            "report.rate_sum must hold {} finite values >= 0, got {:?}",
            spec.num_groups(),
            res.report.rate_sum
        )));
    }
    res.ext
        .validate(spec)
        .map_err(|e| ClientFailure::BadReport(format!("reply payload {e}")))?;
    res.report
        .ext
        .validate(spec)
        .map_err(|e| ClientFailure::BadReport(format!("report payload {e}")))?;
    Ok(())
}
