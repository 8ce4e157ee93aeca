//! Compression: QSGD is unbiased and costs the stated bytes; top-k with error feedback
//! loses nothing over rounds.

use fedpace_privacy::compress::{
    dense_bytes, qsgd_encode, top_k, EncodedSize, ErrorFeedback, QsgdConfig,
};
use fedpace_privacy::SecureRng;
use rand::Rng;

fn sample_update(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SecureRng::simulated(seed, 0);
    (0..len)
        .map(|i| rng.gen_range(-1.0f32..1.0) * (1.0 + (i % 7) as f32))
        .collect()
}

#[test]
fn qsgd_is_unbiased_over_many_draws() {
    let x = sample_update(600, 1); // two buckets, the second partial
    for config in [QsgdConfig::eight_bit(), QsgdConfig::four_bit()] {
        let draws = 4000;
        let mut rng = SecureRng::simulated(2, config.bits as u64);
        let mut mean = vec![0.0f64; x.len()];
        let mut max_var = 0.0f64;
        let mut sq = vec![0.0f64; x.len()];
        for _ in 0..draws {
            for (i, v) in qsgd_encode(&x, config, &mut rng)
                .unwrap()
                .decode()
                .iter()
                .enumerate()
            {
                mean[i] += *v as f64;
                sq[i] += (*v as f64).powi(2);
            }
        }
        for i in 0..x.len() {
            mean[i] /= draws as f64;
            let var = sq[i] / draws as f64 - mean[i] * mean[i];
            max_var = max_var.max(var);
            // 5 standard errors of the mean, from the observed per-draw variance.
            let tol = 5.0 * (var / draws as f64).sqrt() + 1e-6;
            assert!(
                (mean[i] - x[i] as f64).abs() <= tol,
                "{}-bit, coordinate {i}: mean {} vs {} (tol {tol})",
                config.bits,
                mean[i],
                x[i]
            );
        }
        // Each coordinate errs by at most one level, ‖bucket‖/s, so the variance is ≤ (‖b‖/s)²/4.
        let bucket_norm = fedpace_params::l2_norm(&x[..512]);
        let bound = (bucket_norm / config.levels() as f64).powi(2) / 4.0;
        assert!(
            max_var <= bound * 1.01,
            "{}-bit: variance {max_var} > {bound}",
            config.bits
        );
    }
}

#[test]
fn qsgd_costs_one_byte_or_half_a_byte_per_parameter_plus_a_norm_per_bucket() {
    let x = sample_update(100_000, 3);
    let mut rng = SecureRng::simulated(4, 0);
    let eight = qsgd_encode(&x, QsgdConfig::eight_bit(), &mut rng).unwrap();
    let four = qsgd_encode(&x, QsgdConfig::four_bit(), &mut rng).unwrap();
    let buckets = 100_000usize.div_ceil(512);
    assert_eq!(eight.encoded_bytes(), 9 + 4 * buckets + 100_000);
    assert_eq!(four.encoded_bytes(), 9 + 4 * buckets + 50_000);
    let per_param = |b: usize| b as f64 / 100_000.0;
    assert!((per_param(eight.encoded_bytes()) - 1.0).abs() < 0.01);
    assert!((per_param(four.encoded_bytes()) - 0.5).abs() < 0.01);
    assert_eq!(dense_bytes(100_000), 400_000);
    // Every decoded value is one of the bucket's levels, with the input's sign.
    for (d, v) in four.decode().iter().zip(&x) {
        assert!(*d == 0.0 || d.signum() == v.signum());
    }
    // Encoded updates round-trip through serde.
    let back: fedpace_privacy::compress::QsgdUpdate =
        serde_json::from_str(&serde_json::to_string(&four).unwrap()).unwrap();
    assert_eq!(back.decode(), four.decode());
}

#[test]
fn qsgd_rejects_bad_configs_and_handles_zero_vectors() {
    let mut rng = SecureRng::simulated(0, 0);
    let e = qsgd_encode(
        &[1.0],
        QsgdConfig {
            bits: 5,
            bucket_size: 8,
        },
        &mut rng,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "bits = 5: must be 8 or 4");
    assert_eq!(
        qsgd_encode(&[0.0; 10], QsgdConfig::four_bit(), &mut rng)
            .unwrap()
            .decode(),
        vec![0.0; 10]
    );
}

#[test]
fn top_k_with_error_feedback_loses_nothing_over_rounds() {
    let len = 1000;
    let k = 37;
    let mut state = ErrorFeedback::default();
    let mut sent = vec![0.0f64; len];
    let mut total = vec![0.0f64; len];
    for round in 0..50 {
        let u = sample_update(len, 100 + round);
        for (t, v) in total.iter_mut().zip(&u) {
            *t += *v as f64;
        }
        let s = top_k(&u, k, &mut state).unwrap();
        assert_eq!(s.indices().len(), k);
        assert_eq!(s.encoded_bytes(), 8 + 8 * k);
        for (acc, v) in sent.iter_mut().zip(s.decode()) {
            *acc += v as f64;
        }
        // Invariant: what was sent plus what is held back equals what was produced.
        for i in 0..len {
            let err = (sent[i] + state.residual()[i] as f64 - total[i]).abs();
            assert!(
                err < 1e-4 * (1.0 + total[i].abs()),
                "round {round}, coordinate {i}: {err}"
            );
        }
    }
    // The state survives serialisation (a client restart between rounds).
    let back: ErrorFeedback =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back.residual().len(), len);
}

#[test]
fn top_k_sends_the_largest_magnitudes_including_what_was_held_back() {
    let mut state = ErrorFeedback::default();
    let s = top_k(&[0.1, -5.0, 3.0, 0.2], 2, &mut state).unwrap();
    assert_eq!(
        (s.indices(), s.values()),
        (&[1u32, 2][..], &[-5.0f32, 3.0][..])
    );
    assert_eq!(state.residual(), &[0.1, 0.0, 0.0, 0.2]);
    // Next round the held-back 0.2 + 0.2 = 0.4 beats a fresh 0.3; ties go to the lower index.
    let s = top_k(&[0.0, 0.3, 0.0, 0.2], 1, &mut state).unwrap();
    assert_eq!(s.indices(), &[3]);
    let s = top_k(&[1.0, 1.0, 1.0, 1.0], 4, &mut ErrorFeedback::default()).unwrap();
    assert_eq!(s.decode(), vec![1.0; 4], "k = len is the identity");
    let e = top_k(&[1.0, 2.0], 3, &mut ErrorFeedback::default())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "k = 3: must be in 1..=2");
    let e = top_k(&[1.0, 2.0, 3.0], 1, &mut state)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "error-feedback residual: length 4, expected 3");
}
