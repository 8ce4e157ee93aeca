//! Nodes started before their server (docs/network.md, "Faults"): `fedpace node` waits
//! for the server like after a disconnection — retrying until `--give-up` — so a user who
//! starts the clients first and the server seconds later loses none of them, and the run
//! ends exactly as `fedpace run`; with no server at all the node exits after `--give-up`
//! with one line naming the address; a server certificate it does not trust ends it at
//! once.

mod common;

use common::{fedpace, free_port, make_keys, node_command, write_config, Kill, Server};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUN: &str = r#"
name = "first-contact"
seed = 3
rounds = 3
threads = 1
[data]
source = "synthetic"
num_clients = 6
[model]
name = "mlp"
hidden = [16]
[client]
lr = 0.05
batch_size = 8
[strategy]
name = "fedavg"
clients_per_round = 6
"#;

/// Waits up to `limit` for `child` to exit; its exit code and stderr (killed if hung).
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let hung = child.try_wait().unwrap().is_none();
    if hung {
        child.kill().ok();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!hung, "still running after {limit:?}: {err}");
    (out.status.code(), err, took)
}

/// Waits for `child` (see [`finish`]) and asserts it exited 1 with exactly one `error:`
/// line; that line, all of stderr, and how long it took.
fn fails_with_one_line(child: Child) -> (String, String, Duration) {
    let (code, err, took) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    (errors[0].to_string(), err, took)
}

#[test]
fn nodes_started_before_the_server_wait_for_it_and_the_run_ends_as_fedpace_run() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("node-0", "0..3"), ("node-1", "3..6")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let cfg = cfg.as_str();
    let straight = tmp.path().join("straight");
    fedpace(&["run", cfg, "--out", straight.to_str().unwrap()]);

    let addr = format!("127.0.0.1:{}", free_port());
    let node = |i: usize, range: &str| {
        node_command(
            &["node", cfg, "--clients", range],
            &addr,
            &keys,
            &format!("node-{i}"),
        )
        .args(["--give-up", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let mut nodes = Kill(vec![node(0, "0..3"), node(1, "3..6")]);
    // Longer than the first contact used to wait for a refused connection.
    std::thread::sleep(Duration::from_secs(3));
    for n in &mut nodes.0 {
        assert!(
            n.try_wait().unwrap().is_none(),
            "a node exited before the server started"
        );
    }
    let net = tmp.path().join("net");
    let server = Server::start(&[cfg, "--out", net.to_str().unwrap()], &addr, &keys);
    let (status, log) = server.wait();
    assert!(status.success(), "server: {log}");
    for (i, n) in std::mem::take(&mut nodes.0).into_iter().enumerate() {
        let (code, err, _) = finish(n, Duration::from_secs(60));
        assert_eq!(code, Some(0), "node {i}: {err}");
        assert!(
            err.contains(&format!("waiting up to 60 s for {addr}")),
            "node {i}: {err}"
        );
        assert!(err.contains("the server's run is over"), "node {i}: {err}");
    }
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        model(&straight) == model(&net),
        "the final model differs from fedpace run's; server log:\n{log}"
    );
}

#[test]
fn a_node_with_no_server_exits_after_give_up_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("node-0", "0..6")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = node_command(
        &["node", cfg.as_str(), "--clients", "0..6"],
        &addr,
        &keys,
        "node-0",
    )
    .args(["--give-up", "2"])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (error, err, took) = fails_with_one_line(child);
    assert!(
        error.contains(&format!("server {addr}: unreachable for"))
            && error.contains("give_up = 2s")
            && error.contains("Connection refused"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");
}

/// A node given the wrong CA is refused by its own TLS check: it exits 2 at once, not
/// after `--give-up`, with one line naming the server and what to check.
#[test]
fn a_node_that_does_not_trust_the_server_certificate_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let other = tmp.path().join("other");
    make_keys(&keys, &[("node-0", "0..6")]);
    make_keys(&other, &[]);
    let cfg = write_config(tmp.path(), RUN, "");
    let net = tmp.path().join("net");
    let server = Server::start(
        &[cfg.as_str(), "--out", net.to_str().unwrap()],
        "127.0.0.1:0",
        &keys,
    );
    // The right key, the other CA.
    std::fs::copy(keys.join("node-0.key"), other.join("node-0.key")).unwrap();
    let child = server
        .node(
            &["node", cfg.as_str(), "--clients", "0..6"],
            &other,
            "node-0",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (error, err, took) = fails_with_one_line(child);
    assert!(
        error.contains(&format!("tls: server {}", server.addr))
            && error.contains("invalid peer certificate"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");
    drop(server);
}

/// `fedpace keys revoke` on the ring a running server reads: the server refuses the node
/// within seconds, without a restart, and the node exits 1 with one line saying so;
/// `keys list` shows it revoked; an unknown name is one line naming it.
#[test]
fn a_node_revoked_with_fedpace_keys_revoke_is_refused_by_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("node-0", "0..3"), ("node-1", "3..6")]);
    let ring = keys.join("ring.toml");
    let ring = ring.to_str().unwrap();
    let cfg = write_config(tmp.path(), RUN, "");
    let net = tmp.path().join("net");
    let server = Server::start(
        &[cfg.as_str(), "--out", net.to_str().unwrap()],
        "127.0.0.1:0",
        &keys,
    );
    let out = fedpace(&["keys", "revoke", "--ring", ring, "--name", "node-1"]);
    assert!(out.status.success());
    let listed = fedpace(&["keys", "list", "--ring", ring]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    // NAME REVOKED CLIENTS PUBLIC-KEY
    let revoked = |name: &str| {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(revoked("node-1"), "yes", "{listed}");
    assert_eq!(revoked("node-0"), "no", "{listed}");
    let child = server
        .node(
            &["node", cfg.as_str(), "--clients", "3..6"],
            &keys,
            "node-1",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (error, err, took) = fails_with_one_line(child);
    assert!(error.contains("revoked"), "{err}");
    // Refused at its next request, or its waiting Pull ends within the server's ring
    // reload period (2 s): well before a Pull's 10 s wait.
    assert!(took < Duration::from_secs(8), "{took:?}: {err}");
    drop(server);
    let mut unknown = Command::new(env!("CARGO_BIN_EXE_fedpace"));
    unknown.args(["keys", "revoke", "--ring", ring, "--name", "node-9"]);
    common::refused(unknown, 2, &["node-9"]);
}
