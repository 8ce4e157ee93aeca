//! The backward pass of a fully connected layer `Y = X·Wᵀ` over a batch together with
//! the plain-SGD step of its weight, in one pass over the weight, the weight gradient
//! never stored (docs/arch/0038-fc1-backward-sgd-step.md).
//!
//! For `X: [n, inp]`, `W: [out, inp]` and `dY: [n, out]` (all row-major):
//!
//! - the input gradient `dX = dY·W` (from the old `W`) is summed over chunks of `chunk`
//!   rows of `W`, each chunk's product an in-order sum of fused multiply-adds from zero,
//!   added to the running value in chunk order (the first chunk stored);
//! - each value of the weight gradient `dW = dYᵀ·X`, one in-order sum of fused
//!   multiply-adds from zero over the batch, is applied as `W ← W + dW·(−η)`, an f32
//!   product then an f32 sum: the bits `ScaleByRate` leaves after the gradient is
//!   written.
//!
//! These are the `gemm` crate's bits for the same products through [`crate::sgemm`]
//! (each output of its kernels is one in-order sum for inner dimensions this small; the
//! tests compare the two bit for bit), so a model moving from those calls and a separate
//! step to this pass keeps its results.
//!
//! On CPUs with AVX-512 the pass runs column strip by column strip of `W` (64 columns):
//! for each chunk of rows, the strip's part of `dX` (kept in the L1 cache for the whole
//! strip) is updated from the chunk's old weights, then the chunk's weight gradient is
//! formed in registers (4 rows × 64 columns a block, over the whole batch) and applied.
//! `W` is read once and written once, where the separate products and step read it three
//! times and write it once, and write a gradient as large and read it back. Strips are
//! split among threads (never a sum), so results do not depend on the thread count.
//! Without AVX-512, or with `inp` not a multiple of 64, the products go through
//! [`crate::sgemm`] (the gradient a chunk of rows at a time).
//!
//! Writing the gradient instead from the same kernel was slower than the `gemm` crate's
//! product (3.0–3.1 against 2.7–2.8 ms a batch of the FedAvg CNN's fc1 with the step
//! after, `fc1_pass` example, 6 Dec 2026), so models that must write the gradient keep
//! their products.

use crate::tile512::has_avx512;
use crate::{sgemm, MatMut, MatRef};
use rayon::prelude::*;

/// Columns of `W` per strip (4 vectors of 16).
const STRIP: usize = 64;

/// The backward pass of `Y = X·Wᵀ` with the plain-SGD step of `W` (module doc): writes
/// `dx` (`[n, inp]`) from the old `w` (`[out, inp]`), then steps `w` by `rate`. `chunk`
/// (≥ 1) is the number of rows of `W` per partial sum of `dX` (part of the numerics);
/// `threads` the most threads of the current rayon pool to use (0 or 1: the calling
/// thread).
///
/// Panics if a buffer is shorter than its shape or `chunk` is 0.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_sgd(
    n: usize,
    out: usize,
    inp: usize,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    w: &mut [f32],
    rate: f32,
    chunk: usize,
    threads: usize,
) {
    let fast = inp.is_multiple_of(STRIP) && has_avx512();
    dense_backward_sgd_on(fast, n, out, inp, dy, x, dx, w, rate, chunk, threads)
}

