//! A new user's mistakes with `fedpace server`, `node`, `client` and `datasets export`
//! (docs/network.md, "Commands"): each is refused with one `error:` line naming the flag
//! or field, the value and what was expected — before anything runs, never a panic — and
//! a signal ends a server still waiting for its clients at once.

mod common;

use common::{make_keys, node_command, refused, write_config, BIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUN: &str = r#"
name = "mistakes"
seed = 1
rounds = 2
[data]
source = "synthetic"
num_clients = 4
[input]
sample_shape = [60]
num_classes = 10
[model]
name = "logistic-regression"
[strategy]
name = "fedavg"
clients_per_round = 4
"#;

/// A flag of `server` given another file.
type Swap<'a> = Option<(&'a str, &'a Path)>;

fn server(cfg: &str, keys: &Path, listen: &str, swap: Swap) -> Command {
    let mut c = Command::new(BIN);
    c.args(["server", cfg, "--listen", listen, "--wait", "1"]);
    for (flag, path) in [
        ("--keys", keys.join("ring.toml")),
        ("--tls-cert", keys.join("server.pem")),
        ("--tls-key", keys.join("server-key.pem")),
    ] {
        let path = match swap {
            Some((f, p)) if f == flag => p.to_path_buf(),
            _ => path,
        };
        c.arg(flag).arg(path);
    }
    c.stdout(Stdio::null());
    c
}

#[test]
fn server_flag_mistakes_are_one_line_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let cfg = cfg.as_str();
    let missing = keys.join("servr.pem");
    let cases: [(Swap, &[&str]); 4] = [
        (
            Some(("--tls-cert", &missing)),
            &["--tls-cert ", "servr.pem: No such file"],
        ),
        (
            Some(("--tls-cert", &keys.join("server-key.pem"))),
            &["--tls-cert ", "no CERTIFICATE block", "server certificate"],
        ),
        (
            Some(("--tls-key", &keys.join("server.pem"))),
            &["--tls-key ", "no PRIVATE KEY block"],
        ),
        (
            Some(("--keys", &keys.join("a.key"))),
            &["--keys ", "a.key", "expected the key ring"],
        ),
    ];
    for (swap, want) in cases {
        refused(server(cfg, &keys, "127.0.0.1:0", swap), 2, want);
    }
    for listen in ["7150", "127.0.0.1:99999", "nosuchhost.invalid:7150"] {
        refused(
            server(cfg, &keys, listen, None),
            2,
            &[&format!("--listen = {listen}: "), "expected HOST:PORT"],
        );
    }
    // A port already in use names --listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    refused(
        server(cfg, &keys, &addr, None),
        2,
        &["--listen: listen on ", &addr, "in use"],
    );
    drop(taken);
    // A host name is resolved: the server listens (and, with no client, gives up).
    let out = server(cfg, &keys, "localhost:0", None).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listening on 127.0.0.1:") || err.contains("listening on [::1]:"),
        "{err}"
    );
    assert!(
        err.contains("0 of 4 clients connected within 1 s (--wait)"),
        "{err}"
    );
}

