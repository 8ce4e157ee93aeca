//! Named optimisers, each a [`Chain`] of transforms ending in [`scale_by_rate`], so the
//! per-group rate of the step applies to any of them (docs/algorithms.md §1.4, §C.3).
//!
//! Weight decay: L2 decay added to the gradient (PyTorch SGD/Adam/Adagrad
//! `weight_decay`) is `add_decayed_weights` *first* in the chain; AdamW's decoupled
//! decay is `add_decayed_weights` *after* `scale_by_adam`. [`crate::OptimizerSpec`]
//! builds both from a config.

use crate::combine::{chain, Chain};
use crate::transforms::*;

/// Plain SGD: `p ← p − η_g · g`, with the per-group rate read at every step.
///
/// ```
/// use fedpace_optim::{sgd, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
/// let tx = sgd();
/// let mut state = tx.init(&spec);
/// let mut g = vec![1.0, -2.0];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.5], step: 0 };
/// tx.update(&mut g, &mut state, &[0.0, 0.0], &ctx).unwrap();
/// assert_eq!(g, vec![-0.5, 1.0]);
/// ```
pub fn sgd() -> ScaleByRate {
    scale_by_rate()
}

/// SGD with heavy-ball momentum (PyTorch `SGD(momentum=ρ, nesterov=…)`, no dampening):
/// `v ← ρv + g`, `p ← p − η_g·v` (Nesterov: `p ← p − η_g·(g + ρv)`).
///
/// ```
/// use fedpace_optim::{momentum, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[1], "body").build().unwrap();
/// let tx = momentum(0.5, false);
/// let mut s = tx.init(&spec);
/// let ctx = StepContext { spec: &spec, group_rates: &[1.0], step: 0 };
/// let (mut a, mut b) = (vec![1.0], vec![1.0]);
/// tx.update(&mut a, &mut s, &[0.0], &ctx).unwrap();
/// tx.update(&mut b, &mut s, &[0.0], &ctx).unwrap();
/// assert_eq!((a[0], b[0]), (-1.0, -1.5));
/// ```
pub fn momentum(rho: f64, nesterov: bool) -> Chain {
    chain(vec![
        Box::new(trace(rho, nesterov)),
        Box::new(scale_by_rate()),
    ])
}

/// Adam (PyTorch `Adam`, bias-corrected, ε outside the root):
/// `m ← β1m + (1−β1)g`, `v ← β2v + (1−β2)g²`,
/// `p ← p − η_g · (m/(1−β1ᵗ)) / (√v/√(1−β2ᵗ) + ε)`.
///
/// ```
/// use fedpace_optim::{adam, StepContext, Transform};
/// use fedpace_params::ParamSpec;
/// let spec = ParamSpec::builder().add("w", &[2], "body").build().unwrap();
/// let tx = adam(0.9, 0.999, 1e-8);
/// let mut g = vec![3.0, -0.01];
/// let ctx = StepContext { spec: &spec, group_rates: &[0.1], step: 0 };
/// tx.update(&mut g, &mut tx.init(&spec), &[0.0, 0.0], &ctx).unwrap();
/// // the first Adam step is ≈ η·sign(g) per coordinate
/// assert!((g[0] + 0.1).abs() < 1e-6 && (g[1] - 0.1).abs() < 1e-5);
/// ```
pub fn adam(beta1: f64, beta2: f64, eps: f64) -> Chain {
    chain(vec![
        Box::new(scale_by_adam(beta1, beta2, eps)),
        Box::new(scale_by_rate()),
    ])
}

/// AdamW (PyTorch `AdamW`): Adam plus decoupled decay scaled by the step rate,
/// `p ← p − η_g·λ·p − η_g·adam(g)`.
pub fn adamw(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Chain {
    chain(vec![
        Box::new(scale_by_adam(beta1, beta2, eps)),
        Box::new(add_decayed_weights(weight_decay)),
        Box::new(scale_by_rate()),
    ])
}

/// Adagrad (PyTorch `Adagrad`, no lr decay): `s ← s + g²`, `p ← p − η_g·g/(√s + ε)`,
/// `s₀ = initial_accumulator` (PyTorch defaults: ε = 1e-10, s₀ = 0).
pub fn adagrad(eps: f64, initial_accumulator: f64) -> Chain {
    chain(vec![
        Box::new(scale_by_adagrad(eps, initial_accumulator)),
        Box::new(scale_by_rate()),
    ])
}

/// Yogi (Zaheer et al. 2018): Adam's first moment, additive second-moment update
/// `v ← v − (1−β2)·g²·sign(v − g²)`, `p ← p − η_g·m/(√v + ε)`, no bias correction;
/// `v₀ = 1e-6` as in the paper (use [`scale_by_yogi`] for another).
pub fn yogi(beta1: f64, beta2: f64, eps: f64) -> Chain {
    chain(vec![
        Box::new(scale_by_yogi(beta1, beta2, eps, 1e-6)),
        Box::new(scale_by_rate()),
    ])
}

/// AMSGrad (PyTorch `Adam(amsgrad=True)`): Adam with `v̂ ← max(v̂, v)` in the
/// denominator (docs/algorithms.md §C.2).
pub fn amsgrad(beta1: f64, beta2: f64, eps: f64) -> Chain {
    chain(vec![
        Box::new(scale_by_amsgrad(beta1, beta2, eps)),
        Box::new(scale_by_rate()),
    ])
}
