//! Typed model configuration and the factory the CLI and the simulation use.
//!
//! ```
//! use fedpace_nn::{factory, InputShape, ModelConfig};
//! let cfg: ModelConfig = serde_json::from_str(r#"{"name": "mlp"}"#).unwrap();
//! assert_eq!(cfg, ModelConfig::Mlp { hidden: vec![200, 200] });
//! let make = factory(&cfg, &InputShape::Dense(vec![1, 28, 28]), 10).unwrap();
//! assert_eq!(make().unwrap().spec().total_len(), 199_210);
//! ```

use crate::error::{Error, Result};
use crate::{CharLstm, Cnn, LogisticRegression, Mlp};
use fedpace_core::{Model, ModelFactory};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Which model to train. In TOML: `name = "mlp"`, `hidden = [200, 200]`, ….
/// Unknown keys are rejected for every variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(
    tag = "name",
    rename_all = "kebab-case",
    deny_unknown_fields,
    from = "RawModelConfig"
)]
pub enum ModelConfig {
    /// Multinomial logistic regression, d → C ([`LogisticRegression`]).
    LogisticRegression,
    /// ReLU MLP ([`Mlp`]); `hidden` defaults to `[200, 200]` (the FedAvg "2NN").
    Mlp {
        /// Hidden layer widths.
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
    },
    /// The FedAvg-paper CNN ([`Cnn`]); input `[C, H, W]` (or `[H, W]`), H and W multiples of 4.
    Cnn,
    /// LEAF Shakespeare next-character LSTM ([`CharLstm`]); defaults 8 / 256 / 2.
    CharLstm {
        /// Embedding width.
        #[serde(default = "default_embedding")]
        embedding: usize,
        /// LSTM hidden width.
        #[serde(default = "default_lstm_hidden")]
        hidden: usize,
        /// Number of stacked LSTM layers.
        #[serde(default = "default_layers")]
        layers: usize,
    },
}

// serde ignores unknown keys on unit variants of internally tagged enums even with
// `deny_unknown_fields`; deserialising through empty struct variants makes it strict.
#[derive(Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
enum RawModelConfig {
    LogisticRegression {},
    Mlp {
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
    },
    Cnn {},
    CharLstm {
        #[serde(default = "default_embedding")]
        embedding: usize,
        #[serde(default = "default_lstm_hidden")]
        hidden: usize,
        #[serde(default = "default_layers")]
        layers: usize,
    },
}

impl From<RawModelConfig> for ModelConfig {
    fn from(r: RawModelConfig) -> Self {
        match r {
            RawModelConfig::LogisticRegression {} => ModelConfig::LogisticRegression,
            RawModelConfig::Mlp { hidden } => ModelConfig::Mlp { hidden },
            RawModelConfig::Cnn {} => ModelConfig::Cnn,
            RawModelConfig::CharLstm {
                embedding,
                hidden,
                layers,
            } => ModelConfig::CharLstm {
                embedding,
                hidden,
                layers,
            },
        }
    }
}

fn default_hidden() -> Vec<usize> {
    vec![200, 200]
}
fn default_embedding() -> usize {
    8
}
fn default_lstm_hidden() -> usize {
    256
}
fn default_layers() -> usize {
    2
}

impl ModelConfig {
    /// The config name (`logistic-regression`, `mlp`, `cnn`, `char-lstm`).
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::LogisticRegression => "logistic-regression",
            ModelConfig::Mlp { .. } => "mlp",
            ModelConfig::Cnn => "cnn",
            ModelConfig::CharLstm { .. } => "char-lstm",
        }
    }
}

/// The shape of one input sample, as the data set describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum InputShape {
    /// Dense features of this shape (e.g. `[60]`, `[1, 28, 28]`).
    Dense(Vec<usize>),
    /// Token sequences of `seq_len` ids below `vocab`.
    Tokens {
        /// Tokens per sample.
        seq_len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputShape::Dense(s) => write!(f, "dense {s:?}"),
            InputShape::Tokens { seq_len, vocab } => {
                write!(f, "tokens (seq_len {seq_len}, vocab {vocab})")
            }
        }
    }
}

/// Builds one model now (so a misfit config fails here, with the model and shape named)
/// and returns a factory that makes independent copies, one per worker thread.
pub fn factory(cfg: &ModelConfig, input: &InputShape, num_classes: usize) -> Result<ModelFactory> {
    factory_with_grain(cfg, input, num_classes, 0)
}

