//! The 64 position products of Winograd F(4×4, 5×5) ([`crate::winograd4`]) on
//! tile-major data, by a register-tile kernel written for them
//! (docs/arch/0033-winograd-position-kernel.md).
//!
//! Each position `k` of a group's `rows` tiles is a small product with 32–64 rows and
//! columns: forward `M_k = V_k·U_k`, backward `dU_k += V_kᵀ·dM_k` and `dV_k = dM_k·U_kᵀ`.
//! Through the `gemm` crate each is a call that packs its operands and dispatches on
//! shapes (192 calls per group of two samples); they ran at 77–80 % of the 512³ sgemm
//! rate. Here, on CPUs with AVX-512, every output block of up to `R` rows × `16·NV`
//! columns is one set of accumulators that runs down the whole inner dimension with one
//! broadcast of the left operand per row and one load of the right operand's row per
//! step, with nothing packed except, in backward, `V_k` and `dM_k` copied once to
//! contiguous scratch (their rows lie 8 and 16 KB apart in the tile-major buffers, the
//! L1 cache's set stride, so read in place they would not stay in it).
//!
//! Every output is one in-order sum over the inner dimension of fused multiply-adds from
//! zero (then added to the destination for `dU`); no sum is split, so the result depends
//! on no thread count. Without AVX-512 the products go through [`crate::sgemm`].

use crate::tile512::has_avx512;
use crate::{sgemm, MatMut, MatRef};

/// The positions of an F(4×4, 5×5) tile.
const P: usize = crate::winograd4::POSITIONS;

/// Whether the dedicated kernel runs channel counts `c` and `o` on this CPU (its
/// column blocks are 64 wide for `o` and 32 for `c`).
fn dedicated(c: usize, o: usize) -> bool {
    c.is_multiple_of(32) && o.is_multiple_of(64) && has_avx512()
}

/// Forward: `M_k = V_k·U_k` for the 64 positions `k`. `v` is `[rows][64][c]`, `u` is
/// `[64][c][o]`, `m` is `[rows][64][o]` (fully written for those rows).
///
/// Panics if a buffer is shorter than its shape.
pub fn forward(rows: usize, c: usize, o: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    forward_on(dedicated(c, o), rows, c, o, v, u, m)
}

/// [`forward`] by the dedicated kernel (`fast`, which needs AVX-512F) or the `gemm` crate.
fn forward_on(fast: bool, rows: usize, c: usize, o: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    assert!(v.len() >= rows * P * c && u.len() >= P * c * o && m.len() >= rows * P * o);
    if rows == 0 {
        return;
    }
    if fast {
        assert!(
            has_avx512(),
            "wino_products: the dedicated kernel needs AVX-512F"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (checked above) and every index the kernel forms
        // is inside the slices (asserted above: rows·64·c, 64·c·o, rows·64·o).
        unsafe {
            for k in 0..P {
                avx512::product::<4, 4>(
                    rows,
                    c,
                    o,
                    v.as_ptr().add(k * c),
                    P * c,
                    1,
                    u.as_ptr().add(k * c * o),
                    o,
                    m.as_mut_ptr().add(k * o),
                    P * o,
                    false,
                );
            }
        }
        return;
    }
    for k in 0..P {
        sgemm(
            MatMut::row_major(&mut m[k * o..], rows, o, P * o),
            MatRef::row_major(&v[k * c..], rows, c, P * c),
            MatRef::row_major(&u[k * c * o..][..c * o], c, o, o),
            false,
            1,
        );
    }
}

/// Scratch values [`backward`] needs for `rows` tiles of `c` and `o` channels.
pub fn scratch_len(rows: usize, c: usize, o: usize) -> usize {
    rows * (c + o)
}

/// Backward, position by position: `dU_k += V_kᵀ·dM_k`, then `dV_k = dM_k·U_kᵀ` written
/// over `V_k`. `v` is `[rows][64][c]` (the forward input; the input gradient on return),
/// `dm` is `[rows][64][o]`, `ut` is `[64][o][c]` (each `U_k` transposed), `du` is
/// `[64][c][o]` (accumulated), `scratch` at least [`scratch_len`] values.
///
/// Panics if a buffer is shorter than its shape.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    rows: usize,
    c: usize,
    o: usize,
    v: &mut [f32],
    dm: &[f32],
    ut: &[f32],
    du: &mut [f32],
    scratch: &mut [f32],
) {
    backward_on(dedicated(c, o), true, rows, c, o, v, dm, ut, du, scratch)
}

