//! Element-wise slice kernels of the plain-Rust layers (`fedpace_nn`'s dense and LSTM
//! layers): activation functions, the LSTM cell's pointwise forward and backward, bias +
//! ReLU epilogues, row and column sums, and a blocked transpose.
//!
//! Every kernel runs inside `crate::simd::simd` (AVX-512 or AVX2 chosen at run time) as
//! loops the compiler vectorises; each output value is computed by the same sequence of
//! IEEE operations on every path and sums run in a fixed order, so the results are the
//! same bits whatever the vector width or thread count.
//!
//! [`exp`], [`sigmoid`] and [`tanh`] are written with arithmetic and bit operations only
//! (no library calls), so that they vectorise: `exp` is Cody–Waite range reduction
//! `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, and the Cephes degree-6 polynomial for `e^r`
//! (≈ 1 ulp); `tanh` uses the Cephes odd polynomial below |x| = 0.625 and
//! `(1 − e^{−2|x|}) / (1 + e^{−2|x|})` above. Their accuracy against the standard
//! library is tested below.

use crate::simd::simd;

/// `e^x` in f32 (relative error ≈ 1e-7), input clamped to [-87, 88] (so the result is
/// normal and finite); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for |n| < 2^9 (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let k = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let er = p.mul_add(r * r, r) + 1.0;
    // 2^n for n in [-126, 127]: a normal number's exponent field.
    er * f32::from_bits(((k + 127) << 23) as u32)
}

/// The logistic function `1 / (1 + e^{−x})`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// The hyperbolic tangent (absolute error ≈ 1e-7, relative ≈ 2e-7).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: x + x³ P(x²) (Cephes tanhf).
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    p = p.mul_add(z, 2.063_909e-2);
    p = p.mul_add(z, -5.373_971_6e-2);
    p = p.mul_add(z, 1.333_144_2e-1);
    p = p.mul_add(z, -3.333_328e-1);
    let small = (p * z).mul_add(x, x);
    // Large |x|: (1 − e^{−2|x|}) / (1 + e^{−2|x|}), with x's sign.
    let e = exp(-2.0 * a);
    let large = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// The pointwise part of one LSTM time step (PyTorch's formulation, gate order i, f, g,
/// o) for `n` rows of hidden width `h`, after the products:
///
/// `gates[s] = x_s·W_ihᵀ + h_{s,t−1}·W_hhᵀ` (`[n, 4h]`, without bias) is overwritten with
/// the activated gates `σ(i), σ(f), tanh(g), σ(o)` of `gates + bias`
/// (`bias = b_ih + b_hh`); then `c = σ(f)⊙c_prev + σ(i)⊙tanh(g)` (`c_prev`: `None` for
/// zeros), `tanh_c = tanh(c)` and `h_out = σ(o)⊙tanh_c` (all `[n, h]`).
pub fn lstm_cell_forward(
    h: usize,
    bias: &[f32],
    gates: &mut [f32],
    c_prev: Option<&[f32]>,
    c: &mut [f32],
    tanh_c: &mut [f32],
    h_out: &mut [f32],
) {
    assert!(h_out.len() == c.len());
    lstm_cell_forward_strided(h, bias, gates, c_prev, c, tanh_c, h_out, h);
}

/// [`lstm_cell_forward`] writing row `s` of `h_out` at `h_out[s·h_ld..][..h]` (`h_ld ≥ h`;
/// the values between rows are left as they are): the char-LSTM keeps its layers'
/// outputs side by side in one buffer, so that a layer's input and its own previous
/// outputs form one matrix for its weight gradients.
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_forward_strided(
    h: usize,
    bias: &[f32],
    gates: &mut [f32],
    c_prev: Option<&[f32]>,
    c: &mut [f32],
    tanh_c: &mut [f32],
    h_out: &mut [f32],
    h_ld: usize,
) {
    let n = c.len() / h.max(1);
    assert!(bias.len() == 4 * h && gates.len() == 4 * h * n);
    assert!(c.len() == n * h && tanh_c.len() == n * h);
    assert!(h_ld >= h && (n == 0 || h_out.len() >= (n - 1) * h_ld + h));
    assert!(c_prev.is_none_or(|p| p.len() == n * h));
    pulp::Arch::new().dispatch(CellForward {
        h,
        bias,
        gates,
        c_prev,
        c,
        tanh_c,
        h_out,
        h_ld,
    })
}

