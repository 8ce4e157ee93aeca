//! 2×2 max-pooling with stride 2 (NCHW, f32) as a candle custom op, optionally fused
//! with the ReLU before it.
//!
//! candle's own backward for `max_pool2d` builds a mask with seven full-size tensor
//! passes (upsample, compare, cast, average-pool, multiply, upsample, multiply); this
//! op does one pass forward and one backward. Ties send the whole gradient to the first
//! maximum in row-major window order, as PyTorch does (candle splits it evenly); both
//! are valid subgradients.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

/// 2×2 max-pooling, stride 2: `y[n,c,i,j] = max(x[n,c,2i..2i+2, 2j..2j+2])`.
///
/// Input (N, C, H, W), output (N, C, ⌊H/2⌋, ⌊W/2⌋); a trailing odd row or column is
/// dropped, as in candle and PyTorch. Single-threaded (memory-bound). Falls back to
/// candle's `max_pool2d` off the CPU or for dtypes other than f32.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32, 2.], [4., 3.]]]], &Device::Cpu)?;
/// let y = fedpace_kernels::max_pool2x2(&x)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    pool(x, false)
}

/// `max_pool2x2(relu(x))` in one pass: `y = max(0, max of each 2×2 window)`.
///
/// The gradient flows to the window's first maximum where that maximum is positive.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[-1f32, -2.], [-4., -3.]]]], &Device::Cpu)?;
/// let y = fedpace_kernels::relu_max_pool2x2(&x)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn relu_max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    pool(x, true)
}

fn pool(x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    if x.rank() != 4 {
        candle_core::bail!("max_pool2x2: input {:?} must be 4-D (N, C, H, W)", x.dims())
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        let x = if relu { x.relu()? } else { x.clone() };
        return x.max_pool2d(2);
    }
    x.contiguous()?.apply_op1(MaxPool2x2 { relu })
}

#[derive(Clone, Copy, Debug)]
struct MaxPool2x2 {
    relu: bool,
}

/// (planes, H, W) of a rank-4 layout.
fn planes(dims: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
    match dims {
        &[n, c, h, w] => Ok((n * c, h, w)),
        _ => candle_core::bail!("max_pool2x2: input {dims:?} must be 4-D"),
    }
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        if self.relu {
            "fedpace-relu-max-pool2x2"
        } else {
            "fedpace-max-pool2x2"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes_n, h, w) = planes(l.dims())?;
        let x = crate::conv2d::contiguous_f32(s, l)?;
        let (oh, ow) = (h / 2, w / 2);
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        let mut y = vec![0.0f32; planes_n * oh * ow];
        if oh * ow > 0 {
            for (plane, out) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
                for (i, out_row) in out.chunks_exact_mut(ow).enumerate() {
                    let top = &plane[2 * i * w..][..2 * ow];
                    let bottom = &plane[(2 * i + 1) * w..][..2 * ow];
                    for ((o, t), b) in out_row
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bottom.chunks_exact(2))
                    {
                        *o = t[0].max(t[1]).max(b[0].max(b[1])).max(floor);
                    }
                }
            }
        }
        let (n, c) = (l.dims()[0], l.dims()[1]);
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (planes_n, h, w) = planes(arg.dims())?;
        let (oh, ow) = (h / 2, w / 2);
        let relu = self.relu;
        let dx = crate::conv2d::with_cpu_f32(arg, |x| {
            crate::conv2d::with_cpu_f32(grad, |dy| {
                let mut dx = vec![0.0f32; planes_n * h * w];
                if oh * ow == 0 {
                    return Ok(dx);
                }
                let planes_iter = x
                    .chunks_exact(h * w)
                    .zip(dx.chunks_exact_mut(h * w))
                    .zip(dy.chunks_exact(oh * ow));
                for ((plane, dplane), dy_plane) in planes_iter {
                    for (i, dy_row) in dy_plane.chunks_exact(ow).enumerate() {
                        let (top, bottom) = (2 * i * w, (2 * i + 1) * w);
                        for (j, &g) in dy_row.iter().enumerate() {
                            // Row-major window order; `>` keeps the first of equal maxima.
                            let mut best = top + 2 * j;
                            for t in [top + 2 * j + 1, bottom + 2 * j, bottom + 2 * j + 1] {
                                if plane[t] > plane[best] {
                                    best = t;
                                }
                            }
                            if !relu || plane[best] > 0.0 {
                                dplane[best] = g;
                            }
                        }
                    }
                }
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}
