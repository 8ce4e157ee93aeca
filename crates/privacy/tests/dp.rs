//! DP-FedAvg building blocks: clipping bound, adaptive clipping, noise statistics,
//! determinism, and the sensitivity of the rate-normalised, clipped, fixed-denominator sum.

use fedpace_privacy::dp::{
    add_gaussian_noise, central_noise_std, clip_to_norm, distributed_noise_std,
    fixed_denominator_mean, normalise_then_clip, AdaptiveClip, AdaptiveClipConfig,
};
use fedpace_privacy::SecureRng;
use proptest::prelude::*;
use rand::Rng;

fn norm(x: &[f32]) -> f64 {
    fedpace_params::l2_norm(x)
}

proptest! {
    #[test]
    fn clipped_norm_never_exceeds_the_bound(
        x in prop::collection::vec(-1e6f32..1e6, 1..300),
        c in 1e-4f64..1e4,
    ) {
        let mut y = x.clone();
        let r = clip_to_norm(&mut y, c).unwrap();
        prop_assert!(norm(&y) <= c, "‖y‖ = {} > C = {}", norm(&y), c);
        prop_assert!((r.norm_before - norm(&x)).abs() <= 1e-12 * r.norm_before);
        if !r.clipped() {
            prop_assert_eq!(y, x);
        } else {
            // Direction kept, norm at the bound (to f32 precision).
            prop_assert!((norm(&y) - c).abs() <= 1e-5 * c);
        }
    }

    #[test]
    fn normalised_clipped_norm_is_bounded_for_any_rate(
        x in prop::collection::vec(-1e3f32..1e3, 1..100),
        rate in 1e-3f64..1e3,
        c in 1e-3f64..10.0,
    ) {
        let mut y = x.clone();
        normalise_then_clip(&mut y, rate, c).unwrap();
        prop_assert!(norm(&y) <= c);
    }
}

/// One round of the DP aggregate before noise: Σ_k w_k · clip(Δ_k / Λ_k) / (qW).
fn dp_sum(clients: &[(Vec<f32>, f64, f64)], clip: f64, expected_weight: f64) -> Vec<f32> {
    let dim = clients[0].0.len();
    let mut sum = vec![0.0f32; dim];
    for (delta, rate, weight) in clients {
        let mut d = delta.clone();
        normalise_then_clip(&mut d, *rate, clip).unwrap();
        fedpace_params::axpy(*weight as f32, &d, &mut sum);
    }
    fixed_denominator_mean(&mut sum, expected_weight).unwrap();
    sum
}

/// Sensitivity bound of docs/privacy.md ("Rates and DP"): adding or removing any one client
/// — whatever its rate (¼×, 1×, 4×, 100×) and however large its update — moves the
/// pre-noise aggregate by at most w·C/(qW) ≤ C/(qW). Clipping *before* normalising would
/// not bound it: the slow client's contribution C/Λ grows without limit.
#[test]
fn rate_normalised_clipping_bounds_each_clients_sensitivity_whatever_its_rate() {
    let mut rng = SecureRng::simulated(14, 0);
    let (clip, expected_weight, dim) = (0.5, 8.0, 50);
    let base_rate = 0.1 * 20.0; // η = 0.1 over 20 steps
    let mut cohort: Vec<(Vec<f32>, f64, f64)> = (0..10)
        .map(|k| {
            let rate = base_rate * [0.25, 1.0, 4.0][k % 3];
            let delta: Vec<f32> = (0..dim)
                .map(|_| rng.gen_range(-1.0..1.0) * rate as f32)
                .collect();
            (delta, rate, 1.0)
        })
        .collect();
    let without = dp_sum(&cohort, clip, expected_weight);
    for (rate_factor, magnitude) in [
        (0.25, 1.0),
        (4.0, 1.0),
        (4.0, 1e4),
        (100.0, 1e6),
        (1e-3, 1e-3),
    ] {
        let rate = base_rate * rate_factor;
        let delta: Vec<f32> = (0..dim)
            .map(|_| rng.gen_range(-1.0f32..1.0) * magnitude)
            .collect();
        cohort.push((delta.clone(), rate, 1.0));
        let with = dp_sum(&cohort, clip, expected_weight);
        cohort.pop();
        let diff: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
        let bound = clip / expected_weight;
        assert!(
            norm(&diff) <= bound * (1.0 + 1e-5),
            "rate ×{rate_factor}, |Δ| ~ {magnitude}: moved the aggregate by {} > C/(qW) = {bound}",
            norm(&diff)
        );

        // The other order, clip then normalise, has sensitivity C/Λ_k instead.
        let mut wrong = delta;
        clip_to_norm(&mut wrong, clip).unwrap();
        let moved = norm(&wrong) / rate / expected_weight;
        if rate < 1.0 {
            assert!(
                moved > bound,
                "clip-then-normalise should exceed the bound for Λ = {rate}"
            );
        }
    }
}