/// [`lstm_cell_forward`] on explicit vectors: each value goes through the same IEEE
/// operations, in the same order, as [`sigmoid`], [`tanh`] and the scalar cell formulas
/// (tested bit for bit below), with every intermediate in registers.
struct CellForward<'a> {
    h: usize,
    bias: &'a [f32],
    gates: &'a mut [f32],
    c_prev: Option<&'a [f32]>,
    c: &'a mut [f32],
    tanh_c: &'a mut [f32],
    h_out: &'a mut [f32],
    h_ld: usize,
}

impl pulp::WithSimd for CellForward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, s: S) {
        let Self {
            h,
            bias,
            gates,
            c_prev,
            c,
            tanh_c,
            h_out,
            h_ld,
        } = self;
        let lanes = S::F32_LANES;
        let n = c.len() / h.max(1);
        let zero = s.splat_f32s(0.0);
        for r in 0..n {
            let g_row = &mut gates[r * 4 * h..][..4 * h];
            let c_row = &mut c[r * h..][..h];
            let t_row = &mut tanh_c[r * h..][..h];
            let h_row = &mut h_out[r * h_ld..][..h];
            let cp_row = c_prev.map(|cp| &cp[r * h..][..h]);
            let mut j0 = 0;
            while j0 < h {
                let len = lanes.min(h - j0);
                // A macro, not a closure: a closure that is not inlined would be compiled
                // without the vector instruction set of the dispatch.
                macro_rules! pre {
                    ($q:expr) => {
                        s.add_f32s(
                            vload(s, &g_row[$q * h + j0..], len),
                            vload(s, &bias[$q * h + j0..], len),
                        )
                    };
                }
                let (xi, xf, xg, xo) = (pre!(0), pre!(1), pre!(2), pre!(3));
                let cp = match cp_row {
                    Some(cp) => vload(s, &cp[j0..], len),
                    None => zero,
                };
                let i = sigmoid_v(s, xi);
                let f = sigmoid_v(s, xf);
                let g = tanh_v(s, xg);
                let o = sigmoid_v(s, xo);
                let cv = s.mul_add_f32s(f, cp, s.mul_f32s(i, g));
                let tc = tanh_v(s, cv);
                for (q, v) in [i, f, g, o].into_iter().enumerate() {
                    vstore(s, &mut g_row[q * h + j0..], len, v);
                }
                vstore(s, &mut c_row[j0..], len, cv);
                vstore(s, &mut t_row[j0..], len, tc);
                vstore(s, &mut h_row[j0..], len, s.mul_f32s(o, tc));
                j0 += len;
            }
        }
    }
}

/// The first `len` (≤ one vector) values of `src`, zeros past them.
#[inline(always)]
fn vload<S: pulp::Simd>(s: S, src: &[f32], len: usize) -> S::f32s {
    if len == S::F32_LANES {
        S::as_simd_f32s(&src[..len]).0[0]
    } else {
        s.partial_load_f32s(&src[..len])
    }
}

/// Writes the first `len` lanes of `x` to the start of `dst`.
#[inline(always)]
fn vstore<S: pulp::Simd>(s: S, dst: &mut [f32], len: usize, x: S::f32s) {
    if len == S::F32_LANES {
        S::as_mut_simd_f32s(&mut dst[..len]).0[0] = x;
    } else {
        s.partial_store_f32s(&mut dst[..len], x);
    }
}

