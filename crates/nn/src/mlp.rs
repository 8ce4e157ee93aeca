//! Fully connected ReLU network ("2NN" of the FedAvg paper: 784-200-200-10), any depth.
//!
//! Parameters (PyTorch `nn.Linear` layout) `fc1.weight` `[h1, d]`, `fc1.bias`, …,
//! `fcL.weight` `[C, h_last]`, `fcL.bias`; the last layer is group `head`, the others
//! `body`.
//!
//! # Implementation: plain Rust on flat buffers (docs/arch/0014-fast-layers.md)
//!
//! A stack of `dense` layers with hand-written backward, on buffers the model
//! keeps between calls. Activations are **feature-major** (`Hᵀ`, one row per feature,
//! one column per sample), the orientation in which the `gemm` crate runs a batch of 32
//! fastest (`cargo run --release -p fedpace-kernels --example gemm_shapes mlp`): the
//! forward product of a layer is `Hᵀ = W·Xᵀ`, its weight gradient `dW = dHᵀ·X` is written
//! by the GEMM straight into the caller's gradient buffer, and its input gradient is
//! `dXᵀ = Wᵀ·dHᵀ`. Every product runs on the calling thread; a client is one thread.
//!
//! The same network on candle, [`crate::CandleMlp`], is the reference it is tested
//! against (`tests/fast_vs_candle.rs`), and both run the PyTorch golden test.

use crate::batch;
use crate::dense::Dense;
use crate::error::Result;
use crate::init::{self, Init};
use crate::{check_spec, BODY, HEAD};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_kernels::pointwise::transpose;
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

pub(crate) const NAME: &str = "mlp";

/// Samples per forward pass in [`Model::evaluate`], which bounds the model's buffers
/// whatever the size of the batch evaluated.
const EVAL_BLOCK: usize = 256;

/// `[inputs, hidden…, classes]` after checking every width is positive.
pub(crate) fn sizes(inputs: usize, hidden: &[usize], classes: usize) -> Result<Vec<usize>> {
    crate::check_positive(NAME, "inputs", inputs)?;
    crate::check_positive(NAME, "classes", classes)?;
    for &h in hidden {
        crate::check_positive(NAME, "hidden", h)?;
    }
    let mut sizes = vec![inputs];
    sizes.extend_from_slice(hidden);
    sizes.push(classes);
    Ok(sizes)
}

/// The parameter layout of an MLP with layer widths `sizes`.
pub(crate) fn build_spec(sizes: &[usize]) -> Result<ParamSpec> {
    let layers = sizes.len() - 1;
    let mut b = ParamSpec::builder();
    for l in 0..layers {
        let group = if l + 1 == layers { HEAD } else { BODY };
        b = b
            .add(
                &format!("fc{}.weight", l + 1),
                &[sizes[l + 1], sizes[l]],
                group,
            )
            .add(&format!("fc{}.bias", l + 1), &[sizes[l + 1]], group);
    }
    Ok(b.build()?)
}

/// PyTorch's default initialisation of every layer, from `seed`.
pub(crate) fn init_params(spec: &Arc<ParamSpec>, sizes: &[usize], seed: u64) -> ParamTree {
    let mut p = ParamTree::zeros(spec.clone());
    let parts: Vec<(usize, Init)> = sizes
        .windows(2)
        .flat_map(|w| {
            [
                (w[0] * w[1], Init::fan_in(w[0])),
                (w[1], Init::fan_in(w[0])),
            ]
        })
        .collect();
    init::fill(seed, &parts, p.as_mut_slice());
    p
}

/// A ReLU multilayer perceptron, d → hidden… → C, softmax cross-entropy.
#[derive(Debug, Clone)]
pub struct Mlp {
    spec: Arc<ParamSpec>,
    sizes: Vec<usize>,
    work: Work,
}

/// Buffers kept between calls (grown, never shrunk).
#[derive(Debug, Clone, Default)]
struct Work {
    /// Each layer's output, feature-major `[width, n]` (after bias and ReLU; the last
    /// one is the logits' transpose).
    acts: Vec<Vec<f32>>,
    /// Logits and their gradient, `[n, classes]`.
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    /// Gradients of two consecutive layers' outputs, feature-major.
    d: [Vec<f32>; 2],
}

impl Mlp {
    /// An MLP with `inputs` features, the given hidden widths and `classes` outputs.
    ///
    /// ```
    /// use fedpace_nn::Mlp;
    /// use fedpace_core::Model;
    /// let m = Mlp::new(784, &[200, 200], 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 199_210);
    /// ```
    pub fn new(inputs: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        let sizes = sizes(inputs, hidden, classes)?;
        Ok(Self {
            spec: Arc::new(build_spec(&sizes)?),
            sizes,
            work: Work::default(),
        })
    }

    fn inputs(&self) -> usize {
        self.sizes[0]
    }

