//! Rényi-DP accountant for the Poisson-sampled Gaussian mechanism (docs/privacy.md, "RDP
//! accountant").
//!
//! The one decision: the numbers are those of Google's `dp_accounting` (0.6): the same
//! default orders, the same integer and fractional-order series (the fractional one sums
//! absolute terms, an upper bound, and drops an order whose series has not converged after
//! 1000 terms), and the same improved RDP → (ε, δ) conversion. The golden test checks
//! this crate against values that library computed.

use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};

/// `dp_accounting`'s default orders: 1.1, 1.2, …, 10.9, then 11, …, 63, then 128, 256, 512,
/// 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(|x| x as f64));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// RDP at `order` of one step of the sampled Gaussian mechanism: Poisson sampling with
/// probability `q`, sum with L2 sensitivity 1, Gaussian noise of standard deviation
/// `noise_multiplier`.
///
/// `q = 1`: ε(α) = α / (2σ²). `0 < q < 1`: ε(α) = log A_α / (α − 1), with A_α from the
/// binomial sum (integer α) or the erfc series (fractional α) of docs/privacy.md.
/// Returns +∞ where the bound is vacuous (σ = 0, α = 1 with q < 1, a divergent series).
///
/// ```
/// let e = fedpace_privacy::accountant::rdp_sampled_gaussian(1.0, 2.0, 4.0).unwrap();
/// assert!((e - 0.5).abs() < 1e-15);
/// ```
pub fn rdp_sampled_gaussian(q: f64, noise_multiplier: f64, order: f64) -> Result<f64> {
    check_q(q)?;
    check_sigma(noise_multiplier)?;
    check_order(order)?;
    let sigma = noise_multiplier;
    if q == 0.0 {
        return Ok(0.0);
    }
    if order.is_infinite() || sigma == 0.0 {
        return Ok(f64::INFINITY);
    }
    if q == 1.0 {
        return Ok(order / (2.0 * sigma * sigma));
    }
    if order == 1.0 {
        // The KL divergence of the mixture has no closed form; no bound at this order.
        return Ok(f64::INFINITY);
    }
    let log_a = if order.fract() == 0.0 && order <= u32::MAX as f64 {
        log_a_integer(q, sigma, order as u64)
    } else {
        log_a_fractional(q, sigma, order)
    };
    Ok(log_a / (order - 1.0))
}

/// log A_α for integer α: log Σ_{i=0}^{α} C(α,i) q^i (1−q)^{α−i} exp((i² − i)/(2σ²)).
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let a = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = i as f64;
        let term = log_binomial(a, i)
            + i * log_q
            + (a - i) * log_1mq
            + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a
}

/// Most terms the fractional-order series may take before the order is dropped.
const MAX_FRACTIONAL_TERMS: usize = 1000;

/// log A_α for fractional α (Mironov, Talwar, Zhang 2019, §3.3): the integral split at
/// z₀ = σ² log(1/q − 1) + ½, each half a series in |C(α,i)| with erfc tails. Returns +∞
/// when the series has not converged after [`MAX_FRACTIONAL_TERMS`] terms.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let erfc_scale = std::f64::consts::SQRT_2 * sigma;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_FRACTIONAL_TERMS {
        let i = i as f64;
        let j = alpha - i;
        let log_coef = log_binomial(alpha, i);
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / erfc_scale);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / erfc_scale);
        let log_s0 = log_t0 + (i * i - i) / two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// log(eˣ + eʸ) without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// log |C(n, k)| for real n, k via log |Γ|.
fn log_binomial(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// log erfc(x), accurate where erfc(x) underflows (x ≫ 1).
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = exp(−x²)/(x√π) · Σ_k (−1)^k (2k−1)!! / (2x²)^k; at x ≥ 20 six terms reach
    // machine precision.
    let inv = 1.0 / (2.0 * x * x);
    let (mut term, mut series) = (1.0, 1.0);
    for k in 1..=6 {
        term *= -((2 * k - 1) as f64) * inv;
        series += term;
    }
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
}

/// ε and the order that attains it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonAtOrder {
    /// The ε of the (ε, δ) guarantee.
    pub epsilon: f64,
    /// The RDP order α that gave it (0 when δ = 0).
    pub order: f64,
}

