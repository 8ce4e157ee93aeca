//! FedProx **Synthetic(α, β)** and **Synthetic-IID** (docs/datasets.md §4.2, docs/algorithms.md §X.1).
//!
//! For device k (60 features, 10 classes):
//!
//! ```text
//! n_k  = ⌊exp(N(4, 2²))⌋ + 50          power-law sizes, min 50
//! u_k  ~ N(0, α²),  B_k ~ N(0, β²)       α, β are standard deviations, as in the code
//! v_k[j] ~ N(B_k, 1)                     (IID: v_k = 0)
//! W_k[i,c], b_k[c] ~ N(u_k, 1)           (IID: one W, b ~ N(0,1) shared by all devices)
//! x ~ N(v_k, Σ),  Σ_jj = (j+1)^-1.2      (0-based j)
//! y = argmax_c (x·W_k + b_k)_c
//! ```
//!
//! then a seeded shuffle and a per-device split: the first ⌊(1 − test_fraction)·n_k⌋
//! samples train, the rest test (FedProx: 90/10).
//!
//! **Laziness and seeding.** FedProx's script draws all per-device scalars in one
//! vector per quantity from an unseeded numpy RNG. Here every device draws its own
//! scalars, in the order n_k, u_k, B_k, v_k, W_k, b_k, x, shuffle, from its own stream
//! `rng::stream(seed, 0, k, Purpose::Generate)`, so client k is generated only when asked
//! for and a million devices cost nothing up front. The draws are therefore
//! *FedProx-distributed*, not bit-identical to any FedProx data file (which nobody can
//! reproduce anyway: their generator is unseeded). The shared IID model comes from the
//! stream of the pseudo-client `u64::MAX`.

use crate::partition::Partition;
use crate::pooled::{check_test_fraction, split_point};
use crate::{Error, Federation, InputShape, Result};
use fedpace_core::data::{ClientData, DenseDataset, FederatedDataset};
use fedpace_core::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, LogNormal, Normal, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `[data] source = "synthetic"`: FedProx Synthetic(α, β).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Std of the per-device model mean u_k (α ≥ 0). Default 1.
    pub alpha: f64,
    /// Std of the per-device feature mean B_k (β ≥ 0). Default 1.
    pub beta: f64,
    /// Number of devices. Default 30.
    pub num_clients: usize,
    /// Only `natural` (the devices are the clients); accepted so a resolved config
    /// parses again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each device's samples held out, in [0, 1). Default 0.1 (FedProx 90/10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Seed of the generator and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            beta: 1.0,
            num_clients: 30,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            seed: None,
        }
    }
}

/// `[data] source = "synthetic-iid"`: FedProx Synthetic-IID (one shared model, v_k = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticIidConfig {
    /// Number of devices. Default 30.
    pub num_clients: usize,
    /// Only `natural` (see [`SyntheticConfig::partition`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each device's samples held out, in [0, 1). Default 0.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Seed of the generator and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for SyntheticIidConfig {
    fn default() -> Self {
        Self {
            num_clients: 30,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            seed: None,
        }
    }
}

/// Default test fraction of the synthetic sources (FedProx 90/10).
pub const DEFAULT_TEST_FRACTION: f64 = 0.1;

impl SyntheticConfig {
    /// Checks every key; errors name it (`data.alpha = -1: …`).
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("data.alpha", self.alpha), ("data.beta", self.beta)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(
                    field,
                    v,
                    "must be ≥ 0 (a standard deviation)",
                ));
            }
        }
        validate_devices(
            self.num_clients,
            &self.partition,
            self.test_fraction,
            "synthetic",
        )
    }

    /// The federation (clients generated on demand); `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        let kind = SyntheticKind::NonIid {
            alpha: self.alpha,
            beta: self.beta,
        };
        federation(
            kind,
            self.num_clients,
            self.test_fraction,
            self.seed.unwrap_or(seed),
        )
    }
}

impl SyntheticIidConfig {
    /// Checks every key.
    pub fn validate(&self) -> Result<()> {
        validate_devices(
            self.num_clients,
            &self.partition,
            self.test_fraction,
            "synthetic-iid",
        )
    }

    /// The federation (clients generated on demand); `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        federation(
            SyntheticKind::Iid,
            self.num_clients,
            self.test_fraction,
            self.seed.unwrap_or(seed),
        )
    }
}

