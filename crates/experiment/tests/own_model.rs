//! The `own_model` example runs, learns, and goes through the same code as any
//! experiment: central evaluation by the server, determinism over thread counts, the
//! run directory's config (docs/library.md).

#[path = "../examples/own_model.rs"]
mod own_model;

use fedpace_experiment::{Experiment, RunOptions};

#[test]
fn own_model_example_learns_and_is_evaluated_by_the_server() {
    let one = own_model::run(1).unwrap();
    let global = &one.summary["global"];
    // Three separable blobs (centres ≥ 3.2 apart, σ = 0.8): a softmax regression
    // trained by FedAvg classifies most of the server's 300 samples.
    assert_eq!(global["evaluated_on"], "held-out test set");
    let central = one
        .outcome
        .final_eval
        .central
        .expect("the server's test set");
    assert_eq!(central.count, 300);
    assert!(global["accuracy"].as_f64().unwrap() > 0.9, "{global}");
    assert_eq!(one.summary["rounds_completed"], 20);
    // Same config and seed: the same bits on another thread count.
    let two = own_model::run(2).unwrap();
    assert_eq!(one.model().as_slice(), two.model().as_slice());
    assert_eq!(two.outcome.final_eval.central, Some(central));
}

#[test]
fn central_evaluation_can_be_replaced_or_removed_on_a_prepared_experiment() {
    let reg = own_model::registry().unwrap();
    let prepared = reg
        .experiment(own_model::EXPERIMENT, "own_model.rs", &["rounds=2".into()])
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(
        prepared.central().map(|c| c.describe()),
        Some("300 held-out samples".to_string())
    );
    let result = prepared
        .with_central(None)
        .run(RunOptions::default())
        .unwrap();
    assert_eq!(result.outcome.final_eval.central, None);
    assert_eq!(
        result.summary["global"]["evaluated_on"],
        "client test splits"
    );
}

#[test]
fn registered_names_are_written_to_the_run_directory_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let reg = own_model::registry().unwrap();
    let exp = reg
        .experiment(own_model::EXPERIMENT, "own_model.rs", &["rounds=1".into()])
        .unwrap();
    exp.run(RunOptions::default().with_dir(&out)).unwrap();
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("source = \"blobs\""), "{written}");
    assert!(written.contains("name = \"softmax\""), "{written}");
    let again = reg.load(out.join("config.toml"), &[]).unwrap();
    assert_eq!(again.config(), exp.config());
    // Without the registry the names mean nothing: the built-in parser says so.
    let e = Experiment::from_path(out.join("config.toml"), &[]).unwrap_err();
    assert!(e.is_usage() && e.to_string().contains("blobs"), "{e}");
}

#[test]
fn a_registered_data_set_takes_no_other_data_keys() {
    let reg = own_model::registry().unwrap();
    let e = reg
        .experiment(
            own_model::EXPERIMENT,
            "exp.toml",
            &["data.num_clients=3".into()],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--set data.num_clients=3: data.num_clients: not an option of the registered data set \
         \"blobs\" (its clients are as registered); expected only data.source"
    );
}
