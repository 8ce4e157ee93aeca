//! Winograd minimal filtering F(4×4, 5×5) for a stride-1 "same" 5×5 convolution on
//! channels-last images (docs/arch/0027-winograd-f4x4.md): the transforms around the 64
//! small GEMMs that replace the convolution's one large one. It replaced F(2×2, 5×5)
//! (docs/arch/0014-fast-layers.md): 64 multiplications per 16 outputs instead of 36 per
//! 4, 1.72× fewer on a 14×14 image (whose 4×4 tiles cover 16×16).
//!
//! For an 8×8 input tile `d` and a 5×5 filter `g`, the 4×4 output tile of the
//! correlation is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray 2016), with the points
//! 0, ±1, ±2, ±1/2, ∞ (the transpose of Toom–Cook linear convolution at those points,
//! the interpolation's denominators moved into `G` so that `Bᵀ` is integer):
//!
//! ```text
//! Aᵀ = [1 1  1 1  1  1    1    0]    Bᵀ = [4  0 −21   0  21   0 −4 0]
//!      [0 1 −1 2 −2  1/2 −1/2  0]         [0 −4  −4  17  17  −4 −4 0]
//!      [0 1  1 4  4  1/4  1/4  0]         [0  4  −4 −17  17   4 −4 0]
//!      [0 1 −1 8 −8  1/8 −1/8  1]         [0  2   1 −10  −5   8  4 0]
//!                                         [0 −2   1  10  −5  −8  4 0]
//! G = [1/4    0      0     0     0  ]     [0  4   8  −5 −10   1  2 0]
//!     [1/18   1/18   1/18  1/18  1/18]    [0 −4   8   5 −10  −1  2 0]
//!     [1/18  −1/18   1/18 −1/18  1/18]    [0 −4   0  21   0 −21  0 4]
//!     [1/360  1/180  1/90  1/45  2/45]
//!     [1/360 −1/180  1/90 −1/45  2/45]
//!     [16/45  8/45   4/45  2/45  1/45]
//!     [16/45 −8/45   4/45 −2/45  1/45]
//!     [0      0      0     0     1/4 ]
//! ```
//!
//! (`scripts/winograd/f4x4_5x5.py` derives these with exact rationals and checks the
//! identity symbolically.) Summed over input channels, the elementwise products become,
//! for each of the 64 positions `ξν` of a tile, one GEMM
//! `M_ξν[tiles, O] = V_ξν[tiles, C] · U_ξν[C, O]`.
//!
//! Layouts: an image is HWC (`h × w × C`, h and w
//! even) and its padded form has 2 zeros on each side (`(h+4) × (w+4) × C`, as
//! [`crate::nhwc::SameConv`]). Tile `(i, j)` reads padded rows `4i..4i+8` and columns
//! `4j..4j+8` and produces output rows `4i..4i+4`, columns `4j..4j+4`; where `h` or `w`
//! is not a multiple of 4 the last tiles reach past the padded image: the values there
//! are read as zeros and the outputs there are dropped (and, backward, their gradients
//! are zero). The transformed data of a tile are contiguous — `V[tile][ξν][c]`,
//! `M[tile][ξν][o]` (a group of images, `tiles()` each, the image's first tile at tile
//! `t0`) — so each transform reads and writes one block per tile; the GEMM of position
//! `ξν` reads its matrix `V_ξν[tiles, C]` with a row stride of `64·C`. The filters are
//! position-major, `U[ξν][c][o]`.
//!
//! The backward pass uses the **adjoints** of the same linear maps, so the gradients are
//! those of the computation performed: `dM = A dY Aᵀ`, `dU_ξν = V_ξνᵀ·dM_ξν`,
//! `dV_ξν = dM_ξν·U_ξνᵀ`, `dd = B dV Bᵀ` (added into the overlapping tiles of the padded
//! input gradient) and `dg = Gᵀ dU G`. Every transform runs a fixed sequence of
//! operations on chunks of channels, so results do not depend on the vector width.

use crate::nhwc::pool_window;
use crate::simd::simd;
use pulp::Simd;

