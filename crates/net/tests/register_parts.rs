//! A registration too large for one request goes in parts (protocol 1.3,
//! docs/network.md "Registration in parts"): a node of 30,000 clients registers whole
//! against a server whose requests are limited to 1 MiB + 64 KiB; a registration in
//! progress counts for nothing, and a part that does not continue it is refused, naming
//! the field.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{signed_unary, Fixture};
use fedpace_net::{proto, Limits, Node, Server};
use prost::Message;
use tonic::Code;

/// Sends `msg` as node `node`'s signed Register; the reply or the refusal's code and text.
fn register(
    fx: &Fixture,
    server: &Server,
    node: usize,
    msg: proto::RegisterRequest,
) -> Result<proto::RegisterReply, (Code, String)> {
    signed_unary(fx, server, node, "/fedpace.v1.Fleet/Register", msg)
}

fn entry(client: u64, info: &[u8]) -> proto::ClientMetadata {
    proto::ClientMetadata {
        client,
        info: Bytes::copy_from_slice(info),
    }
}

fn part(
    clients: Vec<(u64, u64)>,
    metadata: Vec<proto::ClientMetadata>,
    more: bool,
    part_of: u64,
) -> proto::RegisterRequest {
    proto::RegisterRequest {
        protocol: 2,
        clients: clients
            .into_iter()
            .map(|(start, end)| proto::ClientRange { start, end })
            .collect(),
        metadata,
        more,
        part_of,
    }
}

fn small_server(fx: &Fixture) -> Server {
    let mut c = fx.server_config("127.0.0.1:0".parse().unwrap());
    c.limits = Limits::for_model(0);
    Server::start(c).unwrap()
}

#[test]
fn a_node_of_30000_clients_registers_in_parts_under_a_1_mib_limit() {
    let n = 30_000u64;
    let fx = Fixture::new("parts", 1, n);
    let server = small_server(&fx);
    let mut c = fx.node_config(server.local_addr(), 0);
    // 100 bytes a client, each client's own: 3 MB of metadata in all.
    c.metadata = (0..n)
        .map(|k| {
            let mut info = vec![(k % 251) as u8; 100];
            info[..8].copy_from_slice(&k.to_le_bytes());
            (k, Bytes::from(info))
        })
        .collect();
    let whole: usize = c
        .metadata
        .iter()
        .map(|(k, info)| entry(*k, info).encoded_len() + 3)
        .sum();
    let limit = Limits::for_model(0).max_request_bytes;
    assert!(
        whole > 2 * limit,
        "{whole} bytes against a limit of {limit}"
    );
    let node = Node::connect(c.clone()).unwrap();
    assert_eq!(
        server.wait_for_clients(n as usize, Duration::from_secs(20)),
        n as usize
    );
    assert_eq!(server.client_count(), n as usize);
    for k in [0, 1, 4_999, 15_000, n - 1] {
        let want = &c.metadata[k as usize].1;
        assert_eq!(server.client_metadata(k).as_ref(), Some(want), "client {k}");
    }
    node.leave().unwrap();
    server.shutdown();
}

