//! Fast CPU kernels for fedpace: slice kernels for models that run their own forward
//! and backward pass, and candle custom ops with their own backward.
//!
//! **Slice kernels** (used by the plain-Rust models of `fedpace_nn`, docs/arch/0006 and
//! docs/arch/0014): [`sgemm`], a bounds-checked wrapper around the `gemm` crate's f32
//! product on strided views ([`MatRef`], [`MatMut`]); in [`nhwc`], channels-last
//! convolution helpers ([`im2row`], [`row2im_add`] on zero-padded images, [`SameConv`])
//! and fused bias + ReLU + 2×2 max-pooling with its backward ([`Pool2x2`]); in
//! [`winograd4`], the transforms of a 5×5 convolution by Winograd F(4×4, 5×5) (the
//! FedAvg CNN's conv2) and their adjoints; in [`pointwise`], vectorised `exp`/σ/tanh, the LSTM cell's pointwise
//! forward and backward, bias + ReLU epilogues, sums and a blocked transpose; in
//! [`wino_products`] and [`dense_backward`], AVX-512 register-tile kernels for conv2's
//! position products and for a fully connected layer's backward pass with its SGD step
//! (the `gemm` crate's bits; docs/arch/0033, docs/arch/0038). The other slice kernels run
//! compiled for AVX-512 or AVX2 chosen at run time (through `pulp`), with the same
//! results on every vector width.
//!
//! **candle custom ops** (used by the candle reference CNN `fedpace_nn::CandleCnn`):
//! candle 0.11's CPU `conv2d` backward is ≈ 10× slower than PyTorch's: it runs the input
//! gradient as a transposed convolution and the weight gradient as a convolution with the
//! batch as channels, neither of which reaches its GEMM. [`conv2d`] instead lowers
//! forward and both gradients to three large GEMMs over an **im2col** matrix, run by the
//! same `gemm` crate candle uses:
//!
//! - forward `y = W·cols + b`, weight gradient `dW = dY·colsᵀ`, input gradient
//!   `dx = col2im(Wᵀ·dY)`;
//! - **memory cost**: the column matrix holds every input pixel `kh·kw` times (25× for a
//!   5×5 kernel), i.e. `4·C·kh·kw·OH·OW` bytes per sample. It is rebuilt in backward
//!   instead of being kept from forward, and samples are batched into one buffer of at
//!   most [`Conv2dConfig::im2col_budget_bytes`] (8 MiB by default) per thread, kept by
//!   the thread between calls (no page faults, no zeroing), so the
//!   extra memory is bounded, not proportional to the batch.
//!
//! [`relu_max_pool2x2`] / [`max_pool2x2`] replace candle's `relu` + `max_pool2d`, whose
//! backward makes seven full-size passes, with one pass each way.
//!
//! This crate turns on the `gemm` crate's `x86-v4` feature (AVX-512 kernels, chosen at
//! run time), which candle's own matmul then shares: about 2× the sgemm rate on
//! AVX-512 machines.
//!
//! **Threads.** fedpace runs one client per core, so every kernel here is
//! single-threaded by default: the slice kernels run on the calling thread and [`sgemm`]
//! takes its thread count as an argument. For the candle ops, [`set_num_threads`] changes the process-wide default and
//! [`Conv2dConfig::with_threads`] overrides it for one call; with `n > 1` threads the
//! batch is split into `n` chunks run on the current rayon pool.
//!
//! Not covered: dilation, groups, non-square padding or stride, second-order gradients,
//! non-CPU devices and dtypes other than f32 (these fall back to candle's kernels).

mod conv2d;
pub mod dense_backward;
mod im2col;
mod max_pool;
pub mod nhwc;
pub mod pointwise;
mod sgemm;
mod simd;
pub mod small_gemm;
mod tile512;
pub mod wino_products;
pub mod winograd4;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use conv2d::{conv2d, conv2d_with, Conv2dConfig, DEFAULT_IM2COL_BUDGET_BYTES};
pub use dense_backward::dense_backward_sgd;
pub use max_pool::{max_pool2x2, relu_max_pool2x2};
pub use nhwc::{im2row, row2im_add, to_padded_nhwc, zero_border, Pool2x2, PoolLayout, SameConv};
pub use sgemm::{sgemm, MatMut, MatRef};

static NUM_THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets the process-wide thread count of the kernels in this crate (default 1; 0 means 1).
///
/// Ops capture the count when they are built, so a backward pass runs with the count its
/// forward pass saw.
///
/// ```
/// fedpace_kernels::set_num_threads(2);
/// assert_eq!(fedpace_kernels::num_threads(), 2);
/// fedpace_kernels::set_num_threads(1);
/// ```
pub fn set_num_threads(threads: usize) {
    NUM_THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// The process-wide thread count of the kernels in this crate.
pub fn num_threads() -> usize {
    NUM_THREADS.load(Ordering::Relaxed)
}
