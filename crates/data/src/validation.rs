//! Validation splits (`data.validation_fraction`): every client's training split is cut
//! into training and validation parts, and the source's held-out set (when it has one)
//! into the server's validation and test sets. Anything that tunes or learns reads the
//! validation parts; reported numbers stay on the test splits. See
//! docs/learned-rates.md, "Validation splits".
//!
//! With a fraction of 0 (the default) the federation is returned untouched, so every
//! existing configuration gives the same results bit for bit.
//!
//! A client with `n` training samples keeps `n_v = clamp(round(f·n), 1, n − 1)` of them
//! for validation (none when `n < 2`), drawn at random from
//! `rng::stream(data seed, 0, client id, Purpose::Validation)`; the rest stay training
//! samples in their original order. For sources whose samples are overlapping windows
//! of one text (Shakespeare) the validation split is the **last** `n_v` windows and the
//! `gap` windows before them are dropped, so no character is in both splits.

use crate::error::{Error, Result};
use crate::federation::Federation;
use fedpace_core::data::{ClientData, Dataset, FederatedDataset, Subset};
use fedpace_core::rng::{stream, Purpose};
use rand::seq::SliceRandom;
use std::sync::Arc;

/// How the validation samples are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// A seeded random subset.
    Random,
    /// The last samples, with `gap` samples dropped before them (overlapping windows).
    Tail {
        /// Samples dropped between training and validation.
        gap: usize,
    },
}

/// Checks `data.validation_fraction`, when set: in [0, 1).
pub fn check_fraction(f: Option<&f64>) -> Result<()> {
    match f {
        Some(&f) if !(0.0..1.0).contains(&f) => Err(Error::invalid(
            "data.validation_fraction",
            f,
            "must be in [0, 1)",
        )),
        _ => Ok(()),
    }
}

/// Validation samples out of `n` at `fraction` (see the module doc); 0 when the
/// fraction is 0 or too few samples remain.
pub fn validation_len(n: usize, fraction: f64, order: Order) -> usize {
    let reserve = match order {
        Order::Random => 0,
        Order::Tail { gap } => gap,
    };
    if fraction <= 0.0 || n < reserve + 2 {
        return 0;
    }
    ((fraction * n as f64).round() as usize).clamp(1, n - reserve - 1)
}

/// Training samples left out of `n` (see [`validation_len`]).
pub fn train_len(n: usize, fraction: f64, order: Order) -> usize {
    let v = validation_len(n, fraction, order);
    match (v, order) {
        (0, _) => n,
        (v, Order::Random) => n - v,
        (v, Order::Tail { gap }) => n - v - gap,
    }
}

/// (training indices, validation indices) of a split of `n` samples; `stream_id` names
/// the random stream (the client id, or `u64::MAX` for the held-out set).
fn split_indices(
    n: usize,
    fraction: f64,
    order: Order,
    seed: u64,
    stream_id: u64,
) -> (Vec<u32>, Vec<u32>) {
    let v = validation_len(n, fraction, order);
    if v == 0 {
        return ((0..n as u32).collect(), Vec::new());
    }
    match order {
        Order::Random => {
            let mut perm: Vec<u32> = (0..n as u32).collect();
            perm.shuffle(&mut stream(seed, 0, stream_id, Purpose::Validation));
            let mut val = perm[..v].to_vec();
            let mut train = perm[v..].to_vec();
            val.sort_unstable();
            train.sort_unstable();
            (train, val)
        }
        Order::Tail { gap } => (
            (0..(n - v - gap) as u32).collect(),
            ((n - v) as u32..n as u32).collect(),
        ),
    }
}

