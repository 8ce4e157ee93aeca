//! The node: one process, one connection, many logical clients (docs/network.md,
//! "Node API").
//!
//! [`Node`] is blocking-friendly: it owns a small tokio runtime for the connection and a
//! heartbeat task, and its methods block the calling thread. [`Node::serve`] is the whole
//! client loop — pull, run the handler on worker threads, push — and rides out server
//! restarts: a refused session re-registers, a lost connection is retried with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tower_service::Service;

use crate::auth::{sign_headers, KEY_HEADER, TOKEN_HEADER};
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::keys::Credential;
use crate::lock;
use crate::proto;
use crate::proto::fleet_client::FleetClient;
use crate::read_ahead::ReadAhead;
use crate::wire::{self, Failure, FailureKind, Instruction, Outcome};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest HTTP/2 frame either side accepts (the protocol's default is 16 KiB): a
/// model of 800 KB then crosses in one DATA frame instead of fifty.
pub(crate) const MAX_FRAME_SIZE: u32 = 1 << 20;

/// Most bytes of instructions [`Node::serve`] asks for in one Pull: a large model's
/// instructions then come one or a few at a time, so the first worker starts on the first
/// one while the next are in transit, instead of after the whole batch has arrived; small
/// instructions still come hundreds to a Pull.
const SERVE_PULL_BYTES: usize = 1 << 20;

/// A channel that signs the node's requests with its key (docs/network.md,
/// "Authentication"): each request until the server hands back a token for the connection,
/// then that token instead (docs/arch/0048-auth-once-per-connection.md). A request the
/// server refuses as unauthenticated while a token stood in for its signature is sent
/// again, signed: the channel may have reconnected, and a token is good for one connection.
#[derive(Clone)]
pub(crate) struct Signed {
    inner: Channel,
    credential: Credential,
    token: Arc<Mutex<Option<http::HeaderValue>>>,
}

impl Signed {
    pub(crate) fn new(inner: Channel, credential: Credential) -> Signed {
        Signed {
            inner,
            credential,
            token: Arc::default(),
        }
    }
}

/// Whether a response is a refusal with gRPC status UNAUTHENTICATED (a trailers-only
/// response carries its status in the headers).
fn unauthenticated(response: &http::Response<tonic::body::Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"16")
}

impl Service<http::Request<tonic::body::Body>> for Signed {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let credential = self.credential.clone();
        let token_slot = self.token.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            let token = lock(&token_slot).clone();
            if let Some(token) = token {
                let mut headers = parts.headers.clone();
                headers.insert(KEY_HEADER, http::HeaderValue::from_str(&credential.name)?);
                headers.insert(TOKEN_HEADER, token.clone());
                let mut req = http::Request::new(tonic::body::Body::new(Full::new(body.clone())));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = headers;
                let response = inner.call(req).await.map_err(Into::<BoxError>::into)?;
                if !unauthenticated(&response) {
                    return Ok(response);
                }
                // Not this connection's token (the channel reconnected): sign this one.
                {
                    let mut slot = lock(&token_slot);
                    if slot.as_ref() == Some(&token) {
                        *slot = None;
                    }
                }
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            }
            for (name, value) in
                sign_headers(&credential, parts.uri.path(), &body, SystemTime::now())?
            {
                parts
                    .headers
                    .insert(name, http::HeaderValue::from_str(&value)?);
            }
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(body)));
            let response = inner.call(req).await.map_err(Into::<BoxError>::into)?;
            if let Some(token) = response.headers().get(TOKEN_HEADER) {
                *lock(&token_slot) = Some(token.clone());
            }
            Ok(response)
        })
    }
}

/// Opens a node's TCP connections (TLS goes on top, from the endpoint): `TCP_NODELAY`,
/// and reads ahead of TLS ([`ReadAhead`]) so that a large Pull reply arrives in 64 KB
/// reads rather than 4 KB ones. The endpoint's connect timeout still applies.
#[derive(Clone, Copy)]
struct Connect;

impl Service<http::Uri> for Connect {
    type Response = hyper_util::rt::TokioIo<ReadAhead<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let (host, port) = host_port(&uri).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("no host in {uri}"),
                )
            })?;
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(ReadAhead::new(tcp)))
        })
    }
}

/// The host and port [`Connect`] dials for `uri`: an IPv6 literal without its brackets,
/// and without a port the scheme's (443 for `https`, 80 for `http`), as tonic's own
/// connector does.
fn host_port(uri: &http::Uri) -> Option<(&str, u16)> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        (None, _) => return None,
    };
    Some((host, port))
}

