//! Issue 13 end to end, small but real: a `fedpace server` and three `fedpace node`
//! processes (clients 0..4, 4..7, 7..10) over TLS on 127.0.0.1 with keys from `fedpace
//! keys`, against `fedpace run` in simulation and with `--grid loopback`: the three
//! final models are byte-identical and the networked runs write `traffic.csv`.

mod common;

use common::{fedpace, lines, make_keys, metrics_without_times, write_config, Kill, Server, BIN};
use std::path::Path;
use std::process::{Command, Stdio};

fn config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml")
}

#[test]
fn server_and_node_processes_over_tls_equal_the_simulation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let rounds = "rounds=3";
    fedpace(&["run", cfg, "--set", rounds, "--out", &d("sim"), "--traffic"]);
    fedpace(&[
        "run",
        cfg,
        "--set",
        rounds,
        "--out",
        &d("lb"),
        "--grid",
        "loopback",
    ]);

    let keys = tmp.path().join("keys");
    let ranges = ["0..4", "4..7", "7..10"];
    make_keys(
        &keys,
        &[
            ("node-0", ranges[0]),
            ("node-1", ranges[1]),
            ("node-2", ranges[2]),
        ],
    );
    let listed = fedpace(&["keys", "list", "--ring", &d("keys/ring.toml")]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("node-2"));

    let server = Server::start(
        &[cfg, "--set", rounds, "--out", &d("net")],
        "127.0.0.1:0",
        &keys,
    );
    let mut children = Kill(Vec::new());
    for (i, r) in ranges.iter().enumerate() {
        children.0.push(
            server
                .node(
                    &["node", cfg, "--set", rounds, "--clients", r],
                    &keys,
                    &format!("node-{i}"),
                )
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let (status, log) = server.wait();
    assert!(status.success(), "server: {log}");
    // Each node signed its connection's first request; the rest carried its token.
    let admitted = log
        .lines()
        .find_map(|l| l.split_once("requests admitted: "))
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| panic!("no requests line: {log}"));
    let counts: Vec<u64> = admitted
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() == 3 && counts[0] >= 3 && counts[1] > counts[0] && counts[2] == 0,
        "{admitted}"
    );

    let model = |run: &str| std::fs::read(tmp.path().join(run).join("model.safetensors")).unwrap();
    assert_eq!(model("sim"), model("lb"), "loopback model");
    assert_eq!(model("sim"), model("net"), "server + node processes model");
    // Per client and round: computed in simulation, measured over loopback and between
    // the processes — the same bytes, part by part (the wire columns aside).
    let rows = |run: &str| -> Vec<String> {
        std::fs::read_to_string(tmp.path().join(run).join("traffic.csv"))
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                [&f[..5], &f[7..]].concat().join(",")
            })
            .collect()
    };
    let computed = rows("sim");
    assert!(
        computed[0] == "round,client,kind,sent,received,model,plan,instruction_payloads,update,reply_payloads",
        "{computed:?}"
    );
    for run in ["lb", "net"] {
        let t = rows(run);
        // 3 rounds × 10 clients trained, evaluations at round 3 (eval.every = 5: last round).
        assert_eq!(
            t.iter().filter(|l| l.contains(",train,")).count(),
            30,
            "{run}: {t:?}"
        );
        assert_eq!(computed, t, "{run}: traffic.csv against the simulation's");
    }
    // The same figures per round in metrics.jsonl and in all in summary.json: computed
    // in simulation (--traffic), measured over loopback and between the processes.
    let json = |run: &str, file: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(tmp.path().join(run).join(file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let traffic = |run: &str| -> Vec<serde_json::Value> {
        json(run, "metrics.jsonl")
            .into_iter()
            .map(|v| v["traffic"].clone())
            .collect()
    };
    let sim = traffic("sim");
    assert_eq!(sim.len(), 3);
    assert!(
        sim.iter().all(|t| t["model"].as_u64().unwrap() > 0),
        "{sim:?}"
    );
    assert_eq!(sim[0]["messages"], 10, "{sim:?}");
    assert_eq!(sim[2]["messages"], 20, "round 3 also evaluates: {sim:?}");
    assert_eq!(sim, traffic("lb"), "loopback traffic");
    assert_eq!(sim, traffic("net"), "server + node processes traffic");
    let total = |run: &str| {
        let text = std::fs::read_to_string(tmp.path().join(run).join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["traffic"].clone()
    };
    assert_eq!(total("sim"), total("lb"));
    assert_eq!(total("sim"), total("net"));
    let sent: u64 = sim.iter().map(|t| t["sent"].as_u64().unwrap()).sum();
    assert_eq!(total("sim")["sent"], sent);
}

/// Small but real, with rounds of some tens of milliseconds so that a kill lands inside
/// the run: 12 synthetic clients on three nodes, an MLP, checkpoints every 2 rounds.
const KILLED: &str = r#"
name = "restart"
seed = 3
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
[checkpoint]
every = 2
"#;

/// Issue 13: the server killed with SIGKILL at a seeded round and restarted with
/// `fedpace server --resume`; the node processes (TLS, client states on disk) ride the
/// outage out, reconnect by themselves, and exit when the run is over. The final model,
/// metrics.jsonl (wall times aside) and clients.csv equal the uninterrupted run's — for
/// fedavg, fedavg with client Adam states kept, and scaffold (control variates on the
/// nodes' disks).
#[test]
fn a_server_killed_with_sigkill_and_resumed_ends_as_the_uninterrupted_run() {
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
            "fedavg",
            "[strategy]\nname = \"fedavg\"\nclients_per_round = 5\n",
        ),
        (
            "fedavg-adam-keep",
            "[client]\noptimizer = { name = \"adam\" }\nstate_mode = \"keep\"\n\
             [strategy]\nname = \"fedavg\"\nclients_per_round = 5\n",
        ),
        (
            "scaffold",
            "[strategy]\nname = \"scaffold\"\nclients_per_round = 5\n",
        ),
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for (name, extra) in cases {
        let case = tmp.path().join(name);
        std::fs::create_dir_all(&case).unwrap();
        let cfg = write_config(&case, KILLED, extra);
        let cfg = cfg.as_str();
        let straight = case.join("straight");
        fedpace(&["run", cfg, "--out", straight.to_str().unwrap()]);

        let net = case.join("net");
        let mut server =
            Server::start(&[cfg, "--out", net.to_str().unwrap()], "127.0.0.1:0", &keys);
        let addr = server.addr.clone();
        let mut nodes = Kill(Vec::new());
        for (i, r) in ranges.iter().enumerate() {
            let state = case.join(format!("states-{i}"));
            nodes.0.push(
                server
                    .node(&["node", cfg, "--clients", r], &keys, &format!("node-{i}"))
                    .arg("--state-dir")
                    .arg(&state)
                    // Well past the outage below; a node that missed the end of the run
                    // fails the test in 60 s rather than hanging it.
                    .args(["--give-up", "60"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        // Kill after 3 … 9 recorded rounds (a checkpoint exists after 2).
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = 3 + (rng >> 33) as usize % 7;
        let start = std::time::Instant::now();
        while !(net.join("checkpoint.fdpc").exists() && lines(&net.join("metrics.jsonl")) >= at) {
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!(
                    "{name}: the server ended ({st}) before the kill: {}",
                    server.wait().1
                );
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "{name}: no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.kill(); // SIGKILL
        assert!(
            !net.join("summary.json").exists(),
            "{name}: the run finished before the kill; make its rounds slower"
        );
        let killed_after = lines(&net.join("metrics.jsonl"));

        // The same address: the nodes are still retrying it. The nodes hold tokens of the
        // killed server's connections; this one issues none (--sign-every-request), so
        // each node's first request with its old token is refused and sent again signed.
        let server = Server::start(
            &["--resume", net.to_str().unwrap(), "--sign-every-request"],
            &addr,
            &keys,
        );
        let (status, log) = server.wait();
        assert!(status.success(), "{name}: resumed server: {log}");
        assert!(log.contains(", 0 by connection token;"), "{name}: {log}");
        for (i, node) in std::mem::take(&mut nodes.0).into_iter().enumerate() {
            let out = node.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: node {i}: {err}");
            assert!(
                err.contains("the server's run is over"),
                "{name}: node {i}: {err}"
            );
        }

        let what = format!("{name} (killed after {killed_after} rounds)");
        // Clients keep their states back to the last checkpoint only (round 10, then the
        // states of rounds 11 and 12): at most 3 per client.
        for i in 0..ranges.len() {
            let dir = case.join(format!("states-{i}"));
            for client in std::fs::read_dir(&dir).into_iter().flatten() {
                let client = client.unwrap().path();
                let states: Vec<_> = std::fs::read_dir(&client)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert!(
                    states.len() <= 3,
                    "{what}: {}: {states:?}",
                    client.display()
                );
            }
        }
        let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert!(
            model(&straight) == model(&net),
            "{what}: the final model differs"
        );
        let (a, b) = (
            metrics_without_times(&straight),
            metrics_without_times(&net),
        );
        assert_eq!(a.len(), b.len(), "{what}: metrics.jsonl lines");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{what}: metrics.jsonl line {}", i + 1);
        }
        // clients.csv without `label_entropy`: over the network the server knows a
        // client's label histogram only when the client shares it (client.share), and
        // these clients share none (docs/network.md, "Client metadata").
        let csv = |d: &Path| -> Vec<Vec<String>> {
            let text = std::fs::read_to_string(d.join("clients.csv")).unwrap();
            let mut rows: Vec<Vec<String>> = text
                .lines()
                .map(|l| l.split(',').map(str::to_string).collect())
                .collect();
            let col = rows[0].iter().position(|h| h == "label_entropy").unwrap();
            for r in &mut rows {
                r.remove(col);
            }
            rows
        };
        assert_eq!(csv(&straight), csv(&net), "{what}: clients.csv");
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(net.join("summary.json")).unwrap())
                .unwrap();
        assert!(s["resumed_after_rounds"].is_array(), "{what}: {s}");
    }
}

/// `--clock real`: fedbuff over loopback on the order replies arrive completes and every
/// `traffic.csv` row keeps its wire bytes; a synchronous strategy is refused, naming the
/// flag, and so is the simulation's `secure_aggregation.dropout` over the network.
#[test]
fn the_real_clock_runs_fedbuff_and_refuses_what_it_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let fedbuff = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fedbuff.toml");
    let out = tmp.path().join("real");
    let o = Command::new(BIN)
        .arg("run")
        .arg(&fedbuff)
        .args([
            "--set",
            "rounds=20",
            // An evaluation at every version (its round numbers are dispatch numbers too)
            // while early dispatches are still out: 20 in flight on 4 workers, slower
            // clients. The old code lost a row's wire bytes in about half such runs.
            "--set",
            "eval.every=1",
            "--set",
            "threads=4",
            "--set",
            "strategy.concurrency=20",
            "--set",
            "model={name=\"mlp\", hidden=[32]}",
            "--grid",
            "loopback",
            "--clock",
            "real",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("real clock:") && err.contains("arrived"),
        "{err}"
    );
    assert_eq!(lines(&out.join("metrics.jsonl")), 20);
    // One training row per dispatch, measured on the wire.
    let t = std::fs::read_to_string(out.join("traffic.csv")).unwrap();
    let train: Vec<&str> = t.lines().filter(|l| l.contains(",train,")).collect();
    assert!(train.len() >= 20 * 5, "{t}");
    // Every row of a reply keeps its own wire bytes, both ways, even where an evaluation
    // round has its dispatch number (the evaluation used to take them).
    let wire = |l: &str| -> Vec<u64> { l.split(',').skip(3).map(|v| v.parse().unwrap()).collect() };
    for l in t.lines().skip(1) {
        let [sent, received, wire_sent, wire_received, model, plan, ins_payloads, update, reply_payloads] =
            wire(l)[..]
        else {
            panic!("{l}")
        };
        if l.contains(",train,") {
            // The parts of a training row, within its totals.
            assert!(model > 0 && model + plan + ins_payloads <= sent, "{l}");
            assert!(update + reply_payloads <= received, "{l}");
        }
        // An instruction carries its payload, or names the one its node holds from
        // another of its clients (the field headers alone).
        assert!(wire_sent > sent || wire_sent <= 64, "{l}");
        assert!(wire_received > received || received == 0, "{l}");
    }
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let refused = tmp.path().join("refused");
    let refused = refused.to_str().unwrap();
    let secure = [
        "--set",
        "strategy.aggregation=\"linear\"",
        "--set",
        "strategy.normalize=\"on\"",
        "--set",
        "secure_aggregation={num_shares=5, dropout=0.1}",
    ];
    let deployed = [
        "--listen",
        "127.0.0.1:0",
        "--keys",
        "ring.toml",
        "--tls-cert",
        "s.pem",
        "--tls-key",
        "k.pem",
    ];
    let dropout = "secure_aggregation.dropout = 0.1: the simulation's injected dropouts; \
                   expected 0 (or no key) with";
    for (args, want) in [
        (
            [
                &["run", cfg, "--grid", "loopback", "--clock", "real"][..],
                &[],
            ]
            .concat(),
            "--clock real: the strategy is synchronous".to_string(),
        ),
        (
            [&["run", cfg, "--grid", "loopback"][..], &secure].concat(),
            format!("{dropout} --grid loopback"),
        ),
        (
            [&["server", cfg][..], &secure, &deployed].concat(),
            format!("{dropout} fedpace server"),
        ),
    ] {
        let o = Command::new(BIN)
            .args(&args)
            .args(["--out", refused])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// A node whose server is gone for longer than `--give-up` (crashed and never resumed)
/// exits 1 with one line naming the server and the limit, instead of retrying for ever;
/// `--give-up 0` is refused.
#[test]
fn a_node_whose_server_never_comes_back_exits_after_give_up() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    make_keys(&keys, &[("node-0", "0..10")]);
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let out = tmp.path().join("net");
    let server = Server::start(
        &[
            cfg,
            "--set",
            "rounds=100000",
            "--out",
            out.to_str().unwrap(),
        ],
        "127.0.0.1:0",
        &keys,
    );
    let node = |give_up: &str| {
        let mut c = server.node(&["node", cfg, "--clients", "0..10"], &keys, "node-0");
        c.args(["--give-up", give_up]).stderr(Stdio::piped());
        c
    };
    let refused = node("0").output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("--give-up = 0: expected a positive"), "{err}");

    let mut nodes = Kill(vec![node("2").spawn().unwrap()]);
    let mut err = BufReader::new(nodes.0[0].stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("connected to") {
        assert!(err.read_line(&mut seen).unwrap() > 0, "node ended: {seen}");
    }
    let log = server.kill(); // SIGKILL, and no --resume
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = nodes.0[0].try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the node still runs: {seen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::io::Read::read_to_string(&mut err, &mut seen).unwrap();
    assert_eq!(status.code(), Some(1), "{seen}\nserver: {log}");
    let last = seen.lines().last().unwrap_or_default();
    assert!(
        last.contains("unreachable for") && last.contains("give_up = 2s"),
        "{seen}"
    );
}

/// A real-clock fedbuff run checkpointed at versions, the server SIGKILLed mid-run and
/// resumed with `--resume … --clock real` (docs/network.md, "Checkpoints on the real
/// clock"): it ends with the configured number of versions, each recorded once, each
/// folding exactly `buffer_size` updates (none twice); the dispatches in flight at the
/// checkpoint come back once, as lost failures in the first version after it; every node
/// exits 0.
#[test]
fn a_real_clock_run_killed_with_sigkill_resumes_from_its_checkpoint() {
    const VERSIONS: usize = 60;
    const BUFFER: usize = 3;
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
    let cfg = tmp.path().join("fedbuff.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"real-restart\"\nseed = 5\nrounds = {VERSIONS}\nthreads = 1\n\
             [data]\nsource = \"synthetic\"\nnum_clients = 12\n\
             [model]\nname = \"mlp\"\nhidden = [24]\n\
             [client]\nlr = 0.02\nbatch_size = 8\nepochs = 2\n\
             [strategy]\nname = \"fedbuff\"\nbuffer_size = {BUFFER}\nconcurrency = 6\n\
             [eval]\nevery = 5\n[checkpoint]\nevery = 4\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let net = tmp.path().join("net");
    let real = ["--clock", "real"];
    let mut args = vec![cfg, "--out", net.to_str().unwrap()];
    args.extend(real);
    let mut server = Server::start(&args, "127.0.0.1:0", &keys);
    let addr = server.addr.clone();
    let mut nodes = Kill(Vec::new());
    for (i, r) in ranges.iter().enumerate() {
        nodes.0.push(
            server
                .node(&["node", cfg, "--clients", r], &keys, &format!("node-{i}"))
                .args(["--give-up", "60"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let start = std::time::Instant::now();
    while !(net.join("checkpoint.fdpc").exists() && lines(&net.join("metrics.jsonl")) >= 10) {
        if let Some(st) = server.child.try_wait().unwrap() {
            panic!(
                "the server ended ({st}) before the kill: {}",
                server.wait().1
            );
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    server.kill(); // SIGKILL
    assert!(
        !net.join("summary.json").exists(),
        "the run finished before the kill; make its versions slower"
    );
    let killed_after = lines(&net.join("metrics.jsonl"));
    let mut args = vec!["--resume", net.to_str().unwrap()];
    args.extend(real);
    let (status, log) = Server::start(&args, &addr, &keys).wait();
    assert!(status.success(), "resumed server: {log}");
    for (i, node) in std::mem::take(&mut nodes.0).into_iter().enumerate() {
        let out = node.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "node {i}: {err}");
        assert!(err.contains("the server's run is over"), "node {i}: {err}");
    }

    let what = format!("killed after {killed_after} versions");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("summary.json")).unwrap()).unwrap();
    let from = s["resumed_after_rounds"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {s}"));
    assert!(
        from >= 4 && from.is_multiple_of(4),
        "{what}: resumed after {from}"
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(net.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rounds: Vec<u64> = records
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, (1..=VERSIONS as u64).collect::<Vec<_>>(), "{what}");
    // The clock goes on from the checkpoint's: no version takes negative time.
    let times: Vec<f64> = records
        .iter()
        .map(|r| r["sim_seconds"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{what}: {times:?}");
    assert!(
        records
            .iter()
            .all(|r| r["timing"]["round_seconds"].as_f64().unwrap() >= 0.0),
        "{what}"
    );
    for r in &records {
        let clients = r["clients"].as_array().unwrap();
        let failure = |c: &serde_json::Value| c["failure"].as_str().map(str::to_string);
        let folded = clients.iter().filter(|c| failure(c).is_none()).count();
        assert_eq!(folded, BUFFER, "{what}: version {}: {r}", r["round"]);
        let lost = clients
            .iter()
            .filter_map(failure)
            .filter(|f| f.contains("in flight when the server stopped"))
            .count();
        if r["round"].as_u64() == Some(from + 1) {
            assert!(lost >= 1, "{what}: version {}: {r}", from + 1);
            eprintln!("{what}, resumed after {from}: {lost} dispatches lost in flight");
        } else {
            assert_eq!(lost, 0, "{what}: version {}: {r}", r["round"]);
        }
    }
    assert!(log.contains("real clock:"), "{log}");
    // Its checkpoint goes on only on the real clock.
    let o = Command::new(BIN)
        .args(["resume", net.to_str().unwrap(), "--rounds", "80"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("fedpace resume: the checkpoint was written on the real clock"),
        "{err}"
    );
}