/// [`exp`] on a vector: the same operations lane by lane.
#[inline(always)]
fn exp_v<S: pulp::Simd>(s: S, x: S::f32s) -> S::f32s {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0;
    macro_rules! sp {
        ($v:expr) => {
            s.splat_f32s($v)
        };
    }
    // `clamp`: NaN stays NaN (both comparisons false).
    let x = s.select_f32s(s.less_than_f32s(x, sp!(-87.0)), sp!(-87.0), x);
    let x = s.select_f32s(s.greater_than_f32s(x, sp!(88.0)), sp!(88.0), x);
    let t = s.mul_add_f32s(x, sp!(LOG2E), sp!(MAGIC));
    let n = s.sub_f32s(t, sp!(MAGIC));
    let k = s.sub_u32s(s.transmute_u32s_f32s(t), s.splat_u32s(MAGIC.to_bits()));
    let r = s.mul_add_f32s(n, sp!(-LN2_HI), x);
    let r = s.mul_add_f32s(n, sp!(-LN2_LO), r);
    let mut p = sp!(1.987_569_1e-4);
    p = s.mul_add_f32s(p, r, sp!(1.398_199_9e-3));
    p = s.mul_add_f32s(p, r, sp!(8.333_452e-3));
    p = s.mul_add_f32s(p, r, sp!(4.166_579_6e-2));
    p = s.mul_add_f32s(p, r, sp!(1.666_666_5e-1));
    p = s.mul_add_f32s(p, r, sp!(0.5));
    let er = s.add_f32s(s.mul_add_f32s(p, s.mul_f32s(r, r), r), sp!(1.0));
    let scale = s.wrapping_dyn_shl_u32s(s.add_u32s(k, s.splat_u32s(127)), s.splat_u32s(23));
    s.mul_f32s(er, s.transmute_f32s_u32s(scale))
}

/// [`sigmoid`] on a vector.
#[inline(always)]
fn sigmoid_v<S: pulp::Simd>(s: S, x: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    s.div_f32s(one, s.add_f32s(one, exp_v(s, s.neg_f32s(x))))
}

/// [`tanh`] on a vector.
#[inline(always)]
fn tanh_v<S: pulp::Simd>(s: S, x: S::f32s) -> S::f32s {
    macro_rules! sp {
        ($v:expr) => {
            s.splat_f32s($v)
        };
    }
    let a = s.abs_f32s(x);
    let z = s.mul_f32s(x, x);
    let mut p = sp!(-5.704_988_7e-3);
    p = s.mul_add_f32s(p, z, sp!(2.063_909e-2));
    p = s.mul_add_f32s(p, z, sp!(-5.373_971_6e-2));
    p = s.mul_add_f32s(p, z, sp!(1.333_144_2e-1));
    p = s.mul_add_f32s(p, z, sp!(-3.333_328e-1));
    let small = s.mul_add_f32s(s.mul_f32s(p, z), x, x);
    let e = exp_v(s, s.mul_f32s(sp!(-2.0), a));
    let q = s.div_f32s(s.sub_f32s(sp!(1.0), e), s.add_f32s(sp!(1.0), e));
    // copysign(q, x): q's magnitude, x's sign bit.
    let sign = s.splat_u32s(0x8000_0000);
    let large = s.transmute_f32s_u32s(s.or_u32s(
        s.and_u32s(s.transmute_u32s_f32s(q), s.not_u32s(sign)),
        s.and_u32s(s.transmute_u32s_f32s(x), sign),
    ));
    s.select_f32s(s.less_than_f32s(a, sp!(0.625)), small, large)
}

