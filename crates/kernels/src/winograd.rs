//! Winograd minimal filtering F(2×2, 5×5) for a stride-1 "same" 5×5 convolution on
//! channels-last images (docs/arch/0014-fast-layers.md): the transforms around the
//! 36 small GEMMs that replace the convolution's one large one.
//!
//! For a 6×6 input tile `d` and a 5×5 filter `g`, the 2×2 output tile of the
//! correlation is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray 2016), with the points
//! 0, ±1, ±2, ∞:
//!
//! ```text
//! Aᵀ = [1  1  1  1  1  0]     G = [1/4    0     0    0    0 ]     Bᵀ = [4  0 −5  0  1  0]
//!      [0  1 −1  2 −2  1]         [1/6  1/6   1/6  1/6  1/6 ]          [0  4  4 −1 −1  0]
//!                                 [1/6 −1/6   1/6 −1/6  1/6 ]          [0 −4  4  1 −1  0]
//!                                 [1/24 1/12  1/6  1/3  2/3 ]          [0 −2 −1  2  1  0]
//!                                 [1/24 −1/12 1/6 −1/3  2/3 ]          [0  2 −1 −2  1  0]
//!                                 [0    0     0    0    1   ]          [0  4  0 −5  0  1]
//! ```
//!
//! (the transpose of Toom–Cook linear convolution at those points, with the
//! interpolation's denominators moved into `G` so that `Bᵀ` is integer). Summed over
//! input channels, the elementwise products become, for each of the 36 positions `ξν`
//! of a tile, one GEMM `M_ξν[tiles, O] = V_ξν[tiles, C] · U_ξν[C, O]` — 36·C·O
//! multiplications per 4 outputs instead of 100·C·O, 2.8× fewer.
//!
//! Layouts: an image is HWC (`h × w × C`, h and w even) and its padded form has 2 zeros
//! on each side (`(h+4) × (w+4) × C`, as [`crate::nhwc::SameConv`]); tile `(i, j)` reads
//! padded rows `2i..2i+6` and columns `2j..2j+6` and produces output rows `2i, 2i+1`,
//! columns `2j, 2j+1`. The transformed data are 36 row-major matrices, position-major:
//! `V[ξν][tile][c]`, `M[ξν][tile][o]`, `U[ξν][c][o]`, with `rows` tiles per matrix (a
//! group of images, `tiles()` each, the image's first tile at row `t0`).
//!
//! The backward pass uses the **adjoints** of the same linear maps (gradients are those
//! of the computation performed, exactly): `dM = A dY Aᵀ`, `dU_ξν = V_ξνᵀ·dM_ξν`,
//! `dV_ξν = dM_ξν·U_ξνᵀ`, `dd = B dV Bᵀ` (scattered back into the overlapping tiles of
//! the padded input gradient) and `dg = Gᵀ dU G`.
//!
//! Every transform works on chunks of 16 channels held in local arrays (straight
//! vector code inside [`crate::simd::simd`]) in a fixed order of operations, so results
//! do not depend on the vector width; overlapping tiles add into the input gradient in
//! tile order.

use crate::simd::simd;
use pulp::Simd;

/// Lanes of one chunk of channels.
const L: usize = 16;
type Lanes = [f32; L];

/// The transform matrix `G` (6 × 5).
const G: [[f32; 5]; 6] = [
    [0.25, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0],
    [1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
];

/// Positions of a transformed tile.
pub const POSITIONS: usize = 36;

/// A stride-1 5×5 convolution with 2 zeros of padding from `channels` to `outputs`
/// channels on `h × w` images (both even), by Winograd F(2×2, 5×5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winograd5 {
    /// Image height (input and output), even.
    pub h: usize,
    /// Image width (input and output), even.
    pub w: usize,
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub outputs: usize,
}

