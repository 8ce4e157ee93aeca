//! Asynchronous FL contracts (docs/algorithms.md §C.8, C.9): staleness functions and the
//! server half of an asynchronous algorithm. The event loop that drives it on the
//! simulated clock is `fedpace_sim::run_async`.

use crate::protocol::{ClientId, TrainRes};
use crate::{Error, Result};
use fedpace_params::ParamTree;
use serde::{Deserialize, Serialize};

/// A staleness function s(τ) ∈ (0, 1], τ = server version at arrival − version the
/// client started from (docs/algorithms.md §C.8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Staleness {
    /// s = 1.
    Constant,
    /// s(τ) = (τ + 1)^(−a).
    Polynomial {
        /// a ≥ 0 (default 0.5).
        #[serde(default = "half")]
        a: f64,
    },
    /// s(τ) = 1 if τ ≤ b, else 1 / (a(τ − b) + 1).
    Hinge {
        /// a ≥ 0 (default 10).
        #[serde(default = "ten")]
        a: f64,
        /// b ≥ 0 (default 4).
        #[serde(default = "four")]
        b: f64,
    },
}

fn half() -> f64 {
    0.5
}
fn ten() -> f64 {
    10.0
}
fn four() -> f64 {
    4.0
}

impl Default for Staleness {
    fn default() -> Self {
        Staleness::Polynomial { a: 0.5 }
    }
}

impl Staleness {
    /// s(τ).
    ///
    /// ```
    /// use fedpace_core::asynchronous::Staleness;
    /// let s = Staleness::Hinge { a: 10.0, b: 4.0 };
    /// assert_eq!(s.weight(4), 1.0);
    /// assert!((s.weight(5) - 1.0 / 11.0).abs() < 1e-12);
    /// ```
    pub fn weight(&self, staleness: u64) -> f64 {
        let t = staleness as f64;
        match *self {
            Staleness::Constant => 1.0,
            Staleness::Polynomial { a } => (t + 1.0).powf(-a),
            Staleness::Hinge { a, b } => {
                if t <= b {
                    1.0
                } else {
                    1.0 / (a * (t - b) + 1.0)
                }
            }
        }
    }

    /// Checks ranges; `field` names the config key.
    pub fn validate(&self, field: &str) -> Result<()> {
        let bad =
            |k: &str, v: f64| Err(Error::invalid(format!("{field}.{k}"), v, "finite and >= 0"));
        match *self {
            Staleness::Constant => Ok(()),
            Staleness::Polynomial { a } if !(a.is_finite() && a >= 0.0) => bad("a", a),
            Staleness::Hinge { a, .. } if !(a.is_finite() && a >= 0.0) => bad("a", a),
            Staleness::Hinge { b, .. } if !(b.is_finite() && b >= 0.0) => bad("b", b),
            _ => Ok(()),
        }
    }
}

/// What the server did with one arriving update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalOutcome {
    /// The weight the update got (FedAsync α_t; FedBuff s(τ)/K).
    pub weight: f64,
    /// Whether the global model changed (the server version advances).
    pub new_version: bool,
}

/// The server half of an asynchronous algorithm: it sees one update at a time.
pub trait AsyncStrategy: Send {
    /// Name and key settings, for logs.
    fn describe(&self) -> String;
    /// Applies client `client`'s update, computed from `base` (the model it was sent),
    /// `staleness` server versions ago.
    fn on_arrival(
        &mut self,
        global: &mut ParamTree,
        base: &ParamTree,
        client: ClientId,
        res: &TrainRes,
        staleness: u64,
    ) -> Result<ArrivalOutcome>;
    /// The staleness function (also used to decay client rates).
    fn staleness(&self) -> Staleness;
    /// Whether `client` may be sent work now (FedBuff: at most once per buffer).
    fn may_dispatch(&self, _client: ClientId) -> bool {
        true
    }
    /// The server state across arrivals (FedBuff's buffer), encoded.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restores [`AsyncStrategy::save_state`]'s bytes.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<()> {
        crate::traits::stateless("asynchronous strategy", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::approx_constant)] // the C.8 test vector, digits as printed there
    fn staleness_test_vectors_from_c8() {
        let taus = [0u64, 1, 3, 4, 5, 10];
        let poly = [1.0, 0.7071, 0.5, 0.4472, 0.4082, 0.3015];
        let hinge = [1.0, 1.0, 1.0, 1.0, 0.0909, 0.0164];
        for ((t, p), h) in taus.iter().zip(poly).zip(hinge) {
            let got = Staleness::Polynomial { a: 0.5 }.weight(*t);
            assert!((got - p).abs() < 5e-5, "poly({t}) = {got}, want {p}");
            let got = Staleness::Hinge { a: 10.0, b: 4.0 }.weight(*t);
            assert!((got - h).abs() < 5e-5, "hinge({t}) = {got}, want {h}");
        }
        assert_eq!(Staleness::Constant.weight(100), 1.0);
    }
}