/// The pointwise backward of one LSTM time step (see [`lstm_cell_forward`]), `n` rows:
///
/// `dh = dh_rec + dy` (`dy`: `None` for zeros) is the gradient of the step's output
/// `h_t`; `dc` holds on entry the gradient of `c_t` arriving from step t+1 and on return
/// that of `c_{t−1}`; `gates` are the step's activated gates, `c_prev` the previous cell
/// state (`None`: zeros) and `tanh_c` the stored `tanh(c_t)`. Writes the gradient of the
/// pre-activations (`gates + bias`) into `dgates` (`[n, 4h]`).
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_backward(
    h: usize,
    gates: &[f32],
    c_prev: Option<&[f32]>,
    tanh_c: &[f32],
    dh_rec: &[f32],
    dy: Option<&[f32]>,
    dc: &mut [f32],
    dgates: &mut [f32],
) {
    let n = tanh_c.len() / h.max(1);
    assert!(gates.len() == 4 * h * n && dgates.len() == 4 * h * n);
    assert!(tanh_c.len() == n * h && dh_rec.len() == n * h && dc.len() == n * h);
    assert!(c_prev.is_none_or(|p| p.len() == n * h));
    assert!(dy.is_none_or(|p| p.len() == n * h));
    simd(
        #[inline(always)]
        || {
            for s in 0..n {
                let a = &gates[s * 4 * h..][..4 * h];
                let (ai, rest) = a.split_at(h);
                let (af, rest) = rest.split_at(h);
                let (ag, ao) = rest.split_at(h);
                let d = &mut dgates[s * 4 * h..][..4 * h];
                let (di, rest) = d.split_at_mut(h);
                let (df, rest) = rest.split_at_mut(h);
                let (dg, d_o) = rest.split_at_mut(h);
                let tc = &tanh_c[s * h..][..h];
                let dr = &dh_rec[s * h..][..h];
                let dc = &mut dc[s * h..][..h];
                cell_backward_row(
                    (ai, af, ag, ao),
                    tc,
                    dr,
                    dy.map(|y| &y[s * h..][..h]),
                    c_prev.map(|cp| &cp[s * h..][..h]),
                    dc,
                    (di, df, dg, d_o),
                );
            }
        },
    )
}

type Gates<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32]);
type GatesMut<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]);

#[inline(always)]
fn cell_backward_row(
    (ai, af, ag, ao): Gates,
    tc: &[f32],
    dr: &[f32],
    dy: Option<&[f32]>,
    cp: Option<&[f32]>,
    dc: &mut [f32],
    (di, df, dg, d_o): GatesMut,
) {
    let h = tc.len();
    let (ai, af, ag, ao, dr) = (&ai[..h], &af[..h], &ag[..h], &ao[..h], &dr[..h]);
    let (dc, di, df, dg, d_o) = (
        &mut dc[..h],
        &mut di[..h],
        &mut df[..h],
        &mut dg[..h],
        &mut d_o[..h],
    );
    // The four combinations are separate loops so that each one vectorises without
    // branches.
    macro_rules! body {
        ($dh:expr, $cp:expr) => {
            for j in 0..h {
                let (i, f, g, o, t) = (ai[j], af[j], ag[j], ao[j], tc[j]);
                let dh = $dh(j);
                let dcc = (dh * o).mul_add(1.0 - t * t, dc[j]);
                d_o[j] = dh * t * (o * (1.0 - o));
                di[j] = dcc * g * (i * (1.0 - i));
                dg[j] = dcc * i * (1.0 - g * g);
                df[j] = dcc * $cp(j) * (f * (1.0 - f));
                dc[j] = dcc * f;
            }
        };
    }
    match (dy, cp) {
        (Some(y), Some(cp)) => {
            let (y, cp) = (&y[..h], &cp[..h]);
            body!(|j: usize| dr[j] + y[j], |j: usize| cp[j]);
        }
        (Some(y), None) => {
            let y = &y[..h];
            body!(|j: usize| dr[j] + y[j], |_: usize| 0.0f32);
        }
        (None, Some(cp)) => {
            let cp = &cp[..h];
            body!(|j: usize| dr[j], |j: usize| cp[j]);
        }
        (None, None) => body!(|j: usize| dr[j], |_: usize| 0.0f32),
    }
}

/// Adds `bias[r]` to every value of row `r` of the row-major `[bias.len(), cols]`
/// matrix `m` (a feature-major activation: one row per feature, one column per
/// sample), then applies ReLU if `relu`.
pub fn add_bias_rows(m: &mut [f32], cols: usize, bias: &[f32], relu: bool) {
    assert!(m.len() == bias.len() * cols);
    simd(
        #[inline(always)]
        || {
            if cols == 0 {
                return;
            }
            for (row, &b) in m.chunks_exact_mut(cols).zip(bias) {
                if relu {
                    for v in row.iter_mut() {
                        let x = *v + b;
                        *v = if x > 0.0 { x } else { 0.0 };
                    }
                } else {
                    for v in row.iter_mut() {
                        *v += b;
                    }
                }
            }
        },
    )
}

