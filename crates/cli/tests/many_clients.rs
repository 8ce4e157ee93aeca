//! One node hosting tens of thousands of clients (docs/network.md, "Registration in
//! parts"): their self-descriptions exceed one request's limit, so the node registers in
//! parts, and the run over loopback ends with the simulation's model; `--grid loopback`
//! takes as many node threads as the clients need, and refuses a `--nodes` too small.

mod common;

use common::{fedpace, refused, write_config, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// Runs `cfg` in simulation and over loopback (with `args` more); asserts the same
/// model; the loopback's run directory.
fn loopback_equals_simulation(dir: &Path, cfg: &str, args: &[&str]) -> PathBuf {
    let (sim, net) = (dir.join("sim"), dir.join("net"));
    fedpace(&["run", cfg, "--out", sim.to_str().unwrap()]);
    let mut a = vec![
        "run",
        cfg,
        "--grid",
        "loopback",
        "--out",
        net.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    fedpace(&a);
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&sim) == model(&net), "the models differ");
    net
}

#[test]
fn a_node_of_30000_clients_sharing_label_histograms_runs_over_loopback_as_in_simulation() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), RUN, "");
    let net = loopback_equals_simulation(tmp.path(), &cfg, &["--nodes", "1"]);
    assert!(net.join("traffic.csv").exists());
}

/// `--nodes` left out: as many node threads as the clients need (a node hosts at most
/// 100,000), here 3, and the simulation's model; `--nodes` given too small is refused
/// before anything starts, saying how many are needed.
#[test]
fn loopback_takes_as_many_nodes_as_the_clients_need() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), RUN, "[data]\nnum_clients = 200001\n");
    loopback_equals_simulation(tmp.path(), &cfg, &[]);

    let start = Instant::now();
    let mut two = Command::new(BIN);
    two.args(["run", &cfg, "--grid", "loopback", "--nodes", "2", "--out"])
        .arg(tmp.path().join("two"));
    refused(
        two,
        2,
        &[
            "--nodes = 2: 200001 clients need at least 3 nodes (a node hosts at most 100000); \
           pass --nodes 3 or more, or leave it out",
        ],
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}