/// The smallest ε over the orders such that RDP (`orders`, `rdp`) implies (ε, δ)-DP, by the
/// improved conversion (Balle et al. 2020, Prop. 12; Canonne, Kamath, Steinke 2020):
///
/// ε(α) = r_α + log((α−1)/α) − (log δ + log α)/(α − 1), for α > 1.01;
/// ε(α) = 0 where δ² > 1 − e^{−r_α} (the KL bound); +∞ otherwise. Result clamped at 0.
///
/// ```
/// use fedpace_privacy::accountant::epsilon_from_rdp;
/// let orders: Vec<f64> = (2..33).map(|a| a as f64).collect();
/// let e = epsilon_from_rdp(&orders, &vec![1.1; 31], 1e-5).unwrap();
/// assert!((e.epsilon - 1.32783806176).abs() < 1e-9 && e.order == 32.0);
/// ```
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<EpsilonAtOrder> {
    check_curve(orders, rdp)?;
    if !(0.0..=1.0).contains(&delta) {
        return Err(invalid("delta", delta, "must be in [0, 1]"));
    }
    if delta == 0.0 {
        let epsilon = if rdp.iter().all(|&r| r == 0.0) {
            0.0
        } else {
            f64::INFINITY
        };
        return Ok(EpsilonAtOrder {
            epsilon,
            order: 0.0,
        });
    }
    let mut best = EpsilonAtOrder {
        epsilon: f64::INFINITY,
        order: orders[0],
    };
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.epsilon {
            best = EpsilonAtOrder {
                epsilon: eps,
                order: a,
            };
        }
    }
    best.epsilon = best.epsilon.max(0.0);
    Ok(best)
}

/// The smallest δ over the orders such that RDP (`orders`, `rdp`) implies (ε, δ)-DP (the
/// inverse of [`epsilon_from_rdp`]): log δ(α) = min(½ log(1 − e^{−r_α}),
/// (α−1)(r_α − ε + log(1 − 1/α)) − log α), the second term only for α > 1.01.
/// Returns (δ, order).
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<(f64, f64)> {
    check_curve(orders, rdp)?;
    if epsilon.is_nan() || epsilon < 0.0 {
        return Err(invalid("epsilon", epsilon, "must be ≥ 0"));
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    Ok((best.0.exp().min(1.0), best.1))
}

/// Accumulated RDP over a fixed list of orders. RDP adds under composition, so rounds with
/// different `q` or σ (adaptive clipping, a changing cohort) simply add their curves.
/// Serialisable, so a run's privacy spend survives a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant over [`default_orders`] with nothing spent.
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// An accountant over the given orders (each ≥ 1, at least one).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(invalid("orders", "[]", "at least one RDP order"));
        }
        for &a in &orders {
            check_order(a)?;
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// The orders α.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Accumulated RDP ε(α), one per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Adds `count` steps of the sampled Gaussian mechanism with sampling probability `q`
    /// and noise multiplier `noise_multiplier` (noise std / L2 sensitivity).
    pub fn compose_sampled_gaussian(
        &mut self,
        q: f64,
        noise_multiplier: f64,
        count: u64,
    ) -> Result<()> {
        let per_step = self
            .orders
            .iter()
            .map(|&a| rdp_sampled_gaussian(q, noise_multiplier, a))
            .collect::<Result<Vec<_>>>()?;
        for (total, step) in self.rdp.iter_mut().zip(per_step) {
            // 0 · ∞ must stay 0 (no step composed), not NaN.
            if count > 0 {
                *total += step * count as f64;
            }
        }
        Ok(())
    }

    /// ε spent so far at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<EpsilonAtOrder> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }

    /// δ spent so far at `epsilon`, and the order that attains it.
    pub fn delta(&self, epsilon: f64) -> Result<(f64, f64)> {
        delta_from_rdp(&self.orders, &self.rdp, epsilon)
    }
}

/// ε after `steps` rounds of the sampled Gaussian mechanism, over [`default_orders`].
pub fn epsilon_for(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
) -> Result<EpsilonAtOrder> {
    let mut acc = RdpAccountant::new();
    acc.compose_sampled_gaussian(q, noise_multiplier, steps)?;
    acc.epsilon(delta)
}