#[test]
fn node_flag_mistakes_are_one_line_naming_the_flag_before_any_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let cfg = cfg.as_str();
    let node = |server: &str, name: &str| {
        let mut c = node_command(&["node", cfg, "--clients", "0..4"], server, &keys, name);
        c.args(["--give-up", "1"]);
        c
    };
    // Files: a missing key, a CA certificate given as the key, a private key as the CA.
    refused(
        node("127.0.0.1:7150", "nobody"),
        2,
        &[
            "--key ",
            "nobody.key: No such file",
            "fedpace keys generate --out",
        ],
    );
    std::fs::copy(keys.join("ca.pem"), keys.join("ca.key")).unwrap();
    refused(
        node("127.0.0.1:7150", "ca"),
        2,
        &["--key ", "ca.key", "expected the node credential"],
    );
    let mut c = Command::new(BIN);
    c.args([
        "node",
        cfg,
        "--clients",
        "0..4",
        "--server",
        "127.0.0.1:7150",
    ])
    .arg("--key")
    .arg(keys.join("a.key"))
    .arg("--ca")
    .arg(keys.join("server-key.pem"));
    refused(c, 2, &["--ca ", "server-key.pem: no CERTIFICATE block"]);
    // Addresses: no port, a scheme.
    refused(
        node("127.0.0.1", "a"),
        2,
        &["--server = 127.0.0.1: expected HOST:PORT"],
    );
    refused(
        node("https://127.0.0.1:7150", "a"),
        2,
        &["--server = https://127.0.0.1:7150: expected HOST:PORT without a scheme"],
    );
    let mut c = node("127.0.0.1:7150", "a");
    c.args(["--workers", "0"]);
    refused(c, 2, &["--workers = 0: expected at least 1"]);
    let mut c = node_command(
        &["client", "--partition-of", cfg, "--id", "0"],
        "127.0.0.1",
        &keys,
        "a",
    );
    c.args(["--state-dir"]).arg(tmp.path().join("state"));
    refused(c, 2, &["--server = 127.0.0.1: expected HOST:PORT"]);
}

/// SIGTERM while the server waits for its clients ends it at once (exit 143), saying
/// that nothing ran; the run directory is not created.
#[test]
fn a_signal_ends_a_server_waiting_for_its_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let out = tmp.path().join("run");
    let mut c = Command::new(BIN);
    c.args(["server", &cfg, "--listen", "127.0.0.1:0", "--wait", "600"])
        .arg("--keys")
        .arg(keys.join("ring.toml"))
        .arg("--tls-cert")
        .arg(keys.join("server.pem"))
        .arg("--tls-key")
        .arg(keys.join("server-key.pem"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(sent.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(
        err.lines().last().unwrap_or_default().contains(
            "stopped by SIGTERM while waiting for clients (0 of 4 registered): no round ran"
        ),
        "{err}"
    );
    assert!(!out.exists());
}

/// `fedpace datasets export` of a Shakespeare config writes nothing and says what a
/// client does instead (no data needed to say it).
#[test]
fn exporting_shakespeare_says_how_a_client_brings_its_role() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "name = \"s\"\n[data]\nsource = \"shakespeare\"\n[model]\nname = \"char-lstm\"\n",
        "",
    );
    let mut c = Command::new(BIN);
    c.args(["datasets", "--data-dir"])
        .arg(tmp.path().join("no-data"))
        .args(["export", &cfg, "--out"])
        .arg(tmp.path().join("out"));
    refused(
        c,
        2,
        &[
            "data.source = shakespeare",
            "--data PLAY.md --role NAME",
            "--data LINES.txt",
        ],
    );
    assert!(!tmp.path().join("out").exists());
}

/// The `fedpace server --resume RUN_DIR …` command in the server's last line, run as a
/// user would paste it (no path here holds a space); asserts that it succeeded. Returns
/// the command and the resumed server's stderr.
fn run_printed_resume(log: &str, net: &Path) -> (String, String) {
    let last = log.lines().last().unwrap_or_default();
    let command = last
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {log}"));
    assert!(
        command.starts_with(&format!("fedpace server --resume {}", net.display())),
        "{log}"
    );
    let resumed = Command::new(BIN)
        .args(command.split(' ').skip(1))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let rlog = String::from_utf8_lossy(&resumed.stderr).into_owned();
    assert!(resumed.status.success(), "{rlog}");
    (command.to_string(), rlog)
}

