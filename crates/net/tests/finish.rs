//! The end of a run, and a server that never comes back: a node always exits. A node is
//! counted as told that the run is over only when it leaves (a `finished` reply lost with
//! its connection is pulled again), and a node without an answer for `give_up` ends with
//! `Error::Unreachable` instead of retrying for ever.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Fixture;
use fedpace_net::{Error, Node};

/// The reply that says `finished` can be lost with its connection when the server exits
/// right after answering (the hang of issue 13's restart test): `Server::finish` waits
/// for the node's Leave, not for the answer, and a node that pulls again hears it again.
#[test]
fn finish_waits_until_each_node_left_and_a_lost_finished_reply_is_heard_again() {
    let fx = Fixture::new("finish-ack", 2, 2);
    let server = Arc::new(fx.start());
    let addr = server.local_addr();
    let by_hand = Node::connect(fx.node_config(addr, 0)).unwrap();
    let serving = {
        let config = fx.node_config(addr, 1);
        std::thread::spawn(move || {
            let node = Node::connect(config).unwrap();
            node.serve(1, &AtomicBool::new(false), |_| Ok(bytes::Bytes::new()))
        })
    };
    assert_eq!(server.wait_for_clients(4, Duration::from_secs(10)), 4);
    let finishing = {
        let server = server.clone();
        std::thread::spawn(move || server.finish(Duration::from_secs(20)))
    };
    // Node 0 is answered `finished` but "loses" the reply: it neither exits nor leaves.
    let (list, finished) = by_hand.pull_or_finished().unwrap();
    assert!(list.is_empty() && finished);
    // The serving node heard it and left; finish still waits for node 0.
    let stats = serving.join().unwrap().unwrap();
    assert!(stats.finished, "{stats:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !finishing.is_finished(),
        "finish returned before node 0 left"
    );
    // Pulling again (as after a lost connection) says `finished` again; leaving ends it.
    let start = Instant::now();
    let (list, finished) = by_hand.pull_or_finished().unwrap();
    assert!(list.is_empty() && finished);
    by_hand.leave().unwrap();
    assert_eq!(finishing.join().unwrap(), 2, "both nodes told, both left");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A server gone for good (crashed, never resumed, or exited before the node heard the
/// run was over): `serve` ends with `Error::Unreachable` naming the server and the limit
/// once `give_up` passes without an answer.
#[test]
fn a_node_gives_up_when_the_server_stays_away_longer_than_give_up() {
    let fx = Fixture::new("give-up", 1, 2);
    let server = fx.start();
    let mut config = fx.node_config(server.local_addr(), 0);
    config.give_up = Duration::from_secs(1);
    let node = Node::connect(config).unwrap();
    assert_eq!(server.wait_for_clients(2, Duration::from_secs(10)), 2);
    let serving = std::thread::spawn(move || {
        let start = Instant::now();
        let r = node.serve(1, &AtomicBool::new(false), |_| Ok(bytes::Bytes::new()));
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(server); // as a crash: connections closed, nobody listening
    let (r, took) = serving.join().unwrap();
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("unreachable") && text.contains("give_up = 1s"),
        "{text}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