impl Winograd5 {
    /// The geometry; panics unless `h` and `w` are even and every size positive
    /// (callers validate user input before building one).
    pub fn new(h: usize, w: usize, channels: usize, outputs: usize) -> Self {
        assert!(
            h > 0
                && w > 0
                && h.is_multiple_of(2)
                && w.is_multiple_of(2)
                && channels > 0
                && outputs > 0,
            "Winograd5: sizes must be positive and the image even"
        );
        Self {
            h,
            w,
            channels,
            outputs,
        }
    }

    /// 2×2 output tiles per image.
    pub fn tiles(&self) -> usize {
        (self.h / 2) * (self.w / 2)
    }

    /// Values of the transformed filters `U` (`36 × C × O`).
    pub fn filter_len(&self) -> usize {
        POSITIONS * self.channels * self.outputs
    }

    fn padded_w(&self) -> usize {
        self.w + 4
    }

    /// `U = G g Gᵀ` of every (input, output) channel pair from OIHW filters `w`
    /// (`[O, C, 5, 5]`) into `u` (`[36][C][O]`).
    pub fn transform_filters(&self, w: &[f32], u: &mut [f32]) {
        let (c_n, o_n) = (self.channels, self.outputs);
        assert!(w.len() == o_n * c_n * 25 && u.len() == self.filter_len());
        simd(
            #[inline(always)]
            || {
                let mut g = [[0.0f32; L]; 25];
                let mut tmp = [[0.0f32; L]; 30];
                let mut out = [[0.0f32; L]; 36];
                for c in 0..c_n {
                    for o0 in (0..o_n).step_by(L) {
                        let len = L.min(o_n - o0);
                        for l in 0..len {
                            let f = &w[((o0 + l) * c_n + c) * 25..][..25];
                            for (k, v) in f.iter().enumerate() {
                                g[k][l] = *v;
                            }
                        }
                        // tmp[ki][ν] = Σ_kj G[ν][kj] g[ki][kj]; U[ξ][ν] = Σ_ki G[ξ][ki] tmp[ki][ν].
                        for ki in 0..5 {
                            mul_g(&g, ki * 5, 1, &mut tmp, ki * 6, 1);
                        }
                        for nu in 0..6 {
                            mul_g(&tmp, nu, 6, &mut out, nu, 6);
                        }
                        for (k, x) in out.iter().enumerate() {
                            store(&mut u[(k * c_n + c) * o_n + o0..], x, len);
                        }
                    }
                }
            },
        )
    }

    /// The adjoint of [`Winograd5::transform_filters`]: the filters' gradient
    /// `dg = Gᵀ dU G` from `du` (`[36][C][O]`), written into `dw` (OIHW).
    pub fn filter_grad(&self, du: &[f32], dw: &mut [f32]) {
        let (c_n, o_n) = (self.channels, self.outputs);
        assert!(dw.len() == o_n * c_n * 25 && du.len() == self.filter_len());
        simd(
            #[inline(always)]
            || {
                let mut d = [[0.0f32; L]; 36];
                let mut tmp = [[0.0f32; L]; 30];
                let mut out = [[0.0f32; L]; 25];
                for c in 0..c_n {
                    for o0 in (0..o_n).step_by(L) {
                        let len = L.min(o_n - o0);
                        for (k, x) in d.iter_mut().enumerate() {
                            load(x, &du[(k * c_n + c) * o_n + o0..], len);
                        }
                        // tmp[ξ][kj] = Σ_ν G[ν][kj] dU[ξ][ν]; dg[ki][kj] = Σ_ξ G[ξ][ki] tmp[ξ][kj].
                        for xi in 0..6 {
                            mul_gt(&d, xi * 6, 1, &mut tmp, xi * 5, 1);
                        }
                        for kj in 0..5 {
                            mul_gt(&tmp, kj, 5, &mut out, kj, 5);
                        }
                        for l in 0..len {
                            let f = &mut dw[((o0 + l) * c_n + c) * 25..][..25];
                            for (k, v) in f.iter_mut().enumerate() {
                                *v = out[k][l];
                            }
                        }
                    }
                }
            },
        )
    }

