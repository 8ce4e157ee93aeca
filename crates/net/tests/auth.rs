//! Who may join: unauthenticated, tampered, replayed, stale, revoked and out-of-range
//! requests are refused; key ring files are checked field by field.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

mod common;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{echo, framed, Fixture};
use fedpace_net::proto::{self, fleet_client::FleetClient};
use fedpace_net::testing::{endpoint, sign_headers, sign_headers_with, BodyDigest};
use fedpace_net::{keys, Credential, Error, Kind, Node, Server};
use tonic::metadata::MetadataValue;
use tonic::Code;

/// A plain (unsigning) client over TLS, with a runtime to drive it.
struct Raw {
    runtime: tokio::runtime::Runtime,
    client: FleetClient<tonic::transport::Channel>,
}

impl Raw {
    fn new(fx: &Fixture, server: &Server) -> Raw {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tls = fx.client_tls();
        let addr = format!("127.0.0.1:{}", server.local_addr().port());
        let channel = runtime.block_on(async {
            endpoint(&addr, Some(&tls), Duration::from_secs(5))
                .unwrap()
                .connect()
                .await
                .unwrap()
        });
        Raw {
            runtime,
            client: FleetClient::new(channel),
        }
    }

    /// Sends `message` to `rpc` with the given headers; the code of the answer.
    fn heartbeat(
        &mut self,
        message: proto::HeartbeatRequest,
        headers: &[(&'static str, String)],
    ) -> Code {
        self.heartbeat_token(message, headers).0
    }

    /// [`Raw::heartbeat`], with the `fedpace-token` header of the answer.
    fn heartbeat_token(
        &mut self,
        message: proto::HeartbeatRequest,
        headers: &[(&'static str, String)],
    ) -> (Code, Option<String>) {
        let mut req = tonic::Request::new(message);
        for (k, v) in headers {
            req.metadata_mut()
                .insert(*k, MetadataValue::try_from(v.as_str()).unwrap());
        }
        let (code, metadata) = match self.runtime.block_on(self.client.heartbeat(req)) {
            Ok(r) => (Code::Ok, r.metadata().clone()),
            Err(s) => (s.code(), s.metadata().clone()),
        };
        let token = metadata
            .get("fedpace-token")
            .map(|v| v.to_str().unwrap().to_string());
        (code, token)
    }
}

const HEARTBEAT: &str = "/fedpace.v1.Fleet/Heartbeat";

#[test]
fn unauthenticated_tampered_replayed_and_stale_requests_are_refused() {
    let fx = Fixture::new("auth", 1, 2);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let session = node.session();
    let mut raw = Raw::new(&fx, &server);
    let cred = fx.credential(0);
    let msg = proto::HeartbeatRequest { session };

    // Correctly signed: accepted once.
    let headers = sign_headers(&cred, HEARTBEAT, &framed(&msg), SystemTime::now()).unwrap();
    assert_eq!(raw.heartbeat(msg, &headers), Code::Ok);
    // The same request again: replayed.
    assert_eq!(raw.heartbeat(msg, &headers), Code::Unauthenticated);
    // No headers at all.
    assert_eq!(raw.heartbeat(msg, &[]), Code::Unauthenticated);
    // Signed for another body (session changed in flight).
    let other = proto::HeartbeatRequest {
        session: session + 1,
    };
    let headers = sign_headers(&cred, HEARTBEAT, &framed(&other), SystemTime::now()).unwrap();
    assert_eq!(raw.heartbeat(msg, &headers), Code::Unauthenticated);
    // Signed for another RPC.
    let headers = sign_headers(
        &cred,
        "/fedpace.v1.Fleet/Leave",
        &framed(&msg),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(raw.heartbeat(msg, &headers), Code::Unauthenticated);
    // Outside the 60 s window, either side.
    for skew in [-120i64, 120] {
        let when = if skew < 0 {
            SystemTime::now() - Duration::from_secs(120)
        } else {
            SystemTime::now() + Duration::from_secs(120)
        };
        let headers = sign_headers(&cred, HEARTBEAT, &framed(&msg), when).unwrap();
        assert_eq!(
            raw.heartbeat(msg, &headers),
            Code::Unauthenticated,
            "skew {skew} s"
        );
    }
    // A key the server does not know, claiming a known name.
    let impostor = Credential::generate("node-0").unwrap();
    let headers = sign_headers(&impostor, HEARTBEAT, &framed(&msg), SystemTime::now()).unwrap();
    assert_eq!(raw.heartbeat(msg, &headers), Code::Unauthenticated);
    // An unknown name.
    let stranger = Credential::generate("stranger").unwrap();
    let headers = sign_headers(&stranger, HEARTBEAT, &framed(&msg), SystemTime::now()).unwrap();
    assert_eq!(raw.heartbeat(msg, &headers), Code::Unauthenticated);

    assert_eq!(server.stats().refused_requests, 8);
    // The real node's session was never disturbed.
    assert!(node.pull().unwrap().is_empty());
    assert_eq!(node.session(), session);
}

/// A token and a key name, without a signature (docs/arch/0048-auth-once-per-connection.md).
fn by_token(token: &str, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("fedpace-key", key.to_string()),
        ("fedpace-token", token.to_string()),
    ]
}

#[test]
fn a_connection_token_stands_for_the_signature_on_that_connection_only() {
    let fx = Fixture::new("token", 2, 2);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let msg = proto::HeartbeatRequest {
        session: node.session(),
    };
    let cred = fx.credential(0);
    let mut raw = Raw::new(&fx, &server);

    // No token is good before a signed request earned one.
    let made_up = "00".repeat(32);
    assert_eq!(
        raw.heartbeat(msg, &by_token(&made_up, "node-0")),
        Code::Unauthenticated
    );
    // A signed request is answered with the connection's token for its key...
    let headers = sign_headers(&cred, HEARTBEAT, &framed(&msg), SystemTime::now()).unwrap();
    let (code, token) = raw.heartbeat_token(msg, &headers);
    assert_eq!(code, Code::Ok);
    let token = token.expect("a signed request over TLS is answered with a token");
    assert_eq!(token.len(), 64, "{token}");
    // ...which then stands for the signature, as long as the connection lives.
    for _ in 0..3 {
        assert_eq!(raw.heartbeat(msg, &by_token(&token, "node-0")), Code::Ok);
    }
    // Not for another key, not altered, not on another connection.
    assert_eq!(
        raw.heartbeat(msg, &by_token(&token, "node-1")),
        Code::Unauthenticated
    );
    let last = if token.ends_with('0') { "1" } else { "0" };
    let altered = format!("{}{last}", &token[..63]);
    assert_eq!(
        raw.heartbeat(msg, &by_token(&altered, "node-0")),
        Code::Unauthenticated
    );
    assert_eq!(
        raw.heartbeat(msg, &by_token("not hex", "node-0")),
        Code::Unauthenticated
    );
    let mut other = Raw::new(&fx, &server);
    assert_eq!(
        other.heartbeat(msg, &by_token(&token, "node-0")),
        Code::Unauthenticated
    );
    // The key is looked up on every request: revoked, its token is refused too.
    keys::revoke(&fx.ring, "node-0").unwrap();
    server.reload_keys().unwrap();
    assert_eq!(
        raw.heartbeat(msg, &by_token(&token, "node-0")),
        Code::PermissionDenied
    );
    assert_eq!(server.stats().token_requests, 3);
}

#[test]
fn a_node_signs_once_per_connection_and_again_after_reconnecting() {
    let fx = Fixture::new("token-node", 1, 2);
    let server = fx.start();
    let addr = server.local_addr();
    let node = Node::connect(fx.node_config(addr, 0)).unwrap();
    for _ in 0..5 {
        assert!(node.pull().unwrap().is_empty());
    }
    let stats = server.stats();
    assert!(stats.token_requests >= 5, "{stats:?}");
    assert!(stats.signed_requests <= 2, "{stats:?}");
    // A new server on the same address knows no token: the node's next request is
    // refused there, sent again signed, and later ones use the new connection's token.
    server.shutdown();
    let server = Server::start(fx.server_config(addr)).unwrap();
    let t = std::time::Instant::now();
    while node.pull().is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "no reconnection");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        assert!(node.pull().unwrap().is_empty());
    }
    let stats = server.stats();
    assert!(stats.signed_requests >= 1, "{stats:?}");
    assert!(stats.token_requests >= 3, "{stats:?}");
}

#[test]
fn without_tls_or_with_tokens_off_every_request_is_signed() {
    let fx = Fixture::new("token-off", 1, 2);
    for tls in [false, true] {
        let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
        if tls {
            config.connection_tokens = false;
        } else {
            config.tls = None;
        }
        let server = Server::start(config).unwrap();
        let mut node_config = fx.node_config(server.local_addr(), 0);
        if !tls {
            node_config.tls = None;
        }
        let node = Node::connect(node_config).unwrap();
        for _ in 0..5 {
            assert!(node.pull().unwrap().is_empty());
        }
        let stats = server.stats();
        assert_eq!(stats.token_requests, 0, "tls {tls}: {stats:?}");
        assert!(stats.signed_requests >= 6, "tls {tls}: {stats:?}");
        assert_eq!(stats.refused_requests, 0, "tls {tls}: {stats:?}");
    }
}

#[test]
fn the_body_digest_is_blake3_or_for_older_nodes_sha256_and_nothing_else() {
    let fx = Fixture::new("digest", 1, 2);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let mut raw = Raw::new(&fx, &server);
    let cred = fx.credential(0);
    let msg = proto::HeartbeatRequest {
        session: node.session(),
    };
    let sign = |digest| {
        sign_headers_with(&cred, HEARTBEAT, &framed(&msg), SystemTime::now(), digest).unwrap()
    };
    // What nodes send: BLAKE3, named in `fedpace-digest`.
    let blake3 = sign(BodyDigest::Blake3);
    assert!(blake3.contains(&("fedpace-digest", "blake3".to_string())));
    assert_eq!(raw.heartbeat(msg, &blake3), Code::Ok);
    // A node built before the header: SHA-256, no header.
    let sha = sign(BodyDigest::Sha256);
    assert!(sha.iter().all(|(k, _)| *k != "fedpace-digest"));
    assert_eq!(raw.heartbeat(msg, &sha), Code::Ok);
    // A BLAKE3 signature with the header taken away is checked against SHA-256: refused.
    let stripped: Vec<_> = sign(BodyDigest::Blake3)
        .into_iter()
        .filter(|(k, _)| *k != "fedpace-digest")
        .collect();
    assert_eq!(raw.heartbeat(msg, &stripped), Code::Unauthenticated);
    // A SHA-256 signature claimed as BLAKE3: refused.
    let mut claimed = sign(BodyDigest::Sha256);
    claimed.push(("fedpace-digest", "blake3".to_string()));
    assert_eq!(raw.heartbeat(msg, &claimed), Code::Unauthenticated);
    // Any other digest name: refused.
    let mut other = sign(BodyDigest::Blake3);
    for (k, v) in &mut other {
        if *k == "fedpace-digest" {
            *v = "md5".to_string();
        }
    }
    assert_eq!(raw.heartbeat(msg, &other), Code::Unauthenticated);
    assert_eq!(server.stats().refused_requests, 3);
}

#[test]
fn revoked_key_is_refused_and_ends_the_node_loop() {
    let fx = Fixture::new("revoke", 2, 2);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    let other = Node::connect(fx.node_config(server.local_addr(), 1)).unwrap();
    assert_eq!(server.client_count(), 4);
    keys::revoke(&fx.ring, "node-0").unwrap();
    server.reload_keys().unwrap();
    let stop = AtomicBool::new(false);
    let err = node.serve(1, &stop, |i| Ok(echo(i))).unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    // One line: the call, the server's words and the code, not tonic's debug form.
    let line = err.to_string();
    assert!(
        line.starts_with("Pull: ")
            && line.ends_with("(gRPC status PermissionDenied)")
            && !line.contains('\n')
            && !line.contains("MetadataMap"),
        "{line}"
    );
    // The other node is unaffected; the revoked one's clients go once its session lapses.
    assert!(other.pull().is_ok());
    let listed = keys::list(&fx.ring).unwrap();
    assert!(listed[0].revoked && !listed[1].revoked);
    // Reconnecting with the revoked key fails at once, not after retries.
    let err = Node::connect(fx.node_config(server.local_addr(), 0))
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
}

#[test]
fn revocation_is_picked_up_from_the_file_without_a_reload_call() {
    let fx = Fixture::new("revoke-file", 1, 1);
    let server = fx.start();
    let node = Node::connect(fx.node_config(server.local_addr(), 0)).unwrap();
    keys::revoke(&fx.ring, "node-0").unwrap();
    let t = std::time::Instant::now();
    loop {
        match node.pull() {
            Err(e) if e.code() == Some(Code::PermissionDenied) => break,
            _ if t.elapsed() > Duration::from_secs(5) => panic!("revocation not picked up"),
            _ => {}
        }
    }
}

/// A Pull that began before its key was revoked gets no instructions once the server has
/// reread the ring (every `keys_reload`): it looks at the key again each time it wakes —
/// for instructions, or every `keys_reload` — and is refused; it does not wait out its
/// `max_pull_wait`, and the instructions sent meanwhile stay with the server.
#[test]
fn a_pull_waiting_when_its_key_is_revoked_gets_no_instructions() {
    let fx = Fixture::new("revoke-waiting", 1, 2);
    let mut config = fx.server_config("127.0.0.1:0".parse().unwrap());
    config.keys_reload = Duration::from_millis(300);
    config.max_pull_wait = Duration::from_secs(4);
    let server = Server::start(config).unwrap();
    let mut node_config = fx.node_config(server.local_addr(), 0);
    node_config.pull_wait = Duration::from_secs(4);
    let node = Node::connect(node_config).unwrap();
    let waiting = std::thread::spawn(move || node.pull());
    std::thread::sleep(Duration::from_millis(200));
    keys::revoke(&fx.ring, "node-0").unwrap();
    let revoked = std::time::Instant::now();
    // Once the server may have reread the ring, a round's instructions.
    std::thread::sleep(Duration::from_millis(400));
    let mut batch = server.batch();
    batch
        .send(
            1,
            Kind::Train,
            vec![
                (0, Bytes::from_static(b"model")),
                (1, Bytes::from_static(b"model")),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    match waiting.join().unwrap() {
        Err(e) => assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}"),
        Ok(ins) => panic!("a revoked key was sent {} instructions", ins.len()),
    }
    assert!(
        revoked.elapsed() < Duration::from_secs(2),
        "{:?}: the Pull waited for its max_pull_wait",
        revoked.elapsed()
    );
}

#[test]
fn a_key_may_only_register_its_own_clients() {
    let fx = Fixture::new("ranges", 2, 10);
    let server = fx.start();
    let mut config = fx.node_config(server.local_addr(), 0);
    config.clients = vec![5..15]; // node-0 holds 0..10
    let err = Node::connect(config).err().unwrap();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert!(
        err.to_string().contains("may not host clients 5..15"),
        "{err}"
    );
    // A subset is fine.
    let mut config = fx.node_config(server.local_addr(), 0);
    config.clients = vec![2..4, 7..8];
    Node::connect(config).unwrap();
    assert_eq!(server.clients(), vec![2, 3, 7]);
}

#[test]
fn key_ring_files_are_checked_field_by_field() {
    let dir = common::temp_dir("ring");
    let ring = dir.join("keys.toml");
    keys::generate(&ring, "a", vec![0..10], &dir.join("a.key")).unwrap();
    // Same name, overlapping clients, bad name: refused with the field named.
    let e = keys::generate(&ring, "a", vec![20..30], &dir.join("x.key")).unwrap_err();
    assert!(e.to_string().starts_with("name = a: "), "{e}");
    let e = keys::generate(&ring, "b", vec![5..20], &dir.join("b.key")).unwrap_err();
    assert!(e.to_string().contains("node \"a\" has 0..10"), "{e}");
    let e = keys::generate(&ring, "b c", vec![50..60], &dir.join("b.key")).unwrap_err();
    assert!(e.to_string().contains("letters, digits"), "{e}");
    keys::generate(&ring, "b", vec![10..20], &dir.join("b.key")).unwrap();
    assert_eq!(keys::list(&ring).unwrap().len(), 2);
    let e = keys::revoke(&ring, "zz").unwrap_err();
    assert!(e.to_string().contains("name = zz"), "{e}");

    // The credential round-trips and matches the ring's public key.
    let cred = Credential::load(&dir.join("a.key")).unwrap();
    assert_eq!(cred.public_key(), keys::list(&ring).unwrap()[0].public_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("a.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let cases = [
        (
            "[[node]]\nname = \"a\"\npublic_key = \"00\"\nclients = [\"0..1\"]\n",
            "node[0].public_key",
        ),
        (
            &format!(
                "[[node]]\nname = \"a\"\npublic_key = \"{}\"\nclients = [\"5..1\"]\n",
                "0".repeat(64)
            ),
            "node[0].clients",
        ),
        (
            &format!(
                "[[node]]\nname = \"a\"\npublic_key = \"{}\"\nclients = []\n",
                "0".repeat(64)
            ),
            "node[0].clients",
        ),
        (
            &format!(
                "[[node]]\nname = \"a\"\npublic_key = \"{}\"\nclients = [\"0..1\"]\ncolour = 1\n",
                "0".repeat(64)
            ),
            "colour",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&ring, text).unwrap();
        let e = keys::list(&ring).unwrap_err().to_string();
        assert!(
            e.starts_with(&ring.display().to_string()) && e.contains(want),
            "{e} lacks {want}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_name_the_field() {
    let fx = Fixture::new("settings", 1, 1);
    let mut c = fx.server_config("127.0.0.1:0".parse().unwrap());
    c.heartbeat_timeout = Duration::from_millis(50);
    let e = Server::start(c).err().unwrap();
    assert!(
        e.to_string().starts_with("heartbeat_timeout = 50ms: "),
        "{e}"
    );
    let mut c = fx.server_config("127.0.0.1:0".parse().unwrap());
    c.limits.max_request_bytes = 10;
    let e = Server::start(c).err().unwrap();
    assert!(
        e.to_string().starts_with("limits.max_request_bytes = 10: "),
        "{e}"
    );
    let server = fx.start();
    let e = server
        .dispatch(
            1,
            Kind::Train,
            vec![(0, Bytes::from(vec![0u8; 20 << 20]))],
            Duration::from_secs(1),
            0,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("payload = client 0: 20971520 bytes: at most"),
        "{e}"
    );
    let e = server
        .dispatch(1, Kind::Train, vec![], Duration::from_secs(1), 1)
        .unwrap_err();
    assert!(e.to_string().starts_with("quorum = 1: "), "{e}");
    assert!(matches!(e, Error::Config { .. }));
}
