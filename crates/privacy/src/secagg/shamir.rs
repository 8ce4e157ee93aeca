//! Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2⁶¹ − 1)
//! (docs/privacy.md, "Secure aggregation").
//!
//! A 32-byte secret is cut into five chunks of at most 7 bytes (56 bits < 61), each shared
//! with its own random polynomial of degree t − 1. A share is the evaluation point x and one
//! field element per chunk.

use crate::error::{Error, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The field modulus p = 2⁶¹ − 1 (a Mersenne prime).
pub const PRIME: u64 = (1 << 61) - 1;
/// Bytes per chunk (7 bytes = 56 bits < 61).
const CHUNK: usize = 7;
/// Chunks per 32-byte secret.
pub const CHUNKS: usize = 32_usize.div_ceil(CHUNK);

/// One holder's share of a 32-byte secret: f_c(x) for each chunk c.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Evaluation point (never 0: f(0) is the secret).
    pub x: u64,
    /// f_c(x), one per chunk.
    pub y: [u64; CHUNKS],
}

fn reduce(v: u128) -> u64 {
    // v < 2¹²²: fold the high bits twice (2⁶¹ ≡ 1 mod p).
    let folded = (v & PRIME as u128) + (v >> 61);
    let folded = (folded & PRIME as u128) + (folded >> 61);
    let r = folded as u64;
    if r >= PRIME {
        r - PRIME
    } else {
        r
    }
}

fn mul(a: u64, b: u64) -> u64 {
    reduce(a as u128 * b as u128)
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= PRIME {
        s - PRIME
    } else {
        s
    }
}

fn sub(a: u64, b: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + PRIME - b
    }
}

fn inverse(a: u64) -> u64 {
    // Fermat: a^(p−2).
    let (mut base, mut exp, mut acc) = (a, PRIME - 2, 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

fn random_element(rng: &mut impl RngCore) -> u64 {
    loop {
        let v = rng.next_u64() >> 3;
        if v < PRIME {
            return v;
        }
    }
}

fn chunks_of(secret: &[u8; 32]) -> [u64; CHUNKS] {
    let mut out = [0u64; CHUNKS];
    for (c, bytes) in secret.chunks(CHUNK).enumerate() {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        out[c] = u64::from_le_bytes(word);
    }
    out
}

/// Splits `secret` into one share per evaluation point in `xs` (distinct, non-zero, < p);
/// any `threshold` of them reconstruct it, fewer reveal nothing.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut impl RngCore,
) -> Result<Vec<Share>> {
    if threshold == 0 || threshold > xs.len() {
        return Err(protocol(format!(
            "threshold {threshold} must be in 1..={}",
            xs.len()
        )));
    }
    check_points(xs.iter().copied())?;
    let secret = chunks_of(secret);
    // coefficients[c] = [s_c, a_1, …, a_{t−1}]
    let coefficients: Vec<Vec<u64>> = secret
        .iter()
        .map(|&s| {
            let mut poly = vec![s];
            poly.extend((1..threshold).map(|_| random_element(rng)));
            poly
        })
        .collect();
    Ok(xs
        .iter()
        .map(|&x| {
            let mut y = [0u64; CHUNKS];
            for (c, poly) in coefficients.iter().enumerate() {
                // Horner.
                y[c] = poly.iter().rev().fold(0, |acc, &a| add(mul(acc, x), a));
            }
            Share { x, y }
        })
        .collect())
}

/// Reconstructs the secret from at least `threshold` shares (Lagrange interpolation at 0 on
/// the `threshold` shares with the smallest x). Fails on too few shares, repeated or zero
/// points, or values outside the field or a chunk's range.
pub fn combine(shares: &[Share], threshold: usize) -> Result<[u8; 32]> {
    if threshold == 0 || shares.len() < threshold {
        return Err(protocol(format!(
            "{} shares cannot reconstruct a secret with threshold {threshold}",
            shares.len()
        )));
    }
    let mut used: Vec<&Share> = shares.iter().collect();
    used.sort_by_key(|s| s.x);
    check_points(used.iter().map(|s| s.x))?;
    used.truncate(threshold);
    if let Some(s) = used.iter().find(|s| s.y.iter().any(|&v| v >= PRIME)) {
        return Err(protocol(format!(
            "share at x = {} has a value outside the field",
            s.x
        )));
    }
    // λ_i = Π_{j≠i} x_j / (x_j − x_i)
    let lambdas: Vec<u64> = used
        .iter()
        .enumerate()
        .map(|(i, si)| {
            let (mut num, mut den) = (1u64, 1u64);
            for (j, sj) in used.iter().enumerate() {
                if i != j {
                    num = mul(num, sj.x);
                    den = mul(den, sub(sj.x, si.x));
                }
            }
            mul(num, inverse(den))
        })
        .collect();
    let mut secret = [0u8; 32];
    for (c, bytes) in secret.chunks_mut(CHUNK).enumerate() {
        let value = used
            .iter()
            .zip(&lambdas)
            .fold(0, |acc, (s, &l)| add(acc, mul(s.y[c], l)));
        if value >> (8 * bytes.len()) != 0 {
            return Err(protocol(
                "reconstructed secret out of range: inconsistent shares".into(),
            ));
        }
        bytes.copy_from_slice(&value.to_le_bytes()[..bytes.len()]);
    }
    Ok(secret)
}

fn check_points(xs: impl Iterator<Item = u64>) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for x in xs {
        if x == 0 || x >= PRIME {
            return Err(protocol(format!(
                "share point x = {x} must be in 1..{PRIME}"
            )));
        }
        if !seen.insert(x) {
            return Err(protocol(format!("two shares at the same point x = {x}")));
        }
    }
    Ok(())
}