fn validate_devices(
    num_clients: usize,
    partition: &Option<Partition>,
    test_fraction: Option<f64>,
    source: &str,
) -> Result<()> {
    if num_clients == 0 {
        return Err(Error::invalid("data.num_clients", 0, "must be ≥ 1"));
    }
    check_test_fraction(test_fraction)?;
    match partition {
        Some(p) => p.check(source, true),
        None => Ok(()),
    }
}

fn federation(
    kind: SyntheticKind,
    num_clients: usize,
    test_fraction: Option<f64>,
    seed: u64,
) -> Result<Federation> {
    let s = Synthetic::new(
        kind,
        num_clients,
        test_fraction.unwrap_or(DEFAULT_TEST_FRACTION),
        seed,
    )?;
    Ok(Federation {
        description: format!("{}, {num_clients} devices (seed {seed})", s.name()),
        data: Arc::new(s),
        sample_shape: InputShape::Dense(vec![FEATURES]),
        num_classes: CLASSES,
        global_test: None,
        global_validation: None,
    })
}

/// Features per sample.
pub const FEATURES: usize = 60;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Stream id of the model shared by all devices in the IID variant.
const SHARED_CLIENT: u64 = u64::MAX;

/// Which FedProx generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyntheticKind {
    /// Synthetic(α, β): per-device models and feature means.
    NonIid {
        /// Std of the per-device model mean u_k.
        alpha: f64,
        /// Std of the per-device feature mean B_k.
        beta: f64,
    },
    /// Synthetic-IID: one shared model, v_k = 0.
    Iid,
}

/// The FedProx synthetic federation; clients are generated on demand.
#[derive(Debug, Clone)]
pub struct Synthetic {
    kind: SyntheticKind,
    num_clients: usize,
    seed: u64,
    test_fraction: f64,
    shared: Option<Arc<(Vec<f64>, Vec<f64>)>>,
}

impl Synthetic {
    /// A federation of `num_clients` devices; `test_fraction` of each device's samples
    /// are held out (FedProx: 0.1).
    pub fn new(
        kind: SyntheticKind,
        num_clients: usize,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if let SyntheticKind::NonIid { alpha, beta } = kind {
            check_std("data.alpha", alpha)?;
            check_std("data.beta", beta)?;
        }
        if num_clients == 0 {
            return Err(Error::invalid("data.num_clients", 0, "at least 1"));
        }
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::invalid(
                "data.test_fraction",
                test_fraction,
                "a fraction in [0, 1)",
            ));
        }
        let shared = match kind {
            SyntheticKind::Iid => {
                let mut rng = stream(seed, 0, SHARED_CLIENT, Purpose::Generate);
                let w = normals(&mut rng, 0.0, FEATURES * CLASSES);
                let b = normals(&mut rng, 0.0, CLASSES);
                Some(Arc::new((w, b)))
            }
            SyntheticKind::NonIid { .. } => None,
        };
        Ok(Self {
            kind,
            num_clients,
            seed,
            test_fraction,
            shared,
        })
    }

    /// Number of samples of device `k` (train + test): only the first draw of its stream.
    pub fn device_len(&self, k: usize) -> usize {
        let mut rng = stream(self.seed, 0, k as u64, Purpose::Generate);
        draw_n(&mut rng)
    }

    /// All samples of device `k`, shuffled, as (features row-major, labels).
    pub fn generate(&self, k: usize) -> (Vec<f32>, Vec<u32>) {
        let mut rng = stream(self.seed, 0, k as u64, Purpose::Generate);
        let n = draw_n(&mut rng);
        let (u, b_mean) = match self.kind {
            SyntheticKind::NonIid { alpha, beta } => {
                let u = alpha * rng.sample::<f64, _>(StandardNormal);
                let b = beta * rng.sample::<f64, _>(StandardNormal);
                (u, b)
            }
            SyntheticKind::Iid => (0.0, 0.0),
        };
        let (v, w, b) = match (&self.kind, &self.shared) {
            (SyntheticKind::Iid, Some(shared)) => {
                (vec![0.0; FEATURES], shared.0.clone(), shared.1.clone())
            }
            _ => {
                let v = normals(&mut rng, b_mean, FEATURES);
                let w = normals(&mut rng, u, FEATURES * CLASSES);
                let b = normals(&mut rng, u, CLASSES);
                (v, w, b)
            }
        };
        let sd: Vec<f64> = (0..FEATURES)
            .map(|j| ((j + 1) as f64).powf(-1.2).sqrt())
            .collect();
        let mut x = vec![0f64; FEATURES];
        let mut rows: Vec<(Vec<f32>, u32)> = Vec::with_capacity(n);
        for _ in 0..n {
            for j in 0..FEATURES {
                x[j] = v[j] + sd[j] * rng.sample::<f64, _>(StandardNormal);
            }
            let mut best = (f64::NEG_INFINITY, 0u32);
            for c in 0..CLASSES {
                let mut z = b[c];
                for j in 0..FEATURES {
                    z += x[j] * w[j * CLASSES + c];
                }
                if z > best.0 {
                    best = (z, c as u32);
                }
            }
            rows.push((x.iter().map(|&f| f as f32).collect(), best.1));
        }
        rows.shuffle(&mut rng);
        let mut features = Vec::with_capacity(n * FEATURES);
        let mut labels = Vec::with_capacity(n);
        for (f, l) in rows {
            features.extend_from_slice(&f);
            labels.push(l);
        }
        (features, labels)
    }

    fn train_count(&self, n: usize) -> usize {
        split_point(n, self.test_fraction)
    }
}

