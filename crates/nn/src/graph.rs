//! The edge between flat parameter buffers and candle tensors.
//!
//! Each call copies every parameter tensor into a candle `Var` (one memcpy per tensor),
//! runs the forward pass, computes the loss and ∂loss/∂logits on slices
//! ([`crate::xent`]), and back-propagates `Σ logits ⊙ ∂loss/∂logits` — whose gradient
//! w.r.t. every parameter is exactly ∂loss/∂parameter. Gradients are copied straight
//! from candle's storage into the caller's flat buffer in spec order.

use crate::error::{Error, Result};
use candle_core::{Device, Storage, Tensor, Var};
use fedpace_params::{ParamSpec, ParamTree};

/// Parameters as candle tensors, in spec order. `vars` is empty when built without
/// gradient tracking.
pub(crate) struct Params {
    pub tensors: Vec<Tensor>,
    pub vars: Vec<Var>,
}

impl Params {
    /// Copies the flat values into tensors; tracks gradients if `track`.
    pub fn new(spec: &ParamSpec, params: &ParamTree, dev: &Device, track: bool) -> Result<Self> {
        let data = params.as_slice();
        let mut tensors = Vec::with_capacity(spec.entries().len());
        let mut vars = Vec::new();
        for e in spec.entries() {
            let slice = &data[e.range()];
            if track {
                let v = Var::from_slice(slice, e.shape.as_slice(), dev)?;
                tensors.push(v.as_tensor().clone());
                vars.push(v);
            } else {
                tensors.push(Tensor::from_slice(slice, e.shape.as_slice(), dev)?);
            }
        }
        Ok(Self { tensors, vars })
    }
}

/// Copies a contiguous f32 CPU tensor's values into `out`.
pub(crate) fn copy_out(t: &Tensor, out: &mut [f32]) -> Result<()> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Candle(candle_core::Error::Msg(
            "expected a CPU tensor".into(),
        )));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("tensor not contiguous".into()))?;
    let src = &cpu.as_slice::<f32>()?[start..end];
    if src.len() != out.len() {
        return Err(Error::Candle(candle_core::Error::Msg(format!(
            "gradient has {} values, expected {}",
            src.len(),
            out.len()
        ))));
    }
    out.copy_from_slice(src);
    Ok(())
}

/// Back-propagates ∂loss/∂logits = `dlogits` through the graph that produced `logits`
/// and writes every parameter's gradient into `grad` (zeros where a parameter did
/// not influence the logits).
pub(crate) fn backward_into(
    spec: &ParamSpec,
    params: &Params,
    logits: &Tensor,
    dlogits: &[f32],
    grad: &mut [f32],
) -> Result<()> {
    let seed = Tensor::from_slice(dlogits, logits.shape(), logits.device())?;
    let surrogate = (logits * seed)?.sum_all()?;
    let grads = surrogate.backward()?;
    for (e, v) in spec.entries().iter().zip(&params.vars) {
        match grads.get(v.as_tensor()) {
            Some(g) => copy_out(g, &mut grad[e.range()])?,
            None => grad[e.range()].fill(0.0),
        }
    }
    Ok(())
}

/// `x · Wᵀ + b` for a PyTorch-layout linear layer (`W: [out, in]`, `b: [out]`).
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
}

/// Reusable host buffers for logits and their gradient.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch {
    logits: Vec<f32>,
    dlogits: Vec<f32>,
}

/// One gradient evaluation of a candle model: builds tracked parameters, runs
/// `forward` (which returns logits `[n, classes]`), and writes the gradient of the mean
/// cross-entropy into `grad`. Returns the mean loss.
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_and_grad(
    spec: &ParamSpec,
    device: &Device,
    params: &ParamTree,
    labels: &[u32],
    classes: usize,
    scratch: &mut Scratch,
    grad: &mut [f32],
    forward: impl FnOnce(&Params) -> Result<Tensor>,
) -> Result<f32> {
    let n = labels.len();
    if n == 0 {
        grad.fill(0.0);
        return Ok(0.0);
    }
    let p = Params::new(spec, params, device, true)?;
    let logits = forward(&p)?;
    scratch.logits.resize(n * classes, 0.0);
    scratch.dlogits.resize(n * classes, 0.0);
    copy_out(&logits, &mut scratch.logits)?;
    let (loss_sum, _) =
        crate::xent::softmax_xent(&scratch.logits, labels, classes, Some(&mut scratch.dlogits));
    backward_into(spec, &p, &logits, &scratch.dlogits, grad)?;
    Ok((loss_sum / n as f64) as f32)
}

/// Loss sum and argmax hits of a candle model, without gradient tracking.
pub(crate) fn evaluate(
    spec: &ParamSpec,
    device: &Device,
    params: &ParamTree,
    labels: &[u32],
    classes: usize,
    scratch: &mut Scratch,
    forward: impl FnOnce(&Params) -> Result<Tensor>,
) -> Result<fedpace_core::EvalStats> {
    let n = labels.len();
    if n == 0 {
        return Ok(fedpace_core::EvalStats::default());
    }
    let p = Params::new(spec, params, device, false)?;
    let logits = forward(&p)?;
    scratch.logits.resize(n * classes, 0.0);
    copy_out(&logits, &mut scratch.logits)?;
    let (loss_sum, correct) = crate::xent::softmax_xent(&scratch.logits, labels, classes, None);
    Ok(fedpace_core::EvalStats {
        loss_sum,
        correct,
        count: n as u64,
    })
}
