//! Slice kernels for a convolutional network on **channels-last** (HWC) images, one
//! sample per call, for models that run their own forward and backward pass on flat
//! buffers (`fedpace_nn::Cnn`).
//!
//! Why channels-last: a stride-1 `k×k` convolution with "same" padding reads, for one
//! output pixel and one kernel row, `k` neighbouring input pixels of all `C` channels —
//! `k·C` **contiguous** values of a padded HWC image. So [`im2row`] builds each row of
//! the column matrix with `k` straight copies (no bounds checks: the padding is stored),
//! [`row2im_add`] adds them back with `k` vector adds, and the convolution is one GEMM
//! `Y[pixels, O] = cols[pixels, k·k·C] · W[k·k·C, O]` whose output is again HWC.
//!
//! [`Pool2x2`] fuses bias + ReLU + 2×2 max-pooling (stride 2) in one pass and records,
//! per output, which window element won (or that ReLU cut it), so the backward pass is
//! one pass that writes the whole input gradient and the bias gradient.

use crate::simd::simd;

/// A stride-1 `k×k` convolution (k odd) with `k/2` zeros of padding on each side — the
/// output has the input's `h × w` size — on HWC images with `channels` channels, as seen
/// from its **padded** input image (`(h + 2p) × (w + 2p) × channels`, `p = k/2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SameConv {
    /// Image height (input and output).
    pub h: usize,
    /// Image width (input and output).
    pub w: usize,
    /// Input channels.
    pub channels: usize,
    /// Kernel size (odd).
    pub k: usize,
}

impl SameConv {
    /// The geometry; panics unless `k` is odd and every size positive (callers validate
    /// user input before building one).
    pub fn new(h: usize, w: usize, channels: usize, k: usize) -> Self {
        assert!(
            h > 0 && w > 0 && channels > 0 && k % 2 == 1,
            "SameConv: sizes must be positive and the kernel odd"
        );
        Self { h, w, channels, k }
    }

    /// Zeros on each side: `k / 2`.
    pub fn pad(&self) -> usize {
        self.k / 2
    }

    /// Rows of the padded image.
    pub fn padded_h(&self) -> usize {
        self.h + 2 * self.pad()
    }

    /// Columns of the padded image.
    pub fn padded_w(&self) -> usize {
        self.w + 2 * self.pad()
    }

    /// Values in one padded image.
    pub fn padded_len(&self) -> usize {
        self.padded_h() * self.padded_w() * self.channels
    }

    /// Row length of the column matrix: `k·k·channels`, ordered `(ki, kj, c)`.
    pub fn taps(&self) -> usize {
        self.k * self.k * self.channels
    }

    /// Output pixels: `h·w` (rows of the column matrix).
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }
}

/// Copies one CHW sample into the interior of its padded HWC image `xp` and zeroes the
/// border.
pub fn to_padded_nhwc(g: &SameConv, x_chw: &[f32], xp: &mut [f32]) {
    let (c_n, plane) = (g.channels, g.h * g.w);
    assert!(x_chw.len() >= c_n * plane && xp.len() >= g.padded_len());
    zero_border(g, xp);
    let (p, pw) = (g.pad(), g.padded_w());
    for i in 0..g.h {
        let row = &mut xp[((i + p) * pw + p) * c_n..][..g.w * c_n];
        if c_n == 1 {
            row.copy_from_slice(&x_chw[i * g.w..][..g.w]);
        } else {
            for (j, px) in row.chunks_exact_mut(c_n).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = x_chw[c * plane + i * g.w + j];
                }
            }
        }
    }
}

/// Zeroes the border (the padding) of one padded HWC image; the interior is untouched.
pub fn zero_border(g: &SameConv, xp: &mut [f32]) {
    let (p, pw, c_n) = (g.pad(), g.padded_w(), g.channels);
    let row_len = pw * c_n;
    xp[..p * row_len].fill(0.0);
    xp[(p + g.h) * row_len..g.padded_len()].fill(0.0);
    for i in p..p + g.h {
        let row = &mut xp[i * row_len..][..row_len];
        row[..p * c_n].fill(0.0);
        row[(p + g.w) * c_n..].fill(0.0);
    }
}

