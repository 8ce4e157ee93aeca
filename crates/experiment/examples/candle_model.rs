//! A model written with candle, wrapped in a few lines as a `fedpace_core::Model` and
//! used from a config by name (docs/library.md, "Your own model and data").
//!
//! Run it: `cargo run --release -p fedpace-experiment --example candle_model`.
//!
//! The model is a two-layer perceptron `d → 16 → C` in candle; fedpace owns the
//! parameters as one flat buffer, so each call copies them into candle `Var`s, runs the
//! forward pass and candle's backward, and copies the gradients back in spec order.
//! The data: three Gaussian blobs over eight clients, a balanced test set on the server.

use candle_core::{DType, Device, Tensor, Var, D};
use fedpace_core::{Batch, EvalStats, Inputs, Model};
use fedpace_experiment::{
    federation_from_arrays, ClientArrays, ModelInput, Registry, RunOptions, RunResult,
};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// candle's errors as fedpace's.
fn backend(e: candle_core::Error) -> fedpace_core::Error {
    fedpace_core::Error::Backend(format!("candle: {e}"))
}

/// `d → hidden → classes` with ReLU, PyTorch layout (`weight: [out, in]`).
struct CandleMlp {
    d: usize,
    spec: Arc<ParamSpec>,
}

impl CandleMlp {
    fn new(input: &ModelInput) -> fedpace_core::Result<Self> {
        let d = match &input.sample_shape {
            fedpace_data::InputShape::Dense(s) => s.iter().product(),
            other => {
                return Err(fedpace_core::Error::invalid(
                    "sample_shape",
                    format!("{other:?}"),
                    "dense features",
                ))
            }
        };
        let hidden = input
            .options
            .get("hidden")
            .and_then(|v| v.as_integer())
            .unwrap_or(16) as usize;
        let c = input.num_classes;
        let spec = ParamSpec::builder()
            .add("fc1.weight", &[hidden, d], "body")
            .add("fc1.bias", &[hidden], "body")
            .add("fc2.weight", &[c, hidden], "head")
            .add("fc2.bias", &[c], "head")
            .build()?;
        Ok(Self {
            d,
            spec: Arc::new(spec),
        })
    }

    /// The parameters as candle variables (tracked for backward), in spec order.
    fn vars(&self, params: &ParamTree) -> candle_core::Result<Vec<Var>> {
        let data = params.as_slice();
        self.spec
            .entries()
            .iter()
            .map(|e| Var::from_slice(&data[e.range()], e.shape.as_slice(), &Device::Cpu))
            .collect()
    }

    /// Logits `[n, C]` of a batch.
    fn forward(&self, v: &[Var], batch: &Batch) -> candle_core::Result<Tensor> {
        let Inputs::Dense { data, .. } = &batch.inputs else {
            return Err(candle_core::Error::Msg("expected dense inputs".into()));
        };
        let x = Tensor::from_slice(data, (batch.labels.len(), self.d), &Device::Cpu)?;
        let h = x
            .matmul(&v[0].as_tensor().t()?)?
            .broadcast_add(v[1].as_tensor())?
            .relu()?;
        h.matmul(&v[2].as_tensor().t()?)?
            .broadcast_add(v[3].as_tensor())
    }

    fn labels(batch: &Batch) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&batch.labels, batch.labels.len(), &Device::Cpu)
    }
}

