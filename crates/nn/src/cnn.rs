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
//! # Implementation: plain Rust on flat buffers
//!
//! Forward and backward are written out by hand (no autograd, no tensors), on buffers
//! the model keeps between calls (nothing is allocated per step once the batch size has
//! been seen, and a dropped model leaves them to the next one built on its thread:
//! docs/arch/0043-cnn-buffers-written-and-kept.md), with every product a call to the
//! `gemm` crate through [`fedpace_kernels::sgemm`] in the orientation that crate runs
//! fastest:
//!
//! - Activations are **channels-last** (HWC). conv1 (one or few input channels) is
//!   `im2row` of a zero-padded HWC image (each row `k` contiguous copies of `5·C`
//!   values) and one GEMM `Y[pixels, O] = cols · Wᵗ[(ki, kj, c), O]`, whose output is
//!   HWC again; its weights are permuted into that `[(ki, kj, c), O]` layout once per
//!   step, and their gradient, which the GEMM `dWᵗ = colsᵀ·dY` produces in the same
//!   layout, is permuted back.
//! - conv2 (83 % of the network's arithmetic) runs by **Winograd F(4×4, 5×5)**
//!   ([`fedpace_kernels::winograd4`], docs/arch/0027-winograd-f4x4.md): each 4×4 output
//!   tile is 64 elementwise products of transformed 8×8 input tiles and transformed
//!   filters, summed over channels as 64 small GEMMs `M_k = V_k·U_k` — 4.8× fewer
//!   multiplications than the direct convolution on a 14×14 image (whose 4×4 tiles
//!   cover 16×16) — and backward applies the adjoints of the same transforms
//!   (`dU_k = V_kᵀ·dM_k`, `dV_k = dM_k·U_kᵀ`). The 64 products run through
//!   [`fedpace_kernels::wino_products`], a register-tile kernel for their shapes (the
//!   same bits as the `gemm` crate, ≈ 20 % faster forward and 7 % backward;
//!   docs/arch/0033-winograd-position-kernel.md). Its error against the exact convolution
//!   is ≈ 2.4e-6 relative (the direct f32 sum's ≈ 5e-7; F(2×2, 5×5), used before,
//!   ≈ 1.5e-6).
//! - Backward takes samples through the convolutions in **groups** small enough that a
//!   group's transformed data stay in the core's L2 cache: [`GROUP_BYTES`] (the group
//!   orders the weight-gradient sums). Forward, where no product sums over samples,
//!   takes them one at a time. Backward recomputes conv2's transformed input and
//!   conv1's column matrices from the stored padded images instead of keeping them.
//! - What lives only within one group's pass (Winograd's `V` and `M`, conv1's columns
//!   and output, the gradients between them) is one scratch set per **thread**, shared
//!   by the blocks and models that run on it, so on one thread the blocks of a batch
//!   reuse the same ≈ 1.3 MB instead of four sets coming back from L3 or memory; a
//!   block keeps only what its backward pass reads (docs/arch/0044-cnn-thread-scratch.md).
//! - Bias, ReLU and 2×2 max-pooling are one pass ([`fedpace_kernels::Pool2x2`]) that
//!   writes the pooled output straight into the next layer's padded input and a
//!   one-byte winner code per output; backward is one pass that writes the whole input
//!   gradient and the bias gradient. After conv2 the forward pass is fused
//!   into Winograd's output transform ([`Winograd4x5::transform_output_pool`], writing
//!   fc1's input in PyTorch's CHW flatten order): conv2's output image is never written
//!   (docs/arch/0028-cnn-fused-passes.md).
//! - fc1 runs as `(W·Aᵀ)ᵀ` (the fast orientation for a batch of 32), its weight gradient
//!   `dHᵀ·A` is written by the GEMM straight into the caller's gradient buffer, and its
//!   input gradient `dH·W1` is accumulated over chunks of [`FC1_ROWS`] rows of W1 (read
//!   in place; as one product, the `gemm` crate packs all 6.4 MB of W1 first).
//!   Under plain SGD with nothing else reading the gradient
//!   ([`Model::loss_and_grad_sgd`], called by the local loop), the input gradient and
//!   W1's step are instead one pass over W1 ([`fedpace_kernels::dense_backward_sgd`]):
//!   the weight gradient is never written, the bits are the same
//!   (docs/arch/0038-fc1-backward-sgd-step.md).
//! - Loss and ∂loss/∂logits come from [`crate::xent::softmax_xent`], as for every model.
//!
//! The same network on candle ([`crate::CandleCnn`], golden-tested against PyTorch) is
//! the reference: `tests/cnn_plain_vs_candle.rs` checks that both give the same loss,
//! logits and gradients on random parameters and batches, and the same parameters after
//! an epoch of SGD.
//!
//! # Threads
//!
//! Each batch is cut into fixed blocks of [`BLOCK`] consecutive samples. The
//! convolutions of the blocks (forward and backward) are rayon tasks on the caller's
//! pool, run by as many of its threads as are free, and each block's partial convolution
//! weight gradients are summed in block order. The fully connected layers are GEMMs over
//! the whole batch that split their output (never a sum) among the pool's threads. The
//! blocks are fixed by the batch, not by any thread count, so the results are the same
//! bits whatever the pool size and whatever [`Cnn::with_threads`] says
//! (docs/arch/0002-parallelism.md): parallelism inside a client is automatic, and
//! `with_threads(1)` keeps a client on its own thread.

