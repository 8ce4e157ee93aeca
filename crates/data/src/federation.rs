//! What [`crate::build`] returns: a federation and what a model needs to know about it.

use fedpace_core::data::{Dataset, DenseDataset, FederatedDataset, Inputs};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The shape of one model input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputShape {
    /// Dense features of this shape (e.g. `[60]`, `[1, 28, 28]`).
    Dense(Vec<usize>),
    /// Token sequences.
    Tokens {
        /// Sequence length.
        seq_len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// A built federation: the clients' data and what a model needs to know about it.
#[derive(Clone)]
pub struct Federation {
    /// The clients' data, produced on demand.
    pub data: Arc<dyn FederatedDataset>,
    /// Shape of one input sample.
    pub sample_shape: InputShape,
    /// Number of label classes.
    pub num_classes: usize,
    /// The source's own held-out set (MNIST's 10k test images, a CSV `test_path`), if any;
    /// with validation splits, the part of it that is not the server's validation set.
    pub global_test: Option<Arc<dyn Dataset>>,
    /// The server's validation set: `validation_fraction` of the held-out set, when
    /// there is one and the data has validation splits (docs/learned-rates.md).
    pub global_validation: Option<Arc<dyn Dataset>>,
    /// One line for logs, e.g. `optdigits, 10 clients, dirichlet(alpha=0.5)`.
    pub description: String,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("description", &self.description)
            .field("num_clients", &self.data.num_clients())
            .field("sample_shape", &self.sample_shape)
            .field("num_classes", &self.num_classes)
            .finish()
    }
}

/// The shape of one sample of `d` (read through an empty batch: `DenseDataset` keeps
/// it but has no accessor).
pub(crate) fn dense_shape(d: &DenseDataset) -> Vec<usize> {
    match d.batch(&[]).inputs {
        Inputs::Dense { sample_shape, .. } => sample_shape,
        Inputs::Tokens { .. } => vec![d.sample_len()],
    }
}