/// [`dense_backward_sgd`] by the strip kernel (`fast`, which needs AVX-512F and `inp` a
/// multiple of 64) or the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn dense_backward_sgd_on(
    fast: bool,
    n: usize,
    out: usize,
    inp: usize,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    w: &mut [f32],
    rate: f32,
    chunk: usize,
    threads: usize,
) {
    assert!(chunk > 0, "dense_backward_sgd: chunk must be at least 1");
    assert!(dy.len() >= n * out && x.len() >= n * inp && dx.len() >= n * inp);
    assert!(w.len() >= out * inp);
    if n == 0 || out == 0 || inp == 0 {
        // A zero gradient: W + 0·(−η) = W.
        dx[..n * inp].fill(0.0);
        return;
    }
    if fast {
        assert!(
            inp.is_multiple_of(STRIP) && has_avx512(),
            "dense_backward_sgd: the strip kernel needs AVX-512F and inp a multiple of 64"
        );
        #[cfg(target_arch = "x86_64")]
        {
            let p = Pass {
                n,
                out,
                inp,
                dy: dy.as_ptr(),
                x: x.as_ptr(),
                dx: dx.as_mut_ptr(),
                w: w.as_mut_ptr(),
                rate,
                chunk,
            };
            let strips = inp / STRIP;
            let parts = threads.clamp(1, strips);
            if parts == 1 {
                // SAFETY: AVX-512F is present, and every index the kernel forms is inside
                // the buffers (asserted above).
                unsafe { avx512::strips(&p, 0, strips) };
            } else {
                let per = strips.div_ceil(parts);
                (0..parts).into_par_iter().for_each(|t| {
                    let (a, b) = (t * per, ((t + 1) * per).min(strips));
                    // SAFETY: as above; the tasks' strips are disjoint columns of `dX` and
                    // `W`, so no two tasks touch the same value they write, and `dy`, `x`
                    // are only read.
                    unsafe { avx512::strips(&p, a, b) };
                });
            }
        }
        return;
    }
    // The `gemm` crate: `dX` chunk by chunk from the old weights, then the step, chunk
    // by chunk of rows through a buffer of their gradient.
    for (c, j0) in (0..out).step_by(chunk).enumerate() {
        let rows = chunk.min(out - j0);
        sgemm(
            MatMut::row_major(&mut dx[..n * inp], n, inp, inp),
            MatRef::row_major(&dy[j0..], n, rows, out),
            MatRef::row_major(&w[j0 * inp..], rows, inp, inp),
            c > 0,
            threads,
        );
    }
    let r = -rate;
    let rows = chunk.min(out);
    let mut g = vec![0f32; rows * inp];
    for j0 in (0..out).step_by(rows) {
        let m = rows.min(out - j0);
        sgemm(
            MatMut::row_major(&mut g[..m * inp], m, inp, inp),
            MatRef::transposed(&dy[j0..], m, n, out),
            MatRef::row_major(x, n, inp, inp),
            false,
            threads,
        );
        for (p, &u) in w[j0 * inp..][..m * inp].iter_mut().zip(&g) {
            *p += u * r;
        }
    }
}

/// The operands of one pass, as raw pointers shared by the strip tasks.
#[cfg(target_arch = "x86_64")]
struct Pass {
    n: usize,
    out: usize,
    inp: usize,
    dy: *const f32,
    x: *const f32,
    dx: *mut f32,
    w: *mut f32,
    /// The SGD rate η.
    rate: f32,
    chunk: usize,
}

