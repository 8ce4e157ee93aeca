//! Learning-rate schedules: a multiplier of the base rate as a function of the step.
//!
//! **Round-aware by construction**: a schedule is a pure function of the step count the
//! caller passes. A client that continues a schedule across rounds passes its
//! *cumulative* local step count (`LocalState::steps_done + s` in `fedpace-core`), so a
//! cosine over 10 000 steps spans many rounds and every client agrees on where it is;
//! passing the in-round step instead restarts the schedule each round. Server-side
//! schedules pass the round index.
//!
//! Serialised as an internally tagged table, e.g.
//! `{ kind = "warmup", steps = 100, then = { kind = "cosine", total_steps = 5000 } }`.

use crate::{check_param, Result};
use serde::{Deserialize, Serialize};

fn one() -> f64 {
    1.0
}

/// A schedule gives the factor by which the base rate is multiplied at step `s`
/// (0-based, cumulative over rounds — see the module docs).
///
/// ```
/// use fedpace_optim::Schedule;
/// let s: Schedule = serde_json::from_str(
///     r#"{"kind": "warmup", "steps": 10, "then": {"kind": "cosine", "total_steps": 100}}"#,
/// ).unwrap();
/// s.validate().unwrap();
/// assert_eq!(s.factor(0), 0.0);
/// assert_eq!(s.factor(5), 0.5);
/// assert_eq!(s.factor(10), 1.0);
/// assert!((s.factor(60) - 0.5).abs() < 1e-6);
/// assert_eq!(s.factor(110), 0.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// Always 1.
    #[default]
    Constant,
    /// Step decay: `γ^⌊s / every⌋` (PyTorch `StepLR`).
    Step {
        /// Steps between decays, ≥ 1.
        every: u64,
        /// Decay factor γ ∈ (0, 1].
        gamma: f64,
    },
    /// Exponential decay per step: `γ^s` (PyTorch `ExponentialLR` with one step per
    /// call; for a per-round decay use `Step` with `every` = steps per round).
    Exponential {
        /// Decay factor γ ∈ (0, 1].
        gamma: f64,
    },
    /// Cosine decay to a floor over `total_steps`, then the floor:
    /// `f + (1 − f)·½(1 + cos(π·min(s, T)/T))`.
    Cosine {
        /// T ≥ 1.
        total_steps: u64,
        /// Final factor f ∈ [0, 1] (default 0).
        #[serde(default)]
        floor: f64,
    },
    /// Linear warm-up from `start_factor` to 1 over `steps`, then `then` evaluated at
    /// `s − steps` (the wrapped schedule starts after the warm-up):
    /// `a + (1 − a)·s/W` for `s < W`.
    Warmup {
        /// W ≥ 1.
        steps: u64,
        /// a ∈ [0, 1] (default 0).
        #[serde(default)]
        start_factor: f64,
        /// The schedule after the warm-up (default constant).
        #[serde(default)]
        then: Box<Schedule>,
    },
    /// Inverse square root: `1/√(1 + s/τ)`. Wrapped in a `Warmup` of `W = τ` steps it is
    /// the Transformer schedule `√(W/s)` after warm-up.
    InverseSqrt {
        /// Time scale τ ≥ 1.
        timescale: u64,
    },
    /// A constant multiple of another schedule (handy for per-round scaling).
    Scaled {
        /// Multiplier > 0 (default 1).
        #[serde(default = "one")]
        factor: f64,
        /// The scaled schedule.
        of: Box<Schedule>,
    },
}

impl Schedule {
    /// The factor at step `step`.
    pub fn factor(&self, step: u64) -> f32 {
        self.factor_f64(step) as f32
    }

