//! The step sizes a client really uses and reports (`TrainReport::rate_sum`), by hand:
//! Δ-SGD's step recursion, FedNova's normaliser for momentum and proximal local solvers,
//! and per-tensor trust ratios. The toy is `common`'s quadratic ½‖w − a‖² with one batch
//! holding every sample: its gradient is `w − mean(a)` and its Hessian the identity, so
//! the smoothness estimate L̂ = ‖∇f(y_k) − ∇f(y_{k−1})‖/‖y_k − y_{k−1}‖ is exactly 1.

mod common;

use common::{mean, plan, points, Points, Quadratic};
use fedpace_algos::client::{local_train, local_train_with, GradientCorrection};
use fedpace_core::{Batch, Dataset, EvalStats, Inputs, Model, Result};
use fedpace_optim::OptimizerSpec;
use fedpace_params::{ParamSpec, ParamTree};
use rand::SeedableRng;
use std::sync::Arc;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0)
}

/// Runs `steps` full-batch steps of client 0's quadratic from w = 0.
fn train(
    plan: &fedpace_core::RatePlan,
    steps: u32,
    mu: f64,
) -> (Vec<f32>, fedpace_core::TrainReport) {
    let data = Points(points(0));
    let mut w = ParamTree::zeros(common::spec());
    let anchor = vec![0f32; 2];
    let correction = GradientCorrection {
        proximal: (mu > 0.0).then_some((mu, anchor.as_slice())),
        ..Default::default()
    };
    let report = local_train_with(
        &mut Quadratic,
        &data,
        &mut w,
        plan,
        steps,
        0,
        rng(),
        &mut None,
        correction,
    )
    .unwrap();
    (w.as_slice().to_vec(), report)
}

#[test]
fn delta_sgd_step_recursion_by_hand() {
    // η₀ = 0.1, γ = 0.2, δ = 0.1, ε = 1e-8; L̂ = 1 at every step, so γ/(2L̂) = 0.1.
    // The spec (docs/rate-policies.md): θ₀ = 1 and step 0 is η₀·√(1 + δθ₀); from step 1
    // η_k = min{γ/(2L̂), √(1 + δθ_{k−1})·η_{k−1}} + ε and θ_k = η_k/η_{k−1}.
    let (eta0, gamma, delta, eps) = (0.1f64, 0.2f64, 0.1f64, 1e-8f64);
    let e0 = eta0 * (1.0 + delta).sqrt(); // 0.10488…, θ = 1.04881
    let t0 = e0 / eta0;
    let e1 = (gamma / 2.0).min((1.0 + delta * t0).sqrt() * e0) + eps; // min(0.1, 0.11024) + ε
    let t1 = e1 / e0;
    let e2 = (gamma / 2.0).min((1.0 + delta * t1).sqrt() * e1) + eps; // min(0.1, 0.10466) + ε
    assert!((e1 - 0.1 - eps).abs() < 1e-15 && (e2 - 0.1 - eps).abs() < 1e-15);
    let mut p = plan(eta0 as f32, 3);
    p.optimizer = OptimizerSpec::DeltaSgd { gamma, delta, eps };
    let (w, report) = train(&p, 3, 0.0);
    // Σ η_k as reported (rates pass through f32 on the way).
    assert!(
        (report.rate_sum[0] - (e0 + e1 + e2)).abs() < 1e-7,
        "{} vs {}",
        report.rate_sum[0],
        e0 + e1 + e2
    );
    // w₃ = m·(1 − Π(1 − η_k)) from w₀ = 0 (gradient w − m).
    let m = mean(0);
    let keep = (1.0 - e0) * (1.0 - e1) * (1.0 - e2);
    for j in 0..2 {
        assert!(
            (w[j] as f64 - m[j] * (1.0 - keep)).abs() < 1e-6,
            "w[{j}] = {}",
            w[j]
        );
    }
}