/// The column matrix of one sample: `cols[(i, j), (ki, kj, c)] = xp[i + ki, j + kj, c]`,
/// `pixels × taps`, row-major, from the padded HWC image `xp`.
pub fn im2row(g: &SameConv, xp: &[f32], cols: &mut [f32]) {
    simd(
        #[inline(always)]
        || im2row_impl(g, xp, cols),
    )
}

#[inline(always)]
fn im2row_impl(g: &SameConv, xp: &[f32], cols: &mut [f32]) {
    let (k, c_n, pw) = (g.k, g.channels, g.padded_w());
    let run = k * c_n;
    assert!(xp.len() >= g.padded_len() && cols.len() >= g.pixels() * g.taps());
    if run == 5 {
        return im2row_runs_of_5(g, xp, cols);
    }
    let mut rows = cols.chunks_exact_mut(g.taps());
    for i in 0..g.h {
        for j in 0..g.w {
            let row = rows.next().expect("cols holds pixels × taps values");
            for (ki, dst) in row.chunks_exact_mut(run).enumerate() {
                copy(dst, &xp[((i + ki) * pw + j) * c_n..][..run]);
            }
        }
    }
}

/// [`im2row_impl`] for runs of 5 values (a one-channel input, 5×5 taps): each run is
/// copied as 8 values (one vector load and store), in increasing order, so the 3 values
/// past a run are overwritten by the next run or by the next pixel's first; where the 8
/// values would reach past `xp` or `cols` (the last pixels), the run is copied exactly.
/// The same values as the run-by-run copy (it was scalar copies: 5 % of the W-CNN
/// epoch).
#[inline(always)]
fn im2row_runs_of_5(g: &SameConv, xp: &[f32], cols: &mut [f32]) {
    let (k, pw, taps) = (g.k, g.padded_w(), g.taps());
    let n = g.pixels() * taps;
    let cols = &mut cols[..n];
    for i in 0..g.h {
        for j in 0..g.w {
            let r = (i * g.w + j) * taps;
            for ki in 0..k {
                let (src, dst) = ((i + ki) * pw + j, r + ki * 5);
                if src + 8 <= xp.len() && dst + 8 <= n {
                    let v: [f32; 8] = xp[src..src + 8].try_into().expect("8 values");
                    let d: &mut [f32; 8] = (&mut cols[dst..dst + 8]).try_into().expect("8");
                    *d = v;
                } else {
                    cols[dst..dst + 5].copy_from_slice(&xp[src..src + 5]);
                }
            }
        }
    }
}

/// Adds one sample's column-matrix gradient back onto its padded HWC image gradient:
/// `dxp[i + ki, j + kj, c] += cols[(i, j), (ki, kj, c)]`. The border of `dxp` collects
/// the padding's gradient, which callers ignore.
pub fn row2im_add(g: &SameConv, cols: &[f32], dxp: &mut [f32]) {
    simd(
        #[inline(always)]
        || row2im_add_impl(g, cols, dxp),
    )
}