/// An endpoint for `config.server` with its TLS settings (shared with the tests' raw clients).
#[doc(hidden)]
pub fn endpoint(
    server: &str,
    tls: Option<&crate::tls::ClientTls>,
    timeout: Duration,
) -> Result<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bad = |e: &dyn std::fmt::Display| Error::Config {
        field: "server",
        value: server.to_string(),
        expected: format!("HOST:PORT ({e})"),
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{server}"))
        .map_err(|e| bad(&e))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(MAX_FRAME_SIZE);
    if let Some(tls) = tls {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .domain_name(tls.domain.clone());
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| Error::Tls(e.to_string()))?;
    }
    Ok(endpoint)
}

/// The largest Register request sent before the server has said its limit: below the
/// smallest limit [`crate::Limits::for_model`] gives (1 MiB + 64 KiB). A node's
/// registration larger than this (its clients' metadata: ≈ 45 bytes a client, more with
/// shared statistics) goes in parts.
pub const FIRST_PART_BYTES: usize = 512 * 1024;

/// What the server said at registration.
#[derive(Clone, Copy, Debug)]
struct Terms {
    session: u64,
    heartbeat: Duration,
    max_request_bytes: usize,
    max_replies_per_push: usize,
}

struct Link {
    client: FleetClient<Signed>,
    config: NodeConfig,
    terms: Mutex<Terms>,
    registering: tokio::sync::Mutex<()>,
    registrations: AtomicU64,
}

impl Link {
    fn terms(&self) -> Terms {
        *lock(&self.terms)
    }

    /// Registers unless someone already replaced `stale` with a newer session.
    async fn register(&self, stale: u64) -> Result<Terms> {
        let _one = self.registering.lock().await;
        let current = self.terms();
        if current.session != stale {
            return Ok(current);
        }
        let clients = self
            .config
            .clients
            .iter()
            .map(|r| proto::ClientRange {
                start: r.start,
                end: r.end,
            })
            .collect();
        let metadata: Vec<proto::ClientMetadata> = self
            .config
            .metadata
            .iter()
            .map(|(client, info)| proto::ClientMetadata {
                client: *client,
                info: info.clone(),
            })
            .collect();
        let whole = proto::RegisterRequest {
            protocol: wire::PROTOCOL,
            clients,
            metadata,
            more: false,
            part_of: 0,
        };
        // One request when it fits any server's limit; else in parts (protocol 1.3), the
        // first within that limit and the others within the limit its reply gives.
        let reply = if whole.encoded_len() <= FIRST_PART_BYTES {
            self.register_part(whole).await?
        } else {
            // (The entries' bytes are shared, not copied, by this clone.)
            let mut entries = whole.metadata.clone().into_iter().peekable();
            let mut part = proto::RegisterRequest {
                protocol: wire::PROTOCOL_PARTS,
                clients: whole.clients.clone(),
                metadata: Vec::new(),
                more: true,
                part_of: 0,
            };
            let mut first = true;
            let mut budget = FIRST_PART_BYTES;
            loop {
                let mut size = part.encoded_len() + 16;
                while let Some(e) = entries.peek() {
                    let len = e.encoded_len();
                    let len = 1 + prost::length_delimiter_len(len) + len;
                    if size + len > budget && !part.metadata.is_empty() {
                        break;
                    }
                    size += len;
                    part.metadata.push(entries.next().expect("peeked"));
                }
                part.more = entries.peek().is_some();
                let more = part.more;
                let reply = match self.register_part(part).await {
                    // A server from before 1.3 refuses protocol 2: it gets the
                    // registration in one request, as before (within its limit or not).
                    Err(e) if first && e.code() == Some(Code::FailedPrecondition) => {
                        break self.register_part(whole).await?;
                    }
                    r => r?,
                };
                first = false;
                if !more {
                    break reply;
                }
                budget = usize::try_from(reply.max_request_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(1024)
                    .max(FIRST_PART_BYTES);
                part = proto::RegisterRequest {
                    protocol: wire::PROTOCOL_PARTS,
                    clients: Vec::new(),
                    metadata: Vec::new(),
                    more: true,
                    part_of: reply.session,
                };
            }
        };
        let terms = Terms {
            session: reply.session,
            heartbeat: Duration::from_millis(u64::from(reply.heartbeat_interval_ms.max(10))),
            max_request_bytes: usize::try_from(reply.max_request_bytes).unwrap_or(usize::MAX),
            max_replies_per_push: (reply.max_replies_per_push as usize).max(1),
        };
        *lock(&self.terms) = terms;
        self.registrations.fetch_add(1, Ordering::Relaxed);
        Ok(terms)
    }

    /// Sends one Register request (a whole registration or one part of it).
    async fn register_part(&self, body: proto::RegisterRequest) -> Result<proto::RegisterReply> {
        let mut req = tonic::Request::new(body);
        req.set_timeout(self.config.request_timeout);
        Ok(self
            .client
            .clone()
            .register(req)
            .await
            .map_err(|s| Error::rpc("Register", s))?
            .into_inner())
    }

    /// Runs `call` with the current session; when the server no longer knows it (the
    /// server restarted, or the node was declared gone), registers again and retries once.
    async fn with_session<T, F, Fut>(&self, rpc: &'static str, call: F) -> Result<T>
    where
        F: Fn(FleetClient<Signed>, u64) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let session = self.terms().session;
        match call(self.client.clone(), session).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == Code::NotFound => {
                let terms = self.register(session).await?;
                call(self.client.clone(), terms.session)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Error::rpc(rpc, s))
            }
            Err(s) => Err(Error::rpc(rpc, s)),
        }
    }
}

