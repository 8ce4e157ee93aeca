//! A fake runner shared by the integration tests.
#![allow(dead_code)]

use fedpace_tune::space::Value;
use fedpace_tune::trial::{
    MetricInfo, MetricSource, RoundMetrics, Trial, TrialError, TrialOutput, TrialRunner, UnitScore,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A model whose quality q grows each round by g(lr)·(1 − q), g peaked at lr = 0.01;
/// the score adds a small seed-dependent offset. State: quality after the rounds done.
pub struct Fake {
    pub continuable: bool,
    pub max_rounds: u32,
    /// A trial with lr above this fails.
    pub fail_above: f64,
    /// A trial with lr above this is a fatal error.
    pub fatal_above: f64,
    pub runs: AtomicUsize,
    /// Extra per-seed offset of the score per unit of this override (a variant's effect).
    pub shift: f64,
}

impl Fake {
    pub fn new(continuable: bool) -> Self {
        Self {
            continuable,
            max_rounds: 27,
            fail_above: f64::INFINITY,
            fatal_above: f64::INFINITY,
            runs: AtomicUsize::new(0),
            shift: 0.0,
        }
    }

    fn lr(t: &Trial) -> f64 {
        t.point.get("lr").and_then(Value::as_f64).unwrap_or(0.01)
    }

    fn epochs(t: &Trial) -> f64 {
        t.point.get("epochs").and_then(Value::as_f64).unwrap_or(1.0)
    }

    fn simulate(
        &self,
        t: &Trial,
        mut q: f64,
        from: u32,
        to: u32,
    ) -> Result<TrialOutput<f64>, TrialError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let lr = Self::lr(t);
        if lr > self.fatal_above {
            return Err(TrialError::Fatal(format!("lr = {lr}: fatal")));
        }
        if lr > self.fail_above {
            return Err(TrialError::Failed(format!("lr = {lr}: diverged")));
        }
        // Scramble completion order.
        let h = (lr.to_bits() ^ t.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 4;
        std::thread::sleep(std::time::Duration::from_millis(h));
        let g = 0.3 * (-(lr.ln() - 0.01f64.ln()).powi(2) / 2.0).exp() * Self::epochs(t).sqrt();
        let offset =
            0.001 * (t.seed % 7) as f64 + self.shift * (1.0 + 0.3 * ((t.seed % 3) as f64 - 1.0));
        let cost_per_round = 2.0 * Self::epochs(t);
        let mut curve = Vec::new();
        for r in from + 1..=to {
            q += g.min(1.0) * (1.0 - q);
            let mut m = BTreeMap::new();
            m.insert("val_score".to_string(), q + offset);
            curve.push(RoundMetrics {
                round: r,
                cost: cost_per_round * (r - from) as f64,
                metrics: m,
            });
        }
        let mut metrics = BTreeMap::new();
        metrics.insert("val_score".to_string(), q + offset);
        metrics.insert("test_score".to_string(), q + offset);
        let units: Vec<UnitScore> = (0..20)
            .map(|i| UnitScore {
                id: i,
                value: q + offset - 0.01 * i as f64,
                samples: 40,
            })
            .collect();
        let values: Vec<f64> = units.iter().map(|u| u.value).collect();
        metrics.insert(
            "test_worst".to_string(),
            fedpace_tune::stats::worst_mean(&values, 0.1),
        );
        Ok(TrialOutput {
            metrics,
            cost: cost_per_round * (to - from) as f64,
            curve,
            units,
            state: Some(q),
        })
    }
}

impl TrialRunner for Fake {
    type State = f64;
    fn max_rounds(&self) -> u32 {
        self.max_rounds
    }
    fn metric(&self, name: &str) -> Result<MetricInfo, String> {
        match name {
            "val_score" => Ok(MetricInfo {
                maximize: true,
                source: MetricSource::StandIn {
                    actual: "the fake's score".into(),
                },
            }),
            "test_score" | "test_worst" => Ok(MetricInfo {
                maximize: true,
                source: MetricSource::Test,
            }),
            _ => Err(format!(
                "unknown metric {name:?}; known: val_score, test_score"
            )),
        }
    }
    fn check(&self, t: &Trial) -> Result<(), String> {
        match t
            .point
            .keys()
            .find(|k| !["lr", "epochs", "opt"].contains(&k.as_str()))
        {
            Some(k) => Err(format!("{k}: unknown key")),
            None => Ok(()),
        }
    }
    fn round_cost(&self, t: &Trial) -> Result<f64, String> {
        Ok(2.0 * Self::epochs(t))
    }
    fn run(&self, t: &Trial, rounds: u32, _dir: &Path) -> Result<TrialOutput<f64>, TrialError> {
        self.simulate(t, 0.0, 0, rounds)
    }
    fn can_continue(&self) -> bool {
        self.continuable
    }
    fn resume(
        &self,
        t: &Trial,
        state: &f64,
        done: u32,
        rounds: u32,
        _dir: &Path,
    ) -> Result<TrialOutput<f64>, TrialError> {
        assert!(self.continuable);
        self.simulate(t, *state, done, rounds)
    }
}