    /// `V = Bᵀ d B` of every tile of the padded HWC image `xp` (`(h+4) × (w+4) × C`)
    /// into rows `t0..t0 + tiles()` of the 36 matrices `v` (`[36][rows][C]`).
    pub fn transform_input(&self, xp: &[f32], v: &mut [f32], rows: usize, t0: usize) {
        let c_n = self.channels;
        assert!(xp.len() >= (self.h + 4) * self.padded_w() * c_n && t0 + self.tiles() <= rows);
        assert!(v.len() >= POSITIONS * rows * c_n);
        dispatch(InputTransform {
            g: self,
            xp,
            v,
            rows,
            t0,
        })
    }

    /// The adjoint of [`Winograd5::transform_input`]: adds `B dV Bᵀ` of rows
    /// `t0..t0 + tiles()` of `dv` (`[36][rows][C]`) into the overlapping tiles of the
    /// padded image gradient `dxp` (its border collects the padding's gradient).
    pub fn input_grad_add(&self, dv: &[f32], rows: usize, t0: usize, dxp: &mut [f32]) {
        let c_n = self.channels;
        assert!(dxp.len() >= (self.h + 4) * self.padded_w() * c_n && t0 + self.tiles() <= rows);
        assert!(dv.len() >= POSITIONS * rows * c_n);
        dispatch(InputGrad {
            g: self,
            dv,
            dxp,
            rows,
            t0,
        })
    }

    /// `Y = Aᵀ M A` of rows `t0..t0 + tiles()` of `m` (`[36][rows][O]`) into the HWC
    /// image `y` (`h × w × O`, every value written).
    pub fn transform_output(&self, m: &[f32], rows: usize, t0: usize, y: &mut [f32]) {
        let o_n = self.outputs;
        assert!(y.len() >= self.h * self.w * o_n && t0 + self.tiles() <= rows);
        assert!(m.len() >= POSITIONS * rows * o_n);
        dispatch(OutputTransform {
            g: self,
            m,
            y,
            rows,
            t0,
        })
    }

    /// The adjoint of [`Winograd5::transform_output`]: `dM = A dY Aᵀ` of the HWC image
    /// gradient `dy` into rows `t0..t0 + tiles()` of `dm` (`[36][rows][O]`).
    pub fn output_grad(&self, dy: &[f32], rows: usize, t0: usize, dm: &mut [f32]) {
        let o_n = self.outputs;
        assert!(dy.len() >= self.h * self.w * o_n && t0 + self.tiles() <= rows);
        assert!(dm.len() >= POSITIONS * rows * o_n);
        dispatch(OutputGrad {
            g: self,
            dy,
            dm,
            rows,
            t0,
        })
    }
}

// The tile transforms are written with `pulp`'s explicit vectors (one chunk of
// `S::F32_LANES` channels at a time: 16 with AVX-512, 8 with AVX2, 1 without), so that
// the 6×6 tiles stay in registers; every lane runs the same operations in the same order
// on every instruction set.

/// A transform body, generic over the instruction set.
trait Kernel {
    fn run<S: Simd>(self, s: S);
}

struct Dispatch<K>(K);

impl<K: Kernel> pulp::WithSimd for Dispatch<K> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        self.0.run(s)
    }
}

/// Runs `k` with the best instruction set of this CPU.
#[inline(always)]
fn dispatch<K: Kernel>(k: K) {
    pulp::Arch::new().dispatch(Dispatch(k))
}

/// Calls `f(t, ti, tj, c0, len)` for every tile `t` (row `ti`, column `tj`) and every
/// chunk `c0..c0 + len` of `channels` channels, `len` ≤ `lanes`.
#[inline(always)]
fn for_chunks(
    g: &Winograd5,
    channels: usize,
    lanes: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let tw = g.w / 2;
    for t in 0..g.tiles() {
        for c0 in (0..channels).step_by(lanes) {
            f(t, t / tw, t % tw, c0, lanes.min(channels - c0));
        }
    }
}

