//! Issue 14 through the experiment file (docs/privacy.md, "Configuration"): the stage
//! tables are checked before anything runs, with one-line errors naming the key; a DP
//! run reports ε per round from the accountant, equal to `fedpace privacy`'s budget;
//! compression and secure aggregation report their bytes; `[attack]` reaches the clients.

use fedpace_experiment::budget::budget;
use fedpace_experiment::{Experiment, RunOptions};
use fedpace_privacy::accountant::epsilon_for;

/// Synthetic(1,1), 30 clients, logistic regression: a run takes well under a second.
const BASE: &str = r#"
name = "privacy-test"
seed = 3
rounds = 4
[data]
source = "synthetic"
alpha = 1.0
beta = 1.0
num_clients = 30
[model]
name = "logistic-regression"
[client]
lr = 0.01
batch_size = 10
epochs = 1
[strategy]
name = "fedavg"
clients_per_round = 10
[policy]
name = "constant"
[eval]
every = 4
"#;

fn exp(extra: &str, overrides: &[&str]) -> fedpace_experiment::Result<Experiment> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Experiment::from_toml_str(&format!("{BASE}{extra}"), "test.toml", &o)
}

#[track_caller]
fn err(extra: &str, overrides: &[&str]) -> String {
    let e = exp(extra, overrides).expect_err("refused").to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

const DP: &str = "[privacy]\nclip = 0.5\nnoise_multiplier = 1.0\n";

#[test]
fn stage_tables_are_refused_in_one_line_naming_the_key() {
    assert!(exp(DP, &[]).is_ok());
    let e = err(DP, &["privacy.clip=-1"]);
    assert!(e.contains("privacy.clip = -1"), "{e}");
    let e = err("[privacy]\nclip = 0.5\n", &[]);
    assert!(e.contains("privacy.noise_multiplier = missing"), "{e}");
    // DP with a policy that reads clients' statistics in the clear.
    let e = err(DP, &["policy.name=\"loss-based\""]);
    assert!(
        e.contains("policy loss-based: reads clients' statistics in the clear"),
        "{e}"
    );
    assert!(e.contains("privacy.rates = \"noised\""), "{e}");
    // ... and in the documented private mode it runs.
    assert!(exp(
        DP,
        &[
            "policy.name=\"loss-based\"",
            "privacy.rates=\"noised\"",
            "privacy.rate_noise_multiplier=2.0",
        ]
    )
    .is_ok());
    // Robust rules need every update; secure aggregation shows only the sum.
    let sa = "[secure_aggregation]\n[robust]\nrule = \"median\"\n";
    let e = err(
        sa,
        &[
            "strategy.aggregation=\"linear\"",
            "strategy.normalize=\"on\"",
        ],
    );
    assert!(
        e.contains("[robust]: not supported with [secure_aggregation]"),
        "{e}"
    );
    let e = err("[secure_aggregation]\n", &[]);
    assert!(
        e.contains("[secure_aggregation]: needs strategy.aggregation = \"linear\""),
        "{e}"
    );
    let e = err("[robust]\nrule = \"krum\"\nbyzantine = 8\n", &[]);
    assert!(
        e.contains("robust.rule = \"krum\": needs at least 11 clients"),
        "{e}"
    );
    let e = err("[compression]\nname = \"qsgd\"\nbits = 3\n", &[]);
    assert!(e.contains("compression.bits = 3"), "{e}");
    let e = err("[attack]\nkind = \"sign-flip\"\nfraction = 1.5\n", &[]);
    assert!(e.contains("attack.fraction = 1.5"), "{e}");
    let asynchronous = BASE.replace(
        "name = \"fedavg\"\nclients_per_round = 10",
        "name = \"fedasync\"",
    );
    let e = Experiment::from_toml_str(&format!("{asynchronous}{DP}"), "test.toml", &[])
        .expect_err("refused")
        .to_string();
    assert!(e.contains("[privacy]: not supported by fedasync"), "{e}");
}

/// ε after round r in metrics.jsonl is the accountant's ε for (q = 10/30, z, r, δ), and
/// the summary's total is what `fedpace privacy` computes before the run.
#[test]
fn epsilon_per_round_in_metrics_is_the_accountants() {
    let e = exp(DP, &[]).unwrap();
    let b = budget(e.config(), None, None).unwrap();
    assert_eq!((b.clients, b.per_round, b.rounds), (30, 10, 4));
    let r = e.run(RunOptions::default()).unwrap();
    for (i, m) in r.metrics.iter().enumerate() {
        let got = m["privacy"]["epsilon"].as_f64().unwrap();
        let want = epsilon_for(1.0 / 3.0, 1.0, i as u64 + 1, 1e-5)
            .unwrap()
            .epsilon;
        assert!(
            (got - want).abs() <= 1e-12 * want,
            "round {}: {got} vs {want}",
            i + 1
        );
    }
    let total = r.summary["privacy"]["epsilon"].as_f64().unwrap();
    assert_eq!(total, b.epsilon);
    // The target mode finds a z that meets the target, and ε grows as z shrinks.
    let t = budget(e.config(), None, Some(b.epsilon)).unwrap();
    assert!(
        (t.noise_multiplier - 1.0).abs() < 1e-6,
        "{}",
        t.noise_multiplier
    );
    assert!(t.epsilon <= b.epsilon * (1.0 + 1e-9));
}

/// QSGD at 8 bits cuts the bytes a client uploads; the metrics say by how much.
#[test]
fn compression_reports_its_upload_bytes() {
    let dense = exp("", &[]).unwrap().run(RunOptions::default()).unwrap();
    let q8 = exp("[compression]\nname = \"qsgd\"\nbits = 8\n", &[])
        .unwrap()
        .run(RunOptions::default())
        .unwrap();
    let bytes =
        |r: &fedpace_experiment::RunResult| r.summary["upload_bytes_per_client"].as_f64().unwrap();
    // 610 parameters: 2440 bytes dense, 610 codes + 2 bucket norms compressed; the rest of
    // the reply (report, layout) is the same in both, and the payload's name, tags and
    // lengths take under 120 bytes.
    let saved = bytes(&dense) - bytes(&q8);
    let most = 2440.0 - 618.0;
    assert!(saved < most && saved > most - 120.0, "saved {saved}");
    assert_eq!(q8.metrics[0]["upload_bytes"], q8.metrics[1]["upload_bytes"]);
}

/// Secure aggregation (SecAgg, all 10 clients sharing) gives the linear path's model
/// within the fixed-point quantisation: each value is rounded to a step of
/// 2·8/2²² ≈ 3.8e-6 before summing, so one round moves a coordinate by at most
/// (clients + weights' tail) steps over the total weight.
#[test]
fn secure_aggregation_matches_the_plain_linear_sum() {
    let linear = [
        "strategy.aggregation=\"linear\"",
        "strategy.normalize=\"on\"",
        "rounds=1",
        "eval.every=1",
    ];
    let plain = exp("", &linear)
        .unwrap()
        .run(RunOptions::default())
        .unwrap();
    let sec = exp("[secure_aggregation]\n", &linear)
        .unwrap()
        .run(RunOptions::default())
        .unwrap();
    let max = plain
        .model()
        .as_slice()
        .iter()
        .zip(sec.model().as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max > 0.0, "quantised, not bypassed");
    assert!(max < 1e-4, "{max}");
    let m = &sec.metrics[0]["secure_aggregation"];
    assert_eq!(m["participants"], 10);
    assert_eq!(m["survivors"], 10);
}

/// `[attack]` reaches the clients: a sign-flip share changes the model, a share of 0
/// changes nothing, and the median rule under the same attack keeps the model nearer
/// the honest one than the mean.
#[test]
fn attack_config_reaches_the_clients() {
    let run = |extra: &str| {
        exp(extra, &[])
            .unwrap()
            .run(RunOptions::default())
            .unwrap()
            .model()
            .as_slice()
            .to_vec()
    };
    let honest = run("");
    let none = run("[attack]\nkind = \"sign-flip\"\nfraction = 0.0\n");
    assert_eq!(honest, none);
    let attack = "[attack]\nkind = \"sign-flip\"\nfraction = 0.3\n";
    let attacked = run(attack);
    let median = run(&format!("{attack}[robust]\nrule = \"median\"\n"));
    let dist = |a: &[f32]| {
        a.iter()
            .zip(&honest)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    assert!(dist(&attacked) > 0.0);
    assert!(
        dist(&median) < dist(&attacked),
        "{} vs {}",
        dist(&median),
        dist(&attacked)
    );
}
