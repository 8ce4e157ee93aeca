//! A matrix product with few rows, `dst (+)= A·B` for `A: m × k` with small `m` (a
//! batch of 10 sequences, say) against a `B: k × n` packed once into column panels, for
//! the char-LSTM's recurrent products (docs/arch/0014-fast-layers.md): the same `B` (a
//! layer's `W_hh`) multiplies 79 steps' `h` or `dG` per call.
//!
//! The `gemm` crate runs such a product by transposing it (`n` becomes its rows) and
//! splits the `m` columns into register tiles of 6 and 4 — a third of the second tile
//! idle for `m = 10`. Here [`pack`] lays `B` out as panels of [`PANEL`] columns, each
//! `k × PANEL` contiguous (so `B` streams through the cache without the 4 KB-stride
//! conflicts of reading a wide row-major matrix down its columns), and [`gemm`] runs every
//! block of up to 10 rows of `A` as one register tile: for each panel, `rows × PANEL`
//! accumulators go down `k` with one broadcast of `A` per row and one load of the panel
//! row per step. Every output is one in-order sum over `k` of fused multiply-adds, so
//! the result depends neither on the vector width nor on any thread count.

use pulp::Simd;

/// Columns of `B` per packed panel.
pub const PANEL: usize = 32;

/// Values of `B` packed by [`pack`]: `⌈n / PANEL⌉ · k · PANEL`.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Packs `B` (`k × n`) into column panels for [`gemm`]: `out[(p·k + i)·PANEL + c] =
/// B[i, p·PANEL + c]` (zero past column `n`). `B[i, j]` is `b[i·row_stride +
/// j·col_stride]` — `(ld, 1)` for a row-major `B`, `(1, ld)` for the transpose of a
/// row-major `n × k` matrix.
pub fn pack(b: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize, out: &mut [f32]) {
    assert!(out.len() >= packed_len(k, n));
    if k == 0 {
        return;
    }
    assert!(
        k == 0 || n == 0 || (k - 1) * row_stride + (n - 1) * col_stride < b.len(),
        "small_gemm::pack: B out of bounds"
    );
    for (p, panel) in out[..packed_len(k, n)]
        .chunks_exact_mut(k * PANEL)
        .enumerate()
    {
        let (j0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
        if col_stride == 1 {
            for (i, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                row[..width].copy_from_slice(&b[i * row_stride + j0..][..width]);
                row[width..].fill(0.0);
            }
        } else if row_stride == 1 {
            // B is the transpose of a row-major matrix (each column of B contiguous):
            // 16 × 16 tiles through a local tile, read and written a row at a time
            // (writing the panel column by column strides it by PANEL values).
            const T: usize = 16;
            let mut tile = [[0.0f32; T]; T];
            for i0 in (0..k).step_by(T) {
                let ni = T.min(k - i0);
                for c0 in (0..PANEL).step_by(T) {
                    for (c, t) in tile.iter_mut().enumerate() {
                        if c0 + c < width {
                            t[..ni].copy_from_slice(&b[i0 + (j0 + c0 + c) * col_stride..][..ni]);
                        } else {
                            t[..ni].fill(0.0);
                        }
                    }
                    for i in 0..ni {
                        let row = &mut panel[(i0 + i) * PANEL + c0..][..T];
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = tile[c][i];
                        }
                    }
                }
            }
        } else {
            // Read each source column (contiguous when B is a transpose) once.
            for c in 0..PANEL {
                for i in 0..k {
                    panel[i * PANEL + c] = if c < width {
                        b[i * row_stride + (j0 + c) * col_stride]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `dst[i, j] (+)= Σ_p a[i, p] · B[p, j]` for `i < m`, `j < n`, `p < k`, with `B`
/// packed by [`pack`]: `a` row-major with leading dimension `lda`, `dst` row-major with
/// `ldd`; adds to `dst` when `accumulate`, else overwrites it.
///
/// Panics if a matrix does not fit its slice (a bug in the caller).
///
/// ```
/// use fedpace_kernels::small_gemm::{gemm, pack, packed_len};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [5.0f32, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
/// let mut packed = vec![0.0; packed_len(2, 2)];
/// pack(&b, 2, 2, 2, 1, &mut packed);
/// let mut c = [1.0f32; 4];
/// gemm(2, 2, 2, &a, 2, &packed, &mut c, 2, true);
/// assert_eq!(c, [20.0, 23.0, 44.0, 51.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (k == 0 || fits(a.len(), m, k, lda))
            && packed.len() >= packed_len(k, n)
            && fits(dst.len(), m, n, ldd),
        "small_gemm: matrix out of bounds"
    );
    pulp::Arch::new().dispatch(Product {
        m,
        n,
        k,
        a,
        lda,
        a_transposed: false,
        packed,
        dst,
        ldd,
        accumulate,
    })
}

/// [`gemm`] with `A` stored transposed: `A[i, p] = a[p·lda + i]` (`a` holds `Aᵀ`, a
/// row-major `k × m` matrix with leading dimension `lda ≥ m`) — for weight gradients
/// `dGᵀ·X` over all steps, whose `dG` is stored `[steps·n, 4H]`. Same sums, in the same
/// order, as [`gemm`] on a transposed copy.
///
/// ```
/// use fedpace_kernels::small_gemm::{gemm_tn, pack, packed_len};
/// let at = [1.0f32, 3.0, 2.0, 4.0]; // Aᵀ of [[1, 2], [3, 4]]
/// let b = [5.0f32, 6.0, 7.0, 8.0];
/// let mut packed = vec![0.0; packed_len(2, 2)];
/// pack(&b, 2, 2, 2, 1, &mut packed);
/// let mut c = [0.0f32; 4];
/// gemm_tn(2, 2, 2, &at, 2, &packed, &mut c, 2, false);
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm_tn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (k == 0 || fits(a.len(), k, m, lda))
            && packed.len() >= packed_len(k, n)
            && fits(dst.len(), m, n, ldd),
        "small_gemm: matrix out of bounds"
    );
    pulp::Arch::new().dispatch(Product {
        m,
        n,
        k,
        a,
        lda,
        a_transposed: true,
        packed,
        dst,
        ldd,
        accumulate,
    })
}

/// [`gemm`] (or [`gemm_tn`] when `a_transposed`) with the rows of `A` and `dst` split
/// among up to `threads` threads of the current rayon pool in blocks of whole register
/// tiles. Every output is the same in-order sum whatever the split, so the result does
/// not depend on `threads`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_threads(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    a_transposed: bool,
    packed: &[f32],
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    threads: usize,
) {
    let call = |i0: usize, rows: usize, dst: &mut [f32]| {
        if a_transposed {
            gemm_tn(rows, n, k, &a[i0..], lda, packed, dst, ldd, accumulate);
        } else {
            gemm(
                rows,
                n,
                k,
                &a[i0 * lda..],
                lda,
                packed,
                dst,
                ldd,
                accumulate,
            );
        }
    };
    // Rows per thread: whole tiles of 10 (the AVX-512 tile; other widths' tiles are
    // smaller, and the split never changes a sum).
    let per = m.div_ceil(threads.max(1)).div_ceil(10) * 10;
    if threads <= 1 || m <= per || n == 0 || k == 0 {
        call(0, m, dst);
        return;
    }
    assert!(
        fits(dst.len(), m, n, ldd),
        "small_gemm: matrix out of bounds"
    );
    rayon::scope(|sc| {
        let mut rest = &mut dst[..(m - 1) * ldd + n];
        let mut i0 = 0;
        while i0 < m {
            let rows = per.min(m - i0);
            let take = if i0 + rows < m {
                rows * ldd
            } else {
                rest.len()
            };
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            let call = &call;
            sc.spawn(move |_| call(i0, rows, head));
            i0 += rows;
        }
    });
}

/// Whether a row-major `rows × cols` matrix with leading dimension `ld` fits `len` values.
fn fits(len: usize, rows: usize, cols: usize, ld: usize) -> bool {
    cols <= ld && (rows - 1) * ld + cols <= len
}

struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    lda: usize,
    /// `A[i, p] = a[p·lda + i]` rather than `a[i·lda + p]`.
    a_transposed: bool,
    packed: &'a [f32],
    dst: &'a mut [f32],
    ldd: usize,
    accumulate: bool,
}

