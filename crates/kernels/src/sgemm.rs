//! A bounds-checked wrapper around the `gemm` crate's f32 kernel.
//!
//! `gemm::gemm` takes raw pointers and strides; every call in fedpace goes through
//! [`sgemm`], which checks that each strided matrix fits inside its slice first (with
//! checked arithmetic) and that the destination never maps two elements to one value,
//! so the only `unsafe` block of the GEMM path is here. The views' fields are private:
//! a view is made by its constructors and checked by `sgemm` before any pointer is used.
//!
//! The `gemm` crate's speed depends on the operands' orientation far more than on their
//! shape: on the FedAvg-CNN shapes the slow orientation of the same product runs at
//! 55–65 % of the fast one (`cargo run --release -p fedpace-kernels --example
//! gemm_shapes` prints both). Callers pick layouts so that the fast one applies.

use gemm::Parallelism;

/// A read-only strided view of a row-major or transposed f32 matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The values; element `(i, j)` is `data[i·row_stride + j·col_stride]`.
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable strided view of an f32 matrix.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The values; element `(i, j)` is `data[i·row_stride + j·col_stride]`.
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// `rows × cols`, row-major with leading dimension `ld`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: ld,
            col_stride: 1,
        }
    }

    /// The transpose of a `cols × rows` row-major matrix with leading dimension `ld`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: ld,
        }
    }

    fn fits(&self) -> bool {
        fits(
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

impl<'a> MatMut<'a> {
    /// `rows × cols`, row-major with leading dimension `ld`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: ld,
            col_stride: 1,
        }
    }

    /// `rows × cols` stored as the transpose of a `cols × rows` row-major matrix with
    /// leading dimension `ld` (column-major).
    pub fn transposed(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: ld,
        }
    }

    fn fits(&self) -> bool {
        fits(
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }

    /// Whether distinct elements are distinct values of `data` (a destination written
    /// from several threads must not alias itself). Sufficient, not necessary: the rows
    /// (or the columns) must not interleave.
    fn is_injective(&self) -> bool {
        let (r, c, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        if r <= 1 || c <= 1 {
            return (r <= 1 || rs >= 1) && (c <= 1 || cs >= 1);
        }
        let spans = |stride: usize, n: usize, other: usize| {
            stride >= 1 && (n - 1).checked_mul(stride).is_some_and(|span| other > span)
        };
        spans(cs, c, rs) || spans(rs, r, cs)
    }
}

/// Whether every index `i·row_stride + j·col_stride` (i < rows, j < cols) is below
/// `len`, in checked arithmetic (an overflow is "no"), with strides that fit an `isize`
/// (what the kernel takes).
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if isize::try_from(row_stride).is_err() || isize::try_from(col_stride).is_err() {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(row_stride)
        .zip((cols - 1).checked_mul(col_stride))
        .and_then(|(a, b)| a.checked_add(b))
        .is_some_and(|last| last < len)
}

/// `dst ← lhs·rhs`, or `dst ← dst + lhs·rhs` when `accumulate`, on `threads` threads of
/// the current rayon pool (0 or 1: the calling thread only).
///
/// With more than one thread the `gemm` crate splits the **output** among them, never
/// the sum over the inner dimension, so the result does not depend on `threads`.
///
/// Panics if the shapes disagree, a view does not fit its slice, or the destination maps
/// two elements to one value (a bug in the caller, never a user error: shapes are
/// validated before any kernel runs).
///
/// ```
/// use fedpace_kernels::{sgemm, MatMut, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let mut c = [0.0f32; 4];
/// // c = a · aᵀ
/// sgemm(
///     MatMut::row_major(&mut c, 2, 2, 2),
///     MatRef::row_major(&a, 2, 2, 2),
///     MatRef::transposed(&a, 2, 2, 2),
///     false,
///     1,
/// );
/// assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// ```
pub fn sgemm(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool, threads: usize) {
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "sgemm: shape mismatch"
    );
    assert!(
        dst.fits() && lhs.fits() && rhs.fits(),
        "sgemm: view out of bounds"
    );
    assert!(dst.is_injective(), "sgemm: destination aliases itself");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.row_stride + j * dst.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: every index the kernel touches is (i·rs + j·cs) with i < rows, j < cols,
    // which `fits` checked against each slice's length without overflow (strides fit an
    // isize); `dst` maps distinct elements to distinct values (`is_injective`), so threads
    // writing different elements never write the same memory; `dst` is borrowed mutably,
    // so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Safe code must not be able to make `sgemm` read or write out of bounds, or write
    /// one value from several threads: every view that tries panics before the kernel.
    #[test]
    fn sgemm_rejects_views_that_would_break_memory_safety() {
        let attempt = |f: &(dyn Fn() + std::panic::RefUnwindSafe)| {
            std::panic::catch_unwind(f).expect_err("must be rejected");
        };
        let a = [1.0f32; 8];
        // Strides whose products wrap to index 0 in unchecked arithmetic: 4 · 2^62 = 2^64.
        let wraps = 1usize << 62;
        attempt(&|| {
            let mut c = [0.0f32; 1];
            sgemm(
                MatMut::row_major(&mut c, 1, 1, 1),
                MatRef::row_major(&a, 1, 5, 5),
                MatRef::row_major(&a, 5, 1, wraps),
                false,
                1,
            )
        });
        attempt(&|| {
            let mut c = [0.0f32; 8];
            sgemm(
                MatMut::transposed(&mut c, 1, 5, wraps),
                MatRef::row_major(&a, 1, 1, 1),
                MatRef::row_major(&a, 1, 5, 5),
                false,
                1,
            )
        });
        // A leading dimension past the slice.
        attempt(&|| {
            let mut c = [0.0f32; 4];
            sgemm(
                MatMut::row_major(&mut c, 2, 2, 3),
                MatRef::row_major(&a, 2, 2, 2),
                MatRef::row_major(&a, 2, 2, 2),
                false,
                1,
            )
        });
        // Destinations that alias themselves: a zero leading dimension, and rows that
        // interleave.
        for ld in [0usize, 1] {
            attempt(&move || {
                let mut c = [0.0f32; 64];
                sgemm(
                    MatMut::row_major(&mut c, 4, 4, ld),
                    MatRef::row_major(&a, 4, 1, 1),
                    MatRef::row_major(&a, 1, 4, 1),
                    false,
                    2,
                )
            });
        }
        // The same shapes with sound strides run.
        let mut c = [0.0f32; 16];
        sgemm(
            MatMut::row_major(&mut c, 4, 4, 4),
            MatRef::row_major(&a, 4, 1, 1),
            MatRef::row_major(&a, 1, 4, 1),
            false,
            2,
        );
        assert_eq!(c, [1.0; 16]);
    }

    #[test]
    fn matches_naive_product_with_transposes() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 * 0.25).collect();
        // dst = A (m×k, row-major) · Bᵀ where B is n×k row-major.
        let mut dst = vec![1.0f32; m * n];
        sgemm(
            MatMut::row_major(&mut dst, m, n, n),
            MatRef::row_major(&a, m, k, k),
            MatRef::transposed(&b, k, n, k),
            true,
            1,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-4);
            }
        }
    }

    /// The thread count splits the output, never a sum: every FedAvg-CNN product (and a
    /// product with a sample count that is not a multiple of anything) gives the same
    /// bits on 1, 2, 3 and 4 threads, so the CNN may use as many threads as are free.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        // (m, n, k, transposed lhs): fc1 forward (W·Aᵀ), fc1 input gradient, fc1 weight
        // gradient (dHᵀ·A), conv2 forward, a ragged one.
        for (m, n, k, tl) in [
            (512, 32, 3136, false),
            (32, 3136, 512, false),
            (512, 3136, 32, true),
            (392, 64, 800, false),
            (37, 129, 301, true),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5)
                .collect();
            let lhs = if tl {
                MatRef::transposed(&a, m, k, m)
            } else {
                MatRef::row_major(&a, m, k, k)
            };
            let run = |threads: usize| {
                let mut dst = vec![0f32; m * n];
                pool.install(|| {
                    sgemm(
                        MatMut::row_major(&mut dst, m, n, n),
                        lhs,
                        MatRef::row_major(&b, k, n, n),
                        false,
                        threads,
                    )
                });
                dst
            };
            let one = run(1);
            for t in 2..=4 {
                assert!(run(t) == one, "{m}×{n}×{k} differs on {t} threads");
            }
        }
    }
}
