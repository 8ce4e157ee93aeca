//! End-to-end tests of `fedpace tune` and `fedpace study` on the embedded Synthetic(1,1)
//! data: tiny but real searches and studies, what they write, print and refuse.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `fedpace tune FILE --out OUT ARGS…`, run to its end.
fn tune(file: &Path, out: &Path, args: &[&str]) -> Output {
    fedpace()
        .arg("tune")
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml")
}

/// A search file: 4-round trials of the quickstart with a uniform rate and 1 local epoch
/// (10 clients per round: 10 client-epochs per round per seed).
fn search_file(dir: &Path, method: &str, space: &str, budget: f64) -> PathBuf {
    search_file_with(dir, method, space, budget, "")
}

/// [`search_file`] with more `set` entries (`extra`: `, "key=value"` items).
fn search_file_with(dir: &Path, method: &str, space: &str, budget: f64, extra: &str) -> PathBuf {
    let p = dir.join("search.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"tiny\"\nbase = {:?}\nset = [\"rounds=4\", \"policy={{name=\\\"constant\\\"}}\", \"client.epochs=1\", \"eval.every=2\"{extra}]\nseeds = [100, 101]\nbudget = {budget}\n[method]\n{method}\n[space]\n{space}\n",
            quickstart().display().to_string()
        ),
    )
    .unwrap();
    p
}

#[test]
fn tune_with_validation_splits_selects_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file_with(
        dir.path(),
        "name = \"grid\"",
        "client.lr = { log = [0.003, 0.03], grid = 2 }",
        160.0,
        ", \"data.validation_fraction=0.25\"",
    );
    let out_dir = dir.path().join("out");
    let out = tune(&file, &out_dir, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("WARNING"), "{t}");
    // Each trial's objective is its run's validation number, which differs from its
    // test number.
    let evals = std::fs::read_to_string(out_dir.join("evaluations.csv")).unwrap();
    let trials = std::fs::read_to_string(out_dir.join("trials.csv")).unwrap();
    let mut checked = 0;
    for line in trials.lines().skip(1) {
        let run = out_dir.join(line.rsplit(',').next().unwrap());
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap())
                .unwrap();
        let val = s["validation"]["personalized"]["mean_accuracy"]
            .as_f64()
            .unwrap();
        let test = s["personalized"]["mean_accuracy"].as_f64().unwrap();
        assert_ne!(val, test, "{s}");
        assert_eq!(
            s["validation"]["global"]["evaluated_on"], "client validation splits",
            "{s}"
        );
        let shown = format!("{val}");
        assert!(
            evals.contains(&shown[..shown.len().min(8)]),
            "{val} not in {evals}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn tune_runs_a_tiny_grid_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(
        dir.path(),
        "name = \"grid\"",
        "client.lr = { log = [0.003, 0.03], grid = 2 }",
        160.0,
    );
    let out_dir = dir.path().join("out");
    let out = tune(&file, &out_dir, &["--parallel", "2"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("chosen: client.lr="), "{t}");
    assert!(
        t.contains("WARNING: val_personalized_mean is not a validation metric yet"),
        "{t}"
    );
    // 2 points × 2 seeds × 4 rounds × 10 client-epochs: the reported cost (from the runs'
    // steps) equals the nominal one (from the pool's sizes).
    assert!(
        t.contains("budget 160 client-epochs · spent 160 (nominal 160, planned 160) · finished"),
        "{t}"
    );
    for f in [
        "search.toml",
        "evaluations.csv",
        "trials.csv",
        "results.md",
        "summary.json",
        "plot.svg",
    ] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
    let trials = std::fs::read_to_string(out_dir.join("trials.csv")).unwrap();
    assert_eq!(trials.lines().count(), 1 + 4, "{trials}");
    for line in trials.lines().skip(1) {
        let dir_col = line.rsplit(',').next().unwrap();
        assert!(
            out_dir.join(dir_col).join("summary.json").exists(),
            "{dir_col}"
        );
    }
    // Refuses to write over it.
    let again = tune(&file, &out_dir, &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again).contains("not empty; choose a new --out, or add --force"),
        "{}",
        text(&again)
    );
}

