//! Server and node settings, and the size limits (docs/network.md, "Limits" and "Faults").

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::keys::{Credential, KeySource};
use crate::tls::{ClientTls, ServerTls};
use crate::wire::ClientId;

/// Size limits on what peers send. Sized from the model by [`Limits::for_model`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest instruction payload the server sends (checked at dispatch) and a node accepts.
    pub max_instruction_payload: usize,
    /// Largest reply payload the server accepts.
    pub max_reply_payload: usize,
    /// Largest request body (one gRPC message) the server accepts.
    pub max_request_bytes: usize,
    /// Pull replies are filled up to this (at least one instruction is always sent).
    pub max_pull_bytes: usize,
    /// Most replies in one Push.
    pub max_replies_per_push: usize,
    /// Most client ranges in one Register.
    pub max_ranges: usize,
    /// Most clients one node may host.
    pub max_clients_per_node: u64,
}

const MIB: usize = 1 << 20;

impl Limits {
    /// Limits for a model of `model_bytes` encoded bytes: an instruction may carry twice
    /// the model (model + per-client state such as SCAFFOLD's control variate) and a
    /// reply three times (update + control-variate update + optimiser state), each plus
    /// 1 MiB for plans, reports and metrics.
    pub fn for_model(model_bytes: usize) -> Limits {
        let instruction = model_bytes.saturating_mul(2).saturating_add(MIB);
        let reply = model_bytes.saturating_mul(3).saturating_add(MIB);
        Limits {
            max_instruction_payload: instruction,
            max_reply_payload: reply,
            max_request_bytes: reply.saturating_add(64 * 1024),
            max_pull_bytes: instruction.max(4 * MIB),
            max_replies_per_push: 4096,
            max_ranges: 1024,
            max_clients_per_node: 100_000,
        }
    }

    /// The fewest nodes that can host `clients` clients under `max_clients_per_node`
    /// (at least 1).
    pub fn nodes_for(&self, clients: usize) -> usize {
        let per_node = usize::try_from(self.max_clients_per_node.max(1)).unwrap_or(usize::MAX);
        clients.div_ceil(per_node).max(1)
    }

    /// Refuses limits that cannot work together.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, value: usize, expected: &str| Error::Config {
            field,
            value: value.to_string(),
            expected: expected.to_string(),
        };
        if self.max_request_bytes < self.max_reply_payload {
            return Err(bad(
                "limits.max_request_bytes",
                self.max_request_bytes,
                "at least limits.max_reply_payload (a Push must fit one reply)",
            ));
        }
        if self.max_pull_bytes == 0 || self.max_replies_per_push == 0 || self.max_ranges == 0 {
            return Err(bad(
                "limits",
                0,
                "max_pull_bytes, max_replies_per_push and max_ranges > 0",
            ));
        }
        if u32::try_from(self.max_request_bytes).is_err()
            || u32::try_from(self.max_pull_bytes).is_err()
        {
            return Err(bad(
                "limits.max_request_bytes",
                self.max_request_bytes,
                "below 4 GiB (gRPC frame length)",
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// [`Limits::for_model`] of 8 MiB (a 2-million-parameter f32 model).
    fn default() -> Limits {
        Limits::for_model(8 * MIB)
    }
}

/// What the server does with a reply that arrives after its instruction was settled as
/// late (deadline passed) or gone (node lost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateReplies {
    /// Late replies kept for [`crate::Server::recv_late`]; 0 drops them all (synchronous
    /// strategies). When full, further late replies are dropped and counted.
    pub capacity: usize,
    /// How long after its deadline a reply is still taken as late rather than unknown.
    pub grace: Duration,
}

impl Default for LateReplies {
    fn default() -> LateReplies {
        LateReplies {
            capacity: 0,
            grace: Duration::from_secs(600),
        }
    }
}

/// Everything a [`crate::Server`] needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; see `Server::local_addr`).
    pub listen: SocketAddr,
    /// Certificate and key; `None` serves plaintext HTTP/2 (loopback tests only).
    pub tls: Option<ServerTls>,
    /// The nodes allowed to join.
    pub keys: KeySource,
    /// Size limits.
    pub limits: Limits,
    /// Heartbeat period asked of nodes.
    pub heartbeat_interval: Duration,
    /// A node silent this long is gone: its session ends and its instructions fail.
    pub heartbeat_timeout: Duration,
    /// Longest Pull long-poll.
    pub max_pull_wait: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake (and a request body) must complete within this.
    pub handshake_timeout: Duration,
    /// Most open connections (one per node is the normal case).
    pub max_connections: usize,
    /// Most requests whose bodies are buffered for verification at once (memory bound:
    /// this × `limits.max_request_bytes`).
    pub max_buffered_requests: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Accepted distance between a request's timestamp and the server's clock.
    pub auth_window: Duration,
    /// How often the key ring file is checked for changes.
    pub keys_reload: Duration,
    /// Most nonces remembered within `auth_window`.
    pub max_nonces: usize,
    /// Over TLS, answer a key's first verified request on a connection with a token that
    /// later requests on that connection may carry instead of a signature
    /// (docs/arch/0048-auth-once-per-connection.md). Off: every request is signed, as
    /// behind a TLS-terminating proxy that is not trusted with the nodes' bodies.
    pub connection_tokens: bool,
    /// Late replies: dropped or kept for asynchronous strategies.
    pub late: LateReplies,
    /// Deadlines and heartbeats are checked this often.
    pub tick: Duration,
    /// Threads of the server's runtime.
    pub worker_threads: usize,
}

