//! Fixed-point encoding of `f32` updates into the integers that secure aggregation sums
//! exactly (docs/privacy.md, "Quantisation").
//!
//! x is clipped to [−c, c], mapped to u = (x + c) · L / (2c) ∈ [0, L] and rounded
//! stochastically (⌊u⌋ + Bernoulli(u − ⌊u⌋), unbiased inside the range). A sum over n
//! clients lies in [0, n·L], which must stay below the modulus 2^bits so it never wraps;
//! it decodes as Σ x ≈ S · 2c/L − n·c.

use crate::error::{check_finite, invalid, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Clipping range, levels and modulus of the fixed-point encoding. Defaults are Flower's
/// SecAgg+ ones: c = 8, L = 2²², modulus 2³².
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quantization {
    /// c: values are clipped to [−c, c] before encoding.
    pub clipping_range: f32,
    /// L: the encoded range is the integers 0..=L.
    pub levels: u64,
    /// The sum is kept mod 2^modulus_bits (1..=63).
    pub modulus_bits: u32,
}

impl Default for Quantization {
    fn default() -> Self {
        Self {
            clipping_range: 8.0,
            levels: 1 << 22,
            modulus_bits: 32,
        }
    }
}

impl Quantization {
    /// Checks the fields and that a sum of `clients` encoded vectors cannot wrap:
    /// clients · L < 2^modulus_bits.
    pub fn validate(&self, clients: usize) -> Result<()> {
        if !(self.clipping_range > 0.0 && self.clipping_range.is_finite()) {
            return Err(invalid(
                "clipping_range",
                self.clipping_range,
                "must be a finite number > 0",
            ));
        }
        if !(1..=63).contains(&self.modulus_bits) {
            return Err(invalid(
                "modulus_bits",
                self.modulus_bits,
                "must be in 1..=63",
            ));
        }
        if self.levels == 0 {
            return Err(invalid("levels", 0, "must be ≥ 1"));
        }
        let room = (1u128 << self.modulus_bits) - 1;
        if clients as u128 * self.levels as u128 > room {
            return Err(invalid(
                "levels",
                self.levels,
                format!(
                    "{clients} clients × {} levels would wrap modulo 2^{}; lower levels or raise modulus_bits",
                    self.levels, self.modulus_bits
                ),
            ));
        }
        Ok(())
    }

    /// The modulus 2^bits.
    pub fn modulus(&self) -> u64 {
        1u64 << self.modulus_bits
    }

    /// Encodes `x` with stochastic rounding.
    pub fn quantize(&self, x: &[f32], rng: &mut impl Rng) -> Result<Vec<u64>> {
        check_finite("update", x)?;
        let c = self.clipping_range as f64;
        let scale = self.levels as f64 / (2.0 * c);
        Ok(x.iter()
            .map(|&v| {
                let u = ((v as f64).clamp(-c, c) + c) * scale;
                let floor = u.floor();
                let up = rng.gen::<f64>() < u - floor;
                (floor as u64 + up as u64).min(self.levels)
            })
            .collect())
    }

    /// Decodes a sum of `clients` encoded vectors: S · 2c/L − clients · c.
    pub fn dequantize_sum(&self, sum: &[u64], clients: usize) -> Vec<f32> {
        let c = self.clipping_range as f64;
        let step = 2.0 * c / self.levels as f64;
        let offset = clients as f64 * c;
        sum.iter()
            .map(|&s| (s as f64 * step - offset) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecureRng;

    #[test]
    fn encoding_is_unbiased_inside_the_range_and_clipped_outside() {
        let q = Quantization {
            clipping_range: 1.0,
            levels: 10,
            modulus_bits: 32,
        };
        let mut rng = SecureRng::simulated(0, 0);
        let x = [0.33f32, -0.71, 0.0, 1.0, -1.0, 5.0, -5.0];
        let draws = 20_000;
        let mut sum = vec![0u64; x.len()];
        for _ in 0..draws {
            for (s, v) in sum.iter_mut().zip(q.quantize(&x, &mut rng).unwrap()) {
                assert!(v <= 10);
                *s += v;
            }
        }
        let mean = q.dequantize_sum(&sum, draws);
        for ((m, &v), want) in mean
            .iter()
            .zip(&x)
            .zip([0.33, -0.71, 0.0, 1.0, -1.0, 1.0, -1.0])
        {
            // Per-draw spread ≤ one step (0.2): 5 standard errors of the mean ≈ 0.007.
            assert!(
                (m / draws as f32 - want).abs() < 0.0075,
                "{v}: mean {}",
                m / draws as f32
            );
        }
    }

    #[test]
    fn validate_rejects_a_sum_that_could_wrap() {
        let q = Quantization::default();
        assert!(q.validate(1023).is_ok());
        let e = q.validate(1024).unwrap_err().to_string();
        assert!(
            e.contains("1024 clients × 4194304 levels would wrap modulo 2^32"),
            "{e}"
        );
    }
}
