//! `straggler-compensation` (docs/algorithms.md §C.5, device speed / deadline): a client of
//! device class c can run only a fraction `speeds[c]` of the round's local steps τ, so
//! it gets `max_steps = τ_k = max(1, ⌊speed·τ⌋)`, and trains with
//! `η_k = η · min(τ/τ_k, max_boost)` so that its total step `η_k·τ_k` matches the
//! others'. `max_boost = 1` simulates the stragglers without compensating them (then the
//! objective-consistency normalisation does the correcting). Clients without a listed
//! class run at full speed.

use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct StragglerCompensation {
    /// Fraction of the steps each device class completes, in (0, 1].
    pub speeds: BTreeMap<String, f64>,
    /// Upper bound on the rate boost τ/τ_k (≥ 1).
    pub max_boost: f64,
}

impl RatePolicy for StragglerCompensation {
    fn describe(&self) -> String {
        format!(
            "straggler-compensation({:?}, max boost {})",
            self.speeds, self.max_boost
        )
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let speed = client
            .device
            .as_ref()
            .and_then(|d| self.speeds.get(d))
            .copied()
            .unwrap_or(1.0);
        let tau = base.steps_for(client.num_train as usize);
        let tau_k = ((speed * tau as f64).floor() as u32).clamp(1, tau.max(1));
        let mut p = base.clone();
        if tau_k < tau {
            p.max_steps = Some(tau_k);
            let boost = (tau as f64 / tau_k as f64).min(self.max_boost);
            p.base_lr = (base.base_lr as f64 * boost) as f32;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn slow_clients_get_fewer_steps_and_a_bounded_boost() {
        let mut p = StragglerCompensation {
            speeds: [("slow".to_string(), 0.25), ("crawl".to_string(), 0.01)]
                .into_iter()
                .collect(),
            max_boost: 10.0,
        };
        let b = base_plan(); // 1 epoch, batch 10
        let slow = p.plan(1, &info(0, 100, vec![], Some("slow")), &b).unwrap();
        assert_eq!(slow.max_steps, Some(2)); // τ = 10 → ⌊2.5⌋
        assert!((slow.base_lr - 0.5).abs() < 1e-6); // ×5
        let crawl = p.plan(1, &info(1, 100, vec![], Some("crawl")), &b).unwrap();
        assert_eq!(crawl.max_steps, Some(1));
        assert!((crawl.base_lr - 1.0).abs() < 1e-6); // ×10 = the bound
        let fast = p.plan(1, &info(2, 100, vec![], None), &b).unwrap();
        assert_eq!((fast.max_steps, fast.base_lr), (None, 0.1));
    }
}
