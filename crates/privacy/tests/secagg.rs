//! Secure aggregation: exact sums under dropouts, what the server can and cannot learn about
//! one client, aborts below the threshold, and serialisable messages.

use fedpace_privacy::secagg::crypto::{apply_mask, MaskSign};
use fedpace_privacy::secagg::messages::{ClientId, MaskedInput, UnmaskRequest, UnmaskShares};
use fedpace_privacy::secagg::shamir::{combine, Share};
use fedpace_privacy::secagg::{
    bench_secagg, simulate, Dropout, Quantization, SecAggClient, SecAggConfig, SecAggServer,
};
use fedpace_privacy::{Error, SecureRng};
use rand::Rng;
use std::collections::BTreeMap;

fn random_inputs(n: usize, dim: usize, levels: u64, seed: u64) -> Vec<(ClientId, Vec<u64>)> {
    let mut rng = SecureRng::simulated(seed, 999);
    // Non-contiguous ids, to catch any id/index confusion.
    (0..n)
        .map(|k| {
            (
                3 * k as u64 + 7,
                (0..dim).map(|_| rng.gen_range(0..=levels)).collect(),
            )
        })
        .collect()
}

fn plain_sum(inputs: &[(ClientId, Vec<u64>)], who: &[ClientId], modulus_bits: u32) -> Vec<u64> {
    let mut sum = vec![0u64; inputs[0].1.len()];
    for (id, x) in inputs {
        if who.contains(id) {
            for (s, v) in sum.iter_mut().zip(x) {
                *s += v;
            }
        }
    }
    assert!(
        sum.iter().all(|&s| s < 1 << modulus_bits),
        "test inputs must not wrap"
    );
    sum
}

/// Drops `fraction` of the clients, spread over all four stages.
fn dropouts(inputs: &[(ClientId, Vec<u64>)], fraction: f64) -> BTreeMap<ClientId, Dropout> {
    let count = (inputs.len() as f64 * fraction).round() as usize;
    let stages = [
        Dropout::BeforeMaskedInput,
        Dropout::BeforeKeys,
        Dropout::BeforeUnmask,
        Dropout::BeforeShares,
    ];
    inputs
        .iter()
        .rev()
        .take(count)
        .enumerate()
        .map(|(i, (id, _))| (*id, stages[i % stages.len()]))
        .collect()
}

#[test]
fn unmasked_sum_equals_the_plain_sum_with_0_10_and_30_percent_dropouts() {
    let quantization = Quantization {
        clipping_range: 1.0,
        levels: 1 << 20,
        modulus_bits: 32,
    };
    let cases = [
        (
            "SecAgg",
            20,
            SecAggConfig {
                quantization,
                ..SecAggConfig::complete(20)
            },
        ),
        (
            "SecAgg+",
            40,
            SecAggConfig {
                quantization,
                ..SecAggConfig::neighbourhoods(21)
            },
        ),
    ];
    for (name, n, config) in cases {
        let inputs = random_inputs(n, 500, quantization.levels, n as u64);
        for fraction in [0.0, 0.1, 0.3] {
            let drops = dropouts(&inputs, fraction);
            let session = simulate(&config, 5, &inputs, &drops, 11)
                .unwrap_or_else(|e| panic!("{name}, {fraction}: {e}"));
            let survivors = &session.result.survivors;
            let expected_in_sum: Vec<ClientId> = inputs
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| {
                    !matches!(
                        drops.get(id),
                        Some(
                            Dropout::BeforeKeys
                                | Dropout::BeforeShares
                                | Dropout::BeforeMaskedInput
                        )
                    )
                })
                .collect();
            assert_eq!(
                survivors, &expected_in_sum,
                "{name}, {fraction}: who is in the sum"
            );
            let want = plain_sum(&inputs, survivors, 32);
            assert_eq!(
                session.result.sum,
                want,
                "{name} with {:.0}% dropouts",
                fraction * 100.0
            );
        }
    }
}

/// A session driven by hand up to the unmask stage.
struct AtUnmask {
    server: SecAggServer,
    clients: BTreeMap<ClientId, SecAggClient>,
    requests: BTreeMap<ClientId, UnmaskRequest>,
    /// Every masked vector the server received.
    seen: BTreeMap<ClientId, Vec<u64>>,
}

