//! A bounds-checked wrapper around the `gemm` crate's f32 kernel.
//!
//! `gemm::gemm` takes raw pointers and strides; every call in this crate goes through
//! [`sgemm`], which checks that each strided matrix fits inside its slice first, so the
//! only `unsafe` block in the crate is here.

use gemm::Parallelism;

/// A read-only strided view of a row-major or transposed f32 matrix.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A mutable strided view of an f32 matrix.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
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

fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * row_stride + (cols - 1) * col_stride < len
}

/// `dst ← lhs·rhs`, or `dst ← dst + lhs·rhs` when `accumulate`.
///
/// Panics if the shapes disagree or a view does not fit its slice (a bug in this crate,
/// never a user error: shapes are validated before any kernel runs).
pub(crate) fn sgemm(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "sgemm: shape mismatch"
    );
    assert!(
        dst.fits() && lhs.fits() && rhs.fits(),
        "sgemm: view out of bounds"
    );
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
    // which `fits` checked against each slice's length; `dst` is borrowed mutably, so it
    // cannot alias `lhs` or `rhs`.
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
            Parallelism::None,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-4);
            }
        }
    }
}
