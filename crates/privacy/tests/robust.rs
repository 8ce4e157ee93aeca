//! Robust aggregation: hand-derived cases, permutation invariance, single-client identity,
//! and Krum's choice under Byzantine outliers.

use fedpace_privacy::robust::{
    bulyan, krum, krum_scores, median, multi_krum, norm_bounded_mean, trimmed_mean,
};
use proptest::prelude::*;

fn column(values: &[f32]) -> Vec<Vec<f32>> {
    values.iter().map(|&v| vec![v]).collect()
}

#[test]
fn median_and_trimmed_mean_match_hand_derived_values() {
    assert_eq!(median(&column(&[1.0, 5.0, 3.0])).unwrap(), vec![3.0]);
    // Even count: mean of the two middle values.
    assert_eq!(median(&column(&[1.0, 2.0, 3.0, 10.0])).unwrap(), vec![2.5]);
    // β = 0.2, K = 5: drop ⌊1.0⌋ = 1 at each end → mean(2, 3, 4).
    assert_eq!(
        trimmed_mean(&column(&[100.0, 2.0, 1.0, 4.0, 3.0]), 0.2).unwrap(),
        vec![3.0]
    );
    // β = 0.2, K = 4: ⌊0.8⌋ = 0 dropped → plain mean.
    assert_eq!(
        trimmed_mean(&column(&[1.0, 2.0, 3.0, 10.0]), 0.2).unwrap(),
        vec![4.0]
    );
    assert!(trimmed_mean(&column(&[1.0]), 0.5).is_err());
}

#[test]
fn krum_and_multi_krum_match_hand_derived_values() {
    // 1-D points 0, 0.1, 0.2, 10, 11 with f = 1: k = max(1, 5 − 1 − 2) = 2 nearest.
    // Scores: 0 → 0.01 + 0.04, 0.1 → 0.01 + 0.01, 0.2 → 0.01 + 0.04, 10 → 1 + 96.04,
    // 11 → 1 + 116.64. Krum picks 0.1; Multi-Krum (m = 3) averages 0, 0.1, 0.2.
    let points = column(&[10.0, 0.2, 0.0, 11.0, 0.1]);
    let scores = krum_scores(&points, 1).unwrap();
    for (got, want) in scores.iter().zip([97.04, 0.05, 0.05, 117.64, 0.02]) {
        assert!((got - want).abs() < 1e-5, "{scores:?}");
    }
    assert_eq!(krum(&points, 1).unwrap(), 4);
    let (chosen, mean) = multi_krum(&points, &[1.0; 5], 1, 3).unwrap();
    assert_eq!(chosen[0], 4);
    assert_eq!(
        chosen[1..]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [1, 2].into()
    );
    assert!((mean[0] - 0.1).abs() < 1e-7);
    // Weighted as FedAvg: weights 1, 2, 1 on 0.1, 0.2, 0.0 → (0.1 + 0.4 + 0) / 4.
    let (_, mean) = multi_krum(&points, &[1.0, 2.0, 1.0, 1.0, 1.0], 1, 3).unwrap();
    assert!((mean[0] - 0.125).abs() < 1e-7);
}

#[test]
fn bulyan_matches_a_hand_derived_case_and_needs_4f_plus_3_clients() {
    // K = 7, f = 1: k = 4 nearest; scores 0 → 30, 1 → 15, 2 → 10, 3 → 15, 4 → 30,
    // 100 → 38030, −100 → 41214. θ = 5 selected: 0..4; β = 3 closest to the median 2:
    // {1, 2, 3} → 2.
    let points = column(&[100.0, 3.0, 0.0, -100.0, 4.0, 1.0, 2.0]);
    assert_eq!(bulyan(&points, 1).unwrap(), vec![2.0]);
    let e = bulyan(&points[..6], 1).unwrap_err().to_string();
    assert_eq!(
        e,
        "byzantine = 1: Bulyan needs at least 4f + 3 = 7 clients, got 6"
    );
}

#[test]
fn norm_bounding_clips_each_update_before_averaging() {
    let updates = vec![vec![3.0f32, 4.0], vec![0.0, 1.0]];
    let (mean, norms) = norm_bounded_mean(&updates, &[1.0, 1.0], 1.0).unwrap();
    assert_eq!(norms, vec![5.0, 1.0]);
    assert!(
        (mean[0] - 0.3).abs() < 1e-6 && (mean[1] - 0.9).abs() < 1e-6,
        "{mean:?}"
    );
}

