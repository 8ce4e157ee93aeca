//! Deterministic random streams: every stream is derived from
//! `(seed, round, client id, purpose)`, so results do not depend on thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

/// What a random stream is used for; part of its derivation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Purpose {
    /// Client sampling on the server.
    Sampling = 1,
    /// Mini-batch shuffling inside a client.
    Shuffle = 2,
    /// Model initialisation.
    Init = 3,
    /// Data partitioning.
    Partition = 4,
    /// Data generation.
    Generate = 5,
    /// Personalised fine-tuning at evaluation.
    FineTune = 6,
    /// Anything an algorithm needs on its own (noise, dropout, …).
    Algorithm = 7,
    /// Which clients are evaluated (`eval.max_clients`).
    Evaluation = 8,
    /// Which samples form the validation splits (`data.validation_fraction`).
    Validation = 9,
    /// A rate policy's own draws (FedEx's configurations, perturbations).
    Policy = 10,
}

/// SplitMix64 finaliser: a good 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a 64-bit seed for one stream.
pub fn derive_seed(seed: u64, round: u64, client: u64, purpose: Purpose) -> u64 {
    let mut h = mix64(seed);
    h = mix64(h ^ round);
    h = mix64(h ^ client.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    mix64(h ^ purpose as u64)
}

/// A seeded RNG for one stream.
pub fn stream(seed: u64, round: u64, client: u64, purpose: Purpose) -> ChaCha12Rng {
    ChaCha12Rng::seed_from_u64(derive_seed(seed, round, client, purpose))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn streams_differ_by_every_key_part() {
        let a = derive_seed(1, 2, 3, Purpose::Shuffle);
        assert_ne!(a, derive_seed(2, 2, 3, Purpose::Shuffle));
        assert_ne!(a, derive_seed(1, 3, 3, Purpose::Shuffle));
        assert_ne!(a, derive_seed(1, 2, 4, Purpose::Shuffle));
        assert_ne!(a, derive_seed(1, 2, 3, Purpose::Sampling));
        assert_eq!(a, derive_seed(1, 2, 3, Purpose::Shuffle));
    }
}
