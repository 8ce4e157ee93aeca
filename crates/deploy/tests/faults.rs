//! Faults over real sockets: hostile replies become failures naming the reason, and a
//! federation of node *processes* loses 30 % of its clients to `kill -9` in the middle
//! of a round — the round completes with its quorum and the run finishes.
//!
//! The node processes are this test binary run again with `FEDPACE_DEPLOY_NODE` set
//! (the `node_process` test below does nothing without it), so the test needs no other
//! executable.

#![allow(clippy::single_range_in_vec_init)] // a node's clients are a list of ranges

mod common;

use bytes::Bytes;
use common::*;
use fedpace_algos::StrategyConfig;
use fedpace_core::{codec, TrainRes};
use fedpace_deploy::{ClientHost, NetGrid, NetGridConfig};
use fedpace_net::{ClientTls, Credential, Kind, Node, NodeConfig};
use fedpace_params::{ParamSpec, ParamTree};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn failure_of(record: &serde_json::Value, client: u64) -> Option<String> {
    record["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == client)
        .and_then(|c| c["failure"].as_str().map(str::to_string))
}

#[test]
fn hostile_replies_become_failures_naming_the_reason() {
    let mut x = experiment("fedavg");
    x.strategy = StrategyConfig::named("fedavg")
        .unwrap()
        .with_clients_per_round(CLIENTS);
    let fed = federation("hostile", &[0..CLIENTS as u64]);
    let server = Arc::new(fed.server(|_| {}));
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let registry = fedpace_algos::builtin().codecs.clone();
    let host = ClientHost::new(x.factory(), registry.clone());
    let config = fed.node_config(&addr, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let node_stop = stop.clone();
    let node = std::thread::spawn(move || {
        let node = Node::connect(config).unwrap();
        node.serve(2, &node_stop, |ins| {
            let honest = host.handle(ins)?;
            if ins.kind != Kind::Train {
                return Ok(honest);
            }
            let reg = fedpace_algos::builtin().codecs.clone();
            let mut res: TrainRes = codec::decode_train_res(&honest, &reg).unwrap();
            let spec = res.delta.spec().clone();
            let n = spec.total_len();
            // Odd rounds one fault, even rounds another, per hostile client.
            let odd = ins.round % 2 == 1;
            match ins.client {
                0 => return Ok(Bytes::from_static(b"FDPC\x01\x00\x03\x00garbage")),
                1 if odd => res.delta = ParamTree::from_vec(spec, vec![f32::NAN; n]).unwrap(),
                1 => {
                    // One infinite value among honest ones.
                    let mut v = res.delta.as_slice().to_vec();
                    v[n / 2] = f32::INFINITY;
                    res.delta = ParamTree::from_vec(spec, v).unwrap();
                }
                2 => res.num_examples = 1 << 40,
                3 if odd => {
                    let other = ParamSpec::builder().add("x", &[n], "body").build().unwrap();
                    res.delta = ParamTree::from_vec(Arc::new(other), vec![0.0; n]).unwrap();
                }
                3 => {
                    // One value short.
                    let other = ParamSpec::builder()
                        .add("x", &[n - 1], "body")
                        .build()
                        .unwrap();
                    res.delta = ParamTree::from_vec(Arc::new(other), vec![0.0; n - 1]).unwrap();
                }
                _ => {}
            }
            Ok(Bytes::from(codec::encode_train_res(&res).unwrap()))
        })
        .unwrap()
    });
    assert_eq!(
        server.wait_for_clients(CLIENTS, Duration::from_secs(30)),
        CLIENTS
    );
    let mut grid = NetGrid::new(
        server.clone(),
        x.pool(),
        registry.clone(),
        NetGridConfig::default(),
    )
    .unwrap();
    let out = x.run(&mut grid);
    // With every client required, no round reaches its quorum: none trains.
    let all = NetGridConfig {
        quorum_fraction: 1.0,
        ..Default::default()
    };
    let mut strict = NetGrid::new(server, x.pool(), registry, all).unwrap();
    let e = x.try_run(&mut strict).unwrap_err().to_string();
    assert!(
        e.contains("training quorum not met: 2 of 6 replied, at least 6 needed"),
        "{e}"
    );
    stop.store(true, Ordering::Relaxed);
    node.join().unwrap();
    assert_eq!(out.completed_rounds, ROUNDS);
    assert!(out.global.all_finite());
    assert_ne!(bits(&out.global), bits(&x.init));
    let records = records(&out);
    assert!(records.len() >= 2, "odd and even rounds");
    for r in records {
        let f = |c| failure_of(&r, c).unwrap_or_default();
        let odd = r["round"].as_u64().unwrap() % 2 == 1;
        assert!(
            f(0).contains("rejected") && f(0).contains("truncated"),
            "{}",
            f(0)
        );
        // NaN everywhere, or a single +Inf.
        assert!(f(1).contains("NaN/Inf"), "{}", f(1));
        assert!(f(2).contains("num_examples = 1099511627776"), "{}", f(2));
        if odd {
            assert!(f(3).contains("layout"), "{}", f(3));
        } else {
            let n = x.init.as_slice().len();
            assert!(
                f(3).contains(&format!("update has {} values, expected {n}", n - 1)),
                "{}",
                f(3)
            );
        }
        assert_eq!(failure_of(&r, 4), None);
        assert_eq!(failure_of(&r, 5), None);
    }
}

const NODE_ENV: &str = "FEDPACE_DEPLOY_NODE";
const FAULT_CLIENTS: usize = 10;

/// A node process (only with `FEDPACE_DEPLOY_NODE` = `dir|addr|index|start|end|stall`):
/// hosts clients `start..end`; with `stall` = 1 it writes `dir/stalled` when its first
/// round-2 training instruction starts, and never answers it (it is killed meanwhile).
#[test]
fn node_process() {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return;
    };
    let f: Vec<&str> = spec.split('|').collect();
    let dir = std::path::PathBuf::from(f[0]);
    let (start, end): (u64, u64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
    let stall = f[5] == "1";
    let mut config = NodeConfig::new(
        f[1],
        Some(ClientTls::from_file(&dir.join("ca.pem"), "localhost").unwrap()),
        Credential::load(&dir.join(format!("node-{}.key", f[2]))).unwrap(),
        vec![start..end],
    );
    config.pull_wait = Duration::from_millis(500);
    let x = experiment_with("fedavg", FAULT_CLIENTS);
    let host = ClientHost::new(x.factory(), fedpace_algos::builtin().codecs.clone());
    let node = Node::connect(config).unwrap();
    let never = AtomicBool::new(false);
    node.serve(2, &never, |ins| {
        if stall && ins.round == 2 && ins.kind == Kind::Train {
            std::fs::write(dir.join("stalled"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        host.handle(ins)
    })
    .unwrap();
}

struct Children(Vec<Child>);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

#[test]
fn thirty_percent_of_clients_killed_mid_round_the_run_finishes() {
    let ranges = [0..4, 4..7, 7..FAULT_CLIENTS as u64];
    let fed = federation("faults", &ranges);
    let server = Arc::new(fed.server(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_secs(1);
    }));
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(Vec::new());
    for (i, r) in ranges.iter().enumerate() {
        let spec = format!(
            "{}|{addr}|{i}|{}|{}|{}",
            fed.dir.display(),
            r.start,
            r.end,
            u8::from(i == 2)
        );
        children.0.push(
            Command::new(&exe)
                .args(["node_process", "--exact", "--nocapture", "--test-threads=1"])
                .env(NODE_ENV, spec)
                .spawn()
                .unwrap(),
        );
    }
    assert_eq!(
        server.wait_for_clients(FAULT_CLIENTS, Duration::from_secs(60)),
        FAULT_CLIENTS
    );
    // kill -9 the node of clients 7..10 once it is inside round 2's training.
    let marker = fed.dir.join("stalled");
    let victim = children.0[2].id();
    let killer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(120);
        while !marker.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ok = Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap();
        assert!(ok.success() && marker.exists());
    });
    let mut x = experiment_with("fedavg", FAULT_CLIENTS);
    x.strategy = StrategyConfig::named("fedavg")
        .unwrap()
        .with_clients_per_round(FAULT_CLIENTS);
    let registry = fedpace_algos::builtin().codecs.clone();
    let config = NetGridConfig {
        quorum_fraction: 0.6,
        train_deadline: Duration::from_secs(60),
        eval_deadline: Duration::from_secs(60),
        ..Default::default()
    };
    let mut grid = NetGrid::new(server.clone(), x.pool(), registry, config).unwrap();
    let started = Instant::now();
    let out = x.run(&mut grid);
    killer.join().unwrap();
    assert_eq!(out.completed_rounds, ROUNDS);
    assert!(out.global.all_finite());
    let r = records(&out);
    for c in 0..7 {
        for round in &r {
            assert_eq!(failure_of(round, c), None, "client {c}");
        }
    }
    for c in 7..10 {
        assert_eq!(failure_of(&r[0], c), None, "round 1, client {c}");
        let f = failure_of(&r[1], c).unwrap();
        assert!(f.contains("gone"), "round 2, client {c}: {f}");
        let f = failure_of(&r[2], c).unwrap();
        assert!(f.contains("not connected"), "round 3, client {c}: {f}");
    }
    // Settled by the heartbeat timeout (1 s), not by the 60 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
