//! FedNova normalisers `‖a_k‖₁` for common local solvers (ALGORITHMS.md §1.1–1.2): with a
//! constant client rate η_k, a client's total step size is `Λ_k = η_k·‖a_k‖₁`, and the
//! server divides `Δ_k` by it to undo the objective re-weighting of per-client rates.
//! For SGD, `‖a‖₁ = τ`; with a schedule use `Λ_k = Σ_s η_{k,s}` directly.

/// Heavy-ball momentum ρ (PyTorch convention `v ← ρv + g`) after τ steps:
/// `‖a‖₁ = [τ − ρ(1−ρ^τ)/(1−ρ)] / (1−ρ)`, accumulated step by step as the reference
/// code does (`c ← ρc + 1; A ← A + c`), which also covers ρ = 1.
///
/// ```
/// use fedpace_optim::momentum_normalizer;
/// assert!((momentum_normalizer(0.9, 5) - 13.1441).abs() < 1e-9);
/// assert_eq!(momentum_normalizer(0.0, 7), 7.0);
/// ```
pub fn momentum_normalizer(rho: f64, tau: u64) -> f64 {
    let (mut c, mut a) = (0.0f64, 0.0f64);
    for _ in 0..tau {
        c = rho * c + 1.0;
        a += c;
    }
    a
}

/// Proximal SGD (FedProx term μ, rate η) after τ steps:
/// `‖a‖₁ = [1 − (1−ημ)^τ] / (ημ)`, and τ when ημ = 0.
///
/// ```
/// use fedpace_optim::proximal_normalizer;
/// assert!((proximal_normalizer(0.1, 0.1, 5) - 4.900995).abs() < 1e-6);
/// ```
pub fn proximal_normalizer(lr: f64, mu: f64, tau: u64) -> f64 {
    let x = lr * mu;
    if x == 0.0 {
        return tau as f64;
    }
    (1.0 - (1.0 - x).powf(tau as f64)) / x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_test_vectors() {
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        assert_eq!(momentum_normalizer(0.9, 1), 1.0);
        assert!(rel(momentum_normalizer(0.9, 5), 13.1441) < 1e-7);
        assert!(rel(momentum_normalizer(0.9, 10), 41.38106) < 1e-7);
        assert!(rel(proximal_normalizer(1.0, 0.01, 5), 4.900995) < 1e-7);
        assert!(rel(proximal_normalizer(0.5, 0.02, 20), 18.209306) < 1e-7);
        assert_eq!(proximal_normalizer(0.1, 0.0, 9), 9.0);
    }

    #[test]
    fn momentum_normalizer_matches_closed_form() {
        for &rho in &[0.0f64, 0.5, 0.9, 0.99] {
            for tau in [1u64, 3, 17, 100] {
                let t = tau as f64;
                let closed = (t - rho * (1.0 - rho.powf(t)) / (1.0 - rho)) / (1.0 - rho);
                assert!((momentum_normalizer(rho, tau) - closed).abs() < 1e-9 * closed);
            }
        }
        assert_eq!(momentum_normalizer(1.0, 4), 10.0); // 1+2+3+4
    }
}