fn check_std(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::invalid(field, v, "a finite standard deviation ≥ 0"));
    }
    Ok(())
}

fn draw_n<R: Rng>(rng: &mut R) -> usize {
    let ln = LogNormal::new(4.0, 2.0).expect("valid lognormal");
    let s: f64 = ln.sample(rng);
    // `astype(int)` truncates; the cap only guards against a float overflow.
    (s.min(1e9) as usize) + 50
}

fn normals<R: Rng>(rng: &mut R, mean: f64, n: usize) -> Vec<f64> {
    let d = Normal::new(mean, 1.0).expect("finite mean");
    (0..n).map(|_| d.sample(rng)).collect()
}

impl FederatedDataset for Synthetic {
    fn name(&self) -> String {
        match self.kind {
            SyntheticKind::NonIid { alpha, beta } => format!("synthetic({alpha},{beta})"),
            SyntheticKind::Iid => "synthetic-iid".to_string(),
        }
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
                "client",
                id,
                format!("an id below {}", self.num_clients),
            ));
        }
        let (mut features, mut labels) = self.generate(id);
        let t = self.train_count(labels.len());
        let test_features = features.split_off(t * FEATURES);
        let test_labels = labels.split_off(t);
        let train = DenseDataset::new(features, vec![FEATURES], labels, CLASSES)?;
        let test = DenseDataset::new(test_features, vec![FEATURES], test_labels, CLASSES)?;
        Ok(ClientData {
            train: Arc::new(train),
            test: Arc::new(test),
            validation: None,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        Ok(self.train_count(self.device_len(id)))
    }
    fn test_len(&self, id: usize) -> fedpace_core::Result<usize> {
        let n = self.device_len(id);
        Ok(n - self.train_count(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_iid(a: f64, b: f64, n: usize) -> Synthetic {
        Synthetic::new(SyntheticKind::NonIid { alpha: a, beta: b }, n, 0.1, 7).unwrap()
    }

    #[test]
    fn sizes_follow_fedprox_and_split_is_90_10() {
        let s = non_iid(1.0, 1.0, 30);
        let mut total = 0;
        for k in 0..30 {
            let c = s.client(k).unwrap();
            let n = c.train.len() + c.test.len();
            assert!(n >= 50, "device {k} has {n} samples");
            assert_eq!(n, s.device_len(k));
            assert_eq!(c.train.len(), (0.9 * n as f64 + 1e-9).floor() as usize);
            assert_eq!(s.train_len(k).unwrap(), c.train.len());
            assert_eq!(s.test_len(k).unwrap(), c.test.len());
            total += n;
        }
        // E[n_k] ≈ 453 with a heavy tail; 30 devices give a few thousand at least.
        assert!(total > 30 * 50 + 500, "total {total}");
    }

    #[test]
    fn same_seed_same_client_and_clients_differ() {
        let a = non_iid(0.5, 0.5, 5);
        let b = non_iid(0.5, 0.5, 5);
        assert_eq!(a.generate(3), b.generate(3));
        assert_ne!(a.generate(3), a.generate(4));
        let c = Synthetic::new(
            SyntheticKind::NonIid {
                alpha: 0.5,
                beta: 0.5,
            },
            5,
            0.1,
            8,
        )
        .unwrap();
        assert_ne!(a.generate(3), c.generate(3));
    }

    #[test]
    fn zero_zero_labels_are_not_all_one_class() {
        let s = non_iid(0.0, 0.0, 30);
        let mut hist = [0usize; CLASSES];
        for k in 0..30 {
            for l in s.generate(k).1 {
                hist[l as usize] += 1;
            }
        }
        let classes_seen = hist.iter().filter(|&&h| h > 0).count();
        assert!(classes_seen >= 5, "histogram {hist:?}");
        let max = *hist.iter().max().unwrap() as f64;
        let total: usize = hist.iter().sum();
        assert!(max < 0.8 * total as f64, "histogram {hist:?}");
    }

    #[test]
    fn feature_means_are_close_to_v_k() {
        // IID: v = 0, so per-feature means → 0 with std (j+1)^-0.6/√n.
        let s = Synthetic::new(SyntheticKind::Iid, 50, 0.1, 3).unwrap();
        let mut sum = vec![0f64; FEATURES];
        let mut n = 0usize;
        for k in 0..50 {
            let (f, l) = s.generate(k);
            for row in f.chunks(FEATURES) {
                for j in 0..FEATURES {
                    sum[j] += row[j] as f64;
                }
            }
            n += l.len();
        }
        for (j, s) in sum.iter().enumerate() {
            let mean = s / n as f64;
            assert!(mean.abs() < 0.05, "feature {j}: mean {mean} over {n}");
        }
        // Non-IID with β = 0: v_k[j] ~ N(0, 1), and the variance of feature j is (j+1)^-1.2,
        // so the last feature (sd ≈ 0.085) clusters tightly around its v_k.
        let s = non_iid(0.0, 0.0, 3);
        let (f, _) = s.generate(0);
        let last: Vec<f64> = f.chunks(FEATURES).map(|r| r[FEATURES - 1] as f64).collect();
        let m = last.iter().sum::<f64>() / last.len() as f64;
        let var = last.iter().map(|x| (x - m).powi(2)).sum::<f64>() / last.len() as f64;
        let expected = (FEATURES as f64).powf(-1.2);
        assert!(
            (var / expected - 1.0).abs() < 0.35,
            "variance {var}, expected {expected}"
        );
    }

    /// Mean total-variation distance between each device's label distribution and the
    /// pooled one.
    fn label_heterogeneity(s: &Synthetic, devices: usize) -> f64 {
        let hists: Vec<Vec<f64>> = (0..devices)
            .map(|k| {
                let mut h = vec![0f64; CLASSES];
                let labels = s.generate(k).1;
                for &l in &labels {
                    h[l as usize] += 1.0 / labels.len() as f64;
                }
                h
            })
            .collect();
        let pooled: Vec<f64> = (0..CLASSES)
            .map(|c| hists.iter().map(|h| h[c]).sum::<f64>() / devices as f64)
            .collect();
        hists
            .iter()
            .map(|h| {
                0.5 * h
                    .iter()
                    .zip(&pooled)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f64>()
            })
            .sum::<f64>()
            / devices as f64
    }

    #[test]
    fn iid_devices_share_one_model_and_non_iid_ones_do_not() {
        let iid = Synthetic::new(SyntheticKind::Iid, 30, 0.1, 11).unwrap();
        let het = non_iid(1.0, 1.0, 30);
        let (a, b) = (label_heterogeneity(&iid, 30), label_heterogeneity(&het, 30));
        assert!(a < 0.25, "IID heterogeneity {a}");
        assert!(b > a + 0.2, "Synthetic(1,1) heterogeneity {b} vs IID {a}");
    }

    #[test]
    fn a_million_clients_cost_nothing_until_used() {
        let s = non_iid(1.0, 1.0, 1_000_000);
        assert_eq!(s.num_clients(), 1_000_000);
        let c = s.client(999_999).unwrap();
        assert!(c.train.len() >= 45);
        assert!(s.client(1_000_000).is_err());
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let e = Synthetic::new(
            SyntheticKind::NonIid {
                alpha: -1.0,
                beta: 0.0,
            },
            3,
            0.1,
            0,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "data.alpha = -1: a finite standard deviation ≥ 0"
        );
    }
}