use crate::batch;
use crate::error::{Error, Result};
use crate::init::{self, Init};
use crate::{check_spec, BODY, HEAD};
use fedpace_core::{Batch, EvalStats, Inputs, Model};
use fedpace_kernels::dense_backward_sgd;
use fedpace_kernels::pointwise::transpose;
use fedpace_kernels::wino_products;
use fedpace_kernels::winograd4::{Winograd4x5, POSITIONS};
use fedpace_kernels::{
    im2row, sgemm, to_padded_nhwc, MatMut, MatRef, Pool2x2, PoolLayout, SameConv,
};
use fedpace_params::{ParamSpec, ParamTree};
use rayon::prelude::*;
use std::sync::Arc;

pub(crate) const NAME: &str = "cnn";
const C1: usize = 32;
const C2: usize = 64;
const FC: usize = 512;
const K: usize = 5;
/// fc1's weight's index in the spec.
const FC1_WEIGHT: usize = 4;

/// Upper bound on conv2's transformed input and output (Winograd `V` and `M`) of one
/// group of samples (at least one sample per group): 393 KB per 28×28 sample, so two
/// samples a group. Measured W-CNN epoch, thread CPU, load ≈ 6–7, Zen 4 (`cnn_epoch`
/// example, 6 Dec 2026, two alternating runs each): 1 sample per group 290–300 ms, 2:
/// 275–295, 3: 302–316, 10: 335–350. A constant, so the grouping (which orders the
/// weight-gradient sums) never depends on the machine.
pub const GROUP_BYTES: usize = 1 << 20;

/// Rows of fc1's weight per product of its input gradient. Measured W-CNN epoch,
/// thread CPU, load ≈ 10 (`cnn_epoch` example, 4 Dec 2026): one product over all 512
/// rows (either orientation) 298–310 ms, chunks of 8 rows 296–305, 16: 289–294, 32:
/// 292–296, 64: 298–302. Part of the numerics (the order of dA's sums), fixed.
pub const FC1_ROWS: usize = 16;

/// Samples per forward pass in [`Model::evaluate`] and [`Cnn::logits`], which bounds the
/// model's buffers (≈ 160 KB per 28×28 sample) whatever the size of the batch evaluated.
const EVAL_BLOCK: usize = 64;
/// Samples per block: the unit of work of one task and of the convolution gradients'
/// partial sums (a multiple of the convolution group of 2). Part of the numerics.
pub const BLOCK: usize = 8;

/// The parameter layout of the FedAvg CNN for `input` = `[C, H, W]` and `classes`.
pub(crate) fn build_spec(input: [usize; 3], classes: usize) -> Result<ParamSpec> {
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
    Ok(ParamSpec::builder()
        .add("conv1.weight", &[C1, c, K, K], BODY)
        .add("conv1.bias", &[C1], BODY)
        .add("conv2.weight", &[C2, C1, K, K], BODY)
        .add("conv2.bias", &[C2], BODY)
        .add("fc1.weight", &[FC, flat], BODY)
        .add("fc1.bias", &[FC], BODY)
        .add("fc2.weight", &[classes, FC], HEAD)
        .add("fc2.bias", &[classes], HEAD)
        .build()?)
}

/// PyTorch's default initialisation of every layer, from `seed`.
pub(crate) fn init_params(spec: &Arc<ParamSpec>, seed: u64) -> ParamTree {
    let mut p = ParamTree::zeros(spec.clone());
    let parts: Vec<(usize, Init)> = spec
        .entries()
        .chunks(2)
        .flat_map(|wb| {
            let fan_in: usize = wb[0].shape[1..].iter().product();
            let i = Init::fan_in(fan_in);
            [(wb[0].len(), i), (wb[1].len(), i)]
        })
        .collect();
    init::fill(seed, &parts, p.as_mut_slice());
    p
}

/// The batch's pixels, after checking the sample shape is `[C, H, W]` (or `[H, W]` when
/// C = 1) and the labels.
pub(crate) fn images(input: [usize; 3], classes: usize, batch: &Batch) -> Result<&[f32]> {
    if let Inputs::Dense { sample_shape, .. } = &batch.inputs {
        let s = sample_shape.as_slice();
        if s != input && !(input[0] == 1 && s == &input[1..]) {
            return Err(Error::bad_batch(
                NAME,
                "sample shape",
                format!("{input:?}"),
                format!("{s:?}"),
            ));
        }
    }
    batch::dense(NAME, batch, input.iter().product(), None, classes)
}

/// The FedAvg-paper CNN for `[channels, height, width]` inputs.
#[derive(Debug, Clone)]
pub struct Cnn {
    spec: Arc<ParamSpec>,
    geo: Geometry,
    threads: usize,
    weights: Permuted,
    work: Work,
}

/// The buffers of one CNN (weights permuted for the step, work buffers) and the
/// `(input, classes)` shape they were grown for.
type Buffers = ([usize; 3], usize, Permuted, Work);