/// The federation with validation splits at `fraction` (untouched when it is 0).
/// `seed` is the data seed (the source's `seed` key, else the run's).
pub fn with_validation(
    fed: Federation,
    fraction: f64,
    order: Order,
    seed: u64,
) -> Result<Federation> {
    check_fraction(Some(&fraction))?;
    if fraction == 0.0 {
        return Ok(fed);
    }
    let (global_test, global_validation) = match fed.global_test {
        Some(t) => {
            let (test, val) = split_indices(t.len(), fraction, Order::Random, seed, u64::MAX);
            (
                Some(Arc::new(Subset::new(t.clone(), test)) as Arc<dyn Dataset>),
                Some(Arc::new(Subset::new(t, val)) as Arc<dyn Dataset>),
            )
        }
        None => (None, None),
    };
    Ok(Federation {
        data: Arc::new(WithValidation {
            inner: fed.data,
            fraction,
            order,
            seed,
        }),
        sample_shape: fed.sample_shape,
        num_classes: fed.num_classes,
        global_test,
        global_validation,
        description: format!("{}, validation {fraction}", fed.description),
    })
}

/// A federation whose clients' training splits are cut into training and validation.
struct WithValidation {
    inner: Arc<dyn FederatedDataset>,
    fraction: f64,
    order: Order,
    seed: u64,
}

impl FederatedDataset for WithValidation {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn num_clients(&self) -> usize {
        self.inner.num_clients()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        let c = self.inner.client(id)?;
        let (train, val) = split_indices(
            c.train.len(),
            self.fraction,
            self.order,
            self.seed,
            id as u64,
        );
        Ok(ClientData {
            train: Arc::new(Subset::new(c.train.clone(), train)),
            validation: Some(Arc::new(Subset::new(c.train, val))),
            test: c.test,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        Ok(train_len(
            self.inner.train_len(id)?,
            self.fraction,
            self.order,
        ))
    }
    fn test_len(&self, id: usize) -> fedpace_core::Result<usize> {
        self.inner.test_len(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_len_rounds_and_keeps_one_of_each() {
        let r = Order::Random;
        assert_eq!(validation_len(100, 0.1, r), 10);
        assert_eq!(validation_len(14, 0.1, r), 1, "round(1.4)");
        assert_eq!(validation_len(16, 0.1, r), 2, "round(1.6)");
        assert_eq!(validation_len(3, 0.1, r), 1, "at least one");
        assert_eq!(validation_len(2, 0.9, r), 1, "at least one training sample");
        assert_eq!(validation_len(1, 0.5, r), 0);
        assert_eq!(validation_len(100, 0.0, r), 0);
        let t = Order::Tail { gap: 80 };
        assert_eq!(validation_len(1000, 0.1, t), 100);
        assert_eq!(train_len(1000, 0.1, t), 820);
        assert_eq!(validation_len(81, 0.5, t), 0, "no room after the gap");
        assert_eq!(train_len(81, 0.5, t), 81);
    }

    #[test]
    fn splits_are_disjoint_cover_the_data_and_follow_the_seed() {
        let (train, val) = split_indices(50, 0.2, Order::Random, 7, 3);
        assert_eq!(val.len(), 10);
        let mut all: Vec<u32> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert!(train.windows(2).all(|w| w[0] < w[1]), "original order");
        assert_eq!(split_indices(50, 0.2, Order::Random, 7, 3).1, val);
        assert_ne!(split_indices(50, 0.2, Order::Random, 8, 3).1, val);
        assert_ne!(split_indices(50, 0.2, Order::Random, 7, 4).1, val);
        let (train, val) = split_indices(200, 0.1, Order::Tail { gap: 80 }, 7, 3);
        assert_eq!(val, (180..200).collect::<Vec<u32>>());
        assert_eq!(train, (0..100).collect::<Vec<u32>>());
    }

    #[test]
    fn validation_fraction_out_of_range_is_an_error_naming_the_key() {
        assert_eq!(
            check_fraction(Some(&1.0)).unwrap_err().to_string(),
            "data.validation_fraction = 1: must be in [0, 1)"
        );
        assert!(check_fraction(Some(&-0.1)).is_err());
        assert!(check_fraction(Some(&f64::NAN)).is_err());
        assert!(check_fraction(None).is_ok());
    }
}
