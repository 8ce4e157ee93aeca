//! Cryptographically secure randomness for noise, masks, keys and stochastic rounding
//! (docs/privacy.md, "Randomness").
//!
//! The one decision: every random draw in this crate comes from [`SecureRng`], a ChaCha20
//! generator. It is keyed from the operating system unless the caller asks, by name, for a
//! simulation seed ([`Randomness::Simulation`]); a deployment keeps the default
//! ([`Randomness::Os`]) and can check [`SecureRng::is_simulated`] before it trusts one.

use crate::error::{Error, Result};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a [`SecureRng`] gets its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Randomness {
    /// 256 bits from the operating system per generator: unpredictable, not reproducible.
    // A struct variant so that a stray `seed` next to `mode = "os"` is rejected.
    Os {},
    /// Derived from a seed and a stream id: reproducible, for simulation only.
    Simulation {
        /// The experiment seed.
        seed: u64,
    },
}

impl Default for Randomness {
    fn default() -> Self {
        Randomness::Os {}
    }
}

/// Set once a process has declared itself part of a deployment ([`enter_deployment`]).
static DEPLOYMENT: AtomicBool = AtomicBool::new(false);

/// Declares this process part of a deployment (`fedpace server`, `fedpace node`,
/// `fedpace client`): from now on [`Randomness::rng`] refuses a simulation seed, so noise,
/// masks and keys can only come from the operating system — whatever a config, or a
/// server's instruction, asks for. It cannot be undone.
pub fn enter_deployment() {
    DEPLOYMENT.store(true, Ordering::SeqCst);
}

/// Whether [`enter_deployment`] was called in this process.
pub fn in_deployment() -> bool {
    DEPLOYMENT.load(Ordering::SeqCst)
}

impl Randomness {
    /// A generator for one stream (a caller-derived id, e.g. from round, client and purpose).
    /// With [`Randomness::Os`] the stream id is ignored and fresh entropy is drawn. In a
    /// deployment ([`enter_deployment`]) a simulation seed is an error, never a generator.
    pub fn rng(&self, stream: u64) -> Result<SecureRng> {
        match *self {
            Randomness::Os {} => SecureRng::from_os_entropy(),
            Randomness::Simulation { seed } if in_deployment() => Err(Error::InvalidParameter {
                field: "randomness",
                value: format!("simulation seed {seed}"),
                expected: "operating-system randomness in a deployment (a seeded \
                               generator makes noise, masks and keys predictable)"
                    .into(),
            }),
            Randomness::Simulation { seed } => Ok(SecureRng::simulated(seed, stream)),
        }
    }
}

/// ChaCha20 generator that remembers whether it was keyed for simulation.
#[derive(Debug, Clone)]
pub struct SecureRng {
    inner: ChaCha20Rng,
    simulated: bool,
}

impl SecureRng {
    /// Keyed with 32 bytes from the operating system.
    pub fn from_os_entropy() -> Result<Self> {
        let mut key = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| Error::Entropy(e.to_string()))?;
        Ok(Self {
            inner: ChaCha20Rng::from_seed(key),
            simulated: false,
        })
    }

    /// Keyed with SHA-256(label ‖ seed ‖ stream): reproducible, **not secret**.
    pub fn simulated(seed: u64, stream: u64) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"fedpace/privacy/simulation")
            .chain_update(seed.to_le_bytes())
            .chain_update(stream.to_le_bytes())
            .finalize()
            .into();
        Self {
            inner: ChaCha20Rng::from_seed(key),
            simulated: true,
        }
    }

    /// True when the key came from a simulation seed (never acceptable in a deployment).
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// An independent generator keyed from this one (same simulated flag).
    pub fn fork(&mut self) -> Self {
        let mut key = [0u8; 32];
        self.inner.fill_bytes(&mut key);
        Self {
            inner: ChaCha20Rng::from_seed(key),
            simulated: self.simulated,
        }
    }

    /// One standard normal draw, N(0, 1).
    pub fn standard_normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.inner)
    }
}

impl RngCore for SecureRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.inner.try_fill_bytes(dest)
    }
}

impl CryptoRng for SecureRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_streams_are_reproducible_and_distinct() {
        let a = SecureRng::simulated(7, 1).next_u64();
        assert_eq!(a, SecureRng::simulated(7, 1).next_u64());
        assert_ne!(a, SecureRng::simulated(7, 2).next_u64());
        assert_ne!(a, SecureRng::simulated(8, 1).next_u64());
        assert!(SecureRng::simulated(7, 1).is_simulated());
    }

    #[test]
    fn os_generators_are_not_simulated_and_differ() {
        let mut a = Randomness::Os {}.rng(0).unwrap();
        let mut b = Randomness::Os {}.rng(0).unwrap();
        assert!(!a.is_simulated());
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn randomness_defaults_to_os_and_parses_from_toml_like_json() {
        assert_eq!(Randomness::default(), Randomness::Os {});
        let r: Randomness = serde_json::from_str(r#"{"mode":"os"}"#).unwrap();
        assert_eq!(r, Randomness::Os {});
        let r: Randomness = serde_json::from_str(r#"{"mode":"simulation","seed":3}"#).unwrap();
        assert_eq!(r, Randomness::Simulation { seed: 3 });
        assert!(serde_json::from_str::<Randomness>(r#"{"mode":"os","seed":3}"#).is_err());
    }
}
