//! Regression tests for issue 10's "Silent results" and "Limits": nothing a run does
//! wrong may pass without a word, and what the config decides is checked before the
//! output directory exists. Each test runs the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

const QUICKSTART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/quickstart.toml"
);

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `fedpace run CONFIG --out OUT --set …` (quickstart, 2 rounds, unless overridden).
fn run(config: &str, out: &Path, sets: &[&str]) -> Output {
    let mut c = fedpace();
    c.args(["run", config, "--out"]).arg(out);
    c.args(["--set", "rounds=2"]);
    for s in sets {
        c.args(["--set", s]);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn rejected_updates_are_counted_in_metrics_summary_and_console() {
    // An MLP at rate 20 diverges: some clients return NaN updates from round 8 on.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run(
        QUICKSTART,
        &out,
        &[
            "rounds=20",
            "client.lr=20",
            "policy={name=\"constant\"}",
            "model={name=\"mlp\",hidden=[32]}",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    let total = s["rejected_updates"].as_u64().unwrap();
    assert!(total > 0, "{s}");
    assert!(s["rounds_with_rejections"].as_u64().unwrap() > 0);
    // The diverged model is flagged, and its loss is null, never a number.
    assert!(s["global_loss_nonfinite_round"].as_u64().is_some(), "{s}");
    assert!(s["global"]["loss"].is_null());
    let mut per_round = 0;
    for line in std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let r = &m["rejected"];
        let n = r["count"].as_u64().unwrap();
        let by_reason: u64 = r["reasons"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(n, by_reason, "{r}");
        assert_eq!(n, m["failures"].as_u64().unwrap());
        per_round += n;
    }
    assert_eq!(per_round, total);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("warning: quickstart: {total} update(s) rejected"))
            && err.contains("update has NaN/Inf values"),
        "{err}"
    );
    assert!(
        err.contains("the global loss is not finite from round"),
        "{err}"
    );
}

#[test]
fn configs_that_cannot_train_or_are_out_of_bounds_are_rejected_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    // (override(s), what the one-line error must say: every `|`-separated part)
    let cases: &[(&[&str], &str)] = &[
        (&["devices.dropout=1.0"], "devices.dropout = 1: below 1"),
        (
            &["devices.availability={dist=\"constant\",value=0.0}"],
            "devices.availability = 0: above 0",
        ),
        (
            &["devices.stragglers=1.0", "devices.late=\"drop\""],
            "devices.stragglers = 1: with late = \"drop\"",
        ),
        (
            &["devices.deadline=1e-9"],
            "devices.deadline = 0.000000001: at least",
        ),
        (&["client.max_steps=0"], "client.max_steps = 0: at least 1"),
        (
            &["client.group_lr={head=0.0}"],
            "client.group_lr: every parameter group",
        ),
        (
            &["eval.max_test_samples=0"],
            "eval.max_test_samples = 0: at least 1",
        ),
        (
            &["strategy.clients_per_round=40"],
            "strategy.clients_per_round = 40: more than the 30 clients",
        ),
        (
            &["strategy.fraction=0.5"],
            "strategy.fraction: set together with strategy.clients_per_round",
        ),
        (
            &["policy={name=\"constant\",bogus=1}"],
            "policy: unknown field `bogus`",
        ),
        (
            &["client.lr=1e308"],
            "client.lr = 1e308: a rate that fits an f32",
        ),
        (
            &["strategy.server_lr=1e300"],
            "strategy.server_lr = 1e300: a value that fits an f32",
        ),
        (
            &["client.optimizer={name=\"adam\",eps=1e-50}"],
            "client.optimizer.eps = 0.0000|: a value that fits an f32",
        ),
        // (Issue 11 made server-init work under every synchronous strategy, fedper
        // included — algos/tests/matrix.rs; the asynchronous ones still refuse it.)
        (
            &[
                "strategy={name=\"fedasync\"}",
                "client.state_mode=\"server-init\"",
            ],
            "client.state_mode = \"server-init\": not supported by fedasync",
        ),
        (
            &["strategy={name=\"fedadam\",flower_compatible=true,normalize=\"auto\"}"],
            "strategy.normalize = auto: off with flower_compatible = true",
        ),
        (
            &["client.epochs=1000000000"],
            "client.epochs = 1000000000: at most 1000",
        ),
        (
            &["eval.finetune_steps=2147483648"],
            "eval.finetune_steps = 2147483648: at most",
        ),
        (&["rounds=4000000000"], "rounds = 4000000000: at most"),
        (
            &["data.num_clients=4294967296"],
            "data.num_clients = 4294967296: at most 100000000",
        ),
        (
            &["model={name=\"mlp\",hidden=[4000000000]}"],
            "model: mlp has 284000000010 parameters; expected at most 268435456",
        ),
        (
            &["model={name=\"mlp\",hidden=[100000,100000]}"],
            "model: mlp has 10007200010 parameters",
        ),
        (
            &["data={source=\"bench\",num_clients=30,sample_shape=[100000,100000,100000]}"],
            "data.sample_shape = [100000, 100000, 100000]: at most 268435456 values per client",
        ),
        (
            &["name=\"x\\ny\""],
            "name = \"x\\ny\": a name of 1 to 200 bytes",
        ),
        (&["name=\"..\""], "name = \"..\": a name of 1 to 200 bytes"),
        (&["threads=100000"], "threads = 100000: at most"),
    ];
    for (i, (sets, want)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("c{i}"));
        let o = run(QUICKSTART, &out, sets);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{sets:?}: {err}");
        assert!(want.split('|').all(|w| err.contains(w)), "{sets:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{sets:?}: {err}");
        assert!(!out.exists(), "{sets:?}: wrote {}", out.display());
    }
}

