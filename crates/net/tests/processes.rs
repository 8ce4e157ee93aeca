//! Nodes as separate OS processes (this test binary re-run as `child_node`), killed with
//! SIGKILL mid-round: the round completes with its quorum and the run goes on.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{echo, Fixture};
use fedpace_net::{ClientTls, Credential, FailureKind, Kind, Node, NodeConfig};

const CHILD: &str = "FEDPACE_NET_TEST_NODE";

/// Not a test on its own: the body of a node process when `FEDPACE_NET_TEST_NODE` is set
/// (`server|credential|ca|start|end`). Instructions whose payload is `slow` take 1.5 s.
#[test]
fn child_node() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let f: Vec<&str> = spec.split('|').collect();
    let mut config = NodeConfig::new(
        f[0],
        Some(ClientTls::from_file(f[2].as_ref(), "localhost").unwrap()),
        Credential::load(f[1].as_ref()).unwrap(),
        vec![f[3].parse().unwrap()..f[4].parse().unwrap()],
    );
    config.pull_wait = Duration::from_millis(200);
    let node = Node::connect(config).unwrap();
    let stop = AtomicBool::new(false);
    node.serve(2, &stop, |ins| {
        if ins.payload.as_ref() == b"slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(echo(ins))
    })
    .unwrap();
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn thirty_percent_of_clients_killed_mid_round_the_round_completes_with_quorum() {
    let fx = Fixture::new("kill", 10, 2);
    let server = fx.start();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(Vec::new());
    for i in 0..10 {
        let spec = format!(
            "127.0.0.1:{}|{}|{}|{}|{}",
            server.local_addr().port(),
            fx.credentials[i].display(),
            fx.ca.ca_cert.display(),
            fx.ranges[i].start,
            fx.ranges[i].end
        );
        let child = Command::new(&exe)
            .args([
                "--exact",
                "child_node",
                "--test-threads",
                "1",
                "--nocapture",
            ])
            .env(CHILD, spec)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.0.push(child);
    }
    assert_eq!(server.wait_for_clients(20, Duration::from_secs(20)), 20);
    let all = |payload: &'static [u8], clients: &[u64]| -> Vec<(u64, Bytes)> {
        clients
            .iter()
            .map(|&c| (c, Bytes::from_static(payload)))
            .collect()
    };
    let ids: Vec<u64> = (0..20).collect();
    let first = server
        .dispatch(
            1,
            Kind::Train,
            all(b"fast", &ids),
            Duration::from_secs(10),
            20,
        )
        .unwrap();
    assert!(first.iter().all(|a| a.result.is_ok()));

    // Round 2: every client takes 1.5 s; nodes 0–2 (clients 0–5, 30 %) die after pulling.
    let t = Instant::now();
    let mut batch = server.batch();
    batch
        .send(2, Kind::Train, all(b"slow", &ids), Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    for child in &mut children.0[..3] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let replies = batch.collect(14).unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "finished at quorum, long before the 10 s deadline: {took:?}"
    );
    for a in &replies {
        match a.client {
            0..=5 => assert_eq!(
                a.result.as_ref().unwrap_err().kind,
                FailureKind::Gone,
                "{a:?}"
            ),
            _ => assert!(a.result.is_ok(), "{a:?}"),
        }
    }
    // The run goes on with the survivors.
    let alive = server.clients();
    assert_eq!(alive, (6..20).collect::<Vec<_>>());
    let third = server
        .dispatch(
            3,
            Kind::Train,
            all(b"fast", &alive),
            Duration::from_secs(10),
            14,
        )
        .unwrap();
    assert_eq!(third.iter().filter(|a| a.result.is_ok()).count(), 14);
}
