//! The privacy budget of an experiment before it runs (`fedpace privacy`,
//! docs/privacy.md "Metrics and `fedpace privacy`"): the sampling rate the run will use, ε after each
//! round from the RDP accountant, or the noise multiplier that meets a target ε.

use crate::config::ExperimentConfig;
use crate::{Error, Result};
use fedpace_privacy::accountant::{epsilon_for, noise_multiplier_for_epsilon};

/// What `[privacy]` will spend over the run (or would, at the noise multiplier found).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Budget {
    /// Clients in the pool.
    pub clients: usize,
    /// Expected clients a round (Poisson sampling).
    pub per_round: usize,
    /// Poisson sampling probability q.
    pub sampling_rate: f64,
    /// Rounds.
    pub rounds: u32,
    /// δ.
    pub delta: f64,
    /// The noise multiplier z: the config's, or the one found for `target_epsilon`.
    pub noise_multiplier: f64,
    /// ε of one round.
    pub round_epsilon: f64,
    /// ε after all rounds.
    pub epsilon: f64,
    /// The target asked for, when one was.
    pub target_epsilon: Option<f64>,
}

/// The budget of `cfg` over a pool of `clients` (default: the data config's count).
/// With `target_epsilon`, the smallest z whose ε after `cfg.rounds` rounds stays within
/// it; without, the config's `privacy.noise_multiplier`.
pub fn budget(
    cfg: &ExperimentConfig,
    clients: Option<usize>,
    target_epsilon: Option<f64>,
) -> Result<Budget> {
    let n = match clients.or(cfg.data.num_clients()) {
        Some(n) if n > 0 => n,
        Some(_) => return Err(Error::Setup("--clients = 0: expected at least 1".into())),
        None => {
            return Err(Error::Setup(
                "data: the pool size is known only after loading this data source; pass \
                 --clients N"
                    .into(),
            ))
        }
    };
    if cfg.strategy.is_async() {
        return Err(Error::Setup(format!(
            "[privacy]: not supported by {} (asynchronous strategies aggregate one update at \
             a time, outside the round's stages)",
            cfg.strategy.name()
        )));
    }
    let privacy = cfg.privacy.clone().unwrap_or_default();
    let z = match (target_epsilon, privacy.noise_multiplier) {
        (Some(_), _) => None,
        (None, Some(z)) => Some(z),
        (None, None) => {
            return Err(Error::Setup(
                "privacy.noise_multiplier: missing; expected [privacy] with clip (or \
                 adaptive_clip) and noise_multiplier, or --target-epsilon E to find one"
                    .into(),
            ))
        }
    };
    let per_round = cfg.strategy.round.sampling().per_round(n);
    let q = (per_round as f64 / n as f64).min(1.0);
    let delta = privacy.delta;
    let rounds = cfg.rounds;
    let acc = |e: fedpace_privacy::Error| Error::Setup(format!("privacy: {e}"));
    let z = match (z, target_epsilon) {
        (Some(z), _) => z,
        (None, Some(t)) => noise_multiplier_for_epsilon(q, rounds as u64, t, delta).map_err(acc)?,
        (None, None) => unreachable!("handled above"),
    };
    let eps = |steps: u32| -> Result<f64> {
        Ok(epsilon_for(q, z, steps as u64, delta).map_err(acc)?.epsilon)
    };
    Ok(Budget {
        clients: n,
        per_round,
        sampling_rate: q,
        rounds,
        delta,
        noise_multiplier: z,
        round_epsilon: eps(1)?,
        epsilon: eps(rounds)?,
        target_epsilon,
    })
}