#[test]
fn tune_results_do_not_depend_on_how_many_trials_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(
        dir.path(),
        "name = \"halving\"\nmin_rounds = 2\ntrials = 3\neta = 2",
        "client.lr = { log = [0.001, 0.1] }",
        1000.0,
    );
    let run = |parallel: &str, out: &str| {
        let o = tune(&file, &dir.path().join(out), &["--parallel", parallel]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read_to_string(dir.path().join(out).join("evaluations.csv")).unwrap()
    };
    assert_eq!(run("1", "a"), run("3", "b"));
}

/// The rows of `trials.csv` as column → value maps.
fn trial_rows(out: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// Halving continues a promoted trial from the checkpoint its shorter run ended with:
/// the same model as a straight run of its point to the longer rung, the new rounds alone
/// charged, and no checkpoint left when the search is over.
#[test]
fn tune_halving_continues_promoted_trials_as_a_straight_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(
        dir.path(),
        "name = \"halving\"\nmin_rounds = 2\ntrials = 3\neta = 2",
        "client.lr = { log = [0.001, 0.1] }",
        1000.0,
    );
    let out_dir = dir.path().join("out");
    let o = tune(&file, &out_dir, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = trial_rows(&out_dir);
    let continued: Vec<_> = rows.iter().filter(|r| r["from_rounds"] == "2").collect();
    assert_eq!(continued.len(), 2, "one promotion × 2 seeds");
    for r in continued {
        assert_eq!(r["rounds"], "4");
        // 2 new rounds × 10 clients × 1 epoch, not 4 rounds' 40.
        assert_eq!(r["cost"], "20", "{r:?}");
        let trial = out_dir.join(&r["dir"]);
        let straight = dir.path().join(format!("straight-{}", r["seed"]));
        let lr = format!("client.lr={}", r["client.lr"]);
        let seed = format!("seed={}", r["seed"]);
        let s = fedpace()
            .arg("run")
            .arg(quickstart())
            .arg("--out")
            .arg(&straight)
            .args(["--set", "rounds=4", "--set", "policy={name=\"constant\"}"])
            .args(["--set", "client.epochs=1", "--set", "eval.every=2"])
            .args(["--set", &lr, "--set", &seed])
            .output()
            .unwrap();
        assert!(s.status.success(), "{}", text(&s));
        let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(model(&trial) == model(&straight), "{}", trial.display());
        let lines = |d: &Path| {
            std::fs::read_to_string(d.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines(&trial), 4);
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    // 3 configurations × 2 seeds × 2 rounds, then 1 × 2 seeds × 2 more rounds.
    assert_eq!(summary["spent"], 160.0);
    assert_eq!(summary["continued"], true);
    for t in std::fs::read_dir(out_dir.join("trials")).unwrap() {
        assert!(!t.unwrap().path().join("checkpoint.fdpc").exists());
    }
}

/// Population-based training runs on `fedpace run` trials: each generation continues
/// its members from the previous one's checkpoints with their new points, is charged its
/// own rounds, and the search gives the same results however many trials run at once.
#[test]
fn tune_pbt_continues_its_members_from_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file_with(
        dir.path(),
        "name = \"pbt\"\npopulation = 3\ninterval = 2",
        "client.lr = { log = [0.001, 0.1] }",
        1000.0,
        ", \"rounds=6\"",
    );
    let run = |parallel: &str, out: &str| {
        let o = tune(&file, &dir.path().join(out), &["--parallel", parallel]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("its schedule: rounds 1–2: client.lr="),
            "{}",
            text(&o)
        );
        std::fs::read_to_string(dir.path().join(out).join("evaluations.csv")).unwrap()
    };
    assert_eq!(run("1", "a"), run("3", "b"));
    let out_dir = dir.path().join("a");
    let rows = trial_rows(&out_dir);
    assert_eq!(rows.len(), 18, "3 members × 2 seeds × 3 generations");
    for r in &rows {
        let rounds: usize = r["rounds"].parse().unwrap();
        let from: usize = r["from_rounds"].parse().unwrap();
        assert_eq!(rounds - from, 2, "{r:?}");
        assert_eq!(r["cost"], "20", "{r:?}");
        // The run directory holds the whole line's rounds, and the point it continued with.
        let trial = out_dir.join(&r["dir"]);
        let metrics = std::fs::read_to_string(trial.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), rounds, "{}", trial.display());
        let config = std::fs::read_to_string(trial.join("config.toml")).unwrap();
        assert!(
            config.contains(&format!("lr = {}", r["client.lr"])),
            "{config}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["spent"], 360.0);
}

#[test]
fn tune_refuses_bad_searches_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // Over the budget: 2 points × 2 seeds × 4 rounds × 10 = 160.
        ("name = \"grid\"", "client.lr = { log = [0.003, 0.03], grid = 2 }", 100.0, "grid: the plan (grid of 2 points × 2 seeds × 4 rounds) costs 160 client-epochs, over the budget of 100"),
        // A key the experiment does not have.
        ("name = \"grid\"", "client.lrr = { log = [0.003, 0.03], grid = 2 }", 1000.0, "client.lrr"),
        // The search sets seeds and rounds itself.
        ("name = \"grid\"", "seed = { int = [1, 2] }", 1000.0, "seed: set by the search"),
    ];
    for (method, space, budget, want) in cases {
        let file = search_file(dir.path(), method, space, budget);
        let out_dir = dir.path().join("never");
        let o = tune(&file, &out_dir, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{want:?} not in {}", text(&o));
        assert!(!out_dir.exists(), "created {}", out_dir.display());
    }
}

#[test]
fn study_runs_a_tiny_study_and_prints_paired_differences() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study.toml");
    std::fs::write(
        &study,
        format!(
            r#"name = "tiny-study"
seeds = [0, 1, 2]
baseline = "uniform"
parallel = 2
[tuning]
budget = 60
seeds = [100]
[[benchmark]]
name = "syn"
config = {:?}
set = ["rounds=3", "client.epochs=1"]
[[variant]]
name = "uniform"
set = ["policy={{name=\"constant\"}}"]
[variant.tune]
method = {{ name = "grid" }}
space = {{ client.lr = {{ log = [0.005, 0.02], grid = 2 }} }}
[[variant]]
name = "by-data-size"
set = ["policy.name=by-data-size"]
[variant.tune]
method = {{ name = "random", trials = 2 }}
space = {{ policy.gamma = {{ linear = [-1.0, 1.0] }} }}
"#,
            quickstart().display().to_string()
        ),
    )
    .unwrap();
    let dry = fedpace()
        .arg("study")
        .arg(&study)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains(
            "syn · uniform: grid of 2 points × 1 seeds × 3 rounds; 60 of 60 client-epochs"
        ),
        "{}",
        text(&dry)
    );
    let out_dir = dir.path().join("out");
    let o = fedpace()
        .arg("study")
        .arg(&study)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in [
        "### syn · test_personalized_mean (higher is better)",
        "| by-data-size |",
        "### syn · test_personalized_worst10",
        "(below the rule)",
        "### syn · test_global_accuracy",
        "| uniform | tuned: client.lr=",
        "60 / 60",
    ] {
        assert!(t.contains(want), "{want:?} not in {t}");
    }
    let diffs = std::fs::read_to_string(out_dir.join("differences.csv")).unwrap();
    assert_eq!(diffs.lines().count(), 1 + 3 * 2, "{diffs}");
    let results = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(results.lines().count(), 1 + 2 * 3, "{results}");
    for f in [
        "results.md",
        "summary.json",
        "plot.svg",
        "study.toml",
        "tuning/syn/uniform/evaluations.csv",
        "runs/syn/by-data-size/s2/summary.json",
    ] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
}

