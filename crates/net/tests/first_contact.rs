//! A node started before its server (docs/network.md, "Faults"): the first registration
//! waits like a reconnection — retried with backoff until `give_up` — and ends with
//! `Error::Unreachable` naming the server when nobody answers; a refusal (a key the ring
//! does not hold, a server certificate the node does not trust) ends at once.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::Fixture;
use fedpace_net::{Error, Node, Server};

/// A port nobody listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_node_started_before_its_server_registers_once_the_server_is_up() {
    let fx = Fixture::new("first-wait", 1, 3);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = fx.node_config(addr, 0);
    // Longer than the connect timeout: the old first contact gave up after it.
    config.request_timeout = Duration::from_millis(500);
    config.give_up = Duration::from_secs(30);
    let connecting = std::thread::spawn(move || {
        let start = Instant::now();
        Node::connect(config).map(|n| (n, start.elapsed()))
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !connecting.is_finished(),
        "connect returned before the server was up"
    );
    let server = Server::start(fx.server_config(addr)).unwrap();
    let (node, took) = connecting.join().unwrap().unwrap();
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(server.wait_for_clients(3, Duration::from_secs(10)), 3);
    node.leave().unwrap();
}

#[test]
fn a_node_with_no_server_gives_up_after_give_up_naming_the_server() {
    let fx = Fixture::new("first-give-up", 1, 1);
    let port = free_port();
    let mut config = fx.node_config(format!("127.0.0.1:{port}").parse().unwrap(), 0);
    config.give_up = Duration::from_secs(1);
    let start = Instant::now();
    let e = Node::connect(config).err().expect("no server");
    let took = start.elapsed();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("server 127.0.0.1:{port}: unreachable for"))
            && text.contains("give_up = 1s"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Refusals are not waited out: a key the ring does not hold, a CA that did not sign the
/// server's certificate, a server name the certificate does not carry.
#[test]
fn refusals_at_first_contact_end_at_once() {
    let fx = Fixture::new("first-refused", 1, 1);
    let other = Fixture::new("first-refused-other", 1, 1);
    let server = fx.start();
    let addr = server.local_addr();
    let cases: Vec<(&str, &str, fedpace_net::NodeConfig)> = vec![
        ("unknown key", "Register: ", {
            let mut c = fx.node_config(addr, 0);
            c.credential = other.credential(0);
            c
        }),
        ("untrusted CA", "tls: server 127.0.0.1:", {
            let mut c = fx.node_config(addr, 0);
            c.tls = Some(other.client_tls());
            c
        }),
        ("wrong server name", "for the name \"example.org\"", {
            let mut c = fx.node_config(addr, 0);
            c.tls = Some(fx.ca.client_tls("example.org").unwrap());
            c
        }),
    ];
    for (what, want, mut config) in cases {
        config.give_up = Duration::from_secs(30);
        let start = Instant::now();
        let e = Node::connect(config).err().expect(what);
        let took = start.elapsed();
        let text = e.to_string();
        assert!(text.contains(want), "{what}: {text}");
        assert!(!text.contains('\n'), "{what}: {text}");
        assert!(took < Duration::from_secs(5), "{what}: {took:?}: {e}");
    }
}

/// An address that takes the TCP connection but never answers (a listener that never
/// accepts): one attempt would last the whole `request_timeout`; `give_up` still ends it.
#[test]
fn give_up_bounds_an_attempt_at_a_silent_address() {
    let fx = Fixture::new("first-silent", 1, 1);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = fx.node_config(silent.local_addr().unwrap(), 0);
    config.request_timeout = Duration::from_secs(30);
    config.give_up = Duration::from_secs(1);
    let start = Instant::now();
    let e = Node::connect(config).err().expect("nobody answers");
    let took = start.elapsed();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("last error: Register: no answer within 1.0s"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}: {e}");
    drop(silent);
}
