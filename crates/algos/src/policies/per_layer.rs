//! `per-layer` (docs/algorithms.md §1.4): a rate multiplier per parameter-group label (e.g.
//! `head = 10`), multiplied into the plan's group multipliers, so it composes with any
//! policy that sets the client's base rate. Unnamed groups keep ×1.

use fedpace_core::{ClientInfo, Error, RatePlan, RatePolicy, Result};
use std::collections::BTreeMap;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct PerLayer {
    /// Multiplier per group, in the model's group order.
    pub multipliers: Vec<f32>,
}

impl PerLayer {
    /// Resolves a label → multiplier table against the model's groups; errors name the
    /// unknown label.
    pub fn new(table: &BTreeMap<String, f64>, groups: &[String]) -> Result<Self> {
        for k in table.keys() {
            if !groups.contains(k) {
                return Err(Error::invalid(
                    format!("policy.multipliers.{k}"),
                    k,
                    format!("a parameter group of the model ({groups:?})"),
                ));
            }
        }
        Ok(Self {
            multipliers: groups
                .iter()
                .map(|g| table.get(g).map_or(1.0, |m| *m as f32))
                .collect(),
        })
    }
}

impl RatePolicy for PerLayer {
    fn describe(&self) -> String {
        format!("per-layer({:?})", self.multipliers)
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        let n = self.multipliers.len();
        if p.group_multipliers.is_empty() {
            p.group_multipliers = vec![1.0; n];
        }
        if p.group_multipliers.len() != n {
            return Err(Error::invalid(
                "policy.multipliers",
                format!("{n} groups"),
                format!("{} groups as in the plan", p.group_multipliers.len()),
            ));
        }
        for (m, x) in p.group_multipliers.iter_mut().zip(&self.multipliers) {
            *m *= x;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_plan, info};
    use super::*;

    #[test]
    fn multiplies_group_rates_and_names_unknown_labels() {
        let groups = vec!["body".to_string(), "head".to_string()];
        let table: BTreeMap<String, f64> = [("head".to_string(), 10.0)].into_iter().collect();
        let mut p = PerLayer::new(&table, &groups).unwrap();
        let mut b = base_plan();
        b.group_multipliers = vec![2.0, 0.5];
        let plan = p.plan(1, &info(0, 1, vec![], None), &b).unwrap();
        assert_eq!(plan.group_multipliers, vec![2.0, 5.0]);
        let bad: BTreeMap<String, f64> = [("tail".to_string(), 1.0)].into_iter().collect();
        let e = PerLayer::new(&bad, &groups).unwrap_err().to_string();
        assert!(e.contains("policy.multipliers.tail"), "{e}");
    }
}
