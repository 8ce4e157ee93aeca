//! The client pool of a simulated federation: [`DataPool`] answers each client's
//! metadata from its data source on demand, and [`DeviceClasses`] gives each client its
//! device class from `(seed, id)` — so the pool costs the same memory for ten thousand
//! registered clients as for ten million.
//!
//! Small federations (up to [`HISTOGRAM_LIMIT`] clients) keep every row, label
//! histograms included as client metadata (computing a histogram means building the
//! client's data, once; the server sees it only where clients share it, through
//! `fedpace_core::Disclosed`);
//! larger ones keep nothing per client: sizes come from
//! [`FederatedDataset::train_len`] / [`FederatedDataset::test_len`], which the generated
//! and partitioned sources answer without building anything, and the histogram is left
//! empty.

use fedpace_core::pool::not_in_pool;
use fedpace_core::rng::{derive_seed, mix64, Purpose};
use fedpace_core::{ClientId, ClientInfo, ClientPool, FederatedDataset, LabelHistogram, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Up to this many clients the pool keeps every row, with the label histogram of the
/// training split (built from each client's data once); beyond it rows are computed on
/// demand without a label histogram (`clients.csv` then shows `label_entropy` 0).
pub const HISTOGRAM_LIMIT: usize = 1000;

/// Rounds of the Feistel network behind [`DeviceClasses`].
const FEISTEL_ROUNDS: usize = 6;
/// Keeps the permutation's keys apart from other uses of `Purpose::Algorithm`.
const SALT_CLASSES: u64 = 0xC1A5_5E5D_E71C_E000;

/// A seeded pseudorandom permutation of `0..n`, evaluated per element in O(1) memory:
/// a balanced Feistel network on the smallest even number of bits covering `n`, with
/// cycle walking (re-apply until the value falls below `n`; fewer than 4 applications
/// expected) — a bijection of `0..n` because the network is one of `0..4^h`.
#[derive(Debug, Clone)]
struct Feistel {
    n: u64,
    half_bits: u32,
    keys: [u64; FEISTEL_ROUNDS],
}

impl Feistel {
    fn new(n: u64, seed: u64) -> Self {
        let mut half_bits = 1;
        while half_bits < 32 && (1u64 << (2 * half_bits)) < n {
            half_bits += 1;
        }
        let mut keys = [0u64; FEISTEL_ROUNDS];
        for (r, k) in keys.iter_mut().enumerate() {
            *k = derive_seed(seed ^ SALT_CLASSES, 0, r as u64, Purpose::Algorithm);
        }
        Self { n, half_bits, keys }
    }

    fn network(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = ((x >> self.half_bits) & mask, x & mask);
        for k in &self.keys {
            let f = mix64(k ^ right) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }

    /// π(x) for `x < n`.
    fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.network(x);
        while y >= self.n {
            y = self.network(y);
        }
        y
    }
}

/// Device classes by fraction of the clients (`[device_classes] slow = 0.3`): a seeded
/// pseudorandom permutation π of the ids `0..n`; the clients whose position π(id) falls
/// in the first `round(f₁·n)` positions get the first class (classes in name order),
/// the next `round(f₂·n)` the second, and so on; the rest get none. Counts are exact;
/// a client's class is computed from `(seed, id)` with no table.
#[derive(Debug, Clone)]
pub struct DeviceClasses {
    /// Class names with the end of their range of positions, in name order.
    classes: Vec<(String, u64)>,
    permutation: Feistel,
}

impl DeviceClasses {
    /// Classes by fraction (fractions in `[0, 1]`, summing to at most 1) for `n`
    /// clients, seeded by `seed`.
    pub fn new(fractions: &BTreeMap<String, f64>, n: usize, seed: u64) -> Self {
        let mut classes = Vec::with_capacity(fractions.len());
        let mut at = 0usize;
        for (name, f) in fractions {
            let k = ((f * n as f64).round() as usize).min(n - at);
            at += k;
            classes.push((name.clone(), at as u64));
        }
        Self {
            classes,
            permutation: Feistel::new(n as u64, seed),
        }
    }

    /// No classes.
    pub fn none() -> Self {
        Self::new(&BTreeMap::new(), 0, 0)
    }

    /// Client `id`'s class, if any (`None` also for ids outside `0..n`).
    pub fn class_of(&self, id: ClientId) -> Option<&str> {
        let assigned = self.classes.last()?.1;
        if assigned == 0 || id >= self.permutation.n {
            return None;
        }
        let at = self.permutation.apply(id);
        self.classes
            .iter()
            .find(|(_, end)| at < *end)
            .map(|(name, _)| name.as_str())
    }
}

/// The pool of a [`FederatedDataset`]: client `id`'s metadata computed from the data
/// source and the device classes when asked (see the module doc).
pub struct DataPool {
    data: Arc<dyn FederatedDataset>,
    devices: DeviceClasses,
    /// Every row, for pools up to [`HISTOGRAM_LIMIT`] clients.
    rows: Option<Vec<ClientInfo>>,
    total_train: OnceLock<u64>,
}

impl std::fmt::Debug for DataPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPool")
            .field("data", &self.data.name())
            .field("clients", &self.data.num_clients())
            .field("rows_kept", &self.rows.as_ref().map_or(0, Vec::len))
            .finish()
    }
}