#[test]
fn study_resume_keeps_finished_runs_and_reruns_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study.toml");
    std::fs::write(
        &study,
        format!(
            r#"name = "resume-study"
seeds = [0, 1]
baseline = "uniform"
parallel = 1
[tuning]
budget = 40
seeds = [100]
[[benchmark]]
name = "syn"
config = {:?}
set = ["rounds=2", "client.epochs=1", "policy={{name=\"constant\"}}"]
[[variant]]
name = "uniform"
[variant.tune]
method = {{ name = "grid" }}
space = {{ client.lr = {{ log = [0.005, 0.02], grid = 2 }} }}
[[variant]]
name = "by-data-size"
set = ["policy.name=by-data-size"]
"#,
            quickstart().display().to_string()
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let run = |extra: &[&str]| {
        let o = fedpace()
            .arg("study")
            .arg(&study)
            .arg("--out")
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read_to_string(out_dir.join("results.csv")).unwrap()
    };
    let first = run(&[]);
    let kept = out_dir.join("runs/syn/uniform/s0/metrics.jsonl");
    let stamp = std::fs::metadata(&kept).unwrap().modified().unwrap();
    // An interrupted run: its summary is gone, so it must train again.
    let broken = out_dir.join("runs/syn/by-data-size/s1");
    std::fs::remove_file(broken.join("summary.json")).unwrap();
    // Without --resume the directory is refused; with it the results are the same.
    let refused = fedpace()
        .arg("study")
        .arg(&study)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused).contains("not empty"), "{}", text(&refused));
    let again = run(&["--resume"]);
    assert_eq!(first, again);
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        stamp,
        "a finished run was trained again"
    );
    assert!(broken.join("summary.json").exists());
    // A changed configuration is not mistaken for the finished one.
    let changed = std::fs::read_to_string(&study)
        .unwrap()
        .replace("\"client.epochs=1\"", "\"client.epochs=2\"")
        .replace("budget = 40", "budget = 80");
    std::fs::write(&study, changed).unwrap();
    run(&["--resume"]);
    assert_ne!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        stamp,
        "a run of another configuration was reused"
    );
    let both = fedpace()
        .arg("study")
        .arg(&study)
        .arg("--out")
        .arg(&out_dir)
        .args(["--resume", "--force"])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(text(&both).contains("--resume"), "{}", text(&both));
}