#[test]
fn a_run_that_never_trains_stops_with_an_error_naming_the_cause() {
    // A log-normal dropout is unbounded in the config, so only the run can tell that
    // every draw is ≥ 1 (e^10): every selected client drops out of every round.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run(
        QUICKSTART,
        &out,
        &["devices.dropout={dist=\"log-normal\",mu=10.0,sigma=0.1}"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("round 2: no client trained in 2 consecutive round(s)")
            && err.contains("10 selected client(s) dropped out (devices.dropout)"),
        "{err}"
    );
    // With a checkpoint written before it, the error still says no more: a resumed run
    // would replay the same rounds (the resume line is for failed writes and reads).
    let out = tmp.path().join("checkpointed");
    let o = run(
        QUICKSTART,
        &out,
        &[
            "devices.dropout={dist=\"log-normal\",mu=10.0,sigma=0.1}",
            "checkpoint.every=1",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.join("checkpoint.fdpc").exists(), "{err}");
    assert!(
        err.contains("no client trained") && !err.contains("fedpace resume"),
        "{err}"
    );
}

#[test]
fn no_test_data_is_reported_as_null_and_na_never_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run(QUICKSTART, &out, &["data.test_fraction=0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    assert!(s["global"]["accuracy"].is_null(), "{s}");
    assert!(s["global"]["loss"].is_null(), "{s}");
    assert_eq!(s["global"]["evaluated_on"], "none");
    for k in [
        "mean_accuracy",
        "weighted_accuracy",
        "worst10_accuracy",
        "std_accuracy",
    ] {
        assert!(s["personalized"][k].is_null(), "personalized.{k}: {s}");
    }
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(last["eval"]["global_accuracy"].is_null(), "{last}");
    assert_eq!(last["eval"]["samples"], 0);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("n/a") && !table.contains("0.0%"), "{table}");
}

#[test]
fn set_errors_name_the_override_and_seeds_and_threads_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run(QUICKSTART, &out, &["rounds=abc"]);
    assert!(
        stderr(&o).starts_with("error: --set rounds=abc: rounds: invalid type: string \"abc\""),
        "{}",
        stderr(&o)
    );
    let o = fedpace()
        .args(["run", QUICKSTART, "--seed", "9223372036854775808", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("9223372036854775808 is not in 0..=9223372036854775807"),
        "{}",
        stderr(&o)
    );
    let o = fedpace()
        .args(["run", QUICKSTART, "--threads", "100000", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: --threads = 100000: at most"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn oversized_config_file_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("big.toml");
    let mut text = String::from("[device_classes]\n");
    let mut i = 0;
    while text.len() <= 1 << 20 {
        text.push_str(&format!("c{i} = 0.0\n"));
        i += 1;
    }
    std::fs::write(&cfg, text).unwrap();
    let o = fedpace()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("an experiment file is at most 1048576 bytes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn idx_test_images_of_another_size_are_rejected_before_the_output_directory() {
    use fedpace_data::idx::encode;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let (n, m) = (60usize, 20usize);
    let put = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    put(
        "train-images-idx3-ubyte",
        encode(0x803, &[n, 28, 28], &vec![7u8; n * 28 * 28]),
    );
    put(
        "train-labels-idx1-ubyte",
        encode(0x801, &[n], &vec![1u8; n]),
    );
    // Test images of 14×14: the model is built for 28×28.
    put(
        "t10k-images-idx3-ubyte",
        encode(0x803, &[m, 14, 14], &vec![7u8; m * 14 * 14]),
    );
    put("t10k-labels-idx1-ubyte", encode(0x801, &[m], &vec![1u8; m]));
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(
        &cfg,
        "rounds = 1\n[data]\nsource = \"mnist\"\nverify = false\nnum_clients = 3\n[strategy]\nclients_per_round = 3\n",
    )
    .unwrap();
    let out = tmp.path().join("r");
    let o = fedpace()
        .args(["run", cfg.to_str().unwrap(), "--out"])
        .arg(&out)
        .env("FEDPACE_DATA_DIR", tmp.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("t10k-images-idx3-ubyte: images of 14×14, expected 28×28"),
        "{err}"
    );
    assert!(!out.exists());
}
