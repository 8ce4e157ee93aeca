//! The FedAvg-paper CNN ([`crate::Cnn`]) on candle: the **reference** implementation.
//!
//! Same parameters, layout, initialisation and group labels as [`crate::Cnn`]; the
//! forward pass is candle tensors and the backward pass candle's autograd, with
//! fedpace's convolution and pooling custom ops (crate `fedpace-kernels`). It is
//! golden-tested against PyTorch (`tests/golden.rs`) and the plain-Rust [`crate::Cnn`]
//! is tested against it (`tests/cnn_plain_vs_candle.rs`). It is ≈ 2× slower than
//! [`crate::Cnn`] (docs/benchmarks.md) and is not used by the factory.
//!
//! Fast path (crate `fedpace-kernels`): convolutions are im2col + GEMM candle custom ops
//! with their own backward (candle's CPU conv backward is ≈ 10× slower than PyTorch's);
//! ReLU and 2×2 max-pooling are one fused op (candle 0.11.1's pooling backward scales
//! gradients wrongly and makes seven passes); the fully connected layers are computed
//! as `(W·xᵀ)ᵀ` so the weight gradient comes out of the GEMM already in PyTorch's
//! `[out, in]` layout (with `x·Wᵀ`, candle returns it as a transposed view whose strided
//! copy made the epoch ≈ 1.9× slower: 983 → 522 ms, `epoch_time` example).
//!
//! Threads: each convolution splits its batch into [`CandleCnn::with_threads`] chunks
//! (default 1), run on the caller's rayon pool (by as many of its threads as are free).
//! The weight gradient is summed per chunk, so the chunk count is part of the numerics
//! and comes from configuration, never from the core count
//! (docs/arch/0002-parallelism.md).

use crate::cnn::{build_spec, images, init_params, NAME};
use crate::error::Result;
use crate::graph::{self, Params, Scratch};
use crate::{batch, check_spec};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// The FedAvg-paper CNN for `[channels, height, width]` inputs, on candle (reference).
#[derive(Debug, Clone)]
pub struct CandleCnn {
    spec: Arc<ParamSpec>,
    input: [usize; 3],
    classes: usize,
    device: Device,
    scratch: Scratch,
    threads: usize,
}

impl CandleCnn {
    /// A CNN for samples of shape `[channels, height, width]` (height and width
    /// divisible by 4) and `classes` outputs.
    ///
    /// ```
    /// use fedpace_nn::CandleCnn;
    /// use fedpace_core::Model;
    /// let m = CandleCnn::new([1, 28, 28], 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 1_663_370);
    /// ```
    pub fn new(input: [usize; 3], classes: usize) -> Result<Self> {
        Ok(Self {
            spec: Arc::new(build_spec(input, classes)?),
            input,
            classes,
            device: Device::Cpu,
            scratch: Scratch::default(),
            threads: 1,
        })
    }

    /// Splits each convolution's batch into `threads` chunks (0 means 1), run in parallel
    /// on the current rayon pool. Results depend (in the last bits) on this count — the
    /// kernels sum weight gradients per chunk — but not on the pool's size.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The logits of every sample of `batch`, row-major `[n, classes]`.
    pub fn logits(&mut self, params: &ParamTree, batch: &Batch) -> Result<Vec<f32>> {
        check_spec(NAME, &self.spec, params)?;
        let x = self.images(batch)?;
        let p = Params::new(&self.spec, params, &self.device, false)?;
        let logits = self.forward(&p, x, batch.len())?;
        let mut out = vec![0.0; batch.len() * self.classes];
        graph::copy_out(&logits, &mut out)?;
        Ok(out)
    }

    fn images<'a>(&self, batch: &'a Batch) -> Result<&'a [f32]> {
        images(self.input, self.classes, batch)
    }

    fn forward(&self, p: &Params, x: &[f32], n: usize) -> Result<Tensor> {
        let [c, h, w] = self.input;
        let t = &p.tensors;
        let x = Tensor::from_slice(x, (n, c, h, w), &self.device)?;
        let x = self.conv2d_same(&x, &t[0], &t[1])?;
        let x = fedpace_kernels::relu_max_pool2x2(&x)?;
        let x = self.conv2d_same(&x, &t[2], &t[3])?;
        let x = fedpace_kernels::relu_max_pool2x2(&x)?;
        let x = x.flatten_from(1)?;
        let x = linear_wx(&x, &t[4], &t[5])?.relu()?;
        linear_wx(&x, &t[6], &t[7])
    }

    /// Stride-1 "same" convolution with bias: `x [n, cin, h, w]`, `w [cout, cin, k, k]`
    /// (k odd), `b [cout]` → `[n, cout, h, w]`, on fedpace's GEMM kernel.
    fn conv2d_same(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (_, _, k, _) = w.dims4()?;
        let cfg = fedpace_kernels::Conv2dConfig::default()
            .with_padding(k / 2)
            .with_threads(self.threads);
        Ok(fedpace_kernels::conv2d_with(x, w, Some(b), &cfg)?)
    }
}

/// A PyTorch-layout linear layer computed as `(W·xᵀ)ᵀ + b`: same values as
/// `x·Wᵀ + b`, but backward yields `∂W = ∂Yᵀ·x` contiguous in `W`'s own `[out, in]`
/// layout instead of a transposed view that must be copied element by element.
fn linear_wx(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(w.matmul(&x.t()?)?.t()?.broadcast_add(b)?)
}

impl Model for CandleCnn {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(init_params(&self.spec, seed))
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        check_spec(NAME, &self.spec, params)?;
        batch::grad_len(NAME, grad, self.spec.total_len())?;
        let x = self.images(batch)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::loss_and_grad(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes,
            &mut scratch,
            grad,
            |p| self.forward(p, x, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let x = self.images(batch)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::evaluate(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes,
            &mut scratch,
            |p| self.forward(p, x, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }
}
