//! Issue 11 through the real binary: parameter groups from the `groups` rules, refused
//! combinations and undisclosed metadata as one-line errors before anything runs.

use std::path::Path;
use std::process::Command;

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

const BASE: &str = r#"
rounds = 2
[data]
source = "optdigits"
num_clients = 6
[model]
name = "mlp"
hidden = [8, 8]
[client]
lr = 0.1
batch_size = 16
[strategy]
clients_per_round = 3
[eval]
every = 2
finetune_steps = 1
"#;

fn run(text: &str, out: &Path) -> std::process::Output {
    let cfg = out.with_extension("toml");
    std::fs::write(&cfg, text).unwrap();
    fedpace()
        .arg("run")
        .arg(&cfg)
        .args(["--threads", "1", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

fn first_metrics(out: &Path) -> serde_json::Value {
    let m = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    serde_json::from_str(m.lines().next().unwrap()).unwrap()
}

/// `groups = "per-layer"` makes every layer its own group: per-layer rates and personal
/// layers address them by name.
#[test]
fn groups_from_rules_drive_per_layer_rates_and_personal_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let text = BASE.replace("rounds = 2", "rounds = 2\ngroups = \"per-layer\"")
        + "[policy]\nname = \"per-layer\"\nmultipliers = { fc1 = 0.5, fc3 = 4.0 }\n";
    let out = tmp.path().join("layers");
    let o = run(&text, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = first_metrics(&out);
    assert_eq!(m["groups"], serde_json::json!(["fc1", "fc2", "fc3"]));
    let rates = m["clients"][0]["group_rates"].as_array().unwrap();
    let r: Vec<f64> = rates.iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((r[0] - 0.05).abs() < 1e-6 && (r[1] - 0.1).abs() < 1e-6 && (r[2] - 0.4).abs() < 1e-6);
    assert_eq!(m["clients"][0]["rate_sum"].as_array().unwrap().len(), 3);
    // Patterns: the first two layers are one group; FedPer keeps `fc3` on the clients.
    let text = BASE.replace(
        "[strategy]\nclients_per_round = 3",
        "[strategy]\nname = \"fedper\"\nclients_per_round = 3\npersonal_groups = [\"top\"]",
    ) + "[groups]\nfeatures = [\"fc1.*\", \"fc2.*\"]\ntop = [\"fc3.*\"]\n";
    let out = tmp.path().join("patterns");
    let o = run(&text, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        first_metrics(&out)["groups"],
        serde_json::json!(["features", "top"])
    );
    // A pattern that matches nothing is a one-line error naming it.
    let text = BASE.to_string() + "[groups]\nconv = [\"conv*\"]\n";
    let out = tmp.path().join("never");
    let o = run(&text, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("groups: conv = \"conv*\" matches no tensor"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Combinations that would run but silently do something else are refused, in one line
/// naming both sides, before any output exists.
#[test]
fn refused_combinations_and_undisclosed_metadata_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[strategy]\nname = \"pfedme\"\nclients_per_round = 3",
            "[policy]\nname = \"curvature\"\n",
            "policy curvature: not supported by pfedme",
        ),
        (
            "[strategy]\nname = \"fedbuff\"\nbuffer_size = 2",
            "[policy]\nname = \"clip-updates\"\n",
            "policy clip-updates: not supported by fedbuff",
        ),
        (
            "[strategy]\nname = \"fedasync\"",
            "[policy]\nname = \"fedlalr\"\n",
            "policy fedlalr (server-initialised moments): not supported by fedasync",
        ),
        (
            "[strategy]\nclients_per_round = 3",
            "[policy]\nname = \"by-label-skew\"\n",
            "policy by-label-skew: needs the clients' label-histogram, which they do not share",
        ),
    ];
    for (i, (strategy, policy, want)) in cases.iter().enumerate() {
        let text = BASE.replace("[strategy]\nclients_per_round = 3", strategy) + policy;
        let out = tmp.path().join(format!("c{i}"));
        let o = run(&text, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "{want}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists());
    }
    // Shared, the same policy runs.
    let text = BASE.replace("lr = 0.1", "lr = 0.1\nshare = [\"label-histogram\"]")
        + "[policy]\nname = \"by-label-skew\"\n";
    let o = run(&text, &tmp.path().join("shared"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