    fn classes(&self) -> usize {
        *self.sizes.last().expect("at least two sizes")
    }

    /// Layer `l` over `params`.
    fn layer<'a>(&self, params: &'a [f32], l: usize) -> Dense<'a> {
        let e = self.spec.entries();
        Dense {
            inputs: self.sizes[l],
            outputs: self.sizes[l + 1],
            weight: &params[e[2 * l].range()],
            bias: &params[e[2 * l + 1].range()],
        }
    }

    /// Forward pass of the `n` samples `x` (`[n, inputs]`): fills every layer's output
    /// and the logits `[n, classes]`.
    fn forward(&mut self, params: &[f32], x: &[f32], n: usize) {
        let layers = self.sizes.len() - 1;
        let mut work = std::mem::take(&mut self.work);
        work.acts.resize_with(layers, Vec::new);
        for l in 0..layers {
            let layer = self.layer(params, l);
            let (done, rest) = work.acts.split_at_mut(l);
            let out = &mut rest[0];
            grow(out, layer.outputs * n);
            let out = &mut out[..layer.outputs * n];
            match l {
                0 => layer.forward_from_rows(x, n, out),
                _ => layer.forward(&done[l - 1][..layer.inputs * n], n, out),
            }
            layer.activate(out, n, l + 1 < layers);
        }
        let c = self.classes();
        grow(&mut work.logits, n * c);
        transpose(
            &work.acts[layers - 1][..c * n],
            c,
            n,
            &mut work.logits[..n * c],
        );
        self.work = work;
    }

    /// Backward pass from `work.dlogits` (after [`Mlp::forward`] of the same samples).
    fn backward(&mut self, params: &[f32], x: &[f32], n: usize, grad: &mut [f32]) {
        let layers = self.sizes.len() - 1;
        let c = self.classes();
        let widest = self.sizes[1..].iter().max().copied().unwrap_or(0);
        let mut work = std::mem::take(&mut self.work);
        let e = self.spec.entries();
        let [d0, d1] = &mut work.d;
        grow(d0, widest * n);
        grow(d1, widest * n);
        let (mut dout, mut din) = (d0, d1);
        transpose(&work.dlogits[..n * c], n, c, &mut dout[..c * n]);
        for l in (0..layers).rev() {
            let layer = self.layer(params, l);
            let (gw, gb) = split_pair(grad, e[2 * l].range(), e[2 * l + 1].range());
            let d = &dout[..layer.outputs * n];
            match l {
                0 => layer.weight_grad_from_rows(d, x, n, gw, gb),
                _ => {
                    let input = &work.acts[l - 1][..layer.inputs * n];
                    layer.weight_grad(d, input, n, gw, gb);
                    let dx = &mut din[..layer.inputs * n];
                    layer.input_grad(d, n, dx);
                    // The input was the previous layer's ReLU output.
                    fedpace_kernels::pointwise::relu_backward(dx, input);
                    std::mem::swap(&mut dout, &mut din);
                }
            }
        }
        self.work = work;
    }
}

/// The two disjoint ranges `a` (before) and `b` (after) of `grad`, mutably.
fn split_pair(
    grad: &mut [f32],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> (&mut [f32], &mut [f32]) {
    let (lo, hi) = grad.split_at_mut(b.start);
    (&mut lo[a], &mut hi[..b.len()])
}

pub(crate) fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Model for Mlp {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(init_params(&self.spec, &self.sizes, seed))
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        check_spec(NAME, &self.spec, params)?;
        batch::grad_len(NAME, grad, self.spec.total_len())?;
        let x = batch::dense(NAME, batch, self.inputs(), None, self.classes())?;
        let n = batch.len();
        if n == 0 {
            grad.fill(0.0);
            return Ok(0.0);
        }
        let p = params.as_slice();
        self.forward(p, x, n);
        let c = self.classes();
        let w = &mut self.work;
        grow(&mut w.dlogits, n * c);
        let (loss_sum, _) = crate::xent::softmax_xent(
            &w.logits[..n * c],
            &batch.labels,
            c,
            Some(&mut w.dlogits[..n * c]),
        );
        self.backward(p, x, n, grad);
        Ok((loss_sum / n as f64) as f32)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let x = batch::dense(NAME, batch, self.inputs(), None, self.classes())?;
        let (d, c) = (self.inputs(), self.classes());
        let mut stats = EvalStats::default();
        for (xb, yb) in x
            .chunks(EVAL_BLOCK * d)
            .zip(batch.labels.chunks(EVAL_BLOCK))
        {
            let nb = yb.len();
            self.forward(params.as_slice(), xb, nb);
            let (loss_sum, correct) =
                crate::xent::softmax_xent(&self.work.logits[..nb * c], yb, c, None);
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.count += nb as u64;
        }
        Ok(stats)
    }
}
