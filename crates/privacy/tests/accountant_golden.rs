//! The RDP accountant against Google's dp_accounting: two values from that library's own
//! tests, and the points in golden/rdp_reference.json, computed with dp_accounting 0.6.0 by
//! golden/rdp_reference.py (the script says how to regenerate them).

use fedpace_privacy::accountant::{
    delta_from_rdp, epsilon_for, epsilon_from_rdp, noise_multiplier_for_epsilon,
    rdp_sampled_gaussian,
};
use serde::Deserialize;

const REL_TOL: f64 = 1e-6;

fn rel_err(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs()
    }
}

#[derive(Deserialize)]
struct Reference {
    generator: String,
    rdp_points: Vec<RdpPoint>,
    epsilon_points: Vec<EpsilonPoint>,
    calibration_points: Vec<CalibrationPoint>,
}

#[derive(Deserialize)]
struct RdpPoint {
    q: f64,
    sigma: f64,
    order: f64,
    /// A number, or the string "inf" (JSON has no infinity).
    rdp: serde_json::Value,
}

#[derive(Deserialize)]
struct EpsilonPoint {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    epsilon: f64,
    order: f64,
}

#[derive(Deserialize)]
struct CalibrationPoint {
    q: f64,
    steps: u64,
    epsilon: f64,
    delta: f64,
    noise_multiplier: f64,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/rdp_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{path}: {e}; regenerate it with tests/golden/rdp_reference.py")
    });
    let r: Reference = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        r.generator.starts_with("dp_accounting"),
        "{path}: generator {}",
        r.generator
    );
    r
}

fn parse_rdp(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::String(s) if s == "inf" => f64::INFINITY,
        other => other.as_f64().expect("rdp is a number or Infinity"),
    }
}

/// dp_accounting's `test_compute_epsilon_delta_pure_dp`: orders 2..32, RDP 1.1 at every
/// order, δ = 1e-5 → ε = 1.32783806176 at order 32 (and back: δ at that ε is 1e-5).
#[test]
fn constant_rdp_matches_dp_accounting_own_test() {
    let orders: Vec<f64> = (2..33).map(f64::from).collect();
    let rdp = vec![1.1; orders.len()];
    let e = epsilon_from_rdp(&orders, &rdp, 1e-5).unwrap();
    assert!(
        rel_err(e.epsilon, 1.32783806176) < REL_TOL,
        "ε = {}",
        e.epsilon
    );
    assert_eq!(e.order, 32.0);
    let (delta, order) = delta_from_rdp(&orders, &rdp, 1.32783806176).unwrap();
    assert!(rel_err(delta, 1e-5) < REL_TOL, "δ = {delta}");
    assert_eq!(order, 32.0);
}

/// dp_accounting's `test_compute_epsilon_delta_gaussian`: q = 1, σ = 4.530877117, orders
/// 1.000, 1.001, …, 99.999 → exactly (1, 1e-6)-DP.
#[test]
fn full_batch_gaussian_matches_dp_accounting_own_test() {
    let orders: Vec<f64> = (1000..100_000).map(|i| 0.001 * i as f64).collect();
    let rdp: Vec<f64> = orders
        .iter()
        .map(|&a| rdp_sampled_gaussian(1.0, 4.530877117, a).unwrap())
        .collect();
    let e = epsilon_from_rdp(&orders, &rdp, 1e-6).unwrap();
    assert!(rel_err(e.epsilon, 1.0) < REL_TOL, "ε = {}", e.epsilon);
    let (delta, _) = delta_from_rdp(&orders, &rdp, 1.0).unwrap();
    assert!(rel_err(delta, 1e-6) < REL_TOL, "δ = {delta}");
}

#[test]
fn single_step_rdp_matches_dp_accounting_at_integer_and_fractional_orders() {
    for p in reference().rdp_points {
        let want = parse_rdp(&p.rdp);
        let got = rdp_sampled_gaussian(p.q, p.sigma, p.order).unwrap();
        if want.is_infinite() {
            assert!(
                got.is_infinite(),
                "q={} σ={} α={}: {got}, dp_accounting ∞",
                p.q,
                p.sigma,
                p.order
            );
        } else {
            let err = rel_err(got, want);
            assert!(
                err < REL_TOL,
                "q={} σ={} α={}: {got} vs {want} (rel {err:e})",
                p.q,
                p.sigma,
                p.order
            );
        }
    }
}

#[test]
fn epsilon_over_default_orders_matches_dp_accounting() {
    let points = reference().epsilon_points;
    assert!(points.len() >= 10);
    for p in points {
        let got = epsilon_for(p.q, p.sigma, p.steps, p.delta).unwrap();
        let err = rel_err(got.epsilon, p.epsilon);
        assert!(
            err < REL_TOL,
            "q={} σ={} T={} δ={}: ε {} vs {} (rel {err:e})",
            p.q,
            p.sigma,
            p.steps,
            p.delta,
            got.epsilon,
            p.epsilon
        );
        assert_eq!(
            got.order, p.order,
            "optimal order for q={} σ={}",
            p.q, p.sigma
        );
    }
}

#[test]
fn noise_multiplier_for_target_epsilon_matches_dp_accounting_calibration() {
    for p in reference().calibration_points {
        let got = noise_multiplier_for_epsilon(p.q, p.steps, p.epsilon, p.delta).unwrap();
        let err = rel_err(got, p.noise_multiplier);
        assert!(
            err < REL_TOL,
            "q={} T={} ε={}: σ {got} vs {} (rel {err:e})",
            p.q,
            p.steps,
            p.epsilon,
            p.noise_multiplier
        );
        assert!(epsilon_for(p.q, got, p.steps, p.delta).unwrap().epsilon <= p.epsilon);
    }
}

/// Prints the comparison table of docs/privacy.md: `cargo test -p fedpace-privacy --release
/// --test accountant_golden -- --ignored --nocapture print_table`.
#[test]
#[ignore = "prints a table for the docs; asserts nothing"]
fn print_table() {
    println!("| q | σ | T | δ | ε ours | ε dp_accounting | rel. error | order |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in reference().epsilon_points {
        let got = epsilon_for(p.q, p.sigma, p.steps, p.delta).unwrap();
        println!(
            "| {:.6} | {} | {} | {:e} | {:.10} | {:.10} | {:.1e} | {} |",
            p.q,
            p.sigma,
            p.steps,
            p.delta,
            got.epsilon,
            p.epsilon,
            rel_err(got.epsilon, p.epsilon),
            got.order
        );
    }
}