#[inline(always)]
fn row2im_add_impl(g: &SameConv, cols: &[f32], dxp: &mut [f32]) {
    let (k, c_n, pw) = (g.k, g.channels, g.padded_w());
    let run = k * c_n;
    assert!(dxp.len() >= g.padded_len() && cols.len() >= g.pixels() * g.taps());
    let mut rows = cols.chunks_exact(g.taps());
    for i in 0..g.h {
        for j in 0..g.w {
            let row = rows.next().expect("cols holds pixels × taps values");
            for (ki, src) in row.chunks_exact(run).enumerate() {
                let dst = &mut dxp[((i + ki) * pw + j) * c_n..][..run];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
}

/// `dst ← src`, without a `memcpy` call for the short runs of a one-channel input.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    if dst.len() <= 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Where [`Pool2x2`] writes its output (and reads the output's gradient from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolLayout {
    /// HWC, into the interior of a padded image with `pad` zeros on each side (the next
    /// convolution's input; the border is left untouched).
    PaddedHwc {
        /// Zeros on each side of the destination image.
        pad: usize,
    },
    /// CHW, PyTorch's flatten order (the fully connected layer's input).
    Chw,
}

/// Winner code of a window whose maximum is ≤ 0 (ReLU cut it: no gradient).
pub(crate) const CUT: u8 = 4;

/// Bias + ReLU + 2×2 max-pooling with stride 2 on one HWC sample of `h × w` pixels
/// (both even) and `channels` channels: `out = max(0, max over the window of y + b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2x2 {
    /// Input height (even).
    pub h: usize,
    /// Input width (even).
    pub w: usize,
    /// Channels.
    pub channels: usize,
    /// Output layout.
    pub layout: PoolLayout,
}

impl Pool2x2 {
    /// Outputs per sample (and winner codes): `h/2 · w/2 · channels`.
    pub fn out_len(&self) -> usize {
        (self.h / 2) * (self.w / 2) * self.channels
    }

    /// Values the output buffer of one sample spans in this layout.
    pub fn out_span(&self) -> usize {
        match self.layout {
            PoolLayout::PaddedHwc { pad } => {
                (self.h / 2 + 2 * pad) * (self.w / 2 + 2 * pad) * self.channels
            }
            PoolLayout::Chw => self.out_len(),
        }
    }

    /// Index in the output buffer of output pixel `(i, j)`, channel 0, and the distance
    /// between consecutive channels.
    #[inline(always)]
    fn out_index(&self, i: usize, j: usize) -> (usize, usize) {
        let (oh, ow, c_n) = (self.h / 2, self.w / 2, self.channels);
        match self.layout {
            PoolLayout::PaddedHwc { pad } => (((i + pad) * (ow + 2 * pad) + j + pad) * c_n, 1),
            PoolLayout::Chw => (i * ow + j, oh * ow),
        }
    }

    /// Forward pass of one sample: `y` is the convolution output `[h, w, channels]`
    /// without bias; writes `out` (in [`Self::layout`]) and the winner codes `arg`
    /// (`[h/2, w/2, channels]`: 0–3 the window element in row-major order, the first of
    /// equal maxima, as PyTorch; 4 where the maximum is ≤ 0).
    pub fn forward(&self, y: &[f32], bias: &[f32], out: &mut [f32], arg: &mut [u8]) {
        simd(
            #[inline(always)]
            || self.forward_impl(y, bias, out, arg),
        )
    }

    #[inline(always)]
    fn forward_impl(&self, y: &[f32], bias: &[f32], out: &mut [f32], arg: &mut [u8]) {
        let (w, c_n) = (self.w, self.channels);
        assert!(y.len() >= self.h * w * c_n && bias.len() == c_n);
        assert!(out.len() >= self.out_span() && arg.len() >= self.out_len());
        let mut tmp = [0.0f32; BLOCK];
        let mut args = arg.chunks_exact_mut(c_n);
        for i in 0..self.h / 2 {
            for j in 0..self.w / 2 {
                let a = args.next().expect("arg holds out_len codes");
                let t = ((2 * i) * w + 2 * j) * c_n;
                let b = ((2 * i + 1) * w + 2 * j) * c_n;
                let (o0, stride) = self.out_index(i, j);
                for c0 in (0..c_n).step_by(BLOCK) {
                    let len = BLOCK.min(c_n - c0);
                    let win = [
                        &y[t + c0..][..len],
                        &y[t + c_n + c0..][..len],
                        &y[b + c0..][..len],
                        &y[b + c_n + c0..][..len],
                    ];
                    let dst: &mut [f32] = if stride == 1 {
                        &mut out[o0 + c0..][..len]
                    } else {
                        &mut tmp[..len]
                    };
                    pool_window(win, &bias[c0..][..len], dst, &mut a[c0..][..len]);
                    if stride != 1 {
                        for (c, v) in tmp[..len].iter().enumerate() {
                            out[o0 + (c0 + c) * stride] = *v;
                        }
                    }
                }
            }
        }
    }

    /// Backward pass of one sample: reads the output gradient `dout` (in
    /// [`Self::layout`]) and the winner codes of [`Self::forward`], writes **every**
    /// element of `dy` (`[h, w, channels]`) and adds the bias gradient to `dbias`.
    pub fn backward(&self, dout: &[f32], arg: &[u8], dy: &mut [f32], dbias: &mut [f32]) {
        simd(
            #[inline(always)]
            || self.backward_impl(dout, arg, dy, dbias),
        )
    }

    #[inline(always)]
    fn backward_impl(&self, dout: &[f32], arg: &[u8], dy: &mut [f32], dbias: &mut [f32]) {
        let (w, c_n) = (self.w, self.channels);
        assert!(dy.len() >= self.h * w * c_n && dbias.len() == c_n);
        assert!(dout.len() >= self.out_span() && arg.len() >= self.out_len());
        let mut tmp = [0.0f32; BLOCK];
        let mut args = arg.chunks_exact(c_n);
        for i in 0..self.h / 2 {
            // The two input rows of this output row.
            let (top, bottom) = dy[2 * i * w * c_n..][..2 * w * c_n].split_at_mut(w * c_n);
            for j in 0..self.w / 2 {
                let a = args.next().expect("arg holds out_len codes");
                let (o0, stride) = self.out_index(i, j);
                let (t0, t1) = top[2 * j * c_n..][..2 * c_n].split_at_mut(c_n);
                let (b0, b1) = bottom[2 * j * c_n..][..2 * c_n].split_at_mut(c_n);
                for c0 in (0..c_n).step_by(BLOCK) {
                    let len = BLOCK.min(c_n - c0);
                    let g: &[f32] = if stride == 1 {
                        &dout[o0 + c0..][..len]
                    } else {
                        for (c, v) in tmp[..len].iter_mut().enumerate() {
                            *v = dout[o0 + (c0 + c) * stride];
                        }
                        &tmp[..len]
                    };
                    let r = c0..c0 + len;
                    unpool_window(
                        g,
                        &a[r.clone()],
                        [
                            &mut t0[r.clone()],
                            &mut t1[r.clone()],
                            &mut b0[r.clone()],
                            &mut b1[r.clone()],
                        ],
                        &mut dbias[r],
                    );
                }
            }
        }
    }
}

/// Channels handled per inner loop (stack buffer for the strided CHW layout).
const BLOCK: usize = 64;

/// One window, `len` channels: `dst = max(0, max_k win[k] + b)`, winner codes in `arg`.
#[inline(always)]
pub(crate) fn pool_window(win: [&[f32]; 4], bias: &[f32], dst: &mut [f32], arg: &mut [u8]) {
    let n = dst.len();
    let (w0, w1, w2, w3) = (&win[0][..n], &win[1][..n], &win[2][..n], &win[3][..n]);
    let (bias, arg) = (&bias[..n], &mut arg[..n]);
    for c in 0..n {
        let b = bias[c];
        let (v0, v1, v2, v3) = (w0[c] + b, w1[c] + b, w2[c] + b, w3[c] + b);
        // Strict `>`: the first of equal maxima wins.
        let (mut m, mut k) = (v0, 0u8);
        if v1 > m {
            m = v1;
            k = 1;
        }
        if v2 > m {
            m = v2;
            k = 2;
        }
        if v3 > m {
            m = v3;
            k = 3;
        }
        let on = m > 0.0;
        dst[c] = if on { m } else { 0.0 };
        arg[c] = if on { k } else { CUT };
    }
}

/// One window, `len` channels: the gradient `g` goes to the winner (nowhere if cut).
#[inline(always)]
fn unpool_window(g: &[f32], arg: &[u8], dy: [&mut [f32]; 4], dbias: &mut [f32]) {
    let n = g.len();
    let [d0, d1, d2, d3] = dy;
    let (d0, d1, d2, d3) = (&mut d0[..n], &mut d1[..n], &mut d2[..n], &mut d3[..n]);
    let (arg, dbias) = (&arg[..n], &mut dbias[..n]);
    for c in 0..n {
        let (v, k) = (g[c], arg[c]);
        d0[c] = if k == 0 { v } else { 0.0 };
        d1[c] = if k == 1 { v } else { 0.0 };
        d2[c] = if k == 2 { v } else { 0.0 };
        d3[c] = if k == 3 { v } else { 0.0 };
        dbias[c] += if k < CUT { v } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005) | 1;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct convolution of one CHW sample with OIHW weights, "same" padding, HWC out.
    fn direct_conv(g: &SameConv, x: &[f32], w: &[f32], o_n: usize) -> Vec<f32> {
        let (h, wd, c_n, k, p) = (g.h, g.w, g.channels, g.k, g.pad() as isize);
        let mut y = vec![0.0f32; h * wd * o_n];
        for i in 0..h {
            for j in 0..wd {
                for o in 0..o_n {
                    let mut s = 0.0f64;
                    for c in 0..c_n {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (ii, jj) =
                                    (i as isize + ki as isize - p, j as isize + kj as isize - p);
                                if ii < 0 || jj < 0 || ii >= h as isize || jj >= wd as isize {
                                    continue;
                                }
                                s += (x[(c * h + ii as usize) * wd + jj as usize]
                                    * w[((o * c_n + c) * k + ki) * k + kj])
                                    as f64;
                            }
                        }
                    }
                    y[(i * wd + j) * o_n + o] = s as f32;
                }
            }
        }
        y
    }

    #[test]
    fn im2row_times_weights_is_the_convolution() {
        for &(h, w, c_n, k, o_n) in &[(6, 5, 1, 5, 3), (4, 7, 3, 3, 2), (5, 5, 2, 1, 4)] {
            let g = SameConv::new(h, w, c_n, k);
            let x = values(c_n * h * w, 1);
            let wt = values(o_n * c_n * k * k, 2);
            let mut xp = vec![f32::NAN; g.padded_len()];
            to_padded_nhwc(&g, &x, &mut xp);
            let mut cols = vec![0.0; g.pixels() * g.taps()];
            im2row(&g, &xp, &mut cols);
            // W as [(ki, kj, c), o].
            let mut wk = vec![0.0; g.taps() * o_n];
            for o in 0..o_n {
                for c in 0..c_n {
                    for ki in 0..k {
                        for kj in 0..k {
                            wk[((ki * k + kj) * c_n + c) * o_n + o] =
                                wt[((o * c_n + c) * k + ki) * k + kj];
                        }
                    }
                }
            }
            let want = direct_conv(&g, &x, &wt, o_n);
            for (px, row) in cols.chunks_exact(g.taps()).enumerate() {
                for o in 0..o_n {
                    let got: f32 = (0..g.taps()).map(|t| row[t] * wk[t * o_n + o]).sum();
                    assert!((got - want[px * o_n + o]).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn one_channel_rows_are_the_definition_and_stay_in_their_sample() {
        // The runs-of-5 path (one channel, 5×5) copies 8 values at a time: every entry
        // must be `xp[i + ki, j + kj]` exactly, and nothing past this sample's rows may
        // change (the buffers here are longer than one sample, as a batch's are).
        for &(h, w) in &[(28, 28), (6, 5), (1, 1), (2, 3)] {
            let g = SameConv::new(h, w, 1, 5);
            let xp = values(g.padded_len() + 11, 5);
            let n = g.pixels() * g.taps();
            let mut cols = vec![f32::NAN; n + 9];
            cols[n..].fill(7.0);
            im2row(&g, &xp[..g.padded_len()], &mut cols);
            let pw = g.padded_w();
            for i in 0..h {
                for j in 0..w {
                    for ki in 0..5 {
                        for kj in 0..5 {
                            let got = cols[(i * w + j) * 25 + ki * 5 + kj];
                            assert_eq!(got.to_bits(), xp[(i + ki) * pw + j + kj].to_bits());
                        }
                    }
                }
            }
            assert!(cols[n..].iter().all(|v| *v == 7.0));
            // A padded image followed by more data (a batch's next sample): the same.
            let mut cols2 = vec![f32::NAN; n];
            im2row(&g, &xp, &mut cols2);
            assert!(cols2
                .iter()
                .zip(&cols)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn row2im_is_the_adjoint_of_im2row() {
        // <im2row(x), r> = <x, row2im(r)> on the interior.
        let g = SameConv::new(5, 6, 3, 3);
        let x = values(g.channels * g.h * g.w, 3);
        let mut xp = vec![0.0; g.padded_len()];
        to_padded_nhwc(&g, &x, &mut xp);
        let mut cols = vec![0.0; g.pixels() * g.taps()];
        im2row(&g, &xp, &mut cols);
        let r = values(cols.len(), 4);
        let lhs: f64 = cols.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum();
        let mut dxp = vec![0.0; g.padded_len()];
        row2im_add(&g, &r, &mut dxp);
        let rhs: f64 = xp.iter().zip(&dxp).map(|(a, b)| (a * b) as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }

    #[test]
    fn padding_is_zero_and_interior_is_hwc() {
        let g = SameConv::new(2, 3, 2, 3);
        let x: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let mut xp = vec![f32::NAN; g.padded_len()];
        to_padded_nhwc(&g, &x, &mut xp);
        // Padded 4×5×2; interior pixel (0, 0) is at padded (1, 1).
        assert_eq!(&xp[(5 + 1) * 2..][..2], &[1.0, 7.0]);
        assert_eq!(&xp[(2 * 5 + 3) * 2..][..2], &[6.0, 12.0]);
        assert_eq!(
            xp.iter().filter(|v| **v == 0.0).count(),
            g.padded_len() - 12
        );
    }

    #[test]
    fn pool_forward_and_backward_by_hand() {
        // One channel 2×4 → two windows; bias 0.5.
        let p = Pool2x2 {
            h: 2,
            w: 4,
            channels: 1,
            layout: PoolLayout::Chw,
        };
        let y = [1.0, 3.0, -5.0, -6.0, 3.0, 2.0, -7.0, -8.0];
        let (mut out, mut arg) = ([9.0; 2], [9u8; 2]);
        p.forward(&y, &[0.5], &mut out, &mut arg);
        assert_eq!(out, [3.5, 0.0]);
        assert_eq!(arg, [1, CUT]); // tie 3 vs 3: the first wins
        let (mut dy, mut db) = ([9.0; 8], [0.25]);
        p.backward(&[2.0, 7.0], &arg, &mut dy, &mut db);
        assert_eq!(dy, [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(db, [2.25]);
    }

    #[test]
    fn pool_layouts_agree() {
        let (h, w, c_n) = (4, 6, 70); // more channels than one block
        let y = values(h * w * c_n, 5);
        let bias = values(c_n, 6);
        let chw = Pool2x2 {
            h,
            w,
            channels: c_n,
            layout: PoolLayout::Chw,
        };
        let hwc = Pool2x2 {
            layout: PoolLayout::PaddedHwc { pad: 1 },
            ..chw
        };
        let (mut o1, mut a1) = (vec![0.0; chw.out_span()], vec![0u8; chw.out_len()]);
        let (mut o2, mut a2) = (vec![0.0; hwc.out_span()], vec![0u8; hwc.out_len()]);
        chw.forward(&y, &bias, &mut o1, &mut a1);
        hwc.forward(&y, &bias, &mut o2, &mut a2);
        assert_eq!(a1, a2);
        let (oh, ow) = (h / 2, w / 2);
        for i in 0..oh {
            for j in 0..ow {
                for c in 0..c_n {
                    let v = o1[(c * oh + i) * ow + j];
                    assert_eq!(v, o2[((i + 1) * (ow + 2) + j + 1) * c_n + c]);
                    let win = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(a, b)| y[((2 * i + a) * w + 2 * j + b) * c_n + c] + bias[c]);
                    let m = win.iter().fold(0.0f32, |m, v| m.max(*v));
                    assert_eq!(v, m);
                }
            }
        }
        let g = values(chw.out_len(), 7);
        let mut g2 = vec![0.0; hwc.out_span()];
        for i in 0..oh {
            for j in 0..ow {
                for c in 0..c_n {
                    g2[((i + 1) * (ow + 2) + j + 1) * c_n + c] = g[(c * oh + i) * ow + j];
                }
            }
        }
        let (mut d1, mut b1) = (vec![9.0; h * w * c_n], vec![0.0; c_n]);
        let (mut d2, mut b2) = (vec![9.0; h * w * c_n], vec![0.0; c_n]);
        chw.backward(&g, &a1, &mut d1, &mut b1);
        hwc.backward(&g2, &a2, &mut d2, &mut b2);
        assert_eq!(d1, d2);
        assert_eq!(b1, b2);
        assert_eq!(
            d1.iter().filter(|v| **v != 0.0).count(),
            a1.iter().filter(|a| **a < CUT).count()
        );
    }
}
