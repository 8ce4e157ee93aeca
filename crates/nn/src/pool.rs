//! 2×2 max-pooling (stride 2) with a PyTorch-compatible backward.
//!
//! candle 0.11.1's `max_pool2d` backward multiplies the upstream gradient by
//! (number of maxima in the window)/4 instead of routing it whole to the maximum, so a
//! single 2×2 pool under-scales every gradient below it by 4 (found by the finite-
//! difference test of the CNN). This op routes each window's gradient to its first
//! maximum in row-major order, as PyTorch does.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

struct MaxPool2;

fn dims(shape: &Shape) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = shape.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("maxpool2: height {h} and width {w} must be even");
    }
    Ok((n, c, h, w))
}

/// Index (within `x`) of the first maximum of the 2×2 window at output (i, j) of plane
/// `plane` (offset of the plane's first value).
#[inline]
fn argmax(x: &[f32], plane: usize, w: usize, i: usize, j: usize) -> usize {
    let a = plane + 2 * i * w + 2 * j;
    let mut best = a;
    for k in [a + 1, a + w, a + w + 1] {
        if x[k] > x[best] {
            best = k;
        }
    }
    best
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "fedpace-maxpool2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(layout.shape())?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("maxpool2: input must be contiguous");
        };
        let x = &storage.as_slice::<f32>()?[start..end];
        let (ho, wo) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(n * c * ho * wo);
        for p in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    out.push(x[argmax(x, p * h * w, w, i, j)]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = dims(arg.shape())?;
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let g = grad_res.flatten_all()?.to_vec1::<f32>()?;
        let (ho, wo) = (h / 2, w / 2);
        let mut dx = vec![0.0f32; x.len()];
        for p in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    dx[argmax(&x, p * h * w, w, i, j)] += g[(p * ho + i) * wo + j];
                }
            }
        }
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// 2×2 max-pool with stride 2 over `[n, c, h, w]` (h, w even); differentiable.
pub(crate) fn max_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2)
}
