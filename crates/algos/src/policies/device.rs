//! `by-device` (docs/algorithms.md §C.5): the multiplier comes from the client's device class
//! (client metadata, assigned in the experiment's `[devices]` table):
//! `r_k = rates[class_k]`, `default` for clients without a class or with a class the
//! table does not name.

use super::scaled;
use fedpace_core::{ClientInfo, RatePlan, RatePolicy, Result};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct ByDevice {
    /// Multiplier per device class.
    pub rates: BTreeMap<String, f64>,
    /// Multiplier for other clients.
    pub default: f64,
}

impl ByDevice {
    /// The multiplier of a client.
    pub fn multiplier(&self, client: &ClientInfo) -> f64 {
        client
            .device
            .as_ref()
            .and_then(|d| self.rates.get(d))
            .copied()
            .unwrap_or(self.default)
    }
}

impl RatePolicy for ByDevice {
    fn describe(&self) -> String {
        format!("by-device({:?}, default {})", self.rates, self.default)
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        Ok(scaled(base, self.multiplier(client)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn class_table_and_default() {
        let mut p = ByDevice {
            rates: [("phone".to_string(), 0.5)].into_iter().collect(),
            default: 2.0,
        };
        let b = base_plan();
        let phone = p.plan(1, &info(0, 1, vec![], Some("phone")), &b).unwrap();
        let other = p.plan(1, &info(1, 1, vec![], Some("laptop")), &b).unwrap();
        let none = p.plan(1, &info(2, 1, vec![], None), &b).unwrap();
        assert_eq!(
            (phone.base_lr, other.base_lr, none.base_lr),
            (0.05, 0.2, 0.2)
        );
    }
}