#[test]
fn a_registration_in_progress_counts_for_nothing_and_only_its_own_parts_continue_it() {
    let fx = Fixture::new("parts-checks", 2, 10);
    let server = small_server(&fx);
    let refused = |r: Result<proto::RegisterReply, (Code, String)>, code: Code, want: &str| {
        let (got, text) = r.expect_err("refused");
        assert_eq!(got, code, "{text}");
        assert!(text.contains(want), "{text:?} lacks {want:?}");
    };

    // Parts need protocol 2; a revision the server does not speak is refused, naming both.
    let mut p = part(vec![(0, 10)], vec![], true, 0);
    p.protocol = 1;
    refused(
        register(&fx, &server, 0, p),
        Code::InvalidArgument,
        "RegisterRequest.protocol = 1: a registration in parts (more, part_of) needs 2",
    );
    let mut p = part(vec![(0, 10)], vec![], false, 0);
    p.protocol = 3;
    refused(
        register(&fx, &server, 0, p),
        Code::FailedPrecondition,
        "RegisterRequest.protocol = 3: this server speaks 1..=2",
    );

    // A first part is answered with its number and counts for nothing.
    let first = register(
        &fx,
        &server,
        0,
        part(
            vec![(0, 10)],
            vec![entry(1, b"one"), entry(2, b"two")],
            true,
            0,
        ),
    )
    .unwrap();
    assert_ne!(first.session, 0);
    assert_eq!(server.client_count(), 0);
    assert_eq!(server.client_metadata(1), None);

    // Parts that do not continue it: another number, another key, ranges again, a client
    // outside its ranges.
    refused(
        register(
            &fx,
            &server,
            0,
            part(vec![], vec![], false, first.session ^ 1),
        ),
        Code::NotFound,
        &format!("RegisterRequest.part_of = {}", first.session ^ 1),
    );
    refused(
        register(&fx, &server, 1, part(vec![], vec![], false, first.session)),
        Code::NotFound,
        "no registration in progress by that number for key \"node-1\"",
    );
    refused(
        register(
            &fx,
            &server,
            0,
            part(vec![(0, 10)], vec![], false, first.session),
        ),
        Code::InvalidArgument,
        "RegisterRequest.clients: a later part (part_of set) carries metadata only",
    );
    refused(
        register(
            &fx,
            &server,
            0,
            part(vec![], vec![entry(12, b"x")], true, first.session),
        ),
        Code::InvalidArgument,
        "ClientMetadata.client: 12: not in the registered ranges",
    );
    assert_eq!(server.client_count(), 0);

    // The right parts finish it: every entry of every part is kept.
    let mid = register(
        &fx,
        &server,
        0,
        part(vec![], vec![entry(5, b"five")], true, first.session),
    )
    .unwrap();
    assert_eq!(mid.session, first.session);
    assert_eq!(server.client_count(), 0);
    let last = register(
        &fx,
        &server,
        0,
        part(vec![], vec![entry(9, b"nine")], false, first.session),
    )
    .unwrap();
    assert_ne!(last.session, first.session);
    assert_eq!(server.client_count(), 10);
    for (k, want) in [(1, &b"one"[..]), (2, b"two"), (5, b"five"), (9, b"nine")] {
        assert_eq!(
            server.client_metadata(k).as_deref(),
            Some(want),
            "client {k}"
        );
    }
    assert_eq!(server.client_metadata(3), None);
    // Finished means gone: its number continues nothing.
    refused(
        register(&fx, &server, 0, part(vec![], vec![], false, first.session)),
        Code::NotFound,
        "no registration in progress",
    );

    // A client named in two parts refuses the whole registration at its last part.
    let first = register(
        &fx,
        &server,
        1,
        part(vec![(10, 20)], vec![entry(11, b"a")], true, 0),
    )
    .unwrap();
    refused(
        register(
            &fx,
            &server,
            1,
            part(vec![], vec![entry(11, b"b")], false, first.session),
        ),
        Code::InvalidArgument,
        "ClientMetadata.client: 11: more than one entry",
    );
    assert_eq!(server.client_count(), 10);

    // One left unfinished for the heartbeat timeout (1 s here) is dropped.
    let first = register(&fx, &server, 1, part(vec![(10, 20)], vec![], true, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(1_300));
    refused(
        register(&fx, &server, 1, part(vec![], vec![], false, first.session)),
        Code::NotFound,
        "no registration in progress",
    );
    server.shutdown();
}

/// A server from before 1.3: it speaks protocol 1 only and takes a registration of any
/// size in one request (the other RPCs are not needed here).
/// What it was sent: each Register's protocol and number of metadata entries.
type Seen = Arc<std::sync::Mutex<Vec<(u32, usize)>>>;

struct OldServer {
    seen: Seen,
}

#[tonic::async_trait]
impl proto::fleet_server::Fleet for OldServer {
    async fn register(
        &self,
        req: tonic::Request<proto::RegisterRequest>,
    ) -> Result<tonic::Response<proto::RegisterReply>, tonic::Status> {
        let r = req.into_inner();
        self.seen
            .lock()
            .unwrap()
            .push((r.protocol, r.metadata.len()));
        if r.protocol != 1 {
            return Err(tonic::Status::failed_precondition(format!(
                "RegisterRequest.protocol = {}: this server speaks 1",
                r.protocol
            )));
        }
        Ok(tonic::Response::new(proto::RegisterReply {
            session: 7,
            heartbeat_interval_ms: 60_000,
            heartbeat_timeout_ms: 600_000,
            max_pull_wait_ms: 1_000,
            max_request_bytes: 64 << 20,
            max_replies_per_push: 16,
        }))
    }
    async fn heartbeat(
        &self,
        _: tonic::Request<proto::HeartbeatRequest>,
    ) -> Result<tonic::Response<proto::HeartbeatReply>, tonic::Status> {
        Ok(tonic::Response::new(proto::HeartbeatReply {}))
    }
    async fn pull(
        &self,
        _: tonic::Request<proto::PullRequest>,
    ) -> Result<tonic::Response<proto::PullReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn push(
        &self,
        _: tonic::Request<proto::PushRequest>,
    ) -> Result<tonic::Response<proto::PushReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn leave(
        &self,
        _: tonic::Request<proto::LeaveRequest>,
    ) -> Result<tonic::Response<proto::LeaveReply>, tonic::Status> {
        Ok(tonic::Response::new(proto::LeaveReply {}))
    }
}

/// Against a server that refuses protocol 2, a node whose registration would go in parts
/// sends it in one request, as before 1.3.
#[test]
fn a_server_from_before_parts_gets_the_registration_in_one_request() {
    let seen = Seen::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = proto::fleet_server::FleetServer::new(OldServer { seen: seen.clone() })
        .max_decoding_message_size(64 << 20);
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    });
    let n = 30_000u64;
    let fx = Fixture::new("parts-old-server", 1, n);
    let mut c = fx.node_config(addr, 0);
    c.tls = None;
    c.metadata = (0..n).map(|k| (k, Bytes::from(vec![7u8; 100]))).collect();
    let node = Node::connect(c).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].0 == 2 && seen[0].1 < n as usize,
        "a first part: {seen:?}"
    );
    assert_eq!(seen[1], (1, n as usize), "then the whole registration");
    drop(node);
}
