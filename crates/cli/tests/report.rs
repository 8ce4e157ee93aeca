//! `fedpace report` on real runs of the learned controllers: each run's page has the
//! learned-rates panel (docs/outputs.md, "report"; docs/learned-rates.md), drawn from
//! what the run wrote to `metrics.jsonl`.

use std::path::Path;
use std::process::Command;

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

/// A small federation with validation splits (what the learned controllers learn from).
const BASE: &str = r#"
name = "learned"
rounds = 4
groups = "per-tensor"
[data]
source = "synthetic"
alpha = 1.0
beta = 1.0
num_clients = 10
validation_fraction = 0.2
[model]
name = "logistic-regression"
[client]
lr = 0.01
batch_size = 10
epochs = 1
[strategy]
clients_per_round = 5
[eval]
every = 2
finetune_steps = 2
"#;

fn run_and_report(dir: &Path, name: &str, sets: &[&str]) -> String {
    let cfg = dir.join("base.toml");
    std::fs::write(&cfg, BASE).unwrap();
    let out = dir.join(name);
    let mut cmd = fedpace();
    cmd.arg("run").arg(&cfg);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let st = cmd.arg("--out").arg(&out).output().unwrap();
    assert!(
        st.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let html = dir.join(format!("{name}.html"));
    let st = fedpace()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read_to_string(&html).unwrap()
}

const CLIENTS: &str = "Base rate of the most often sampled clients";
const QUANTILES: &str = "Base rate over the round's clients (quantiles)";
const GROUPS: &str = "Per-group multiplier over the round's clients";

#[test]
fn fedex_report_shows_its_distribution_over_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let page = run_and_report(tmp.path(), "fedex", &["strategy.name=\"fedex\""]);
    for t in [
        "Learned rates",
        "Learned distribution fedex.all.rate (probability of each candidate)",
        "Learned values: fedex",
        CLIENTS,
        QUANTILES,
    ] {
        assert!(page.contains(t), "fedex page lacks {t:?}");
    }
    // One series per candidate rate (the defaults).
    for c in ["0.003", "0.01", "0.03", "0.1"] {
        assert!(page.contains(&format!(">{c}</text>")), "candidate {c}");
    }
}

#[test]
fn fedhyper_report_shows_server_and_client_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let page = run_and_report(
        tmp.path(),
        "fedhyper",
        &["strategy.name=\"fedhyper\"", "strategy.server_local=true"],
    );
    for t in [
        "Learned values: fedhyper",
        "fedhyper.server_rate",
        "fedhyper.client_rate_factor",
        CLIENTS,
        QUANTILES,
    ] {
        assert!(page.contains(t), "fedhyper page lacks {t:?}");
    }
}

#[test]
fn meta_rates_report_shows_client_rates_and_group_multipliers() {
    let tmp = tempfile::tempdir().unwrap();
    let page = run_and_report(tmp.path(), "meta", &["strategy.name=\"meta-rates\""]);
    for t in [
        "Learned values: meta",
        "meta.offset.mean",
        CLIENTS,
        QUANTILES,
        GROUPS,
    ] {
        assert!(page.contains(t), "meta-rates page lacks {t:?}");
    }
}

#[test]
fn hypernet_policy_report_shows_client_rates_and_group_multipliers() {
    let tmp = tempfile::tempdir().unwrap();
    let page = run_and_report(
        tmp.path(),
        "hypernet",
        &["policy={name=\"hypernet\",sigma=0.3}"],
    );
    for t in ["Learned rates", CLIENTS, QUANTILES, GROUPS] {
        assert!(page.contains(t), "hypernet page lacks {t:?}");
    }
}