/// Runs the body for every tile `t` (row `ti`, column `tj`) and every chunk
/// `c0..c0 + len` of `channels` channels, `len` ≤ `lanes` — a macro, not a function
/// taking a closure, for the reason given at `four!`.
macro_rules! for_chunks {
    ($g:expr, $channels:expr, $lanes:expr, |$t:ident, $ti:ident, $tj:ident, $c0:ident, $len:ident| $body:block) => {{
        let g: &Winograd4x5 = $g;
        let (channels, lanes) = ($channels, $lanes);
        let (_, tw) = g.tile_grid();
        for $t in 0..g.tiles() {
            let ($ti, $tj) = ($t / tw, $t % tw);
            for $c0 in (0..channels).step_by(lanes) {
                let $len = lanes.min(channels - $c0);
                $body
            }
        }
    }};
}

/// `[e(0), …, e(3)]`, the index bound to `$i` in each copy of the expression — a macro,
/// not a closure: a closure does not inherit the vector code's target features, and a
/// large one was called (with a `vzeroupper`) instead of inlined.
macro_rules! four {
    ($i:ident => $e:expr) => {
        [
            {
                let $i = 0usize;
                $e
            },
            {
                let $i = 1usize;
                $e
            },
            {
                let $i = 2usize;
                $e
            },
            {
                let $i = 3usize;
                $e
            },
        ]
    };
}

/// `[e(0), …, e(7)]`, as `four!`.
macro_rules! eight {
    ($i:ident => $e:expr) => {{
        let [x0, x1, x2, x3] = four!($i => $e);
        let [x4, x5, x6, x7] = four!(j => {
            let $i = j + 4;
            $e
        });
        [x0, x1, x2, x3, x4, x5, x6, x7]
    }};
}

/// Lanes of one chunk of channels in the filter transforms.
const L: usize = 16;
type Lanes = [f32; L];

/// Points of the 1-D transform (input tile width).
const A: usize = 8;

/// Positions of a transformed tile.
pub const POSITIONS: usize = A * A;

/// The transform matrix `G` (8 × 5).
const G: [[f32; 5]; 8] = [
    [0.25, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0, 1.0 / 18.0],
    [1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0],
    [1.0 / 360.0, 1.0 / 180.0, 1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0],
    [
        1.0 / 360.0,
        -1.0 / 180.0,
        1.0 / 90.0,
        -1.0 / 45.0,
        2.0 / 45.0,
    ],
    [16.0 / 45.0, 8.0 / 45.0, 4.0 / 45.0, 2.0 / 45.0, 1.0 / 45.0],
    [
        16.0 / 45.0,
        -8.0 / 45.0,
        4.0 / 45.0,
        -2.0 / 45.0,
        1.0 / 45.0,
    ],
    [0.0, 0.0, 0.0, 0.0, 0.25],
];

/// A stride-1 5×5 convolution with 2 zeros of padding from `channels` to `outputs`
/// channels on `h × w` images (both even), by Winograd F(4×4, 5×5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winograd4x5 {
    /// Image height (input and output), even.
    pub h: usize,
    /// Image width (input and output), even.
    pub w: usize,
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub outputs: usize,
}

