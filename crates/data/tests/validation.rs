//! Validation splits (`data.validation_fraction`, docs/learned-rates.md): every client's
//! validation split is cut from its training split, never overlaps its test split, and
//! the same config and seed give the same split; the held-out set is cut into disjoint
//! server validation and test sets.

use fedpace_core::{Dataset, Inputs};
use fedpace_data::{build, DataConfig, NpyConfig, NpySourceConfig, SyntheticConfig, TestSplit};
use std::path::Path;

/// Every sample of a split, as the bit patterns of its features and its label.
fn samples(d: &dyn Dataset) -> Vec<(Vec<u32>, u32)> {
    (0..d.len())
        .map(|i| match d.batch(&[i]).inputs {
            Inputs::Dense { data, .. } => (data.iter().map(|v| v.to_bits()).collect(), d.label(i)),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn sorted(mut v: Vec<(Vec<u32>, u32)>) -> Vec<(Vec<u32>, u32)> {
    v.sort();
    v
}

fn synthetic(validation: Option<f64>) -> DataConfig {
    DataConfig::Synthetic(SyntheticConfig {
        num_clients: 12,
        validation_fraction: validation,
        ..Default::default()
    })
}

#[test]
fn validation_and_test_splits_are_disjoint_for_every_client() {
    let plain = build(&synthetic(None), 5, Path::new("data")).unwrap();
    let split = build(&synthetic(Some(0.25)), 5, Path::new("data")).unwrap();
    let mut validated = 0;
    for k in 0..plain.data.num_clients() {
        let (p, s) = (plain.data.client(k).unwrap(), split.data.client(k).unwrap());
        let val = s.validation.expect("every client has a validation split");
        let n = p.train.len();
        let n_v = ((0.25 * n as f64).round() as usize).clamp(1, n - 1);
        assert_eq!(val.len(), n_v, "client {k}");
        assert_eq!(s.train.len() + val.len(), n, "client {k}");
        assert_eq!(split.data.train_len(k).unwrap(), s.train.len());
        // Train and validation together are the old training split; test is unchanged.
        let mut both = samples(s.train.as_ref());
        both.extend(samples(val.as_ref()));
        assert_eq!(
            sorted(both),
            sorted(samples(p.train.as_ref())),
            "client {k}"
        );
        assert_eq!(
            samples(s.test.as_ref()),
            samples(p.test.as_ref()),
            "client {k}"
        );
        let val = samples(val.as_ref());
        for x in samples(s.test.as_ref())
            .iter()
            .chain(&samples(s.train.as_ref()))
        {
            assert!(
                !val.contains(x),
                "client {k}: a validation sample elsewhere"
            );
        }
        validated += val.len();
    }
    assert!(validated > 0);
    // Same config and seed: the same split; fraction 0 is no split at all.
    let again = build(&synthetic(Some(0.25)), 5, Path::new("data")).unwrap();
    for k in 0..3 {
        let (a, b) = (split.data.client(k).unwrap(), again.data.client(k).unwrap());
        assert_eq!(
            samples(a.validation.unwrap().as_ref()),
            samples(b.validation.unwrap().as_ref())
        );
    }
    let zero = build(&synthetic(Some(0.0)), 5, Path::new("data")).unwrap();
    assert!(zero.data.client(0).unwrap().validation.is_none());
    assert_eq!(zero.description, plain.description);
}

#[test]
fn held_out_set_is_cut_into_disjoint_server_validation_and_test_sets() {
    let fixture = |p: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/npy")
            .join(p)
    };
    let cfg = |f: Option<f64>| {
        let mut npy = NpyConfig::new(fixture("pool.npz"));
        npy.test_path = Some(fixture("test.npz"));
        DataConfig::Npy(NpySourceConfig {
            npy: Some(npy),
            num_clients: Some(4),
            validation_fraction: f,
            test_split: TestSplit::Local,
            ..Default::default()
        })
    };
    let plain = build(&cfg(None), 3, Path::new("data")).unwrap();
    let split = build(&cfg(Some(0.25)), 3, Path::new("data")).unwrap();
    let held_out = samples(plain.global_test.unwrap().as_ref());
    let test = samples(split.global_test.unwrap().as_ref());
    let val = samples(split.global_validation.unwrap().as_ref());
    assert_eq!(held_out.len(), 12);
    assert_eq!(val.len(), 3, "round(0.25 × 12)");
    assert!(val.iter().all(|x| !test.contains(x)));
    let mut both = test;
    both.extend(val);
    assert_eq!(sorted(both), sorted(held_out));
}

#[test]
fn validation_fraction_out_of_range_is_refused_naming_the_key() {
    let err = build(&synthetic(Some(1.0)), 0, Path::new("data"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "data.validation_fraction = 1: must be in [0, 1)");
}
