//! `clip-updates` (docs/algorithms.md §C.6, norm clipping without noise): before averaging,
//! `Δ_k ← Δ_k · min(1, C/‖Δ_k‖)`, with C adapted geometrically towards the `quantile`
//! of reported norms: `C ← C·exp(−η_C(b̄ − γ))`, b̄ the fraction of this round's clients
//! with `‖Δ_k‖ ≤ C` (γ = 0.5, η_C = 0.2 by default). The first C is `initial`, or the
//! median of the first round's norms. Equivalent to a per-client rate
//! `η_k·min(1, C/‖Δ_k‖)` applied after the fact; plans are unchanged.

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result, TrainReport};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct ClipUpdates {
    /// Target quantile γ.
    pub quantile: f64,
    /// Adaptation rate η_C.
    pub lr: f64,
    /// Current bound C (None until the first round when not given).
    pub bound: Option<f64>,
}

impl RatePolicy for ClipUpdates {
    fn describe(&self) -> String {
        format!("clip-updates(γ={}, η_C={})", self.quantile, self.lr)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        Ok(base.clone())
    }
    fn adjusts_aggregation(&self) -> bool {
        true
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        fedpace_core::codec::to_cbor(&self.bound)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.bound = fedpace_core::codec::from_cbor(bytes, "clip-updates state")?;
        Ok(())
    }
    fn adjust_aggregation(
        &mut self,
        _round: u32,
        clients: &[(&ClientInfo, &TrainReport)],
        _weights: &mut [f64],
        scales: &mut [f64],
    ) {
        let norms: Vec<f64> = clients.iter().map(|(_, r)| r.update_norm).collect();
        if norms.is_empty() {
            return;
        }
        let c = *self.bound.get_or_insert_with(|| {
            let mut s = norms.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        });
        for (s, n) in scales.iter_mut().zip(&norms) {
            if *n > c && *n > 0.0 {
                *s *= c / n;
            }
        }
        let b = norms.iter().filter(|n| **n <= c).count() as f64 / norms.len() as f64;
        self.bound = Some(c * (-self.lr * (b - self.quantile)).exp());
    }
}

#[cfg(test)]
mod tests {
    use super::super::info;
    use super::*;

    #[test]
    fn clips_to_the_bound_and_adapts_it() {
        let mut p = ClipUpdates {
            quantile: 0.5,
            lr: 0.2,
            bound: Some(2.0),
        };
        let infos = [info(0, 1, vec![], None), info(1, 1, vec![], None)];
        let reps = [
            TrainReport {
                update_norm: 1.0,
                ..Default::default()
            },
            TrainReport {
                update_norm: 4.0,
                ..Default::default()
            },
        ];
        let cl: Vec<_> = infos.iter().zip(&reps).collect();
        let mut w = [1.0, 1.0];
        let mut s = [1.0, 1.0];
        p.adjust_aggregation(1, &cl, &mut w, &mut s);
        assert_eq!(s, [1.0, 0.5]);
        // b̄ = 0.5 = γ: C unchanged
        assert_eq!(p.bound, Some(2.0));
    }
}
