//! Update compression as a stage (docs/privacy.md, "Compression" and "Wiring"): the client
//! encodes its finished update (QSGD at 8 or 4 bits, or top-k with error feedback) and
//! sends the encoding in place of the dense delta; the server decodes it when it accepts
//! the reply. Top-k's residual is client state ([`CompressionResidual`] in the client's
//! `LocalState`), so it is checkpointed with it.

use fedpace_core::ext::Payload;
use fedpace_core::{Error, LocalState, Result};
use fedpace_params::ParamSpec;
use fedpace_privacy::compress::{
    qsgd_encode, top_k, EncodedSize, ErrorFeedback, QsgdConfig, QsgdUpdate, SparseUpdate,
};
use serde::{Deserialize, Serialize};

/// The `[compression]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CompressionConfig {
    /// QSGD (Alistarh et al. 2017): stochastic quantisation to `bits` per parameter.
    Qsgd {
        /// 8 or 4.
        bits: u8,
        /// Parameters per norm (default 512).
        #[serde(default = "bucket")]
        bucket_size: usize,
    },
    /// Top-k with error feedback (Stich et al. 2018): the ⌈fraction·P⌉ largest
    /// coordinates of update + residual.
    TopK {
        /// Share of the parameters sent, in (0, 1].
        fraction: f64,
    },
}

fn bucket() -> usize {
    512
}

impl CompressionConfig {
    /// Checks ranges; errors name the key under `compression.`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            CompressionConfig::Qsgd { bits, bucket_size } => {
                if bits != 8 && bits != 4 {
                    return Err(Error::invalid("compression.bits", bits, "8 or 4"));
                }
                if bucket_size == 0 {
                    return Err(Error::invalid("compression.bucket_size", 0, "at least 1"));
                }
            }
            CompressionConfig::TopK { fraction } => {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(Error::invalid(
                        "compression.fraction",
                        fraction,
                        "a share of the parameters in (0, 1]",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            CompressionConfig::Qsgd { bits, .. } => format!("qsgd-{bits}bit"),
            CompressionConfig::TopK { fraction } => format!("top-k({fraction})"),
        }
    }
}

/// Sent with every instruction when `[compression]` is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Compress(pub CompressionConfig);

impl Payload for Compress {
    const NAME: &'static str = "compress";
}

/// The encoded update a compressing client sends (its delta is all zeros).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CompressedUpdate {
    /// QSGD codes and bucket norms.
    Qsgd(QsgdUpdate),
    /// Indices and values.
    TopK(SparseUpdate),
}

impl Payload for CompressedUpdate {
    const NAME: &'static str = "compressed-update";
    fn validate(&self, spec: &ParamSpec) -> std::result::Result<(), String> {
        let (len, checked) = match self {
            CompressedUpdate::Qsgd(q) => (q.len(), q.validate()),
            CompressedUpdate::TopK(s) => (s.len(), s.validate()),
        };
        checked.map_err(|e| e.to_string())?;
        if len != spec.total_len() {
            return Err(format!("{len} parameters, expected {}", spec.total_len()));
        }
        Ok(())
    }
    fn heap_bytes(&self) -> usize {
        self.encoded_bytes()
    }
}

impl CompressedUpdate {
    /// The dense update it encodes.
    pub fn decode(&self) -> Vec<f32> {
        match self {
            CompressedUpdate::Qsgd(q) => q.decode(),
            CompressedUpdate::TopK(s) => s.decode(),
        }
    }

    /// Bytes of the encoding.
    pub fn encoded_bytes(&self) -> usize {
        match self {
            CompressedUpdate::Qsgd(q) => q.encoded_bytes(),
            CompressedUpdate::TopK(s) => s.encoded_bytes(),
        }
    }
}

/// Top-k's residual, kept in the client's state between rounds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompressionResidual(pub ErrorFeedback);

impl Payload for CompressionResidual {
    const NAME: &'static str = "compression-residual";
    fn heap_bytes(&self) -> usize {
        4 * self.0.residual().len()
    }
}

/// Encodes `delta` (then zeroed) per `config`; `rng` drives QSGD's stochastic rounding.
pub fn encode(
    config: &CompressionConfig,
    delta: &mut [f32],
    state: &mut LocalState,
    rng: &mut impl rand::Rng,
) -> Result<CompressedUpdate> {
    let err = |e: fedpace_privacy::Error| Error::Backend(format!("compression: {e}"));
    let out = match *config {
        CompressionConfig::Qsgd { bits, bucket_size } => CompressedUpdate::Qsgd(
            qsgd_encode(delta, QsgdConfig { bits, bucket_size }, rng).map_err(err)?,
        ),
        CompressionConfig::TopK { fraction } => {
            let k = ((fraction * delta.len() as f64).ceil() as usize).clamp(1, delta.len().max(1));
            let mut fb = state
                .ext
                .remove::<CompressionResidual>()
                .unwrap_or_default();
            if !fb.0.residual().is_empty() && fb.0.residual().len() != delta.len() {
                return Err(Error::invalid(
                    "compression residual",
                    format!("{} values", fb.0.residual().len()),
                    format!("one per parameter ({})", delta.len()),
                ));
            }
            let sparse = top_k(delta, k, &mut fb.0).map_err(err)?;
            state.ext.insert(fb);
            CompressedUpdate::TopK(sparse)
        }
    };
    delta.iter_mut().for_each(|v| *v = 0.0);
    Ok(out)
}
