//! Models for fedpace over flat parameters: multinomial logistic regression, an MLP, the
//! FedAvg-paper CNN and the LEAF Shakespeare char-LSTM, each in plain Rust with a
//! hand-written backward pass (docs/arch/0006-cnn-plain-rust.md,
//! docs/arch/0014-fast-layers.md); the MLP, the CNN and the char-LSTM also on candle
//! ([`CandleMlp`], [`CandleCnn`], [`CandleCharLstm`]), the references the fast versions
//! are tested against, and the way to write a model of one's own.
//!
//! Every model implements [`fedpace_core::Model`]: it owns no parameters, receives a
//! [`ParamTree`] at each call, returns the mean softmax cross-entropy and writes the
//! gradient into a flat buffer of the same layout. Tensor names and shapes follow
//! PyTorch (`fc1.weight` `[out, in]`, `conv1.weight` `[out, in, kh, kw]`,
//! `lstm.weight_ih_l0`, …) so checkpoints and golden tests map one to one.
//!
//! **Group labels.** Each model's last layer (the classifier) is group [`HEAD`]
//! (`"head"`); everything else is [`BODY`] (`"body"`). Logistic regression is a single
//! layer, hence all `head`.
//!
//! **Initialisation** follows PyTorch's defaults ([`init`]) from a seed, deterministically.
//!
//! **Threads**: see [`threads`]. Build models from a config with [`factory`].

#![warn(missing_docs)]

mod batch;
pub mod cnn;
pub mod cnn_candle;
pub mod config;
mod dense;
mod error;
mod graph;
pub mod init;
pub mod logistic;
pub mod lstm;
pub mod lstm_candle;
pub mod mlp;
pub mod mlp_candle;
pub mod threads;
pub mod xent;

pub use cnn::Cnn;
pub use cnn_candle::CandleCnn;
pub use config::{factory, factory_with_grain, InputShape, ModelConfig};
pub use error::{Error, Result};
pub use logistic::LogisticRegression;
pub use lstm::CharLstm;
pub use lstm_candle::CandleCharLstm;
pub use mlp::Mlp;
pub use mlp_candle::CandleMlp;

use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// Group label of every layer but the last.
pub const BODY: &str = "body";
/// Group label of the last (classifier) layer.
pub const HEAD: &str = "head";

/// Errors unless `params` is laid out by `spec`.
pub(crate) fn check_spec(model: &str, spec: &Arc<ParamSpec>, params: &ParamTree) -> Result<()> {
    if Arc::ptr_eq(spec, params.spec()) || **spec == **params.spec() {
        return Ok(());
    }
    let _ = model;
    spec.check_same(params.spec())?;
    Ok(())
}

pub(crate) fn check_positive(model: &str, field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::InvalidConfig {
            model: model.into(),
            field: field.into(),
            value: "0".into(),
            expected: "must be ≥ 1".into(),
        });
    }
    Ok(())
}