/// [`factory`] whose CNN and char-LSTM use at most `grain` threads of the caller's rayon
/// pool per call ([`Cnn::with_threads`]: 0 = every idle thread, 1 = the calling thread
/// only; [`CharLstm::with_threads`] with `grain` ≥ 1, the calling thread only for 0).
/// Results never depend on it (docs/arch/0002-parallelism.md). Logistic regression and
/// the MLP ignore it.
pub fn factory_with_grain(
    cfg: &ModelConfig,
    input: &InputShape,
    num_classes: usize,
    grain: usize,
) -> Result<ModelFactory> {
    let unsupported = |reason: &str| Error::UnsupportedInput {
        model: cfg.name().into(),
        input: input.to_string(),
        reason: reason.into(),
    };
    let dense_len = |s: &Vec<usize>| -> Result<usize> {
        let d: usize = s.iter().product();
        if s.is_empty() || d == 0 {
            return Err(unsupported("needs a non-empty sample shape"));
        }
        Ok(d)
    };
    match (cfg, input) {
        (ModelConfig::LogisticRegression, InputShape::Dense(s)) => {
            proto(LogisticRegression::new(dense_len(s)?, num_classes)?)
        }
        (ModelConfig::Mlp { hidden }, InputShape::Dense(s)) => {
            proto(Mlp::new(dense_len(s)?, hidden, num_classes)?)
        }
        (ModelConfig::Cnn, InputShape::Dense(s)) => {
            let chw = match *s.as_slice() {
                [c, h, w] => [c, h, w],
                [h, w] => [1, h, w],
                _ => {
                    return Err(unsupported(
                        "needs images [channels, height, width] or [height, width]",
                    ))
                }
            };
            proto(
                Cnn::new(chw, num_classes)
                    .map_err(|e| match e {
                        Error::UnsupportedInput { reason, .. } => unsupported(&reason),
                        other => other,
                    })?
                    .with_threads(grain),
            )
        }
        (
            ModelConfig::CharLstm {
                embedding,
                hidden,
                layers,
            },
            InputShape::Tokens { seq_len, vocab },
        ) => proto(
            // 0 keeps the char-LSTM on its thread: the `gemm` crate splits its products
            // whether or not another thread is idle, which cost 5 % more CPU when every
            // thread has its own client (docs/arch/0014-fast-layers.md).
            CharLstm::new(*vocab, *embedding, *hidden, *layers, *seq_len, num_classes)?
                .with_threads(grain.max(1)),
        ),
        (ModelConfig::CharLstm { .. }, InputShape::Dense(_)) => {
            Err(unsupported("needs token sequences, not dense features"))
        }
        (_, InputShape::Tokens { .. }) => Err(unsupported(
            "needs dense features, not token sequences (use char-lstm)",
        )),
    }
}

fn proto<M: Model + Clone + Sync + 'static>(m: M) -> Result<ModelFactory> {
    Ok(Arc::new(move || Ok(Box::new(m.clone()) as Box<dyn Model>)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_defaults_and_reject_unknown_keys() {
        let c: ModelConfig = serde_json::from_str(r#"{"name":"char-lstm"}"#).unwrap();
        assert_eq!(
            c,
            ModelConfig::CharLstm {
                embedding: 8,
                hidden: 256,
                layers: 2
            }
        );
        let c: ModelConfig = serde_json::from_str(r#"{"name":"mlp","hidden":[64]}"#).unwrap();
        assert_eq!(c, ModelConfig::Mlp { hidden: vec![64] });
        assert!(serde_json::from_str::<ModelConfig>(r#"{"name":"cnn","width":3}"#).is_err());
        assert!(serde_json::from_str::<ModelConfig>(r#"{"name":"resnet"}"#).is_err());
        assert!(serde_json::from_str::<ModelConfig>(r#"{"name":"mlp","hiden":[3]}"#).is_err());
        for c in [
            ModelConfig::LogisticRegression,
            ModelConfig::Cnn,
            ModelConfig::Mlp { hidden: vec![7] },
        ] {
            let s = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ModelConfig>(&s).unwrap(), c, "{s}");
        }
    }

    #[test]
    fn factory_sizes_match_the_papers() {
        let img = InputShape::Dense(vec![1, 28, 28]);
        let n = |cfg: ModelConfig, input: &InputShape, c| {
            factory(&cfg, input, c).unwrap()()
                .unwrap()
                .spec()
                .total_len()
        };
        assert_eq!(
            n(
                ModelConfig::LogisticRegression,
                &InputShape::Dense(vec![60]),
                10
            ),
            610
        );
        assert_eq!(
            n(
                ModelConfig::Mlp {
                    hidden: vec![200, 200]
                },
                &img,
                10
            ),
            199_210
        );
        assert_eq!(n(ModelConfig::Cnn, &img, 10), 1_663_370);
        assert_eq!(
            n(ModelConfig::Cnn, &InputShape::Dense(vec![28, 28]), 10),
            1_663_370
        );
    }

    #[test]
    fn misfits_name_the_model_and_the_shape() {
        let e = factory(&ModelConfig::Cnn, &InputShape::Dense(vec![1, 30, 30]), 10)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cnn") && e.contains("[1, 30, 30]") && e.contains("multiples of 4"),
            "{e}"
        );
        let tokens = InputShape::Tokens {
            seq_len: 80,
            vocab: 80,
        };
        let e = factory(&ModelConfig::Cnn, &tokens, 80)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cnn") && e.contains("seq_len 80"), "{e}");
        let e = factory(
            &ModelConfig::Mlp { hidden: vec![0] },
            &InputShape::Dense(vec![4]),
            2,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("mlp") && e.contains("hidden"), "{e}");
        let e = factory(
            &ModelConfig::CharLstm {
                embedding: 8,
                hidden: 16,
                layers: 1,
            },
            &InputShape::Dense(vec![60]),
            10,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("char-lstm") && e.contains("dense [60]"), "{e}");
    }
}