/// ReLU's backward: `d[i] = 0` wherever `y[i] ≤ 0` (`y` the ReLU's output).
pub fn relu_backward(d: &mut [f32], y: &[f32]) {
    assert!(d.len() == y.len());
    simd(
        #[inline(always)]
        || {
            for (g, &v) in d.iter_mut().zip(y) {
                if v <= 0.0 {
                    *g = 0.0;
                }
            }
        },
    )
}

/// `out[r] = Σ_c m[r, c]` over the row-major `[out.len(), cols]` matrix `m`, each row
/// summed left to right.
pub fn row_sums(m: &[f32], cols: usize, out: &mut [f32]) {
    assert!(m.len() == out.len() * cols);
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(m.chunks_exact(cols)) {
        *o = row.iter().sum();
    }
}

/// `out[c] += Σ_r m[r, c]` over the row-major `[_, out.len()]` matrix `m`, rows added
/// in order.
pub fn add_column_sums(m: &[f32], out: &mut [f32]) {
    let cols = out.len();
    if cols == 0 {
        return;
    }
    assert!(m.len().is_multiple_of(cols));
    simd(
        #[inline(always)]
        || {
            for row in m.chunks_exact(cols) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        },
    )
}

/// `dst[i] += src[i]` for every `i`.
pub fn add_to(dst: &mut [f32], src: &[f32]) {
    assert!(dst.len() == src.len());
    simd(
        #[inline(always)]
        || {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += v;
            }
        },
    )
}

