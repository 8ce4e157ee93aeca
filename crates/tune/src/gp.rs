//! Gaussian-process regression with a Matérn 5/2 kernel (one length scale per input),
//! and expected improvement: the surrogate of Bayesian optimisation (docs/tuning.md,
//! "Bayesian optimisation").
//!
//! Small and exact: a Cholesky factor of `K + σ_n² I`, O(n³) for n observations, which
//! is what a search of tens to a few hundred trials needs. The crates that exist pull in
//! a linear-algebra stack (nalgebra, ndarray/linfa) or a newer compiler than the
//! workspace's; this file is checked against scikit-learn (tests/golden/gp_reference.py).

use crate::Error;
use rand::{Rng, SeedableRng};
use statrs::distribution::{Continuous, ContinuousCDF, Normal};

/// Hyper-parameters of the kernel `k(x, x') = σ_f² (1 + √5 r + 5r²/3) exp(−√5 r)`,
/// `r² = Σ_j (x_j − x'_j)² / ℓ_j²`, plus observation noise σ_n².
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Length scale ℓ_j per input dimension.
    pub lengthscales: Vec<f64>,
    /// Signal variance σ_f².
    pub signal: f64,
    /// Noise variance σ_n² (added to the diagonal of the training covariance).
    pub noise: f64,
}

impl Kernel {
    /// `k(a, b)` without noise.
    pub fn eval(&self, a: &[f64], b: &[f64]) -> f64 {
        let r2: f64 = a
            .iter()
            .zip(b)
            .zip(&self.lengthscales)
            .map(|((x, y), l)| ((x - y) / l).powi(2))
            .sum();
        let r = r2.sqrt();
        let s5 = 5f64.sqrt() * r;
        self.signal * (1.0 + s5 + 5.0 * r2 / 3.0) * (-s5).exp()
    }
}

/// A fitted Gaussian process (zero prior mean).
#[derive(Debug, Clone)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    kernel: Kernel,
    /// Lower Cholesky factor of `K + σ_n² I`, row-major n×n.
    chol: Vec<f64>,
    /// `(K + σ_n² I)⁻¹ y`.
    alpha: Vec<f64>,
    lml: f64,
}

fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    true
}