/// Runs stages 0–2 by hand.
fn through_masked_input(
    config: &SecAggConfig,
    inputs: &[(ClientId, Vec<u64>)],
    seed: u64,
) -> AtUnmask {
    let ids: Vec<ClientId> = inputs.iter().map(|(id, _)| *id).collect();
    let dim = inputs[0].1.len();
    let (mut server, setups) =
        SecAggServer::new(1, config, dim, &ids, &mut SecureRng::simulated(seed, 0)).unwrap();
    let mut clients = BTreeMap::new();
    let mut keys = Vec::new();
    for setup in setups {
        let id = setup.client;
        let (c, k) = SecAggClient::new(setup, SecureRng::simulated(seed, id + 1)).unwrap();
        clients.insert(id, c);
        keys.push(k);
    }
    let dirs = server.receive_keys(keys).unwrap();
    let shares = dirs
        .into_iter()
        .map(|(id, d)| clients.get_mut(&id).unwrap().share_keys(d).unwrap())
        .collect();
    let forwarded = server.receive_shares(shares).unwrap();
    let input_of: BTreeMap<ClientId, &Vec<u64>> = inputs.iter().map(|(id, x)| (*id, x)).collect();
    let masked: Vec<MaskedInput> = forwarded
        .into_iter()
        .map(|(id, f)| {
            clients
                .get_mut(&id)
                .unwrap()
                .masked_input(f, input_of[&id])
                .unwrap()
        })
        .collect();
    let seen = masked
        .iter()
        .map(|m| (m.client, m.masked.clone()))
        .collect();
    let requests = server.receive_masked(masked).unwrap();
    AtUnmask {
        server,
        clients,
        requests,
        seen,
    }
}

