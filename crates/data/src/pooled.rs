//! A federation cut from one pooled data set by a partitioner, with a per_client
//! train/test split.
//!
//! **Test splits.** Each client's share of the pooled *training* data is shuffled
//! (stream `(seed, 0, client, Partition)`) and split: the first
//! ⌊(1 − test_fraction)·n⌋ samples train, the rest test ([`TestSplit::Local`], the
//! default). This keeps a client's test labels distributed like its train labels and
//! needs no test set. When the source has its own test set (MNIST, Fashion-MNIST),
//! it is kept whole as the federation's global test set and, with
//! [`TestSplit::PooledMatched`], each client is instead given all of its share for
//! training and a test split drawn (without replacement within the client, independently
//! across clients) from the pooled test set with the same per-class counts as
//! `test_fraction/(1 − test_fraction)` × its train counts.

use crate::partition::Partition;
use crate::{Error, Federation, InputShape, Result};
use fedpace_core::data::{ClientData, Dataset, FederatedDataset, Subset};
use fedpace_core::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where each client's test split comes from (`data.test_split`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TestSplit {
    /// Hold out `test_fraction` of the client's own share (default).
    #[default]
    Local,
    /// Train on the whole share; draw a test split from the source's pooled test set
    /// with the same label distribution.
    PooledMatched,
}

/// The `[data]` keys of a pooled source (`optdigits`, and the same keys inside
/// [`crate::idx::MnistConfig`], [`crate::csv::CsvSourceConfig`], …): how many clients,
/// how the pool is split, and how each client's test split is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Number of clients. Default 30.
    pub num_clients: usize,
    /// How the pool is split across clients. Default `iid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out for its test split, in [0, 1).
    /// Default 0.2 (LEAF/FedAvg 80/20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Where client test splits come from. Default `local`.
    pub test_split: TestSplit,
    /// Seed of the partition and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            num_clients: 30,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            test_split: TestSplit::Local,
            seed: None,
        }
    }
}

/// Default test fraction of pooled sources.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

impl PoolConfig {
    /// The partition in effect (default `iid`).
    pub fn effective_partition(&self) -> Partition {
        self.partition.clone().unwrap_or(Partition::Iid)
    }

    /// The test fraction in effect.
    pub fn effective_test_fraction(&self) -> f64 {
        self.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION)
    }

    /// Checks the keys for `source`; `has_test_set` says whether the source has a
    /// pooled test set (needed by `test_split = "pooled-matched"`).
    pub fn validate(&self, source: &str, has_test_set: bool) -> Result<()> {
        if self.num_clients == 0 {
            return Err(Error::invalid("data.num_clients", 0, "must be ≥ 1"));
        }
        check_test_fraction(self.test_fraction)?;
        self.effective_partition().check(source, false)?;
        if self.test_split == TestSplit::PooledMatched {
            if !has_test_set {
                return Err(Error::invalid(
                    "data.test_split",
                    "pooled-matched",
                    format!("local (source {source} has no pooled test set)"),
                ));
            }
            if self.test_fraction == Some(0.0) {
                return Err(Error::invalid(
                    "data.test_fraction",
                    0,
                    "must be > 0 with test_split = \"pooled-matched\"",
                ));
            }
        }
        Ok(())
    }
}

/// Number of training samples out of `n` when `test_fraction` is held out:
/// ⌊(1 − test_fraction)·n⌋ as in FedProx (`int(0.9·n)`), at least 1 when n ≥ 1.
pub fn split_point(n: usize, test_fraction: f64) -> usize {
    if n == 0 {
        return 0;
    }
    let t = ((1.0 - test_fraction) * n as f64 + 1e-9).floor() as usize;
    t.clamp(1, n)
}

/// Checks `data.test_fraction`, when set: in [0, 1).
pub fn check_test_fraction(f: Option<f64>) -> Result<()> {
    match f {
        Some(f) if !(f.is_finite() && (0.0..1.0).contains(&f)) => {
            Err(Error::invalid("data.test_fraction", f, "must be in [0, 1)"))
        }
        _ => Ok(()),
    }
}

/// A federation whose clients are given — `parts[k]` holds client k's indices into
/// `train` (per-client files, LEAF users) — each split locally by `test_fraction`.
pub fn federate_parts(
    name: &str,
    train: Arc<dyn Dataset>,
    parts: Vec<Vec<u32>>,
    shape: InputShape,
    test_fraction: f64,
    seed: u64,
) -> Result<Federation> {
    let n = parts.len();
    let num_classes = train.num_classes();
    let pooled = Pooled::new(
        name.to_string(),
        train,
        None,
        parts,
        test_fraction,
        TestSplit::Local,
        seed,
    )?;
    Ok(Federation {
        global_test: None,
        data: Arc::new(pooled),
        sample_shape: shape,
        num_classes,
        description: format!("{name}, {n} clients, test local {test_fraction} (seed {seed})"),
        global_validation: None,
    })
}