impl Winograd4x5 {
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
            "Winograd4x5: sizes must be positive and the image even"
        );
        Self {
            h,
            w,
            channels,
            outputs,
        }
    }

    /// 4×4 output tiles per row of tiles and per column.
    fn tile_grid(&self) -> (usize, usize) {
        (self.h.div_ceil(4), self.w.div_ceil(4))
    }

    /// 4×4 output tiles per image (the last row and column may reach past it).
    pub fn tiles(&self) -> usize {
        let (th, tw) = self.tile_grid();
        th * tw
    }

    /// Values of the transformed filters `U` (`64 × C × O`).
    pub fn filter_len(&self) -> usize {
        POSITIONS * self.channels * self.outputs
    }

    fn padded(&self) -> (usize, usize) {
        (self.h + 4, self.w + 4)
    }

    /// `U = G g Gᵀ` of every (input, output) channel pair from OIHW filters `w`
    /// (`[O, C, 5, 5]`) into `u` (`[64][C][O]`).
    pub fn transform_filters(&self, w: &[f32], u: &mut [f32]) {
        let (c_n, o_n) = (self.channels, self.outputs);
        assert!(w.len() == o_n * c_n * 25 && u.len() == self.filter_len());
        simd(
            #[inline(always)]
            || {
                let mut g = [[0.0f32; L]; 25];
                let mut tmp = [[0.0f32; L]; 40];
                let mut out = [[0.0f32; L]; 64];
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
                            mul_g(&g, ki * 5, 1, &mut tmp, ki * A, 1);
                        }
                        for nu in 0..A {
                            mul_g(&tmp, nu, A, &mut out, nu, A);
                        }
                        for (k, x) in out.iter().enumerate() {
                            store(&mut u[(k * c_n + c) * o_n + o0..], x, len);
                        }
                    }
                }
            },
        )
    }

    /// The adjoint of [`Winograd4x5::transform_filters`]: the filters' gradient
    /// `dg = Gᵀ dU G` from `du` (`[64][C][O]`), written into `dw` (OIHW).
    pub fn filter_grad(&self, du: &[f32], dw: &mut [f32]) {
        let (c_n, o_n) = (self.channels, self.outputs);
        assert!(dw.len() == o_n * c_n * 25 && du.len() == self.filter_len());
        simd(
            #[inline(always)]
            || {
                let mut d = [[0.0f32; L]; 64];
                let mut tmp = [[0.0f32; L]; 40];
                let mut out = [[0.0f32; L]; 25];
                for c in 0..c_n {
                    for o0 in (0..o_n).step_by(L) {
                        let len = L.min(o_n - o0);
                        for (k, x) in d.iter_mut().enumerate() {
                            load(x, &du[(k * c_n + c) * o_n + o0..], len);
                        }
                        // tmp[ξ][kj] = Σ_ν G[ν][kj] dU[ξ][ν]; dg[ki][kj] = Σ_ξ G[ξ][ki] tmp[ξ][kj].
                        for xi in 0..A {
                            mul_gt(&d, xi * A, 1, &mut tmp, xi * 5, 1);
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
    /// into tiles `t0..t0 + tiles()` of `v` (`[tiles][64][C]`).
    pub fn transform_input(&self, xp: &[f32], v: &mut [f32], t0: usize) {
        let (ph, pw) = self.padded();
        let c_n = self.channels;
        assert!(xp.len() >= ph * pw * c_n);
        assert!(v.len() >= POSITIONS * (t0 + self.tiles()) * c_n);
        dispatch(InputTransform { g: self, xp, v, t0 })
    }

    /// The adjoint of [`Winograd4x5::transform_input`]: adds `B dV Bᵀ` of tiles
    /// `t0..t0 + tiles()` of `dv` (`[tiles][64][C]`) into the overlapping tiles of the
    /// padded image gradient `dxp` (its border collects the padding's gradient; what
    /// falls past the padded image is dropped).
    pub fn input_grad_add(&self, dv: &[f32], t0: usize, dxp: &mut [f32]) {
        let (ph, pw) = self.padded();
        let c_n = self.channels;
        assert!(dxp.len() >= ph * pw * c_n);
        assert!(dv.len() >= POSITIONS * (t0 + self.tiles()) * c_n);
        dispatch(InputGrad {
            g: self,
            dv,
            dxp,
            t0,
        })
    }

    /// `Y = Aᵀ M A` of tiles `t0..t0 + tiles()` of `m` (`[tiles][64][O]`) into the HWC
    /// image `y` (`h × w × O`, every value written).
    pub fn transform_output(&self, m: &[f32], t0: usize, y: &mut [f32]) {
        let o_n = self.outputs;
        assert!(y.len() >= self.h * self.w * o_n);
        assert!(m.len() >= POSITIONS * (t0 + self.tiles()) * o_n);
        dispatch(OutputTransform { g: self, m, y, t0 })
    }

    /// The adjoint of [`Winograd4x5::transform_output`]: `dM = A dY Aᵀ` of the HWC image
    /// gradient `dy` into tiles `t0..t0 + tiles()` of `dm` (`[tiles][64][O]`).
    pub fn output_grad(&self, dy: &[f32], t0: usize, dm: &mut [f32]) {
        let o_n = self.outputs;
        assert!(dy.len() >= self.h * self.w * o_n);
        assert!(dm.len() >= POSITIONS * (t0 + self.tiles()) * o_n);
        dispatch(OutputGrad {
            g: self,
            dy,
            dm,
            t0,
        })
    }

    /// [`Winograd4x5::transform_output`] fused with [`crate::Pool2x2`]'s bias + ReLU +
    /// 2×2 max-pooling in its CHW layout: `out[c][i][j] = max(0, max over the window of
    /// y + bias[c])` (`out`: `outputs × h/2 × w/2`, the fully connected layer's input)
    /// and the winner codes `arg` (`[h/2][w/2][outputs]`, the codes of
    /// [`crate::Pool2x2::forward`]) — the same values, bit for bit, as the two passes,
    /// without writing the convolution's output image: each 4×4 output tile holds
    /// exactly four pooling windows (or two, or one, where it reaches past the image).
    pub fn transform_output_pool(
        &self,
        m: &[f32],
        t0: usize,
        bias: &[f32],
        out: &mut [f32],
        arg: &mut [u8],
    ) {
        let o_n = self.outputs;
        let pooled = (self.h / 2) * (self.w / 2) * o_n;
        assert!(bias.len() == o_n && out.len() >= pooled && arg.len() >= pooled);
        assert!(m.len() >= POSITIONS * (t0 + self.tiles()) * o_n);
        dispatch(OutputPool {
            g: self,
            m,
            t0,
            bias,
            out,
            arg,
        })
    }
}

// The tile transforms are written with `pulp`'s explicit vectors (one chunk of
// `S::F32_LANES` channels at a time); every lane runs the same operations in the same
// order on every instruction set.

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

struct InputTransform<'a> {
    g: &'a Winograd4x5,
    xp: &'a [f32],
    v: &'a mut [f32],
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for InputTransform<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, xp, v, t0 } = self;
        let ((ph, pw), c_n) = (g.padded(), g.channels);
        let zero = s.splat_f32s(0.0);
        for_chunks!(g, c_n, S::F32_LANES, |t, ti, tj, c0, len| {
            let (r0, q0) = (4 * ti, 4 * tj);
            // Built row by row (rows past the padded image are zeros), not zeroed first:
            // a zeroed 8×8 array of vectors was a 4 KB `memset` per tile and chunk.
            let tmp = eight!(a => {
                if r0 + a < ph {
                    let base = ((r0 + a) * pw + q0) * c_n + c0;
                    bt(
                        s,
                        eight!(b => {
                            if q0 + b < pw {
                                vload(s, &xp[base + b * c_n..], len)
                            } else {
                                zero
                            }
                        }),
                    )
                } else {
                    [zero; A]
                }
            });
            let vt = &mut v[(t0 + t) * POSITIONS * c_n..][..POSITIONS * c_n];
            for nu in 0..A {
                let out = bt(s, eight!(a => tmp[a][nu]));
                for (xi, x) in out.into_iter().enumerate() {
                    vstore(s, &mut vt[(xi * A + nu) * c_n + c0..], len, x);
                }
            }
        })
    }
}

struct InputGrad<'a> {
    g: &'a Winograd4x5,
    dv: &'a [f32],
    dxp: &'a mut [f32],
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for InputGrad<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, dv, dxp, t0 } = self;
        let ((ph, pw), c_n) = (g.padded(), g.channels);
        for_chunks!(g, c_n, S::F32_LANES, |t, ti, tj, c0, len| {
            let (r0, q0) = (4 * ti, 4 * tj);
            // tmp[ξ][b] = Σ_ν Bᵀ[ν][b] dV[ξ][ν]; dd[a][b] = Σ_ξ Bᵀ[ξ][a] tmp[ξ][b].
            let dvt = &dv[(t0 + t) * POSITIONS * c_n..][..POSITIONS * c_n];
            let tmp = eight!(xi => {
                b(
                    s,
                    eight!(nu => vload(s, &dvt[(xi * A + nu) * c_n + c0..], len)),
                )
            });
            for bc in 0..A {
                if q0 + bc >= pw {
                    break;
                }
                let col = b(s, eight!(xi => tmp[xi][bc]));
                for (a, x) in col.into_iter().enumerate() {
                    if r0 + a >= ph {
                        break;
                    }
                    let at = ((r0 + a) * pw + q0 + bc) * c_n + c0;
                    let sum = s.add_f32s(vload(s, &dxp[at..], len), x);
                    vstore(s, &mut dxp[at..], len, sum);
                }
            }
        })
    }
}

