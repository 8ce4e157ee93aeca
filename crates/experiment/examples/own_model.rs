//! Your own model and your own data, trained by fedpace's FedAvg with the `loss-based`
//! rate policy, from Rust — no fork, no CLI (docs/library.md).
//!
//! Run it: `cargo run --release -p fedpace-experiment --example own_model`.
//!
//! The model is a softmax regression written by hand against the `Model` trait; the data
//! are three Gaussian blobs in the plane, split over eight clients that each see mostly
//! two of the three classes, with a balanced test set the server holds.

use fedpace_core::{Batch, EvalStats, Inputs, Model};
use fedpace_experiment::{
    federation_from_arrays, ClientArrays, ModelInput, Registry, RunOptions, RunResult,
};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

/// A softmax regression `d → C`: logits = x·W + b. Parameters `w` (`[d, C]`, group
/// `body`) and `b` (`[C]`, group `head`), laid out one after the other.
struct Softmax {
    d: usize,
    c: usize,
    spec: Arc<ParamSpec>,
}

impl Softmax {
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
        let c = input.num_classes;
        let spec = ParamSpec::builder()
            .add("w", &[d, c], "body")
            .add("b", &[c], "head")
            .build()?;
        Ok(Self {
            d,
            c,
            spec: Arc::new(spec),
        })
    }

    /// Softmax probabilities of one sample.
    fn probs(&self, p: &[f32], x: &[f32]) -> Vec<f64> {
        let (w, b) = p.split_at(self.d * self.c);
        let logits: Vec<f64> = (0..self.c)
            .map(|k| {
                f64::from(b[k])
                    + (0..self.d)
                        .map(|i| f64::from(x[i]) * f64::from(w[i * self.c + k]))
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    fn dense<'a>(&self, batch: &'a Batch) -> fedpace_core::Result<&'a [f32]> {
        match &batch.inputs {
            Inputs::Dense { data, .. } => Ok(data),
            _ => Err(fedpace_core::Error::invalid(
                "inputs",
                "tokens",
                "dense features",
            )),
        }
    }
}

impl Model for Softmax {
    fn spec(&self) -> Arc<ParamSpec> {
        self.spec.clone()
    }

    fn init(&self, _seed: u64) -> fedpace_core::Result<ParamTree> {
        // Zeros: the loss is convex, any start works.
        Ok(ParamTree::zeros(self.spec.clone()))
    }

    fn loss_and_grad(
        &mut self,
        params: &ParamTree,
        batch: &Batch,
        grad: &mut [f32],
    ) -> fedpace_core::Result<f32> {
        let x = self.dense(batch)?;
        let n = batch.labels.len().max(1);
        grad.fill(0.0);
        let mut loss = 0.0;
        for (s, &y) in batch.labels.iter().enumerate() {
            let xs = &x[s * self.d..(s + 1) * self.d];
            let p = self.probs(params.as_slice(), xs);
            loss -= p[y as usize].max(1e-12).ln();
            for k in 0..self.c {
                // ∂(−log p_y)/∂logit_k = p_k − [k = y], averaged over the batch.
                let g = (p[k] - f64::from(u8::from(k == y as usize))) / n as f64;
                for i in 0..self.d {
                    grad[i * self.c + k] += (g * f64::from(xs[i])) as f32;
                }
                grad[self.d * self.c + k] += g as f32;
            }
        }
        Ok((loss / n as f64) as f32)
    }

    fn evaluate(&mut self, params: &ParamTree, batch: &Batch) -> fedpace_core::Result<EvalStats> {
        let x = self.dense(batch)?;
        let mut stats = EvalStats::default();
        for (s, &y) in batch.labels.iter().enumerate() {
            let p = self.probs(params.as_slice(), &x[s * self.d..(s + 1) * self.d]);
            let best = (0..self.c)
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            stats.loss_sum -= p[y as usize].max(1e-12).ln();
            stats.correct += u64::from(best == y as usize);
            stats.count += 1;
        }
        Ok(stats)
    }
}

/// A small deterministic generator (SplitMix64) for the example's data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

const CENTRES: [[f64; 2]; 3] = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]];

/// `n` samples of the classes in `classes` (cycled), around their centres.
fn blobs(rng: &mut Rng, n: usize, classes: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for s in 0..n {
        let k = classes[s % classes.len()];
        for centre in CENTRES[k as usize] {
            x.push((centre + 0.8 * rng.normal()) as f32);
        }
        y.push(k);
    }
    (x, y)
}

/// Eight clients of 40 training and 10 test samples, client k seeing mostly classes
/// k mod 3 and (k + 1) mod 3; 300 balanced samples held by the server.
pub fn registry() -> fedpace_experiment::Result<Registry> {
    let mut rng = Rng(7);
    let clients = (0..8u32)
        .map(|k| {
            let classes = [k % 3, (k + 1) % 3, k % 3, (k + 1) % 3, (k + 2) % 3];
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
        .with_model("softmax", |input| {
            Ok(Box::new(Softmax::new(input)?) as Box<dyn Model>)
        })?
        .with_data("blobs", data)
}

/// The experiment: everything but `[data]` and `[model]` is fedpace's own.
pub const EXPERIMENT: &str = r#"
name = "own-model"
seed = 1
rounds = 20

[data]
source = "blobs"

[model]
name = "softmax"

[client]
lr = 0.5
batch_size = 10
epochs = 1

[strategy]
name = "fedavg"
clients_per_round = 4

[policy]
name = "loss-based"
kappa = 0.5

[eval]
every = 5
"#;

/// Runs [`EXPERIMENT`] on [`registry`] with `threads` clients trained at once,
/// keeping everything in memory (add `.with_dir(…)` to write a run directory).
pub fn run(threads: usize) -> fedpace_experiment::Result<RunResult> {
    let exp =
        registry()?.experiment(EXPERIMENT, "own_model.rs", &[format!("threads={threads}")])?;
    exp.run(RunOptions::default())
}

#[allow(dead_code)] // also compiled into the test that runs it
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let result = run(0)?;
    let global = &result.summary["global"];
    println!(
        "own-model: accuracy {:.3} on the server's {} ({} rounds), personalised mean {:.3}",
        global["accuracy"].as_f64().unwrap_or(f64::NAN),
        global["evaluated_on"].as_str().unwrap_or("?"),
        result.summary["rounds_completed"],
        result.summary["personalized"]["mean_accuracy"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    Ok(())
}
