//! im2col / col2im for one NCHW sample.
//!
//! The column matrix of a sample has one row per kernel tap `(c, ki, kj)` and one column
//! per output pixel `(oh, ow)`, so the convolution becomes `W[O, C·kh·kw] · cols`.
//! Several samples share one column buffer side by side (column `g·P + p` for sample
//! `g`), which turns a batch into one wide GEMM.

/// Shapes of one 2-D convolution (NCHW input, OIHW weight), validated at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub padding: usize,
    pub stride: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    /// Rows of the column matrix: `C·kh·kw`.
    pub fn taps(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Output pixels per channel: `OH·OW`.
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Input elements per sample: `C·H·W`.
    pub fn in_sample_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    /// Output elements per sample: `O·OH·OW`.
    pub fn out_sample_len(&self) -> usize {
        self.out_channels * self.out_pixels()
    }

    /// The output columns `ow` whose input column `ow·s + kj − pad` lies in `[0, W)`.
    fn valid_out_cols(&self, kj: usize) -> (usize, usize) {
        let (s, pad) = (self.stride, self.padding);
        let lo = if kj >= pad { 0 } else { (pad - kj).div_ceil(s) };
        let hi = if self.in_w + pad <= kj {
            0
        } else {
            ((self.in_w + pad - kj - 1) / s + 1).min(self.out_w)
        };
        (lo.min(hi), hi)
    }

    /// Input row read by output row `oh` through kernel row `ki`, if inside the image.
    fn in_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.stride + ki)
            .checked_sub(self.padding)
            .filter(|&ih| ih < self.in_h)
    }
}

/// Writes the column matrix of one sample `x` (`C·H·W`) into `cols` rows of length `ld`,
/// starting at column `col0`.
pub(crate) fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
    let (p, ow_n) = (g.out_pixels(), g.out_w);
    let mut row = 0;
    for c in 0..g.in_channels {
        let plane = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let (lo, hi) = g.valid_out_cols(kj);
                let dst_row = &mut cols[row * ld + col0..][..p];
                for oh in 0..g.out_h {
                    let dst = &mut dst_row[oh * ow_n..][..ow_n];
                    let Some(ih) = g.in_row(oh, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.in_w..][..g.in_w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if hi > lo {
                        // iw = ow·s + kj − pad ≥ 0 for ow ≥ lo.
                        let iw0 = lo * g.stride + kj - g.padding;
                        if g.stride == 1 {
                            dst[lo..hi].copy_from_slice(&src[iw0..iw0 + hi - lo]);
                        } else {
                            for (d, ow) in dst[lo..hi].iter_mut().zip(0..) {
                                *d = src[iw0 + ow * g.stride];
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Adds the column-matrix gradient `cols` (rows of length `ld`, this sample's block at
/// column `col0`) back onto the input gradient `dx` (`C·H·W`) of one sample.
pub(crate) fn col2im_add(g: &ConvGeometry, cols: &[f32], ld: usize, col0: usize, dx: &mut [f32]) {
    let (p, ow_n) = (g.out_pixels(), g.out_w);
    let mut row = 0;
    for c in 0..g.in_channels {
        let plane = &mut dx[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let (lo, hi) = g.valid_out_cols(kj);
                let src_row = &cols[row * ld + col0..][..p];
                if hi > lo {
                    let iw0 = lo * g.stride + kj - g.padding;
                    for oh in 0..g.out_h {
                        let Some(ih) = g.in_row(oh, ki) else { continue };
                        let src = &src_row[oh * ow_n + lo..oh * ow_n + hi];
                        let dst = &mut plane[ih * g.in_w..][..g.in_w];
                        if g.stride == 1 {
                            for (d, s) in dst[iw0..iw0 + hi - lo].iter_mut().zip(src) {
                                *d += s;
                            }
                        } else {
                            for (s, ow) in src.iter().zip(0..) {
                                dst[iw0 + ow * g.stride] += s;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}
