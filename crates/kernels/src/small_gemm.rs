//! A matrix product with few rows, `dst (+)= A·B` for `A: m × k` with small `m` (a
//! batch of 10 sequences, say) against a `B: k × n` packed once into column panels, for
//! the char-LSTM's recurrent products (docs/arch/0014-fast-layers.md): the same `B` (a
//! layer's `W_hh`) multiplies 79 steps' `h` or `dG` per call.
//!
//! The `gemm` crate runs such a product by transposing it (`n` becomes its rows) and
//! splits the `m` columns into register tiles of 6 and 4 — a third of the second tile
//! idle for `m = 10`. Here [`pack`] lays `B` out as panels of [`PANEL`] columns, each
//! `k × PANEL` contiguous (so `B` streams through the cache without the 4 KB-stride
//! conflicts of reading a wide row-major matrix down its columns), and [`gemm()`] runs every
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

/// Packs `B` (`k × n`) into column panels for [`gemm()`]: `out[(p·k + i)·PANEL + c] =
/// B[i, p·PANEL + c]` (zero past column `n`). `B[i, j]` is `b[i·row_stride +
/// j·col_stride]` — `(ld, 1)` for a row-major `B`, `(1, ld)` for the transpose of a
/// row-major `n × k` matrix.
pub fn pack(b: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize, out: &mut [f32]) {
    assert!(out.len() >= packed_len(k, n));
    assert!(
        k == 0 || n == 0 || (k - 1) * row_stride + (n - 1) * col_stride < b.len(),
        "small_gemm::pack: B out of bounds"
    );
    // Compiled for the CPU's widest vectors; full rows and tiles copied with constant
    // lengths (vector moves, not calls to memcpy per row).
    crate::simd::simd(
        #[inline(always)]
        || pack_panels(b, k, n, row_stride, col_stride, out),
    )
}

/// Packs a row-major `rows × cols` matrix `W` both ways in one pass over it: `wt` as
/// [`pack`] packs `Wᵀ` (`k = cols`, `n = rows`) and `w_out` as [`pack`] packs `W` itself
/// (`k = rows`, `n = cols`) — the same values, so the same bits, as the two calls, but
/// `W` is read once (the char-LSTM packs its `W_hh` right after the update has written
/// it, when it is out of the nearer caches). When `rows` or `cols` is not a multiple of
/// [`PANEL`] it is the two calls.
pub fn pack_both(w: &[f32], rows: usize, cols: usize, wt: &mut [f32], w_out: &mut [f32]) {
    assert!(
        w.len() >= rows * cols,
        "small_gemm::pack_both: W out of bounds"
    );
    if !rows.is_multiple_of(PANEL) || !cols.is_multiple_of(PANEL) {
        pack(w, cols, rows, 1, cols, wt);
        pack(w, rows, cols, cols, 1, w_out);
        return;
    }
    assert!(wt.len() >= packed_len(cols, rows) && w_out.len() >= packed_len(rows, cols));
    crate::simd::simd(
        #[inline(always)]
        || pack_both_tiles(w, rows, cols, wt, w_out),
    )
}

#[inline(always)]
fn pack_both_tiles(w: &[f32], rows: usize, cols: usize, wt: &mut [f32], w_out: &mut [f32]) {
    // 16 × 16 tiles of W, read row by row once: each row goes to `w_out` as it is, and
    // the tile's columns go to `wt` through a local transpose.
    const T: usize = 16;
    let mut tile = [[0.0f32; T]; T];
    for i0 in (0..rows).step_by(T) {
        for j0 in (0..cols).step_by(T) {
            let (p, c) = (j0 / PANEL, j0 % PANEL);
            for (i, t) in tile.iter_mut().enumerate() {
                t.copy_from_slice(&w[(i0 + i) * cols + j0..][..T]);
                w_out[(p * rows + i0 + i) * PANEL + c..][..T].copy_from_slice(t);
            }
            // `wt`: B = Wᵀ, so B[j, i] = W[i, j] sits in panel i / PANEL, row j.
            let (q, ci) = (i0 / PANEL, i0 % PANEL);
            for j in 0..T {
                let row = &mut wt[(q * cols + j0 + j) * PANEL + ci..][..T];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = tile[i][j];
                }
            }
        }
    }
}

