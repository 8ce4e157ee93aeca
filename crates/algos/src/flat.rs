//! Cache-blocked, parallel kernels over flat parameter buffers for aggregation.
//!
//! [`weighted_sum_with_stats`] computes `Δ̄ = Σ_k c_{k,g} Δ_k` together with every
//! statistic the round record needs (‖Δ̄‖², ‖Δ_k‖², Δ_k·Δ̄) in **one pass over the
//! client updates**: the buffer is cut into fixed blocks of [`BLOCK`] values; for each
//! block the weighted sum is formed first, then the dot products and squared norms are
//! taken while the clients' blocks are still in cache. The naive sequence (sum, then a
//! norm and a dot per client) streams every update three times and its scalar f64
//! reductions do not vectorise.
//!
//! Determinism: each value of Δ̄ is summed over clients in client order starting from
//! 0 — exactly as the plain loop does, bit for bit. The statistics are summed in 16 f32
//! lanes within a block (see [`dot_sq`]) and in f64 over blocks in block order; blocks are fixed by
//! [`BLOCK`], not by the thread count, so results are the same on any number of threads.

use fedpace_params::ParamSpec;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Values per block: 16384 f32 = 64 KiB per client, so ten clients' blocks stay in L2.
pub const BLOCK: usize = 16384;

/// `(Δ̄, ‖Δ̄‖², [(Δ_k·Δ̄, ‖Δ_k‖²)])` for updates `deltas` with per-group coefficients
/// `coef[k][group]`.
pub fn weighted_sum_with_stats(
    spec: &ParamSpec,
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
) -> (Vec<f32>, f64, Vec<(f64, f64)>) {
    let len = spec.total_len();
    let k = deltas.len();
    // Not `vec![0; len]`: that zeroes all of Δ̄ up front (calloc's memset, or fresh pages),
    // an extra pass through memory. Each block is zeroed just before it is summed, while
    // it is in cache.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // Per-entry (start, end, group), in offset order.
    let segs: Vec<(usize, usize, usize)> = spec
        .entries()
        .iter()
        .map(|e| {
            let r = e.range();
            (r.start, r.end, e.group)
        })
        .collect();
    let partials: Vec<(f64, Vec<(f64, f64)>)> = out.spare_capacity_mut()[..len]
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(b, raw)| {
            for v in raw.iter_mut() {
                v.write(0.0);
            }
            // SAFETY: every value of `raw` was just initialised, and MaybeUninit<f32> has
            // the layout of f32.
            let block = unsafe { &mut *(raw as *mut [MaybeUninit<f32>] as *mut [f32]) };
            block_stats(&segs, deltas, coef, b * BLOCK, block)
        })
        .collect();
    // SAFETY: the blocks above initialised all `len` values.
    unsafe { out.set_len(len) };
    let mut agg = 0f64;
    let mut stats = vec![(0f64, 0f64); k];
    for (a, s) in partials {
        agg += a;
        for (t, p) in stats.iter_mut().zip(s) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    (out, agg, stats)
}

/// One block: the weighted sum into `block` (values `a..a + block.len()`), then
/// `(‖block‖², [(Δ_k·block, ‖Δ_k‖²)])`. Runs the AVX-512 or AVX2 build of the same code
/// where the CPU has it (no FMA contraction: Rust never fuses `a·b + c` on its own, and
/// the 16 accumulation lanes of [`dot_sq`] are fixed by the code, not by the vector
/// width, so the values are the same as the portable build's, bit for bit).
fn block_stats(
    segs: &[(usize, usize, usize)],
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
    a: usize,
    block: &mut [f32],
) -> (f64, Vec<(f64, f64)>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { block_stats_avx512(segs, deltas, coef, a, block) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { block_stats_avx2(segs, deltas, coef, a, block) };
        }
    }
    block_stats_generic(segs, deltas, coef, a, block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_stats_avx2(
    segs: &[(usize, usize, usize)],
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
    a: usize,
    block: &mut [f32],
) -> (f64, Vec<(f64, f64)>) {
    block_stats_generic(segs, deltas, coef, a, block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_stats_avx512(
    segs: &[(usize, usize, usize)],
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
    a: usize,
    block: &mut [f32],
) -> (f64, Vec<(f64, f64)>) {
    // SAFETY (of the calls): this function only runs where AVX-512F is available.
    block_stats_with(segs, deltas, coef, a, block, |x, y| unsafe {
        dot_sq_avx512(x, y)
    })
}

/// [`dot_sq`] in AVX-512 registers: lane j of the two accumulators is exactly `d[j]`,
/// `s[j]` of the portable code (multiply, then add; no fused multiply-add), so the
/// values are the same bit for bit. LLVM does not vectorise the portable loop (it keeps
/// the 32 accumulators on the stack), which made the statistics 4× slower than the sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_sq_avx512(a: &[f32], b: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    const L: usize = 16;
    let n = a.len().min(b.len());
    let full = n / L * L;
    let (mut d, mut s) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut c = 0;
    while c < full {
        // SAFETY: c + 16 <= full <= n, the length of both slices.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(a.as_ptr().add(c)),
                _mm512_loadu_ps(b.as_ptr().add(c)),
            )
        };
        d = _mm512_add_ps(d, _mm512_mul_ps(x, y));
        s = _mm512_add_ps(s, _mm512_mul_ps(x, x));
        c += L;
    }
    let (mut dl, mut sl) = ([0f32; L], [0f32; L]);
    // SAFETY: both arrays hold 16 f32.
    unsafe {
        _mm512_storeu_ps(dl.as_mut_ptr(), d);
        _mm512_storeu_ps(sl.as_mut_ptr(), s);
    }
    finish_dot_sq(dl, sl, &a[full..n], &b[full..n])
}