/// Counters of one [`Node::serve`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Instructions received.
    pub instructions: u64,
    /// Replies the server took.
    pub accepted: u64,
    /// Calls that failed and were retried (connection lost, server restarting).
    pub retries: u64,
    /// Registrations after the first (server restarts, sessions expired).
    pub reregistrations: u64,
    /// The loop ended because the server said its run is over ([`crate::Server::finish`]).
    pub finished: bool,
}

/// A connected node hosting `config.clients`.
pub struct Node {
    link: Arc<Link>,
    runtime: tokio::runtime::Runtime,
    /// The payload later instructions may name instead of carrying it.
    held: Mutex<Option<wire::HeldPayload>>,
}

/// Whether an error is worth retrying (connection trouble) rather than fatal (refused;
/// a TLS handshake that failed — a server certificate the node does not trust, or not
/// for the name it expects — is a refusal too).
pub fn is_retriable(e: &Error) -> bool {
    tls_failure(e).is_none()
        && matches!(
            e.code(),
            Some(
                Code::Unavailable
                    | Code::Unknown
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Internal
                    | Code::NotFound
            )
        )
}

/// The errors under an RPC error's status, outermost first; an I/O error's wrapped
/// error is included (`io::Error::source` skips it).
fn causes(e: &Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let Error::Rpc { status, .. } = e else {
        return out;
    };
    let mut next = std::error::Error::source(status.as_ref());
    while let Some(cause) = next {
        out.push(cause);
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            out.push(inner);
        }
        next = cause.source();
    }
    out
}

/// The TLS error under a failed call, if the handshake failed because the node does
/// not trust the server's certificate (unknown CA, wrong name, expired) — a refusal
/// that retrying cannot cure. Other TLS trouble (a connection cut mid-handshake) is
/// connection trouble.
fn tls_failure(e: &Error) -> Option<&tokio_rustls::rustls::Error> {
    causes(e).into_iter().find_map(|c| {
        c.downcast_ref::<tokio_rustls::rustls::Error>()
            .filter(|t| matches!(t, tokio_rustls::rustls::Error::InvalidCertificate(_)))
    })
}

/// `e` on one line for a user: a failed TLS handshake as [`Error::Tls`] naming the
/// server and what to check; a status from the transport as the call, the status's
/// message and its innermost cause (`Register: tcp connect error: Connection refused`).
fn explained(e: Error, server: &str, domain: Option<&str>) -> Error {
    if let Some(tls) = tls_failure(&e) {
        return Error::Tls(format!(
            "server {server}: {tls} (expected a certificate signed by the CA given to the node, \
             for the name {:?})",
            domain.unwrap_or("?")
        ));
    }
    e
}

/// A short form of a retriable error for [`Error::Unreachable`]'s `last`.
fn short(e: &Error) -> String {
    match (e, causes(e).last()) {
        (Error::Rpc { rpc, status }, Some(cause)) => {
            format!("{rpc}: {}: {cause}", status.message())
        }
        (Error::Rpc { rpc, status }, None) => format!("{rpc}: {}", status.message()),
        _ => e.to_string(),
    }
}