/// SIGTERM to a server mid-run: it stops after the round, checkpoints, exits 143 and
/// prints the exact `fedpace server --resume …` command; the nodes wait, the command
/// continues the run, and it ends with the uninterrupted run's model.
#[test]
fn a_server_stopped_by_sigterm_prints_the_resume_command_that_finishes_the_run() {
    use common::{fedpace, lines, Kill, Server};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(
        tmp.path(),
        RUN,
        "rounds = 300\n[model]\nname = \"mlp\"\nhidden = [32]\n[client]\nepochs = 3\n\
         [checkpoint]\nevery = 50\n",
    );
    let straight = tmp.path().join("straight");
    fedpace(&["run", &cfg, "--out", straight.to_str().unwrap()]);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let net = tmp.path().join("net");
    // With a setting the resumed server must keep: the printed command repeats it.
    let server = Server::start(
        &[
            cfg.as_str(),
            "--out",
            net.to_str().unwrap(),
            "--sign-every-request",
        ],
        &listen,
        &keys,
    );
    let node = server
        .node(&["node", &cfg, "--clients", "0..4"], &keys, "a")
        .args(["--give-up", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut node = Kill(vec![node]);
    let start = Instant::now();
    while lines(&net.join("metrics.jsonl")) < 10 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(143), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("(the nodes wait for it up to their --give-up)"),
        "{log}"
    );
    let stopped_at = lines(&net.join("metrics.jsonl"));
    assert!(
        stopped_at < 300,
        "the run finished before the signal: {log}"
    );
    let (command, rlog) = run_printed_resume(&log, &net);
    assert!(command.ends_with(" --sign-every-request"), "{log}");
    assert!(rlog.contains(", 0 by connection token;"), "{rlog}");
    let n = node.0.pop().unwrap().wait_with_output().unwrap();
    let nlog = String::from_utf8_lossy(&n.stderr);
    assert!(n.status.success(), "{nlog}");
    assert!(nlog.contains("the server's run is over"), "{nlog}");
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        model(&straight) == model(&net),
        "stopped after {stopped_at} rounds: the resumed model differs\n{log}\n{rlog}"
    );
}

/// A server whose writes fail part-way (a full disk; here a file-size limit, which fails
/// a write with EFBIG as a full disk fails it with ENOSPC) exits 1 with the write's error,
/// the round of the checkpoint it keeps and the `fedpace server --resume …` command; the
/// node waits, the command continues the run, and it ends with the uninterrupted run's
/// model.
#[test]
fn a_server_whose_writes_fail_prints_the_resume_command_that_finishes_the_run() {
    use common::{fedpace, Kill, Server};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(tmp.path(), RUN, "rounds = 60\n[checkpoint]\nevery = 4\n");
    let straight = tmp.path().join("straight");
    fedpace(&["run", &cfg, "--out", straight.to_str().unwrap()]);
    let limit = 30_000;
    assert!(
        std::fs::metadata(straight.join("metrics.jsonl"))
            .unwrap()
            .len()
            > 2 * limit
    );
    // A fixed port: the printed command listens where the node looks for the server.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let net = tmp.path().join("net");
    let server = Server::start_with(
        &[cfg.as_str(), "--out", net.to_str().unwrap()],
        &listen,
        &keys,
        |c| common::limit_file_size(c, limit),
    );
    let node = server
        .node(&["node", &cfg, "--clients", "0..4"], &keys, "a")
        .args(["--give-up", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut node = Kill(vec![node]);
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: recording the run: ")
            && last.contains("(os error 27)")
            && last.contains("the checkpoint after round ")
            && last.contains("continues the run (the nodes wait for it up to their --give-up)"),
        "{log}"
    );
    assert!(!net.join("summary.json").exists(), "{log}");
    let (_, rlog) = run_printed_resume(&log, &net);
    let n = node.0.pop().unwrap().wait_with_output().unwrap();
    let nlog = String::from_utf8_lossy(&n.stderr);
    assert!(n.status.success(), "{nlog}");
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&straight) == model(&net), "{log}\n{rlog}");
}

