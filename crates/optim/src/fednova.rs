//! FedNova's normaliser `Λ_k = η·‖a_k‖₁` (docs/rate-policies.md, "Objective
//! consistency"), for the local solvers whose update is linear in the gradients: SGD,
//! heavy-ball or Nesterov momentum, a proximal term and L2 weight decay. The server divides each client's `Δ_k`
//! by it to undo the objective re-weighting of per-client rates and step counts.
//!
//! `‖a_k‖₁` is the total weight the round's displacement gives the gradients of its
//! steps. For SGD it is τ (so `Λ = Σ_s η_s`); heavy-ball momentum ρ carries each gradient
//! into later steps, `[τ − ρ(1−ρ^τ)/(1−ρ)]/(1−ρ)`; a proximal term μ pulls back towards the
//! round's start, `[1 − (1−ημ)^τ]/(ημ)` (Wang et al. 2020, §4 and App. C). [`Normalizer`]
//! accumulates the same quantity step by step, so it also holds for rates that change
//! from step to step (schedules, Δ-SGD, trust ratios): it runs the solver's recursion on
//! a unit gradient, `v ← ρv + 1 − μ·Λ`, `Λ ← Λ + η_s·(v, or 1 − μ·Λ + ρv for Nesterov)`.

/// The linear part of a local solver, as far as FedNova's normaliser is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinearSolver {
    /// Momentum ρ ∈ [0, 1) (PyTorch convention `v ← ρv + g`; 0: plain SGD).
    pub momentum: f64,
    /// Nesterov momentum (the step is `g + ρv`).
    pub nesterov: bool,
    /// Pull towards the round's starting point: proximal μ plus L2 weight decay λ (the
    /// decay's pull towards 0 is, around the round's start, a pull of the same strength).
    pub mu: f64,
}

/// `Λ = η·‖a‖₁` accumulated one local step at a time (see the module doc).
///
/// ```
/// use fedpace_optim::fednova::{LinearSolver, Normalizer};
/// // Heavy-ball ρ = 0.9, 5 steps at η = 1: ‖a‖₁ = 13.1441 (the FedNova paper's formula).
/// let mut n = Normalizer::new(LinearSolver { momentum: 0.9, ..Default::default() });
/// for _ in 0..5 {
///     n.step(1.0);
/// }
/// assert!((n.value() - 13.1441).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Normalizer {
    solver: LinearSolver,
    lambda: f64,
    velocity: f64,
}

impl Normalizer {
    /// A normaliser at the start of a round.
    pub fn new(solver: LinearSolver) -> Self {
        Self {
            solver,
            lambda: 0.0,
            velocity: 0.0,
        }
    }

    /// One local step at rate `rate`.
    pub fn step(&mut self, rate: f64) {
        let LinearSolver {
            momentum: rho,
            nesterov,
            mu,
        } = self.solver;
        let g = 1.0 - mu * self.lambda;
        self.velocity = rho * self.velocity + g;
        let u = if nesterov {
            g + rho * self.velocity
        } else {
            self.velocity
        };
        self.lambda += rate * u;
    }

    /// `Λ` so far. For plain SGD it is exactly `Σ_s η_s`, summed in step order.
    pub fn value(&self) -> f64 {
        self.lambda
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(solver: LinearSolver, rates: &[f64]) -> f64 {
        let mut n = Normalizer::new(solver);
        for &r in rates {
            n.step(r);
        }
        n.value()
    }

    /// The FedNova paper's closed forms for a constant rate (App. C).
    fn momentum_closed_form(rho: f64, tau: f64) -> f64 {
        (tau - rho * (1.0 - rho.powf(tau)) / (1.0 - rho)) / (1.0 - rho)
    }
    fn proximal_closed_form(lr: f64, mu: f64, tau: f64) -> f64 {
        (1.0 - (1.0 - lr * mu).powf(tau)) / (lr * mu)
    }

    #[test]
    fn normalizer_matches_the_papers_closed_forms_at_a_constant_rate() {
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        let mom = |rho| LinearSolver {
            momentum: rho,
            ..Default::default()
        };
        // Spec test vectors: ‖a‖₁ for ρ = 0.9 after 1, 5, 10 steps.
        assert_eq!(run(mom(0.9), &[1.0]), 1.0);
        assert!(rel(run(mom(0.9), &[1.0; 5]), 13.1441) < 1e-7);
        assert!(rel(run(mom(0.9), &[1.0; 10]), 41.38106) < 1e-7);
        for rho in [0.0, 0.5, 0.9, 0.99] {
            for tau in [1usize, 3, 17, 100] {
                let want = 0.1 * momentum_closed_form(rho, tau as f64);
                assert!(rel(run(mom(rho), &vec![0.1; tau]), want) < 1e-9);
            }
        }
        let prox = |mu| LinearSolver {
            mu,
            ..Default::default()
        };
        // η = 1, μ = 0.01, τ = 5 → 4.900995; η = 0.5, μ = 0.02, τ = 20 → 0.5 · 18.209306.
        assert!(rel(run(prox(0.01), &[1.0; 5]), 4.900995) < 1e-7);
        assert!(rel(run(prox(0.02), &[0.5; 20]), 0.5 * 18.209306) < 1e-7);
        assert!(
            rel(
                run(prox(0.3), &[0.2; 7]),
                0.2 * proximal_closed_form(0.2, 0.3, 7.0)
            ) < 1e-12
        );
        // Plain SGD: Σ η, bit for bit.
        assert_eq!(
            run(LinearSolver::default(), &[0.1, 0.2, 0.3]),
            0.1 + 0.2 + 0.3
        );
    }

    #[test]
    fn normalizer_by_hand_for_nesterov_and_changing_rates() {
        // Nesterov ρ = 0.5: v = 1, 1.5; steps 1 + 0.5·1 = 1.5 and 1 + 0.5·1.5 = 1.75.
        let n = LinearSolver {
            momentum: 0.5,
            nesterov: true,
            mu: 0.0,
        };
        assert!((run(n, &[0.1, 0.2]) - (0.1 * 1.5 + 0.2 * 1.75)).abs() < 1e-15);
        // Proximal μ = 1 at rates 0.1 then 0.2: Λ₁ = 0.1, Λ₂ = 0.1 + 0.2·(1 − 0.1).
        let p = LinearSolver {
            momentum: 0.0,
            nesterov: false,
            mu: 1.0,
        };
        assert!((run(p, &[0.1, 0.2]) - 0.28).abs() < 1e-15);
    }
}
