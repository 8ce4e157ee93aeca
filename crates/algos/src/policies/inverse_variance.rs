//! `inverse-variance` (docs/algorithms.md §C.6, inverse-norm-variance weighting): the server
//! keeps per client EMAs `μ_k ← β μ_k + (1−β)‖Δ_k‖`, `σ_k² ← β σ_k² + (1−β)(‖Δ_k‖ − μ_k)²`
//! (β = 0.9) from reports, and aggregates with `w_k ∝ p_k/(σ_k² + ε)`,
//! `ε = 1e-8·mean(μ_k²)`. Clients seen fewer than 2 times get the median σ² of the
//! others (all weights unchanged while nobody has 2 observations). This changes the
//! objective weights by design; the effective weights are logged (`weight`).

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result, TrainReport};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct InverseVariance {
    /// EMA factor β.
    pub decay: f64,
    stats: BTreeMap<u64, (f64, f64, u32)>,
}

impl InverseVariance {
    /// With EMA factor β.
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            stats: BTreeMap::new(),
        }
    }
}

impl RatePolicy for InverseVariance {
    fn describe(&self) -> String {
        format!("inverse-variance(β={})", self.decay)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        Ok(base.clone())
    }
    fn adjusts_aggregation(&self) -> bool {
        true
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        super::save_map(&self.stats)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.stats = super::load_map(bytes, "inverse-variance state")?;
        Ok(())
    }
    fn adjust_aggregation(
        &mut self,
        _round: u32,
        clients: &[(&ClientInfo, &TrainReport)],
        weights: &mut [f64],
        _scales: &mut [f64],
    ) {
        let b = self.decay;
        for (c, r) in clients {
            let n = r.update_norm;
            let e = self.stats.entry(c.id).or_insert((n, 0.0, 0));
            if e.2 > 0 {
                e.0 = b * e.0 + (1.0 - b) * n;
                e.1 = b * e.1 + (1.0 - b) * (n - e.0).powi(2);
            }
            e.2 += 1;
        }
        let mut seen: Vec<f64> = self
            .stats
            .values()
            .filter(|s| s.2 >= 2)
            .map(|s| s.1)
            .collect();
        if seen.is_empty() {
            return;
        }
        seen.sort_by(f64::total_cmp);
        let median = seen[seen.len() / 2];
        let mu2 = super::mean(
            self.stats
                .values()
                .map(|s| s.0 * s.0)
                .collect::<Vec<_>>()
                .iter(),
        )
        .unwrap_or(0.0);
        let eps = (1e-8 * mu2).max(f64::MIN_POSITIVE);
        for ((c, _), w) in clients.iter().zip(weights.iter_mut()) {
            let s = self.stats[&c.id];
            let var = if s.2 >= 2 { s.1 } else { median };
            *w /= var + eps;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::info;
    use super::*;

    #[test]
    fn noisier_clients_get_less_weight() {
        let mut p = InverseVariance::new(0.9);
        let infos = [info(0, 1, vec![], None), info(1, 1, vec![], None)];
        let rounds = [[1.0, 1.0], [1.0, 3.0], [1.0, 0.5]];
        let mut last = [0.0; 2];
        for norms in rounds {
            let reps: Vec<TrainReport> = norms
                .iter()
                .map(|&n| TrainReport {
                    update_norm: n,
                    ..Default::default()
                })
                .collect();
            let cl: Vec<_> = infos.iter().zip(&reps).collect();
            let mut w = [1.0, 1.0];
            p.adjust_aggregation(1, &cl, &mut w, &mut [1.0, 1.0]);
            last = w;
        }
        // client 0 never varies: σ² = 0 → weight 1/ε, far above client 1's
        assert!(last[0] > 1e3 * last[1], "{last:?}");
        // σ₁² by hand: μ: 1 → 1.2 → 1.13; σ²: 0 → 0.1·1.8² = 0.324 → 0.9·0.324 + 0.1·0.63² = 0.33129
        let s = p.stats[&1];
        assert!((s.1 - 0.33129).abs() < 1e-9, "{s:?}");
    }
}