struct InputTransform<'a> {
    g: &'a Winograd5,
    xp: &'a [f32],
    v: &'a mut [f32],
    rows: usize,
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for InputTransform<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, xp, v, rows, t0 } = self;
        let (c_n, pw) = (g.channels, g.padded_w());
        for_chunks(g, c_n, S::F32_LANES, |t, ti, tj, c0, len| {
            let mut tmp = [[s.splat_f32s(0.0); 6]; 6];
            for (a, row) in tmp.iter_mut().enumerate() {
                let base = ((2 * ti + a) * pw + 2 * tj) * c_n + c0;
                *row = bt(s, six(|b| vload(s, &xp[base + b * c_n..], len)));
            }
            for nu in 0..6 {
                let out = bt(s, six(|a| tmp[a][nu]));
                for (xi, x) in out.into_iter().enumerate() {
                    let at = ((xi * 6 + nu) * rows + t0 + t) * c_n + c0;
                    vstore(s, &mut v[at..], len, x);
                }
            }
        })
    }
}

struct InputGrad<'a> {
    g: &'a Winograd5,
    dv: &'a [f32],
    dxp: &'a mut [f32],
    rows: usize,
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for InputGrad<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self {
            g,
            dv,
            dxp,
            rows,
            t0,
        } = self;
        let (c_n, pw) = (g.channels, g.padded_w());
        for_chunks(g, c_n, S::F32_LANES, |t, ti, tj, c0, len| {
            // tmp[ξ][b] = Σ_ν Bᵀ[ν][b] dV[ξ][ν]; dd[a][b] = Σ_ξ Bᵀ[ξ][a] tmp[ξ][b].
            let mut tmp = [[s.splat_f32s(0.0); 6]; 6];
            for (xi, row) in tmp.iter_mut().enumerate() {
                *row = b(
                    s,
                    six(|nu| vload(s, &dv[((xi * 6 + nu) * rows + t0 + t) * c_n + c0..], len)),
                );
            }
            for bc in 0..6 {
                let col = b(s, six(|xi| tmp[xi][bc]));
                for (a, x) in col.into_iter().enumerate() {
                    let at = ((2 * ti + a) * pw + 2 * tj + bc) * c_n + c0;
                    let sum = s.add_f32s(vload(s, &dxp[at..], len), x);
                    vstore(s, &mut dxp[at..], len, sum);
                }
            }
        })
    }
}

struct OutputTransform<'a> {
    g: &'a Winograd5,
    m: &'a [f32],
    y: &'a mut [f32],
    rows: usize,
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for OutputTransform<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, m, y, rows, t0 } = self;
        let (o_n, w) = (g.outputs, g.w);
        for_chunks(g, o_n, S::F32_LANES, |t, ti, tj, o0, len| {
            let mut tmp = [[s.splat_f32s(0.0); 2]; 6];
            for (xi, row) in tmp.iter_mut().enumerate() {
                *row = at(
                    s,
                    six(|nu| vload(s, &m[((xi * 6 + nu) * rows + t0 + t) * o_n + o0..], len)),
                );
            }
            for j in 0..2 {
                let col = at(s, six(|xi| tmp[xi][j]));
                for (i, x) in col.into_iter().enumerate() {
                    let dst = ((2 * ti + i) * w + 2 * tj + j) * o_n + o0;
                    vstore(s, &mut y[dst..], len, x);
                }
            }
        })
    }
}