struct OutputTransform<'a> {
    g: &'a Winograd4x5,
    m: &'a [f32],
    y: &'a mut [f32],
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for OutputTransform<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, m, y, t0 } = self;
        let (o_n, h, w) = (g.outputs, g.h, g.w);
        for_chunks!(g, o_n, S::F32_LANES, |t, ti, tj, o0, len| {
            let (r0, q0) = (4 * ti, 4 * tj);
            let mt = &m[(t0 + t) * POSITIONS * o_n..][..POSITIONS * o_n];
            let tmp = eight!(xi => {
                at(
                    s,
                    eight!(nu => vload(s, &mt[(xi * A + nu) * o_n + o0..], len)),
                )
            });
            for j in 0..4 {
                if q0 + j >= w {
                    break;
                }
                let col = at(s, eight!(xi => tmp[xi][j]));
                for (i, x) in col.into_iter().enumerate() {
                    if r0 + i >= h {
                        break;
                    }
                    let dst = ((r0 + i) * w + q0 + j) * o_n + o0;
                    vstore(s, &mut y[dst..], len, x);
                }
            }
        })
    }
}

struct OutputGrad<'a> {
    g: &'a Winograd4x5,
    dy: &'a [f32],
    dm: &'a mut [f32],
    t0: usize,
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for OutputGrad<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, dy, dm, t0 } = self;
        let (o_n, h, w) = (g.outputs, g.h, g.w);
        let zero = s.splat_f32s(0.0);
        for_chunks!(g, o_n, S::F32_LANES, |t, ti, tj, o0, len| {
            let (r0, q0) = (4 * ti, 4 * tj);
            // e[i][ν] = Σ_j A[ν][j] dY[i][j]; dM[ξ][ν] = Σ_i A[ξ][i] e[i][ν].
            // Built row by row (rows past the image are zeros), not zeroed first; the
            // loads by `four`, not `[_; 4].map` (whose closure was not inlined into the
            // vector code: a call and a `vzeroupper` per load).
            let e = four!(i => {
                if r0 + i < h {
                    let base = ((r0 + i) * w + q0) * o_n + o0;
                    a(
                        s,
                        four!(j => {
                            if q0 + j < w {
                                vload(s, &dy[base + j * o_n..], len)
                            } else {
                                zero
                            }
                        }),
                    )
                } else {
                    [zero; A]
                }
            });
            let dmt = &mut dm[(t0 + t) * POSITIONS * o_n..][..POSITIONS * o_n];
            for nu in 0..A {
                let col = a(s, four!(i => e[i][nu]));
                for (xi, x) in col.into_iter().enumerate() {
                    vstore(s, &mut dmt[(xi * A + nu) * o_n + o0..], len, x);
                }
            }
        })
    }
}