/// Splits the pool `train` (with its own `test` set, if any) across clients as `cfg`
/// says; `seed` is the run's seed (`cfg.seed` overrides it). `shape` is one sample's.
pub fn federate(
    name: &str,
    train: Arc<dyn Dataset>,
    test: Option<Arc<dyn Dataset>>,
    shape: Vec<usize>,
    cfg: &PoolConfig,
    seed: u64,
) -> Result<Federation> {
    let seed = cfg.seed.unwrap_or(seed);
    let tf = cfg.effective_test_fraction();
    let labels: Vec<u32> = (0..train.len()).map(|i| train.label(i)).collect();
    let k = train.num_classes();
    let n = cfg.num_clients;
    let mut rng = stream(seed, 0, u64::MAX, Purpose::Partition);
    let p = cfg.effective_partition();
    let parts = p.split(&labels, k, n, &mut rng)?;
    let description = format!(
        "{name}, {n} clients, {} partition, test {} {tf} (seed {seed})",
        p.describe(),
        match cfg.test_split {
            TestSplit::Local => "local",
            TestSplit::PooledMatched => "pooled-matched",
        },
    );
    let pooled = Pooled::new(
        name.to_string(),
        train,
        test,
        parts,
        tf,
        cfg.test_split,
        seed,
    )?;
    Ok(Federation {
        global_test: pooled.global_test(),
        data: Arc::new(pooled),
        sample_shape: InputShape::Dense(shape),
        num_classes: k,
        description,
        global_validation: None,
    })
}

/// A federation of index views into a pooled training set (and optionally a pooled
/// test set).
pub struct Pooled {
    name: String,
    train: Arc<dyn Dataset>,
    test: Option<Arc<dyn Dataset>>,
    clients: Vec<(Vec<u32>, Vec<u32>)>,
    test_is_pooled: bool,
    num_classes: usize,
}

impl Pooled {
    /// Splits each client's share of `train` (`parts[k]` = indices of client k) into its
    /// train/test split as described in the module docs.
    pub fn new(
        name: String,
        train: Arc<dyn Dataset>,
        test: Option<Arc<dyn Dataset>>,
        parts: Vec<Vec<u32>>,
        test_fraction: f64,
        split: TestSplit,
        seed: u64,
    ) -> Result<Self> {
        let num_classes = train.num_classes();
        let mut clients = Vec::with_capacity(parts.len());
        let pooled_test = match (split, &test) {
            (TestSplit::PooledMatched, Some(t)) => Some(crate::partition::indices_by_class(
                &(0..t.len()).map(|i| t.label(i)).collect::<Vec<_>>(),
                num_classes,
            )),
            (TestSplit::PooledMatched, None) => {
                return Err(Error::invalid(
                    "data.test_split",
                    "pooled-matched",
                    "a source with its own test set (mnist, fashion-mnist, csv with test_path)",
                ))
            }
            (TestSplit::Local, _) => None,
        };
        for (k, mut idx) in parts.into_iter().enumerate() {
            let mut rng = stream(seed, 0, k as u64, Purpose::Partition);
            idx.shuffle(&mut rng);
            match &pooled_test {
                None => {
                    let t = split_point(idx.len(), test_fraction);
                    let test_idx = idx.split_off(t);
                    clients.push((idx, test_idx));
                }
                Some(by_class) => {
                    let ratio = test_fraction / (1.0 - test_fraction);
                    let mut counts = vec![0usize; num_classes];
                    for &i in &idx {
                        counts[train.label(i as usize) as usize] += 1;
                    }
                    let mut test_idx = Vec::new();
                    for (c, &n) in counts.iter().enumerate() {
                        let want = ((n as f64 * ratio).round() as usize).min(by_class[c].len());
                        test_idx.extend(by_class[c].choose_multiple(&mut rng, want).copied());
                    }
                    test_idx.shuffle(&mut rng);
                    clients.push((idx, test_idx));
                }
            }
        }
        Ok(Self {
            name,
            train,
            test,
            clients,
            test_is_pooled: pooled_test.is_some(),
            num_classes,
        })
    }

    /// Clients with given splits: `clients[k]` = (indices into `train`, indices into
    /// `test`), e.g. LEAF's own per-user train and test files.
    pub fn with_splits(
        name: String,
        train: Arc<dyn Dataset>,
        test: Arc<dyn Dataset>,
        clients: Vec<(Vec<u32>, Vec<u32>)>,
    ) -> Self {
        Self {
            name,
            num_classes: train.num_classes(),
            train,
            test: Some(test),
            clients,
            test_is_pooled: true,
        }
    }

    /// The pooled test set, if the source has one.
    pub fn global_test(&self) -> Option<Arc<dyn Dataset>> {
        self.test.clone()
    }

    /// Client `k`'s (train, test) indices; test indices point into the pooled test set
    /// under [`TestSplit::PooledMatched`], into the pooled train set otherwise.
    pub fn client_indices(&self, k: usize) -> (&[u32], &[u32]) {
        (&self.clients[k].0, &self.clients[k].1)
    }
}

impl FederatedDataset for Pooled {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn num_clients(&self) -> usize {
        self.clients.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        let (train, test) = self.clients.get(id).ok_or_else(|| {
            fedpace_core::Error::invalid(
                "client",
                id,
                format!("an id below {}", self.clients.len()),
            )
        })?;
        let test_base = match (&self.test, self.test_is_pooled) {
            (Some(t), true) => t.clone(),
            _ => self.train.clone(),
        };
        Ok(ClientData {
            train: Arc::new(Subset::new(self.train.clone(), train.clone())),
            test: Arc::new(Subset::new(test_base, test.clone())),
            validation: None,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        self.clients.get(id).map(|c| c.0.len()).ok_or_else(|| {
            fedpace_core::Error::invalid(
                "client",
                id,
                format!("an id below {}", self.clients.len()),
            )
        })
    }
}