/// χ² statistic of `values` (each < 2^bits) over 64 equal buckets.
fn chi_square_64(values: &[u64], bits: u32) -> f64 {
    let mut counts = [0usize; 64];
    for &v in values {
        counts[(v >> (bits - 6)) as usize] += 1;
    }
    let expected = values.len() as f64 / 64.0;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

fn correlation(x: &[u64], y: &[u64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (
        x.iter().sum::<u64>() as f64 / n,
        y.iter().sum::<u64>() as f64 / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64 - mx, b as f64 - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx * syy).sqrt()
}

/// χ² with 63 degrees of freedom exceeds 120 with probability ≈ 2e-5.
const CHI2_63_LIMIT: f64 = 120.0;

fn small_field_config(n: usize) -> SecAggConfig {
    SecAggConfig {
        quantization: Quantization {
            clipping_range: 1.0,
            levels: 1000,
            modulus_bits: 16,
        },
        ..SecAggConfig::complete(n)
    }
}

#[test]
fn a_masked_vector_is_uniform_and_uncorrelated_with_its_input() {
    let config = small_field_config(5);
    let dim = 64_000;
    let mut inputs = random_inputs(5, dim, 1000, 1);
    // Client 7: a constant vector at the top of the range, then a ramp.
    for input in [
        vec![1000u64; dim],
        (0..dim as u64).map(|i| i % 1001).collect::<Vec<_>>(),
    ] {
        inputs[0].1 = input.clone();
        let seen = through_masked_input(&config, &inputs, 2).seen;
        let y = &seen[&7];
        let chi2 = chi_square_64(y, 16);
        assert!(
            chi2 < CHI2_63_LIMIT,
            "masked vector not uniform: χ² = {chi2}"
        );
        if input.iter().any(|&v| v != input[0]) {
            let r = correlation(&input, y);
            assert!(
                r.abs() < 5.0 / (dim as f64).sqrt(),
                "masked vector correlates with the input: r = {r}"
            );
        }
        let equal = input.iter().zip(y).filter(|(a, b)| a == b).count();
        assert!(equal < 10, "{equal} coordinates of the input show through");
    }
}

#[test]
fn what_the_server_legitimately_collects_does_not_unmask_one_client() {
    let config = small_field_config(5);
    let dim = 64_000;
    let mut inputs = random_inputs(5, dim, 1000, 3);
    inputs[0].1 = (0..dim as u64).map(|i| i % 1001).collect();
    let AtUnmask {
        mut server,
        mut clients,
        requests,
        seen,
    } = through_masked_input(&config, &inputs, 4);
    let replies: Vec<UnmaskShares> = requests
        .into_iter()
        .map(|(id, r)| clients.get_mut(&id).unwrap().unmask(r).unwrap())
        .collect();
    // Everybody survived, so the server holds t shares of b_7 and none of s_7^SK.
    let b_shares: Vec<Share> = replies
        .iter()
        .flat_map(|r| {
            r.self_mask_shares
                .iter()
                .filter(|o| o.owner == 7)
                .map(|o| o.share.clone())
        })
        .collect();
    assert!(replies.iter().all(|r| r.mask_key_shares.is_empty()));
    let b7 = combine(&b_shares, config.threshold).unwrap();
    let mut stripped = seen[&7].clone();
    apply_mask(&mut stripped, &b7, 16, MaskSign::Subtract);
    for v in &mut stripped {
        *v &= 0xFFFF;
    }
    // y − PRG(b) = x + Σ pairwise masks: still uniform, still uncorrelated with x.
    let chi2 = chi_square_64(&stripped, 16);
    assert!(chi2 < CHI2_63_LIMIT, "χ² = {chi2}");
    assert!(correlation(&inputs[0].1, &stripped).abs() < 5.0 / (dim as f64).sqrt());
    // The round itself still completes and gives the exact sum.
    let all: Vec<ClientId> = inputs.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        server.receive_unmask(replies).unwrap().sum,
        plain_sum(&inputs, &all, 16)
    );
}

#[test]
fn a_server_that_splits_the_clients_cannot_collect_both_secrets_of_one_client() {
    // n = 5, t = 3. The server tells clients 10 and 13 that client 7 survived and clients
    // 16 and 19 that it dropped, hoping for t shares of both b_7 and s_7^SK.
    let config = small_field_config(5);
    let inputs = random_inputs(5, 100, 1000, 5);
    let AtUnmask {
        mut clients,
        requests,
        ..
    } = through_masked_input(&config, &inputs, 6);
    let mut b7 = Vec::new();
    let mut sk7 = Vec::new();
    for (id, honest) in requests {
        let lie = if [16, 19].contains(&id) {
            UnmaskRequest {
                survivors: honest
                    .survivors
                    .iter()
                    .copied()
                    .filter(|&v| v != 7)
                    .collect(),
                dropped: vec![7],
            }
        } else {
            honest
        };
        let reply = clients.get_mut(&id).unwrap().unmask(lie).unwrap();
        b7.extend(
            reply
                .self_mask_shares
                .iter()
                .filter(|o| o.owner == 7)
                .map(|o| o.share.clone()),
        );
        sk7.extend(
            reply
                .mask_key_shares
                .iter()
                .filter(|o| o.owner == 7)
                .map(|o| o.share.clone()),
        );
    }
    // 7 itself, 10 and 13 gave b-shares (3 = t); 16 and 19 gave key shares (2 < t).
    assert_eq!((b7.len(), sk7.len()), (3, 2));
    assert!(combine(&sk7, config.threshold).is_err());
    // Asking one client for both kinds at once is refused outright.
    let AtUnmask {
        mut clients,
        mut requests,
        ..
    } = through_masked_input(&config, &inputs, 6);
    let mut both = requests.remove(&10).unwrap();
    both.dropped.push(7);
    let e = clients
        .get_mut(&10)
        .unwrap()
        .unmask(both)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("client 7 is listed as both survivor and dropped"),
        "{e}"
    );
}