impl ServerConfig {
    /// Defaults for listening on `listen` with the given TLS and keys.
    pub fn new(listen: SocketAddr, tls: Option<ServerTls>, keys: KeySource) -> ServerConfig {
        ServerConfig {
            listen,
            tls,
            keys,
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(10),
            max_pull_wait: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_buffered_requests: 64,
            max_streams_per_connection: 64,
            auth_window: Duration::from_secs(60),
            keys_reload: Duration::from_secs(2),
            max_nonces: 1_000_000,
            connection_tokens: true,
            late: LateReplies::default(),
            tick: Duration::from_millis(20),
            worker_threads: 2,
        }
    }

    /// Refuses settings that cannot work together (naming the field).
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        let bad = |field, value: String, expected: &str| Error::Config {
            field,
            value,
            expected: expected.to_string(),
        };
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(bad(
                "heartbeat_timeout",
                format!("{:?}", self.heartbeat_timeout),
                "longer than heartbeat_interval",
            ));
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(bad(
                "idle_timeout",
                format!("{:?}", self.idle_timeout),
                "longer than heartbeat_interval (a live node must never look idle)",
            ));
        }
        if self.max_pull_wait >= self.idle_timeout {
            return Err(bad(
                "max_pull_wait",
                format!("{:?}", self.max_pull_wait),
                "shorter than idle_timeout",
            ));
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_buffered_requests", self.max_buffered_requests),
            ("max_nonces", self.max_nonces),
            ("worker_threads", self.worker_threads),
        ] {
            if value == 0 {
                return Err(bad(field, "0".into(), "at least 1"));
            }
        }
        if self.tick.is_zero() {
            return Err(bad("tick", "0s".into(), "more than 0"));
        }
        Ok(())
    }
}

/// Everything a [`crate::Node`] needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Server address, `host:port`.
    pub server: String,
    /// CA and server name; `None` speaks plaintext (loopback tests only).
    pub tls: Option<ClientTls>,
    /// The node's key.
    pub credential: Credential,
    /// The logical clients this node hosts (end excluded).
    pub clients: Vec<Range<ClientId>>,
    /// How long one Pull waits for work.
    pub pull_wait: Duration,
    /// Most bytes asked for in one Pull ([`crate::Node::serve`] asks for at most 1 MiB
    /// at a time; the server always sends at least one instruction).
    pub pull_max_bytes: usize,
    /// Largest instruction payload accepted from the server.
    pub max_instruction_payload: usize,
    /// Timeout of every call other than Pull's wait, and of connecting.
    pub request_timeout: Duration,
    /// First and longest wait between reconnection attempts (doubling).
    pub reconnect_backoff: (Duration, Duration),
    /// What each client reports about itself at registration (opaque bytes, at most
    /// [`crate::wire::MAX_METADATA_BYTES`] each; `RegisterRequest.metadata`): empty by
    /// default.
    pub metadata: Vec<(ClientId, bytes::Bytes)>,
    /// [`crate::Node::serve`] ends with [`crate::Error::Unreachable`] when no call has
    /// reached the server for this long (a server restarted within it is ridden out).
    pub give_up: Duration,
}

impl NodeConfig {
    /// Defaults for a node of `credential` hosting `clients` on `server`.
    pub fn new(
        server: impl Into<String>,
        tls: Option<ClientTls>,
        credential: Credential,
        clients: Vec<Range<ClientId>>,
    ) -> NodeConfig {
        let limits = Limits::default();
        NodeConfig {
            server: server.into(),
            tls,
            credential,
            clients,
            pull_wait: Duration::from_secs(10),
            pull_max_bytes: limits.max_pull_bytes,
            max_instruction_payload: limits.max_instruction_payload,
            request_timeout: Duration::from_secs(30),
            reconnect_backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            metadata: Vec::new(),
            give_up: Duration::from_secs(600),
        }
    }
}