#[test]
fn fednova_normalizer_is_reported_for_momentum_clients() {
    // Heavy-ball ρ = 0.5 at η = 0.1 for 3 steps: the gradient of step s moves the result
    // by η(1 + ρ + … ) over the remaining steps: 1 + 1.5 + 1.75 = 4.25, so Λ = 0.425
    // (FedNova's ‖a‖₁ = [τ − ρ(1−ρ^τ)/(1−ρ)]/(1−ρ) = [3 − 0.5·0.875/0.5]/0.5 = 4.25).
    let mut p = plan(0.1, 3);
    p.optimizer = OptimizerSpec::Momentum {
        momentum: 0.5,
        nesterov: false,
        weight_decay: 0.0,
    };
    let (_, report) = train(&p, 3, 0.0);
    let eta = 0.1f32 as f64;
    assert!(
        (report.rate_sum[0] - eta * 4.25).abs() < 1e-12,
        "{}",
        report.rate_sum[0]
    );
    // Plain SGD stays Σ η exactly.
    let (_, sgd) = train(&plan(0.1, 3), 3, 0.0);
    assert_eq!(sgd.rate_sum[0], 3.0 * (0.1f32 as f64));
}

#[test]
fn fednova_normalizer_is_reported_for_proximal_clients() {
    // FedProx μ = 1 at η = 0.1 for 3 steps: each step shrinks the displacement by
    // (1 − ημ) = 0.9, so Λ = η(1 + 0.9 + 0.81) = 0.271 = η[1 − (1−ημ)³]/(ημ).
    let (_, report) = train(&plan(0.1, 3), 3, 1.0);
    let eta = 0.1f32 as f64;
    let want = eta * (1.0 + (1.0 - eta) + (1.0 - eta).powi(2));
    assert!(
        (report.rate_sum[0] - want).abs() < 1e-9,
        "{} vs {want}",
        report.rate_sum[0]
    );
}

/// ½‖w − t‖² over two tensors of one group: `a` (1 value) and `b` (4 values).
struct TwoTensors;

const TARGET: [f32; 5] = [0.0, 0.5, 0.5, 0.5, 0.5];

fn two_spec() -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("a", &[1], "body")
            .add("b", &[4], "body")
            .build()
            .unwrap(),
    )
}

impl Model for TwoTensors {
    fn spec(&self) -> Arc<ParamSpec> {
        two_spec()
    }
    fn init(&self, _seed: u64) -> Result<ParamTree> {
        Ok(ParamTree::zeros(two_spec()))
    }
    fn loss_and_grad(&mut self, p: &ParamTree, _b: &Batch, g: &mut [f32]) -> Result<f32> {
        let mut loss = 0.0;
        for ((g, w), t) in g.iter_mut().zip(p.as_slice()).zip(TARGET) {
            *g = w - t;
            loss += 0.5 * (w - t) * (w - t);
        }
        Ok(loss)
    }
    fn evaluate(&mut self, _p: &ParamTree, b: &Batch) -> Result<EvalStats> {
        Ok(EvalStats {
            loss_sum: 0.0,
            correct: 0,
            count: b.len() as u64,
        })
    }
}

struct One;
impl Dataset for One {
    fn len(&self) -> usize {
        1
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
                data: vec![0.0; idx.len()],
                sample_shape: vec![1],
            },
            labels: vec![0; idx.len()],
        }
    }
}

#[test]
fn trust_ratio_reports_the_rates_it_used() {
    // From w = (1 | 1, 1, 1, 1): u_a = 1, ‖p_a‖ = 1 → ratio 1; u_b = 0.5·1, ‖u_b‖ = 1,
    // ‖p_b‖ = 2 → ratio 2. The group's rate is η times the size-weighted mean ratio,
    // (1·1 + 4·2)/5 = 1.8: Λ = 0.1 · 1.8 = 0.18 (the plan's rate alone would say 0.1).
    let mut p = plan(0.1, 1);
    p.optimizer = OptimizerSpec::Lars {
        momentum: 0.0,
        max_ratio: 10.0,
        eps: 0.0,
        weight_decay: 0.0,
    };
    let mut w = ParamTree::from_vec(two_spec(), vec![1.0; 5]).unwrap();
    let report = local_train(&mut TwoTensors, &One, &mut w, &p, 1, 0, rng(), &mut None).unwrap();
    assert!(
        (report.rate_sum[0] - 0.1f32 as f64 * 1.8).abs() < 1e-7,
        "{}",
        report.rate_sum[0]
    );
    // And the step itself: a ← 1 − 0.1·1·1, b ← 1 − 0.1·2·0.5.
    let want = [0.9f32, 0.9, 0.9, 0.9, 0.9];
    for (got, want) in w.as_slice().iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