#[test]
fn fewer_survivors_than_the_threshold_abort_the_round_with_a_clear_error() {
    let config = SecAggConfig::complete(10); // t = 6
    let inputs = random_inputs(10, 50, 100, 7);
    let drops: BTreeMap<ClientId, Dropout> = inputs[..5]
        .iter()
        .map(|(id, _)| (*id, Dropout::BeforeMaskedInput))
        .collect();
    let e = simulate(&config, 1, &inputs, &drops, 1).unwrap_err();
    assert_eq!(
        e,
        Error::TooFewSurvivors {
            stage: "masked input",
            what: "survivors".into(),
            available: 5,
            threshold: 6
        }
    );
    assert_eq!(
        e.to_string(),
        "secure aggregation, masked input: 5 survivors left, the threshold is 6; round aborted"
    );
    // Enough masked inputs, too few answers to the unmask request.
    let drops: BTreeMap<ClientId, Dropout> = inputs[..5]
        .iter()
        .map(|(id, _)| (*id, Dropout::BeforeUnmask))
        .collect();
    let e = simulate(&config, 1, &inputs, &drops, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("secure aggregation, unmask: 5 shares of client"),
        "{e}"
    );
    // Too few clients to even share keys.
    let drops: BTreeMap<ClientId, Dropout> = inputs[..5]
        .iter()
        .map(|(id, _)| (*id, Dropout::BeforeKeys))
        .collect();
    let e = simulate(&config, 1, &inputs, &drops, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("secure aggregation, advertise keys: 5 live share holders of client"),
        "{e}"
    );
}

#[test]
fn tampered_shares_and_malformed_vectors_are_refused_and_their_senders_recovered_as_dropped() {
    let config = SecAggConfig::complete(6); // t = 4
    let inputs = random_inputs(6, 40, 100, 8);
    let ids: Vec<ClientId> = inputs.iter().map(|(id, _)| *id).collect();
    let (mut server, setups) =
        SecAggServer::new(2, &config, 40, &ids, &mut SecureRng::simulated(1, 0)).unwrap();
    let mut clients = BTreeMap::new();
    let mut keys = Vec::new();
    for s in setups {
        let id = s.client;
        let (c, k) = SecAggClient::new(s, SecureRng::simulated(1, id + 1)).unwrap();
        clients.insert(id, c);
        keys.push(k);
    }
    let shares = server
        .receive_keys(keys)
        .unwrap()
        .into_iter()
        .map(|(id, d)| clients.get_mut(&id).unwrap().share_keys(d).unwrap())
        .collect();
    let forwarded = server.receive_shares(shares).unwrap();
    let input_of: BTreeMap<ClientId, &Vec<u64>> = inputs.iter().map(|(id, x)| (*id, x)).collect();
    let mut masked = Vec::new();
    for (id, mut f) in forwarded {
        let client = clients.get_mut(&id).unwrap();
        if id == 7 {
            // One flipped bit in a ciphertext: client 7 refuses and drops out.
            f.shares[0].ciphertext[3] ^= 1;
            let e = client
                .masked_input(f, input_of[&id])
                .unwrap_err()
                .to_string();
            assert!(e.contains("fail authentication"), "{e}");
            continue;
        }
        masked.push(client.masked_input(f, input_of[&id]).unwrap());
    }
    // Client 10's vector arrives one element short: set aside, 10 treated as dropped.
    masked
        .iter_mut()
        .find(|m| m.client == 10)
        .unwrap()
        .masked
        .pop();
    let requests = server.receive_masked(masked).unwrap();
    assert_eq!(server.rejections().len(), 1);
    assert_eq!(server.rejections()[0].client, 10);
    assert!(
        server.rejections()[0]
            .reason
            .contains("length 39, expected 40"),
        "{:?}",
        server.rejections()
    );
    let replies = requests
        .into_iter()
        .map(|(id, r)| clients.get_mut(&id).unwrap().unmask(r).unwrap())
        .collect();
    let result = server.receive_unmask(replies).unwrap();
    let in_sum: Vec<ClientId> = ids.iter().copied().filter(|&v| v != 7 && v != 10).collect();
    assert_eq!(result.survivors, in_sum);
    assert_eq!(result.sum, plain_sum(&inputs, &in_sum, 32));
}