#[test]
fn a_single_client_is_returned_unchanged() {
    let one = vec![vec![0.5f32, -2.0, 7.25]];
    assert_eq!(median(&one).unwrap(), one[0]);
    assert_eq!(trimmed_mean(&one, 0.4).unwrap(), one[0]);
    assert_eq!(krum(&one, 0).unwrap(), 0);
    assert_eq!(multi_krum(&one, &[3.0], 0, 1).unwrap().1, one[0]);
    assert_eq!(norm_bounded_mean(&one, &[1.0], 100.0).unwrap().0, one[0]);
    assert!(bulyan(&one, 0)
        .unwrap_err()
        .to_string()
        .contains("4f + 3 = 3"));
}

#[test]
fn bad_input_is_an_error_naming_the_client() {
    let e = median(&[vec![1.0f32, 2.0], vec![1.0]])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "update of client #1: length 1, expected 2");
    let e = krum(&[vec![1.0f32], vec![f32::INFINITY]], 0)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "update of client #1: value inf at index 0 is not finite");
    assert!(median(&Vec::<Vec<f32>>::new()).is_err());
}

/// Twelve honest clients near (1, 1, 1, 1) and f = 3 Byzantine ones: wherever the three are
/// placed — far away, sign-flipped and scaled, identical to each other, random — Krum picks
/// the same honest client, because an honest client's k = K − f − 2 = 10 nearest neighbours
/// are all honest.
#[test]
fn byzantine_outliers_cannot_move_krums_choice() {
    let mut rng = fedpace_privacy::SecureRng::simulated(8, 0);
    use rand::Rng;
    let honest: Vec<Vec<f32>> = (0..12)
        .map(|_| (0..4).map(|_| 1.0 + rng.gen_range(-0.1f32..0.1)).collect())
        .collect();
    let attacks: Vec<Vec<Vec<f32>>> = vec![
        vec![
            vec![100.0; 4],
            vec![-100.0; 4],
            vec![50.0, -50.0, 50.0, -50.0],
        ],
        honest[..3]
            .iter()
            .map(|h| h.iter().map(|v| -1e6 * v).collect())
            .collect(),
        vec![vec![30.0; 4]; 3],
        (0..3)
            .map(|_| (0..4).map(|_| rng.gen_range(-1e3f32..1e3)).collect())
            .collect(),
    ];
    let mut choices = Vec::new();
    for attack in attacks {
        let mut all = honest.clone();
        all.extend(attack);
        let chosen = krum(&all, 3).unwrap();
        assert!(chosen < 12, "Krum chose Byzantine client {chosen}");
        choices.push(chosen);
        // Multi-Krum keeping K − f selects exactly the honest clients.
        let (kept, _) = multi_krum(&all, &[1.0; 15], 3, 12).unwrap();
        assert!(kept.iter().all(|&i| i < 12), "{kept:?}");
        // Bulyan (15 = 4f + 3 clients) stays inside the honest clients' range.
        let b = bulyan(&all, 3).unwrap();
        assert!(b.iter().all(|v| (0.9..=1.1).contains(v)), "{b:?}");
    }
    assert!(
        choices.windows(2).all(|w| w[0] == w[1]),
        "choices moved: {choices:?}"
    );
}

fn updates_strategy() -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1usize..9, 1usize..6)
        .prop_flat_map(|(k, d)| prop::collection::vec(prop::collection::vec(-100f32..100.0, d), k))
}

proptest! {
    #[test]
    fn every_rule_is_invariant_to_the_order_of_the_clients(
        updates in updates_strategy(),
        seed in any::<u64>(),
    ) {
        let mut permuted = updates.clone();
        let mut rng = fedpace_privacy::SecureRng::simulated(seed, 0);
        use rand::seq::SliceRandom;
        permuted.shuffle(&mut rng);
        let k = updates.len();
        prop_assert_eq!(median(&updates).unwrap(), median(&permuted).unwrap());
        prop_assert_eq!(trimmed_mean(&updates, 0.2).unwrap(), trimmed_mean(&permuted, 0.2).unwrap());
        let f = k.saturating_sub(3) / 2;
        prop_assert_eq!(&updates[krum(&updates, f).unwrap()], &permuted[krum(&permuted, f).unwrap()]);
        let m = k.div_ceil(2);
        prop_assert_eq!(
            multi_krum(&updates, &vec![1.0; k], f, m).unwrap().1,
            multi_krum(&permuted, &vec![1.0; k], f, m).unwrap().1
        );
        prop_assert_eq!(
            norm_bounded_mean(&updates, &vec![1.0; k], 10.0).unwrap().0,
            norm_bounded_mean(&permuted, &vec![1.0; k], 10.0).unwrap().0
        );
        if k >= 3 {
            let fb = (k - 3) / 4;
            prop_assert_eq!(bulyan(&updates, fb).unwrap(), bulyan(&permuted, fb).unwrap());
        }
    }
}