    fn factor_f64(&self, step: u64) -> f64 {
        let s = step as f64;
        match self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powf((step / (*every).max(1)) as f64),
            Schedule::Exponential { gamma } => gamma.powf(s),
            Schedule::Cosine { total_steps, floor } => {
                let t = (*total_steps).max(1) as f64;
                let f = *floor;
                f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * s.min(t) / t).cos())
            }
            Schedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                if step < *steps {
                    let a = *start_factor;
                    a + (1.0 - a) * s / *steps as f64
                } else {
                    then.factor_f64(step - steps)
                }
            }
            Schedule::InverseSqrt { timescale } => {
                1.0 / (1.0 + s / (*timescale).max(1) as f64).sqrt()
            }
            Schedule::Scaled { factor, of } => *factor * of.factor_f64(step),
        }
    }

    /// Checks every field's range; the error names the field, the value and the range.
    ///
    /// ```
    /// use fedpace_optim::Schedule;
    /// let e = Schedule::Step { every: 0, gamma: 0.5 }.validate().unwrap_err();
    /// assert_eq!(e.to_string(), "every = 0: >= 1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let gamma_ok = |g: f64| check_param("gamma", g, g > 0.0 && g <= 1.0, "in (0, 1]");
        match self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, gamma } => {
                check_param("every", *every as f64, *every >= 1, ">= 1")?;
                gamma_ok(*gamma)
            }
            Schedule::Exponential { gamma } => gamma_ok(*gamma),
            Schedule::Cosine { total_steps, floor } => {
                check_param(
                    "total_steps",
                    *total_steps as f64,
                    *total_steps >= 1,
                    ">= 1",
                )?;
                check_param("floor", *floor, (0.0..=1.0).contains(floor), "in [0, 1]")
            }
            Schedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                check_param("steps", *steps as f64, *steps >= 1, ">= 1")?;
                check_param(
                    "start_factor",
                    *start_factor,
                    (0.0..=1.0).contains(start_factor),
                    "in [0, 1]",
                )?;
                then.validate()
            }
            Schedule::InverseSqrt { timescale } => {
                check_param("timescale", *timescale as f64, *timescale >= 1, ">= 1")
            }
            Schedule::Scaled { factor, of } => {
                check_param("factor", *factor, *factor > 0.0, "finite and > 0")?;
                of.validate()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3)
    }

    #[test]
    fn hand_values() {
        let st = Schedule::Step {
            every: 10,
            gamma: 0.5,
        };
        assert_eq!(
            [st.factor(0), st.factor(9), st.factor(10), st.factor(25)],
            [1.0, 1.0, 0.5, 0.25]
        );
        let ex = Schedule::Exponential { gamma: 0.9 };
        assert!(close(ex.factor(3), 0.729));
        let cos = Schedule::Cosine {
            total_steps: 100,
            floor: 0.1,
        };
        assert_eq!(cos.factor(0), 1.0);
        assert!(close(cos.factor(50), 0.55));
        assert!(close(cos.factor(100), 0.1));
        assert!(close(cos.factor(1000), 0.1));
        let inv = Schedule::InverseSqrt { timescale: 4 };
        assert!(close(inv.factor(12), 0.5));
        // Transformer schedule: warm-up W then √(W/s)
        let tr = Schedule::Warmup {
            steps: 4,
            start_factor: 0.0,
            then: Box::new(inv),
        };
        assert!(close(tr.factor(2), 0.5));
        assert!(close(tr.factor(16), 0.5));
        let sc = Schedule::Scaled {
            factor: 2.0,
            of: Box::new(ex),
        };
        assert!(close(sc.factor(1), 1.8));
    }

    #[test]
    fn round_aware_means_cumulative_steps_continue() {
        // 3 rounds of 7 steps with a cumulative counter trace the same curve as one run.
        let s = Schedule::Cosine {
            total_steps: 21,
            floor: 0.0,
        };
        let one_run: Vec<f32> = (0..21).map(|k| s.factor(k)).collect();
        let mut rounds = vec![];
        let mut steps_done = 0u64;
        for _round in 0..3 {
            for local in 0..7 {
                rounds.push(s.factor(steps_done + local));
            }
            steps_done += 7;
        }
        assert_eq!(one_run, rounds);
    }

    #[test]
    fn serde_is_tagged_kebab_and_strict() {
        let s = Schedule::Warmup {
            steps: 5,
            start_factor: 0.1,
            then: Box::new(Schedule::InverseSqrt { timescale: 5 }),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"kind":"warmup","steps":5,"start_factor":0.1,"then":{"kind":"inverse-sqrt","timescale":5}}"#
        );
        assert_eq!(serde_json::from_str::<Schedule>(&j).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<Schedule>(r#"{"kind":"constant"}"#).unwrap(),
            Schedule::Constant
        );
        assert!(
            serde_json::from_str::<Schedule>(r#"{"kind":"step","every":3,"gamma":0.5,"x":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Schedule>(r#"{"kind":"linear"}"#).is_err());
    }

    #[test]
    fn validate_names_field_value_and_range() {
        let bad = Schedule::Warmup {
            steps: 3,
            start_factor: 0.0,
            then: Box::new(Schedule::Cosine {
                total_steps: 10,
                floor: 2.0,
            }),
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "floor = 2: in [0, 1]"
        );
        assert!(Schedule::Exponential { gamma: 0.0 }.validate().is_err());
        assert!(Schedule::Exponential { gamma: f64::NAN }
            .validate()
            .is_err());
    }
}