#[test]
fn every_message_survives_serde_and_the_protocol_runs_on_the_copies() {
    fn wire<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        m: T,
    ) -> T {
        let back: T = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        back
    }
    let config = SecAggConfig::neighbourhoods(5);
    let inputs = random_inputs(9, 30, 1000, 9);
    let ids: Vec<ClientId> = inputs.iter().map(|(id, _)| *id).collect();
    let (mut server, setups) =
        SecAggServer::new(3, &config, 30, &ids, &mut SecureRng::simulated(2, 0)).unwrap();
    let mut clients = BTreeMap::new();
    let mut keys = Vec::new();
    for s in setups {
        let s = wire(s);
        assert_eq!(
            s.neighbours.len(),
            4,
            "SecAgg+ with k = 5: four neighbours each"
        );
        let id = s.client;
        let (c, k) = SecAggClient::new(s, SecureRng::simulated(2, id + 1)).unwrap();
        clients.insert(id, c);
        keys.push(wire(k));
    }
    let shares = server
        .receive_keys(keys)
        .unwrap()
        .into_iter()
        .map(|(id, d)| wire(clients.get_mut(&id).unwrap().share_keys(wire(d)).unwrap()))
        .collect();
    let input_of: BTreeMap<ClientId, &Vec<u64>> = inputs.iter().map(|(id, x)| (*id, x)).collect();
    let masked = server
        .receive_shares(shares)
        .unwrap()
        .into_iter()
        .map(|(id, f)| {
            wire(
                clients
                    .get_mut(&id)
                    .unwrap()
                    .masked_input(wire(f), input_of[&id])
                    .unwrap(),
            )
        })
        .collect();
    let replies = server
        .receive_masked(masked)
        .unwrap()
        .into_iter()
        .map(|(id, r)| wire(clients.get_mut(&id).unwrap().unmask(wire(r)).unwrap()))
        .collect();
    assert_eq!(
        server.receive_unmask(replies).unwrap().sum,
        plain_sum(&inputs, &ids, 32)
    );
}

#[test]
fn the_same_seeds_give_the_same_session_and_other_seeds_other_masks() {
    let config = SecAggConfig::neighbourhoods(7);
    let inputs = random_inputs(15, 200, 1000, 10);
    let drops = dropouts(&inputs, 0.2);
    let a = simulate(&config, 4, &inputs, &drops, 21).unwrap();
    let b = simulate(&config, 4, &inputs, &drops, 21).unwrap();
    assert_eq!((a.result, a.traffic), (b.result.clone(), b.traffic));
    let c = simulate(&config, 4, &inputs, &drops, 22).unwrap();
    assert_eq!(c.result, b.result, "the sum does not depend on the masks");
    let seen_a = through_masked_input(&config, &inputs[..7], 1).seen;
    let seen_b = through_masked_input(&config, &inputs[..7], 1).seen;
    let seen_c = through_masked_input(&config, &inputs[..7], 2).seen;
    assert_eq!(seen_a, seen_b);
    assert_ne!(seen_a, seen_c);
}

#[test]
fn float_updates_aggregate_to_the_plain_sum_within_quantisation_error() {
    let clients = 12;
    let b = bench_secagg(clients, 2_000, Some(5), 2, 3).unwrap();
    let q = Quantization::default();
    // Each survivor's stochastic rounding errs by < one step 2c/L.
    let bound = (clients - 2) as f64 * 2.0 * q.clipping_range as f64 / q.levels as f64;
    assert!(
        b.max_abs_error < bound + 1e-5,
        "error {} > {bound}",
        b.max_abs_error
    );
    assert!(b.secagg_upload_bytes_per_client > 0.0 && b.upload_expansion() > 0.5);
}

#[test]
fn invalid_configurations_are_rejected_with_the_field_named() {
    let e = SecAggConfig {
        threshold: 2,
        ..SecAggConfig::complete(5)
    }
    .validate(5)
    .unwrap_err()
    .to_string();
    assert_eq!(e, "threshold = 2: must satisfy k/2 < t ≤ k with k = 5");
    let e = SecAggConfig::neighbourhoods(4)
        .validate(10)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "num_shares = 4: must be odd and ≥ 3 when below the cohort size 10"
    );
    assert!(SecAggConfig::complete(1).validate(1).is_err());
    let e = SecAggServer::new(
        0,
        &SecAggConfig::complete(3),
        4,
        &[1, 2, 1],
        &mut SecureRng::simulated(0, 0),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "participants = 1: client id listed twice");
    let e = serde_json::from_str::<SecAggConfig>(r#"{"threshold": 3, "treshold": 4}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `treshold`"), "{e}");
}
