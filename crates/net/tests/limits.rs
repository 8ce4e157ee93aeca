//! Nothing a client sends is trusted: oversized, overfull and malformed requests are
//! refused before decoding, a reply over its limit becomes a `Rejected` failure, and
//! garbage on the socket leaves the server serving.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{echo, framed, Fixture};
use fedpace_net::proto::{self, fleet_client::FleetClient};
use fedpace_net::testing::{endpoint, sign_headers};
use fedpace_net::{FailureKind, Kind, Node, Server};
use tonic::metadata::MetadataValue;
use tonic::Code;

/// Pushes `replies` with a correct signature; the answer's code.
fn signed_push(fx: &Fixture, server: &Server, session: u64, replies: Vec<proto::Reply>) -> Code {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let tls = fx.client_tls();
    runtime.block_on(async {
        let channel = endpoint(&addr, Some(&tls), Duration::from_secs(5))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FleetClient::new(channel).max_encoding_message_size(64 << 20);
        let msg = proto::PushRequest { session, replies };
        let headers = sign_headers(
            &fx.credential(0),
            "/fedpace.v1.Fleet/Push",
            &framed(&msg),
            SystemTime::now(),
        )
        .unwrap();
        let mut req = tonic::Request::new(msg);
        for (k, v) in headers {
            req.metadata_mut()
                .insert(k, MetadataValue::try_from(v.as_str()).unwrap());
        }
        match client.push(req).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    })
}

#[test]
fn oversized_and_overfull_requests_are_refused_and_the_server_keeps_serving() {
    let fx = Fixture::new("limits", 1, 4);
    let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
    config.limits.max_reply_payload = 1000;
    config.limits.max_request_bytes = 100_000;
    config.limits.max_replies_per_push = 10;
    let server = Server::start(config).unwrap();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let session = node.session();
    let empty = |i| proto::Reply {
        instruction: i,
        client: 0,
        outcome: None,
    };
    let big = proto::Reply {
        instruction: 1,
        client: 0,
        outcome: Some(proto::reply::Outcome::Payload(Bytes::from(vec![
            0u8;
            200_000
        ]))),
    };
    assert_eq!(
        signed_push(&fx, &server, session, vec![big]),
        Code::ResourceExhausted
    );
    assert_eq!(
        signed_push(&fx, &server, session, (0..11).map(empty).collect()),
        Code::InvalidArgument
    );
    assert_eq!(
        signed_push(&fx, &server, session, (0..10).map(empty).collect()),
        Code::Ok
    );
    assert_eq!(server.stats().refused_requests, 2);

    // A reply over max_reply_payload but inside the request limit: that client fails
    // with the reason, the others count.
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            node.serve(2, &stop, |ins| {
                if ins.client == 2 {
                    Ok(Bytes::from(vec![1u8; 5000]))
                } else {
                    Ok(echo(ins))
                }
            })
            .unwrap()
        })
    };
    let items: Vec<_> = (0..4).map(|c| (c, Bytes::from_static(b"m"))).collect();
    let replies = server
        .dispatch(1, Kind::Train, items, Duration::from_secs(10), 3)
        .unwrap();
    let f = replies[2].result.as_ref().unwrap_err();
    assert_eq!(f.kind, FailureKind::Rejected);
    assert_eq!(f.reason, "Reply.payload: 5000 bytes: at most 1000");
    assert!(replies.iter().filter(|a| a.result.is_ok()).count() == 3);
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
}

#[test]
fn garbage_on_the_socket_leaves_the_server_serving() {
    let fx = Fixture::new("garbage", 1, 2);
    let server = fx.start();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..40 {
        let mut tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let len = 1 + (round * 97) % 3000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        // Half start like a TLS ClientHello so the handshake code sees them.
        let mut msg = if round % 2 == 0 {
            vec![0x16, 0x03, 0x01]
        } else {
            Vec::new()
        };
        msg.extend_from_slice(&bytes);
        let _ = tcp.write_all(&msg);
    }
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = stop.clone();
        std::thread::spawn(move || node.serve(1, &stop, |i| Ok(echo(i))).unwrap())
    };
    let items: Vec<_> = (0..2).map(|c| (c, Bytes::from_static(b"ok"))).collect();
    assert_eq!(
        server
            .dispatch(1, Kind::Train, items, Duration::from_secs(10), 2)
            .unwrap()
            .len(),
        2
    );
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
}
