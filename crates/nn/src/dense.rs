//! A fully connected layer with hand-written backward, on feature-major activations
//! (docs/arch/0014-fast-layers.md).
//!
//! `y = W·x + b` with PyTorch's `nn.Linear` layout (`W: [outputs, inputs]`). A batch of
//! `n` activations is stored **feature-major**, `[features, n]` (the transpose of the
//! usual `[n, features]`), because the `gemm` crate runs the products of a small batch
//! fastest in that orientation: forward `Yᵀ = W·Xᵀ`, weight gradient `dW = dYᵀ·X`
//! (written straight into the gradient buffer, in `W`'s layout), input gradient
//! `dXᵀ = Wᵀ·dYᵀ` (`cargo run --release -p fedpace-kernels --example gemm_shapes mlp`).
//! The network's raw input arrives sample-major (`[n, inputs]`, as batches store it);
//! the `*_from_rows` variants read it in place through a transposed view.
//!
//! Every product runs on the calling thread.

use fedpace_kernels::pointwise::{add_bias_rows, row_sums};
use fedpace_kernels::{sgemm, MatMut, MatRef};

/// One fully connected layer's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dense<'a> {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs, inputs]`, row-major.
    pub weight: &'a [f32],
    /// `[outputs]`.
    pub bias: &'a [f32],
}

impl Dense<'_> {
    fn w(&self) -> MatRef<'_> {
        MatRef::row_major(self.weight, self.outputs, self.inputs, self.inputs)
    }

    /// `out = W·xᵀ` (`[outputs, n]`) for sample-major `x` (`[n, inputs]`), without bias.
    pub fn forward_from_rows(&self, x: &[f32], n: usize, out: &mut [f32]) {
        sgemm(
            MatMut::row_major(out, self.outputs, n, n),
            self.w(),
            MatRef::transposed(x, self.inputs, n, self.inputs),
            false,
            1,
        );
    }

    /// `out = W·x` (`[outputs, n]`) for feature-major `x` (`[inputs, n]`), without bias.
    pub fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        sgemm(
            MatMut::row_major(out, self.outputs, n, n),
            self.w(),
            MatRef::row_major(x, self.inputs, n, n),
            false,
            1,
        );
    }

    /// Adds the bias to a forward output (`[outputs, n]`), then ReLU if `relu`.
    pub fn activate(&self, out: &mut [f32], n: usize, relu: bool) {
        add_bias_rows(out, n, self.bias, relu);
    }

    /// `gw = dᵀ·x` and `gb = Σ_samples d` from the output gradient `d` (`[outputs, n]`)
    /// and sample-major input `x` (`[n, inputs]`).
    pub fn weight_grad_from_rows(
        &self,
        d: &[f32],
        x: &[f32],
        n: usize,
        gw: &mut [f32],
        gb: &mut [f32],
    ) {
        sgemm(
            MatMut::row_major(gw, self.outputs, self.inputs, self.inputs),
            MatRef::row_major(d, self.outputs, n, n),
            MatRef::row_major(x, n, self.inputs, self.inputs),
            false,
            1,
        );
        row_sums(d, n, gb);
    }

    /// As [`Dense::weight_grad_from_rows`] for feature-major input `x` (`[inputs, n]`).
    pub fn weight_grad(&self, d: &[f32], x: &[f32], n: usize, gw: &mut [f32], gb: &mut [f32]) {
        sgemm(
            MatMut::row_major(gw, self.outputs, self.inputs, self.inputs),
            MatRef::row_major(d, self.outputs, n, n),
            MatRef::transposed(x, n, self.inputs, n),
            false,
            1,
        );
        row_sums(d, n, gb);
    }

    /// The input gradient `dx = Wᵀ·d` (`[inputs, n]`) from the output gradient `d`
    /// (`[outputs, n]`).
    pub fn input_grad(&self, d: &[f32], n: usize, dx: &mut [f32]) {
        sgemm(
            MatMut::row_major(dx, self.inputs, n, n),
            MatRef::transposed(self.weight, self.inputs, self.outputs, self.inputs),
            MatRef::row_major(d, self.outputs, n, n),
            false,
            1,
        );
    }
}