#[test]
fn per_group_normalisation_divides_each_group_by_its_rate_sum_before_the_clip() {
    let spec = fedpace_params::ParamSpec::builder()
        .add("w", &[2], "body")
        .add("h", &[1], "head")
        .add("b", &[1], "body")
        .build()
        .unwrap();
    let mut x = vec![2.0f32, 4.0, 3.0, 6.0];
    let r =
        fedpace_privacy::dp::normalise_groups_then_clip(&mut x, &spec, &[2.0, 0.5], 100.0).unwrap();
    assert_eq!(x, vec![1.0, 2.0, 6.0, 3.0]);
    assert!((r.norm_before - 50f64.sqrt()).abs() < 1e-12);
    let mut x = vec![2.0f32, 4.0, 3.0, 6.0];
    fedpace_privacy::dp::normalise_groups_then_clip(&mut x, &spec, &[2.0, 0.5], 1.0).unwrap();
    assert!(norm(&x) <= 1.0);
    let e = fedpace_privacy::dp::normalise_groups_then_clip(&mut x, &spec, &[2.0, 0.0], 1.0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "rate_sum = 0: group \"head\" needs a finite Σ of rates > 0"
    );
}

#[test]
fn adaptive_clip_converges_to_the_target_quantile_of_a_known_distribution() {
    // Update norms ~ Uniform(0, 10): the median is 5, the 0.8-quantile 8.
    for (quantile, want) in [(0.5, 5.0), (0.8, 8.0)] {
        let mut clip = AdaptiveClip::new(AdaptiveClipConfig {
            target_quantile: quantile,
            ..Default::default()
        })
        .unwrap();
        let mut rng = SecureRng::simulated(3, quantile.to_bits());
        let m = 100usize;
        let mut tail = Vec::new();
        for round in 0..600 {
            let c = clip.clip();
            let within = (0..m).filter(|_| rng.gen_range(0.0..10.0) <= c).count();
            clip.observe(within, m as f64, &mut rng).unwrap();
            if round >= 400 {
                tail.push(clip.clip());
            }
        }
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        assert!(
            (mean - want).abs() < 0.05 * want,
            "γ = {quantile}: C settled at {mean}, want {want}"
        );
    }
}

fn mean_and_variance(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

#[test]
fn gaussian_noise_has_the_requested_mean_and_variance() {
    let n = 200_000;
    for std in [0.01, 1.0, 37.5] {
        let mut x = vec![0.0f32; n];
        add_gaussian_noise(&mut x, std, &mut SecureRng::simulated(1, 2)).unwrap();
        let (mean, var) = mean_and_variance(&x);
        // 5-sigma bounds: sd(mean) = σ/√n, sd(variance) ≈ σ²·√(2/n).
        assert!(
            mean.abs() < 5.0 * std / (n as f64).sqrt(),
            "σ = {std}: mean {mean}"
        );
        let var_tol = 5.0 * std * std * (2.0 / n as f64).sqrt();
        assert!(
            (var - std * std).abs() < var_tol,
            "σ = {std}: variance {var}"
        );
        // Fourth moment of a Gaussian: kurtosis 3 (catches a uniform or Laplace stand-in).
        let kurt =
            x.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!((kurt - 3.0).abs() < 0.1, "σ = {std}: kurtosis {kurt}");
    }
}

#[test]
fn distributed_noise_shares_sum_to_the_central_noise() {
    let (z, c, clients, dim) = (1.1, 0.7, 25, 40_000);
    let share_std = distributed_noise_std(z, c, clients).unwrap();
    let mut sum = vec![0.0f32; dim];
    for k in 0..clients {
        let mut share = vec![0.0f32; dim];
        add_gaussian_noise(
            &mut share,
            share_std,
            &mut SecureRng::simulated(9, k as u64),
        )
        .unwrap();
        fedpace_params::axpy(1.0, &share, &mut sum);
    }
    let (mean, var) = mean_and_variance(&sum);
    let want = (z * c) * (z * c);
    assert!(mean.abs() < 5.0 * (want / dim as f64).sqrt());
    assert!(
        (var - want).abs() < 5.0 * want * (2.0 / dim as f64).sqrt(),
        "var {var}, want {want}"
    );
    // After the fixed-denominator mean, that is the central mechanism's std z·C/(qW).
    assert!((central_noise_std(z, c, 10.0).unwrap() - z * c / 10.0).abs() < 1e-15);
}

#[test]
fn noise_is_deterministic_under_a_simulation_seed_only() {
    let draw = |rng: &mut SecureRng| {
        let mut x = vec![0.0f32; 64];
        add_gaussian_noise(&mut x, 1.0, rng).unwrap();
        x
    };
    assert_eq!(
        draw(&mut SecureRng::simulated(5, 1)),
        draw(&mut SecureRng::simulated(5, 1))
    );
    assert_ne!(
        draw(&mut SecureRng::simulated(5, 1)),
        draw(&mut SecureRng::simulated(5, 2))
    );
    let mut os = SecureRng::from_os_entropy().unwrap();
    let mut os2 = SecureRng::from_os_entropy().unwrap();
    assert_ne!(draw(&mut os), draw(&mut os2));
}

#[test]
fn adaptive_clip_state_round_trips_through_serde() {
    let mut a = AdaptiveClip::new(AdaptiveClipConfig::default()).unwrap();
    a.observe(3, 10.0, &mut SecureRng::simulated(0, 0)).unwrap();
    let back: AdaptiveClip = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back.config(), a.config());
    // serde_json's default float parser may differ in the last ulp.
    assert!((back.clip() - a.clip()).abs() <= 1e-15 * a.clip());
}