impl Model for CandleMlp {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, seed: u64) -> fedpace_core::Result<ParamTree> {
        // Uniform(−1/√fan_in, 1/√fan_in), as PyTorch's Linear, from a seeded generator.
        let mut rng = Rng(seed);
        let mut values = vec![0.0f32; self.spec.total_len()];
        for e in self.spec.entries() {
            let fan_in = *e.shape.last().unwrap_or(&1) as f64;
            let bound = if e.shape.len() == 2 {
                1.0 / fan_in.sqrt()
            } else {
                0.1
            };
            for v in &mut values[e.range()] {
                *v = ((2.0 * rng.next() - 1.0) * bound) as f32;
            }
        }
        Ok(ParamTree::from_vec(self.spec.clone(), values)?)
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        let mut run = || -> candle_core::Result<f32> {
            let v = self.vars(params)?;
            let logits = self.forward(&v, batch)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &Self::labels(batch)?)?;
            let grads = loss.backward()?;
            for (e, var) in self.spec.entries().iter().zip(&v) {
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                    None => vec![0.0; e.len()],
                };
                grad[e.range()].copy_from_slice(&g);
            }
            loss.to_scalar::<f32>()
        };
        run().map_err(backend)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        let run = || -> candle_core::Result<EvalStats> {
            let v = self.vars(params)?;
            let logits = self.forward(&v, batch)?;
            let labels = Self::labels(batch)?;
            let nll = candle_nn::loss::cross_entropy(&logits, &labels)?.to_scalar::<f32>()?;
            let hits = logits
                .argmax(D::Minus1)?
                .eq(&labels)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let n = batch.labels.len();
            Ok(EvalStats {
                loss_sum: f64::from(nll) * n as f64,
                correct: hits as u64,
                count: n as u64,
            })
        };
        run().map_err(backend)
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` samples cycling through `classes`, around three centres in the plane.
fn blobs(rng: &mut Rng, n: usize, classes: &[u32]) -> (Vec<f32>, Vec<u32>) {
    const CENTRES: [[f64; 2]; 3] = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]];
    let (mut x, mut y) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    for s in 0..n {
        let k = classes[s % classes.len()];
        x.extend(CENTRES[k as usize].map(|c| (c + 0.8 * rng.normal()) as f32));
        y.push(k);
    }
    (x, y)
}

/// The candle model registered as `candle-mlp`, the blobs as `blobs`.
pub fn registry() -> fedpace_experiment::Result<Registry> {
    let mut rng = Rng(11);
    let clients = (0..8u32)
        .map(|k| {
            let classes = [k % 3, (k + 1) % 3, k % 3, (k + 2) % 3];
            let (train_x, train_y) = blobs(&mut rng, 40, &classes);
            let (test_x, test_y) = blobs(&mut rng, 10, &classes);
            ClientArrays {
                train_x,
                train_y,
                test_x,
                test_y,
            }
        })
        .collect();
    let server_test = blobs(&mut rng, 300, &[0, 1, 2]);
    let data = federation_from_arrays("blobs", vec![2], 3, clients, Some(server_test))?;
    Registry::new()
        // The few lines that make a candle model a fedpace model:
        .with_model("candle-mlp", |input| {
            Ok(Box::new(CandleMlp::new(input)?) as Box<dyn Model>)
        })?
        .with_data("blobs", data)
}

/// The experiment: `[model] name` is the registered candle model (with its own option).
pub const EXPERIMENT: &str = r#"
name = "candle-model"
seed = 1
rounds = 15

[data]
source = "blobs"

[model]
name = "candle-mlp"
hidden = 16

[client]
lr = 0.1
batch_size = 10
epochs = 1

[strategy]
name = "fedavg"
clients_per_round = 8

[policy]
name = "loss-based"

[eval]
every = 5
"#;

/// Runs the experiment on `threads` threads, writing nothing.
pub fn run(threads: usize) -> fedpace_experiment::Result<RunResult> {
    registry()?
        .experiment(
            EXPERIMENT,
            "candle_model.rs",
            &[format!("threads={threads}")],
        )?
        .run(RunOptions::default())
}

#[allow(dead_code)] // also compiled as a module of the test
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let result = run(0)?;
    println!(
        "candle MLP on blobs: global accuracy {:.3} on the server's {} test samples",
        result.summary["global"]["accuracy"]
            .as_f64()
            .unwrap_or(f64::NAN),
        result.outcome.final_eval.central.map_or(0, |c| c.count)
    );
    Ok(())
}
