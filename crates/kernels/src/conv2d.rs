//! 2-D convolution (NCHW, f32) as im2col + GEMM, wrapped as a candle custom op with its
//! own backward.
//!
//! Forward, per group of samples: `cols = im2col(x)` (`C·kh·kw × G·OH·OW`), then
//! `y = W·cols + b`. Backward: `dW += dY·colsᵀ`, `db += Σ dY`, `dcols = Wᵀ·dY`,
//! `dx = col2im(dcols)`. The group size `G` is the largest that keeps the column buffer
//! under [`Conv2dConfig::im2col_budget_bytes`], so one wide GEMM replaces many thin ones.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Storage,
    Tensor,
};
use rayon::prelude::*;

use crate::im2col::{col2im_add, im2col, ConvGeometry};
use crate::sgemm::{sgemm, MatMut, MatRef};

/// Default cap on the im2col buffer of one thread: 8 MiB.
pub const DEFAULT_IM2COL_BUDGET_BYTES: usize = 8 << 20;

/// Options of [`conv2d_with`]: padding, stride, threads and the im2col memory cap.
///
/// ```
/// use fedpace_kernels::Conv2dConfig;
/// let config = Conv2dConfig::default().with_padding(2).with_stride(1).with_threads(1);
/// assert_eq!(config.padding, 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Zeros added on each of the four sides of every input plane.
    pub padding: usize,
    /// Step between output pixels, the same along both axes (≥ 1).
    pub stride: usize,
    /// Threads for this op; `None` reads the process-wide [`crate::num_threads`] when the
    /// op is built (forward and backward then use the same count).
    pub threads: Option<usize>,
    /// Upper bound on one thread's im2col buffer; at least one sample's columns are always
    /// materialised, whatever this says.
    pub im2col_budget_bytes: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            stride: 1,
            threads: None,
            im2col_budget_bytes: DEFAULT_IM2COL_BUDGET_BYTES,
        }
    }
}