impl pulp::WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // Rows per tile × vectors per panel: as many accumulators as the registers hold.
        match (S::F32_LANES, self.a_transposed) {
            (16, false) => self.run::<S, 10, 2, false>(s),
            (16, true) => self.run::<S, 10, 2, true>(s),
            (8, false) => self.run::<S, 3, 4, false>(s),
            (8, true) => self.run::<S, 3, 4, true>(s),
            (_, false) => self.run::<S, 1, PANEL, false>(s),
            (_, true) => self.run::<S, 1, PANEL, true>(s),
        }
    }
}

impl Product<'_> {
    /// `R` rows per register tile, `V` vectors per panel (`V · lanes = PANEL`), `TA`:
    /// `A` stored transposed.
    #[inline(always)]
    fn run<S: Simd, const R: usize, const V: usize, const TA: bool>(self, s: S) {
        let Self {
            m,
            n,
            k,
            a,
            lda,
            a_transposed: _,
            packed,
            dst,
            ldd,
            accumulate,
        } = self;
        let lanes = S::F32_LANES;
        assert!(V * lanes == PANEL);
        if k == 0 {
            // An empty sum: zero, or nothing to add.
            if !accumulate {
                for i in 0..m {
                    dst[i * ldd..][..n].fill(0.0);
                }
            }
            return;
        }
        let a_at = |i: usize, q: usize| if TA { a[q * lda + i] } else { a[i * lda + q] };
        for (p, panel) in packed[..packed_len(k, n)]
            .chunks_exact(k * PANEL)
            .enumerate()
        {
            let (j0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
            for i0 in (0..m).step_by(R) {
                let rows = R.min(m - i0);
                let mut acc = [[s.splat_f32s(0.0); V]; R];
                if rows == R && TA {
                    // A full tile of a transposed A: the tile's R values of step q are
                    // contiguous.
                    let mut t = acc;
                    for (q, brow) in panel.chunks_exact(PANEL).enumerate() {
                        let bv: [S::f32s; V] = vectors::<S, V>(brow);
                        let col: &[f32; R] = a[q * lda + i0..][..R].try_into().unwrap();
                        for i in 0..R {
                            let x = s.splat_f32s(col[i]);
                            for v in 0..V {
                                t[i][v] = s.mul_add_f32s(x, bv[v], t[i][v]);
                            }
                        }
                    }
                    acc = t;
                } else if rows == R {
                    // A full tile: constant loop bounds, accumulators in registers.
                    let mut arows: [&[f32]; R] = [&[]; R];
                    for (i, r) in arows.iter_mut().enumerate() {
                        *r = &a[(i0 + i) * lda..][..k];
                    }
                    // Accumulators indexed by constants only, so they live in registers
                    // (`acc` is indexed by the run-time row count below).
                    let mut t = acc;
                    for (q, brow) in panel.chunks_exact(PANEL).enumerate() {
                        let bv: [S::f32s; V] = vectors::<S, V>(brow);
                        for i in 0..R {
                            let x = s.splat_f32s(arows[i][q]);
                            for v in 0..V {
                                t[i][v] = s.mul_add_f32s(x, bv[v], t[i][v]);
                            }
                        }
                    }
                    acc = t;
                } else {
                    for (q, brow) in panel.chunks_exact(PANEL).enumerate() {
                        let bv: [S::f32s; V] = vectors::<S, V>(brow);
                        for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                            let x = s.splat_f32s(a_at(i0 + i, q));
                            for v in 0..V {
                                acc[v] = s.mul_add_f32s(x, bv[v], acc[v]);
                            }
                        }
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(rows) {
                    let out = &mut dst[(i0 + i) * ldd + j0..];
                    for (v, x) in acc.iter().enumerate() {
                        let off = v * lanes;
                        if off >= width {
                            break;
                        }
                        let len = lanes.min(width - off);
                        let y = if accumulate {
                            s.add_f32s(load(s, &out[off..], len), *x)
                        } else {
                            *x
                        };
                        store(s, &mut out[off..], len, y);
                    }
                }
            }
        }
    }
}

/// The `V` vectors of one packed panel row (`PANEL` values).
#[inline(always)]
fn vectors<S: Simd, const V: usize>(row: &[f32]) -> [S::f32s; V] {
    let (head, _) = S::as_simd_f32s(&row[..PANEL]);
    let mut out = [head[0]; V];
    out.copy_from_slice(&head[..V]);
    out
}

/// The first `len` (≤ one vector) values of `src` (a plain load for a full vector).
#[inline(always)]
fn load<S: Simd>(s: S, src: &[f32], len: usize) -> S::f32s {
    if len == S::F32_LANES {
        S::as_simd_f32s(&src[..len]).0[0]
    } else {
        s.partial_load_f32s(&src[..len])
    }
}

/// Writes the first `len` lanes of `x` to the start of `dst`.
#[inline(always)]
fn store<S: Simd>(s: S, dst: &mut [f32], len: usize, x: S::f32s) {
    if len == S::F32_LANES {
        S::as_mut_simd_f32s(&mut dst[..len]).0[0] = x;
    } else {
        s.partial_store_f32s(&mut dst[..len], x);
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

    /// Every output is the in-order sum over `k` of fused multiply-adds, so a scalar loop
    /// with `mul_add` gives the same bits — for row counts around the tile size, ragged
    /// panels and padded leading dimensions, accumulating or not, `B` packed from itself
    /// or from its transpose.
    #[test]
    fn matches_an_in_order_fused_sum_bit_for_bit() {
        for (m, n, k) in [
            (10, 1024, 256),
            (10, 256, 1024),
            (3, 37, 5),
            (13, 70, 9),
            (1, 1, 1),
        ] {
            let (lda, ldb, ldd) = (k + 3, n + 5, n + 1);
            let a = values(m * lda, 1);
            let b = values(k * ldb, 2);
            // B packed from itself and from its transpose.
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * ldb + x / k]).collect();
            let (mut p1, mut p2) = (vec![0.0; packed_len(k, n)], vec![1.0; packed_len(k, n)]);
            pack(&b, k, n, ldb, 1, &mut p1);
            pack(&bt, k, n, 1, k, &mut p2);
            assert!(p1 == p2);
            // And through the general strided path (neither stride 1).
            let (rs, cs) = (2, 2 * k + 1);
            let mut bs = vec![f32::NAN; (k - 1) * rs + (n - 1) * cs + 1];
            for i in 0..k {
                for j in 0..n {
                    bs[i * rs + j * cs] = b[i * ldb + j];
                }
            }
            let mut p3 = vec![1.0; packed_len(k, n)];
            pack(&bs, k, n, rs, cs, &mut p3);
            assert!(p1 == p3);
            for accumulate in [false, true] {
                let init = values(m * ldd, 3);
                let mut got = init.clone();
                gemm(m, n, k, &a, lda, &p1, &mut got, ldd, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0f32;
                        for p in 0..k {
                            s = a[i * lda + p].mul_add(b[p * ldb + j], s);
                        }
                        let want = if accumulate { init[i * ldd + j] + s } else { s };
                        assert_eq!(got[i * ldd + j].to_bits(), want.to_bits(), "{m}×{n}×{k}");
                    }
                    // Padding columns are untouched.
                    assert_eq!(got[i * ldd + n].to_bits(), init[i * ldd + n].to_bits());
                }
            }
        }
    }

    /// `gemm_tn` on `Aᵀ` gives the bits of `gemm` on `A`, and `gemm_threads` the bits of
    /// the one-thread call for every thread count, both layouts.
    #[test]
    fn transposed_and_threaded_products_give_the_same_bits() {
        for (m, n, k) in [
            (1024, 256, 800),
            (23, 70, 9),
            (10, 33, 4),
            (1, 1, 1),
            (5, 40, 0),
        ] {
            let (lda, ldd) = (k + 3, n + 1);
            let a = values(m * lda, 4);
            let mut at = vec![f32::NAN; k * (m + 2)];
            for i in 0..m {
                for p in 0..k {
                    at[p * (m + 2) + i] = a[i * lda + p];
                }
            }
            let b = values(k * n, 5);
            let mut packed = vec![0.0; packed_len(k, n)];
            pack(&b, k, n, n, 1, &mut packed);
            let init = values(m * ldd, 6);
            let mut want = init.clone();
            gemm(m, n, k, &a, lda, &packed, &mut want, ldd, true);
            let mut got = init.clone();
            gemm_tn(m, n, k, &at, m + 2, &packed, &mut got, ldd, true);
            assert!(got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            for threads in [1, 2, 3, 4] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for tn in [false, true] {
                    let mut got = init.clone();
                    pool.install(|| {
                        if tn {
                            gemm_threads(
                                m,
                                n,
                                k,
                                &at,
                                m + 2,
                                true,
                                &packed,
                                &mut got,
                                ldd,
                                true,
                                threads,
                            )
                        } else {
                            gemm_threads(
                                m, n, k, &a, lda, false, &packed, &mut got, ldd, true, threads,
                            )
                        }
                    });
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}×{n}×{k}, {threads} threads, transposed {tn}");
                }
            }
        }
    }
}
