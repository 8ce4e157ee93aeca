//! Issue 13, "clients that disconnect and come back" and "keeps its `LocalState` on its own
//! disk across rounds and restarts": a `fedpace node` process killed with SIGKILL in the
//! middle of a run and started again with the same key and state directory re-registers,
//! is given its unanswered instructions again (docs/network.md, "Faults"), trains them from
//! the client states on its disk, and the run ends exactly as an uninterrupted one — for
//! clients that keep Adam moments and for scaffold's control variates. A single
//! `fedpace client` process keeps its Ditto personal model the same way.

mod common;

use common::{fedpace, lines, make_keys, metrics_without_times, write_config, Kill, Server};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// 12 synthetic clients on three nodes, every client in every round, rounds of some tens
/// of milliseconds so that the kill lands inside the run.
const RUN: &str = r#"
name = "node-restart"
seed = 5
rounds = 12
threads = 1
[data]
source = "synthetic"
num_clients = 12
[model]
name = "mlp"
hidden = [24]
[client]
lr = 0.02
batch_size = 8
epochs = 2
[eval]
every = 3
"#;

fn node(server: &Server, cfg: &str, range: &str, keys: &Path, i: usize, state: &Path) -> Child {
    server
        .node(
            &["node", cfg, "--clients", range],
            keys,
            &format!("node-{i}"),
        )
        .arg("--state-dir")
        .arg(state)
        .args(["--give-up", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_node_killed_with_sigkill_and_restarted_ends_as_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let ranges = ["0..4", "4..8", "8..12"];
    make_keys(
        &keys,
        &[
            ("node-0", ranges[0]),
            ("node-1", ranges[1]),
            ("node-2", ranges[2]),
        ],
    );
    let cases = [
        (
            "fedavg-adam-keep",
            "[client]\noptimizer = { name = \"adam\" }\nstate_mode = \"keep\"\n\
             [strategy]\nname = \"fedavg\"\nclients_per_round = 12\n",
            4usize,
        ),
        (
            "scaffold",
            "[strategy]\nname = \"scaffold\"\nclients_per_round = 12\n",
            7,
        ),
    ];
    for (name, extra, at) in cases {
        let case = tmp.path().join(name);
        std::fs::create_dir_all(&case).unwrap();
        let cfg = write_config(&case, RUN, extra);
        let cfg = cfg.as_str();
        let straight = case.join("straight");
        fedpace(&["run", cfg, "--out", straight.to_str().unwrap()]);

        let net = case.join("net");
        let server = Server::start(&[cfg, "--out", net.to_str().unwrap()], "127.0.0.1:0", &keys);
        let state = |i: usize| case.join(format!("states-{i}"));
        let mut nodes = Kill(
            (0..3)
                .map(|i| node(&server, cfg, ranges[i], &keys, i, &state(i)))
                .collect(),
        );

        // Kill node 1 once `at` rounds are recorded: every client takes part in every
        // round, so its clients are then training round `at + 1` or about to be sent it.
        let start = Instant::now();
        while lines(&net.join("metrics.jsonl")) < at {
            assert!(
                !net.join("summary.json").exists(),
                "{name}: the server ended before the kill"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{name}: no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        nodes.0[1].kill().unwrap(); // SIGKILL
        nodes.0[1].wait().unwrap();
        assert!(
            !net.join("summary.json").exists(),
            "{name}: the run finished before the kill; make its rounds slower"
        );
        let killed_after = lines(&net.join("metrics.jsonl"));
        // Started again at once, well inside the server's heartbeat timeout (10 s): its
        // session's leased instructions are delivered to it again under the same ids.
        nodes.0[1] = node(&server, cfg, ranges[1], &keys, 1, &state(1));

        let (status, log) = server.wait();
        assert!(status.success(), "{name}: server: {log}");
        for (i, mut n) in std::mem::take(&mut nodes.0).into_iter().enumerate() {
            // A node told that the run is over exits; one that missed it would wait for
            // the server to come back, so it gets a minute before it counts as hung.
            let waited = Instant::now();
            while n.try_wait().unwrap().is_none() && waited.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let hung = n.try_wait().unwrap().is_none();
            if hung {
                n.kill().ok();
            }
            let out = n.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!hung, "{name}: node {i} still running a minute after the server exited: {err}\nserver: {log}");
            assert!(out.status.success(), "{name}: node {i}: {err}");
            if i == 1 {
                // The restarted node trained the killed one's clients to the end.
                let answered: usize = err
                    .split(" instructions answered")
                    .next()
                    .and_then(|t| t.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: node 1: {err}"));
                assert!(
                    answered >= 4 * (12 - killed_after),
                    "{name}: the restarted node answered {answered}: {err}"
                );
            }
            assert!(
                err.contains("the server's run is over"),
                "{name}: node {i}: {err}"
            );
        }

        let what = format!("{name} (node 1 killed after {killed_after} rounds)");
        let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(
            model(&straight) == model(&net),
            "{what}: the final model differs; server log:\n{log}"
        );
        let (a, b) = (
            metrics_without_times(&straight),
            metrics_without_times(&net),
        );
        assert_eq!(a.len(), b.len(), "{what}: metrics.jsonl lines");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{what}: metrics.jsonl line {}", i + 1);
        }
    }
}

/// The same for one `fedpace client` process (`--partition-of`: client K's share of the
/// experiment's data) of a Ditto run: killed with SIGKILL mid-run and started again with
/// its state directory, it resumes its personal model from disk. Its final state file
/// (personal model included) is byte for byte the one of an uninterrupted federation, and
/// every round's record and the final model equal the simulation's. (Ditto's global model
/// does not depend on the personal ones, and accuracies on a small test set are too
/// coarse to show one reset: the state file is the check.)
#[test]
fn a_client_killed_with_sigkill_and_restarted_keeps_its_personal_model() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let names: Vec<(String, String)> = (0..4)
        .map(|k| (format!("client-{k}"), format!("{k}..{}", k + 1)))
        .collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    make_keys(&keys, &pairs);
    let cfg = write_config(
        tmp.path(),
        RUN,
        "[data]\nnum_clients = 4\n[client]\nepochs = 6\n\
         [strategy]\nname = \"ditto\"\nlambda = 1.0\nclients_per_round = 4\n\
         [eval]\npersonalized = \"personal-model\"\nfinetune_steps = 0\n",
    );
    let cfg = cfg.as_str();
    let straight = tmp.path().join("straight");
    fedpace(&["run", cfg, "--out", straight.to_str().unwrap()]);

    // A federation of four client processes; with `kill`, client 2 is killed after 5
    // rounds and started again. Returns the run directory and client 2's last state file.
    let federation = |name: &str, kill: bool| {
        let net = tmp.path().join(name);
        let server = Server::start(&[cfg, "--out", net.to_str().unwrap()], "127.0.0.1:0", &keys);
        let state = tmp.path().join(format!("{name}-states"));
        let client = |k: usize| {
            server
                .node(
                    &["client", "--partition-of", cfg, "--id", &k.to_string()],
                    &keys,
                    &format!("client-{k}"),
                )
                .arg("--state-dir")
                .arg(state.join(k.to_string()))
                .args(["--give-up", "60"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut clients = Kill((0..4).map(client).collect());
        if kill {
            let start = Instant::now();
            while lines(&net.join("metrics.jsonl")) < 5 {
                assert!(
                    !net.join("summary.json").exists(),
                    "the server ended before the kill"
                );
                assert!(start.elapsed() < Duration::from_secs(120), "no progress");
                std::thread::sleep(Duration::from_millis(2));
            }
            clients.0[2].kill().unwrap(); // SIGKILL
            clients.0[2].wait().unwrap();
            assert!(
                !net.join("summary.json").exists(),
                "the run finished before the kill; make its rounds slower"
            );
            clients.0[2] = client(2);
        }
        let (status, log) = server.wait();
        assert!(status.success(), "{name}: server: {log}");
        for (k, c) in std::mem::take(&mut clients.0).into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: client {k}: {err}");
            assert!(
                err.contains("the server's run is over"),
                "{name}: client {k}: {err}"
            );
        }
        let last = state.join("2/client-2/12.state");
        (
            net,
            std::fs::read(&last).unwrap_or_else(|e| panic!("{}: {e}", last.display())),
        )
    };
    let (whole, whole_state) = federation("whole", false);
    let (net, state) = federation("killed", true);
    assert!(
        state == whole_state,
        "client 2's final state (its personal model) differs from the uninterrupted run's"
    );
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    for run in [&whole, &net] {
        assert!(
            model(&straight) == model(run),
            "{}: models differ",
            run.display()
        );
        let (a, b) = (metrics_without_times(&straight), metrics_without_times(run));
        assert_eq!(a.len(), b.len(), "{}: metrics.jsonl lines", run.display());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{}: metrics.jsonl line {}", run.display(), i + 1);
        }
    }
}
