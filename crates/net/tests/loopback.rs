//! Rounds over real sockets with TLS on loopback: several nodes, each with its own
//! runtime and connection (threads here; separate processes in `processes.rs`).
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{echo, Fixture};
use fedpace_net::proto;
use fedpace_net::{Error, FailureKind, Kind, LateReplies, Node, NodeConfig, ServeStats, Server};
use prost::Message;

type Handler =
    Arc<dyn Fn(&fedpace_net::Instruction) -> Result<Bytes, fedpace_net::Failure> + Send + Sync>;

/// Serves `config` on a thread of its own until `stop` is set.
fn spawn_node(
    config: NodeConfig,
    stop: Arc<AtomicBool>,
    handler: Handler,
) -> JoinHandle<ServeStats> {
    std::thread::spawn(move || {
        let node = Node::connect(config).unwrap();
        node.serve(2, &stop, |ins| handler(ins)).unwrap()
    })
}

fn echo_handler() -> Handler {
    Arc::new(|ins| Ok(echo(ins)))
}

fn items(clients: impl IntoIterator<Item = u64>, payload: &Bytes) -> Vec<(u64, Bytes)> {
    clients.into_iter().map(|c| (c, payload.clone())).collect()
}

fn stop_all(stop: &AtomicBool, nodes: Vec<JoinHandle<ServeStats>>) -> Vec<ServeStats> {
    stop.store(true, Ordering::Relaxed);
    nodes.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Bytes of the round trip's payload.
const PAYLOAD: usize = 4000;

#[test]
fn round_trip_over_tls_with_three_nodes_and_wire_accounting() {
    let fx = Fixture::new("roundtrip", 3, 4);
    let server = fx.start();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            spawn_node(
                fx.node_config(server.local_addr(), i),
                stop.clone(),
                echo_handler(),
            )
        })
        .collect();
    assert_eq!(server.wait_for_clients(12, Duration::from_secs(10)), 12);
    assert_eq!(server.clients(), (0..12).collect::<Vec<_>>());
    // Large enough that the connection's own bytes (TLS, HTTP/2, heartbeats, empty Pull
    // replies, the token header), which depend on timing, stay well below one payload a
    // round in the bounds below.
    let payload = Bytes::from(
        (0..PAYLOAD as u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    for round in 1..=2 {
        let replies = server
            .dispatch(
                round,
                Kind::Train,
                items(0..12, &payload),
                Duration::from_secs(10),
                12,
            )
            .unwrap();
        assert_eq!(replies.len(), 12);
        for (c, a) in replies.iter().enumerate() {
            assert_eq!(a.client, c as u64, "arrivals are ordered by client id");
            assert_eq!(a.round, round);
            assert!(!a.late);
            let mut want: Vec<u8> = payload.iter().rev().copied().collect();
            want.extend_from_slice(&(c as u64).to_le_bytes());
            assert_eq!(a.result.as_ref().unwrap().as_ref(), want.as_slice());
        }
        // Accounting: the encoded Instruction and Reply of each client, field header
        // included, recomputed here from the arrival's fields. Each node (4 clients) gets
        // the shared payload once, with its first client's instruction; its other three
        // name that instruction instead (`payload_of`).
        let traffic = server.take_traffic(round);
        assert_eq!(traffic.len(), 12);
        for (t, a) in traffic.iter().zip(&replies) {
            let first = &replies[a.client as usize / 4 * 4];
            let by_name = a.client % 4 != 0;
            let ins = proto::Instruction {
                id: a.instruction,
                client: a.client,
                round,
                kind: proto::Kind::Train as i32,
                deadline_unix_ms: 0,
                payload: if by_name {
                    Bytes::new()
                } else {
                    payload.clone()
                },
                state_round: round,
                durable_round: 0,
                payload_of: if by_name { first.instruction } else { 0 },
            };
            // The deadline is a 6-byte varint of unix milliseconds (years 2004–2527).
            let ins_len = ins.encoded_len() + 1 + 6;
            let reply = proto::Reply {
                instruction: a.instruction,
                client: a.client,
                outcome: Some(proto::reply::Outcome::Payload(a.result.clone().unwrap())),
            };
            let framed = |n: usize| (n + 1 + prost::length_delimiter_len(n)) as u64;
            assert_eq!((t.client, t.kind), (a.client, Kind::Train));
            assert_eq!(t.sent_bytes, framed(ins_len));
            assert_eq!(t.received_bytes, framed(reply.encoded_len()));
            assert_eq!((t.sent_messages, t.received_messages), (1, 1));
        }
        assert!(
            server.take_traffic(round).is_empty(),
            "taking empties the ledger"
        );
    }
    // The raw bytes on each node's connection cover its clients' messages plus TLS/HTTP2.
    let status = server.nodes();
    assert_eq!(status.len(), 3);
    for n in &status {
        assert_eq!(n.clients, 4);
        // Two rounds: the payload went to the node once a round; four replies came back.
        assert!(
            (2 * PAYLOAD..2 * 2 * PAYLOAD).contains(&(n.wire_written as usize)),
            "{n:?}"
        );
        assert!(n.wire_read as usize > 2 * 4 * PAYLOAD, "{n:?}");
    }
    let stats = stop_all(&stop, nodes);
    assert_eq!(stats.iter().map(|s| s.instructions).sum::<u64>(), 24);
    assert_eq!(stats.iter().map(|s| s.accepted).sum::<u64>(), 24);
    assert_eq!(server.stats().refused_requests, 0);
}

#[test]
fn deadline_quorum_and_late_replies_kept_for_async_strategies() {
    let fx = Fixture::new("deadline", 2, 3);
    let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
    config.late = LateReplies {
        capacity: 16,
        grace: Duration::from_secs(30),
    };
    let server = Server::start(config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Client 0 takes 800 ms; client 5 fails; the others answer at once.
    let handler: Handler = Arc::new(|ins| match ins.client {
        0 => {
            std::thread::sleep(Duration::from_millis(800));
            Ok(echo(ins))
        }
        5 => Err(fedpace_net::Failure::new(
            FailureKind::Client,
            "diverged: loss is NaN",
        )),
        _ => Ok(echo(ins)),
    });
    let nodes: Vec<_> = (0..2)
        .map(|i| {
            spawn_node(
                fx.node_config(server.local_addr(), i),
                stop.clone(),
                handler.clone(),
            )
        })
        .collect();
    assert_eq!(server.wait_for_clients(6, Duration::from_secs(10)), 6);
    let payload = Bytes::from_static(b"model");

    // Quorum 4 of 6: the round returns at the 300 ms deadline with client 0 late.
    let t = Instant::now();
    let replies = server
        .dispatch(
            7,
            Kind::Train,
            items(0..6, &payload),
            Duration::from_millis(300),
            4,
        )
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(700),
        "{took:?}"
    );
    let kinds: Vec<_> = replies
        .iter()
        .map(|a| a.result.as_ref().err().map(|f| f.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            Some(FailureKind::Deadline),
            None,
            None,
            None,
            None,
            Some(FailureKind::Client)
        ]
    );
    assert_eq!(
        replies[5].result.as_ref().unwrap_err().reason,
        "diverged: loss is NaN"
    );

    // Client 0's reply comes later and is handed to the late-arrival stream.
    let late = server
        .recv_late(Duration::from_secs(5))
        .expect("late reply");
    assert!(late.late);
    assert_eq!((late.client, late.round, late.kind), (0, 7, Kind::Train));
    assert_eq!(late.result.unwrap(), echo_of(0, &payload));
    assert!(late.elapsed >= Duration::from_millis(700));

    // Quorum 6 cannot be met: the error names the round and the counts.
    let err = server
        .dispatch(
            8,
            Kind::Evaluate,
            items(0..6, &payload),
            Duration::from_millis(300),
            6,
        )
        .unwrap_err();
    match &err {
        Error::QuorumNotMet {
            round: 8,
            quorum: 6,
            sent: 6,
            replied: 4,
            failed: 1,
            missing: 1,
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("round 8: 4 of 6 clients replied, quorum is 6"),
        "{err}"
    );
    let _ = server
        .recv_late(Duration::from_secs(5))
        .expect("round 8's late reply");

    // Not connected clients settle at once.
    let replies = server
        .dispatch(
            9,
            Kind::Train,
            items([1, 99], &payload),
            Duration::from_secs(5),
            1,
        )
        .unwrap();
    assert_eq!(
        replies[1].result.as_ref().unwrap_err().kind,
        FailureKind::NotConnected
    );
    stop_all(&stop, nodes);
}

fn echo_of(client: u64, payload: &Bytes) -> Bytes {
    let mut v: Vec<u8> = payload.iter().rev().copied().collect();
    v.extend_from_slice(&client.to_le_bytes());
    v.into()
}

#[test]
fn late_replies_dropped_for_sync_rounds_and_batch_serves_an_arrival_driven_loop() {
    let fx = Fixture::new("async", 1, 4);
    let server = fx.start();
    let stop = Arc::new(AtomicBool::new(false));
    let handler: Handler = Arc::new(|ins| {
        std::thread::sleep(Duration::from_millis(if ins.client == 3 {
            600
        } else {
            20 * ins.client
        }));
        Ok(echo(ins))
    });
    let nodes = vec![spawn_node(
        fx.node_config(server.local_addr(), 0),
        stop.clone(),
        handler,
    )];
    assert_eq!(server.wait_for_clients(4, Duration::from_secs(10)), 4);
    let payload = Bytes::from_static(b"v0");
    let replies = server
        .dispatch(
            1,
            Kind::Train,
            items(0..4, &payload),
            Duration::from_millis(300),
            3,
        )
        .unwrap();
    assert_eq!(
        replies[3].result.as_ref().unwrap_err().kind,
        FailureKind::Deadline
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        server.stats().late_dropped,
        1,
        "late reply dropped: no late queue configured"
    );
    assert!(server.recv_late(Duration::from_millis(10)).is_none());

    // Arrival-driven: keep two clients busy, hand each finished client the next version.
    let mut batch = server.batch();
    batch
        .send(
            10,
            Kind::Train,
            items([0, 1], &payload),
            Duration::from_secs(5),
        )
        .unwrap();
    let mut versions = Vec::new();
    for version in 11..15 {
        let a = batch.recv_timeout(Duration::from_secs(5)).unwrap();
        versions.push((a.round, a.client));
        batch
            .send(
                version,
                Kind::Train,
                vec![(a.client, Bytes::from(format!("v{version}")))],
                Duration::from_secs(5),
            )
            .unwrap();
    }
    while let Some(a) = batch.recv_timeout(Duration::from_secs(5)) {
        assert!(a.result.is_ok());
        versions.push((a.round, a.client));
    }
    assert_eq!(versions.len(), 6);
    assert_eq!(batch.outstanding(), 0);
    stop_all(&stop, nodes);
}

#[test]
fn server_restart_nodes_reconnect_and_continue() {
    let fx = Fixture::new("restart", 2, 5);
    let server = fx.start();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes: Vec<_> = (0..2)
        .map(|i| spawn_node(fx.node_config(addr, i), stop.clone(), echo_handler()))
        .collect();
    assert_eq!(server.wait_for_clients(10, Duration::from_secs(10)), 10);
    let payload = Bytes::from_static(b"round");
    let first = server.dispatch(
        1,
        Kind::Train,
        items(0..10, &payload),
        Duration::from_secs(10),
        10,
    );
    assert_eq!(first.unwrap().len(), 10);

    drop(server); // closes every connection, as a crash would
    let server = restart_on(&fx, addr);
    assert_eq!(
        server.wait_for_clients(10, Duration::from_secs(10)),
        10,
        "nodes re-registered"
    );
    let second = server
        .dispatch(
            2,
            Kind::Train,
            items(0..10, &payload),
            Duration::from_secs(10),
            10,
        )
        .unwrap();
    assert!(second.iter().all(|a| a.result.is_ok()));
    let stats = stop_all(&stop, nodes);
    assert!(stats.iter().all(|s| s.reregistrations >= 1), "{stats:?}");
}

fn restart_on(fx: &Fixture, addr: SocketAddr) -> Server {
    let t = Instant::now();
    loop {
        match Server::start(fx.server_config(addr)) {
            Ok(s) => return s,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("restart on {addr}: {e}"),
        }
    }
}

#[test]
fn node_that_reconnects_gets_its_instruction_again_under_the_same_ids() {
    let fx = Fixture::new("reconnect", 1, 2);
    let server = fx.start();
    let first = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let session = first.session();
    let mut batch = server.batch();
    batch
        .send(
            3,
            Kind::Train,
            items([0, 1], &Bytes::from_static(b"x")),
            Duration::from_secs(10),
        )
        .unwrap();
    let pulled = first.pull().unwrap();
    assert_eq!(pulled.len(), 2);
    drop(first); // gone without a word, before its heartbeat timeout

    let second = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    assert_ne!(second.session(), session);
    assert_eq!(server.client_count(), 2);
    let again = second.pull().unwrap();
    assert_eq!(
        again.iter().map(|i| (i.id, i.client)).collect::<Vec<_>>(),
        pulled.iter().map(|i| (i.id, i.client)).collect::<Vec<_>>(),
        "leased instructions are delivered again to the re-registered node"
    );
    let outcomes: Vec<_> = again
        .iter()
        .map(|i| fedpace_net::Outcome::for_instruction(i, Ok(echo(i))))
        .collect();
    assert_eq!(second.push(&outcomes).unwrap(), 2);
    let a = batch.recv_timeout(Duration::from_secs(5)).unwrap();
    let b = batch.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(a.result.is_ok() && b.result.is_ok());
    // A duplicate push is not taken twice.
    assert_eq!(second.push(&outcomes).unwrap(), 0);
    second.leave().unwrap();
    assert_eq!(server.client_count(), 0);
}

#[test]
fn silent_node_is_declared_gone_and_idle_connections_are_closed() {
    use std::io::Read;
    let fx = Fixture::new("gone", 1, 3);
    let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
    config.idle_timeout = Duration::from_millis(600);
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::start(config).unwrap();
    // A TCP connection that never speaks is closed after the handshake timeout.
    let mut raw = std::net::TcpStream::connect(server.local_addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0, "closed by the server");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A node that stops heartbeating: its clients' instructions fail as gone after 1 s.
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let mut batch = server.batch();
    batch
        .send(
            1,
            Kind::Train,
            items(0..3, &Bytes::from_static(b"m")),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(node.pull().unwrap().len(), 3);
    let t = Instant::now();
    drop(node); // dies without leaving
    let gone: Vec<_> = (0..3)
        .map(|_| batch.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    for a in &gone {
        let f = a.result.as_ref().unwrap_err();
        assert_eq!(f.kind, FailureKind::Gone);
        assert!(f.reason.contains("missed its heartbeats"), "{f}");
    }
    assert_eq!(server.client_count(), 0);
    assert!(server.stats().idle_closed >= 1);
}

/// A connection that finished its TLS handshake and then falls silent is closed after
/// `idle_timeout` (not `handshake_timeout`), and one that keeps sending — HTTP/2 PINGs,
/// no request — is not: idle means nothing read from the peer.
#[test]
fn an_established_connection_is_closed_after_idle_timeout_and_an_active_one_is_kept() {
    use std::io::{Read, Write};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};

    let fx = Fixture::new("idle", 1, 1);
    let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
    config.idle_timeout = Duration::from_millis(1200);
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::start(config).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&fx.client_tls().ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = Arc::new(tls);
    // A TLS stream with its handshake done.
    let connect = || {
        let tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn =
            rustls::ClientConnection::new(tls.clone(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream
    };
    // Reads until the server closes (EOF or reset): how long that took.
    let wait_for_close = |stream: &mut rustls::StreamOwned<rustls::ClientConnection, _>| {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let before = server.stats().idle_closed;

    // Silent after the handshake: closed after the idle timeout, checked every 300 ms.
    let mut silent = connect();
    let waited = wait_for_close(&mut silent);
    assert!(
        waited >= Duration::from_millis(1100) && waited < Duration::from_secs(4),
        "closed after {waited:?}; idle_timeout is 1.2 s, handshake_timeout 0.3 s"
    );
    assert_eq!(server.stats().idle_closed, before + 1);

    // Active: the HTTP/2 preface and settings, then a PING every 200 ms for 2.4 s (twice
    // the idle timeout); the server answers each, and the connection stays open.
    let mut active = connect();
    active
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let ping = |n: u8| {
        let mut frame = vec![0, 0, 8, 6, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&[n; 8]);
        frame
    };
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    for n in 1..=12u8 {
        active.write_all(&ping(n)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    // The answer to the last PING: a PING frame with the ACK flag and its payload.
    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
    ack.extend_from_slice(&[12u8; 8]);
    while !seen.windows(ack.len()).any(|w| w == ack.as_slice()) {
        let n = active.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed a connection that kept sending");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        server.stats().idle_closed,
        before + 1,
        "the active one was not closed"
    );
    // Then silent: closed too.
    let waited = wait_for_close(&mut active);
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(server.stats().idle_closed, before + 2);
}

/// Registration carries each client's self-description (opaque bytes): the server keeps
/// it per client; an entry for a client outside the node's ranges, a second entry for
/// one client, or one over the size limit refuses the registration, naming the field.
#[test]
fn registration_carries_client_metadata_and_refuses_bad_entries() {
    let fx = Fixture::new("metadata", 2, 4);
    let server = fx.start();
    let mut c = fx.node_config(server.local_addr(), 0);
    c.metadata = vec![
        (3, Bytes::from_static(b"three")),
        (1, Bytes::from_static(b"one")),
    ];
    let node = Node::connect(c).unwrap();
    assert_eq!(server.wait_for_clients(4, Duration::from_secs(10)), 4);
    assert_eq!(server.client_metadata(1).as_deref(), Some(&b"one"[..]));
    assert_eq!(server.client_metadata(3).as_deref(), Some(&b"three"[..]));
    assert_eq!(server.client_metadata(0), None);
    node.leave().unwrap();
    // Kept after the node left (the pool is assembled from it).
    assert_eq!(server.client_metadata(1).as_deref(), Some(&b"one"[..]));
    let cases: [(Vec<(u64, Bytes)>, &str); 3] = [
        (
            vec![(2, Bytes::from_static(b"x"))],
            "ClientMetadata.client: 2: not in the registered ranges",
        ),
        (
            vec![(5, Bytes::new()), (5, Bytes::new())],
            "ClientMetadata.client: 5: more than one entry",
        ),
        (
            vec![(
                6,
                Bytes::from(vec![0u8; fedpace_net::wire::MAX_METADATA_BYTES + 1]),
            )],
            "ClientMetadata.info: client 6: 16385 bytes: at most 16384",
        ),
    ];
    for (metadata, want) in cases {
        let mut c = fx.node_config(server.local_addr(), 1);
        c.metadata = metadata;
        let e = Node::connect(c).err().expect("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
    server.shutdown();
}

/// `Server::finish`: every node's `serve` returns on its own with `finished` (no stop
/// flag), after the round it was serving; the instructions carry the state rounds the
/// round loop set.
#[test]
fn nodes_stop_serving_when_the_server_says_the_run_is_over() {
    let fx = Fixture::new("finish", 2, 3);
    let server = fx.start();
    let never = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler: Handler = {
        let seen = seen.clone();
        Arc::new(move |ins| {
            seen.lock()
                .unwrap()
                .push((ins.round, ins.state_round, ins.durable_round));
            Ok(echo(ins))
        })
    };
    let nodes: Vec<_> = (0..2)
        .map(|i| {
            spawn_node(
                fx.node_config(server.local_addr(), i),
                never.clone(),
                handler.clone(),
            )
        })
        .collect();
    assert_eq!(server.wait_for_clients(6, Duration::from_secs(10)), 6);
    assert!(server.is_connected(5) && !server.is_connected(6));
    server.set_durable_round(4);
    let payload = Bytes::from_static(b"model");
    let replies = server
        .dispatch(
            7,
            Kind::Train,
            items(0..6, &payload),
            Duration::from_secs(10),
            6,
        )
        .unwrap();
    assert_eq!(replies.len(), 6);
    let mut batch = server.batch();
    batch.set_state_round(Some(8));
    batch
        .send(
            7,
            Kind::Evaluate,
            items(0..6, &payload),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(batch.collect(6).unwrap().len(), 6);
    let start = Instant::now();
    assert_eq!(
        server.finish(Duration::from_secs(10)),
        2,
        "both nodes were told"
    );
    for h in nodes {
        let stats = h.join().unwrap();
        assert!(stats.finished, "{stats:?}");
        assert_eq!(stats.instructions, 6);
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [[(7, 7, 4); 6], [(7, 8, 4); 6]].concat());
}
