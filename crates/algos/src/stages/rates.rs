//! Private rates (docs/privacy.md, "Private rates"): how the statistics a rate policy
//! reads reach the server.
//!
//! * `noised`: each client clips its statistics to public bounds and adds Gaussian noise
//!   before they leave it ([`RateRelease`] → [`ReleasedStatistics`]); the policy observes a
//!   report rebuilt from the noised values only ([`released_report`]), so every plan is a
//!   function of noised values. The release is one more Gaussian mechanism on the sampled
//!   clients, accounted with the update's (see `dp.rs`).
//! * `local`: the client adapts its own rate ([`LocalRate`]): it keeps its statistic in
//!   its state ([`LocalRateMemory`]) and sends only ln(statistic) inside the secure sum,
//!   from which the server learns the cohort's geometric mean and broadcasts it. Neither
//!   the statistic nor the rate leaves the client.
//!
//! The statistics are those the report-reading policies use: `loss-based` reads the loss
//! of the global model on the first mini-batch (`loss_before`), `grad-norm-ratio` the
//! lr-free update norm ‖Δ_k‖/Λ̄_k.

use fedpace_core::ext::Payload;
use fedpace_core::{Error, LocalState, RatePlan, Result, TrainReport};
use fedpace_params::ParamSpec;
use fedpace_privacy::{Randomness, SecureRng};
use serde::{Deserialize, Serialize};

/// Sent to each client with `rates = "noised"`: how to bound and noise its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateRelease {
    /// Bound C on the normalised update norm.
    pub clip: f64,
    /// Λ_ref per group: the norm statistic is ‖Δ ⊙ Λ_ref/Λ‖ (the update at the reference
    /// rate).
    pub reference: Vec<f64>,
    /// Bound B on the loss.
    pub loss_bound: f64,
    /// Noise standard deviation on each bounded statistic (in units of its bound).
    pub noise_std: f64,
    /// Where the client's noise comes from.
    pub randomness: Randomness,
}

impl Payload for RateRelease {
    const NAME: &'static str = "rate-release";
}

/// A client's noised statistics, each in units of its bound: loss/B and ‖d‖/C, clipped to
/// [0, 1] before the noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReleasedStatistics {
    /// min(loss_before, B)/B + noise.
    pub loss: f64,
    /// min(‖d‖, C)/C + noise.
    pub norm: f64,
}

impl Payload for ReleasedStatistics {
    const NAME: &'static str = "released-statistics";
    fn validate(&self, _spec: &ParamSpec) -> std::result::Result<(), String> {
        if self.loss.is_finite() && self.norm.is_finite() {
            Ok(())
        } else {
            Err("released statistics must be finite".into())
        }
    }
}

/// The client's release: bounded statistics plus N(0, noise_std²) each. `norm` is the norm
/// of the update normalised to the reference rates.
pub fn release(
    p: &RateRelease,
    report: &TrainReport,
    norm: f64,
    rng: &mut SecureRng,
) -> ReleasedStatistics {
    let loss = if report.loss_before.is_finite() {
        (report.loss_before as f64).clamp(0.0, p.loss_bound) / p.loss_bound
    } else {
        1.0
    };
    let norm = if norm.is_finite() {
        norm.clamp(0.0, p.clip) / p.clip
    } else {
        1.0
    };
    ReleasedStatistics {
        loss: loss + p.noise_std * rng.standard_normal(),
        norm: norm + p.noise_std * rng.standard_normal(),
    }
}

/// The report a policy observes under `rates = "noised"`: the noised statistics back in
/// their units (clamped to (0, bound], which is post-processing), the reference rate sums
/// and the step count; nothing else of the client's report.
pub fn released_report(s: &ReleasedStatistics, p: &RateRelease, steps: u32) -> TrainReport {
    let floor = 1e-6;
    TrainReport {
        steps,
        rate_sum: p.reference.clone(),
        loss_before: (s.loss.clamp(floor, 1.0) * p.loss_bound) as f32,
        update_norm: s.norm.clamp(floor, 1.0) * p.clip,
        ..Default::default()
    }
}

/// Which rule a client applies to its own rate under `rates = "local"` (the policy's
/// own rule, moved to the client).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum LocalRule {
    /// `loss-based`: r = clamp((L_k/L̄)^κ, min, max).
    LossBased {
        /// κ.
        kappa: f64,
        /// Lower clamp.
        min: f64,
        /// Upper clamp.
        max: f64,
    },
    /// `grad-norm-ratio`: r = clamp((ĝ/ĝ_k)^κ, min, max), ĝ_k = ‖Δ_k‖/Λ̄_k.
    GradNormRatio {
        /// κ.
        kappa: f64,
        /// Lower clamp.
        min: f64,
        /// Upper clamp.
        max: f64,
    },
}

