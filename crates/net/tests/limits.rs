//! Nothing a client sends is trusted: oversized, overfull and malformed requests are
//! refused before decoding, a reply over its limit becomes a `Rejected` failure, and
//! garbage on the socket leaves the server serving.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{echo, signed_unary, Fixture};
use fedpace_net::proto;
use fedpace_net::{FailureKind, Kind, Node, Server};
use tonic::Code;

/// Pushes `replies` with a correct signature; the answer's code.
fn signed_push(fx: &Fixture, server: &Server, session: u64, replies: Vec<proto::Reply>) -> Code {
    signed_push_of(fx, server, proto::PushRequest { session, replies }).0
}

/// A Push look-alike whose one reply fails with a reason that is not UTF-8: its frame and
/// top-level fields pass the server's envelope checks, protobuf decoding then fails.
#[derive(Clone, PartialEq, prost::Message)]
struct LooseFailure {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(bytes = "vec", tag = "2")]
    reason: Vec<u8>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct LooseReply {
    #[prost(uint64, tag = "1")]
    instruction: u64,
    #[prost(uint64, tag = "2")]
    client: u64,
    #[prost(message, optional, tag = "4")]
    failure: Option<LooseFailure>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct LoosePush {
    #[prost(uint64, tag = "1")]
    session: u64,
    #[prost(message, repeated, tag = "2")]
    replies: Vec<LooseReply>,
}

/// Sends `msg` (any message, as the Push RPC's body) with a correct signature; the
/// answer's code and message (`accepted N` when it was taken).
fn signed_push_of<M>(fx: &Fixture, server: &Server, msg: M) -> (Code, String)
where
    M: prost::Message + Send + Sync + 'static,
{
    match signed_unary::<M, proto::PushReply>(fx, server, 0, "/fedpace.v1.Fleet/Push", msg) {
        Ok(r) => (Code::Ok, format!("accepted {}", r.accepted)),
        Err(e) => e,
    }
}

#[test]
fn a_push_that_does_not_decode_is_refused_and_a_good_one_still_counts() {
    let fx = Fixture::new("undecodable", 1, 2);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let session = node.session();
    let push = |reason: &[u8]| LoosePush {
        session,
        replies: vec![LooseReply {
            instruction: 1,
            client: 0,
            failure: Some(LooseFailure {
                code: 1,
                reason: reason.to_vec(),
            }),
        }],
    };
    let (code, message) = signed_push_of(&fx, &server, push(b"\xff\xfe"));
    assert_eq!(code, Code::Internal, "{message}");
    assert!(
        message.starts_with("failed to decode Protobuf message"),
        "{message}"
    );
    // The same look-alike with a UTF-8 reason is a well-formed Push (of an instruction
    // the server never sent: nothing is accepted, nothing breaks).
    assert_eq!(
        signed_push_of(&fx, &server, push(b"disk full")),
        (Code::Ok, "accepted 0".to_string())
    );
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = stop.clone();
        std::thread::spawn(move || node.serve(1, &stop, |i| Ok(echo(i))).unwrap())
    };
    let items: Vec<_> = (0..2).map(|c| (c, Bytes::from_static(b"ok"))).collect();
    let replies = server
        .dispatch(1, Kind::Train, items, Duration::from_secs(10), 2)
        .unwrap();
    assert!(replies.iter().all(|a| a.result.is_ok()));
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
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
