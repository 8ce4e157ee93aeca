//! The benchmark workloads' data (docs/benchmarks.md, W-LR / W-MLP / W-CNN): every client
//! holds `samples` samples of standard-normal features of a given shape and labels
//! uniform in `0..10`, client `c` drawn from its own generator seeded with `1000 + c`
//! (the same seeding rule as the peers' script; the run seed does not enter).
//!
//! Clients are generated when asked, so a federation of a million clients costs
//! nothing up front, and [`FederatedDataset::train_len`] is answered without
//! generating anything.

use crate::partition::Partition;
use crate::pooled::check_test_fraction;
use crate::{Error, Federation, InputShape, Result};
use fedpace_core::data::{ClientData, DenseDataset, FederatedDataset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[data] source = "bench"`: the benchmark workloads' data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    /// Number of clients. Default 30.
    pub num_clients: usize,
    /// Shape of one sample. Default `[60]` (W-LR); `[1, 28, 28]` for W-MLP and W-CNN.
    pub sample_shape: Vec<usize>,
    /// Samples per client. Default 600.
    pub samples_per_client: usize,
    /// Only `natural` (the generated clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out, in [0, 1). Default 0 (no test split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            num_clients: 30,
            sample_shape: vec![60],
            samples_per_client: DEFAULT_SAMPLES,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
        }
    }
}

/// The most values one client may hold (2^28 f32 = 1 GiB): a larger `sample_shape` ×
/// `samples_per_client` is a typo, refused before anything is allocated.
pub const MAX_VALUES_PER_CLIENT: usize = 1 << 28;

impl BenchConfig {
    /// Checks every key.
    pub fn validate(&self) -> Result<()> {
        if self.num_clients == 0 {
            return Err(Error::invalid("data.num_clients", 0, "must be ≥ 1"));
        }
        check_test_fraction(self.test_fraction)?;
        if let Some(p) = &self.partition {
            p.check("bench", true)?;
        }
        let values = self
            .sample_shape
            .iter()
            .try_fold(self.samples_per_client, |a, &d| a.checked_mul(d));
        if values.is_none_or(|v| v > MAX_VALUES_PER_CLIENT) {
            return Err(Error::invalid(
                "data.sample_shape",
                format!("{:?}", self.sample_shape),
                format!(
                    "at most {MAX_VALUES_PER_CLIENT} values per client (sample_shape × \
                     samples_per_client = {} here)",
                    values.map_or("more than 2^64".to_string(), |v| v.to_string())
                ),
            ));
        }
        Ok(())
    }

    /// The federation (clients generated on demand; the run seed does not enter).
    pub fn federation(&self) -> Result<Federation> {
        let shape = self.sample_shape.clone();
        let samples = self.samples_per_client;
        let b = BenchData::new(
            self.num_clients,
            shape.clone(),
            samples,
            self.test_fraction.unwrap_or(0.0),
        )?;
        Ok(Federation {
            description: format!(
                "bench {shape:?} × {samples}, {} clients (seeds 1000 + c)",
                self.num_clients
            ),
            data: Arc::new(b),
            sample_shape: InputShape::Dense(shape),
            num_classes: CLASSES,
            global_test: None,
            global_validation: None,
        })
    }
}

/// Classes of the benchmark labels.
pub const CLASSES: usize = 10;
/// Samples per client in docs/benchmarks.md.
pub const DEFAULT_SAMPLES: usize = 600;
/// Offset of the per-client seed: client `c` is seeded with `SEED_OFFSET + c`.
pub const SEED_OFFSET: u64 = 1000;

/// The benchmark federation.
#[derive(Debug, Clone)]
pub struct BenchData {
    num_clients: usize,
    shape: Vec<usize>,
    samples: usize,
    test_samples: usize,
}

impl BenchData {
    /// `num_clients` clients of `samples` samples of `shape`; the last
    /// `⌊samples · test_fraction⌋` of each client's samples form its test split.
    pub fn new(
        num_clients: usize,
        shape: Vec<usize>,
        samples: usize,
        test_fraction: f64,
    ) -> Result<Self> {
        if num_clients == 0 {
            return Err(Error::invalid("data.num_clients", 0, "at least 1"));
        }
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::invalid(
                "data.sample_shape",
                format!("{shape:?}"),
                "a non-empty list of positive sizes, e.g. [60] or [1, 28, 28]",
            ));
        }
        if samples == 0 {
            return Err(Error::invalid("data.samples_per_client", 0, "at least 1"));
        }
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::invalid(
                "data.test_fraction",
                test_fraction,
                "a fraction in [0, 1)",
            ));
        }
        let test_samples = (samples as f64 * test_fraction).floor() as usize;
        Ok(Self {
            num_clients,
            shape,
            samples,
            test_samples,
        })
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.shape
    }

    /// All samples of client `c`: features row-major, then labels. Features come from
    /// stream 0 of ChaCha8 seeded `1000 + c`, labels from its stream 1, so that the labels
    /// alone ([`BenchData::labels`]) cost no feature generation.
    pub fn generate(&self, c: usize) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED_OFFSET + c as u64);
        let d: usize = self.shape.iter().product();
        let x: Vec<f32> = (0..self.samples * d)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        (x, self.labels(c))
    }

    /// Client `c`'s labels, training then test (as [`BenchData::generate`] gives them).
    pub fn labels(&self, c: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED_OFFSET + c as u64);
        rng.set_stream(1);
        (0..self.samples)
            .map(|_| rng.gen_range(0..CLASSES as u32))
            .collect()
    }
}

impl FederatedDataset for BenchData {
    fn name(&self) -> String {
        format!("bench{:?}", self.shape)
    }
    fn num_clients(&self) -> usize {
        self.num_clients
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        if id >= self.num_clients {
            return Err(fedpace_core::Error::invalid(
                "client id",
                id,
                format!("below {}", self.num_clients),
            ));
        }
        let (mut x, mut y) = self.generate(id);
        let n_train = self.samples - self.test_samples;
        let d: usize = self.shape.iter().product();
        let tx = x.split_off(n_train * d);
        let ty = y.split_off(n_train);
        Ok(ClientData {
            train: Arc::new(DenseDataset::new(x, self.shape.clone(), y, CLASSES)?),
            test: Arc::new(DenseDataset::new(tx, self.shape.clone(), ty, CLASSES)?),
            validation: None,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        if id >= self.num_clients {
            return Err(fedpace_core::Error::invalid(
                "client id",
                id,
                format!("below {}", self.num_clients),
            ));
        }
        Ok(self.samples - self.test_samples)
    }
    fn test_len(&self, id: usize) -> fedpace_core::Result<usize> {
        self.train_len(id).map(|_| self.test_samples)
    }
    fn describe_client(&self, id: usize) -> fedpace_core::Result<(usize, usize, Vec<u64>)> {
        let n_train = self.train_len(id)?;
        let mut h = vec![0u64; CLASSES];
        for &l in &self.labels(id)[..n_train] {
            h[l as usize] += 1;
        }
        Ok((n_train, self.test_samples, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_seeded_by_id_and_sized_without_generation() {
        let b = BenchData::new(5, vec![1, 2, 3], 600, 0.0).unwrap();
        let c0 = b.client(0).unwrap();
        let c0b = b.client(0).unwrap();
        let c1 = b.client(1).unwrap();
        assert_eq!(c0.train.len(), 600);
        assert_eq!(c0.test.len(), 0);
        assert_eq!(b.train_len(3).unwrap(), 600);
        assert_eq!(c0.train.batch(&[0, 599]), c0b.train.batch(&[0, 599]));
        assert_ne!(c0.train.batch(&[0]), c1.train.batch(&[0]));
        // Standard normal features, labels roughly uniform over 10 classes.
        let (x, y) = b.generate(2);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "{mean} {var}");
        let h = c0.train.label_histogram();
        assert_eq!(h.len(), 10);
        assert!(h.iter().all(|&k| (30..=90).contains(&k)), "{h:?}");
        assert!(y.iter().all(|&l| l < 10));
        // The pool's histogram, from the labels alone, is the training split's.
        let b = BenchData::new(3, vec![4], 50, 0.2).unwrap();
        for c in 0..3 {
            let built = b.client(c).unwrap();
            assert_eq!(
                b.describe_client(c).unwrap(),
                (
                    built.train.len(),
                    built.test.len(),
                    built.train.label_histogram()
                )
            );
        }
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = BenchData::new(0, vec![60], 600, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.num_clients"), "{e}");
        let e = BenchData::new(1, vec![0], 600, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.sample_shape"), "{e}");
        let b = BenchData::new(1, vec![60], 600, 0.1).unwrap();
        assert_eq!(b.client(0).unwrap().test.len(), 60);
        assert_eq!((b.train_len(0).unwrap(), b.test_len(0).unwrap()), (540, 60));
        assert!(b.client(1).is_err());
    }
}