impl Conv2dConfig {
    /// Sets the zero padding on each side.
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the stride (both axes).
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the thread count of this op, overriding [`crate::set_num_threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets the per-thread cap on the im2col buffer, in bytes.
    pub fn with_im2col_budget(mut self, bytes: usize) -> Self {
        self.im2col_budget_bytes = bytes;
        self
    }
}

/// 2-D convolution of `x` (N, C, H, W) with `w` (O, C, kh, kw), plus `b` (O) if given.
///
/// `y[n,o,i,j] = b[o] + Σ_{c,ki,kj} w[o,c,ki,kj] · x[n, c, i·s + ki − p, j·s + kj − p]`,
/// with zeros outside the image; output (N, O, (H + 2p − kh)/s + 1, (W + 2p − kw)/s + 1).
/// Square padding and stride, no dilation, no groups. Differentiable in `x`, `w` and `b`
/// (first order). Runs on [`crate::num_threads`] threads. On a non-CPU device or a dtype
/// other than f32 it falls back to candle's own `conv2d`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Tensor::new(&[0.5f32, -1.0], &Device::Cpu)?;
/// let y = fedpace_kernels::conv2d(&x, &w, Some(&b), 1, 1)?;
/// assert_eq!(y.dims(), &[1, 2, 4, 4]);
/// // A corner sees 4 of the 9 taps.
/// assert_eq!(y.get(0)?.get(0)?.get(0)?.get(0)?.to_scalar::<f32>()?, 4.5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let config = Conv2dConfig::default()
        .with_padding(padding)
        .with_stride(stride);
    conv2d_with(x, w, b, &config)
}

/// [`conv2d`] with every option spelled out in a [`Conv2dConfig`].
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    config: &Conv2dConfig,
) -> candle_core::Result<Tensor> {
    validate(x, w, b, config)?;
    let on_fast_path = x.device().is_cpu()
        && [Some(x), Some(w), b]
            .into_iter()
            .flatten()
            .all(|t| t.dtype() == DType::F32);
    if !on_fast_path {
        let y = x.conv2d(w, config.padding, config.stride, 1, 1)?;
        return match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        };
    }
    let op = Conv2dOp {
        padding: config.padding,
        stride: config.stride,
        threads: config.threads.unwrap_or_else(crate::num_threads).max(1),
        im2col_budget_bytes: config.im2col_budget_bytes,
    };
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

fn validate(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    config: &Conv2dConfig,
) -> candle_core::Result<()> {
    let fail = |msg: String| Err(candle_core::Error::Msg(format!("conv2d: {msg}")).bt());
    let (xd, wd) = (x.dims(), w.dims());
    if xd.len() != 4 || wd.len() != 4 {
        return fail(format!(
            "input {xd:?} and weight {wd:?} must both be 4-D (N, C, H, W) and (O, C, kh, kw)"
        ));
    }
    if xd[1] != wd[1] {
        return fail(format!(
            "input has {} channels but weight {wd:?} expects {}",
            xd[1], wd[1]
        ));
    }
    if let Some(b) = b {
        if b.dims() != [wd[0]] {
            return fail(format!("bias {:?} must be ({},)", b.dims(), wd[0]));
        }
    }
    if config.stride == 0 {
        return fail("stride must be ≥ 1".into());
    }
    if xd[2] + 2 * config.padding < wd[2] || xd[3] + 2 * config.padding < wd[3] {
        return fail(format!(
            "kernel {}×{} is larger than the padded input {}×{}",
            wd[2],
            wd[3],
            xd[2] + 2 * config.padding,
            xd[3] + 2 * config.padding
        ));
    }
    Ok(())
}

/// The custom op; `threads` is fixed when the op is built so that backward runs with the
/// same parallelism as forward.
#[derive(Clone, Copy, Debug)]
struct Conv2dOp {
    padding: usize,
    stride: usize,
    threads: usize,
    im2col_budget_bytes: usize,
}

impl Conv2dOp {
    fn geometry(&self, x: &[usize], w: &[usize]) -> candle_core::Result<ConvGeometry> {
        let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d: input {x:?} and weight {w:?} must be 4-D")
        };
        let (p, s) = (self.padding, self.stride);
        if c != c2 || s == 0 || h + 2 * p < kh || wd + 2 * p < kw {
            candle_core::bail!(
                "conv2d: bad shapes: input {x:?}, weight {w:?}, padding {p}, stride {s}"
            )
        }
        Ok(ConvGeometry {
            batch: n,
            in_channels: c,
            in_h: h,
            in_w: wd,
            out_channels: o,
            kernel_h: kh,
            kernel_w: kw,
            padding: p,
            stride: s,
            out_h: (h + 2 * p - kh) / s + 1,
            out_w: (wd + 2 * p - kw) / s + 1,
        })
    }

    fn plan(&self, g: &ConvGeometry) -> Plan {
        Plan::new(g, self.threads, self.im2col_budget_bytes)
    }

    fn cpu_forward(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry(x.1.dims(), w.1.dims())?;
        let xs = contiguous_f32(x.0, x.1)?;
        let ws = contiguous_f32(w.0, w.1)?;
        let bs = b.map(|(s, l)| contiguous_f32(s, l)).transpose()?;
        let y = forward(&g, &self.plan(&g), xs, ws, bs);
        let shape = Shape::from((g.batch, g.out_channels, g.out_h, g.out_w));
        Ok((CpuStorage::F32(y), shape))
    }

    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.dims(), w.dims())?;
        let want = Wanted {
            dx: x.track_op(),
            dw: w.track_op(),
            db: b.is_some_and(|b| b.track_op()),
        };
        let grads = with_cpu_f32(x, |xs| {
            with_cpu_f32(w, |ws| {
                with_cpu_f32(grad, |dys| {
                    Ok(backward(&g, &self.plan(&g), xs, ws, dys, want))
                })
            })
        })?;
        let device = x.device();
        let dx = grads
            .dx
            .map(|v| Tensor::from_vec(v, x.shape(), device))
            .transpose()?;
        let dw = want
            .dw
            .then(|| Tensor::from_vec(grads.dw, w.shape(), device))
            .transpose()?;
        let db = want
            .db
            .then(|| Tensor::from_vec(grads.db, g.out_channels, device))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fedpace-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fedpace-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, Some(b), grad)
    }
}

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    if s.dtype() != DType::F32 {
        candle_core::bail!("fedpace-conv2d: expected f32, got {:?}", s.dtype())
    }
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("fedpace-conv2d: inputs must be contiguous"),
    }
}

/// Runs `f` on the f32 data of a CPU tensor, made contiguous first if needed.
pub(crate) fn with_cpu_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fedpace-conv2d: backward on a non-CPU tensor")
    };
    f(contiguous_f32(cpu, layout)?)
}

/// How a batch is cut: `chunk` samples per thread, `group` samples per GEMM within a
/// chunk, and the parallelism handed to each GEMM.
#[derive(Clone, Copy, Debug)]
struct Plan {
    chunk: usize,
    group: usize,
    gemm_threads: usize,
}

impl Plan {
    fn new(g: &ConvGeometry, threads: usize, budget_bytes: usize) -> Self {
        let n = g.batch.max(1);
        let chunks = threads.clamp(1, n);
        let chunk = n.div_ceil(chunks);
        // Threads left over after one per chunk (batch smaller than the thread count)
        // go into the GEMMs.
        let spare = threads / chunks;
        let gemm_threads = spare.max(1);
        // Column buffer plus the (O, G·P) transpose buffer.
        let per_sample = ((g.taps() + g.out_channels) * g.out_pixels() * size_of::<f32>()).max(1);
        let group = (budget_bytes / per_sample).clamp(1, chunk);
        Self {
            chunk,
            group,
            gemm_threads,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Wanted {
    dx: bool,
    dw: bool,
    db: bool,
}

struct Grads {
    dx: Option<Vec<f32>>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

/// The forward pass over a whole batch, cut into per-thread chunks.
fn forward(g: &ConvGeometry, plan: &Plan, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (in_len, out_len) = (g.in_sample_len(), g.out_sample_len());
    let mut y = vec![0.0f32; g.batch * out_len];
    if plan.chunk >= g.batch {
        forward_chunk(g, plan, x, w, b, &mut y);
    } else {
        x.par_chunks(plan.chunk * in_len)
            .zip(y.par_chunks_mut(plan.chunk * out_len))
            .for_each(|(xc, yc)| forward_chunk(g, plan, xc, w, b, yc));
    }
    y
}

/// The forward pass over the samples of one chunk, on the calling thread.
fn forward_chunk(
    g: &ConvGeometry,
    plan: &Plan,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    let (k, p, o) = (g.taps(), g.out_pixels(), g.out_channels);
    let (in_len, out_len) = (g.in_sample_len(), g.out_sample_len());
    let n = x.len() / in_len.max(1);
    let group = plan.group.min(n).max(1);
    let mut scratch = Scratch::take();
    let (cols, wide) = scratch.split(k * group * p, if group > 1 { o * group * p } else { 0 });
    let weight = MatRef::row_major(w, o, k, k);
    for start in (0..n).step_by(group) {
        let gs = group.min(n - start);
        let ld = gs * p;
        for i in 0..gs {
            im2col(g, &x[(start + i) * in_len..][..in_len], cols, ld, i * p);
        }
        let cols_view = MatRef::row_major(cols, k, ld, ld);
        if gs == 1 {
            // One sample: its (O, OH·OW) output block is the GEMM's destination.
            let dst = &mut y[start * out_len..][..out_len];
            if let Some(b) = b {
                for (row, &bias) in dst.chunks_exact_mut(p).zip(b) {
                    row.fill(bias);
                }
            }
            let dst = MatMut::row_major(dst, o, p, p);
            sgemm(dst, weight, cols_view, b.is_some(), plan.gemm_threads);
        } else {
            let dst = MatMut::row_major(wide, o, ld, ld);
            sgemm(dst, weight, cols_view, false, plan.gemm_threads);
            // (O, G·P) → G × (O, P), adding the bias on the way.
            for i in 0..gs {
                let out = &mut y[(start + i) * out_len..][..out_len];
                for (oc, row) in out.chunks_exact_mut(p).enumerate() {
                    let src = &wide[oc * ld + i * p..][..p];
                    let bias = b.map_or(0.0, |b| b[oc]);
                    for (d, s) in row.iter_mut().zip(src) {
                        *d = s + bias;
                    }
                }
            }
        }
    }
}

/// The backward pass over a whole batch; per-thread partial dW and db are summed in
/// chunk order, so a given thread count always gives the same bits.
fn backward(
    g: &ConvGeometry,
    plan: &Plan,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: Wanted,
) -> Grads {
    let (in_len, out_len) = (g.in_sample_len(), g.out_sample_len());
    let (wlen, o) = (g.out_channels * g.taps(), g.out_channels);
    let mut dx = want.dx.then(|| vec![0.0f32; g.batch * in_len]);
    let run = |i: usize, dxc: Option<&mut [f32]>| {
        let start = i * plan.chunk;
        let n = plan.chunk.min(g.batch - start);
        let mut dw = vec![0.0f32; wlen];
        let mut db = vec![0.0f32; o];
        backward_chunk(
            g,
            plan,
            &x[start * in_len..][..n * in_len],
            w,
            &dy[start * out_len..][..n * out_len],
            dxc,
            want.dw.then_some(&mut dw[..]),
            &mut db,
        );
        (dw, db)
    };
    let mut partials: Vec<(Vec<f32>, Vec<f32>)> = if plan.chunk >= g.batch {
        vec![run(0, dx.as_deref_mut())]
    } else {
        match dx.as_mut() {
            Some(dx) => dx
                .par_chunks_mut(plan.chunk * in_len)
                .enumerate()
                .map(|(i, dxc)| run(i, Some(dxc)))
                .collect(),
            None => (0..g.batch.div_ceil(plan.chunk))
                .into_par_iter()
                .map(|i| run(i, None))
                .collect(),
        }
    };
    let (mut dw, mut db) = partials.remove(0);
    for (pdw, pdb) in partials {
        dw.iter_mut().zip(pdw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pdb).for_each(|(a, b)| *a += b);
    }
    Grads { dx, dw, db }
}

/// The backward pass over the samples of one chunk, on the calling thread: accumulates
/// into `dw` and `db`, writes `dx`.
#[allow(clippy::too_many_arguments)]
fn backward_chunk(
    g: &ConvGeometry,
    plan: &Plan,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
    db: &mut [f32],
) {
    let (k, p, o) = (g.taps(), g.out_pixels(), g.out_channels);
    let (in_len, out_len) = (g.in_sample_len(), g.out_sample_len());
    let n = x.len() / in_len.max(1);
    let group = plan.group.min(n).max(1);
    let cols_len = if dx.is_some() || dw.is_some() {
        k * group * p
    } else {
        0
    };
    let mut scratch = Scratch::take();
    let (cols, wide) = scratch.split(cols_len, if group > 1 { o * group * p } else { 0 });
    for start in (0..n).step_by(group) {
        let gs = group.min(n - start);
        let ld = gs * p;
        // dY of the group as one (O, G·P) matrix.
        let dyg: &[f32] = if gs == 1 {
            &dy[start * out_len..][..out_len]
        } else {
            for i in 0..gs {
                let src = &dy[(start + i) * out_len..][..out_len];
                for (oc, row) in src.chunks_exact(p).enumerate() {
                    wide[oc * ld + i * p..][..p].copy_from_slice(row);
                }
            }
            &wide[..o * ld]
        };
        for (acc, row) in db.iter_mut().zip(dyg.chunks_exact(ld)) {
            *acc += sum(row);
        }
        let dy_view = MatRef::row_major(dyg, o, ld, ld);
        if let Some(dw) = dw.as_deref_mut() {
            for i in 0..gs {
                im2col(g, &x[(start + i) * in_len..][..in_len], cols, ld, i * p);
            }
            sgemm(
                MatMut::row_major(dw, o, k, k),
                dy_view,
                MatRef::transposed(cols, ld, k, ld),
                true,
                plan.gemm_threads,
            );
        }
        if let Some(dx) = dx.as_deref_mut() {
            sgemm(
                MatMut::row_major(cols, k, ld, ld),
                MatRef::transposed(w, k, o, k),
                dy_view,
                false,
                plan.gemm_threads,
            );
            for i in 0..gs {
                col2im_add(
                    g,
                    cols,
                    ld,
                    i * p,
                    &mut dx[(start + i) * in_len..][..in_len],
                );
            }
        }
    }
}

/// Σ row, in eight independent lanes so that the compiler can vectorise it.
fn sum(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

thread_local! {
    /// This thread's im2col and transpose buffers, kept between calls: a fresh 2–20 MB
    /// allocation per call costs page faults and zeroing comparable to the GEMM itself.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A scratch buffer borrowed from [`SCRATCH`] and given back on drop. Its contents are
/// stale, so users overwrite every element they read (im2col writes its zeros too).
struct Scratch(Vec<f32>);

impl Scratch {
    fn take() -> Self {
        Self(SCRATCH.with(|s| s.take()))
    }

    /// Two disjoint buffers of `a` and `b` elements.
    fn split(&mut self, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
        if self.0.len() < a + b {
            self.0.resize(a + b, 0.0);
        }
        let (first, rest) = self.0.split_at_mut(a);
        (first, &mut rest[..b])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        SCRATCH.with(|s| s.set(buffer));
    }
}
