//! Multinomial logistic regression, d → C, in plain Rust on slices.
//!
//! Tiny models pay per-step overhead, not arithmetic, so this one skips the tensor
//! library: forward, softmax cross-entropy (log-sum-exp) and the analytic gradient are
//! a few loops over the flat buffers, with no allocation after the first call.
//!
//! Parameters (PyTorch `nn.Linear` layout), both in group `head` (the model is its own
//! last layer): `linear.weight` `[C, d]`, `linear.bias` `[C]`.

use crate::batch;
use crate::error::Result;
use crate::init::{self, Init};
use crate::xent::softmax_xent;
use crate::{check_spec, HEAD};
use fedpace_core::{Batch, EvalStats, Model};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

const NAME: &str = "logistic-regression";

/// Multinomial logistic regression: logits = W x + b, loss = softmax cross-entropy.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    spec: Arc<ParamSpec>,
    inputs: usize,
    classes: usize,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
}

impl LogisticRegression {
    /// A model for `inputs` features and `classes` classes.
    ///
    /// ```
    /// use fedpace_nn::LogisticRegression;
    /// use fedpace_core::Model;
    /// let m = LogisticRegression::new(60, 10).unwrap();
    /// assert_eq!(m.spec().total_len(), 610);
    /// ```
    pub fn new(inputs: usize, classes: usize) -> Result<Self> {
        crate::check_positive(NAME, "inputs", inputs)?;
        crate::check_positive(NAME, "classes", classes)?;
        let spec = ParamSpec::builder()
            .add("linear.weight", &[classes, inputs], HEAD)
            .add("linear.bias", &[classes], HEAD)
            .build()?;
        Ok(Self {
            spec: Arc::new(spec),
            inputs,
            classes,
            logits: Vec::new(),
            dlogits: Vec::new(),
        })
    }

    fn forward(&mut self, w: &[f32], b: &[f32], x: &[f32], n: usize) {
        let (d, c) = (self.inputs, self.classes);
        self.logits.resize(n * c, 0.0);
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            for k in 0..c {
                self.logits[i * c + k] = b[k] + dot(&w[k * d..(k + 1) * d], xi);
            }
        }
    }
}

/// Dot product with 8 independent accumulators so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl Model for LogisticRegression {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        let mut p = ParamTree::zeros(self.spec.clone());
        let i = Init::fan_in(self.inputs);
        init::fill(
            seed,
            &[(self.classes * self.inputs, i), (self.classes, i)],
            p.as_mut_slice(),
        );
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
        let x = batch::dense(NAME, batch, self.inputs, None, self.classes)?;
        let n = batch.len();
        grad.fill(0.0);
        if n == 0 {
            return Ok(0.0);
        }
        let (d, c) = (self.inputs, self.classes);
        let (w, b) = params.as_slice().split_at(c * d);
        self.forward(w, b, x, n);
        self.dlogits.resize(n * c, 0.0);
        let (loss_sum, _) = softmax_xent(&self.logits, &batch.labels, c, Some(&mut self.dlogits));
        let (gw, gb) = grad.split_at_mut(c * d);
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            for k in 0..c {
                let g = self.dlogits[i * c + k];
                gb[k] += g;
                for (gwj, &xj) in gw[k * d..(k + 1) * d].iter_mut().zip(xi) {
                    *gwj += g * xj;
                }
            }
        }
        Ok((loss_sum / n as f64) as f32)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        check_spec(NAME, &self.spec, params)?;
        let x = batch::dense(NAME, batch, self.inputs, None, self.classes)?;
        let n = batch.len();
        let (w, b) = params.as_slice().split_at(self.classes * self.inputs);
        self.forward(w, b, x, n);
        let (loss_sum, correct) = softmax_xent(&self.logits, &batch.labels, self.classes, None);
        Ok(EvalStats {
            loss_sum,
            correct,
            count: n as u64,
        })
    }
}
