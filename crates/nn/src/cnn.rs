//! The CNN of the FedAvg paper (McMahan et al. 2017):
//! conv5×5·32 (pad 2) + ReLU + maxpool2 → conv5×5·64 (pad 2) + ReLU + maxpool2 →
//! fc (64·H/4·W/4 → 512) + ReLU → fc 512 → C. For 1×28×28 input and 10 classes that is
//! 1,663,370 parameters. Any C×H×W input with H and W divisible by 4 works.
//!
//! Parameters (PyTorch layout): `conv1.weight` `[32, C, 5, 5]`, `conv1.bias`,
//! `conv2.weight` `[64, 32, 5, 5]`, `conv2.bias`, `fc1.weight` `[512, 64·H/4·W/4]`,
//! `fc1.bias`, `fc2.weight` `[classes, 512]`, `fc2.bias`. `fc2.*` is group `head`, the
//! rest `body`.
//!
//! Fast path (crate `fedpace-kernels`): convolutions are im2col + GEMM candle custom ops
//! with their own backward (candle's CPU conv backward is ≈ 10× slower than PyTorch's);
//! ReLU and 2×2 max-pooling are one fused op (candle 0.11.1's pooling backward scales
//! gradients wrongly and makes seven passes); the fully connected layers are computed
//! as `(W·xᵀ)ᵀ` so the weight gradient comes out of the GEMM already in PyTorch's
//! `[out, in]` layout (with `x·Wᵀ`, candle returns it as a transposed view whose strided
//! copy made the epoch ≈ 1.9× slower: 983 → 522 ms, `epoch_time` example).
//!
//! Threads: each convolution splits its batch into [`Cnn::with_threads`] chunks
//! (default 1), run on the caller's rayon pool (by as many of its threads as are free).
//! The weight gradient is summed per chunk, so the chunk count is part of the numerics
//! and comes from configuration, never from the core count
//! (docs/arch/0002-parallelism.md).

use crate::batch;
use crate::error::{Error, Result};
use crate::graph::{self, Params, Scratch};
use crate::init::{self, Init};
use crate::{check_spec, BODY, HEAD};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Inputs, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

const NAME: &str = "cnn";
const C1: usize = 32;
const C2: usize = 64;
const FC: usize = 512;
const K: usize = 5;

/// The FedAvg-paper CNN for `[channels, height, width]` inputs.
#[derive(Debug, Clone)]
pub struct Cnn {
    spec: Arc<ParamSpec>,
    input: [usize; 3],
    classes: usize,
    device: Device,
    scratch: Scratch,
    threads: usize,
}

impl Cnn {
    /// A CNN for samples of shape `[channels, height, width]` (height and width
    /// divisible by 4) and `classes` outputs.
    ///
    /// ```
    /// use fedpace_nn::Cnn;
    /// use fedpace_core::Model;
    /// let m = Cnn::new([1, 28, 28], 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 1_663_370);
    /// ```
    pub fn new(input: [usize; 3], classes: usize) -> Result<Self> {
        let [c, h, w] = input;
        crate::check_positive(NAME, "classes", classes)?;
        if c == 0 || h == 0 || w == 0 || h % 4 != 0 || w % 4 != 0 {
            return Err(Error::UnsupportedInput {
                model: NAME.into(),
                input: format!("{input:?}"),
                reason: "needs [channels, height, width] with height and width positive \
                         multiples of 4 (two 2×2 max-pools)"
                    .into(),
            });
        }
        let flat = C2 * (h / 4) * (w / 4);
        let spec = ParamSpec::builder()
            .add("conv1.weight", &[C1, c, K, K], BODY)
            .add("conv1.bias", &[C1], BODY)
            .add("conv2.weight", &[C2, C1, K, K], BODY)
            .add("conv2.bias", &[C2], BODY)
            .add("fc1.weight", &[FC, flat], BODY)
            .add("fc1.bias", &[FC], BODY)
            .add("fc2.weight", &[classes, FC], HEAD)
            .add("fc2.bias", &[classes], HEAD)
            .build()?;
        Ok(Self {
            spec: Arc::new(spec),
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

    /// The batch's pixels, after checking the sample shape is `[C, H, W]` (or `[H, W]`
    /// when C = 1) and the labels.
    fn images<'a>(&self, batch: &'a Batch) -> Result<&'a [f32]> {
        if let Inputs::Dense { sample_shape, .. } = &batch.inputs {
            let s = sample_shape.as_slice();
            if s != self.input && !(self.input[0] == 1 && s == &self.input[1..]) {
                return Err(Error::bad_batch(
                    NAME,
                    "sample shape",
                    format!("{:?}", self.input),
                    format!("{s:?}"),
                ));
            }
        }
        let len = self.input.iter().product();
        batch::dense(NAME, batch, len, None, self.classes)
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

impl Model for Cnn {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        let mut p = ParamTree::zeros(self.spec.clone());
        let parts: Vec<(usize, Init)> = self
            .spec
            .entries()
            .chunks(2)
            .flat_map(|wb| {
                let fan_in: usize = wb[0].shape[1..].iter().product();
                let i = Init::fan_in(fan_in);
                [(wb[0].len(), i), (wb[1].len(), i)]
            })
            .collect();
        init::fill(seed, &parts, p.as_mut_slice());
        Ok(p)
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