impl Node {
    /// Connects and registers, retrying with backoff while the server is unreachable (not
    /// started yet, restarting) for up to `config.give_up`, then
    /// [`Error::Unreachable`]; a refusal (unknown or revoked key, clients held by another
    /// node, a server certificate the node does not trust) ends at once. Starts the
    /// heartbeat.
    pub fn connect(config: NodeConfig) -> Result<Node> {
        if config.clients.is_empty() || config.clients.iter().any(|r| r.start >= r.end) {
            return Err(Error::Config {
                field: "clients",
                value: format!("{:?}", config.clients),
                expected: "at least one non-empty range START..END".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fedpace-net-node")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let channel = {
            let _inside = runtime.enter();
            endpoint(&config.server, config.tls.as_ref(), config.request_timeout)?
                .connect_with_connector_lazy(Connect)
        };
        let link = Arc::new(Link {
            client: FleetClient::new(Signed::new(channel, config.credential.clone()))
                .max_decoding_message_size(
                    config
                        .pull_max_bytes
                        .saturating_add(config.max_instruction_payload),
                ),
            terms: Mutex::new(Terms {
                session: 0,
                heartbeat: Duration::from_secs(2),
                max_request_bytes: 4 << 20,
                max_replies_per_push: 1,
            }),
            registering: tokio::sync::Mutex::new(()),
            registrations: AtomicU64::new(0),
            config,
        });
        // The first registration waits like a reconnection: a node started before its
        // server keeps trying until `give_up`; a refusal ends it at once.
        let started = Instant::now();
        let give_up = link.config.give_up;
        let mut backoff = link.config.reconnect_backoff.0;
        loop {
            // One attempt may not outlast `give_up` (a silent address holds a connection
            // attempt for the whole `request_timeout`).
            let left = give_up.saturating_sub(started.elapsed());
            let attempt = runtime.block_on(async {
                tokio::time::timeout(left.max(Duration::from_millis(1)), link.register(0)).await
            });
            let attempt = attempt.unwrap_or_else(|_| {
                Err(Error::rpc(
                    "Register",
                    Status::deadline_exceeded(format!(
                        "no answer within {:.1}s",
                        left.as_secs_f64()
                    )),
                ))
            });
            match attempt {
                Ok(_) => break,
                Err(e) if is_retriable(&e) => {
                    let waited = started.elapsed();
                    if waited >= give_up {
                        return Err(Error::Unreachable {
                            server: link.config.server.clone(),
                            waited,
                            give_up,
                            last: short(&e),
                        });
                    }
                    std::thread::sleep(backoff.min(give_up - waited));
                    backoff = (backoff * 2).min(link.config.reconnect_backoff.1);
                }
                Err(e) => {
                    let domain = link.config.tls.as_ref().map(|t| t.domain.as_str());
                    return Err(explained(e, &link.config.server, domain));
                }
            }
        }
        let beat = Arc::downgrade(&link);
        runtime.spawn(async move {
            loop {
                let Some(link) = beat.upgrade() else { return };
                let period = link.terms().heartbeat;
                let timeout = link.config.request_timeout;
                drop(link);
                tokio::time::sleep(period).await;
                let Some(link) = beat.upgrade() else { return };
                let _ = link
                    .with_session("Heartbeat", |mut c, session| async move {
                        let mut req = tonic::Request::new(proto::HeartbeatRequest { session });
                        req.set_timeout(timeout);
                        c.heartbeat(req).await
                    })
                    .await;
            }
        });
        Ok(Node {
            link,
            runtime,
            held: Mutex::new(None),
        })
    }

    /// The current session id (changes when the node registers again).
    pub fn session(&self) -> u64 {
        self.link.terms().session
    }

    /// Waits up to `config.pull_wait` for instructions for this node's clients.
    pub fn pull(&self) -> Result<Vec<Instruction>> {
        Ok(self.pull_or_finished()?.0)
    }

    /// [`Node::pull`], and whether the server said its run is over (then the list is
    /// empty and no instruction will follow).
    pub fn pull_or_finished(&self) -> Result<(Vec<Instruction>, bool)> {
        self.pull_upto(self.link.config.pull_max_bytes, None)
    }

    /// [`Node::pull_or_finished`] asking for at most `max_bytes` of instructions (the
    /// server always sends at least one).
    fn pull_upto(
        &self,
        max_bytes: usize,
        stop: Option<&AtomicBool>,
    ) -> Result<(Vec<Instruction>, bool)> {
        let config = &self.link.config;
        let wait = config.pull_wait;
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let max_bytes = max_bytes.min(config.pull_max_bytes) as u64;
        let timeout = wait + config.request_timeout;
        let held = lock(&self.held).clone();
        let held = &held;
        let pull = self.link.with_session("Pull", |mut c, session| async move {
            let mut req = tonic::Request::new(proto::PullRequest {
                session,
                wait_ms,
                max_bytes,
                holding: Some(wire::HeldPayload::holding(held.as_ref(), session)),
            });
            req.set_timeout(timeout);
            let reply = c.pull(req).await?;
            Ok(reply.map(|r| (session, r)))
        });
        // A waiting Pull is given up when `stop` is set (looked at every 50 ms), so a
        // stopped node need not wait out `pull_wait`. Instructions the server handed
        // out in a reply given up this way are failed when the node leaves.
        let stopped = async {
            let Some(stop) = stop else {
                return std::future::pending().await;
            };
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let Some((session, reply)) = self.runtime.block_on(async {
            tokio::select! {
                r = pull => r.map(Some),
                () = stopped => Ok(None),
            }
        })?
        else {
            return Ok((Vec::new(), false));
        };
        let finished = reply.finished && reply.instructions.is_empty();
        let (list, now_held) = wire::instructions_from_proto(
            reply.instructions,
            session,
            held.clone(),
            config.max_instruction_payload,
        )?;
        *lock(&self.held) = now_held;
        Ok((list, finished))
    }

    /// Sends outcomes (split into as many Push calls as the server's limits need);
    /// returns how many the server took (late or unknown ones are not taken).
    pub fn push(&self, outcomes: &[Outcome]) -> Result<u64> {
        let terms = self.link.terms();
        let budget = terms.max_request_bytes.saturating_sub(64);
        let mut accepted = 0u64;
        let mut chunk: Vec<proto::Reply> = Vec::new();
        let mut size = 0usize;
        for o in outcomes {
            let reply = o.to_proto();
            let len = reply.encoded_len() + 16;
            if !chunk.is_empty()
                && (size + len > budget || chunk.len() >= terms.max_replies_per_push)
            {
                accepted += self.push_chunk(std::mem::take(&mut chunk))?;
                size = 0;
            }
            size += len;
            chunk.push(reply);
        }
        if !chunk.is_empty() {
            accepted += self.push_chunk(chunk)?;
        }
        Ok(accepted)
    }

    fn push_chunk(&self, replies: Vec<proto::Reply>) -> Result<u64> {
        let timeout = self.link.config.request_timeout;
        let replies = Arc::new(replies);
        let reply = self
            .runtime
            .block_on(self.link.with_session("Push", |mut c, session| {
                let replies = replies.clone();
                async move {
                    let mut req = tonic::Request::new(proto::PushRequest {
                        session,
                        replies: replies.to_vec(),
                    });
                    req.set_timeout(timeout);
                    c.push(req).await
                }
            }))?;
        Ok(u64::from(reply.accepted))
    }

    /// Closes the session: the server fails this node's outstanding instructions at once.
    pub fn leave(self) -> Result<()> {
        self.leave_session(self.link.config.request_timeout)
    }

    fn leave_session(&self, timeout: Duration) -> Result<()> {
        let session = self.session();
        let mut c = self.link.client.clone();
        self.runtime.block_on(async move {
            let mut req = tonic::Request::new(proto::LeaveRequest { session });
            req.set_timeout(timeout);
            c.leave(req)
                .await
                .map(|_| ())
                .map_err(|s| Error::rpc("Leave", s))
        })
    }

    /// The client loop: pulls instructions, runs `handler` on `workers` threads, pushes
    /// the outcomes in batches, until `stop` is set (checked between pulls, so within
    /// `config.pull_wait`) or the server says its run is over
    /// ([`ServeStats::finished`]; the outcomes in hand are pushed first, then the node
    /// leaves, which is the server's acknowledgement that it was told — see
    /// [`crate::Server::finish`]). Connection trouble — the server gone, restarting — is
    /// retried with backoff for up to `config.give_up` without an answer, then the loop
    /// ends with [`Error::Unreachable`]; a refusal (revoked key, clients held by another
    /// node) ends the loop with that error. An
    /// instruction already past its deadline is declined without running; a panicking
    /// handler becomes a client failure.
    pub fn serve<F>(&self, workers: usize, stop: &AtomicBool, handler: F) -> Result<ServeStats>
    where
        F: Fn(&Instruction) -> Result<Bytes, Failure> + Sync,
    {
        let workers = workers.max(1);
        let registrations_before = self.link.registrations.load(Ordering::Relaxed);
        let mut stats = ServeStats::default();
        let accepted = AtomicU64::new(0);
        let retries = AtomicU64::new(0);
        let fatal: Mutex<Option<Error>> = Mutex::new(None);
        let (work_tx, work_rx) = mpsc::sync_channel::<Instruction>(workers * 2);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Outcome>();
        let done_rx = Mutex::new(done_rx);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (work_rx, handler) = (&work_rx, &handler);
                scope.spawn(move || loop {
                    let Ok(ins) = lock(work_rx).recv() else {
                        return;
                    };
                    let result = if SystemTime::now() > ins.deadline {
                        Err(Failure::new(
                            FailureKind::Declined,
                            "deadline passed before the client started",
                        ))
                    } else {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&ins)))
                            .unwrap_or_else(|_| {
                                Err(Failure::new(FailureKind::Client, "client panicked"))
                            })
                    };
                    if done_tx
                        .send(Outcome::for_instruction(&ins, result))
                        .is_err()
                    {
                        return;
                    }
                });
            }
            drop(done_tx);
            let (accepted, retries) = (&accepted, &retries);
            // As many pushers as workers (up to 4): outcomes that finish together go up
            // side by side on the connection instead of one waiting for the other's reply
            // (at a round's end the round waits for the last of them). Each takes what
            // has finished so far as one batch.
            let done_rx = &done_rx;
            for _ in 0..workers.min(4) {
                scope.spawn(move || loop {
                    let batch: Vec<Outcome> = {
                        let rx = lock(done_rx);
                        let Ok(first) = rx.recv() else {
                            return;
                        };
                        std::iter::once(first)
                            .chain(rx.try_iter().take(4095))
                            .collect()
                    };
                    let mut backoff = self.link.config.reconnect_backoff.0;
                    for _ in 0..8 {
                        match self.push(&batch) {
                            Ok(n) => {
                                accepted.fetch_add(n, Ordering::Relaxed);
                                break;
                            }
                            Err(e) if is_retriable(&e) => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(self.link.config.reconnect_backoff.1);
                            }
                            Err(_) => break,
                        }
                    }
                });
            }
            let mut backoff = self.link.config.reconnect_backoff.0;
            let give_up = self.link.config.give_up;
            let mut answered = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match self.pull_upto(SERVE_PULL_BYTES, Some(stop)) {
                    Ok((_, true)) => {
                        stats.finished = true;
                        break;
                    }
                    Ok((list, false)) => {
                        answered = Instant::now();
                        backoff = self.link.config.reconnect_backoff.0;
                        stats.instructions += list.len() as u64;
                        for ins in list {
                            if work_tx.send(ins).is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) if is_retriable(&e) && answered.elapsed() < give_up => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(backoff.min(give_up.saturating_sub(answered.elapsed())));
                        backoff = (backoff * 2).min(self.link.config.reconnect_backoff.1);
                    }
                    Err(e) if is_retriable(&e) => {
                        *lock(&fatal) = Some(Error::Unreachable {
                            server: self.link.config.server.clone(),
                            waited: answered.elapsed(),
                            give_up,
                            last: short(&e),
                        });
                        break;
                    }
                    Err(e) => {
                        let config = &self.link.config;
                        let domain = config.tls.as_ref().map(|t| t.domain.as_str());
                        *lock(&fatal) = Some(explained(e, &config.server, domain));
                        break;
                    }
                }
            }
            drop(work_tx);
        });
        if let Some(e) = lock(&fatal).take() {
            return Err(e);
        }
        if stats.finished {
            // The acknowledgement `Server::finish` waits for; the server may already be
            // gone (it lingers only so long), so a failure here changes nothing.
            let _ =
                self.leave_session(self.link.config.request_timeout.min(Duration::from_secs(5)));
        }
        stats.accepted = accepted.load(Ordering::Relaxed);
        stats.retries = retries.load(Ordering::Relaxed);
        stats.reregistrations =
            self.link.registrations.load(Ordering::Relaxed) - registrations_before;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn a_server_address_gives_the_host_and_port_tonic_would_dial() {
        let hp = |u: &str| host_port(&u.parse().unwrap()).map(|(h, p)| (h.to_string(), p));
        assert_eq!(
            hp("https://127.0.0.1:8443"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(
            hp("https://fl.example.org"),
            Some(("fl.example.org".into(), 443))
        );
        assert_eq!(hp("http://localhost"), Some(("localhost".into(), 80)));
        assert_eq!(hp("https://[::1]:9000"), Some(("::1".into(), 9000)));
    }
}
