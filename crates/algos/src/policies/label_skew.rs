//! `by-label-skew` (docs/algorithms.md §C.5, metadata rule): the multiplier depends on how far
//! a client's label distribution is from the pooled one, measured by total variation
//! `D_k = ½ Σ_c |p_k(c) − p(c)| ∈ [0, 1]`:
//! `r_k = clamp(exp(κ·(D_k − D̄)), min, max)` with D̄ the pool's mean divergence (so the
//! mean multiplier stays near 1, §1.3). κ < 0 (default −1) slows down the most skewed
//! clients, whose local optima are farthest from the global one (less drift).

use super::scaled;
use fedpace_core::{ClientInfo, ClientPool, RatePlan, RatePolicy, Result};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct ByLabelSkew {
    /// κ.
    pub kappa: f64,
    /// Lower clamp.
    pub min: f64,
    /// Upper clamp.
    pub max: f64,
    div: BTreeMap<u64, f64>,
    mean_div: f64,
}

impl ByLabelSkew {
    /// With κ and clamps.
    pub fn new(kappa: f64, min: f64, max: f64) -> Self {
        Self {
            kappa,
            min,
            max,
            div: BTreeMap::new(),
            mean_div: 0.0,
        }
    }
    /// The client's divergence D_k (after `start`).
    pub fn divergence(&self, id: u64) -> Option<f64> {
        self.div.get(&id).copied()
    }
    /// The multiplier for divergence `d`.
    pub fn multiplier(&self, d: f64) -> f64 {
        (self.kappa * (d - self.mean_div))
            .exp()
            .clamp(self.min, self.max)
    }
}

/// Total variation between two histograms (0 when either is empty).
pub fn total_variation(a: &[u64], b: &[u64]) -> f64 {
    let (na, nb) = (a.iter().sum::<u64>(), b.iter().sum::<u64>());
    if na == 0 || nb == 0 {
        return 0.0;
    }
    let len = a.len().max(b.len());
    0.5 * (0..len)
        .map(|c| {
            let pa = a.get(c).copied().unwrap_or(0) as f64 / na as f64;
            let pb = b.get(c).copied().unwrap_or(0) as f64 / nb as f64;
            (pa - pb).abs()
        })
        .sum::<f64>()
}

impl RatePolicy for ByLabelSkew {
    fn describe(&self) -> String {
        format!(
            "by-label-skew(κ={}, clamp [{}, {}])",
            self.kappa, self.min, self.max
        )
    }
    fn start(&mut self, pool: &dyn ClientPool) -> Result<()> {
        // Two passes over the pool, one row at a time. Clients without a histogram (pools
        // too large to build every client's data up front) get the mean divergence.
        let mut global: Vec<u64> = Vec::new();
        for c in pool.iter() {
            let c = c?;
            let h = c.label_histogram().unwrap_or(&[]);
            if global.len() < h.len() {
                global.resize(h.len(), 0);
            }
            for (g, x) in global.iter_mut().zip(h) {
                *g += x;
            }
        }
        self.div = BTreeMap::new();
        // D̄ summed in id order (a sum in the map's order would change in the last bits
        // from one process to the next).
        let mut sum = 0.0;
        for c in pool.iter() {
            let c = c?;
            if let Some(h) = c.label_histogram().filter(|h| !h.is_empty()) {
                let d = total_variation(h, &global);
                sum += d;
                self.div.insert(c.id, d);
            }
        }
        self.mean_div = if self.div.is_empty() {
            0.0
        } else {
            sum / self.div.len() as f64
        };
        Ok(())
    }
    fn required_metadata(&self) -> Vec<&'static str> {
        vec![<fedpace_core::LabelHistogram as fedpace_core::Payload>::NAME]
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let d = self.div.get(&client.id).copied().unwrap_or(self.mean_div);
        Ok(scaled(base, self.multiplier(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn divergence_and_multiplier_by_hand() {
        // Pool: [10, 0] and [0, 10] and [5, 5] → global [15, 15] = (½, ½).
        let pool = vec![
            info(0, 10, vec![10, 0], None),
            info(1, 10, vec![0, 10], None),
            info(2, 10, vec![5, 5], None),
        ];
        let mut p = ByLabelSkew::new(-1.0, 0.1, 10.0);
        p.start(&pool).unwrap();
        assert!((p.divergence(0).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(p.divergence(2).unwrap(), 0.0);
        // D̄ = 1/3: skewed client r = exp(−(0.5 − 1/3)), balanced r = exp(1/3)
        let skewed = p.plan(1, &pool[0], &base_plan()).unwrap().base_lr as f64;
        let even = p.plan(1, &pool[2], &base_plan()).unwrap().base_lr as f64;
        assert!((skewed - 0.1 * (-1.0f64 / 6.0).exp()).abs() < 1e-7);
        assert!((even - 0.1 * (1.0f64 / 3.0).exp()).abs() < 1e-7);
    }
}