/// Channels of one chunk at most (`pulp`'s widest vector, AVX-512).
const MAX_LANES: usize = 16;

struct OutputPool<'a> {
    g: &'a Winograd4x5,
    m: &'a [f32],
    t0: usize,
    bias: &'a [f32],
    out: &'a mut [f32],
    arg: &'a mut [u8],
}

// Tiles are indexed by row and by column: index loops read better here.
#[allow(clippy::needless_range_loop)]
impl Kernel for OutputPool<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self {
            g,
            m,
            t0,
            bias,
            out,
            arg,
        } = self;
        let (o_n, h, w) = (g.outputs, g.h, g.w);
        let (oh, ow) = (h / 2, w / 2);
        assert!(S::F32_LANES <= MAX_LANES);
        // The output tile, `y[i·4 + j]` the chunk's values at row r0 + i, column q0 + j:
        // one buffer for every tile (zeroed per tile it cost a 1 KB `memset` each, 0.65 %
        // of the W-CNN run); a pooling window reads only values its tile wrote.
        let mut y = [[0.0f32; MAX_LANES]; 16];
        for_chunks!(g, o_n, S::F32_LANES, |t, ti, tj, o0, len| {
            let (r0, q0) = (4 * ti, 4 * tj);
            let mt = &m[(t0 + t) * POSITIONS * o_n..][..POSITIONS * o_n];
            let tmp = eight!(xi => {
                at(
                    s,
                    eight!(nu => vload(s, &mt[(xi * A + nu) * o_n + o0..], len)),
                )
            });
            for j in 0..4 {
                if q0 + j >= w {
                    break;
                }
                let col = at(s, eight!(xi => tmp[xi][j]));
                for (i, x) in col.into_iter().enumerate() {
                    if r0 + i >= h {
                        break;
                    }
                    vstore(s, &mut y[i * 4 + j], len, x);
                }
            }
            for pi in 0..2 {
                let pr = 2 * ti + pi;
                if pr >= oh {
                    break;
                }
                for pj in 0..2 {
                    let pc = 2 * tj + pj;
                    if pc >= ow {
                        break;
                    }
                    let (a0, a1) = (2 * pi * 4 + 2 * pj, (2 * pi + 1) * 4 + 2 * pj);
                    let win = [
                        &y[a0][..len],
                        &y[a0 + 1][..len],
                        &y[a1][..len],
                        &y[a1 + 1][..len],
                    ];
                    let p = pr * ow + pc;
                    let mut dst = [0.0f32; MAX_LANES];
                    pool_window(
                        win,
                        &bias[o0..][..len],
                        &mut dst[..len],
                        &mut arg[p * o_n + o0..][..len],
                    );
                    for (c, v) in dst[..len].iter().enumerate() {
                        out[(o0 + c) * oh * ow + p] = *v;
                    }
                }
            }
        })
    }
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

