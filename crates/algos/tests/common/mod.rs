//! A quadratic toy federation whose local training has closed forms.
//!
//! Sample i of client k is a point a_{k,i} ∈ R²; the loss is ½‖w − a‖², so the batch
//! gradient is `w − mean(a_batch)`. With a batch as large as the data set every local
//! step is full-batch gradient descent and results can be derived by hand.
#![allow(dead_code)]

use fedpace_algos::StandardClient;
use fedpace_core::{
    Batch, Client, ClientData, ClientFactory, ClientInfo, Dataset, EvalStats, Inputs, LocalWork,
    Model, Progress, RatePlan, Result,
};
use fedpace_optim::{OptimizerSpec, Schedule, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use std::sync::Arc;

pub const DIM: usize = 2;

pub struct Points(pub Vec<[f32; DIM]>);

impl Dataset for Points {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn num_classes(&self) -> usize {
        1
    }
    fn label(&self, _i: usize) -> u32 {
        0
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        Batch {
            inputs: Inputs::Dense {
                data: idx.iter().flat_map(|&i| self.0[i]).collect(),
                sample_shape: vec![DIM],
            },
            labels: vec![0; idx.len()],
        }
    }
}

pub struct Quadratic;

pub fn spec() -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("w", &[DIM], "body")
            .build()
            .unwrap(),
    )
}

impl Model for Quadratic {
    fn spec(&self) -> Arc<ParamSpec> {
        spec()
    }
    fn init(&self, _seed: u64) -> Result<ParamTree> {
        Ok(ParamTree::zeros(spec()))
    }
    fn loss_and_grad(&mut self, p: &ParamTree, b: &Batch, g: &mut [f32]) -> Result<f32> {
        let Inputs::Dense { data, .. } = &b.inputs else {
            unreachable!()
        };
        let n = b.len() as f32;
        let w = p.as_slice();
        let mut loss = 0.0;
        g.iter_mut().for_each(|v| *v = 0.0);
        for a in data.chunks(DIM) {
            for j in 0..DIM {
                g[j] += (w[j] - a[j]) / n;
                loss += 0.5 * (w[j] - a[j]).powi(2) / n;
            }
        }
        Ok(loss)
    }
    fn evaluate(&mut self, p: &ParamTree, b: &Batch) -> Result<EvalStats> {
        let mut g = vec![0.0; DIM];
        let l = self.loss_and_grad(p, b, &mut g)?;
        Ok(EvalStats {
            loss_sum: (l * b.len() as f32) as f64,
            correct: 0,
            count: b.len() as u64,
        })
    }
}

/// Client k's points.
pub fn points(k: u64) -> Vec<[f32; DIM]> {
    let k = k as f32;
    vec![[1.0 + k, -2.0 * k], [3.0 + k, 0.5], [2.0 - k, 1.0 + k]]
}

/// Mean of client k's points.
pub fn mean(k: u64) -> [f64; DIM] {
    let p = points(k);
    let mut m = [0.0; DIM];
    for a in &p {
        for j in 0..DIM {
            m[j] += a[j] as f64 / p.len() as f64;
        }
    }
    m
}

pub fn client(k: u64) -> StandardClient {
    let d: Arc<dyn Dataset> = Arc::new(Points(points(k)));
    StandardClient::new(
        k,
        Box::new(Quadratic),
        ClientData {
            train: d.clone(),
            test: d,
            validation: None,
        },
    )
}

pub fn factory() -> ClientFactory {
    Arc::new(|k| Ok(Box::new(client(k)) as Box<dyn Client>))
}

pub fn pool(n: u64) -> Vec<ClientInfo> {
    (0..n).map(|id| ClientInfo::new(id, 3, 3)).collect()
}

/// Settings of the stages: `m` clients per round, server rate, normalisation, plan.
pub fn settings(
    m: usize,
    server_lr: f64,
    normalize: fedpace_algos::Normalize,
    base_plan: RatePlan,
) -> fedpace_algos::Settings {
    fedpace_algos::Settings {
        sampling: fedpace_algos::Sampling::Count(m),
        server_lr,
        normalize,
        aggregation: Default::default(),
        base_plan,
    }
}

/// Full-batch plain SGD for `steps` steps at rate `lr`.
pub fn plan(lr: f32, steps: u32) -> RatePlan {
    RatePlan {
        base_lr: lr,
        group_multipliers: vec![],
        schedule: Schedule::default(),
        work: LocalWork::Steps(steps),
        max_steps: None,
        batch_size: 100,
        optimizer: OptimizerSpec::default(),
        state_mode: StateMode::Reset,
        prox_mu: 0.0,
    }
}

pub struct NoProgress;
impl Progress for NoProgress {
    fn client_done(&self) {}
}