/// Solves `L z = b` in place.
fn forward(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves `Lᵀ z = b` in place.
fn backward(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

impl Gp {
    /// Conditions on observations `y` at `x` with fixed hyper-parameters. A covariance
    /// that is not numerically positive definite gets a growing jitter (up to 1e-6·σ_f²).
    pub fn fit(x: &[Vec<f64>], y: &[f64], kernel: Kernel) -> Result<Self, Error> {
        let n = x.len();
        if n == 0 || y.len() != n {
            return Err(Error::Invalid(format!(
                "gp: {} inputs and {} outputs",
                n,
                y.len()
            )));
        }
        let mut base = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let k = kernel.eval(&x[i], &x[j]);
                base[i * n + j] = k;
                base[j * n + i] = k;
            }
        }
        let mut jitter = 0.0;
        for attempt in 0..6 {
            let mut a = base.clone();
            for i in 0..n {
                a[i * n + i] += kernel.noise + jitter;
            }
            if cholesky(&mut a, n) {
                let mut alpha = y.to_vec();
                forward(&a, n, &mut alpha);
                let quad: f64 = alpha.iter().map(|v| v * v).sum();
                backward(&a, n, &mut alpha);
                let logdet: f64 = (0..n).map(|i| a[i * n + i].ln()).sum();
                let lml = -0.5 * quad - logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
                return Ok(Self {
                    x: x.to_vec(),
                    kernel,
                    chol: a,
                    alpha,
                    lml,
                });
            }
            jitter = kernel.signal * 1e-11 * 10f64.powi(attempt);
        }
        Err(Error::Invalid(
            "gp: covariance is not positive definite".into(),
        ))
    }

    /// Posterior mean and variance of the latent function at `x` (noise excluded).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let n = self.x.len();
        let mut k: Vec<f64> = self.x.iter().map(|xi| self.kernel.eval(xi, x)).collect();
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        forward(&self.chol, n, &mut k);
        let v: f64 = k.iter().map(|a| a * a).sum();
        (mean, (self.kernel.eval(x, x) - v).max(0.0))
    }

    /// Log marginal likelihood `−½ yᵀα − Σ log L_ii − (n/2) log 2π`.
    pub fn log_marginal_likelihood(&self) -> f64 {
        self.lml
    }

    /// The kernel in use.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Fits the hyper-parameters by maximising the log marginal likelihood, for inputs
    /// in the unit cube and standardised outputs: length scales in [0.03, 10], σ_f² in
    /// [0.05, 20], σ_n² in [1e-6, 1]. A seeded random start (64 draws) then a
    /// coordinate pattern search in log space: deterministic for a given `seed`.
    pub fn fit_hyperparameters(x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Self, Error> {
        let d = x.first().map_or(0, Vec::len);
        let lo: Vec<f64> = std::iter::repeat_n(0.03f64.ln(), d)
            .chain([0.05f64.ln(), 1e-6f64.ln()])
            .collect();
        let hi: Vec<f64> = std::iter::repeat_n(10f64.ln(), d)
            .chain([20f64.ln(), 1f64.ln()])
            .collect();
        let make = |theta: &[f64]| Kernel {
            lengthscales: theta[..d].iter().map(|v| v.exp()).collect(),
            signal: theta[d].exp(),
            noise: theta[d + 1].exp(),
        };
        let score = |theta: &[f64]| -> Option<Gp> { Gp::fit(x, y, make(theta)).ok() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // A sensible first guess: unit signal, small noise, mid length scales.
        let mut best_theta: Vec<f64> = std::iter::repeat_n(0.3f64.ln(), d)
            .chain([0.0, 0.01f64.ln()])
            .collect();
        let mut best = score(&best_theta);
        for _ in 0..64 {
            let theta: Vec<f64> = lo
                .iter()
                .zip(&hi)
                .map(|(a, b)| rng.gen_range(*a..*b))
                .collect();
            if let Some(g) = score(&theta) {
                if best.as_ref().is_none_or(|b| g.lml > b.lml) {
                    best = Some(g);
                    best_theta = theta;
                }
            }
        }
        let mut step = 1.0;
        while step > 0.02 {
            let mut improved = false;
            for i in 0..d + 2 {
                for dir in [1.0, -1.0] {
                    let mut t = best_theta.clone();
                    t[i] = (t[i] + dir * step).clamp(lo[i], hi[i]);
                    if let Some(g) = score(&t) {
                        if best.as_ref().is_none_or(|b| g.lml > b.lml + 1e-12) {
                            best = Some(g);
                            best_theta = t;
                            improved = true;
                        }
                    }
                }
            }
            if !improved {
                step /= 2.0;
            }
        }
        best.ok_or_else(|| {
            Error::Invalid("gp: no hyper-parameters give a positive-definite covariance".into())
        })
    }
}

/// Expected improvement over `best` (maximisation) of a normal prediction `N(mean, sd²)`:
/// `EI = (μ − f* − ξ) Φ(z) + σ φ(z)`, `z = (μ − f* − ξ) / σ`; `max(μ − f* − ξ, 0)` when σ = 0.
pub fn expected_improvement(mean: f64, sd: f64, best: f64, xi: f64) -> f64 {
    let gain = mean - best - xi;
    if sd <= 1e-12 {
        return gain.max(0.0);
    }
    let z = gain / sd;
    let n = Normal::standard();
    gain * n.cdf(z) + sd * n.pdf(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden numbers: tests/golden/gp_reference.py (scikit-learn GaussianProcessRegressor,
    // ConstantKernel × Matern(ν = 2.5), alpha = σ_n², optimizer = None; scipy.stats.norm).
    fn data() -> (Vec<Vec<f64>>, Vec<f64>) {
        let x = vec![
            vec![0.1, 0.8],
            vec![0.4, 0.3],
            vec![0.7, 0.5],
            vec![0.9, 0.1],
            vec![0.25, 0.6],
        ];
        let y = vec![0.3, -0.5, 1.2, 0.1, 0.7];
        (x, y)
    }

    #[test]
    fn posterior_and_likelihood_match_scikit_learn() {
        let (x, y) = data();
        let k = Kernel {
            lengthscales: vec![0.3, 0.5],
            signal: 1.5,
            noise: 0.01,
        };
        let gp = Gp::fit(&x, &y, k).unwrap();
        let golden = include_str!("../tests/golden/gp.txt");
        let mut lines = golden.lines().filter(|l| !l.starts_with('#'));
        let lml: f64 = lines.next().unwrap().parse().unwrap();
        assert!(
            (gp.log_marginal_likelihood() - lml).abs() < 1e-9,
            "{} vs {lml}",
            gp.log_marginal_likelihood()
        );
        for line in lines {
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect();
            let (m, var) = gp.predict(&v[..2]);
            assert!(
                (m - v[2]).abs() < 1e-9,
                "mean at {:?}: {m} vs {}",
                &v[..2],
                v[2]
            );
            assert!(
                (var.sqrt() - v[3]).abs() < 1e-7,
                "sd at {:?}: {} vs {}",
                &v[..2],
                var.sqrt(),
                v[3]
            );
            let ei = expected_improvement(m, var.sqrt(), 1.2, 0.01);
            assert!(
                (ei - v[4]).abs() < 1e-7,
                "EI at {:?}: {ei} vs {}",
                &v[..2],
                v[4]
            );
        }
    }

    #[test]
    fn fitted_hyperparameters_do_not_lose_to_the_first_guess_and_are_deterministic() {
        let (x, y) = data();
        let a = Gp::fit_hyperparameters(&x, &y, 7).unwrap();
        let b = Gp::fit_hyperparameters(&x, &y, 7).unwrap();
        assert_eq!(a.kernel(), b.kernel());
        let guess = Gp::fit(
            &x,
            &y,
            Kernel {
                lengthscales: vec![0.3, 0.3],
                signal: 1.0,
                noise: 0.01,
            },
        )
        .unwrap();
        assert!(a.log_marginal_likelihood() >= guess.log_marginal_likelihood());
        // Interpolates the data closely when noise is small.
        let (m, _) = a.predict(&x[2]);
        assert!((m - y[2]).abs() < 0.5, "{m}");
    }

    #[test]
    fn repeated_inputs_do_not_break_the_factorisation() {
        let x = vec![vec![0.5], vec![0.5], vec![0.5]];
        let y = vec![1.0, 1.0, 1.0];
        let gp = Gp::fit(
            &x,
            &y,
            Kernel {
                lengthscales: vec![0.2],
                signal: 1.0,
                noise: 0.0,
            },
        )
        .unwrap();
        let (m, v) = gp.predict(&[0.5]);
        assert!((m - 1.0).abs() < 1e-3 && v < 1e-3, "{m} {v}");
    }

    #[test]
    fn expected_improvement_limits() {
        assert_eq!(expected_improvement(2.0, 0.0, 1.0, 0.0), 1.0);
        assert_eq!(expected_improvement(0.0, 0.0, 1.0, 0.0), 0.0);
        // Far below the best with a small spread: nearly nothing to gain.
        assert!(expected_improvement(-10.0, 0.1, 0.0, 0.0) < 1e-12);
    }
}