/// [`backward`] with `dU_k = V_kᵀ·dM_k` **written** into `du` (every value), not added:
/// for the first group of a sum, instead of zeroing `du` first (the same sums; a value
/// whose sum is −0 is −0 here, +0 after zero-then-add; equal as numbers).
///
/// Panics if a buffer is shorter than its shape.
#[allow(clippy::too_many_arguments)]
pub fn backward_first(
    rows: usize,
    c: usize,
    o: usize,
    v: &mut [f32],
    dm: &[f32],
    ut: &[f32],
    du: &mut [f32],
    scratch: &mut [f32],
) {
    backward_on(dedicated(c, o), false, rows, c, o, v, dm, ut, du, scratch)
}

/// [`backward`] (`acc`: `dU` added to) or [`backward_first`] (`dU` written) by the
/// dedicated kernel (`fast`, which needs AVX-512F) or the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn backward_on(
    fast: bool,
    acc: bool,
    rows: usize,
    c: usize,
    o: usize,
    v: &mut [f32],
    dm: &[f32],
    ut: &[f32],
    du: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(v.len() >= rows * P * c && dm.len() >= rows * P * o);
    assert!(ut.len() >= P * c * o && du.len() >= P * c * o);
    assert!(scratch.len() >= scratch_len(rows, c, o));
    if rows == 0 {
        return;
    }
    if fast {
        assert!(
            has_avx512(),
            "wino_products: the dedicated kernel needs AVX-512F"
        );
        let (vs, ms) = scratch.split_at_mut(rows * c);
        for k in 0..P {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is present (checked above); the scratch holds rows × c
            // and rows × o values, `du` and `ut` 64·c·o (k < 64), `v` rows·64·c,
            // `dm` rows·64·o (asserted above), and every index the kernel forms is
            // inside those.
            unsafe {
                avx512::gather_rows(rows, c, v.as_ptr().add(k * c), P * c, vs.as_mut_ptr());
                avx512::gather_rows(rows, o, dm.as_ptr().add(k * o), P * o, ms.as_mut_ptr());
                // dU_k[c, o] += Σ_r V_k[r, c] · dM_k[r, o]: left operand V_kᵀ.
                avx512::product::<4, 4>(
                    c,
                    rows,
                    o,
                    vs.as_ptr(),
                    1,
                    c,
                    ms.as_ptr(),
                    o,
                    du.as_mut_ptr().add(k * c * o),
                    o,
                    acc,
                );
                // dV_k[r, c] = Σ_j dM_k[r, j] · U_k[c, j], over V_k in place.
                avx512::product::<4, 2>(
                    rows,
                    o,
                    c,
                    ms.as_ptr(),
                    o,
                    1,
                    ut.as_ptr().add(k * c * o),
                    c,
                    v.as_mut_ptr().add(k * c),
                    P * c,
                    false,
                );
            }
        }
        return;
    }
    for k in 0..P {
        sgemm(
            MatMut::row_major(&mut du[k * c * o..][..c * o], c, o, o),
            MatRef::transposed(&v[k * c..], c, rows, P * c),
            MatRef::row_major(&dm[k * o..], rows, o, P * o),
            acc,
            1,
        );
        sgemm(
            MatMut::row_major(&mut v[k * c..], rows, c, P * c),
            MatRef::row_major(&dm[k * o..], rows, o, P * o),
            MatRef::row_major(&ut[k * c * o..][..c * o], o, c, c),
            false,
            1,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::tile512::{block, Out};
    use std::arch::x86_64::*;

    /// `C (+)= A·B` for `A: m × k` (element `(i, p)` at `a[i·a_rs + p·a_cs]`), `B: k × n`
    /// row-major with row stride `b_rs`, `C: m × n` row-major with row stride `c_rs`;
    /// `n` a multiple of `16·NV`. Blocks of `R` rows × `16·NV` columns (fewer rows at
    /// the end) each sum from zero down `p = 0..k` in order, then are stored, or added
    /// to `C` when `acc`.
    ///
    /// # Safety
    /// AVX-512F must be available and every index formed must be inside its buffer.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product<const R: usize, const NV: usize>(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        c_rs: usize,
        acc: bool,
    ) {
        debug_assert!(n.is_multiple_of(16 * NV));
        let o = if acc { Out::Add } else { Out::Store };
        for j0 in (0..n).step_by(16 * NV) {
            let mut i0 = 0;
            while i0 + R <= m {
                block::<R, NV>(
                    k,
                    a.add(i0 * a_rs),
                    a_rs,
                    a_cs,
                    b.add(j0),
                    b_rs,
                    c.add(i0 * c_rs + j0),
                    c_rs,
                    o,
                );
                i0 += R;
            }
            while i0 < m {
                block::<1, NV>(
                    k,
                    a.add(i0 * a_rs),
                    a_rs,
                    a_cs,
                    b.add(j0),
                    b_rs,
                    c.add(i0 * c_rs + j0),
                    c_rs,
                    o,
                );
                i0 += 1;
            }
        }
    }

    /// Copies `rows` rows of `len` values (a multiple of 16), `src_rs` apart, to
    /// consecutive rows of `dst`.
    ///
    /// # Safety
    /// AVX-512F must be available and the rows inside their buffers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_rows(
        rows: usize,
        len: usize,
        src: *const f32,
        src_rs: usize,
        dst: *mut f32,
    ) {
        for r in 0..rows {
            let (s, d) = (src.add(r * src_rs), dst.add(r * len));
            for j in (0..len).step_by(16) {
                _mm512_storeu_ps(d.add(j), _mm512_loadu_ps(s.add(j)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `Σ_p a_p·b_p` in f64.
    fn close(got: &[f32], want: &[f64]) {
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * scale,
                "element {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn the_products_are_the_definitions() {
        // 17 rows: two blocks of 8 (dV), four of 4 and one row left over.
        for (rows, c, o) in [(32, 32, 64), (17, 32, 64), (16, 64, 128)] {
            let v = data(rows * P * c, 1);
            let u = data(P * c * o, 2);
            let dm = data(rows * P * o, 3);
            let du0 = data(P * c * o, 4);
            let mut m = vec![0.0; rows * P * o];
            forward(rows, c, o, &v, &u, &mut m);
            let mut ut = vec![0.0; P * c * o];
            for k in 0..P {
                for i in 0..c {
                    for j in 0..o {
                        ut[k * c * o + j * c + i] = u[k * c * o + i * o + j];
                    }
                }
            }
            let (mut dv, mut du) = (v.clone(), du0.clone());
            let mut scratch = vec![0.0; scratch_len(rows, c, o)];
            backward(rows, c, o, &mut dv, &dm, &ut, &mut du, &mut scratch);
            let (mut wm, mut wdu, mut wdv) = (vec![], vec![], vec![]);
            for r in 0..rows {
                for k in 0..P {
                    for j in 0..o {
                        wm.push(
                            (0..c)
                                .map(|i| {
                                    v[(r * P + k) * c + i] as f64 * u[k * c * o + i * o + j] as f64
                                })
                                .sum(),
                        );
                    }
                }
            }
            for k in 0..P {
                for i in 0..c {
                    for j in 0..o {
                        let s: f64 = (0..rows)
                            .map(|r| v[(r * P + k) * c + i] as f64 * dm[(r * P + k) * o + j] as f64)
                            .sum();
                        wdu.push(du0[k * c * o + i * o + j] as f64 + s);
                    }
                }
            }
            for r in 0..rows {
                for k in 0..P {
                    for i in 0..c {
                        wdv.push(
                            (0..o)
                                .map(|j| {
                                    dm[(r * P + k) * o + j] as f64 * u[k * c * o + i * o + j] as f64
                                })
                                .sum(),
                        );
                    }
                }
            }
            close(&m, &wm);
            close(&du, &wdu);
            close(&dv, &wdv);
            // The `gemm` crate's path (the fallback without AVX-512): the same values.
            let mut m2 = vec![0.0; rows * P * o];
            forward_on(false, rows, c, o, &v, &u, &mut m2);
            let (mut dv2, mut du2) = (v.clone(), du0.clone());
            backward_on(
                false,
                true,
                rows,
                c,
                o,
                &mut dv2,
                &dm,
                &ut,
                &mut du2,
                &mut scratch,
            );
            close(&m2, &wm);
            close(&du2, &wdu);
            close(&dv2, &wdv);
        }
    }

    /// Both paths sum each output in the same order with fused multiply-adds (the
    /// `gemm` crate's kernels for inner dimensions ≤ 64): the same bits, which is why
    /// the CNN's results did not move (docs/arch/0033-winograd-position-kernel.md).
    #[test]
    fn the_kernel_gives_the_gemm_crates_bits() {
        if !has_avx512() {
            return;
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (rows, c, o) in [(32, 32, 64), (17, 32, 64), (16, 32, 64)] {
            let v = data(rows * P * c, 5);
            let u = data(P * c * o, 6);
            let ut = data(P * c * o, 7);
            let dm = data(rows * P * o, 8);
            let du0 = data(P * c * o, 9);
            let mut scratch = vec![0.0; scratch_len(rows, c, o)];
            let (mut m1, mut m2) = (vec![0.0; rows * P * o], vec![0.0; rows * P * o]);
            forward_on(true, rows, c, o, &v, &u, &mut m1);
            forward_on(false, rows, c, o, &v, &u, &mut m2);
            assert_eq!(bits(&m1), bits(&m2), "forward, {rows} rows");
            let (mut v1, mut du1) = (v.clone(), du0.clone());
            let (mut v2, mut du2) = (v.clone(), du0.clone());
            backward_on(
                true,
                true,
                rows,
                c,
                o,
                &mut v1,
                &dm,
                &ut,
                &mut du1,
                &mut scratch,
            );
            backward_on(
                false,
                true,
                rows,
                c,
                o,
                &mut v2,
                &dm,
                &ut,
                &mut du2,
                &mut scratch,
            );
            assert_eq!(bits(&du1), bits(&du2), "dU, {rows} rows");
            assert_eq!(bits(&v1), bits(&v2), "dV, {rows} rows");
        }
    }

    /// `backward_first` is `backward` into a zeroed `dU` (the same numbers; both paths),
    /// writes every value of `dU`, and the same `dV`.
    #[test]
    fn the_first_group_writes_what_zero_then_add_gives() {
        for fast in [false, has_avx512()] {
            for (rows, c, o) in [(32, 32, 64), (17, 32, 64)] {
                let v = data(rows * P * c, 10);
                let ut = data(P * c * o, 11);
                let dm = data(rows * P * o, 12);
                let mut scratch = vec![0.0; scratch_len(rows, c, o)];
                let (mut v1, mut du1) = (v.clone(), vec![0.0; P * c * o]);
                let (mut v2, mut du2) = (v.clone(), vec![f32::NAN; P * c * o]);
                backward_on(
                    fast,
                    true,
                    rows,
                    c,
                    o,
                    &mut v1,
                    &dm,
                    &ut,
                    &mut du1,
                    &mut scratch,
                );
                backward_on(
                    fast,
                    false,
                    rows,
                    c,
                    o,
                    &mut v2,
                    &dm,
                    &ut,
                    &mut du2,
                    &mut scratch,
                );
                for (i, (a, b)) in du1.iter().zip(&du2).enumerate() {
                    assert!(
                        a == b,
                        "fast {fast}, {rows} rows: dU {i}: {a} added, {b} written"
                    );
                }
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&v1), bits(&v2), "fast {fast}, {rows} rows: dV");
            }
        }
    }
}
