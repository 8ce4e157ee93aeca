//! `Server::take_traffic_of`: on the real clock a dispatch number and an evaluation round
//! can be the same number; each taker takes its own kind and leaves the other's figures
//! (the bug: the evaluation took the dispatch's wire bytes and its `traffic.csv` row kept
//! zeros).
#![allow(clippy::single_range_in_vec_init)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{echo, Fixture};
use fedpace_net::{Kind, Node};

#[test]
fn traffic_of_one_kind_leaves_the_other_kinds_of_the_same_round() {
    let fx = Fixture::new("traffic-kind", 1, 2);
    let server = fx.start();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (config, stop) = (fx.node_config(server.local_addr(), 0), stop.clone());
        std::thread::spawn(move || {
            let node = Node::connect(config).unwrap();
            node.serve(1, &stop, |ins| Ok(echo(ins))).unwrap()
        })
    };
    assert_eq!(server.wait_for_clients(2, Duration::from_secs(10)), 2);
    let payload = Bytes::from_static(b"model");
    // Dispatch 7 (training, client 0) and evaluation round 7 (both clients).
    let deadline = Duration::from_secs(10);
    server
        .dispatch(7, Kind::Train, vec![(0, payload.clone())], deadline, 1)
        .unwrap();
    server
        .dispatch(
            7,
            Kind::Evaluate,
            vec![(0, payload.clone()), (1, payload)],
            deadline,
            2,
        )
        .unwrap();
    let eval = server.take_traffic_of(7, Kind::Evaluate);
    assert_eq!(eval.len(), 2, "{eval:?}");
    assert!(eval.iter().all(|t| t.kind == Kind::Evaluate));
    let train = server.take_traffic_of(7, Kind::Train);
    assert_eq!(train.len(), 1, "{train:?}");
    assert_eq!((train[0].client, train[0].kind), (0, Kind::Train));
    assert!(
        train[0].sent_bytes > 0 && train[0].received_bytes > 0,
        "{train:?}"
    );
    assert!(server.take_traffic(7).is_empty(), "everything was taken");
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
}