thread_local! {
    /// The buffers of the last CNN dropped on this thread, for the next CNN of the same
    /// shape to start from. A simulation builds a client's model for each local run and
    /// drops it after, and growing ≈ 6 MB of zeroed buffers each time (and faulting
    /// their pages in) was ≈ 0.5–1 % of the W-CNN run. Every step writes what it reads
    /// of them (conv2's padded input: its interiors; their zero borders are never
    /// written), so what a previous model left there changes no result.
    static SPARE: std::cell::RefCell<Option<Buffers>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Cnn {
    fn drop(&mut self) {
        if self.work.chunks.is_empty() {
            return;
        }
        let spare = (
            self.geo.input,
            self.geo.classes,
            std::mem::take(&mut self.weights),
            std::mem::take(&mut self.work),
        );
        // During thread teardown the slot may be gone: the buffers are then just freed.
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = Some(spare);
            }
        });
    }
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
        let spec = build_spec(input, classes)?;
        Ok(Self {
            spec: Arc::new(spec),
            geo: Geometry::new(input, classes),
            threads: 0,
            weights: Permuted::default(),
            work: Work::default(),
        })
    }

    /// The most threads of the current rayon pool one call may use: `0` (the default)
    /// for as many as are free, `1` to stay on the calling thread. Results never depend
    /// on it (see the module doc).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Takes this thread's spare buffers ([`SPARE`]) if this model has none yet and
    /// they were grown for its shape.
    fn adopt_spare(&mut self) {
        if !self.work.chunks.is_empty() {
            return;
        }
        let key = (self.geo.input, self.geo.classes);
        let spare = SPARE
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                match &*s {
                    Some((input, classes, ..)) if (*input, *classes) == key => s.take(),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if let Some((_, _, weights, work)) = spare {
            self.weights = weights;
            self.work = work;
        }
    }

    /// Threads for the whole-batch GEMMs.
    fn gemm_threads(&self) -> usize {
        match self.threads {
            0 => rayon::current_num_threads(),
            t => t,
        }
    }

    /// The logits of every sample of `batch`, row-major `[n, classes]` (the forward
    /// pass of [`Model::evaluate`], in the same blocks).
    pub fn logits(&mut self, params: &ParamTree, batch: &Batch) -> Result<Vec<f32>> {
        check_spec(NAME, &self.spec, params)?;
        let x = images(self.geo.input, self.geo.classes, batch)?;
        self.adopt_spare();
        let g = &self.geo;
        self.weights.load(g, &self.spec, params.as_slice());
        let (v, fc1w) = View::whole(&self.spec, params.as_slice(), &self.weights);
        let mut out = Vec::with_capacity(batch.len() * g.classes);
        let (tasks, gt) = (self.threads, self.gemm_threads());
        for xb in x.chunks(EVAL_BLOCK * g.in_len()) {
            let nb = xb.len() / g.in_len();
            self.work.ensure(g, nb);
            forward(g, &v, fc1w, xb, tasks, gt, &mut self.work);
            out.extend_from_slice(&self.work.logits[..nb * g.classes]);
        }
        Ok(out)
    }
}

impl Model for Cnn {
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
        let x = images(self.geo.input, self.geo.classes, batch)?;
        let n = batch.len();
        if n == 0 {
            grad.fill(0.0);
            return Ok(0.0);
        }
        self.adopt_spare();
        let g = &self.geo;
        self.weights.load(g, &self.spec, params.as_slice());
        let (v, fc1w) = View::whole(&self.spec, params.as_slice(), &self.weights);
        let (tasks, gt) = (self.threads, self.gemm_threads());
        let w = &mut self.work;
        let loss = forward_loss(g, &v, fc1w, x, &batch.labels, tasks, gt, w);
        backward(g, &v, &self.spec, tasks, gt, w, n, grad, Fc1::Grad(fc1w));
        Ok(loss)
    }

    /// fc1's weight (tensor 4): its plain-SGD step is taken inside the backward pass,
    /// tile by tile from the gradient values the GEMM would have stored
    /// ([`fedpace_kernels::dense_backward_sgd`]), so the 6.4 MB gradient is never written
    /// and read back (docs/arch/0038-fc1-backward-sgd-step.md).
    fn fused_sgd_tensors(&self) -> Vec<usize> {
        vec![FC1_WEIGHT]
    }

    fn loss_and_grad_sgd(
        &mut self,
        params: &mut ParamTree,
        batch: &Batch,
        grad: &mut [f32],
        group_rates: &[f32],
    ) -> fedpace_core::Result<f32> {
        check_spec(NAME, &self.spec, params)?;
        batch::grad_len(NAME, grad, self.spec.total_len())?;
        self.adopt_spare();
        let entry = &self.spec.entries()[FC1_WEIGHT];
        if group_rates.len() != self.spec.num_groups() {
            return Err(Error::InvalidConfig {
                model: NAME.into(),
                field: "group rates".into(),
                value: format!("{} values", group_rates.len()),
                expected: format!("one per parameter group ({})", self.spec.num_groups()),
            }
            .into());
        }
        let rate = group_rates[entry.group];
        let x = images(self.geo.input, self.geo.classes, batch)?;
        let n = batch.len();
        if n == 0 {
            // A zero gradient: the step leaves the parameters as they are.
            grad.fill(0.0);
            return Ok(0.0);
        }
        let g = &self.geo;
        self.weights.load(g, &self.spec, params.as_slice());
        let r = entry.range();
        let (lo, rest) = params.as_mut_slice().split_at_mut(r.start);
        let (fc1w, hi) = rest.split_at_mut(r.len());
        let v = View::new(&self.spec, lo, hi, &self.weights);
        let (tasks, gt) = (self.threads, self.gemm_threads());
        let w = &mut self.work;
        let loss = forward_loss(g, &v, fc1w, x, &batch.labels, tasks, gt, w);
        backward(
            g,
            &v,
            &self.spec,
            tasks,
            gt,
            w,
            n,
            grad,
            Fc1::Sgd(fc1w, rate),
        );
        Ok(loss)
    }

    /// Every gradient tensor is written, never accumulated (the GEMMs with no prior
    /// value, the bias sums and the convolutions' block sums into their buffers first):
    /// a local step skips zeroing the 1.7 M values (`cnn_overwrites_its_gradient`).
    fn overwrites_grad(&self) -> bool {
        true
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let x = images(self.geo.input, self.geo.classes, batch)?;
        let n = batch.len();
        if n == 0 {
            return Ok(EvalStats::default());
        }
        self.adopt_spare();
        let g = &self.geo;
        self.weights.load(g, &self.spec, params.as_slice());
        let (v, fc1w) = View::whole(&self.spec, params.as_slice(), &self.weights);
        let mut stats = EvalStats::default();
        let in_len = g.in_len();
        let (tasks, gt) = (self.threads, self.gemm_threads());
        for (xb, yb) in x
            .chunks(EVAL_BLOCK * in_len)
            .zip(batch.labels.chunks(EVAL_BLOCK))
        {
            let nb = yb.len();
            self.work.ensure(g, nb);
            forward(g, &v, fc1w, xb, tasks, gt, &mut self.work);
            let (loss_sum, correct) =
                crate::xent::softmax_xent(&self.work.logits[..nb * g.classes], yb, g.classes, None);
            stats.loss_sum += loss_sum;
            stats.correct += correct;
            stats.count += nb as u64;
        }
        Ok(stats)
    }
}

