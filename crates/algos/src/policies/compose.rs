//! `compose`: policies in sequence, each scaling the plan the previous one produced, so
//! base rates multiply (product) and group multipliers multiply; then the base rate is
//! clamped to `[min, max] × η_base` (docs/algorithms.md §C.5 defaults 0.1 and 10), and a
//! per-client `overrides` table sets `η_k = m·η_base` outright for the clients it names.
//! Observations and aggregation-side adjustments go to every part, in order.

use fedpace_core::{ClientInfo, ClientPool, RatePlan, RatePolicy, Result, TrainReport};
use std::collections::BTreeMap;

/// See the module doc.
pub struct Compose {
    /// The parts, applied in order.
    pub parts: Vec<Box<dyn RatePolicy>>,
    /// Lower clamp on η_k/η_base.
    pub min: f64,
    /// Upper clamp on η_k/η_base.
    pub max: f64,
    /// Client id → multiplier of η_base.
    pub overrides: BTreeMap<u64, f64>,
}

impl RatePolicy for Compose {
    fn describe(&self) -> String {
        let parts: Vec<String> = self.parts.iter().map(|p| p.describe()).collect();
        format!(
            "compose[{}] clamp [{}, {}], {} overrides",
            parts.join(" × "),
            self.min,
            self.max,
            self.overrides.len()
        )
    }
    fn seed(&mut self, seed: u64) {
        for p in &mut self.parts {
            p.seed(seed);
        }
    }
    fn start(&mut self, pool: &dyn ClientPool) -> Result<()> {
        self.parts.iter_mut().try_for_each(|p| p.start(pool))
    }
    fn plan(&mut self, round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut plan = base.clone();
        for p in &mut self.parts {
            plan = p.plan(round, client, &plan)?;
        }
        let b = base.base_lr as f64;
        let lr = match self.overrides.get(&client.id) {
            Some(m) => m * b,
            None => (plan.base_lr as f64).clamp(self.min * b, self.max * b),
        };
        plan.base_lr = lr as f32;
        Ok(plan)
    }
    fn observe(&mut self, round: u32, client: &ClientInfo, report: &TrainReport) {
        for p in &mut self.parts {
            p.observe(round, client, report);
        }
    }
    fn adjust_aggregation(
        &mut self,
        round: u32,
        clients: &[(&ClientInfo, &TrainReport)],
        weights: &mut [f64],
        scales: &mut [f64],
    ) {
        for p in &mut self.parts {
            p.adjust_aggregation(round, clients, weights, scales);
        }
    }
    fn adjusts_aggregation(&self) -> bool {
        self.parts.iter().any(|p| p.adjusts_aggregation())
    }
    fn reads_validation(&self) -> bool {
        self.parts.iter().any(|p| p.reads_validation())
    }
    fn observe_round(&mut self, round: u32, summary: &fedpace_core::RoundSummary<'_>) {
        for p in &mut self.parts {
            p.observe_round(round, summary);
        }
    }
    fn required_metadata(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .parts
            .iter()
            .flat_map(|p| p.required_metadata())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        let parts = self
            .parts
            .iter()
            .map(|p| p.save_state())
            .collect::<Result<Vec<_>>>()?;
        fedpace_core::codec::to_cbor(&parts)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        let parts: Vec<Vec<u8>> = fedpace_core::codec::from_cbor(bytes, "compose state")?;
        if parts.len() != self.parts.len() {
            return Err(fedpace_core::Error::invalid(
                "compose state",
                format!("{} parts", parts.len()),
                format!("{} parts, as configured", self.parts.len()),
            ));
        }
        for (p, b) in self.parts.iter_mut().zip(parts) {
            p.restore_state(&b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::device::ByDevice;
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn product_clamp_and_override() {
        let dev = |m: f64| -> Box<dyn RatePolicy> {
            Box::new(ByDevice {
                rates: [("a".to_string(), m)].into_iter().collect(),
                default: 1.0,
            })
        };
        let mut c = Compose {
            parts: vec![dev(3.0), dev(2.0)],
            min: 0.1,
            max: 5.0,
            overrides: [(7u64, 0.5)].into_iter().collect(),
        };
        let b = base_plan();
        let a = c.plan(1, &info(0, 1, vec![], Some("a")), &b).unwrap();
        assert!((a.base_lr - 0.5).abs() < 1e-6); // 3 × 2 = 6 → clamp 5
        let o = c.plan(1, &info(7, 1, vec![], Some("a")), &b).unwrap();
        assert!((o.base_lr - 0.05).abs() < 1e-7);
        let plain = c.plan(1, &info(1, 1, vec![], None), &b).unwrap();
        assert_eq!(plain.base_lr, 0.1);
    }
}
