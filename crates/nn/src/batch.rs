//! Checks that a batch fits the model before any arithmetic, so a bad batch is an
//! error value and never a panic.

use crate::error::{Error, Result};
use fedpace_core::{Batch, Inputs};

/// Returns the dense values of `batch` after checking that every sample has
/// `sample_len` values (and, if `exact_shape` is given, exactly that shape), and that
/// every label is below `classes`.
pub(crate) fn dense<'a>(
    model: &str,
    batch: &'a Batch,
    sample_len: usize,
    exact_shape: Option<&[usize]>,
    classes: usize,
) -> Result<&'a [f32]> {
    let Inputs::Dense { data, sample_shape } = &batch.inputs else {
        return Err(Error::bad_batch(
            model,
            "inputs",
            "dense features",
            "tokens",
        ));
    };
    if let Some(shape) = exact_shape {
        if sample_shape.as_slice() != shape {
            return Err(Error::bad_batch(
                model,
                "sample shape",
                format!("{shape:?}"),
                format!("{sample_shape:?}"),
            ));
        }
    }
    let per: usize = sample_shape.iter().product();
    if per != sample_len {
        return Err(Error::bad_batch(
            model,
            "values per sample",
            sample_len,
            format!("{per} (sample shape {sample_shape:?})"),
        ));
    }
    if data.len() != per * batch.labels.len() {
        return Err(Error::bad_batch(
            model,
            "length",
            format!(
                "{} labels × {per} = {}",
                batch.labels.len(),
                per * batch.labels.len()
            ),
            format!("{} values", data.len()),
        ));
    }
    labels(model, batch, classes)?;
    Ok(data)
}

/// Returns the token ids of `batch` after checking the sequence length, the ids
/// (< `vocab`) and the labels (< `classes`).
pub(crate) fn tokens<'a>(
    model: &str,
    batch: &'a Batch,
    seq_len: usize,
    vocab: usize,
    classes: usize,
) -> Result<&'a [u32]> {
    let Inputs::Tokens { data, seq_len: got } = &batch.inputs else {
        return Err(Error::bad_batch(
            model,
            "inputs",
            "tokens",
            "dense features",
        ));
    };
    if *got != seq_len {
        return Err(Error::bad_batch(model, "seq_len", seq_len, got));
    }
    if data.len() != seq_len * batch.labels.len() {
        return Err(Error::bad_batch(
            model,
            "length",
            format!("{} labels × {seq_len}", batch.labels.len()),
            format!("{} ids", data.len()),
        ));
    }
    if let Some(&bad) = data.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::bad_batch(
            model,
            "token id",
            format!("< {vocab}"),
            bad,
        ));
    }
    labels(model, batch, classes)?;
    Ok(data)
}

fn labels(model: &str, batch: &Batch, classes: usize) -> Result<()> {
    if let Some(&bad) = batch.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::bad_batch(
            model,
            "label",
            format!("< {classes}"),
            bad,
        ));
    }
    Ok(())
}

/// Checks the gradient buffer's length.
pub(crate) fn grad_len(model: &str, grad: &[f32], expected: usize) -> Result<()> {
    if grad.len() != expected {
        return Err(Error::Params(fedpace_params::Error::LengthMismatch {
            expected,
            got: grad.len(),
        }));
    }
    let _ = model;
    Ok(())
}
