//! `grad-norm-ratio` (docs/algorithms.md §C.5): `r_k = clamp((‖ĝ‖/‖ĝ_k‖)^κ, min, max)`, with
//! `‖ĝ_k‖ = ‖Δ_k‖/Λ̄_k` (the lr-free average step direction of the client's last
//! participation, Λ̄_k its mean rate sum over groups) and `‖ĝ‖` the mean of those
//! estimates over the clients seen so far. κ = 1 (default) shrinks clients whose
//! gradients dominate; κ = −1 is the direct ratio `η_k ∝ ‖∇F_k‖/‖∇F‖` (use it with
//! clamping). Clients not seen yet get r = 1.

use super::scaled;
use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result, TrainReport};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct GradNormRatio {
    /// κ.
    pub kappa: f64,
    /// Lower clamp.
    pub min: f64,
    /// Upper clamp.
    pub max: f64,
    est: BTreeMap<u64, f64>,
}

impl GradNormRatio {
    /// With κ and clamps.
    pub fn new(kappa: f64, min: f64, max: f64) -> Self {
        Self {
            kappa,
            min,
            max,
            est: BTreeMap::new(),
        }
    }
    /// `‖Δ_k‖ / mean_g Λ_{k,g}` from a report (None without steps).
    pub fn estimate(r: &TrainReport) -> Option<f64> {
        let lam = super::mean(r.rate_sum.iter())?;
        (lam > 0.0 && r.update_norm.is_finite()).then(|| r.update_norm / lam)
    }
}

impl RatePolicy for GradNormRatio {
    fn describe(&self) -> String {
        format!(
            "grad-norm-ratio(κ={}, clamp [{}, {}])",
            self.kappa, self.min, self.max
        )
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let r = match (self.est.get(&client.id), super::mean(self.est.values())) {
            (Some(&gk), Some(g)) if gk > 0.0 && g > 0.0 => {
                (g / gk).powf(self.kappa).clamp(self.min, self.max)
            }
            _ => 1.0,
        };
        Ok(scaled(base, r))
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        super::save_map(&self.est)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.est = super::load_map(bytes, "grad-norm-ratio state")?;
        Ok(())
    }
    fn observe(&mut self, _round: u32, client: &ClientInfo, report: &TrainReport) {
        if let Some(e) = Self::estimate(report) {
            self.est.insert(client.id, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    fn rep(norm: f64, lam: f64) -> TrainReport {
        TrainReport {
            update_norm: norm,
            rate_sum: vec![lam, lam],
            ..Default::default()
        }
    }

    #[test]
    fn ratio_by_hand() {
        let mut p = GradNormRatio::new(1.0, 0.1, 10.0);
        let (a, b) = (info(0, 1, vec![], None), info(1, 1, vec![], None));
        assert_eq!(p.plan(1, &a, &base_plan()).unwrap().base_lr, 0.1); // unseen: r = 1
        p.observe(1, &a, &rep(1.0, 0.5)); // ĝ_a = 2
        p.observe(1, &b, &rep(3.0, 0.5)); // ĝ_b = 6, mean 4
        let ra = p.plan(2, &a, &base_plan()).unwrap().base_lr as f64 / 0.1;
        let rb = p.plan(2, &b, &base_plan()).unwrap().base_lr as f64 / 0.1;
        assert!(
            (ra - 2.0).abs() < 1e-6 && (rb - 4.0 / 6.0).abs() < 1e-6,
            "{ra} {rb}"
        );
        let mut direct = GradNormRatio::new(-1.0, 0.1, 1.2);
        direct.observe(1, &a, &rep(1.0, 0.5));
        direct.observe(1, &b, &rep(3.0, 0.5));
        let rb = direct.plan(2, &b, &base_plan()).unwrap().base_lr as f64 / 0.1;
        assert!((rb - 1.2).abs() < 1e-6); // 6/4 = 1.5 clamped to 1.2
    }
}