#[inline(always)]
fn pack_panels(
    b: &[f32],
    k: usize,
    n: usize,
    row_stride: usize,
    col_stride: usize,
    out: &mut [f32],
) {
    for (p, panel) in out[..packed_len(k, n)]
        .chunks_exact_mut(k * PANEL)
        .enumerate()
    {
        let (j0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
        if col_stride == 1 {
            for (i, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                if width == PANEL {
                    row.copy_from_slice(&b[i * row_stride + j0..][..PANEL]);
                } else {
                    row[..width].copy_from_slice(&b[i * row_stride + j0..][..width]);
                    row[width..].fill(0.0);
                }
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
                        if c0 + c < width && ni == T {
                            t.copy_from_slice(&b[i0 + (j0 + c0 + c) * col_stride..][..T]);
                        } else if c0 + c < width {
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
    gemm_prefetching(m, n, k, a, lda, packed, dst, ldd, accumulate, &[])
}

/// [`gemm()`], which also asks for the cache lines of the slices in `ahead` while it runs
/// (a hint only; the result is the same bits as [`gemm()`]'s): one line every few `k` steps
/// of its full register tiles, in order, so that a caller's next pass over those slices
/// finds them in cache. The char-LSTM names the buffers of the next time step's pointwise
/// pass — tens of kilobytes in 4 KB pages scattered over megabytes, which the hardware
/// prefetchers (which stop at page boundaries) leave to be missed one page at a time.
#[allow(clippy::too_many_arguments)]
pub fn gemm_prefetching(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    ahead: &[&[f32]],
) {
    if m == 0 || n == 0 {
        return;
    }
    let fits = |len: usize, rows: usize, cols: usize, ld: usize| {
        cols <= ld && (rows - 1) * ld + cols <= len
    };
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
        packed,
        dst,
        ldd,
        accumulate,
        ahead,
    })
}

/// Cache lines of a list of slices, handed out one at a time.
struct Lines<'a> {
    slices: &'a [&'a [f32]],
    /// The current slice and the next value of it to ask for.
    at: usize,
    next: usize,
}

/// `f32` values per 64-byte cache line.
const LINE: usize = 16;

impl Lines<'_> {
    /// Lines left (from a slice's start, one per [`LINE`] values, plus its last value's).
    fn count(&self) -> usize {
        self.slices.iter().map(|s| s.len().div_ceil(LINE) + 1).sum()
    }

    /// Prefetches the next line, if any.
    #[inline(always)]
    fn fetch_next(&mut self) {
        while let Some(s) = self.slices.get(self.at) {
            if self.next < s.len() + LINE {
                prefetch(s, self.next.min(s.len().saturating_sub(1)));
                self.next += LINE;
                return;
            }
            self.at += 1;
            self.next = 0;
        }
    }
}

struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    lda: usize,
    packed: &'a [f32],
    dst: &'a mut [f32],
    ldd: usize,
    accumulate: bool,
    ahead: &'a [&'a [f32]],
}

impl pulp::WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // Rows per tile × vectors per panel: as many accumulators as the registers hold.
        match S::F32_LANES {
            16 => self.run::<S, 10, 2>(s),
            8 => self.run::<S, 3, 4>(s),
            _ => self.run::<S, 1, PANEL>(s),
        }
    }
}

