//! Fully connected ReLU network ("2NN" of the FedAvg paper: 784-200-200-10).
//!
//! Parameters (PyTorch `nn.Linear` layout) `fc1.weight` `[h1, d]`, `fc1.bias`, …,
//! `fcL.weight` `[C, h_last]`, `fcL.bias`; the last layer is group `head`, the others
//! `body`.

use crate::batch;
use crate::error::Result;
use crate::graph::{self, linear, Params, Scratch};
use crate::init::{self, Init};
use crate::{check_spec, BODY, HEAD};
use candle_core::{Device, Tensor};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

const NAME: &str = "mlp";

/// A ReLU multilayer perceptron, d → hidden… → C, softmax cross-entropy.
#[derive(Debug, Clone)]
pub struct Mlp {
    spec: Arc<ParamSpec>,
    sizes: Vec<usize>,
    device: Device,
    scratch: Scratch,
}

impl Mlp {
    /// An MLP with `inputs` features, the given hidden widths and `classes` outputs.
    ///
    /// ```
    /// use fedpace_nn::Mlp;
    /// use fedpace_core::Model;
    /// let m = Mlp::new(784, &[200, 200], 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 199_210);
    /// ```
    pub fn new(inputs: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        crate::check_positive(NAME, "inputs", inputs)?;
        crate::check_positive(NAME, "classes", classes)?;
        for &h in hidden {
            crate::check_positive(NAME, "hidden", h)?;
        }
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(classes);
        let layers = sizes.len() - 1;
        let mut b = ParamSpec::builder();
        for l in 0..layers {
            let group = if l + 1 == layers { HEAD } else { BODY };
            b = b
                .add(
                    &format!("fc{}.weight", l + 1),
                    &[sizes[l + 1], sizes[l]],
                    group,
                )
                .add(&format!("fc{}.bias", l + 1), &[sizes[l + 1]], group);
        }
        Ok(Self {
            spec: Arc::new(b.build()?),
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

impl Model for Mlp {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        let mut p = ParamTree::zeros(self.spec.clone());
        let parts: Vec<(usize, Init)> = self
            .sizes
            .windows(2)
            .flat_map(|w| {
                [
                    (w[0] * w[1], Init::fan_in(w[0])),
                    (w[1], Init::fan_in(w[0])),
                ]
            })
            .collect();
        init::fill(seed, &parts, p.as_mut_slice());
        Ok(p)
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