#[test]
fn the_example_search_and_study_files_plan_within_their_budgets() {
    // In examples/tune/, not examples/: every file directly in examples/ is an experiment.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tune");
    for (cmd, file) in [("tune", "lr.toml"), ("study", "study-rates.toml")] {
        let o = fedpace()
            .arg(cmd)
            .arg(root.join(file))
            .arg("--dry-run")
            .output()
            .unwrap();
        assert!(o.status.success(), "{file}: {}", text(&o));
        assert!(
            text(&o).contains("nothing trained (--dry-run)"),
            "{}",
            text(&o)
        );
    }
}

/// While a search runs, `--resume` or `--force` on its directory is refused in one line
/// before it reads or removes anything; once the search is killed its lock is gone and
/// `--resume` finishes it.
#[test]
fn a_second_search_on_a_running_output_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file_with(
        dir.path(),
        "name = \"grid\"",
        "client.lr = { log = [0.003, 0.03], grid = 2 }",
        1e6,
        ", \"rounds=300\"",
    );
    let out_dir = dir.path().join("out");
    let mut child = fedpace()
        .arg("tune")
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .args(["--parallel", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !out_dir.join("search.toml").exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the search never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let refusal = format!("{}: another fedpace run is writing", out_dir.display());
    for args in [&["--resume"][..], &["--force"][..]] {
        let mut c = fedpace();
        c.arg("tune")
            .arg(&file)
            .arg("--out")
            .arg(&out_dir)
            .args(args);
        common::refused(c, 2, &[&refusal]);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the search ended before the second commands; make it longer"
    );
    // `--force` removed nothing.
    assert!(out_dir.join("search.toml").exists());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = tune(&file, &out_dir, &["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(trial_rows(&out_dir).len(), 4);
}
