//! Run-time dispatch to wide vector instructions for the slice kernels.
//!
//! The workspace builds for baseline x86-64; [`simd`] runs a closure inside `pulp`'s
//! target-feature function for the best instruction set of this CPU (AVX-512 or AVX2 +
//! FMA, detected at run time), so the compiler's auto-vectorisation of the
//! `#[inline(always)]` loops inside it can use wide registers. Each value is computed
//! by the same sequence of IEEE operations whatever the vector width (no sum is
//! reordered; `mul_add` is a fused multiply-add on every path), so results never
//! depend on the machine's vector width.

/// Runs `f` compiled for the best vector instruction set of this CPU: `f` is inlined
/// into `pulp`'s target-feature function, and so are the `#[inline(always)]` helpers it
/// calls.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Op<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Op(f))
}
