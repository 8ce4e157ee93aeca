//! What travels between server and client: typed instructions and replies.
//!
//! The server half and the client half of an algorithm agree through these types (an
//! enum variant, a field), never through string keys.

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
/// fast it trains. Typed, validated, logged and checkpointed.
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
    /// FedProx's proximal coefficient μ_k ≥ 0 (ALGORITHMS.md B.1): the client adds
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

/// What the server knows about a client before sampling it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Identifier.
    pub id: ClientId,
    /// Training samples.
    pub num_train: u64,
    /// Test samples.
    pub num_test: u64,
    /// Label histogram of the training split.
    pub label_histogram: Vec<u64>,
    /// Device class from metadata, if any.
    pub device: Option<String>,
}

impl ClientInfo {
    /// Shannon entropy (nats) of the training label distribution.
    pub fn label_entropy(&self) -> f64 {
        let n: u64 = self.label_histogram.iter().sum();
        if n == 0 {
            return 0.0;
        }
        self.label_histogram
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n as f64;
                -p * p.ln()
            })
            .sum()
    }
}

/// A client's state that survives between rounds (and checkpoints). Typed fields, one
/// per kind of state an algorithm may keep; the server never sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    /// Rounds this client has trained in.
    pub rounds_trained: u32,
    /// Cumulative local steps (round-aware schedules continue from here).
    pub steps_done: u64,
    /// Optimiser state kept across rounds, when the plan says to keep it.
    pub optimizer: Option<fedpace_optim::State>,
    /// SCAFFOLD's client control variate c_i (ALGORITHMS.md B.2); `None` = 0.
    #[serde(default)]
    pub control_variate: Option<Vec<f32>>,
    /// FedDyn's linear term g_k, the client's estimate of ∇L_k at its last local
    /// optimum (ALGORITHMS.md B.4); `None` = 0.
    #[serde(default)]
    pub feddyn_gradient: Option<Vec<f32>>,
    /// Personal model of personalised algorithms (ALGORITHMS.md Part E); never sent.
    #[serde(default)]
    pub personal: Option<crate::personal::PersonalState>,
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
    /// Algorithm-specific payload sent with the instruction.
    pub extras: InsExtras,
}

/// Algorithm-specific data the server sends with a [`TrainIns`]: one variant per
/// algorithm that needs more than the global parameters (typed, never string keys).
#[derive(Debug, Clone, Default)]
pub enum InsExtras {
    /// Nothing beyond the plan and the parameters.
    #[default]
    None,
    /// Optimiser state to start local training from (plan `state_mode = server-init`):
    /// the strategy's average of the states clients returned last time (ALGORITHMS.md
    /// §C.3 option 4, FedCAda-style; FedLALR's synchronised moments, §C.2).
    OptimizerState(Arc<fedpace_optim::State>),
    /// SCAFFOLD (ALGORITHMS.md B.2): the server control variate c and how the client
    /// refreshes its own c_i.
    Scaffold {
        /// Server control variate c (flat, laid out like the parameters).
        server_control: Arc<Vec<f32>>,
        /// Option I (gradient at x) or II (from the local progress).
        option: ScaffoldOption,
    },
    /// FedDyn (ALGORITHMS.md B.4): the dynamic regulariser's α for this client.
    FedDyn {
        /// α > 0.
        alpha: f64,
        /// Clip each corrected local gradient (loss gradient − g_k + α(θ − θ^{t−1}))
        /// to this global L2 norm before the local optimiser sees it, as the reference
        /// code does (norm 10); `None`: no clipping.
        max_grad_norm: Option<f64>,
    },
    /// A personalised algorithm's client recipe and personal/frozen group masks.
    Personal(crate::personal::PersonalIns),
}

/// How a SCAFFOLD client refreshes its control variate (ALGORITHMS.md B.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaffoldOption {
    /// `c_i⁺ = ∇F_i(x)`: an extra full pass over the local training split at x.
    #[serde(rename = "i")]
    I,
    /// `c_i⁺ = c_i − c + (x − y)/Λ_i` per group, Λ_i the client's sum of rates (free).
    #[default]
    #[serde(rename = "ii")]
    II,
}

/// Algorithm-specific data a client returns with its [`TrainRes`].
#[derive(Debug, Clone, Default)]
pub enum ResExtras {
    /// Nothing beyond the update and the report.
    #[default]
    None,
    /// The client's optimiser state after its local steps (plan `state_mode =
    /// server-init`), for the server to average and send back next round.
    OptimizerState(fedpace_optim::State),
    /// SCAFFOLD: the change of the client's control variate, `Δc_i = c_i⁺ − c_i`.
    Scaffold {
        /// Δc_i (flat, laid out like the parameters).
        control_delta: Vec<f32>,
    },
}

/// What a client reports about its local training, beside the update itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Algorithm-specific payload.
    pub extras: ResExtras,
}

/// One client's outcome in a round, in client-id order.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// Who.
    pub client: ClientId,
    /// What came back.
    pub result: Result<T, ClientFailure>,
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
    pub personalized: crate::personal::PersonalEval,
    /// The strategy's recipe (so the client can form its personal model).
    pub extras: InsExtras,
}

/// A client's evaluation on its own test split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalRes {
    /// The global model.
    pub global: EvalStats,
    /// The personalised model (after fine-tuning), if one was evaluated.
    pub personalized: Option<EvalStats>,
}

/// Checks a reply at the boundary: the update has the spec's length and only finite
/// values, and the report's rate sums match the number of groups. Grids call this on
/// everything a client returns before the strategy sees it.
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
    if let ResExtras::Scaffold { control_delta } = &res.extras {
        if control_delta.len() != spec.total_len() {
            return Err(ClientFailure::WrongShape {
                expected: spec.total_len(),
                got: control_delta.len(),
            });
        }
        if control_delta.iter().any(|v| !v.is_finite()) {
            return Err(ClientFailure::NonFinite);
        }
    }
    Ok(())
}
