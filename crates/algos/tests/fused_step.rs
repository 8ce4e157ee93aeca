//! The local loop's split step (docs/arch/0038-fc1-backward-sgd-step.md): with plain SGD
//! and nothing else reading the gradient, `local_train` lets the model step the tensors
//! it names itself (`Model::loss_and_grad_sgd`) on every step but the first (whose
//! gradient norm is reported), and steps the rest; with any other optimiser or any
//! consumer of the gradient (momentum, weight decay, clipping, a proximal term, a linear
//! correction, a step controller) it never asks. Either way the parameters are the bits
//! of the unsplit loop. The model is the quadratic ½‖w − c‖² over two tensors in two
//! groups, whose split step writes NaN where it stepped, so a loop that read those
//! values would show it.

use fedpace_algos::client::{local_train_with, GradientCorrection};
use fedpace_algos::local::{local_train_controlled, StepController};
use fedpace_core::{Batch, Dataset, EvalStats, Inputs, LocalWork, Model, RatePlan, Result};
use fedpace_optim::{OptimizerSpec, Schedule, StateMode};
use fedpace_params::{ParamSpec, ParamTree};
use rand::SeedableRng;
use std::sync::Arc;

fn spec() -> Arc<ParamSpec> {
    Arc::new(
        ParamSpec::builder()
            .add("a", &[3], "body")
            .add("b", &[2], "head")
            .build()
            .unwrap(),
    )
}

const C: [f32; 5] = [1.0, -2.0, 0.5, 3.0, -1.5];

/// ½‖w − c‖²; `fuse`: tensor `a`'s SGD step is taken by the model.
struct Split {
    fuse: bool,
    split_calls: u32,
}

impl Model for Split {
    fn spec(&self) -> Arc<ParamSpec> {
        spec()
    }
    fn init(&self, _seed: u64) -> Result<ParamTree> {
        Ok(ParamTree::zeros(spec()))
    }
    fn loss_and_grad(&mut self, p: &ParamTree, _b: &Batch, g: &mut [f32]) -> Result<f32> {
        let mut loss = 0.0;
        for ((gi, &w), &c) in g.iter_mut().zip(p.as_slice()).zip(&C) {
            *gi = w - c;
            loss += 0.5 * (w - c) * (w - c);
        }
        Ok(loss)
    }
    fn fused_sgd_tensors(&self) -> Vec<usize> {
        if self.fuse {
            vec![0]
        } else {
            vec![]
        }
    }
    fn loss_and_grad_sgd(
        &mut self,
        p: &mut ParamTree,
        b: &Batch,
        g: &mut [f32],
        rates: &[f32],
    ) -> Result<f32> {
        self.split_calls += 1;
        let loss = self.loss_and_grad(p, b, g)?;
        let spec = spec();
        for &t in &self.fused_sgd_tensors() {
            let e = &spec.entries()[t];
            let r = -rates[e.group];
            for i in e.range() {
                p.as_mut_slice()[i] += g[i] * r;
                g[i] = f32::NAN;
            }
        }
        Ok(loss)
    }
    fn evaluate(&mut self, _p: &ParamTree, b: &Batch) -> Result<EvalStats> {
        Ok(EvalStats {
            count: b.len() as u64,
            ..Default::default()
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

fn plan(optimizer: OptimizerSpec) -> RatePlan {
    RatePlan {
        base_lr: 0.1,
        group_multipliers: vec![1.0, 0.7],
        schedule: Schedule::default(),
        work: LocalWork::Steps(6),
        max_steps: None,
        batch_size: 1,
        optimizer,
        state_mode: StateMode::Reset,
        prox_mu: 0.0,
    }
}

/// Six steps of `model` from w = 0.5; the parameters' bits.
fn train(
    model: &mut Split,
    plan: &RatePlan,
    correction: GradientCorrection<'_>,
    controller: bool,
) -> Vec<u32> {
    let mut w = ParamTree::from_vec(spec(), vec![0.5; 5]).unwrap();
    let rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut unit = Unit;
    if controller {
        let c: &mut (dyn StepController + 'static) = &mut unit;
        local_train_controlled(
            model,
            &One,
            &mut w,
            plan,
            6,
            0,
            rng,
            &mut None,
            correction,
            Some(c),
        )
        .unwrap();
    } else {
        local_train_with(model, &One, &mut w, plan, 6, 0, rng, &mut None, correction).unwrap();
    }
    w.as_slice().iter().map(|x| x.to_bits()).collect()
}

/// A step controller that keeps the plan's rates.
struct Unit;
impl StepController for Unit {
    fn factor(&mut self, _: &mut dyn Model, _: &Batch, _: &ParamTree, _: &[f32]) -> Result<f64> {
        Ok(1.0)
    }
}

#[test]
fn plain_sgd_lets_the_model_step_its_tensors() {
    let p = plan(OptimizerSpec::Sgd { weight_decay: 0.0 });
    let mut fused = Split {
        fuse: true,
        split_calls: 0,
    };
    let mut plain = Split {
        fuse: false,
        split_calls: 0,
    };
    let a = train(&mut fused, &p, GradientCorrection::default(), false);
    let b = train(&mut plain, &p, GradientCorrection::default(), false);
    assert_eq!(a, b);
    // Every step but the first.
    assert_eq!(fused.split_calls, 5);
    assert_eq!(plain.split_calls, 0);
    assert!(a.iter().all(|&x| f32::from_bits(x).is_finite()));
}

#[test]
fn no_split_step_when_anything_else_reads_the_gradient() {
    let anchor = vec![0.25f32; 5];
    let linear = vec![0.125f32; 5];
    let sgd = OptimizerSpec::Sgd { weight_decay: 0.0 };
    let none = GradientCorrection::default;
    let cases: Vec<(&str, RatePlan, GradientCorrection<'_>, bool)> = vec![
        (
            "momentum",
            plan(OptimizerSpec::Momentum {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            }),
            none(),
            false,
        ),
        (
            "weight decay",
            plan(OptimizerSpec::Sgd { weight_decay: 0.01 }),
            none(),
            false,
        ),
        (
            "clipping",
            plan(sgd),
            GradientCorrection {
                clip: Some(0.5),
                ..none()
            },
            false,
        ),
        (
            "proximal term",
            plan(sgd),
            GradientCorrection {
                proximal: Some((0.1, &anchor)),
                ..none()
            },
            false,
        ),
        (
            "linear correction",
            plan(sgd),
            GradientCorrection {
                linear: Some(&linear),
                ..none()
            },
            false,
        ),
        ("step controller", plan(sgd), none(), true),
    ];
    for (name, p, correction, controller) in cases {
        let mut fused = Split {
            fuse: true,
            split_calls: 0,
        };
        let mut plain = Split {
            fuse: false,
            split_calls: 0,
        };
        let a = train(&mut fused, &p, correction, controller);
        let b = train(&mut plain, &p, correction, controller);
        assert_eq!(fused.split_calls, 0, "{name}");
        assert_eq!(a, b, "{name}");
    }
}
