//! The AVX-512 register tile shared by the dedicated product kernels
//! ([`crate::wino_products`], [`crate::dense_backward`]): a block of `R` rows × `16·NV`
//! columns of `A·B`, each value an in-order sum of fused multiply-adds from zero, then
//! stored, added or stepped into its destination ([`Out`]). One kernel, so that both
//! callers' bits come from the same sequence of operations.

/// Whether this CPU has AVX-512F, detected at run time.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::{block, Out};

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// What a block does with its sums `s` at its destination `c`.
    #[derive(Clone, Copy)]
    pub(crate) enum Out {
        /// `c ← s`.
        Store,
        /// `c ← c + s`.
        Add,
        /// `c ← c + s·r` (an f32 product, then an f32 sum).
        Step(__m512),
    }

    /// `R` rows × `16·NV` columns of `A·B` (`A`'s element `(i, p)` at
    /// `a[i·a_rs + p·a_cs]`, `B` row-major with row stride `b_rs`), each an in-order sum
    /// of fused multiply-adds from zero over `p = 0..k`, then put at `c` (row stride
    /// `c_rs`) as `o` says.
    ///
    /// # Safety
    /// AVX-512F must be available and every index formed inside its buffer.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn block<const R: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        c_rs: usize,
        o: Out,
    ) {
        let mut s = [[_mm512_setzero_ps(); NV]; R];
        for p in 0..k {
            let bp = b.add(p * b_rs);
            let mut bv = [_mm512_setzero_ps(); NV];
            for (j, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(bp.add(16 * j));
            }
            let ap = a.add(p * a_cs);
            for (i, si) in s.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(i * a_rs));
                for (sij, &bj) in si.iter_mut().zip(&bv) {
                    *sij = _mm512_fmadd_ps(x, bj, *sij);
                }
            }
        }
        for (i, si) in s.iter().enumerate() {
            for (j, &sij) in si.iter().enumerate() {
                let d = c.add(i * c_rs + 16 * j);
                let v = match o {
                    Out::Store => sij,
                    Out::Add => _mm512_add_ps(_mm512_loadu_ps(d), sij),
                    Out::Step(r) => _mm512_add_ps(_mm512_loadu_ps(d), _mm512_mul_ps(sij, r)),
                };
                _mm512_storeu_ps(d, v);
            }
        }
    }
}
