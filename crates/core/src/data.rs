//! Data contracts: a [`Dataset`] serves batches by index; a [`FederatedDataset`] hands
//! out each client's train/test split on demand (so a million clients need not be
//! materialised).

use crate::Result;
use std::sync::Arc;

/// Model inputs of one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Dense features, `[batch, sample_shape...]` row-major.
    Dense {
        /// Values.
        data: Vec<f32>,
        /// Shape of one sample (e.g. `[60]` or `[1, 28, 28]`).
        sample_shape: Vec<usize>,
    },
    /// Token ids, `[batch, seq_len]` row-major.
    Tokens {
        /// Ids.
        data: Vec<u32>,
        /// Sequence length.
        seq_len: usize,
    },
}

/// A mini-batch: inputs and one class label per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Inputs.
    pub inputs: Inputs,
    /// Class labels, one per sample.
    pub labels: Vec<u32>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A finite indexed data set.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes of the labels.
    fn num_classes(&self) -> usize;
    /// The label of sample `i`.
    fn label(&self, i: usize) -> u32;
    /// Gathers the samples at `indices` into a batch.
    fn batch(&self, indices: &[usize]) -> Batch;
    /// Histogram of labels (length [`Dataset::num_classes`]).
    fn label_histogram(&self) -> Vec<u64> {
        let mut h = vec![0u64; self.num_classes()];
        for i in 0..self.len() {
            let l = self.label(i) as usize;
            if l < h.len() {
                h[l] += 1;
            }
        }
        h
    }
}

/// One client's local data: a training split, a test split (reported numbers), and,
/// when the data config asks for one (`data.validation_fraction > 0`), a validation
/// split held out of the training data — what anything that tunes or learns sees
/// (docs/learned-rates.md, "Validation splits").
#[derive(Clone)]
pub struct ClientData {
    /// Training split.
    pub train: Arc<dyn Dataset>,
    /// Held-out split for evaluation.
    pub test: Arc<dyn Dataset>,
    /// Validation split, when the federation has them (it may be empty for a client
    /// with too little data); `None` = no validation splits.
    pub validation: Option<Arc<dyn Dataset>>,
}

impl ClientData {
    /// Train and test splits, no validation split.
    pub fn new(train: Arc<dyn Dataset>, test: Arc<dyn Dataset>) -> Self {
        Self {
            train,
            test,
            validation: None,
        }
    }
}

impl std::fmt::Debug for ClientData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientData(train={}, test={}, validation={:?})",
            self.train.len(),
            self.test.len(),
            self.validation.as_ref().map(|v| v.len())
        )
    }
}

/// A federation's data: a number of clients and each one's split, on demand.
pub trait FederatedDataset: Send + Sync {
    /// A short name for logs (e.g. `synthetic(1,1)`).
    fn name(&self) -> String;
    /// Number of clients.
    fn num_clients(&self) -> usize;
    /// Number of label classes.
    fn num_classes(&self) -> usize;
    /// Client `id`'s data (`id < num_clients`). May be generated or loaded lazily.
    fn client(&self, id: usize) -> Result<ClientData>;
    /// Number of training samples of client `id`, cheaply if possible.
    fn train_len(&self, id: usize) -> Result<usize> {
        Ok(self.client(id)?.train.len())
    }
    /// Number of test samples of client `id`, cheaply if possible.
    fn test_len(&self, id: usize) -> Result<usize> {
        Ok(self.client(id)?.test.len())
    }
    /// Client `id`'s training and test sizes and training-label histogram (one count per
    /// class), cheaply if possible: what a pool describes its clients with, without their
    /// features. By default from [`FederatedDataset::client`], built once.
    fn describe_client(&self, id: usize) -> Result<(usize, usize, Vec<u64>)> {
        let c = self.client(id)?;
        Ok((c.train.len(), c.test.len(), c.train.label_histogram()))
    }
}

/// A view of some samples of another data set.
#[derive(Clone)]
pub struct Subset {
    base: Arc<dyn Dataset>,
    indices: Arc<Vec<u32>>,
}

impl Subset {
    /// Samples `indices` of `base` (indices must be `< base.len()`).
    pub fn new(base: Arc<dyn Dataset>, indices: Vec<u32>) -> Self {
        debug_assert!(indices.iter().all(|&i| (i as usize) < base.len()));
        Self {
            base,
            indices: Arc::new(indices),
        }
    }
    /// The indices into the base data set.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn num_classes(&self) -> usize {
        self.base.num_classes()
    }
    fn label(&self, i: usize) -> u32 {
        self.base.label(self.indices[i] as usize)
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let mapped: Vec<usize> = indices.iter().map(|&i| self.indices[i] as usize).collect();
        self.base.batch(&mapped)
    }
}

/// An in-memory dense data set: `n` samples of `sample_shape` floats and their labels.
#[derive(Debug, Clone)]
pub struct DenseDataset {
    features: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: Vec<u32>,
    num_classes: usize,
}

impl DenseDataset {
    /// Wraps features and labels; errors if the lengths disagree or a label is out of range.
    pub fn new(
        features: Vec<f32>,
        sample_shape: Vec<usize>,
        labels: Vec<u32>,
        num_classes: usize,
    ) -> Result<Self> {
        let d: usize = sample_shape.iter().product();
        if features.len() != d * labels.len() {
            return Err(crate::Error::invalid(
                "features",
                format!("{} values", features.len()),
                format!("{} samples × {} = {}", labels.len(), d, d * labels.len()),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(crate::Error::invalid(
                "label",
                bad,
                format!("a class index below {num_classes}"),
            ));
        }
        Ok(Self {
            features,
            sample_shape,
            labels,
            num_classes,
        })
    }
    /// Features of sample `i`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let d = self.sample_len();
        &self.features[i * d..(i + 1) * d]
    }
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
}

impl Dataset for DenseDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let d = self.sample_len();
        let mut data = Vec::with_capacity(indices.len() * d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            data.extend_from_slice(&self.features[i * d..(i + 1) * d]);
            labels.push(self.labels[i]);
        }
        Batch {
            inputs: Inputs::Dense {
                data,
                sample_shape: self.sample_shape.clone(),
            },
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_maps_indices_through_to_base() {
        let base = Arc::new(
            DenseDataset::new(vec![0., 1., 2., 3., 4., 5.], vec![2], vec![0, 1, 2], 3).unwrap(),
        );
        let s = Subset::new(base, vec![2, 0]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.label(0), 2);
        let b = s.batch(&[0, 1]);
        assert_eq!(b.labels, vec![2, 0]);
        assert_eq!(
            b.inputs,
            Inputs::Dense {
                data: vec![4., 5., 0., 1.],
                sample_shape: vec![2]
            }
        );
        assert_eq!(s.label_histogram(), vec![1, 0, 1]);
    }

    #[test]
    fn dense_dataset_rejects_bad_lengths_and_labels() {
        assert!(DenseDataset::new(vec![0.; 5], vec![2], vec![0, 1, 2], 3).is_err());
        assert!(DenseDataset::new(vec![0.; 6], vec![2], vec![0, 1, 3], 3).is_err());
    }
}
