//! Rate policies: how the server assigns each sampled client its rate plan.
//!
//! `constant` gives everyone the base plan. `by-data-size` scales the base rate by
//! `clamp((n_k / n̄)^γ, min, max)` where n̄ is the mean training-set size of the pool
//! (ALGORITHMS.md C.5). With γ < 0, clients with much data (and so many local steps)
//! take smaller steps, which limits their drift; with γ = −1 and a fixed number of
//! epochs every client's total step Λ_k = η_k·τ_k is about the same.

use fedpace_core::{ClientInfo, Error, RatePlan, RatePolicy, Result};
use serde::{Deserialize, Serialize};

/// A rate policy as written in the config (`[policy] name = "..."`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Every client gets the base plan.
    #[default]
    Constant,
    /// η_k = η · clamp((n_k / n̄)^γ, min, max).
    ByDataSize {
        /// Exponent γ (default −0.5).
        #[serde(default = "default_gamma")]
        gamma: f64,
        /// Lower clamp of the multiplier (default 0.25).
        #[serde(default = "default_min")]
        min: f64,
        /// Upper clamp of the multiplier (default 4).
        #[serde(default = "default_max")]
        max: f64,
    },
}

fn default_gamma() -> f64 {
    -0.5
}
fn default_min() -> f64 {
    0.25
}
fn default_max() -> f64 {
    4.0
}

impl PolicyConfig {
    /// Checks ranges; errors name the field under `policy.`.
    pub fn validate(&self) -> Result<()> {
        if let PolicyConfig::ByDataSize { gamma, min, max } = *self {
            if !gamma.is_finite() {
                return Err(Error::invalid("policy.gamma", gamma, "a finite number"));
            }
            if !(min > 0.0 && min.is_finite()) {
                return Err(Error::invalid("policy.min", min, "a multiplier > 0"));
            }
            if !(max >= min && max.is_finite()) {
                return Err(Error::invalid(
                    "policy.max",
                    max,
                    format!("a multiplier >= policy.min ({min})"),
                ));
            }
        }
        Ok(())
    }

    /// The policy's short name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Constant => "constant",
            PolicyConfig::ByDataSize { .. } => "by-data-size",
        }
    }

    /// Builds the policy.
    pub fn build(&self) -> Box<dyn RatePolicy> {
        match *self {
            PolicyConfig::Constant => Box::new(Constant),
            PolicyConfig::ByDataSize { gamma, min, max } => Box::new(ByDataSize {
                gamma,
                min,
                max,
                mean_n: 0.0,
            }),
        }
    }
}

/// Every client gets the base plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Constant;

impl RatePolicy for Constant {
    fn describe(&self) -> String {
        "constant".into()
    }
    fn plan(&mut self, _round: u32, _client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        Ok(base.clone())
    }
}

/// η_k = η · clamp((n_k / n̄)^γ, min, max).
#[derive(Debug, Clone)]
pub struct ByDataSize {
    /// Exponent γ.
    pub gamma: f64,
    /// Lower clamp.
    pub min: f64,
    /// Upper clamp.
    pub max: f64,
    mean_n: f64,
}

impl ByDataSize {
    /// The multiplier for a client with `n` samples.
    pub fn multiplier(&self, n: u64) -> f64 {
        if self.mean_n <= 0.0 || n == 0 {
            return 1.0;
        }
        (n as f64 / self.mean_n)
            .powf(self.gamma)
            .clamp(self.min, self.max)
    }
}

impl RatePolicy for ByDataSize {
    fn describe(&self) -> String {
        format!(
            "by-data-size(γ={}, clamp [{}, {}])",
            self.gamma, self.min, self.max
        )
    }
    fn start(&mut self, pool: &[ClientInfo]) -> Result<()> {
        let total: u64 = pool.iter().map(|c| c.num_train).sum();
        self.mean_n = total as f64 / pool.len().max(1) as f64;
        Ok(())
    }
    fn plan(&mut self, _round: u32, client: &ClientInfo, base: &RatePlan) -> Result<RatePlan> {
        let mut p = base.clone();
        p.base_lr = (base.base_lr as f64 * self.multiplier(client.num_train)) as f32;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_data_size_multiplier_by_hand() {
        let mut p = ByDataSize {
            gamma: -0.5,
            min: 0.25,
            max: 4.0,
            mean_n: 0.0,
        };
        let pool: Vec<ClientInfo> = [100u64, 300, 800]
            .iter()
            .enumerate()
            .map(|(i, &n)| ClientInfo {
                id: i as u64,
                num_train: n,
                num_test: 0,
                label_histogram: vec![],
                device: None,
            })
            .collect();
        p.start(&pool).unwrap();
        // n̄ = 400: (100/400)^-0.5 = 2, (800/400)^-0.5 = 1/√2
        assert!((p.multiplier(100) - 2.0).abs() < 1e-12);
        assert!((p.multiplier(800) - 0.5f64.sqrt()).abs() < 1e-12);
        // clamp: (1/400)^-0.5 = 20 → 4
        assert_eq!(p.multiplier(1), 4.0);
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_bad_ranges() {
        let c: PolicyConfig = serde_json::from_str(r#"{"name":"by-data-size"}"#).unwrap();
        assert_eq!(
            c,
            PolicyConfig::ByDataSize {
                gamma: -0.5,
                min: 0.25,
                max: 4.0
            }
        );
        let bad = PolicyConfig::ByDataSize {
            gamma: 1.0,
            min: 2.0,
            max: 1.0,
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "policy.max = 1: a multiplier >= policy.min (2)"
        );
    }
}