impl Product<'_> {
    /// `R` rows per register tile, `V` vectors per panel (`V · lanes = PANEL`).
    #[inline(always)]
    fn run<S: Simd, const R: usize, const V: usize>(self, s: S) {
        let Self {
            m,
            n,
            k,
            a,
            lda,
            packed,
            dst,
            ldd,
            accumulate,
            ahead,
        } = self;
        let lanes = S::F32_LANES;
        assert!(V * lanes == PANEL);
        let mut lines = Lines {
            slices: ahead,
            at: 0,
            next: 0,
        };
        // One line every `every` k steps of the full tiles: spread over the product.
        let full_tiles = n.div_ceil(PANEL) * (m / R);
        let steps = (full_tiles * k).max(1);
        let every = match lines.count() {
            0 => usize::MAX,
            c => (steps / c).max(1),
        };
        let mut countdown = every;
        for (p, panel) in packed[..packed_len(k, n)]
            .chunks_exact(k * PANEL)
            .enumerate()
        {
            let (j0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
            for i0 in (0..m).step_by(R) {
                let rows = R.min(m - i0);
                if accumulate {
                    // The tile's rows of `dst`, read at its end, may be anywhere in
                    // memory (the char-LSTM's gate buffers are megabytes): ask for them
                    // now, while the tile's k steps run.
                    for i in 0..rows {
                        let out = &dst[(i0 + i) * ldd + j0..][..width];
                        for off in [0, width / 2, width - 1] {
                            prefetch(out, off);
                        }
                    }
                }
                let zero = s.splat_f32s(0.0);
                // Assigned whole by either branch, never zeroed first: built before the
                // branch, this array (indexed by the run-time row count at the end, so on
                // the stack) was cleared by a call to `memset` every tile.
                let acc: [[S::f32s; V]; R];
                if rows == R {
                    // A full tile: constant loop bounds, accumulators in registers.
                    let mut arows: [&[f32]; R] = [&[]; R];
                    for (i, r) in arows.iter_mut().enumerate() {
                        *r = &a[(i0 + i) * lda..][..k];
                    }
                    // Accumulators indexed by constants only, so they live in registers.
                    let mut t = [[zero; V]; R];
                    for (q, brow) in panel.chunks_exact(PANEL).enumerate() {
                        countdown -= 1;
                        if countdown == 0 {
                            countdown = every;
                            lines.fetch_next();
                        }
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
                    let mut p = [[zero; V]; R];
                    for (q, brow) in panel.chunks_exact(PANEL).enumerate() {
                        let bv: [S::f32s; V] = vectors::<S, V>(brow);
                        for (i, acc) in p.iter_mut().enumerate().take(rows) {
                            let x = s.splat_f32s(a[(i0 + i) * lda + q]);
                            for v in 0..V {
                                acc[v] = s.mul_add_f32s(x, bv[v], acc[v]);
                            }
                        }
                    }
                    acc = p;
                }
                for (i, acc) in acc.iter().enumerate().take(rows) {
                    store_row(s, &mut dst[(i0 + i) * ldd + j0..], width, acc, accumulate);
                }
            }
        }
    }
}

/// One row of a tile into `out` (its first `width` values): added to what is there
/// when `accumulate`, else written.
#[inline(always)]
fn store_row<S: Simd, const V: usize>(
    s: S,
    out: &mut [f32],
    width: usize,
    acc: &[S::f32s; V],
    accumulate: bool,
) {
    let lanes = S::F32_LANES;
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

/// Asks for the cache line of `row[ahead]` (a hint only: an address past the end of the
/// buffer is never read). Into L1: asking for the look-ahead lines only into L2 was
/// tried and read no faster (docs/benchmarks.md, 6 Dec 2026).
#[inline(always)]
fn prefetch(row: &[f32], ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = row.as_ptr().wrapping_add(ahead) as *const i8;
        // SAFETY: prefetching never faults and reads nothing the program sees.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, ahead);
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

    /// One pass packing `W` and `Wᵀ` gives what the two [`pack`] calls give, for
    /// panel-multiple shapes (the tiled path) and ragged ones (the two calls).
    #[test]
    fn pack_both_is_the_two_packs() {
        for (rows, cols) in [(1024, 256), (64, 32), (32, 96), (12, 40), (5, 3)] {
            let w = values(rows * cols, 7);
            let (mut t1, mut b1) = (
                vec![1.0; packed_len(cols, rows)],
                vec![1.0; packed_len(rows, cols)],
            );
            pack(&w, cols, rows, 1, cols, &mut t1);
            pack(&w, rows, cols, cols, 1, &mut b1);
            let (mut t2, mut b2) = (
                vec![f32::NAN; packed_len(cols, rows)],
                vec![f32::NAN; packed_len(rows, cols)],
            );
            pack_both(&w, rows, cols, &mut t2, &mut b2);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&t1), bits(&t2), "Wᵀ {rows}×{cols}");
            assert_eq!(bits(&b1), bits(&b2), "W {rows}×{cols}");
        }
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
                // Prefetching other slices meanwhile changes nothing.
                let mut again = init.clone();
                let (x, y) = (values(100, 4), values(3, 5));
                let ahead: [&[f32]; 4] = [&x, &[], &y, &a];
                gemm_prefetching(m, n, k, &a, lda, &p1, &mut again, ldd, accumulate, &ahead);
                assert!(got
                    .iter()
                    .zip(&again)
                    .all(|(g, a)| g.to_bits() == a.to_bits()));
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
}