#[inline(always)]
fn block_stats_generic(
    segs: &[(usize, usize, usize)],
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
    a: usize,
    block: &mut [f32],
) -> (f64, Vec<(f64, f64)>) {
    block_stats_with(segs, deltas, coef, a, block, dot_sq)
}

#[inline(always)]
fn block_stats_with(
    segs: &[(usize, usize, usize)],
    deltas: &[&[f32]],
    coef: &[Vec<f32>],
    a: usize,
    block: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> (f64, f64),
) -> (f64, Vec<(f64, f64)>) {
    let end = a + block.len();
    let first = segs.partition_point(|s| s.1 <= a);
    for &(s0, s1, g) in segs[first..].iter().take_while(|s| s.0 < end) {
        let (lo, hi) = (s0.max(a), s1.min(end));
        let dst = &mut block[lo - a..hi - a];
        for (d, c) in deltas.iter().zip(coef) {
            let ck = c[g];
            for (y, x) in dst.iter_mut().zip(&d[lo..hi]) {
                *y += ck * x;
            }
        }
    }
    let agg = dot(block, block).0;
    let mut stats = Vec::with_capacity(deltas.len());
    for d in deltas {
        stats.push(dot(&d[a..end], block));
    }
    (agg, stats)
}

/// `(a·b, a·a)` of one block: accumulated in 16 f32 lanes (vectorises without any
/// conversion), the lanes summed in f64 in order. Over a block of [`BLOCK`] values each
/// lane adds 1024 terms, so the relative error stays near 1e-5 — these are diagnostics
/// (norms and cosines of the round record), never parameters.
#[inline(always)]
pub fn dot_sq(a: &[f32], b: &[f32]) -> (f64, f64) {
    const L: usize = 16;
    let mut d = [0f32; L];
    let mut s = [0f32; L];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n / L * L;
    for c in (0..full).step_by(L) {
        let (x, y) = (&a[c..c + L], &b[c..c + L]);
        for j in 0..L {
            d[j] += x[j] * y[j];
            s[j] += x[j] * x[j];
        }
    }
    finish_dot_sq(d, s, &a[full..], &b[full..])
}

/// The tail (fewer than 16 values) into lanes 0.., then the lanes summed in f64 in order.
#[inline(always)]
fn finish_dot_sq(mut d: [f32; 16], mut s: [f32; 16], a: &[f32], b: &[f32]) -> (f64, f64) {
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        d[j] += x * y;
        s[j] += x * x;
    }
    (
        d.iter().map(|&v| v as f64).sum(),
        s.iter().map(|&v| v as f64).sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_loops() {
        let spec = ParamSpec::builder()
            .add("a", &[5000], "body")
            .add("b", &[3], "head")
            .add("c", &[7000], "body")
            .build()
            .unwrap();
        let n = spec.total_len();
        let deltas: Vec<Vec<f32>> = (0..3)
            .map(|k| {
                (0..n)
                    .map(|i| ((i * 7 + k * 13) % 101) as f32 * 0.01 - 0.5)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
        let coef = vec![vec![0.5f32, 0.1], vec![0.25, 0.7], vec![0.25, 0.2]];
        let (out, agg, stats) = weighted_sum_with_stats(&spec, &refs, &coef);
        // Plain loops: same per-value order, so bit-identical sums.
        let mut want = vec![0f32; n];
        for (d, c) in refs.iter().zip(&coef) {
            for e in spec.entries() {
                for i in e.range() {
                    want[i] += c[e.group] * d[i];
                }
            }
        }
        assert_eq!(out, want);
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * y.abs().max(1.0);
        assert!(close(agg, want.iter().map(|&v| v as f64 * v as f64).sum()));
        for (d, (dt, sq)) in refs.iter().zip(&stats) {
            assert!(close(*dt, fedpace_params::dot(d, &want)));
            assert!(close(*sq, fedpace_params::l2_norm(d).powi(2)));
        }
        // Thread count does not matter.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = pool.install(|| weighted_sum_with_stats(&spec, &refs, &coef));
        assert_eq!(one.0, out);
        assert_eq!(one.1.to_bits(), agg.to_bits());
        assert_eq!(one.2, stats);
    }

    /// The SIMD builds (AVX-512 / AVX2 where the CPU has them) give the portable build's
    /// values bit for bit, statistics included: results do not depend on the machine.
    #[test]
    fn simd_builds_match_the_portable_build_bit_for_bit() {
        let segs = vec![(0, 3000, 0), (3000, 3007, 1), (3007, BLOCK + 5, 0)];
        let deltas: Vec<Vec<f32>> = (0..4)
            .map(|k| {
                (0..BLOCK + 5)
                    .map(|i| (((i * 37 + k * 11) % 997) as f32).sin() * 1e-2)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
        let coef = vec![vec![0.3f32, 0.9]; 4];
        for (a, len) in [(0, BLOCK), (BLOCK, 5)] {
            let (mut x, mut y) = (vec![0f32; len], vec![0f32; len]);
            let fast = block_stats(&segs, &refs, &coef, a, &mut x);
            let portable = block_stats_generic(&segs, &refs, &coef, a, &mut y);
            assert_eq!(x, y);
            assert_eq!(fast.0.to_bits(), portable.0.to_bits());
            assert_eq!(fast.1, portable.1);
        }
    }
}