/// `dst[c, r] = src[r, c]`: the transpose of the row-major `[rows, cols]` matrix `src`
/// into the row-major `[cols, rows]` matrix `dst`, in 16 × 16 tiles (read row by row
/// into a local tile, written column by column).
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() == rows * cols && dst.len() == rows * cols);
    const T: usize = 16;
    let mut tile = [[0.0f32; T]; T];
    for r0 in (0..rows).step_by(T) {
        let nr = T.min(rows - r0);
        for c0 in (0..cols).step_by(T) {
            let nc = T.min(cols - c0);
            for (r, t) in tile.iter_mut().enumerate().take(nr) {
                t[..nc].copy_from_slice(&src[(r0 + r) * cols + c0..][..nc]);
            }
            for c in 0..nc {
                let out = &mut dst[(c0 + c) * rows + r0..][..nr];
                for (r, o) in out.iter_mut().enumerate() {
                    *o = tile[r][c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_standard_library() {
        for x in grid(-87.0, 88.0, 200_000) {
            let (got, want) = (exp(x), (x as f64).exp());
            let rel = ((got as f64 - want) / want).abs();
            assert!(rel < 2.5e-7, "exp({x}) = {got}, want {want} (rel {rel:e})");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_and_tanh_match_the_standard_library() {
        for x in grid(-40.0, 40.0, 400_000).chain(grid(-1e-3, 1e-3, 1000)) {
            let xd = x as f64;
            let s = 1.0 / (1.0 + (-xd).exp());
            assert!(
                (sigmoid(x) as f64 - s).abs() <= 3e-7 * s.max(1e-30),
                "σ({x})"
            );
            let t = xd.tanh();
            let err = (tanh(x) as f64 - t).abs();
            assert!(
                err <= 2.5e-7 * t.abs().max(1e-30) + 1e-38,
                "tanh({x}): {err:e}"
            );
        }
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(sigmoid(-100.0).max(0.0), sigmoid(-100.0));
    }

    /// The vectorised kernels compute every value exactly as the scalar functions do:
    /// full vectors and a ragged tail, with and without a previous state, over inputs
    /// that reach both sides of `tanh`'s branch, `exp`'s clamp, zeros and NaN.
    #[test]
    fn lstm_cell_forward_matches_the_scalar_formula_bit_for_bit() {
        let vals = |len: usize, k: f32, scale: f32| -> Vec<f32> {
            (0..len)
                .map(|i| match i % 97 {
                    0 => f32::NAN,
                    1 => 0.0,
                    2 => -0.0,
                    3 => 0.625,
                    4 => -0.625,
                    5 => 200.0,
                    6 => -200.0,
                    _ => ((i as f32) * k).sin() * scale,
                })
                .collect()
        };
        for (n, h, with_prev) in [(3, 37, true), (3, 37, false), (10, 256, true), (2, 5, true)] {
            let bias = vals(4 * h, 0.37, 1.0);
            let pre = vals(4 * n * h, 0.11, 40.0);
            let c_prev = vals(n * h, 0.23, 3.0);
            let mut gates = pre.clone();
            let (mut c, mut tc, mut hh) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * h]);
            lstm_cell_forward(
                h,
                &bias,
                &mut gates,
                with_prev.then_some(&c_prev[..]),
                &mut c,
                &mut tc,
                &mut hh,
            );
            // Rows of `h` written `h + 5` apart: the same values, the gaps untouched.
            let ld = h + 5;
            let mut g2 = pre.clone();
            let (mut c2, mut tc2) = (vec![0.0; n * h], vec![0.0; n * h]);
            let mut h2 = vec![7.0f32; n * ld];
            lstm_cell_forward_strided(
                h,
                &bias,
                &mut g2,
                with_prev.then_some(&c_prev[..]),
                &mut c2,
                &mut tc2,
                &mut h2,
                ld,
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&g2) == bits(&gates) && bits(&c2) == bits(&c) && bits(&tc2) == bits(&tc));
            for s in 0..n {
                assert_eq!(bits(&h2[s * ld..][..h]), bits(&hh[s * h..][..h]));
                assert!(h2[s * ld + h..][..ld - h].iter().all(|&v| v == 7.0));
            }
            // NaN payloads may differ (which operand a NaN came from); NaN must stay NaN.
            let same = |got: f32, want: f32| {
                got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan()
            };
            for s in 0..n {
                for j in 0..h {
                    let g = |k: usize| pre[s * 4 * h + k * h + j] + bias[k * h + j];
                    let (i, f, gg, o) = (sigmoid(g(0)), sigmoid(g(1)), tanh(g(2)), sigmoid(g(3)));
                    let cp = if with_prev { c_prev[s * h + j] } else { 0.0 };
                    let cv = f.mul_add(cp, i * gg);
                    let at = |k: usize| gates[s * 4 * h + k * h + j];
                    assert!(
                        same(at(0), i) && same(at(1), f) && same(at(2), gg) && same(at(3), o),
                        "gates of ({s}, {j}), h = {h}"
                    );
                    assert!(same(c[s * h + j], cv), "c of ({s}, {j}), h = {h}");
                    assert!(
                        same(tc[s * h + j], tanh(cv)),
                        "tanh c of ({s}, {j}), h = {h}"
                    );
                    assert!(
                        same(hh[s * h + j], o * tanh(cv)),
                        "h of ({s}, {j}), h = {h}"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose_round_trips() {
        let (r, c) = (37, 53);
        let m: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
        let mut t = vec![0.0; r * c];
        transpose(&m, r, c, &mut t);
        assert_eq!(t[5 * r + 7], m[7 * c + 5]);
        let mut back = vec![0.0; r * c];
        transpose(&t, c, r, &mut back);
        assert_eq!(back, m);
    }

    #[test]
    fn sums_and_bias_rows() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut rs = [0.0; 2];
        row_sums(&m, 3, &mut rs);
        assert_eq!(rs, [6.0, 15.0]);
        let mut cs = [1.0; 3];
        add_column_sums(&m, &mut cs);
        assert_eq!(cs, [6.0, 8.0, 10.0]);
        let mut a = [1.0, -2.0, 3.0, -4.0];
        add_bias_rows(&mut a, 2, &[0.5, 5.0], true);
        assert_eq!(a, [1.5, 0.0, 8.0, 1.0]);
        let mut d = [1.0; 4];
        relu_backward(&mut d, &a);
        assert_eq!(d, [1.0, 0.0, 1.0, 1.0]);
    }
}
