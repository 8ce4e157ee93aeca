//! Update compression (docs/privacy.md, "Compression"): QSGD stochastic quantisation to 8 or
//! 4 bits per parameter, and top-k sparsification with error feedback.
//!
//! The one decision: the encoders return the encoded value itself (what would go on the
//! wire), with its exact byte count ([`EncodedSize`]); the caller decodes on the server. The
//! error-feedback residual is a serialisable value the client keeps between rounds.

use crate::error::{check_finite, check_len, invalid, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Bytes an encoded update takes on the wire.
pub trait EncodedSize {
    /// Encoded size in bytes.
    fn encoded_bytes(&self) -> usize;
}

/// Bytes of an uncompressed `f32` update of `len` parameters.
pub fn dense_bytes(len: usize) -> usize {
    4 * len
}

/// QSGD parameters (Alistarh et al. 2017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsgdConfig {
    /// Bits per parameter, sign included: 8 (127 levels) or 4 (7 levels).
    pub bits: u8,
    /// Parameters sharing one norm (QSGD's bucket d; 512 in the paper's experiments).
    pub bucket_size: usize,
}

impl QsgdConfig {
    /// 8 bits, buckets of 512.
    pub fn eight_bit() -> Self {
        Self {
            bits: 8,
            bucket_size: 512,
        }
    }

    /// 4 bits, buckets of 512.
    pub fn four_bit() -> Self {
        Self {
            bits: 4,
            bucket_size: 512,
        }
    }

    /// Checks the fields.
    pub fn validate(&self) -> Result<()> {
        if self.bits != 8 && self.bits != 4 {
            return Err(invalid("bits", self.bits, "must be 8 or 4"));
        }
        if self.bucket_size == 0 {
            return Err(invalid("bucket_size", 0, "must be ≥ 1"));
        }
        Ok(())
    }

    /// s, the number of non-zero magnitude levels: 2^(bits − 1) − 1.
    pub fn levels(&self) -> u8 {
        (1u8 << (self.bits - 1)) - 1
    }
}

/// A QSGD-encoded update: one `f32` norm per bucket and one sign-magnitude code per
/// parameter (two per byte at 4 bits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QsgdUpdate {
    config: QsgdConfig,
    len: usize,
    norms: Vec<f32>,
    codes: Vec<u8>,
}

/// Encodes `x`: per bucket with norm ‖v‖, each v_i becomes sign(v_i) · ‖v‖ · ℓ/s with
/// ℓ = ⌊r⌋ + Bernoulli(r − ⌊r⌋), r = s·|v_i|/‖v‖, so the decoded vector's expectation is exactly x.
pub fn qsgd_encode(x: &[f32], config: QsgdConfig, rng: &mut impl Rng) -> Result<QsgdUpdate> {
    config.validate()?;
    check_finite("update", x)?;
    let s = config.levels() as f64;
    let mut norms = Vec::with_capacity(x.len().div_ceil(config.bucket_size));
    let mut codes = vec![0u8; (x.len() * config.bits as usize).div_ceil(8)];
    for (b, bucket) in x.chunks(config.bucket_size).enumerate() {
        let exact = fedpace_params::l2_norm(bucket);
        // Round the stored norm up, so that |v_i| ≤ norm and r never exceeds s.
        let mut norm = exact as f32;
        if (norm as f64) < exact {
            norm = f32::from_bits(norm.to_bits() + 1);
        }
        norms.push(norm);
        for (j, &v) in bucket.iter().enumerate() {
            let level = if norm == 0.0 {
                0
            } else {
                let r = s * (v.abs() as f64) / norm as f64;
                let floor = r.floor();
                (floor as u8 + (rng.gen::<f64>() < r - floor) as u8).min(config.levels())
            };
            let code = level | (((v < 0.0) as u8) << (config.bits - 1));
            let i = b * config.bucket_size + j;
            if config.bits == 8 {
                codes[i] = code;
            } else {
                codes[i / 2] |= code << (4 * (i % 2));
            }
        }
    }
    Ok(QsgdUpdate {
        config,
        len: x.len(),
        norms,
        codes,
    })
}

impl QsgdUpdate {
    /// The dense `f32` vector this encodes.
    pub fn decode(&self) -> Vec<f32> {
        let bits = self.config.bits;
        let s = self.config.levels() as f32;
        (0..self.len)
            .map(|i| {
                let code = if bits == 8 {
                    self.codes[i]
                } else {
                    (self.codes[i / 2] >> (4 * (i % 2))) & 0x0F
                };
                let level = (code & self.config.levels()) as f32;
                let sign = if code >> (bits - 1) == 1 { -1.0 } else { 1.0 };
                sign * self.norms[i / self.config.bucket_size] * level / s
            })
            .collect()
    }

    /// Parameters encoded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it encodes no parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl EncodedSize for QsgdUpdate {
    /// bits (1) + bucket size (4) + length (4) + 4 per norm + ⌈len · bits / 8⌉.
    fn encoded_bytes(&self) -> usize {
        1 + 4 + 4 + 4 * self.norms.len() + self.codes.len()
    }
}

/// A sparse update: the chosen coordinates and their values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseUpdate {
    len: usize,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl SparseUpdate {
    /// The dense vector (zeros elsewhere).
    pub fn decode(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.len];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            out[i as usize] = v;
        }
        out
    }

    /// Indices sent, ascending.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Values sent, in index order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl EncodedSize for SparseUpdate {
    /// length (4) + count (4) + 8 per kept coordinate (u32 index, f32 value).
    fn encoded_bytes(&self) -> usize {
        4 + 4 + 8 * self.indices.len()
    }
}

/// What top-k has not sent yet: the client keeps it between rounds (serialisable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// The residual carried into the next round (empty before the first).
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }
}

/// Top-k sparsification with error feedback (Stich et al. 2018): a = update + residual;
/// send the k coordinates of largest |a| (ties to the lower index); keep the rest as the
/// new residual. Over rounds, Σ sent + residual = Σ updates.
pub fn top_k(update: &[f32], k: usize, state: &mut ErrorFeedback) -> Result<SparseUpdate> {
    check_finite("update", update)?;
    if k == 0 || k > update.len() {
        return Err(invalid("k", k, format!("must be in 1..={}", update.len())));
    }
    if update.len() > u32::MAX as usize {
        return Err(invalid(
            "update length",
            update.len(),
            "must fit in u32 indices",
        ));
    }
    if state.residual.is_empty() {
        state.residual = vec![0.0; update.len()];
    }
    check_len(
        "error-feedback residual",
        update.len(),
        state.residual.len(),
    )?;
    for (r, &u) in state.residual.iter_mut().zip(update) {
        *r += u;
    }
    let acc = &mut state.residual;
    let mut order: Vec<u32> = (0..acc.len() as u32).collect();
    let by_magnitude = |a: &u32, b: &u32| {
        acc[*b as usize]
            .abs()
            .total_cmp(&acc[*a as usize].abs())
            .then(a.cmp(b))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_magnitude);
        order.truncate(k);
    }
    order.sort_unstable();
    let values = order.iter().map(|&i| acc[i as usize]).collect();
    for &i in &order {
        acc[i as usize] = 0.0;
    }
    Ok(SparseUpdate {
        len: update.len(),
        indices: order,
        values,
    })
}
