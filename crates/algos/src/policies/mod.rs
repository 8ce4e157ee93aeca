//! Rate policies beyond `constant` and `by-data-size` ([`crate::policy`]), one file
//! each, all declared in TOML through [`crate::PolicyConfig`] (docs/rate-policies.md).
//!
//! Policies that scale the base rate multiply the rate of the plan they are given, so
//! that [`compose::Compose`] gives the product of its parts.

pub mod clip_updates;
pub mod compose;
pub mod curvature;
pub mod device;
pub mod fedlalr;
pub mod grad_norm;
pub mod inverse_variance;
pub mod label_skew;
pub mod loss_based;
pub mod per_layer;
pub mod prox_mu;
pub mod straggler;
pub mod trust_ratio;

use fedpace_core::codec::{from_cbor, to_cbor};
use fedpace_core::{RatePlan, Result};
use std::collections::{BTreeMap, HashMap};

/// A per-client map as state bytes (sorted by client id, so the bytes are deterministic).
pub(crate) fn save_map<V: serde::Serialize + Clone>(m: &HashMap<u64, V>) -> Result<Vec<u8>> {
    let sorted: BTreeMap<u64, V> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
    to_cbor(&sorted)
}

/// The map [`save_map`] wrote.
pub(crate) fn load_map<V: serde::de::DeserializeOwned>(
    b: &[u8],
    what: &str,
) -> Result<HashMap<u64, V>> {
    let m: BTreeMap<u64, V> = from_cbor(b, what)?;
    Ok(m.into_iter().collect())
}

/// `base` with its base rate multiplied by `r`.
pub(crate) fn scaled(base: &RatePlan, r: f64) -> RatePlan {
    let mut p = base.clone();
    p.base_lr = (base.base_lr as f64 * r) as f32;
    p
}

/// Mean of the values of a map (None when empty).
pub(crate) fn mean<'a>(v: impl Iterator<Item = &'a f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

#[cfg(test)]
pub(crate) fn info(
    id: u64,
    n: u64,
    hist: Vec<u64>,
    device: Option<&str>,
) -> fedpace_core::ClientInfo {
    let mut c = fedpace_core::ClientInfo::new(id, n, 0);
    c.device = device.map(str::to_string);
    if !hist.is_empty() {
        c.metadata.insert(fedpace_core::LabelHistogram(hist));
    }
    c
}

#[cfg(test)]
pub(crate) fn base_plan() -> RatePlan {
    RatePlan {
        base_lr: 0.1,
        group_multipliers: vec![],
        schedule: Default::default(),
        work: fedpace_core::LocalWork::Epochs(1),
        max_steps: None,
        batch_size: 10,
        optimizer: Default::default(),
        state_mode: Default::default(),
        prox_mu: 0.0,
    }
}
