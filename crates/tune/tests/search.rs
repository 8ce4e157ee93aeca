//! The search driver and every method against a fake runner: determinism whatever the
//! thread count, the budget rule, promotions, PBT's exploit/explore, failures.

mod common;

use common::Fake;
use fedpace_tune::methods::MethodConfig;
use fedpace_tune::space::Space;
use fedpace_tune::{run_search, SearchReport, SearchSpec};
use std::sync::atomic::Ordering;

fn space(text: &str) -> Space {
    Space::from_table(&text.parse().unwrap(), "space").unwrap()
}

fn spec(method: &str, budget: f64) -> SearchSpec {
    let m: MethodConfig = toml::from_str(method).unwrap();
    SearchSpec {
        space: space("lr = { log = [0.0001, 1.0], grid = 9 }\n"),
        method: m,
        objective: "val_score".into(),
        seeds: vec![1, 2],
        budget,
        truncate: false,
        search_seed: 5,
        parallel: 1,
    }
}

fn search(spec: &SearchSpec, runner: &Fake) -> Result<SearchReport, fedpace_tune::Error> {
    let dir = tempfile::tempdir().unwrap();
    run_search(spec, runner, dir.path(), &mut |_| {})
}

/// What must not depend on threads: every evaluation and every job, serialised.
fn fingerprint(r: &SearchReport) -> String {
    serde_json::to_string(&(&r.evaluations, &r.jobs, r.best, r.spent)).unwrap()
}

const METHODS: [&str; 6] = [
    "name = \"grid\"",
    "name = \"random\"\ntrials = 8",
    "name = \"halving\"\nmin_rounds = 3\ntrials = 9",
    "name = \"hyperband\"\nmin_rounds = 3\niterations = 1",
    "name = \"bo\"\ninitial = 3\ntrials = 7\nbatch = 2\ncandidates = 200",
    "name = \"pbt\"\npopulation = 6\ninterval = 9",
];

#[test]
fn every_method_gives_identical_results_with_one_or_four_threads() {
    for m in METHODS {
        let runner = Fake::new(true);
        let mut s = spec(m, 1e6);
        let one = search(&s, &runner).unwrap_or_else(|e| panic!("{m}: {e}"));
        s.parallel = 4;
        let four = search(&s, &runner).unwrap();
        assert_eq!(fingerprint(&one), fingerprint(&four), "{m}");
        assert!(one.best.is_some(), "{m}");
        assert!(!one.evaluations.is_empty());
    }
}

#[test]
fn a_fixed_plan_over_the_budget_is_refused_before_anything_runs() {
    let runner = Fake::new(false);
    // 9 grid points × 2 seeds × 27 rounds × 2 client-epochs = 972.
    let e = search(&spec("name = \"grid\"", 500.0), &runner)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the plan (grid of 9 points × 2 seeds × 27 rounds) costs 972 client-epochs, over the budget of 500"), "{e}");
    assert_eq!(runner.runs.load(Ordering::SeqCst), 0);
}

#[test]
fn truncate_runs_a_fixed_plan_until_the_budget_and_says_so() {
    let runner = Fake::new(false);
    let mut s = spec("name = \"grid\"", 500.0);
    s.truncate = true;
    let r = search(&s, &runner).unwrap();
    // 108 client-epochs per point: four points fit in 500.
    assert_eq!(r.evaluations.len(), 4);
    assert!(r.spent <= 500.0 && r.truncated, "{} {}", r.spent, r.stop);
    assert_eq!(r.stop, "truncated by the budget");
    assert!(r.table(5).contains("truncated by the budget"));
}

#[test]
fn random_and_bo_size_themselves_to_the_budget_and_never_exceed_it() {
    // One Hyperband iteration (3 brackets) costs 936 here.
    for (m, budget) in [
        ("name = \"random\"", 700.0),
        ("name = \"bo\"\ninitial = 2\ncandidates = 100", 700.0),
        ("name = \"halving\"\nmin_rounds = 3", 700.0),
        ("name = \"hyperband\"\nmin_rounds = 3", 2000.0),
    ] {
        let runner = Fake::new(false);
        let r = search(&spec(m, budget), &runner).unwrap();
        assert!(r.spent <= budget + 1e-9, "{m}: spent {}", r.spent);
        assert!(
            r.spent >= 0.5 * budget,
            "{m}: spent only {} of {budget}",
            r.spent
        );
        assert!(!r.truncated, "{m}");
    }
}