/// Shapes of every layer, fixed by the input shape and the class count.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    input: [usize; 3],
    classes: usize,
    conv1: SameConv,
    pool1: Pool2x2,
    conv2: SameConv,
    pool2: Pool2x2,
    /// fc1's input width: `64·H/4·W/4`.
    flat: usize,
    /// conv2 by Winograd F(4×4, 5×5).
    wino: Winograd4x5,
    /// Samples per convolution group.
    group: usize,
}

impl Geometry {
    fn new(input: [usize; 3], classes: usize) -> Self {
        let [c, h, w] = input;
        let conv1 = SameConv::new(h, w, c, K);
        let conv2 = SameConv::new(h / 2, w / 2, C1, K);
        let pool1 = Pool2x2 {
            h,
            w,
            channels: C1,
            layout: PoolLayout::PaddedHwc { pad: conv2.pad() },
        };
        let pool2 = Pool2x2 {
            h: h / 2,
            w: w / 2,
            channels: C2,
            layout: PoolLayout::Chw,
        };
        let wino = Winograd4x5::new(h / 2, w / 2, C1, C2);
        // conv2's transformed input and output of one sample.
        let wino_bytes = POSITIONS * wino.tiles() * (C1 + C2) * size_of::<f32>();
        Self {
            input,
            classes,
            conv1,
            pool1,
            conv2,
            pool2,
            flat: C2 * (h / 4) * (w / 4),
            wino,
            group: (GROUP_BYTES / wino_bytes).max(1),
        }
    }

    fn in_len(&self) -> usize {
        self.input.iter().product()
    }
}

/// The convolution weights in the GEMM's `[(ki, kj, c), O]` layout, rebuilt every step.
#[derive(Debug, Clone, Default)]
struct Permuted {
    w1t: Vec<f32>,
    /// conv2's filters transformed for Winograd, `[64][C1][C2]`, and each of the 64
    /// matrices transposed, `[64][C2][C1]` (the orientation the `gemm` crate runs
    /// `dV = dM·Uᵀ` fastest in: 141 against 96 GFLOP/s, `gemm_shapes wino`).
    u2: Vec<f32>,
    u2t: Vec<f32>,
}

impl Permuted {
    fn load(&mut self, g: &Geometry, spec: &ParamSpec, p: &[f32]) {
        let e = spec.entries();
        self.w1t.resize(g.conv1.taps() * C1, 0.0);
        self.u2.resize(g.wino.filter_len(), 0.0);
        to_taps_major(&p[e[0].range()], C1, g.conv1.channels, &mut self.w1t);
        g.wino.transform_filters(&p[e[2].range()], &mut self.u2);
        self.u2t.resize(g.wino.filter_len(), 0.0);
        for (u, ut) in self
            .u2
            .chunks_exact(C1 * C2)
            .zip(self.u2t.chunks_exact_mut(C1 * C2))
        {
            transpose(u, C1, C2, ut);
        }
    }
}

/// OIHW `[o, c, k, k]` → `[(ki, kj, c), o]` (writes in order, reads strided).
fn to_taps_major(w: &[f32], o_n: usize, c_n: usize, out: &mut [f32]) {
    let filter = c_n * K * K;
    for (tc, row) in out.chunks_exact_mut(o_n).enumerate() {
        let (t, c) = (tc / c_n, tc % c_n);
        let src = &w[c * K * K + t..];
        for (o, v) in row.iter_mut().enumerate() {
            *v = src[o * filter];
        }
    }
}

/// `[(ki, kj, c), o]` → OIHW `[o, c, k, k]` (writes in order, reads strided).
fn from_taps_major(wt: &[f32], o_n: usize, c_n: usize, out: &mut [f32]) {
    for (o, filter) in out.chunks_exact_mut(c_n * K * K).enumerate() {
        for (c, plane) in filter.chunks_exact_mut(K * K).enumerate() {
            for (t, v) in plane.iter_mut().enumerate() {
                *v = wt[(t * c_n + c) * o_n + o];
            }
        }
    }
}

/// The parameters one step reads.
struct View<'a> {
    w1t: &'a [f32],
    b1: &'a [f32],
    u2: &'a [f32],
    u2t: &'a [f32],
    b2: &'a [f32],
    fc1b: &'a [f32],
    fc2w: &'a [f32],
    fc2b: &'a [f32],
}

impl<'a> View<'a> {
    /// The view of every tensor but fc1's weight from the parameters before it (`lo`)
    /// and after it (`hi`).
    fn new(spec: &ParamSpec, lo: &'a [f32], hi: &'a [f32], perm: &'a Permuted) -> Self {
        let e = spec.entries();
        let at = e[FC1_WEIGHT].range().end;
        let hi_range = |i: usize| {
            let r = e[i].range();
            &hi[r.start - at..r.end - at]
        };
        Self {
            w1t: &perm.w1t,
            b1: &lo[e[1].range()],
            u2: &perm.u2,
            u2t: &perm.u2t,
            b2: &lo[e[3].range()],
            fc1b: hi_range(5),
            fc2w: hi_range(6),
            fc2b: hi_range(7),
        }
    }