/// `Bᵀ d` (8 from 8), by the even and odd parts of each symmetric pair of rows.
#[inline(always)]
fn bt<S: Simd>(s: S, d: [S::f32s; A]) -> [S::f32s; A] {
    let [d0, d1, d2, d3, d4, d5, d6, d7] = d;
    let k = |x: f32| s.splat_f32s(x);
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    let e1 = sub(mul(k(17.0), d4), mul(k(4.0), add(d2, d6)));
    let o1 = sub(mul(k(17.0), d3), mul(k(4.0), add(d1, d5)));
    let e2 = add(sub(d2, mul(k(5.0), d4)), mul(k(4.0), d6));
    let o2 = add(sub(mul(k(2.0), d1), mul(k(10.0), d3)), mul(k(8.0), d5));
    let e3 = add(sub(mul(k(8.0), d2), mul(k(10.0), d4)), mul(k(2.0), d6));
    let o3 = add(sub(mul(k(4.0), d1), mul(k(5.0), d3)), d5);
    [
        add(mul(k(4.0), sub(d0, d6)), mul(k(21.0), sub(d4, d2))),
        add(e1, o1),
        sub(e1, o1),
        add(e2, o2),
        sub(e2, o2),
        add(e3, o3),
        sub(e3, o3),
        add(mul(k(4.0), sub(d7, d1)), mul(k(21.0), sub(d3, d5))),
    ]
}

/// `B e = (Bᵀ)ᵀ e` (the adjoint of [`bt`]).
#[inline(always)]
fn b<S: Simd>(s: S, e: [S::f32s; A]) -> [S::f32s; A] {
    let [e0, e1, e2, e3, e4, e5, e6, e7] = e;
    let k = |x: f32| s.splat_f32s(x);
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    let (s1, d1) = (add(e1, e2), sub(e1, e2));
    let (s2, d2) = (add(e3, e4), sub(e3, e4));
    let (s3, d3) = (add(e5, e6), sub(e5, e6));
    [
        mul(k(4.0), e0),
        sub(
            add(mul(k(2.0), d2), mul(k(4.0), sub(d3, d1))),
            mul(k(4.0), e7),
        ),
        add(
            sub(s2, add(mul(k(21.0), e0), mul(k(4.0), s1))),
            mul(k(8.0), s3),
        ),
        add(
            sub(mul(k(17.0), d1), add(mul(k(10.0), d2), mul(k(5.0), d3))),
            mul(k(21.0), e7),
        ),
        sub(
            add(mul(k(21.0), e0), mul(k(17.0), s1)),
            add(mul(k(5.0), s2), mul(k(10.0), s3)),
        ),
        sub(
            add(sub(mul(k(8.0), d2), mul(k(4.0), d1)), d3),
            mul(k(21.0), e7),
        ),
        add(mul(k(4.0), sub(s2, add(e0, s1))), mul(k(2.0), s3)),
        mul(k(4.0), e7),
    ]
}