struct OutputGrad<'a> {
    g: &'a Winograd5,
    dy: &'a [f32],
    dm: &'a mut [f32],
    rows: usize,
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for OutputGrad<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self {
            g,
            dy,
            dm,
            rows,
            t0,
        } = self;
        let (o_n, w) = (g.outputs, g.w);
        for_chunks(g, o_n, S::F32_LANES, |t, ti, tj, o0, len| {
            // e[i][ν] = Σ_j A[ν][j] g[i][j]; dM[ξ][ν] = Σ_i A[ξ][i] e[i][ν].
            let (r0, r1) = (
                ((2 * ti) * w + 2 * tj) * o_n + o0,
                ((2 * ti + 1) * w + 2 * tj) * o_n + o0,
            );
            let e = [
                a(
                    s,
                    [vload(s, &dy[r0..], len), vload(s, &dy[r0 + o_n..], len)],
                ),
                a(
                    s,
                    [vload(s, &dy[r1..], len), vload(s, &dy[r1 + o_n..], len)],
                ),
            ];
            for nu in 0..6 {
                let col = a(s, [e[0][nu], e[1][nu]]);
                for (xi, x) in col.into_iter().enumerate() {
                    let at = ((xi * 6 + nu) * rows + t0 + t) * o_n + o0;
                    vstore(s, &mut dm[at..], len, x);
                }
            }
        })
    }
}

/// `[f(0), …, f(5)]`.
#[inline(always)]
fn six<T>(mut f: impl FnMut(usize) -> T) -> [T; 6] {
    [f(0), f(1), f(2), f(3), f(4), f(5)]
}

/// The `len` (≤ one vector) values at the start of `src` as a vector (a plain load for a
/// full vector).
#[inline(always)]
fn vload<S: Simd>(s: S, src: &[f32], len: usize) -> S::f32s {
    if len == S::F32_LANES {
        S::as_simd_f32s(&src[..len]).0[0]
    } else {
        s.partial_load_f32s(&src[..len])
    }
}

/// Writes the first `len` lanes of `x` to the start of `dst`.
#[inline(always)]
fn vstore<S: Simd>(s: S, dst: &mut [f32], len: usize, x: S::f32s) {
    if len == S::F32_LANES {
        S::as_mut_simd_f32s(&mut dst[..len]).0[0] = x;
    } else {
        s.partial_store_f32s(&mut dst[..len], x);
    }
}

/// `Bᵀ d` (6 from 6).
#[inline(always)]
fn bt<S: Simd>(s: S, d: [S::f32s; 6]) -> [S::f32s; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    let (two, four, five) = (s.splat_f32s(2.0), s.splat_f32s(4.0), s.splat_f32s(5.0));
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    [
        add(sub(mul(four, d0), mul(five, d2)), d4),
        sub(mul(four, add(d1, d2)), add(d3, d4)),
        add(mul(four, sub(d2, d1)), sub(d3, d4)),
        add(mul(two, sub(d3, d1)), sub(d4, d2)),
        add(mul(two, sub(d1, d3)), sub(d4, d2)),
        add(sub(mul(four, d1), mul(five, d3)), d5),
    ]
}

/// `B e = (Bᵀ)ᵀ e` (the adjoint of [`bt`]).
#[inline(always)]
fn b<S: Simd>(s: S, e: [S::f32s; 6]) -> [S::f32s; 6] {
    let [e0, e1, e2, e3, e4, e5] = e;
    let (two, four, five) = (s.splat_f32s(2.0), s.splat_f32s(4.0), s.splat_f32s(5.0));
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    [
        mul(four, e0),
        add(
            add(mul(four, sub(e1, e2)), mul(two, sub(e4, e3))),
            mul(four, e5),
        ),
        sub(sub(mul(four, add(e1, e2)), mul(five, e0)), add(e3, e4)),
        sub(add(sub(e2, e1), mul(two, sub(e3, e4))), mul(five, e5)),
        add(sub(e0, add(e1, e2)), add(e3, e4)),
        e5,
    ]
}

/// `Aᵀ m` (2 from 6).
#[inline(always)]
fn at<S: Simd>(s: S, m: [S::f32s; 6]) -> [S::f32s; 2] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (add, sub) = (|x, y| s.add_f32s(x, y), |x, y| s.sub_f32s(x, y));
    let two = s.splat_f32s(2.0);
    [
        add(add(m0, add(m1, m2)), add(m3, m4)),
        add(add(sub(m1, m2), s.mul_f32s(two, sub(m3, m4))), m5),
    ]
}