    /// The view and fc1's weight, from all the parameters.
    fn whole(spec: &ParamSpec, p: &'a [f32], perm: &'a Permuted) -> (Self, &'a [f32]) {
        let r = spec.entries()[FC1_WEIGHT].range();
        (Self::new(spec, &p[..r.start], &p[r.end..], perm), &p[r])
    }
}

/// fc1's weight in backward: read (its gradient written), or stepped by plain SGD at
/// this rate.
enum Fc1<'a> {
    Grad(&'a [f32]),
    Sgd(&'a mut [f32], f32),
}

/// Buffers of one chunk of samples, kept between calls (grown, never shrunk): what a
/// block's forward pass stores for its backward pass, and its partial gradients. What
/// lives only within one group's pass is in the thread's [`Scratch`].
#[derive(Debug, Clone, Default)]
struct ChunkWork {
    /// The chunk's input samples as padded HWC images (`n ×` conv1's padded length),
    /// kept for backward, which rebuilds conv1's column matrices from them.
    xp1: Vec<f32>,
    /// Pooled conv1 output of the chunk, as padded HWC images (conv2's input).
    p1: Vec<f32>,
    /// pool1's winner codes of the chunk.
    arg1: Vec<u8>,
    /// pool2's winner codes of the chunk.
    arg2: Vec<u8>,
    /// Partial gradients of the chunk (conv1's weights in `[(ki, kj, c), o]` layout,
    /// conv2's transformed, `[64][C1][C2]`).
    dw1t: Vec<f32>,
    db1: Vec<f32>,
    du2: Vec<f32>,
    db2: Vec<f32>,
}

impl ChunkWork {
    fn ensure(&mut self, g: &Geometry, n: usize) {
        let (c1, c2) = (g.conv1, g.conv2);
        grow(&mut self.xp1, n * c1.padded_len());
        grow(&mut self.p1, n * c2.padded_len());
        grow(&mut self.arg1, n * g.pool1.out_len());
        grow(&mut self.arg2, n * g.pool2.out_len());
        grow(&mut self.dw1t, c1.taps() * C1);
        grow(&mut self.db1, C1);
        grow(&mut self.du2, g.wino.filter_len());
        grow(&mut self.db2, C2);
    }
}

/// The buffers one group of samples passes through and leaves (every value read is
/// written first in the same pass), one set per thread ([`SCRATCH`]) instead of one per
/// block: on one thread the blocks of a batch then reuse the same ≈ 1.1 MB, which stays
/// in the core's L2 cache, instead of four sets that each come back from L3 or memory.
#[derive(Debug, Default)]
struct Scratch {
    /// conv1's column matrices of one group, `gs × pixels × taps` (rebuilt in backward
    /// from the stored padded inputs: 78 KB a 28×28 sample, against 4 KB stored).
    cols1: Vec<f32>,
    /// conv1's output for one group; in backward, its gradient.
    y1: Vec<f32>,
    /// conv2's transformed input `V` of one group (`[tiles][64][C1]`); in backward,
    /// its gradient.
    v: Vec<f32>,
    /// conv2's transformed output `M` of one group (`[tiles][64][C2]`); in backward,
    /// its gradient.
    m: Vec<f32>,
    /// conv2's output gradient for one group (backward only: forward pools straight
    /// from Winograd's output transform).
    y2: Vec<f32>,
    /// Scratch of conv2's backward position products.
    ws: Vec<f32>,
    /// Gradient of one padded pooled conv1 image.
    dp1: Vec<f32>,
}

impl Scratch {
    fn ensure(&mut self, g: &Geometry) {
        let gs = g.group;
        let (c1, c2) = (g.conv1, g.conv2);
        grow(&mut self.cols1, gs * c1.pixels() * c1.taps());
        grow(&mut self.y1, gs * c1.pixels() * C1);
        grow(&mut self.v, POSITIONS * gs * g.wino.tiles() * C1);
        grow(&mut self.m, POSITIONS * gs * g.wino.tiles() * C2);
        grow(&mut self.y2, gs * c2.pixels() * C2);
        grow(
            &mut self.ws,
            wino_products::scratch_len(gs * g.wino.tiles(), C1, C2),
        );
        grow(&mut self.dp1, c2.padded_len());
    }
}

thread_local! {
    /// This thread's [`Scratch`], grown to the largest geometry it has run.
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            cols1: Vec::new(),
            y1: Vec::new(),
            v: Vec::new(),
            m: Vec::new(),
            y2: Vec::new(),
            ws: Vec::new(),
            dp1: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's [`Scratch`] grown for `g` (a fresh one if the thread's is
/// in use or gone, which no caller here does: the passes that take it call no rayon).
fn with_scratch<R>(g: &Geometry, f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut f = Some(f);
    let done = SCRATCH
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            s.ensure(g);
            f.take().map(|f| f(&mut s))
        })
        .ok()
        .flatten();
    match (done, f) {
        (Some(r), _) => r,
        (None, Some(f)) => {
            let mut s = Scratch::default();
            s.ensure(g);
            f(&mut s)
        }
        (None, None) => unreachable!("`f` ran and returned"),
    }
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Buffers of one batch.
#[derive(Debug, Clone, Default)]
struct Work {
    chunks: Vec<ChunkWork>,
    /// fc1's input `[n, flat]` (pool2's output, CHW per sample).
    a: Vec<f32>,
    /// fc1's output before bias and ReLU, feature-major `[512, n]`.
    h1t: Vec<f32>,
    /// fc1's output after ReLU, `[n, 512]`.
    h1: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dh1: Vec<f32>,
    da: Vec<f32>,
    /// fc1's input gradient feature-major, `[flat, n]` (when its gradient is written).
    da_t: Vec<f32>,
}

impl Work {
    fn ensure(&mut self, g: &Geometry, n: usize) {
        let blocks = n.div_ceil(BLOCK);
        if self.chunks.len() < blocks {
            self.chunks.resize_with(blocks, ChunkWork::default);
        }
        for c in &mut self.chunks[..blocks] {
            c.ensure(g, BLOCK.min(n));
        }
        grow(&mut self.a, n * g.flat);
        grow(&mut self.h1t, FC * n);
        grow(&mut self.h1, n * FC);
        grow(&mut self.logits, n * g.classes);
        grow(&mut self.dlogits, n * g.classes);
        grow(&mut self.dh1, n * FC);
        grow(&mut self.da, n * g.flat);
        grow(&mut self.da_t, n * g.flat);
    }
}

/// Runs `f` on every task: on the calling thread when there is one task or `threads` is
/// 1, else as rayon tasks split into at most `threads` pieces (0: no limit).
fn run_tasks<T: Send>(tasks: Vec<T>, threads: usize, f: impl Fn(T) + Sync + Send) {
    if tasks.len() == 1 || threads == 1 {
        tasks.into_iter().for_each(f);
    } else {
        let per = match threads {
            0 => 1,
            t => tasks.len().div_ceil(t),
        };
        tasks.into_par_iter().with_min_len(per).for_each(f);
    }
}

/// Forward pass of `x` (`n` samples): the convolutions block by block (at most `tasks`
/// threads), then the fully connected layers over the whole batch (`gemm_threads`);
/// fills `w.a`, `w.h1` and `w.logits` (and every block's stored activations).
fn forward(
    g: &Geometry,
    v: &View,
    fc1w: &[f32],
    x: &[f32],
    tasks: usize,
    gemm_threads: usize,
    w: &mut Work,
) {
    let n = x.len() / g.in_len();
    let blocks: Vec<_> = x
        .chunks(BLOCK * g.in_len())
        .zip(w.chunks.iter_mut())
        .zip(w.a[..n * g.flat].chunks_mut(BLOCK * g.flat))
        .collect();
    run_tasks(blocks, tasks, |((x, cw), a)| forward_convs(g, v, x, cw, a));
    let (flat, classes) = (g.flat, g.classes);
    let a = &w.a[..n * flat];
    // fc1 as (W·Aᵀ)ᵀ: [512, n] = W[512, flat] · Aᵀ.
    let h1t = &mut w.h1t[..FC * n];
    sgemm(
        MatMut::row_major(h1t, FC, n, n),
        MatRef::row_major(fc1w, FC, flat, flat),
        MatRef::transposed(a, flat, n, flat),
        false,
        gemm_threads,
    );
    let h1 = &mut w.h1[..n * FC];
    for (s, row) in h1.chunks_exact_mut(FC).enumerate() {
        for (j, (h, &b)) in row.iter_mut().zip(v.fc1b).enumerate() {
            *h = (h1t[j * n + s] + b).max(0.0);
        }
    }
    // fc2: z[n, classes] = H · W2ᵀ + b.
    let z = &mut w.logits[..n * classes];
    sgemm(
        MatMut::row_major(z, n, classes, classes),
        MatRef::row_major(h1, n, FC, FC),
        MatRef::transposed(v.fc2w, FC, classes, FC),
        false,
        1,
    );
    for row in z.chunks_exact_mut(classes) {
        for (zv, &b) in row.iter_mut().zip(v.fc2b) {
            *zv += b;
        }
    }
}

/// The convolutions of one block's samples, on the calling thread: fills the block's
/// rows of fc1's input `a` and its stored activations.
fn forward_convs(g: &Geometry, v: &View, x: &[f32], cw: &mut ChunkWork, a: &mut [f32]) {
    with_scratch(g, |sc| forward_convs_in(g, v, x, cw, sc, a))
}

/// [`forward_convs`] with the thread's scratch `sc`.
fn forward_convs_in(
    g: &Geometry,
    v: &View,
    x: &[f32],
    cw: &mut ChunkWork,
    sc: &mut Scratch,
    a: &mut [f32],
) {
    let (c1, c2, in_len, flat) = (g.conv1, g.conv2, g.in_len(), g.flat);
    let (pix1, taps1, plen1) = (c1.pixels(), c1.taps(), c1.padded_len());
    let (plen2, out1, out2) = (c2.padded_len(), g.pool1.out_len(), g.pool2.out_len());
    let n = x.len() / in_len;
    // One sample at a time: no forward product sums over samples (each output row is
    // its own sum), so the grouping that orders backward's weight-gradient sums does not
    // apply here, and one sample's V and M (393 KB for 28×28) stay in the L2 cache with
    // the transformed filters where a group's do not.
    let group = 1;
    for s0 in (0..n).step_by(group) {
        let gs = group.min(n - s0);
        let cols1 = &mut sc.cols1[..gs * pix1 * taps1];
        for (i, cols) in cols1.chunks_exact_mut(pix1 * taps1).enumerate() {
            let xp = &mut cw.xp1[(s0 + i) * plen1..][..plen1];
            to_padded_nhwc(&c1, &x[(s0 + i) * in_len..][..in_len], xp);
            im2row(&c1, xp, cols);
        }
        let rows1 = gs * pix1;
        sgemm(
            MatMut::row_major(&mut sc.y1[..rows1 * C1], rows1, C1, C1),
            MatRef::row_major(cols1, rows1, taps1, taps1),
            MatRef::row_major(v.w1t, taps1, C1, C1),
            false,
            1,
        );
        let tiles = g.wino.tiles();
        let rows2 = gs * tiles;
        for i in 0..gs {
            let s = s0 + i;
            // Its border (conv2's padding) is zero: `p1` grows with zeros and only the
            // interiors are ever written (pool1 here), so it is not zeroed again.
            let p1 = &mut cw.p1[s * plen2..][..plen2];
            debug_assert!(border_is_zero(&c2, p1), "conv2's padded input has a border");
            g.pool1.forward(
                &sc.y1[i * pix1 * C1..][..pix1 * C1],
                v.b1,
                p1,
                &mut cw.arg1[s * out1..][..out1],
            );
            g.wino.transform_input(p1, &mut sc.v, i * tiles);
        }
        // conv2: M_k = V_k · U_k for the 64 positions of a Winograd tile (V and M
        // tile-major: row stride 64·C).
        wino_products::forward(rows2, C1, C2, &sc.v, v.u2, &mut sc.m);
        // Output transform, bias, ReLU and pool2 in one pass, into fc1's input.
        for i in 0..gs {
            let s = s0 + i;
            g.wino.transform_output_pool(
                &sc.m,
                i * tiles,
                v.b2,
                &mut a[s * flat..][..flat],
                &mut cw.arg2[s * out2..][..out2],
            );
        }
    }
}

/// Whether the border (the padding) of the padded HWC image `xp` is all zeros.
fn border_is_zero(g: &SameConv, xp: &[f32]) -> bool {
    let mut copy = xp[..g.padded_len()].to_vec();
    fedpace_kernels::zero_border(g, &mut copy);
    copy.iter().zip(xp).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// Forward pass of the samples `x` and the loss's gradient at the logits (into `w`);
/// returns the mean loss over `labels` (one per sample).
#[allow(clippy::too_many_arguments)]
fn forward_loss(
    g: &Geometry,
    v: &View,
    fc1w: &[f32],
    x: &[f32],
    labels: &[u32],
    tasks: usize,
    gemm_threads: usize,
    w: &mut Work,
) -> f32 {
    let n = labels.len();
    w.ensure(g, n);
    forward(g, v, fc1w, x, tasks, gemm_threads, w);
    let (loss_sum, _) = crate::xent::softmax_xent(
        &w.logits[..n * g.classes],
        labels,
        g.classes,
        Some(&mut w.dlogits[..n * g.classes]),
    );
    (loss_sum / n as f64) as f32
}

/// Backward pass from `w.dlogits` (after [`forward`] of the same `n` samples): writes the
/// gradient of every parameter into `grad` (spec order), except fc1's weight's when `fc1`
/// steps it instead (those values of `grad` are then left as they were).
#[allow(clippy::too_many_arguments)]
fn backward(
    g: &Geometry,
    v: &View,
    spec: &ParamSpec,
    tasks: usize,
    gemm_threads: usize,
    w: &mut Work,
    n: usize,
    grad: &mut [f32],
    fc1: Fc1,
) {
    let (classes, flat) = (g.classes, g.flat);
    let [gw1, gb1, gw2, gb2, gfc1w, gfc1b, gfc2w, gfc2b] = split_grad(spec, grad);
    let dz = &w.dlogits[..n * classes];
    let h1 = &w.h1[..n * FC];
    let a = &w.a[..n * flat];
    // fc2: dW = dZᵀ·H, db = Σ dZ, dH = (dZ·W) ⊙ [H > 0].
    sgemm(
        MatMut::row_major(gfc2w, classes, FC, FC),
        MatRef::transposed(dz, classes, n, classes),
        MatRef::row_major(h1, n, FC, FC),
        false,
        1,
    );
    column_sums(dz, classes, gfc2b);
    let dh1 = &mut w.dh1[..n * FC];
    sgemm(
        MatMut::row_major(dh1, n, FC, FC),
        MatRef::row_major(dz, n, classes, classes),
        MatRef::row_major(v.fc2w, classes, FC, FC),
        false,
        1,
    );
    for (d, &h) in dh1.iter_mut().zip(h1) {
        if h <= 0.0 {
            *d = 0.0;
        }
    }
    let dh1 = &w.dh1[..n * FC];
    column_sums(dh1, FC, gfc1b);
    match fc1 {
        Fc1::Grad(w1) => {
            // fc1: dW = dHᵀ·A straight into the gradient buffer.
            sgemm(
                MatMut::row_major(gfc1w, FC, flat, flat),
                MatRef::transposed(dh1, FC, n, FC),
                MatRef::row_major(a, n, flat, flat),
                false,
                gemm_threads,
            );
            // dA = dH · W1 (fc1's input gradient), [n, flat], over the whole batch: W1
            // is read in chunks of FC1_ROWS rows (contiguous, 200 KB), each product
            // accumulated into dA stored column-major (so the `gemm` crate reads the
            // chunk in place instead of packing all of W1), then transposed.
            let da_t = &mut w.da_t[..flat * n];
            for (c, j0) in (0..FC).step_by(FC1_ROWS).enumerate() {
                let rows = FC1_ROWS.min(FC - j0);
                sgemm(
                    MatMut::transposed(&mut *da_t, n, flat, n),
                    MatRef::row_major(&dh1[j0..], n, rows, FC),
                    MatRef::row_major(&w1[j0 * flat..], rows, flat, flat),
                    c > 0,
                    gemm_threads,
                );
            }
            transpose(da_t, flat, n, &mut w.da[..n * flat]);
        }
        // The same dA (same chunks, same bits) and the step W1 ← W1 + dW·(−η) in one
        // pass over W1, dW never stored (docs/arch/0038-fc1-backward-sgd-step.md).
        Fc1::Sgd(w1, rate) => dense_backward_sgd(
            n,
            FC,
            flat,
            dh1,
            a,
            &mut w.da[..n * flat],
            w1,
            rate,
            FC1_ROWS,
            gemm_threads,
        ),
    }
    // Per block: the convolutions.
    let blocks: Vec<_> = w
        .chunks
        .iter_mut()
        .zip(w.da[..n * flat].chunks(BLOCK * flat))
        .collect();
    let used = blocks.len();
    run_tasks(blocks, tasks, |(cw, da)| backward_convs(g, v, cw, da));
    // Partial convolution gradients, summed in block order.
    let (first, rest) = w.chunks[..used].split_first_mut().expect("n ≥ 1");
    for cw in rest {
        add(&mut first.dw1t, &cw.dw1t);
        add(&mut first.db1, &cw.db1);
        add(&mut first.du2, &cw.du2);
        add(&mut first.db2, &cw.db2);
    }
    from_taps_major(&first.dw1t[..gw1.len()], C1, g.conv1.channels, gw1);
    gb1.copy_from_slice(&first.db1[..C1]);
    g.wino.filter_grad(&first.du2[..g.wino.filter_len()], gw2);
    gb2.copy_from_slice(&first.db2[..C2]);
}

/// Backward pass of one block's convolutions from the gradient of its rows of fc1's
/// input `da` (`[n, flat]`): writes its partial convolution gradients into `cw.dw1t`,
/// `db1`, `du2`, `db2`.
fn backward_convs(g: &Geometry, v: &View, cw: &mut ChunkWork, da: &[f32]) {
    with_scratch(g, |sc| backward_convs_in(g, v, cw, sc, da))
}

/// [`backward_convs`] with the thread's scratch `sc`.
fn backward_convs_in(g: &Geometry, v: &View, cw: &mut ChunkWork, sc: &mut Scratch, da: &[f32]) {
    let (c1, c2, flat) = (g.conv1, g.conv2, g.flat);
    let (pix1, taps1, pix2) = (c1.pixels(), c1.taps(), c2.pixels());
    let plen1 = c1.padded_len();
    let (plen2, out1, out2) = (c2.padded_len(), g.pool1.out_len(), g.pool2.out_len());
    let tiles = g.wino.tiles();
    let n = da.len() / flat;
    let dw1t = &mut cw.dw1t[..taps1 * C1];
    let du2 = &mut cw.du2[..g.wino.filter_len()];
    let (db1, db2) = (&mut cw.db1[..C1], &mut cw.db2[..C2]);
    dw1t.fill(0.0);
    db1.fill(0.0);
    db2.fill(0.0);
    for s0 in (0..n).step_by(g.group) {
        let gs = g.group.min(n - s0);
        let (rows1, rows2) = (gs * pix1, gs * tiles);
        for i in 0..gs {
            let s = s0 + i;
            let dy2 = &mut sc.y2[i * pix2 * C2..][..pix2 * C2];
            g.pool2.backward(
                &da[s * flat..][..flat],
                &cw.arg2[s * out2..][..out2],
                dy2,
                db2,
            );
            g.wino.output_grad(dy2, i * tiles, &mut sc.m);
            // conv2's transformed input again, from the stored pooled conv1 output.
            g.wino
                .transform_input(&cw.p1[s * plen2..][..plen2], &mut sc.v, i * tiles);
        }
        // For each of the 64 positions: dU_k += V_kᵀ · dM_k, then dV_k = dM_k · U_kᵀ
        // into V_k (consumed by then), while V_k and dM_k are still in the L1 cache.
        // The block's first group writes `du2` (not zeroed, then added to: the same sums).
        let products = match s0 {
            0 => wino_products::backward_first,
            _ => wino_products::backward,
        };
        products(rows2, C1, C2, &mut sc.v, &sc.m, v.u2t, du2, &mut sc.ws);
        for i in 0..gs {
            let dp1 = &mut sc.dp1[..plen2];
            dp1.fill(0.0);
            g.wino.input_grad_add(&sc.v, i * tiles, dp1);
            g.pool1.backward(
                dp1,
                &cw.arg1[(s0 + i) * out1..][..out1],
                &mut sc.y1[i * pix1 * C1..][..pix1 * C1],
                db1,
            );
        }
        // dW1ᵗ += cols1ᵀ · dY1, the group's columns rebuilt from its padded inputs.
        let cols1 = &mut sc.cols1[..rows1 * taps1];
        for (i, cols) in cols1.chunks_exact_mut(pix1 * taps1).enumerate() {
            im2row(&c1, &cw.xp1[(s0 + i) * plen1..][..plen1], cols);
        }
        sgemm(
            MatMut::row_major(dw1t, taps1, C1, C1),
            MatRef::transposed(&sc.cols1[..rows1 * taps1], taps1, rows1, taps1),
            MatRef::row_major(&sc.y1[..rows1 * C1], rows1, C1, C1),
            true,
            1,
        );
    }
}

/// `out[j] = Σ_i m[i, j]` over the rows of a row-major `[_, cols]` matrix, in row order.
fn column_sums(m: &[f32], cols: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks_exact(cols) {
        add(out, row);
    }
}

fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// The gradient buffer cut into the eight tensors of the spec, in order.
fn split_grad<'a>(spec: &ParamSpec, grad: &'a mut [f32]) -> [&'a mut [f32]; 8] {
    let mut rest = grad;
    let mut parts: Vec<&'a mut [f32]> = Vec::with_capacity(8);
    for e in spec.entries() {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(e.len());
        parts.push(head);
        rest = tail;
    }
    parts
        .try_into()
        .unwrap_or_else(|_| unreachable!("the CNN spec has eight tensors"))
}