/// `Aᵀ m` (4 from 8).
#[inline(always)]
fn at<S: Simd>(s: S, m: [S::f32s; A]) -> [S::f32s; 4] {
    let [m0, m1, m2, m3, m4, m5, m6, m7] = m;
    let k = |x: f32| s.splat_f32s(x);
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    let (s1, d1) = (add(m1, m2), sub(m1, m2));
    let (s2, d2) = (add(m3, m4), sub(m3, m4));
    let (s3, d3) = (add(m5, m6), sub(m5, m6));
    [
        add(add(m0, s1), add(s2, s3)),
        add(add(d1, mul(k(2.0), d2)), mul(k(0.5), d3)),
        add(add(s1, mul(k(4.0), s2)), mul(k(0.25), s3)),
        add(add(add(d1, mul(k(8.0), d2)), mul(k(0.125), d3)), m7),
    ]
}

/// `A g` (8 from 4; the adjoint of [`at`]).
#[inline(always)]
fn a<S: Simd>(s: S, g: [S::f32s; 4]) -> [S::f32s; A] {
    let [g0, g1, g2, g3] = g;
    let k = |x: f32| s.splat_f32s(x);
    let (add, sub, mul) = (
        |x, y| s.add_f32s(x, y),
        |x, y| s.sub_f32s(x, y),
        |x, y| s.mul_f32s(x, y),
    );
    let (pe, po) = (add(g0, g2), add(g1, g3));
    let (qe, qo) = (
        add(g0, mul(k(4.0), g2)),
        add(mul(k(2.0), g1), mul(k(8.0), g3)),
    );
    let (re, ro) = (
        add(g0, mul(k(0.25), g2)),
        add(mul(k(0.5), g1), mul(k(0.125), g3)),
    );
    [
        g0,
        add(pe, po),
        sub(pe, po),
        add(qe, qo),
        sub(qe, qo),
        add(re, ro),
        sub(re, ro),
        g3,
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

/// `G x` (8 from 5).
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

/// `Gᵀ x` (5 from 8; the adjoint of [`mul_g`]).
#[inline(always)]
fn mul_gt(x: &[Lanes], o: usize, s: usize, y: &mut [Lanes], p: usize, t: usize) {
    for l in 0..L {
        let v: [f32; A] = std::array::from_fn(|k| x[o + k * s][l]);
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
    fn padded(g: &Winograd4x5, seed: u64) -> Vec<f32> {
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

    /// The whole convolution: transforms + 64 GEMMs.
    fn conv(g: &Winograd4x5, xp: &[f32], w: &[f32]) -> Vec<f32> {
        let (c, o, t) = (g.channels, g.outputs, g.tiles());
        let (mut u, mut v, mut m) = (
            vec![0.0; g.filter_len()],
            vec![0.0; POSITIONS * t * c],
            vec![0.0; POSITIONS * t * o],
        );
        g.transform_filters(w, &mut u);
        g.transform_input(xp, &mut v, 0);
        for k in 0..POSITIONS {
            sgemm(
                MatMut::row_major(&mut m[k * o..], t, o, POSITIONS * o),
                MatRef::row_major(&v[k * c..], t, c, POSITIONS * c),
                MatRef::row_major(&u[k * c * o..][..c * o], c, o, o),
                false,
                1,
            );
        }
        let mut y = vec![f32::NAN; g.h * g.w * o];
        g.transform_output(&m, 0, &mut y);
        y
    }

    /// Against the exact (f64) convolution, on images whose sides are and are not
    /// multiples of 4 (tiles reaching past the image), with the error of a direct f32
    /// summation for scale.
    #[test]
    fn the_transforms_compute_the_convolution() {
        for (h, w, c, o) in [
            (14, 14, 32, 64),
            (8, 12, 3, 5),
            (2, 6, 17, 1),
            (4, 2, 16, 16),
        ] {
            let g = Winograd4x5::new(h, w, c, o);
            let xp = padded(&g, 1);
            let wt = values(o * c * 25, 2);
            let y = conv(&g, &xp, &wt);
            let pw = w + 4;
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
            eprintln!("{h}×{w}, {c}→{o}: Winograd F(4×4) {err:.2e}, direct f32 {err_direct:.2e}");
            assert!(
                err < 1e-5,
                "{h}×{w}, {c}→{o}: relative error {err:e} (direct {err_direct:e})"
            );
        }
    }

    /// ⟨T x, y⟩ = ⟨x, Tᵀ y⟩ for every transform and its adjoint, on an image whose
    /// last tiles reach past it.
    #[test]
    fn the_backward_transforms_are_the_adjoints() {
        let g = Winograd4x5::new(6, 10, 19, 21);
        let (c, o, t) = (g.channels, g.outputs, g.tiles());
        let rows = t + 3;
        // Filters.
        let (w, du) = (values(o * c * 25, 3), values(g.filter_len(), 4));
        let (mut u, mut dw) = (vec![0.0; g.filter_len()], vec![0.0; o * c * 25]);
        g.transform_filters(&w, &mut u);
        g.filter_grad(&du, &mut dw);
        let (l, r) = (dot(&u, &du), dot(&w, &dw));
        assert!((l - r).abs() < 1e-4 * (1.0 + l.abs()), "filters {l} vs {r}");
        // Input (into tiles 2.. of `rows`).
        let xp = values((g.h + 4) * (g.w + 4) * c, 5);
        let dv = values(POSITIONS * rows * c, 6);
        let mut v = vec![0.0; POSITIONS * rows * c];
        g.transform_input(&xp, &mut v, 2);
        let mut dxp = vec![0.0; xp.len()];
        g.input_grad_add(&dv, 2, &mut dxp);
        let r = 2 * POSITIONS * c..(2 + t) * POSITIONS * c;
        let used = dot(&v[r.clone()], &dv[r]);
        let r = dot(&xp, &dxp);
        assert!(
            (used - r).abs() < 1e-3 * (1.0 + used.abs()),
            "input {used} vs {r}"
        );
        // Output.
        let m = values(POSITIONS * rows * o, 7);
        let dy = values(g.h * g.w * o, 8);
        let mut y = vec![0.0; g.h * g.w * o];
        g.transform_output(&m, 1, &mut y);
        let mut dm = vec![0.0; POSITIONS * rows * o];
        g.output_grad(&dy, 1, &mut dm);
        let (l, r) = (dot(&y, &dy), dot(&m, &dm));
        assert!((l - r).abs() < 1e-3 * (1.0 + l.abs()), "output {l} vs {r}");
    }

    /// The fused output transform + bias + ReLU + max-pool gives the same bits as the
    /// two passes, on images whose last tiles are whole, half or cut in both directions
    /// (and with a channel count that is not a multiple of the vector width).
    #[test]
    fn the_fused_output_pool_is_the_two_passes() {
        use crate::{Pool2x2, PoolLayout};
        for (h, w, o_n) in [(14, 14, 64), (12, 8, 16), (6, 10, 20)] {
            let g = Winograd4x5::new(h, w, 3, o_n);
            let pool = Pool2x2 {
                h,
                w,
                channels: o_n,
                layout: PoolLayout::Chw,
            };
            let n = pool.out_len();
            let m = values(POSITIONS * (1 + g.tiles()) * o_n, 7);
            // Channel 0 cut by ReLU everywhere.
            let mut bias = values(o_n, 8);
            bias[0] = -100.0;
            let mut y = vec![0.0f32; h * w * o_n];
            g.transform_output(&m, 1, &mut y);
            let (mut out, mut arg) = (vec![0.0f32; n], vec![0u8; n]);
            pool.forward(&y, &bias, &mut out, &mut arg);
            let (mut out2, mut arg2) = (vec![1.0f32; n], vec![9u8; n]);
            g.transform_output_pool(&m, 1, &bias, &mut out2, &mut arg2);
            assert_eq!(arg, arg2, "{h}×{w}×{o_n}: codes");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&out2), "{h}×{w}×{o_n}: outputs");
            assert!(arg.contains(&4) && arg.iter().any(|&k| k < 4));
        }
    }
}
