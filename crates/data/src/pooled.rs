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

use crate::config::TestSplit;
use crate::synthetic::split_point;
use crate::{Error, Result};
use fedpace_core::data::{ClientData, Dataset, FederatedDataset, Subset};
use fedpace_core::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use std::sync::Arc;

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
