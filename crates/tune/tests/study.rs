//! The study runner against the fake runner: tuning on its own seeds, the chosen point
//! applied to every study seed, paired statistics, the worst-fraction rule.

mod common;

use common::Fake;
use fedpace_tune::stats::{paired_t, wilcoxon};
use fedpace_tune::{run_study, StudyFile};
use std::path::Path;

const STUDY: &str = r#"
name = "fake"
seeds = [0, 1, 2, 3, 4, 5]
baseline = "uniform"
metrics = ["test_score", "test_worst"]
[worst]
metric = "test_worst"
[tuning]
budget = 300
seeds = [100, 101]
objective = "val_score"
[[benchmark]]
name = "b1"
config = "b1.toml"
[[variant]]
name = "uniform"
[variant.tune]
method = { name = "grid" }
space = { lr = { log = [0.001, 0.1], grid = 3 } }
[[variant]]
name = "better"
set = ["shift=0.02"]
[variant.tune]
method = { name = "random", trials = 2 }
space = { lr = { log = [0.001, 0.1] } }
[[variant]]
name = "untuned"
"#;

fn runner_for(v: &fedpace_tune::study::Variant) -> Fake {
    let mut f = Fake::new(false);
    f.max_rounds = 10;
    if v.set.iter().any(|s| s == "shift=0.02") {
        f.shift = 0.02;
    }
    f
}

#[test]
fn a_study_tunes_on_its_own_seeds_and_pairs_runs_by_seed() {
    let study = StudyFile::parse(STUDY, Path::new("study.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let r = run_study(&study, |_, v| Ok(runner_for(v)), dir.path(), &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    // Grid: 3 points × 2 tuning seeds × 10 rounds × 2 client-epochs = 120 ≤ 300.
    let uniform = r.variants.iter().find(|v| v.variant == "uniform").unwrap();
    assert_eq!(uniform.tuning_spent, 120.0);
    assert_eq!(uniform.chosen.as_ref().unwrap()["lr"].as_f64(), Some(0.01));
    let untuned = r.variants.iter().find(|v| v.variant == "untuned").unwrap();
    assert_eq!((untuned.chosen.clone(), untuned.tuning_spent), (None, 0.0));
    // Tuning ran on seeds 100 and 101 only; study runs on 0..6.
    let t: String =
        std::fs::read_to_string(dir.path().join("tuning/b1/uniform/trials.csv")).unwrap();
    assert!(t
        .lines()
        .skip(1)
        .all(|l| l.split(',').nth(3) == Some("100") || l.split(',').nth(3) == Some("101")));
    assert_eq!(r.runs.len(), 3 * 6);
    // Differences equal the paired statistics of the runs.
    let d = r
        .differences
        .iter()
        .find(|d| d.variant == "better" && d.metric == "test_score")
        .unwrap();
    let diffs: Vec<f64> = (0..6u64)
        .map(|s| {
            let get = |v: &str| {
                r.runs
                    .iter()
                    .find(|x| x.variant == v && x.seed == s)
                    .unwrap()
                    .metrics["test_score"]
            };
            get("better") - get("uniform")
        })
        .collect();
    let t = paired_t(&diffs).unwrap();
    assert_eq!((d.n, d.t, d.p_t), (6, Some(t.t), Some(t.p)));
    assert_eq!(d.p_wilcoxon, wilcoxon(&diffs).map(|w| w.p));
    assert!(d.diff > 0.0 && d.diff.abs() > 2.0 * d.diff_se, "{d:?}");
    assert_eq!((d.wins, d.losses), (6, 0));
    // Worst-10 % rests on 2 of 20 clients: below the rule, so it carries intervals.
    let w = r
        .differences
        .iter()
        .find(|d| d.variant == "better" && d.metric == "test_worst")
        .unwrap();
    let basis = w.basis.unwrap();
    assert_eq!((basis.units, basis.min_samples, basis.ok), (2, 40, false));
    let iv = w.bootstrap_diff.unwrap();
    assert!(iv.low <= w.diff && w.diff <= iv.high, "{iv:?} {}", w.diff);
    assert!(w.bootstrap_mean.is_some());
    let s = r
        .differences
        .iter()
        .find(|d| d.variant == "better" && d.metric == "test_score")
        .unwrap();
    assert!(s.basis.is_none() && s.bootstrap_diff.is_none());
    // Files and the loud warning.
    r.write(dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(
        md.contains("WARNING: val_score is not a validation metric yet"),
        "{md}"
    );
    assert!(md.contains("| better | tuned: lr="), "{md}");
    assert!(
        md.contains("2 clients, ≥ 40 samples (below the rule)"),
        "{md}"
    );
    for f in ["results.csv", "differences.csv", "summary.json", "plot.svg"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(dir.path().join("differences.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 2);
}

#[test]
fn a_study_is_identical_with_one_or_three_threads() {
    let mut study = StudyFile::parse(STUDY, Path::new("study.toml")).unwrap();
    let run = |study: &StudyFile| {
        let dir = tempfile::tempdir().unwrap();
        let r = run_study(study, |_, v| Ok(runner_for(v)), dir.path(), &mut |_| {}).unwrap();
        serde_json::to_string(&(&r.runs, &r.differences, &r.variants)).unwrap()
    };
    let one = run(&study);
    study.parallel = 3;
    assert_eq!(one, run(&study));
}

#[test]
fn an_unknown_metric_stops_the_study_before_anything_trains() {
    let study = StudyFile::parse(
        &STUDY.replace("\"test_worst\"]", "\"test_wrost\"]"),
        Path::new("study.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = run_study(&study, |_, v| Ok(runner_for(v)), dir.path(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("benchmark b1 variant uniform: metric \"test_wrost\": unknown metric"),
        "{e}"
    );
    assert!(!dir.path().join("tuning").exists());
}