impl LocalRule {
    /// The rule of a policy that can run on the client, or `None`. Inside `compose`, the
    /// rule of its one statistic-reading part (none when two parts read statistics: their
    /// product would need both statistics on the client's side of one rule).
    pub fn of(policy: &crate::PolicyConfig) -> Option<Self> {
        match policy {
            &crate::PolicyConfig::LossBased { kappa, min, max } => {
                Some(LocalRule::LossBased { kappa, min, max })
            }
            &crate::PolicyConfig::GradNormRatio { kappa, min, max } => {
                Some(LocalRule::GradNormRatio { kappa, min, max })
            }
            crate::PolicyConfig::Compose { policies, .. } => {
                let readers: Vec<&crate::PolicyConfig> = policies
                    .iter()
                    .filter(|p| p.reads_client_statistics().is_some())
                    .collect();
                match readers.as_slice() {
                    [one] => Self::of(one),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The multiplier from the client's last statistic and the cohort mean (1 until both
    /// are known).
    pub fn multiplier(&self, own: Option<f64>, mean: Option<f64>) -> f64 {
        let (Some(s), Some(m)) = (own, mean) else {
            return 1.0;
        };
        if !(s > 0.0 && m > 0.0) {
            return 1.0;
        }
        match *self {
            LocalRule::LossBased { kappa, min, max } => (s / m).powf(kappa).clamp(min, max),
            LocalRule::GradNormRatio { kappa, min, max } => (m / s).powf(kappa).clamp(min, max),
        }
    }

    /// The statistic of one round's report (`None` when the client ran no step).
    pub fn statistic(&self, report: &TrainReport) -> Option<f64> {
        if report.steps == 0 {
            return None;
        }
        let s = match self {
            LocalRule::LossBased { .. } => report.loss_before as f64,
            LocalRule::GradNormRatio { .. } => {
                crate::policies::grad_norm::GradNormRatio::estimate(report)?
            }
        };
        (s.is_finite() && s > 0.0).then_some(s)
    }
}

/// `compose`'s clamp and overrides, which under `rates = "local"` apply on the client
/// after its own factor (the server's plan already holds the other parts' product).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalBounds {
    /// Lower clamp on η_k/η_base.
    pub min: f64,
    /// Upper clamp on η_k/η_base.
    pub max: f64,
    /// Clients whose rate the composition sets outright (they apply no factor).
    pub overrides: std::collections::BTreeSet<u64>,
}

impl LocalBounds {
    /// The clamp and overrides of a `compose` policy (`None` for any other).
    pub fn of(policy: &crate::PolicyConfig) -> Option<Self> {
        match policy {
            crate::PolicyConfig::Compose {
                min,
                max,
                overrides,
                ..
            } => Some(LocalBounds {
                min: *min,
                max: *max,
                overrides: overrides.keys().filter_map(|k| k.parse().ok()).collect(),
            }),
            _ => None,
        }
    }
}

/// Sent to each client with `rates = "local"`: the rule and the cohort's geometric mean
/// statistic from the last round's secure sum (none before the first).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalRate {
    /// The policy's rule.
    pub rule: LocalRule,
    /// The cohort's geometric mean statistic.
    pub mean: Option<f64>,
    /// Inside `compose`: the absolute rate range [min·η_base, max·η_base] the client's
    /// rate is clamped to after its factor.
    #[serde(default)]
    pub bounds: Option<[f64; 2]>,
    /// Inside `compose`: the composition sets this client's rate outright (an override);
    /// it applies no factor of its own.
    #[serde(default)]
    pub fixed: bool,
}

impl Payload for LocalRate {
    const NAME: &'static str = "local-rate";
}

/// What a client keeps under `rates = "local"`: its last statistic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalRateMemory {
    /// The statistic of its last round.
    pub last: f64,
}

impl Payload for LocalRateMemory {
    const NAME: &'static str = "local-rate-memory";
}

/// The plan the client trains with: the instruction's, its base rate times its own
/// multiplier (inside `compose`: clamped again to the composition's range, or unchanged
/// for an overridden client).
pub fn local_plan(p: &LocalRate, plan: &RatePlan, state: &LocalState) -> Result<RatePlan> {
    let mut out = plan.clone();
    if p.fixed {
        return Ok(out);
    }
    let own = state.ext.get::<LocalRateMemory>().map(|m| m.last);
    let r = p.rule.multiplier(own, p.mean);
    let mut lr = plan.base_lr as f64 * r;
    if let Some([lo, hi]) = p.bounds {
        lr = lr.clamp(lo, hi);
    }
    out.base_lr = lr as f32;
    if !out.base_lr.is_finite() {
        return Err(Error::invalid("local rate", out.base_lr, "a finite rate"));
    }
    Ok(out)
}

/// ln(statistic) clamped to ±[`LOG_RANGE`], the value a client adds to the secure sum
/// (with a count of 1), so the server learns Σ ln s_k and the count: the geometric mean.
pub const LOG_RANGE: f64 = 7.5;
