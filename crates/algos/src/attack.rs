//! Simulated Byzantine clients (`[attack]`, docs/privacy.md "Attacks"): a fixed share of the pool,
//! drawn from the seed, sends sign-flipped, scaled or random updates, or trains on flipped
//! labels. The attack is a property of the client (`StandardClient::with_attack`), applied
//! to its update right after local training and before anything else the client does with
//! it (pre-scaling, DP clipping, compression, secure aggregation), so every defence sees
//! what a real attacker following the protocol would send. Deterministic by seed.

use fedpace_core::rng::{stream, Purpose};
use fedpace_core::{Batch, ClientId, Dataset, Error, Result};
use fedpace_params::l2_norm;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What the attackers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// Δ ← −s·Δ (default s = 4).
    SignFlip,
    /// Δ ← s·Δ (default s = 10).
    Scale,
    /// Δ ← N(0, σ²I) with σ = s · RMS(Δ) (default s = 10): noise s times the size of an
    /// honest update.
    Random,
    /// Labels y ← C − 1 − y on the attacker's training data; the update is trained honestly.
    LabelFlip,
}

/// The `[attack]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// What the attackers do.
    pub kind: AttackKind,
    /// Share of the pool that attacks: exactly round(fraction · N) clients.
    pub fraction: f64,
    /// The attack's factor s (see [`AttackKind`]; not used by `label-flip`).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// Salt that keeps the attackers' draw apart from other uses of `Purpose::Algorithm`.
const SALT: u64 = 0xA77A_C4ED_0000_0001;

impl AttackConfig {
    /// Checks ranges; errors name the key under `attack.`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(Error::invalid(
                "attack.fraction",
                self.fraction,
                "a share of the pool in [0, 1]",
            ));
        }
        match (self.kind, self.scale) {
            (AttackKind::LabelFlip, Some(s)) => Err(Error::invalid(
                "attack.scale",
                s,
                "no scale with kind = \"label-flip\"",
            )),
            (_, Some(s)) if !(s.is_finite() && s > 0.0) => {
                Err(Error::invalid("attack.scale", s, "a finite factor > 0"))
            }
            _ => Ok(()),
        }
    }

    /// The factor s in effect.
    pub fn factor(&self) -> f64 {
        self.scale.unwrap_or(match self.kind {
            AttackKind::SignFlip => 4.0,
            AttackKind::Scale | AttackKind::Random => 10.0,
            AttackKind::LabelFlip => 1.0,
        })
    }

    /// The attackers of a pool of `n` clients: round(fraction · n) ids drawn uniformly
    /// from the seed.
    pub fn attackers(&self, n: usize, seed: u64) -> BTreeSet<ClientId> {
        let m = ((self.fraction * n as f64).round() as usize).min(n);
        let mut rng = stream(seed ^ SALT, 0, 0, Purpose::Algorithm);
        rand::seq::index::sample(&mut rng, n, m)
            .into_iter()
            .map(|i| i as ClientId)
            .collect()
    }

    /// The attack one attacker runs.
    pub fn attack(&self) -> Attack {
        Attack {
            kind: self.kind,
            scale: self.factor(),
        }
    }
}

/// One attacker's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attack {
    /// What it does.
    pub kind: AttackKind,
    /// Its factor s.
    pub scale: f64,
}

impl Attack {
    /// Replaces the honest update `delta` of client `id` in `round` (seed `seed`).
    pub fn apply(&self, delta: &mut [f32], id: ClientId, round: u32, seed: u64) {
        match self.kind {
            AttackKind::SignFlip => delta.iter_mut().for_each(|v| *v *= -self.scale as f32),
            AttackKind::Scale => delta.iter_mut().for_each(|v| *v *= self.scale as f32),
            AttackKind::Random => {
                let rms = l2_norm(delta) / (delta.len().max(1) as f64).sqrt();
                let sigma = self.scale * rms;
                let mut rng = stream(seed ^ SALT, round as u64, id, Purpose::Algorithm);
                for v in delta.iter_mut() {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *v = (sigma * z) as f32;
                }
            }
            AttackKind::LabelFlip => {}
        }
    }
}

/// A training split whose labels are flipped, y ← C − 1 − y (the `label-flip` attack).
pub struct FlippedLabels(pub Arc<dyn Dataset>);

impl Dataset for FlippedLabels {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn num_classes(&self) -> usize {
        self.0.num_classes()
    }
    fn label(&self, i: usize) -> u32 {
        self.flip(self.0.label(i))
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let mut b = self.0.batch(indices);
        b.labels.iter_mut().for_each(|y| *y = self.flip(*y));
        b
    }
}

impl FlippedLabels {
    fn flip(&self, y: u32) -> u32 {
        (self.0.num_classes() as u32)
            .saturating_sub(1)
            .saturating_sub(y)
    }
}
