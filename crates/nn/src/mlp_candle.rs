//! The MLP ([`crate::Mlp`]) on candle: the **reference** implementation.
//!
//! Same parameters, layout, initialisation and group labels as [`crate::Mlp`]; the
//! forward pass is candle tensors and the backward pass candle's autograd. It is
//! golden-tested against PyTorch (`tests/golden.rs`), and the plain-Rust [`crate::Mlp`]
//! is tested against it (`tests/fast_vs_candle.rs`). It is not used by the factory.

use crate::batch;
use crate::check_spec;
use crate::error::Result;
use crate::graph::{self, linear, Params, Scratch};
use crate::mlp::{build_spec, init_params, sizes, NAME};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// A ReLU multilayer perceptron, d → hidden… → C, on candle (reference).
#[derive(Debug, Clone)]
pub struct CandleMlp {
    spec: Arc<ParamSpec>,
    sizes: Vec<usize>,
    device: Device,
    scratch: Scratch,
}

impl CandleMlp {
    /// An MLP with `inputs` features, the given hidden widths and `classes` outputs.
    ///
    /// ```
    /// use fedpace_nn::CandleMlp;
    /// use fedpace_core::Model;
    /// let m = CandleMlp::new(784, &[200, 200], 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 199_210);
    /// ```
    pub fn new(inputs: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        let sizes = sizes(inputs, hidden, classes)?;
        Ok(Self {
            spec: Arc::new(build_spec(&sizes)?),
            sizes,
            device: Device::Cpu,
            scratch: Scratch::default(),
        })
    }

    fn inputs(&self) -> usize {
        self.sizes[0]
    }
    fn classes(&self) -> usize {
        *self.sizes.last().expect("at least two sizes")
    }

    fn forward(&self, p: &Params, x: &[f32], n: usize) -> Result<Tensor> {
        let mut h = Tensor::from_slice(x, (n, self.inputs()), &self.device)?;
        let layers = self.sizes.len() - 1;
        for l in 0..layers {
            h = linear(&h, &p.tensors[2 * l], &p.tensors[2 * l + 1])?;
            if l + 1 < layers {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

impl Model for CandleMlp {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        Ok(init_params(&self.spec, &self.sizes, seed))
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        check_spec(NAME, &self.spec, params)?;
        batch::grad_len(NAME, grad, self.spec.total_len())?;
        let x = batch::dense(NAME, batch, self.inputs(), None, self.classes())?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::loss_and_grad(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes(),
            &mut scratch,
            grad,
            |p| self.forward(p, x, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let x = batch::dense(NAME, batch, self.inputs(), None, self.classes())?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = graph::evaluate(
            &self.spec,
            &self.device,
            params,
            &batch.labels,
            self.classes(),
            &mut scratch,
            |p| self.forward(p, x, batch.len()),
        );
        self.scratch = scratch;
        Ok(r?)
    }
}