/// `A g` (6 from 2; the adjoint of [`at`]).
#[inline(always)]
fn a<S: Simd>(s: S, g: [S::f32s; 2]) -> [S::f32s; 6] {
    let [g0, g1] = g;
    let g2 = s.mul_f32s(s.splat_f32s(2.0), g1);
    [
        g0,
        s.add_f32s(g0, g1),
        s.sub_f32s(g0, g1),
        s.add_f32s(g0, g2),
        s.sub_f32s(g0, g2),
        g1,
    ]
}

/// `dst ← src[..len]` (a full chunk by one fixed-size copy).
#[inline(always)]
fn load(dst: &mut Lanes, src: &[f32], len: usize) {
    if len == L {
        *dst = src[..L].try_into().expect("L values");
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// `dst[..len] ← src`.
#[inline(always)]
fn store(dst: &mut [f32], src: &Lanes, len: usize) {
    if len == L {
        let d: &mut Lanes = (&mut dst[..L]).try_into().expect("L values");
        *d = *src;
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// `G x` (6 from 5).
#[inline(always)]
fn mul_g(x: &[Lanes], o: usize, s: usize, y: &mut [Lanes], p: usize, t: usize) {
    for l in 0..L {
        let v: [f32; 5] = std::array::from_fn(|k| x[o + k * s][l]);
        for (r, row) in G.iter().enumerate() {
            let mut acc = 0.0f32;
            for (gk, vk) in row.iter().zip(&v) {
                acc += gk * vk;
            }
            y[p + r * t][l] = acc;
        }
    }
}

/// `Gᵀ x` (5 from 6; the adjoint of [`mul_g`]).
#[inline(always)]
fn mul_gt(x: &[Lanes], o: usize, s: usize, y: &mut [Lanes], p: usize, t: usize) {
    for l in 0..L {
        let v: [f32; 6] = std::array::from_fn(|k| x[o + k * s][l]);
        for k in 0..5 {
            let mut acc = 0.0f32;
            for (row, vr) in G.iter().zip(&v) {
                acc += row[k] * vr;
            }
            y[p + k * t][l] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sgemm, MatMut, MatRef};

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

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// A padded HWC image (zero border) of random values.
    fn padded(g: &Winograd5, seed: u64) -> Vec<f32> {
        let (ph, pw, c) = (g.h + 4, g.w + 4, g.channels);
        let mut x = values(ph * pw * c, seed);
        for i in 0..ph {
            for j in 0..pw {
                if i < 2 || j < 2 || i >= g.h + 2 || j >= g.w + 2 {
                    x[(i * pw + j) * c..][..c].fill(0.0);
                }
            }
        }
        x
    }

    /// The whole convolution: transforms + 36 GEMMs.
    fn conv(g: &Winograd5, xp: &[f32], w: &[f32]) -> Vec<f32> {
        let (c, o, t) = (g.channels, g.outputs, g.tiles());
        let (mut u, mut v, mut m) = (
            vec![0.0; g.filter_len()],
            vec![0.0; POSITIONS * t * c],
            vec![0.0; POSITIONS * t * o],
        );
        g.transform_filters(w, &mut u);
        g.transform_input(xp, &mut v, t, 0);
        for k in 0..POSITIONS {
            sgemm(
                MatMut::row_major(&mut m[k * t * o..][..t * o], t, o, o),
                MatRef::row_major(&v[k * t * c..][..t * c], t, c, c),
                MatRef::row_major(&u[k * c * o..][..c * o], c, o, o),
                false,
                1,
            );
        }
        let mut y = vec![0.0; g.h * g.w * o];
        g.transform_output(&m, t, 0, &mut y);
        y
    }

    #[test]
    fn the_transforms_compute_the_convolution() {
        for (h, w, c, o) in [(14, 14, 32, 64), (4, 6, 3, 5), (2, 2, 17, 1)] {
            let g = Winograd5::new(h, w, c, o);
            let xp = padded(&g, 1);
            let wt = values(o * c * 25, 2);
            let y = conv(&g, &xp, &wt);
            let pw = w + 4;
            // Relative L2 error against the exact (f64) convolution, and that of a
            // direct f32 summation for scale.
            let (mut err, mut err_direct, mut norm) = (0.0f64, 0.0f64, 0.0f64);
            for i in 0..h {
                for j in 0..w {
                    for oc in 0..o {
                        let (mut s, mut s32) = (0.0f64, 0.0f32);
                        for ci in 0..c {
                            for ki in 0..5 {
                                for kj in 0..5 {
                                    let x = xp[((i + ki) * pw + j + kj) * c + ci];
                                    let f = wt[((oc * c + ci) * 5 + ki) * 5 + kj];
                                    s += x as f64 * f as f64;
                                    s32 += x * f;
                                }
                            }
                        }
                        let got = y[(i * w + j) * o + oc] as f64;
                        err += (got - s).powi(2);
                        err_direct += (s32 as f64 - s).powi(2);
                        norm += s * s;
                    }
                }
            }
            let (err, err_direct) = ((err / norm).sqrt(), (err_direct / norm).sqrt());
            eprintln!("{h}×{w}, {c}→{o}: Winograd {err:.2e}, direct f32 {err_direct:.2e}");
            assert!(
                err < 5e-6,
                "{h}×{w}, {c}→{o}: relative error {err:e} (direct {err_direct:e})"
            );
        }
    }

    /// ⟨T x, y⟩ = ⟨x, Tᵀ y⟩ for every transform and its adjoint.
    #[test]
    fn the_backward_transforms_are_the_adjoints() {
        let g = Winograd5::new(6, 4, 19, 21);
        let (c, o, t) = (g.channels, g.outputs, g.tiles());
        let rows = t + 3;
        // Filters.
        let (w, du) = (values(o * c * 25, 3), values(g.filter_len(), 4));
        let (mut u, mut dw) = (vec![0.0; g.filter_len()], vec![0.0; o * c * 25]);
        g.transform_filters(&w, &mut u);
        g.filter_grad(&du, &mut dw);
        let (l, r) = (dot(&u, &du), dot(&w, &dw));
        assert!((l - r).abs() < 1e-4 * (1.0 + l.abs()), "filters {l} vs {r}");
        // Input (into rows 2.. of `rows`).
        let xp = values((g.h + 4) * (g.w + 4) * c, 5);
        let dv = values(POSITIONS * rows * c, 6);
        let mut v = vec![0.0; POSITIONS * rows * c];
        g.transform_input(&xp, &mut v, rows, 2);
        let mut dxp = vec![0.0; xp.len()];
        g.input_grad_add(&dv, rows, 2, &mut dxp);
        let used: f64 = (0..POSITIONS)
            .map(|k| {
                let r = (k * rows + 2) * c..(k * rows + 2 + t) * c;
                dot(&v[r.clone()], &dv[r])
            })
            .sum();
        let r = dot(&xp, &dxp);
        assert!(
            (used - r).abs() < 1e-3 * (1.0 + used.abs()),
            "input {used} vs {r}"
        );
        // Output.
        let m = values(POSITIONS * rows * o, 7);
        let dy = values(g.h * g.w * o, 8);
        let mut y = vec![0.0; g.h * g.w * o];
        g.transform_output(&m, rows, 1, &mut y);
        let mut dm = vec![0.0; POSITIONS * rows * o];
        g.output_grad(&dy, rows, 1, &mut dm);
        let (l, r) = (dot(&y, &dy), dot(&m, &dm));
        assert!((l - r).abs() < 1e-3 * (1.0 + l.abs()), "output {l} vs {r}");
    }
}