/// `fedpace keys generate --out` an existing file is refused (it may be another node's
/// credential) and the ring is left as it was; `run --grid loopback --nodes 0` is refused.
#[test]
fn keys_never_overwrite_a_credential_and_nodes_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let (ring, cred) = (keys.join("ring.toml"), keys.join("a.key"));
    let before = (std::fs::read(&ring).unwrap(), std::fs::read(&cred).unwrap());
    let mut c = Command::new(BIN);
    c.args([
        "keys",
        "generate",
        "--name",
        "b",
        "--clients",
        "10..20",
        "--ring",
    ])
    .arg(&ring)
    .arg("--out")
    .arg(&cred);
    refused(c, 2, &["--out ", "a.key: exists; expected a new file"]);
    assert!(before == (std::fs::read(&ring).unwrap(), std::fs::read(&cred).unwrap()));

    let cfg = write_config(tmp.path(), RUN, "");
    let mut c = Command::new(BIN);
    c.args(["run", &cfg, "--grid", "loopback", "--nodes", "0", "--out"])
        .arg(tmp.path().join("run"));
    refused(c, 2, &["--nodes = 0: expected at least 1"]);
}

/// `fedpace server --resume RUN_DIR` of a finished run says to pass `--rounds M`; the
/// server takes it (as `fedpace resume` does): the run continues to M rounds with a new
/// node and ends with the model of a straight M-round `fedpace run`.
#[test]
fn a_finished_server_run_continues_with_resume_and_rounds() {
    use common::{fedpace, Server};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..4")]);
    let cfg = write_config(tmp.path(), RUN, "rounds = 3\n[checkpoint]\nevery = 1\n");
    let straight = tmp.path().join("straight");
    fedpace(&[
        "run",
        &cfg,
        "--set",
        "rounds=5",
        "--out",
        straight.to_str().unwrap(),
    ]);
    let listen = format!("127.0.0.1:{}", common::free_port());
    let net = tmp.path().join("net");
    let serve = |args: &[&str]| {
        let server = Server::start(args, &listen, &keys);
        let node = server
            .node(&["node", &cfg, "--clients", "0..4"], &keys, "a")
            .args(["--give-up", "60"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, log) = server.wait();
        let n = node.wait_with_output().unwrap();
        (status, log, String::from_utf8_lossy(&n.stderr).into_owned())
    };
    let (status, log, _) = serve(&[cfg.as_str(), "--out", net.to_str().unwrap()]);
    assert!(status.success(), "{log}");
    let mut c = Command::new(BIN);
    c.args([
        "server",
        "--resume",
        net.to_str().unwrap(),
        "--listen",
        &listen,
    ])
    .arg("--keys")
    .arg(keys.join("ring.toml"))
    .arg("--tls-cert")
    .arg(keys.join("server.pem"))
    .arg("--tls-key")
    .arg(keys.join("server-key.pem"));
    refused(c, 2, &["nothing to run; pass --rounds M (more than 3)"]);
    let (status, log, nlog) = serve(&["--resume", net.to_str().unwrap(), "--rounds", "5"]);
    assert!(status.success(), "{log}\nnode: {nlog}");
    assert!(nlog.contains("the server's run is over"), "{nlog}");
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&straight) == model(&net), "{log}");
    let mut c = Command::new(BIN);
    c.args(["server", &cfg, "--rounds", "5", "--listen", &listen]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

/// SIGTERM to a node whose Pull is waiting for work: it leaves at once, not after the
/// Pull's wait (10 s), and the server sees it go.
#[test]
fn a_signal_ends_a_waiting_node_at_once() {
    use common::Server;
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("a", "0..2"), ("b", "2..4")]);
    let cfg = write_config(tmp.path(), RUN, "");
    let out = tmp.path().join("run");
    // The server waits for all 4 clients; node a brings 2, so its Pull only waits.
    let server = Server::start(
        &[cfg.as_str(), "--out", out.to_str().unwrap()],
        "127.0.0.1:0",
        &keys,
    );
    let mut node = server
        .node(&["node", &cfg, "--clients", "0..2"], &keys, "a")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(node.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("connected") {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "node ended: {seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    let status = node.wait().unwrap();
    let took = sent.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(took < Duration::from_secs(3), "took {took:?}: {seen}{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
    assert!(status.success(), "{status:?}: {seen}{rest}");
    assert!(rest.contains("0 instructions answered"), "{rest}");
    drop(server);
}
