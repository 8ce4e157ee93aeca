//! Server optimisers against an independent NumPy re-derivation of Flower 1.42's rules
//! (docs/algorithms.md App. F) and of the paper rules (Reddi et al. 2021), over 8 rounds.
//! Script: `golden/flower_server.py`; output `golden/flower_server.json` is committed.

use fedpace_optim::server::fedavgm;
use fedpace_optim::{FedOptConfig, ServerOptimizer, ServerRule};
use fedpace_params::ParamSpec;
use serde_json::Value;

/// Relative tolerance; values are O(0.1–1), and the denominator is floored at 0.01 for
/// the few that pass near zero (Flower's FedAdam runs in float64 after round 1, we in f32).
const REL: f64 = 1e-5;
const FLOOR: f64 = 0.01;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn build(case: &Value) -> ServerOptimizer {
    let hp = &case["hyper"];
    let f = |k: &str| hp[k].as_f64().unwrap();
    if case["kind"] == "avgm" {
        return fedavgm(f("server_lr"), f("momentum"));
    }
    let rule = match case["rule"].as_str().unwrap() {
        "flower" => ServerRule::Flower,
        _ => ServerRule::Paper,
    };
    let cfg = FedOptConfig {
        server_lr: f("server_lr"),
        beta1: f("beta1"),
        beta2: f("beta2"),
        tau: f("tau"),
        rule,
    };
    match case["kind"].as_str().unwrap() {
        "adagrad" => cfg.fedadagrad(),
        "adam" => cfg.fedadam(),
        "yogi" => cfg.fedyogi(),
        k => panic!("unknown kind {k}"),
    }
    .unwrap()
}

#[test]
fn matches_flower_and_paper_rederivation() {
    let doc: Value = serde_json::from_str(include_str!("golden/flower_server.json")).unwrap();
    let spec = ParamSpec::builder()
        .add("w", &[2, 3], "body")
        .add("b", &[4], "head")
        .build()
        .unwrap();
    let x0 = floats(&doc["x0"]);
    let deltas: Vec<Vec<f32>> = doc["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let opt = build(case);
        let mut state = opt.init(&spec);
        let mut x = x0.clone();
        let mut worst = 0.0f64;
        for (t, (d, want)) in deltas
            .iter()
            .zip(case["params"].as_array().unwrap())
            .enumerate()
        {
            let round = t as u64 + 1;
            opt.step(&mut x, d, &mut state, &spec, round).unwrap();
            for (i, (&got, want)) in x.iter().zip(want.as_array().unwrap()).enumerate() {
                let want = want.as_f64().unwrap();
                let err = (got as f64 - want).abs() / want.abs().max(FLOOR);
                worst = worst.max(err);
                assert!(
                    err <= REL,
                    "{name}: round {round}, value {i}: got {got}, reference {want} (rel {err:.2e})"
                );
            }
        }
        eprintln!("{name}: worst relative error {worst:.2e}");
    }
}

#[test]
fn flower_and_paper_rules_differ_where_the_appendix_says() {
    // Same hyper-parameters, one round: Flower's FedAdam step is scaled by
    // √(1−β2²)/(1−β1²) ≈ 0.7427 (round 1 uses power 2) and v₀ = 0; the paper's is not.
    let spec = ParamSpec::builder().add("w", &[1], "body").build().unwrap();
    let paper = FedOptConfig::default().fedadam().unwrap();
    let flower = FedOptConfig::flower().fedadam().unwrap();
    let (mut xp, mut xf) = (vec![0.0f32], vec![0.0f32]);
    let (mut sp, mut sf) = (paper.init(&spec), flower.init(&spec));
    paper.step(&mut xp, &[1.0], &mut sp, &spec, 1).unwrap();
    flower.step(&mut xf, &[1.0], &mut sf, &spec, 1).unwrap();
    let m = 0.1f64; // (1 − β1)·Δ
    let v = 0.01f64; // (1 − β2)·Δ²
    let paper_expected = 0.1 * m / ((v + 1e-6f64).sqrt() + 1e-3);
    let flower_expected =
        0.1 * (1.0 - 0.99f64.powi(2)).sqrt() / (1.0 - 0.9f64.powi(2)) * m / (v.sqrt() + 1e-3);
    assert!((xp[0] as f64 - paper_expected).abs() < 1e-6, "{}", xp[0]);
    assert!((xf[0] as f64 - flower_expected).abs() < 1e-6, "{}", xf[0]);
}