// SAFETY: the pointers come from slices borrowed for the whole call; tasks write
// disjoint column strips (see `dense_backward_on`).
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for Pass {}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Pass, STRIP};
    use crate::tile512::{block, Out};
    use std::arch::x86_64::*;

    /// Vectors per block row (a strip).
    const NV: usize = STRIP / 16;
    /// Rows per register block.
    const R: usize = 4;

    /// Strips `a..b` of the pass: for each strip, chunk by chunk of rows, the chunk's
    /// part of `dX` from the old weights, then the chunk's step.
    ///
    /// # Safety
    /// AVX-512F must be available and the pass's buffers as `dense_backward_on` asserts.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strips(p: &Pass, a: usize, b: usize) {
        let (n, out, inp, chunk) = (p.n, p.out, p.inp, p.chunk);
        let step = Out::Step(_mm512_set1_ps(-p.rate));
        for t in a..b {
            let f0 = t * STRIP;
            for (c, j0) in (0..out).step_by(chunk).enumerate() {
                let rows = chunk.min(out - j0);
                // The next chunk's rows of this strip, ahead of their use (they lie
                // 4·inp bytes apart, too far for the hardware's prefetcher): 2.16–2.19
                // against 2.25–2.28 ms a batch of the CNN's fc1 (`fc1_pass`).
                let next = j0 + chunk;
                for j in next..(next + chunk).min(out) {
                    let q = p.w.add(j * inp + f0) as *const i8;
                    for l in 0..NV {
                        _mm_prefetch::<_MM_HINT_T0>(q.add(64 * l));
                    }
                }
                // dX[s, f] (+)= Σ_{j in chunk} dY[s, j]·W[j, f], from the old W.
                let o = if c == 0 { Out::Store } else { Out::Add };
                let mut s0 = 0;
                while s0 < n {
                    let (a, b, d) = (
                        p.dy.add(s0 * out + j0),
                        p.w.add(j0 * inp + f0),
                        p.dx.add(s0 * inp + f0),
                    );
                    if s0 + R <= n {
                        block::<R, NV>(rows, a, out, 1, b, inp, d, inp, o);
                        s0 += R;
                    } else {
                        block::<1, NV>(rows, a, out, 1, b, inp, d, inp, o);
                        s0 += 1;
                    }
                }
                // W[j, f] += (Σ_s dY[s, j]·X[s, f])·(−η).
                let mut j = j0;
                while j < j0 + rows {
                    let (a, b, d) = (p.dy.add(j), p.x.add(f0), p.w.add(j * inp + f0));
                    if j + R <= j0 + rows {
                        block::<R, NV>(n, a, 1, out, b, inp, d, inp, step);
                        j += R;
                    } else {
                        block::<1, NV>(n, a, 1, out, b, inp, d, inp, step);
                        j += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [−1, 1), with every third one zero (as after a ReLU) and some −0.
    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match i % 7 {
                    0 | 3 => 0.0,
                    5 if i % 2 == 0 => -0.0,
                    _ => ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0,
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The products as the plain-Rust CNN ran them before this pass: `dW` by one
    /// `sgemm` into the gradient, `dX` by chunked `sgemm` calls accumulated into a
    /// column-major buffer then transposed, and the step `p + g·(−η)` over the gradient.
    /// Returns (dX, stepped W).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        n: usize,
        out: usize,
        inp: usize,
        dy: &[f32],
        x: &[f32],
        w: &[f32],
        chunk: usize,
        rate: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut dw = vec![0f32; out * inp];
        sgemm(
            MatMut::row_major(&mut dw, out, inp, inp),
            MatRef::transposed(dy, out, n, out),
            MatRef::row_major(x, n, inp, inp),
            false,
            1,
        );
        let mut dx_t = vec![0f32; inp * n];
        for (c, j0) in (0..out).step_by(chunk).enumerate() {
            let rows = chunk.min(out - j0);
            sgemm(
                MatMut::transposed(&mut dx_t, n, inp, n),
                MatRef::row_major(&dy[j0..], n, rows, out),
                MatRef::row_major(&w[j0 * inp..], rows, inp, inp),
                c > 0,
                1,
            );
        }
        let mut dx = vec![0f32; n * inp];
        for s in 0..n {
            for f in 0..inp {
                dx[s * inp + f] = dx_t[f * n + s];
            }
        }
        let r = -rate;
        let stepped = w.iter().zip(&dw).map(|(&p, &g)| p + g * r).collect();
        (dx, stepped)
    }

    fn check(fast: bool, n: usize, out: usize, inp: usize, chunk: usize, threads: usize) {
        let dy = data(n * out, 1 + n as u64);
        let x: Vec<f32> = data(n * inp, 2).iter().map(|v| v.abs()).collect();
        let w = data(out * inp, 3);
        let rate = 0.05;
        let (rdx, rw) = reference(n, out, inp, &dy, &x, &w, chunk, rate);
        let what = format!("fast {fast}, {n}×{out}×{inp}, chunk {chunk}, {threads} threads");
        let mut dx = vec![f32::NAN; n * inp];
        let mut ws = w.clone();
        dense_backward_sgd_on(
            fast, n, out, inp, &dy, &x, &mut dx, &mut ws, rate, chunk, threads,
        );
        assert_eq!(bits(&dx), bits(&rdx), "dX, {what}");
        assert_eq!(bits(&ws), bits(&rw), "stepped W, {what}");
    }

    /// Both paths give the bits of the separate `gemm` crate products and SGD step, on
    /// the FedAvg CNN's fc1 (a batch of 32, 512 × 3136, chunks of 16 rows) and on shapes
    /// with a short last chunk, rows left over after the 4-row blocks, and one strip.
    #[test]
    fn the_pass_gives_the_separate_products_bits() {
        let fast = [false].into_iter().chain(has_avx512().then_some(true));
        for fast in fast {
            check(fast, 32, 512, 3136, 16, 1);
            check(fast, 17, 40, 128, 16, 1);
            check(fast, 3, 7, 64, 3, 1);
        }
    }

    /// Split among threads (strips for the kernel, the `gemm` crate's own split
    /// otherwise), the same bits.
    #[test]
    fn the_pass_does_not_depend_on_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let fast = [false].into_iter().chain(has_avx512().then_some(true));
            for fast in fast {
                check(fast, 32, 64, 448, 16, 3);
                check(fast, 9, 33, 192, 8, 2);
            }
        });
    }

    #[test]
    fn an_empty_batch_leaves_the_weight() {
        let (mut w, mut dx) = (vec![1.5; 12], vec![f32::NAN; 0]);
        dense_backward_sgd(0, 3, 4, &[], &[], &mut dx, &mut w, 0.1, 2, 1);
        assert!(w.iter().all(|&v| v == 1.5));
    }

    #[test]
    #[should_panic(expected = "chunk")]
    fn a_zero_chunk_panics() {
        let (mut w, mut dx) = (vec![1.0; 4], vec![0.0; 2]);
        dense_backward_sgd(
            1,
            2,
            2,
            &[1.0, 1.0],
            &[1.0, 1.0],
            &mut dx,
            &mut w,
            0.1,
            0,
            1,
        );
    }
}