impl DataPool {
    /// The pool of `data`'s clients with classes from `devices`. Builds every client's
    /// data once for pools up to [`HISTOGRAM_LIMIT`] clients (their label histograms),
    /// nothing beyond.
    pub fn new(data: Arc<dyn FederatedDataset>, devices: DeviceClasses) -> Result<Self> {
        let n = data.num_clients();
        let rows = if n <= HISTOGRAM_LIMIT {
            Some(
                (0..n)
                    .map(|id| {
                        let (train, test, histogram) = data.describe_client(id)?;
                        let mut info = ClientInfo::new(id as u64, train as u64, test as u64);
                        info.device = devices.class_of(id as u64).map(str::to_string);
                        info.metadata.insert(LabelHistogram(histogram));
                        Ok(info)
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(Self {
            data,
            devices,
            rows,
            total_train: OnceLock::new(),
        })
    }
}

impl ClientPool for DataPool {
    fn len(&self) -> usize {
        self.data.num_clients()
    }

    fn info(&self, id: ClientId) -> Result<ClientInfo> {
        if let Some(rows) = &self.rows {
            return rows
                .get(id as usize)
                .cloned()
                .ok_or_else(|| not_in_pool(id));
        }
        if id >= self.len() as u64 {
            return Err(not_in_pool(id));
        }
        let i = id as usize;
        let mut info = ClientInfo::new(
            id,
            self.data.train_len(i)? as u64,
            self.data.test_len(i)? as u64,
        );
        info.device = self.devices.class_of(id).map(str::to_string);
        Ok(info)
    }

    /// Computed on the first call (one pass over the sizes), then kept.
    fn total_train(&self) -> Result<u64> {
        if let Some(t) = self.total_train.get() {
            return Ok(*t);
        }
        let t = match &self.rows {
            Some(rows) => rows.total_train()?,
            None => (0..self.len()).try_fold(0u64, |s, i| -> Result<u64> {
                Ok(s + self.data.train_len(i)? as u64)
            })?,
        };
        Ok(*self.total_train.get_or_init(|| t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feistel_is_a_permutation_of_every_small_range() {
        for n in (1..70u64).chain([255, 256, 257, 1000, 4097]) {
            let p = Feistel::new(n, 3);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.apply(x);
                assert!(y < n && !seen[y as usize], "n = {n}, x = {x}");
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn class_counts_are_exact_and_seeded() {
        let f: BTreeMap<String, f64> = [("fast".to_string(), 0.5), ("slow".to_string(), 0.3)]
            .into_iter()
            .collect();
        let n = 1001;
        let d = DeviceClasses::new(&f, n, 7);
        let count = |c: &str| (0..n as u64).filter(|&i| d.class_of(i) == Some(c)).count();
        assert_eq!(count("fast"), 501); // round(500.5) = 501
        assert_eq!(count("slow"), 300);
        assert_eq!(
            (0..n as u64).filter(|&i| d.class_of(i).is_none()).count(),
            200
        );
        assert_eq!(d.class_of(n as u64), None);
        // Another seed, another assignment with the same counts.
        let e = DeviceClasses::new(&f, n, 8);
        assert!((0..n as u64).any(|i| d.class_of(i) != e.class_of(i)));
        assert!(DeviceClasses::none().class_of(0).is_none());
    }
}