/// The smallest noise multiplier σ (to relative precision 1e-10) such that `steps` rounds of
/// the sampled Gaussian mechanism with probability `q` stay within (`target_epsilon`,
/// `delta`) over [`default_orders`]. ε is non-increasing in σ, so a doubling bracket and
/// bisection find it; the returned σ always satisfies the target (it is the upper end).
///
/// ```
/// use fedpace_privacy::accountant::{epsilon_for, noise_multiplier_for_epsilon};
/// let z = noise_multiplier_for_epsilon(0.01, 1000, 2.0, 1e-5).unwrap();
/// assert!(epsilon_for(0.01, z, 1000, 1e-5).unwrap().epsilon <= 2.0);
/// ```
pub fn noise_multiplier_for_epsilon(
    q: f64,
    steps: u64,
    target_epsilon: f64,
    delta: f64,
) -> Result<f64> {
    check_q(q)?;
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(invalid(
            "target_epsilon",
            target_epsilon,
            "must be a finite number > 0",
        ));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", delta, "must be in (0, 1)"));
    }
    if q == 0.0 || steps == 0 {
        return Ok(0.0);
    }
    let eps = |sigma: f64| epsilon_for(q, sigma, steps, delta).map(|e| e.epsilon);
    let mut hi = 1.0;
    while eps(hi)? > target_epsilon {
        hi *= 2.0;
        if hi > 1e12 {
            return Err(invalid(
                "target_epsilon",
                target_epsilon,
                format!("not reachable with any noise multiplier ≤ 1e12 (q = {q}, {steps} steps, δ = {delta})"),
            ));
        }
    }
    let mut lo = hi / 2.0;
    while eps(lo)? <= target_epsilon {
        hi = lo;
        lo /= 2.0;
        if lo < 1e-12 {
            return Ok(hi);
        }
    }
    while (hi - lo) > 1e-10 * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid)? <= target_epsilon {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn check_q(q: f64) -> Result<()> {
    if (0.0..=1.0).contains(&q) {
        Ok(())
    } else {
        Err(invalid("sampling_probability", q, "must be in [0, 1]"))
    }
}

fn check_sigma(sigma: f64) -> Result<()> {
    if sigma >= 0.0 && sigma.is_finite() {
        Ok(())
    } else {
        Err(invalid(
            "noise_multiplier",
            sigma,
            "must be a finite number ≥ 0",
        ))
    }
}

fn check_order(order: f64) -> Result<()> {
    if order >= 1.0 {
        Ok(())
    } else {
        Err(invalid("order", order, "RDP orders must be ≥ 1"))
    }
}

fn check_curve(orders: &[f64], rdp: &[f64]) -> Result<()> {
    crate::error::check_len("rdp (one value per order)", orders.len(), rdp.len())?;
    if orders.is_empty() {
        return Err(invalid("orders", "[]", "at least one RDP order"));
    }
    for &a in orders {
        check_order(a)?;
    }
    if let Some(r) = rdp.iter().find(|r| r.is_nan()) {
        return Err(invalid("rdp", r, "RDP values must not be NaN"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_matches_mpmath_on_both_sides_of_the_asymptotic_switch() {
        // mpmath (40 digits, rounded to f64): log(erfc(x)).
        for (x, want) in [
            (-1.0, 0.6112323176780705),
            (5.0, -27.200889545537436),
            (20.0, -403.56934333410425),
            (30.0, -903.9741171106439),
        ] {
            let got = log_erfc(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs(),
                "x = {x}: {got} vs {want}"
            );
        }
        let below = log_erfc(20.0 - 1e-12);
        assert!((below - log_erfc(20.0)).abs() < 1e-9);
    }

    #[test]
    fn log_binomial_handles_fractional_and_negative_coefficients() {
        // mpmath: log |C(n, k)|; C(3.5, 5) and C(1.5, 3) are negative.
        for (n, k, want) in [
            (3.5, 5.0, -3.5992672954242493),
            (2.5, 1.0, 0.9162907318741551),
            (1.5, 3.0, -2.772588722239781),
        ] {
            assert!((log_binomial(n, k) - want).abs() < 1e-13, "C({n}, {k})");
        }
    }

    #[test]
    fn integer_rdp_matches_the_spec_sanity_values() {
        // docs/privacy.md: ε_RDP(q = 0.01, σ = 1) at α = 2, 8, 32.
        for (order, want) in [(2.0, 1.718134e-4), (8.0, 8.936439e-4), (32.0, 11.24628)] {
            let got = rdp_sampled_gaussian(0.01, 1.0, order).unwrap();
            assert!(
                (got - want).abs() < 1e-6 * want,
                "α = {order}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn invalid_inputs_name_the_field() {
        let e = rdp_sampled_gaussian(1.5, 1.0, 2.0).unwrap_err().to_string();
        assert!(e.starts_with("sampling_probability = 1.5"), "{e}");
        let e = rdp_sampled_gaussian(0.1, -1.0, 2.0)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("noise_multiplier = -1"), "{e}");
        let e = epsilon_from_rdp(&[2.0], &[0.1, 0.2], 1e-5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("length 2, expected 1"), "{e}");
        assert!(noise_multiplier_for_epsilon(0.1, 10, 0.0, 1e-5).is_err());
    }

    #[test]
    fn zero_steps_and_zero_sampling_spend_nothing() {
        let mut acc = RdpAccountant::new();
        acc.compose_sampled_gaussian(0.5, 0.0, 0).unwrap();
        acc.compose_sampled_gaussian(0.0, 1.0, 10).unwrap();
        assert_eq!(acc.epsilon(1e-10).unwrap().epsilon, 0.0);
    }
}
