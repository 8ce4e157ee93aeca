//! Byzantine-robust aggregation as the aggregation stage of the per-client path
//! (docs/privacy.md, "Robust aggregation" and "Wiring"): median, trimmed mean, Krum,
//! Multi-Krum, Bulyan and norm bounding replace the weighted mean.
//!
//! The one decision: the rules see each client's update on the common scale the weighted
//! mean would give it — normalised by its rate sums (`τ_eff,g/Λ_{k,g}` per group) when
//! the round normalises, after the policy's aggregation-side scaling — so per-client
//! rates do not make a client look like an outlier. Weighted rules (Multi-Krum, norm
//! bounding) use the round's weights p̃_k; the others are unweighted, as in Flower.

use crate::aggregate::Aggregated;
use fedpace_core::{ClientAggregate, ClientId, Error, Result, TrainRes};
use fedpace_params::{l2_norm, ParamSpec};
use fedpace_privacy::robust;
use serde::{Deserialize, Serialize};

/// The `[robust]` table: the rule and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RobustConfig {
    /// Coordinate-wise median.
    Median {},
    /// Coordinate-wise trimmed mean, dropping ⌊β·K⌋ values at each end.
    TrimmedMean {
        /// β ∈ [0, 0.5) (default 0.2, Flower's).
        #[serde(default = "beta")]
        beta: f64,
    },
    /// Krum: the update with the lowest score.
    Krum {
        /// f, the Byzantine clients assumed.
        byzantine: usize,
    },
    /// Multi-Krum: the weighted mean of the `select` lowest-scoring updates.
    MultiKrum {
        /// f.
        byzantine: usize,
        /// m (default K − f).
        #[serde(default)]
        select: Option<usize>,
    },
    /// Bulyan: Multi-Krum selection of K − 2f, then a coordinate-wise trimmed mean
    /// around the median; needs K ≥ 4f + 3.
    Bulyan {
        /// f.
        byzantine: usize,
    },
    /// Norm bounding (Sun et al. 2019): clip every update to `max_norm`, then the
    /// weighted mean.
    NormBound {
        /// M.
        max_norm: f64,
    },
}

fn beta() -> f64 {
    0.2
}

impl RobustConfig {
    /// The rule's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            RobustConfig::Median {} => "median",
            RobustConfig::TrimmedMean { .. } => "trimmed-mean",
            RobustConfig::Krum { .. } => "krum",
            RobustConfig::MultiKrum { .. } => "multi-krum",
            RobustConfig::Bulyan { .. } => "bulyan",
            RobustConfig::NormBound { .. } => "norm-bound",
        }
    }

    /// The fewest updates the rule needs.
    pub fn min_clients(&self) -> usize {
        match *self {
            RobustConfig::Krum { byzantine } => byzantine + 3,
            RobustConfig::MultiKrum { byzantine, select } => {
                (byzantine + 3).max(select.unwrap_or(1) + byzantine)
            }
            RobustConfig::Bulyan { byzantine } => 4 * byzantine + 3,
            _ => 1,
        }
    }

    /// Checks ranges; errors name the key under `robust.`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            RobustConfig::TrimmedMean { beta } if !(0.0..0.5).contains(&beta) => {
                Err(Error::invalid("robust.beta", beta, "in [0, 0.5)"))
            }
            RobustConfig::MultiKrum {
                select: Some(0), ..
            } => Err(Error::invalid("robust.select", 0, "at least 1")),
            RobustConfig::NormBound { max_norm } if !(max_norm > 0.0 && max_norm.is_finite()) => {
                Err(Error::invalid(
                    "robust.max_norm",
                    max_norm,
                    "a finite norm > 0",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Aggregates `updates` (one per client, already on the common scale) with weights
    /// `p` (summing to 1). Returns the aggregate and each client's weight in it.
    pub fn aggregate(&self, updates: &[Vec<f32>], p: &[f64]) -> Result<(Vec<f32>, Vec<f64>)> {
        let k = updates.len();
        if k < self.min_clients() {
            return Err(Error::invalid(
                format!("robust.rule = {:?}", self.name()),
                format!("{k} client updates this round"),
                format!(
                    "at least {} (from robust.byzantine and robust.select)",
                    self.min_clients()
                ),
            ));
        }
        let e = |e: fedpace_privacy::Error| Error::Backend(format!("robust {}: {e}", self.name()));
        let uniform = vec![1.0 / k as f64; k];
        Ok(match *self {
            RobustConfig::Median {} => (robust::median(updates).map_err(e)?, uniform),
            RobustConfig::TrimmedMean { beta } => {
                (robust::trimmed_mean(updates, beta).map_err(e)?, uniform)
            }
            RobustConfig::Krum { byzantine } => {
                let i = robust::krum(updates, byzantine).map_err(e)?;
                let mut w = vec![0.0; k];
                w[i] = 1.0;
                (updates[i].clone(), w)
            }
            RobustConfig::MultiKrum { byzantine, select } => {
                let m = select.unwrap_or(k - byzantine.min(k - 1));
                let (chosen, mean) = robust::multi_krum(updates, p, byzantine, m).map_err(e)?;
                let total: f64 = chosen.iter().map(|&i| p[i]).sum();
                let mut w = vec![0.0; k];
                for &i in &chosen {
                    w[i] = p[i] / total;
                }
                (mean, w)
            }
            RobustConfig::Bulyan { byzantine } => {
                (robust::bulyan(updates, byzantine).map_err(e)?, uniform)
            }
            RobustConfig::NormBound { max_norm } => (
                robust::norm_bounded_mean(updates, p, max_norm)
                    .map_err(e)?
                    .0,
                p.to_vec(),
            ),
        })
    }
}

/// The robust aggregation stage: each accepted update on the common scale
/// (`coef[k][g]`, the per-group factor the weighted mean would give it divided by p̃_k),
/// then the rule.
pub(crate) fn aggregate(
    rule: &RobustConfig,
    spec: &ParamSpec,
    used: &[(ClientId, &TrainRes)],
    p: &[f64],
    coef: &[Vec<f32>],
    normalized: bool,
) -> Result<Aggregated> {
    let updates: Vec<Vec<f32>> = used
        .iter()
        .zip(coef)
        .map(|((_, r), c)| {
            let mut d = r.delta.as_slice().to_vec();
            for e in spec.entries() {
                let f = c[e.group];
                d[e.range()].iter_mut().for_each(|v| *v *= f);
            }
            d
        })
        .collect();
    let (delta, weights) = rule.aggregate(&updates, p)?;
    let agg_norm = l2_norm(&delta);
    let clients = used
        .iter()
        .zip(&updates)
        .zip(weights)
        .map(|(((id, _), u), w)| {
            let n = l2_norm(u);
            ClientAggregate {
                client: *id,
                weight: w,
                cosine_to_aggregate: if n > 0.0 && agg_norm > 0.0 {
                    fedpace_params::dot(u, &delta) / (n * agg_norm)
                } else {
                    0.0
                },
            }
        })
        .collect();
    Ok(Aggregated {
        delta,
        normalized,
        clients,
    })
}
