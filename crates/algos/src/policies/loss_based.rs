//! `loss-based` (docs/algorithms.md §C.5, loss ratio): `r_k = clamp((L_k/L̄)^κ, min, max)`
//! with `L_k` the loss of the global model on the client's first mini-batch at its last
//! participation (`loss_before`) and L̄ the mean over the clients seen. κ = 0.5
//! (default) lets lagging clients progress faster (fairness-oriented). Clients not seen
//! yet get r = 1.

use super::scaled;
use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result, TrainReport};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct LossBased {
    /// κ.
    pub kappa: f64,
    /// Lower clamp.
    pub min: f64,
    /// Upper clamp.
    pub max: f64,
    loss: BTreeMap<u64, f64>,
}

impl LossBased {
    /// With κ and clamps.
    pub fn new(kappa: f64, min: f64, max: f64) -> Self {
        Self {
            kappa,
            min,
            max,
            loss: BTreeMap::new(),
        }
    }
}

impl RatePolicy for LossBased {
    fn describe(&self) -> String {
        format!(
            "loss-based(κ={}, clamp [{}, {}])",
            self.kappa, self.min, self.max
        )
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        super::save_map(&self.loss)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.loss = super::load_map(bytes, "loss-based state")?;
        Ok(())
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let r = match (self.loss.get(&client.id), super::mean(self.loss.values())) {
            (Some(&l), Some(m)) if l > 0.0 && m > 0.0 => {
                (l / m).powf(self.kappa).clamp(self.min, self.max)
            }
            _ => 1.0,
        };
        Ok(scaled(base, r))
    }
    fn observe(&mut self, _round: u32, client: &ClientInfo, report: &TrainReport) {
        if report.loss_before.is_finite() && report.steps > 0 {
            self.loss.insert(client.id, report.loss_before as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn loss_ratio_by_hand() {
        let mut p = LossBased::new(0.5, 0.1, 10.0);
        let (a, b) = (info(0, 1, vec![], None), info(1, 1, vec![], None));
        for (c, l) in [(&a, 1.0f32), (&b, 3.0)] {
            let r = TrainReport {
                loss_before: l,
                steps: 1,
                ..Default::default()
            };
            p.observe(1, c, &r);
        }
        // L̄ = 2: r_a = √0.5, r_b = √1.5
        let ra = p.plan(2, &a, &base_plan()).unwrap().base_lr as f64 / 0.1;
        let rb = p.plan(2, &b, &base_plan()).unwrap().base_lr as f64 / 0.1;
        assert!((ra - 0.5f64.sqrt()).abs() < 1e-6 && (rb - 1.5f64.sqrt()).abs() < 1e-6);
    }
}
