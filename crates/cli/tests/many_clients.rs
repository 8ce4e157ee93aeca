//! One node hosting tens of thousands of clients (docs/network.md, "Registration in
//! parts"): their self-descriptions exceed one request's limit, so the node registers in
//! parts, and the run over loopback ends with the simulation's model; `--grid loopback`
//! takes as many node threads as the clients need, and refuses a `--nodes` too small.

mod common;

use common::{fedpace, write_config, BIN};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUN: &str = r#"
name = "many"
seed = 3
rounds = 2
[data]
source = "bench"
num_clients = 30000
sample_shape = [60]
samples_per_client = 60
[model]
name = "logistic-regression"
[client]
lr = 0.05
batch_size = 32
share = ["label-histogram"]
[strategy]
name = "fedavg"
clients_per_round = 10
[eval]
every = 0
finetune_steps = 0
"#;

#[test]
fn a_node_of_30000_clients_sharing_label_histograms_runs_over_loopback_as_in_simulation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), RUN, "");
    let (sim, net) = (tmp.path().join("sim"), tmp.path().join("net"));
    fedpace(&["run", &cfg, "--out", sim.to_str().unwrap()]);
    fedpace(&[
        "run",
        &cfg,
        "--grid",
        "loopback",
        "--nodes",
        "1",
        "--out",
        net.to_str().unwrap(),
    ]);
    let model = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&sim) == model(&net), "the models differ");
    assert!(net.join("traffic.csv").exists());
}

/// `--nodes` left out: as many node threads as the clients need (a node hosts at most
/// 100,000), here 3, and the simulation's model; `--nodes` given too small is refused
/// before anything starts, saying how many are needed.
#[test]
fn loopback_takes_as_many_nodes_as_the_clients_need() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), RUN, "[data]\nnum_clients = 200001\n");
    let (sim, net) = (tmp.path().join("sim"), tmp.path().join("net"));
    fedpace(&["run", &cfg, "--out", sim.to_str().unwrap()]);
    fedpace(&[
        "run",
        &cfg,
        "--grid",
        "loopback",
        "--out",
        net.to_str().unwrap(),
    ]);
    let model = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&sim) == model(&net), "the models differ");

    let start = Instant::now();
    let out = Command::new(BIN)
        .args(["run", &cfg, "--grid", "loopback", "--nodes", "2", "--out"])
        .arg(tmp.path().join("two"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(
            "--nodes = 2: 200001 clients need at least 3 nodes (a node hosts at most 100000); \
             pass --nodes 3 or more, or leave it out"
        ),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}