#[test]
fn hyperband_brackets_follow_the_paper_for_r_81_eta_3() {
    // Li et al. 2018, Table 1 (R = 81, η = 3): n = 81, 34, 15, 8, 5 at r = 1, 3, 9, 27, 81.
    let mut runner = Fake::new(true);
    runner.max_rounds = 81;
    let mut s = spec("name = \"hyperband\"\nmin_rounds = 1\niterations = 1", 1e9);
    s.seeds = vec![1];
    let r = search(&s, &runner).unwrap();
    let mut first_rungs = Vec::new();
    for b in 1..=5 {
        let label = format!("iteration 1 bracket {b} rung 1/");
        let e: Vec<_> = r
            .evaluations
            .iter()
            .filter(|e| e.label.starts_with(&label))
            .collect();
        first_rungs.push((e.len(), e[0].rounds));
    }
    assert_eq!(
        first_rungs,
        vec![(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]
    );
    // Bracket 1's rungs keep 81, 27, 9, 3, 1 configurations at 1, 3, 9, 27, 81 rounds.
    let b1: Vec<(usize, u32)> = (1..=5)
        .map(|i| {
            let e: Vec<_> = r
                .evaluations
                .iter()
                .filter(|e| e.label == format!("iteration 1 bracket 1 rung {i}/5"))
                .collect();
            (e.len(), e[0].rounds)
        })
        .collect();
    assert_eq!(b1, vec![(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]);
}

#[test]
fn halving_promotes_the_best_and_charges_reruns_in_full_without_resume() {
    let s = spec("name = \"halving\"\nmin_rounds = 3\ntrials = 9", 1e6);
    let with = search(&s, &Fake::new(true)).unwrap();
    let without = search(&s, &Fake::new(false)).unwrap();
    // Same choices (the fake is deterministic and a re-run equals a continuation).
    let chosen = |r: &SearchReport| r.best_point().cloned();
    assert_eq!(chosen(&with), chosen(&without));
    // 9 at 3 rounds, 3 at 9, 1 at 27; × 2 seeds × 2 client-epochs per round.
    assert_eq!(with.spent, 2.0 * 2.0 * (9.0 * 3.0 + 3.0 * 6.0 + 18.0));
    assert_eq!(without.spent, 2.0 * 2.0 * (9.0 * 3.0 + 3.0 * 9.0 + 27.0));
    assert!(without.table(3).contains("promotions re-ran from round 0"));
    // The promoted ones are the best of the rung below.
    let rung1: Vec<_> = with
        .evaluations
        .iter()
        .filter(|e| e.label.ends_with("rung 1/3"))
        .collect();
    let rung2: Vec<_> = with
        .evaluations
        .iter()
        .filter(|e| e.label.ends_with("rung 2/3"))
        .collect();
    let mut scores: Vec<f64> = rung1.iter().map(|e| e.objective.unwrap()).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    for e in &rung2 {
        let before = rung1
            .iter()
            .find(|x| x.lineage == e.lineage)
            .unwrap()
            .objective
            .unwrap();
        assert!(
            before >= scores[2],
            "promoted {before}, third best {}",
            scores[2]
        );
        assert_eq!(e.from, Some(e.lineage));
    }
}

#[test]
fn rungs_in_client_epochs_give_costlier_configurations_fewer_rounds() {
    let runner = Fake::new(true);
    let mut s = spec(
        "name = \"halving\"\nmin_epochs = 6.0\nmax_epochs = 54.0\ntrials = 9",
        1e6,
    );
    s.space = space("lr = { log = [0.001, 0.1] }\nepochs = { int = [1, 3] }\n");
    let r = search(&s, &runner).unwrap();
    for e in r
        .evaluations
        .iter()
        .filter(|e| e.label.ends_with("rung 1/3"))
    {
        let epochs = e.point["epochs"].as_f64().unwrap();
        // 6 client-epochs per trial at 2·epochs per round.
        assert_eq!(
            e.rounds,
            ((6.0 / (2.0 * epochs)) as u32).max(1),
            "{:?}",
            e.point
        );
    }
}

#[test]
fn bo_finds_the_optimum_of_a_smooth_objective() {
    let runner = Fake::new(false);
    let mut s = spec(
        "name = \"bo\"\ninitial = 4\ntrials = 14\ncandidates = 500",
        1e9,
    );
    s.space = space("lr = { log = [0.0001, 1.0] }\n");
    let r = search(&s, &runner).unwrap();
    let lr = r.best_point().unwrap()["lr"].as_f64().unwrap();
    assert!((lr.ln() - 0.01f64.ln()).abs() < 0.5, "BO chose lr = {lr}");
    // Later proposals concentrate near the optimum.
    let late: Vec<f64> = r.evaluations[8..]
        .iter()
        .map(|e| e.point["lr"].as_f64().unwrap())
        .collect();
    assert!(
        late.iter()
            .filter(|l| (l.ln() - 0.01f64.ln()).abs() < 1.5)
            .count()
            >= late.len() / 2,
        "{late:?}"
    );
}

#[test]
fn pbt_needs_a_runner_that_continues_trials() {
    let e = search(
        &spec("name = \"pbt\"\npopulation = 4\ninterval = 9", 1e6),
        &Fake::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("method pbt: needs a runner that continues a trial from its saved state"),
        "{e}"
    );
}

#[test]
fn pbt_copies_the_state_of_the_best_and_perturbs_its_configuration() {
    let runner = Fake::new(true);
    let mut s = spec(
        "name = \"pbt\"\npopulation = 8\ninterval = 3\nfraction = 0.25\nresample = 0.0",
        1e9,
    );
    s.space = space("lr = { log = [0.0001, 1.0] }\n");
    s.seeds = vec![3];
    let r = search(&s, &runner).unwrap();
    assert_eq!(r.evaluations.len(), 8 * 9);
    let copies: Vec<_> = r
        .evaluations
        .iter()
        .filter(|e| e.label.contains("copies member"))
        .collect();
    assert_eq!(
        copies.len(),
        2 * 8,
        "two members replaced in each of 8 exploit steps"
    );
    for c in &copies {
        let donor = c.from.unwrap();
        assert_ne!(donor, c.lineage);
        // The donor was in the best quarter of the previous generation.
        let prev: Vec<_> = r
            .evaluations
            .iter()
            .filter(|e| e.batch + 1 == c.batch)
            .collect();
        let mut scores: Vec<f64> = prev.iter().map(|e| e.objective.unwrap()).collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        let d = prev.iter().find(|e| e.lineage == donor).unwrap();
        assert!(d.objective.unwrap() >= scores[1]);
        // Explore: ×0.8 or ×1.2 of the donor's rate.
        let ratio = c.point["lr"].as_f64().unwrap() / d.point["lr"].as_f64().unwrap();
        assert!(
            (ratio - 0.8).abs() < 1e-9 || (ratio - 1.2).abs() < 1e-9 || ratio == 1.0,
            "{ratio}"
        );
        // Continued from the donor's rounds.
        let job = &r.jobs[c.jobs[0]];
        assert_eq!(job.from_rounds, c.rounds - 3);
    }
    // The final population is better than the initial one at the same rounds would be.
    let best = r.best_point().unwrap()["lr"].as_f64().unwrap();
    assert!((best.ln() - 0.01f64.ln()).abs() < 2.0, "{best}");
    assert!(r.schedules[&r.evaluations[r.best.unwrap()].lineage].len() == 9);
}

#[test]
fn failed_trials_rank_last_and_a_fatal_one_stops_the_search() {
    let mut runner = Fake::new(false);
    runner.fail_above = 0.05;
    let r = search(&spec("name = \"grid\"", 1e6), &runner).unwrap();
    let failed: Vec<_> = r
        .evaluations
        .iter()
        .filter(|e| e.objective.is_none())
        .collect();
    assert_eq!(failed.len(), 3, "lr 0.1, 0.316 and 1 are above 0.05");
    assert!(r
        .jobs
        .iter()
        .any(|j| j.error.as_deref() == Some("lr = 0.1: diverged")));
    assert!(r.evaluations[r.best.unwrap()].objective.is_some());
    let mut runner = Fake::new(false);
    runner.fatal_above = 0.5;
    let e = search(&spec("name = \"grid\"", 1e6), &runner)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "lr = 1: fatal");
}

#[test]
fn unknown_objective_and_bad_keys_are_errors_before_training() {
    let runner = Fake::new(false);
    let mut s = spec("name = \"grid\"", 1e6);
    s.objective = "val_accuracy".into();
    let e = search(&s, &runner).unwrap_err().to_string();
    assert!(
        e.starts_with("objective: unknown metric \"val_accuracy\"; known: val_score"),
        "{e}"
    );
    let mut s = spec("name = \"grid\"", 1e6);
    s.space = space("lrr = { log = [0.001, 0.1], grid = 2 }\n");
    let e = search(&s, &runner).unwrap_err().to_string();
    assert!(e.contains("lrr: unknown key"), "{e}");
    assert_eq!(runner.runs.load(Ordering::SeqCst), 0);
}

#[test]
fn search_outputs_are_written_and_flag_a_stand_in_objective() {
    let runner = Fake::new(true);
    let dir = tempfile::tempdir().unwrap();
    let r = run_search(
        &spec("name = \"halving\"\nmin_rounds = 3\ntrials = 9", 1e6),
        &runner,
        dir.path(),
        &mut |_| {},
    )
    .unwrap();
    r.write(dir.path(), "t").unwrap();
    for f in [
        "evaluations.csv",
        "trials.csv",
        "results.md",
        "summary.json",
        "plot.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(
        md.contains("WARNING: val_score is not a validation metric yet: it is the fake's score."),
        "{md}"
    );
    let csv = std::fs::read_to_string(dir.path().join("evaluations.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 9 + 3 + 1);
    assert!(csv.starts_with("index,batch,lineage,from,label,rounds,last,lr,objective,objective_se,objective_seed_1,objective_seed_2,cost"));
    let svg = std::fs::read_to_string(dir.path().join("plot.svg")).unwrap();
    assert!(svg.contains("learning curves of the best"));
}
