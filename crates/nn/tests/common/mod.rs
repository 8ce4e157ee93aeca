//! Helpers shared by the integration tests.
#![allow(dead_code)]

use fedpace_core::{Batch, Inputs, Model};
use fedpace_params::ParamTree;

/// Deterministic pseudo-random values in [-1, 1) from a tiny LCG (no RNG crates).
pub fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn dense_batch(data: Vec<f32>, sample_shape: Vec<usize>, labels: Vec<u32>) -> Batch {
    Batch {
        inputs: Inputs::Dense { data, sample_shape },
        labels,
    }
}

/// Checks `loss_and_grad` against central finite differences (in f32, so with a loose
/// tolerance) on up to `per_tensor` coordinates of every tensor.
pub fn check_gradient(model: &mut dyn Model, params: &ParamTree, batch: &Batch, per_tensor: usize) {
    let spec = model.spec();
    let mut grad = vec![0.0; spec.total_len()];
    model.loss_and_grad(params, batch, &mut grad).unwrap();
    let mut worst = 0.0f32;
    for e in spec.entries() {
        let r = e.range();
        let step = (r.len() / per_tensor).max(1);
        for idx in r.clone().step_by(step).take(per_tensor) {
            // ReLU and max-pool kinks can lie within ±eps: a coordinate passes if the
            // central difference agrees at either of two step sizes.
            let err = [3e-3f32, 1e-3]
                .iter()
                .map(|&eps| {
                    let fd = central_difference(model, params, batch, idx, eps);
                    (fd - grad[idx]).abs() / (1e-2 + fd.abs().max(grad[idx].abs()))
                })
                .fold(f32::INFINITY, f32::min);
            worst = worst.max(err);
            assert!(
                err < 3e-2,
                "{}[{}]: analytic {} vs finite difference {}",
                e.name,
                idx - r.start,
                grad[idx],
                central_difference(model, params, batch, idx, 3e-3)
            );
        }
    }
    eprintln!("worst relative gradient error {worst:.2e}");
}

/// Runs `steps` full-batch SGD steps and returns (first loss, last loss).
pub fn sgd(
    model: &mut dyn Model,
    params: &mut ParamTree,
    batch: &Batch,
    lr: f32,
    steps: usize,
) -> (f32, f32) {
    let mut grad = vec![0.0; params.as_slice().len()];
    let first = model.loss_and_grad(params, batch, &mut grad).unwrap();
    let mut last = first;
    for _ in 0..steps {
        last = model.loss_and_grad(params, batch, &mut grad).unwrap();
        fedpace_params::axpy(-lr, &grad, params.as_mut_slice());
    }
    (first, last)
}

fn central_difference(
    model: &mut dyn Model,
    params: &ParamTree,
    batch: &Batch,
    idx: usize,
    eps: f32,
) -> f32 {
    let mut p = params.clone();
    let mut scratch = vec![0.0; p.as_slice().len()];
    p.as_mut_slice()[idx] += eps;
    let up = model.loss_and_grad(&p, batch, &mut scratch).unwrap() as f64;
    p.as_mut_slice()[idx] -= 2.0 * eps;
    let down = model.loss_and_grad(&p, batch, &mut scratch).unwrap() as f64;
    ((up - down) / (2.0 * eps as f64)) as f32
}