fn protocol(detail: String) -> Error {
    Error::Protocol {
        stage: "secret sharing",
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecureRng;

    #[test]
    fn field_arithmetic_matches_u128_reference() {
        let mut rng = SecureRng::simulated(0, 0);
        for _ in 0..1000 {
            let (a, b) = (random_element(&mut rng), random_element(&mut rng));
            assert_eq!(mul(a, b) as u128, a as u128 * b as u128 % PRIME as u128);
            assert_eq!(add(a, b) as u128, (a as u128 + b as u128) % PRIME as u128);
            assert_eq!(add(sub(a, b), b), a);
            if a != 0 {
                assert_eq!(mul(a, inverse(a)), 1);
            }
        }
        assert_eq!(mul(PRIME - 1, PRIME - 1), 1);
    }

    #[test]
    fn any_threshold_subset_reconstructs_and_fewer_do_not() {
        let mut rng = SecureRng::simulated(1, 0);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let xs: Vec<u64> = (1..=7).map(|i| i * 1000 + 3).collect();
        let shares = split(&secret, 4, &xs, &mut rng).unwrap();
        for subset in [[0, 1, 2, 3], [3, 4, 5, 6], [0, 2, 4, 6], [6, 1, 5, 2]] {
            let picked: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&picked, 4).unwrap(), secret);
        }
        let e = combine(&shares[..3], 4).unwrap_err().to_string();
        assert!(
            e.contains("3 shares cannot reconstruct a secret with threshold 4"),
            "{e}"
        );
        // Three shares interpolated as if the threshold were 3 give a different secret.
        assert_ne!(combine(&shares[..3], 3).ok(), Some(secret));
    }

    #[test]
    fn repeated_or_zero_points_are_rejected() {
        let mut rng = SecureRng::simulated(2, 0);
        assert!(split(&[7; 32], 2, &[1, 1, 2], &mut rng).is_err());
        assert!(split(&[7; 32], 2, &[0, 1, 2], &mut rng).is_err());
        let s = split(&[7; 32], 2, &[1, 2], &mut rng).unwrap();
        assert!(combine(&[s[0].clone(), s[0].clone()], 2).is_err());
    }
}
