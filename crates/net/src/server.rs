//! The server: accepts nodes, queues instructions for their clients, collects replies
//! (docs/network.md, "Server API"; docs/arch/0010-network-transport.md).
//!
//! The round loop talks to [`Server`] from ordinary threads; the network runs on the
//! server's own tokio runtime. Every instruction settles exactly once in its [`Batch`]:
//! with the client's reply or failure, as [`FailureKind::Gone`] when its node is lost,
//! or as [`FailureKind::Deadline`] at its deadline. A reply that arrives after that is
//! late: dropped, or kept for [`Server::recv_late`] when `ServerConfig::late` asks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tonic::{Request, Response, Status};
use tower_service::Service;

use crate::auth::{ConnectionTokens, Identity, Verifier, SIGNATURE_HEADER, TOKEN_HEADER};
use crate::config::ServerConfig;
use crate::envelope;
use crate::error::{Error, Result};
use crate::lock;
use crate::proto;
use crate::proto::fleet_server::{Fleet, FleetServer};
use crate::read_ahead::ReadAhead;
use crate::wire::{self, unix_ms, ClientId, Failure, FailureKind, Kind, Outcome};

/// One settled instruction, as the round loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The instruction's id.
    pub instruction: u64,
    /// The client it was for.
    pub client: ClientId,
    /// Its round.
    pub round: u64,
    /// Its kind.
    pub kind: Kind,
    /// The reply's payload, or why there is none.
    pub result: Result<Bytes, Failure>,
    /// True for a reply taken after the instruction had settled as late or gone (only
    /// from [`Server::recv_late`]).
    pub late: bool,
    /// From sending to settling.
    pub elapsed: Duration,
}

/// Bytes of one client's messages of one kind in one round, as encoded on the wire
/// (protobuf bytes of the `Instruction` or `Reply`, including its field header; the
/// TLS, HTTP/2 and envelope overhead shared by a node's clients is in [`NodeStatus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// The round.
    pub round: u64,
    /// The client.
    pub client: ClientId,
    /// The message kind.
    pub kind: Kind,
    /// Instruction bytes sent (a redelivery after a reconnect counts again).
    pub sent_bytes: u64,
    /// Reply bytes received (late replies included).
    pub received_bytes: u64,
    /// Instructions sent.
    pub sent_messages: u32,
    /// Replies received.
    pub received_messages: u32,
}

/// A connected node, for status pages and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its key's name.
    pub name: String,
    /// Its session id.
    pub session: u64,
    /// How many clients it registered.
    pub clients: u64,
    /// Time since its last request.
    pub silent_for: Duration,
    /// Raw bytes read from its current connection (TLS records included).
    pub wire_read: u64,
    /// Raw bytes written to its current connection.
    pub wire_written: u64,
}

/// Counters of things refused or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests refused before reaching the protocol (authentication, size, framing).
    pub refused_requests: u64,
    /// Late replies dropped (late queue disabled or full).
    pub late_dropped: u64,
    /// Replies for instructions the server does not know (settled long ago, another run).
    pub unknown_replies: u64,
    /// Connections closed for idleness or a slow handshake.
    pub idle_closed: u64,
    /// Connections accepted so far.
    pub connections: u64,
    /// Requests admitted by their signature.
    pub signed_requests: u64,
    /// Requests admitted by their connection's token (TLS only;
    /// docs/arch/0048-auth-once-per-connection.md).
    pub token_requests: u64,
}

struct Pending {
    client: ClientId,
    round: u64,
    kind: Kind,
    deadline: Instant,
    deadline_unix_ms: u64,
    payload: Bytes,
    tx: Sender<Arrival>,
    sent_at: Instant,
    session: u64,
    state_round: u64,
}

struct Tombstone {
    client: ClientId,
    round: u64,
    kind: Kind,
    sent_at: Instant,
}

struct Session {
    key: String,
    clients: Vec<Range<ClientId>>,
    ready: VecDeque<u64>,
    leased: HashSet<u64>,
    last_seen: Instant,
    notify: Arc<Notify>,
    conn: Option<Arc<ConnStats>>,
    /// The latest instruction this session was sent with its payload in full, kept while
    /// the session has instructions outstanding: a Pull that says it holds it gets later
    /// instructions with the same payload by name (`Instruction.payload_of`).
    last_full: Option<(u64, Bytes)>,
}

/// A registration arriving in parts (`RegisterRequest.more`, protocol 1.3): kept per key
/// until its last part, which registers it whole; nothing of it counts before then.
struct Partial {
    /// The number the first part's reply gave it (`RegisterRequest.part_of`).
    id: u64,
    clients: Vec<Range<ClientId>>,
    metadata: Vec<(ClientId, Bytes)>,
    /// The latest part's arrival: a registration left unfinished for the heartbeat
    /// timeout is dropped.
    last_seen: Instant,
}

#[derive(Default)]
struct State {
    /// Registrations in parts not finished yet, by key name (one per key).
    partial: HashMap<String, Partial>,
    sessions: HashMap<u64, Session>,
    session_of_key: HashMap<String, u64>,
    client_session: HashMap<ClientId, u64>,
    client_count: usize,
    pending: HashMap<u64, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    tombstones: HashMap<u64, Tombstone>,
    tombstone_order: VecDeque<(Instant, u64)>,
    traffic: BTreeMap<u64, HashMap<(ClientId, Kind), Traffic>>,
    /// What each client reported about itself at its latest registration.
    metadata: HashMap<ClientId, Bytes>,
    next_instruction: u64,
    next_session: u64,
    stopped: bool,
    /// Set by [`Server::finish`]: Pull answers `finished` at once.
    finished: bool,
    /// Sessions that left after the run was over: told, and known to have heard it.
    acknowledged: HashSet<u64>,
    /// Sent with every instruction (docs/checkpoints.md, "Over the network").
    durable_round: u64,
}

#[derive(Default)]
struct Counters {
    refused: AtomicU64,
    late_dropped: AtomicU64,
    unknown: AtomicU64,
    idle_closed: AtomicU64,
    connections: AtomicU64,
    signed: AtomicU64,
    by_token: AtomicU64,
}

struct Shared {
    config: ServerConfig,
    verifier: Verifier,
    state: Mutex<State>,
    changed: Condvar,
    late_tx: Option<SyncSender<Arrival>>,
    late_rx: Mutex<Option<Receiver<Arrival>>>,
    counters: Counters,
    start: Instant,
}

/// Whether two payloads are the same bytes (the same buffer, as a batch shares one model
/// among its clients, is told without reading it).
fn same(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Encoded size of a message inside a repeated field: tag byte, length, body.
fn field_len(body: usize) -> u64 {
    (1 + prost::length_delimiter_len(body) + body) as u64
}

impl State {
    fn ledger(&mut self, round: u64, client: ClientId, kind: Kind) -> &mut Traffic {
        self.traffic
            .entry(round)
            .or_default()
            .entry((client, kind))
            .or_insert(Traffic {
                round,
                client,
                kind,
                sent_bytes: 0,
                received_bytes: 0,
                sent_messages: 0,
                received_messages: 0,
            })
    }

    /// Settles instruction `id` in its batch.
    fn settle(&mut self, shared: &Shared, id: u64, result: Result<Bytes, Failure>, now: Instant) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&p.session) {
            s.leased.remove(&id);
            if s.leased.is_empty() && s.ready.is_empty() {
                s.last_full = None; // its memory is not held for a node with nothing to do
            }
        }
        // A server-decided failure leaves a tombstone until `late.grace` after the
        // deadline, so that a reply arriving later is recognised (and accounted) as late.
        if matches!(&result, Err(f) if matches!(f.kind, FailureKind::Deadline | FailureKind::Gone))
        {
            self.tombstones.insert(
                id,
                Tombstone {
                    client: p.client,
                    round: p.round,
                    kind: p.kind,
                    sent_at: p.sent_at,
                },
            );
            self.tombstone_order
                .push_back((p.deadline + shared.config.late.grace, id));
        }
        let _ = p.tx.send(Arrival {
            instruction: id,
            client: p.client,
            round: p.round,
            kind: p.kind,
            result,
            late: false,
            elapsed: now.saturating_duration_since(p.sent_at),
        });
    }

    /// Ends a session: its clients leave, its instructions fail as gone.
    fn end_session(&mut self, shared: &Shared, session: u64, reason: &str, now: Instant) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if self.session_of_key.get(&s.key) == Some(&session) {
            self.session_of_key.remove(&s.key);
        }
        for r in &s.clients {
            for c in r.clone() {
                if self.client_session.get(&c) == Some(&session) {
                    self.client_session.remove(&c);
                    self.client_count -= 1;
                }
            }
        }
        let ids: Vec<u64> = s.ready.iter().chain(s.leased.iter()).copied().collect();
        for id in ids {
            let failure = Failure::new(FailureKind::Gone, format!("node {:?} {reason}", s.key));
            self.settle(shared, id, Err(failure), now);
        }
        s.notify.notify_waiters();
        shared.changed.notify_all();
    }
}

impl Shared {
    fn tick(&self) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        while let Some(Reverse((deadline, id))) = st.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            st.deadlines.pop();
            if st.pending.contains_key(&id) {
                let failure = Failure::new(FailureKind::Deadline, "no reply by the deadline");
                st.settle(self, id, Err(failure), now);
            }
        }
        let timeout = self.config.heartbeat_timeout;
        let silent: Vec<u64> = st
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_seen) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            let reason = format!("missed its heartbeats for {timeout:?}");
            st.end_session(self, id, &reason, now);
        }
        st.partial
            .retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
        while let Some(&(until, id)) = st.tombstone_order.front() {
            if until > now {
                break;
            }
            st.tombstone_order.pop_front();
            st.tombstones.remove(&id);
        }
    }

    fn refuse(&self, status: Status) -> http::Response<tonic::body::Body> {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        status.into_http()
    }
}

/// Byte counts and last activity of one connection.
pub(crate) struct ConnStats {
    read: AtomicU64,
    written: AtomicU64,
    last_read_ms: AtomicU64,
    start: Instant,
}

impl ConnStats {
    fn new(start: Instant) -> ConnStats {
        let s = ConnStats {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            start,
        };
        s.touch();
        s
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that counts the bytes crossing it and when the peer last sent any (read
/// ahead of TLS: [`ReadAhead`]).
struct Counted {
    inner: ReadAhead<TcpStream>,
    stats: Arc<ConnStats>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.stats.read.fetch_add(n as u64, Ordering::Relaxed);
            self.stats.touch();
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Per-connection front door: buffers a bounded body, checks framing and sizes,
/// verifies the signature or the connection's token, then hands the request to the
/// generated service.
#[derive(Clone)]
struct Gate {
    shared: Arc<Shared>,
    fleet: FleetServer<FleetService>,
    conn: Arc<ConnStats>,
    bodies: Arc<Semaphore>,
    /// The tokens this connection issued; `None` without TLS, where every request is signed.
    tokens: Option<Arc<ConnectionTokens>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Gate {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let gate = self.clone();
        Box::pin(async move { Ok(gate.handle(req).await) })
    }
}

impl Gate {
    async fn handle(mut self, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        let (parts, body, token) = match self.admit(req).await {
            Ok(admitted) => admitted,
            Err(status) => return self.shared.refuse(status),
        };
        let mut response = if parts.uri.path() == PUSH_PATH {
            self.push(parts, body).await
        } else {
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(body)));
            match self.fleet.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        if let Some(value) = token.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
            response.headers_mut().insert(TOKEN_HEADER, value);
        }
        response
    }

    /// Push, decoded here rather than by tonic: the body is already whole and its frame
    /// checked ([`Gate::admit`]), so prost decodes it where it lies and the replies'
    /// payloads stay slices of the received buffer (tonic's decoder would first copy the
    /// body into its own: one model-sized copy per update). The reply is the gRPC
    /// response tonic would send.
    async fn push(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> http::Response<tonic::body::Body> {
        let message = match proto::PushRequest::decode(body.slice(5..)) {
            Ok(m) => m,
            Err(e) => {
                return Status::internal(format!("failed to decode Protobuf message: {e}"))
                    .into_http()
            }
        };
        let service = FleetService {
            shared: self.shared.clone(),
        };
        let req = Request::from_http(http::Request::from_parts(parts, message));
        match Fleet::push(&service, req).await {
            Ok(reply) => grpc_response(&reply.into_inner()),
            Err(status) => status.into_http(),
        }
    }

    /// The request's parts and whole body once admitted, with the connection's token for
    /// its key when a signature admitted it over TLS (sent back in `fedpace-token`).
    async fn admit(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<(http::request::Parts, Bytes, Option<String>), Status> {
        let config = &self.shared.config;
        let limits = &config.limits;
        let path = req.uri().path().to_string();
        if envelope::repeated_bound(&path, limits).is_none() {
            return Err(Status::unimplemented(format!(
                "{path}: no such RPC in fedpace.v1"
            )));
        }
        // A request with a token and no signature is checked by the token alone; unknown
        // or revoked keys and stale timestamps are refused before any body is read.
        let by_token = match &self.tokens {
            Some(tokens)
                if req.headers().contains_key(TOKEN_HEADER)
                    && !req.headers().contains_key(SIGNATURE_HEADER) =>
            {
                Some(self.shared.verifier.verify_token(req.headers(), tokens)?)
            }
            _ => {
                self.shared.verifier.precheck(req.headers())?;
                None
            }
        };
        let (mut parts, body) = req.into_parts();
        let body = {
            let _permit = self
                .bodies
                .acquire()
                .await
                .map_err(|_| Status::unavailable("server shutting down"))?;
            let limited = Limited::new(body, limits.max_request_bytes.saturating_add(5));
            match tokio::time::timeout(config.handshake_timeout, limited.collect()).await {
                Err(_) => return Err(Status::deadline_exceeded("request body too slow")),
                Ok(Err(e)) => {
                    return Err(Status::resource_exhausted(format!(
                        "request body: {e} (limit {} bytes)",
                        limits.max_request_bytes
                    )))
                }
                Ok(Ok(collected)) => collected.to_bytes(),
            }
        };
        envelope::check_body(&path, &body, limits)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let counters = &self.shared.counters;
        let (identity, token) = match by_token {
            Some(identity) => {
                counters.by_token.fetch_add(1, Ordering::Relaxed);
                (identity, None)
            }
            None => {
                let identity = self.shared.verifier.verify(&parts.headers, &path, &body)?;
                counters.signed.fetch_add(1, Ordering::Relaxed);
                let token = self.tokens.as_ref().and_then(|t| t.issue(&identity.name));
                (identity, token)
            }
        };
        parts.extensions.insert(identity);
        parts.extensions.insert(self.conn.clone());
        Ok((parts, body, token))
    }
}

/// The path of the Push RPC, which [`Gate`] serves itself.
const PUSH_PATH: &str = "/fedpace.v1.Fleet/Push";

/// A successful unary gRPC response carrying `message`: one uncompressed frame, then the
/// `grpc-status: 0` trailer.
fn grpc_response<M: Message>(message: &M) -> http::Response<tonic::body::Body> {
    let len = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + len);
    frame.push(0);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(&mut frame);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(frame))
        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[derive(Clone)]
struct FleetService {
    shared: Arc<Shared>,
}

fn identity<T>(req: &Request<T>) -> Result<Arc<Identity>, Status> {
    req.extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request did not pass the gate"))
}

impl FleetService {
    /// The reply to a Register: `session` and the server's terms.
    fn register_reply(&self, session: u64) -> proto::RegisterReply {
        let config = &self.shared.config;
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        proto::RegisterReply {
            session,
            heartbeat_interval_ms: ms(config.heartbeat_interval),
            heartbeat_timeout_ms: ms(config.heartbeat_timeout),
            max_pull_wait_ms: ms(config.max_pull_wait),
            max_request_bytes: config.limits.max_request_bytes as u64,
            max_replies_per_push: u32::try_from(config.limits.max_replies_per_push)
                .unwrap_or(u32::MAX),
        }
    }

    /// Opens a session for a whole, checked registration (`metadata` sorted by client,
    /// each in `ranges`): the clients count from now on, and a session the key held
    /// before hands over the instructions of the clients it still hosts.
    fn open_session(
        &self,
        who: &Identity,
        ranges: Vec<Range<ClientId>>,
        metadata: Vec<(ClientId, Bytes)>,
        conn: Option<Arc<ConnStats>>,
    ) -> Result<Response<proto::RegisterReply>, Status> {
        let now = Instant::now();
        let mut st = lock(&self.shared.state);
        if st.stopped {
            return Err(Status::unavailable("server shutting down"));
        }
        for r in &ranges {
            for c in r.clone() {
                if let Some(other) = st.client_session.get(&c).and_then(|s| st.sessions.get(s)) {
                    if other.key != who.name {
                        return Err(Status::already_exists(format!(
                            "client {c} is hosted by node {:?}",
                            other.key
                        )));
                    }
                }
            }
        }
        st.next_session += 1;
        let session = st.next_session ^ (u64::from(rand_u32()) << 32);
        let mut moved = VecDeque::new();
        if let Some(old) = st.session_of_key.get(&who.name).copied() {
            // The node came back (restart, new connection): its queued and leased
            // instructions for clients it still hosts are delivered again; the others
            // fail as gone with the old session.
            let mut ids: Vec<u64> = match st.sessions.get_mut(&old) {
                Some(s) => s.leased.drain().chain(s.ready.drain(..)).collect(),
                None => Vec::new(),
            };
            ids.sort_unstable(); // in the order they were sent
            let state = &mut *st;
            let (keep, lost): (Vec<u64>, Vec<u64>) = ids.into_iter().partition(|id| {
                state
                    .pending
                    .get(id)
                    .is_some_and(|p| ranges.iter().any(|r| r.contains(&p.client)))
            });
            moved.extend(keep);
            if let Some(s) = st.sessions.get_mut(&old) {
                s.ready.extend(lost);
            }
            st.end_session(&self.shared, old, "registered again", now);
        }
        let mut count = 0;
        for r in &ranges {
            for c in r.clone() {
                if st.client_session.insert(c, session).is_none() {
                    count += 1;
                }
            }
        }
        st.client_count += count;
        for (c, m) in metadata {
            st.metadata.insert(c, m);
        }
        for id in &moved {
            if let Some(p) = st.pending.get_mut(id) {
                p.session = session;
            }
        }
        st.sessions.insert(
            session,
            Session {
                key: who.name.clone(),
                clients: ranges,
                ready: moved,
                leased: HashSet::new(),
                last_seen: now,
                notify: Arc::new(Notify::new()),
                conn,
                last_full: None,
            },
        );
        st.session_of_key.insert(who.name.clone(), session);
        drop(st);
        self.shared.changed.notify_all();
        Ok(Response::new(self.register_reply(session)))
    }

    /// Checks that `session` is the caller's live session and marks it seen.
    fn touch<'a, T>(
        &self,
        st: &'a mut State,
        req: &Request<T>,
        who: &Identity,
        session: u64,
    ) -> Result<&'a mut Session, Status> {
        let s = st
            .sessions
            .get_mut(&session)
            .filter(|s| s.key == who.name)
            .ok_or_else(|| {
                Status::not_found(format!("session {session} unknown: register again"))
            })?;
        s.last_seen = Instant::now();
        if let Some(conn) = req.extensions().get::<Arc<ConnStats>>() {
            s.conn = Some(conn.clone());
        }
        Ok(s)
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn register(
        &self,
        req: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterReply>, Status> {
        let who = identity(&req)?;
        let config = &self.shared.config;
        let body = req.get_ref();
        let parts = body.more || body.part_of != 0;
        if !(wire::PROTOCOL..=wire::PROTOCOL_PARTS).contains(&body.protocol) {
            return Err(Status::failed_precondition(format!(
                "RegisterRequest.protocol = {}: this server speaks {}..={}",
                body.protocol,
                wire::PROTOCOL,
                wire::PROTOCOL_PARTS
            )));
        }
        if parts && body.protocol < wire::PROTOCOL_PARTS {
            return Err(Status::invalid_argument(format!(
                "RegisterRequest.protocol = {}: a registration in parts (more, part_of) needs {}",
                body.protocol,
                wire::PROTOCOL_PARTS
            )));
        }
        let limits = &config.limits;
        let conn = req.extensions().get::<Arc<ConnStats>>().cloned();
        if body.part_of != 0 {
            // A later part: more metadata for the registration its first part opened.
            if !body.clients.is_empty() {
                return Err(Status::invalid_argument(
                    "RegisterRequest.clients: a later part (part_of set) carries metadata only",
                ));
            }
            let now = Instant::now();
            let mut st = lock(&self.shared.state);
            let Some(p) = st
                .partial
                .get_mut(&who.name)
                .filter(|p| p.id == body.part_of)
            else {
                // NotFound, as for an unknown session: a node retries it by registering
                // again from the first part (a server restarted between two parts).
                return Err(Status::not_found(format!(
                    "RegisterRequest.part_of = {}: no registration in progress by that number \
                     for key {:?} (replaced by a newer one, or unfinished for {:?}); register again",
                    body.part_of, who.name, config.heartbeat_timeout
                )));
            };
            let entries = wire::metadata_from_proto(body.metadata.clone(), &p.clients)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let hosted: u64 = p.clients.iter().map(|r| r.end - r.start).sum();
            if (p.metadata.len() + entries.len()) as u64 > hosted {
                return Err(Status::invalid_argument(format!(
                    "RegisterRequest.metadata: {} entries so far for {hosted} clients",
                    p.metadata.len() + entries.len()
                )));
            }
            p.metadata.extend(entries);
            p.last_seen = now;
            if body.more {
                return Ok(Response::new(self.register_reply(body.part_of)));
            }
            let p = st.partial.remove(&who.name).expect("looked up above");
            drop(st);
            let metadata = wire::sorted_metadata(p.metadata)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return self.open_session(&who, p.clients, metadata, conn);
        }
        let ranges = wire::ranges_from_proto(
            &body.clients,
            limits.max_ranges,
            limits.max_clients_per_node,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let metadata = wire::metadata_from_proto(body.metadata.clone(), &ranges)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        for r in &ranges {
            if !who
                .clients
                .iter()
                .any(|a| a.start <= r.start && r.end <= a.end)
            {
                return Err(Status::permission_denied(format!(
                    "key {:?} may not host clients {}..{}",
                    who.name, r.start, r.end
                )));
            }
        }
        if body.more {
            // The first of several parts: kept aside (replacing any unfinished one of
            // this key) until the last.
            let mut st = lock(&self.shared.state);
            if st.stopped {
                return Err(Status::unavailable("server shutting down"));
            }
            let id = (u64::from(rand_u32()) << 32 | u64::from(rand_u32())).max(1);
            st.partial.insert(
                who.name.clone(),
                Partial {
                    id,
                    clients: ranges,
                    metadata,
                    last_seen: Instant::now(),
                },
            );
            return Ok(Response::new(self.register_reply(id)));
        }
        self.open_session(&who, ranges, metadata, conn)
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatReply>, Status> {
        let who = identity(&req)?;
        let mut st = lock(&self.shared.state);
        self.touch(&mut st, &req, &who, req.get_ref().session)?;
        Ok(Response::new(proto::HeartbeatReply {}))
    }

    async fn pull(
        &self,
        req: Request<proto::PullRequest>,
    ) -> Result<Response<proto::PullReply>, Status> {
        let who = identity(&req)?;
        let config = &self.shared.config;
        let body = req.get_ref();
        let wait = Duration::from_millis(u64::from(body.wait_ms)).min(config.max_pull_wait);
        let max_bytes = usize::try_from(body.max_bytes)
            .unwrap_or(usize::MAX)
            .min(config.limits.max_pull_bytes);
        let until = tokio::time::Instant::now() + wait;
        loop {
            // A key revoked while this Pull waited gets no instructions.
            self.shared.verifier.still_allowed(&who.name)?;
            let notify = {
                let mut st = lock(&self.shared.state);
                let now = Instant::now();
                let session = body.session;
                let s = self.touch(&mut st, &req, &who, session)?;
                let notify = s.notify.clone();
                let mut ready = std::mem::take(&mut s.ready);
                // Payloads by name (`Instruction.payload_of`): only to a node that says
                // which one it holds, and only the latest full one it was sent.
                let names = body.holding.is_some();
                let mut named = match (body.holding, s.last_full.take()) {
                    (Some(h), Some(last)) if h != 0 && h == last.0 => Some(last),
                    _ => None,
                };
                let durable_round = st.durable_round;
                let mut out = Vec::new();
                let mut total = 0usize;
                let mut leased = Vec::new();
                while let Some(id) = ready.pop_front() {
                    let Some(p) = st.pending.get(&id) else {
                        continue;
                    };
                    if p.deadline <= now {
                        continue; // the tick settles it as late
                    }
                    let by_name = named
                        .as_ref()
                        .and_then(|(of, b)| same(b, &p.payload).then_some(*of));
                    let instruction = proto::Instruction {
                        id,
                        client: p.client,
                        round: p.round,
                        kind: p.kind.to_proto() as i32,
                        deadline_unix_ms: p.deadline_unix_ms,
                        payload: if by_name.is_some() {
                            Bytes::new()
                        } else {
                            p.payload.clone()
                        },
                        state_round: p.state_round,
                        durable_round,
                        payload_of: by_name.unwrap_or(0),
                    };
                    let size = field_len(instruction.encoded_len());
                    if !out.is_empty() && total + size as usize > max_bytes {
                        ready.push_front(id);
                        break;
                    }
                    total += size as usize;
                    if names && by_name.is_none() {
                        named = Some((id, p.payload.clone()));
                    }
                    let (round, client, kind) = (p.round, p.client, p.kind);
                    let t = st.ledger(round, client, kind);
                    t.sent_bytes += size;
                    t.sent_messages += 1;
                    leased.push(id);
                    out.push(instruction);
                }
                let s = st.sessions.get_mut(&session).expect("touched above");
                s.ready = ready;
                s.leased.extend(leased);
                if !(s.ready.is_empty() && s.leased.is_empty()) {
                    s.last_full = named;
                }
                if !out.is_empty() || st.finished {
                    let finished = out.is_empty();
                    return Ok(Response::new(proto::PullReply {
                        instructions: out,
                        finished,
                    }));
                }
                notify
            };
            // Woken by instructions, or every `keys_reload` to look at the key again (a
            // revoked node's waiting Pull ends within about that, not at `until`).
            let slice =
                tokio::time::Instant::now() + config.keys_reload.max(Duration::from_millis(100));
            if tokio::time::timeout_at(until.min(slice), notify.notified())
                .await
                .is_err()
                && tokio::time::Instant::now() >= until
            {
                return Ok(Response::new(proto::PullReply {
                    instructions: Vec::new(),
                    finished: false,
                }));
            }
        }
    }

    async fn push(
        &self,
        req: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushReply>, Status> {
        let who = identity(&req)?;
        let now = Instant::now();
        let shared = &self.shared;
        let max_payload = shared.config.limits.max_reply_payload;
        let mut st = lock(&shared.state);
        self.touch(&mut st, &req, &who, req.get_ref().session)?;
        let mut accepted = 0u32;
        for reply in req.into_inner().replies {
            let size = field_len(reply.encoded_len());
            let outcome: Outcome = wire::reply_from_proto(reply, max_payload);
            let allowed = who.clients.iter().any(|r| r.contains(&outcome.client));
            if let Some(p) = st
                .pending
                .get(&outcome.instruction)
                .filter(|p| allowed && p.client == outcome.client)
            {
                let (round, client, kind) = (p.round, p.client, p.kind);
                let t = st.ledger(round, client, kind);
                t.received_bytes += size;
                t.received_messages += 1;
                st.settle(shared, outcome.instruction, outcome.result, now);
                accepted += 1;
            } else if let Some(t) = st
                .tombstones
                .get(&outcome.instruction)
                .filter(|t| allowed && t.client == outcome.client)
            {
                let arrival = Arrival {
                    instruction: outcome.instruction,
                    client: t.client,
                    round: t.round,
                    kind: t.kind,
                    result: outcome.result,
                    late: true,
                    elapsed: now.saturating_duration_since(t.sent_at),
                };
                st.tombstones.remove(&arrival.instruction);
                let ledger = st.ledger(arrival.round, arrival.client, arrival.kind);
                ledger.received_bytes += size;
                ledger.received_messages += 1;
                let kept = shared
                    .late_tx
                    .as_ref()
                    .is_some_and(|tx| tx.try_send(arrival).is_ok());
                if kept {
                    accepted += 1;
                } else {
                    shared.counters.late_dropped.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Response::new(proto::PushReply { accepted }))
    }

    async fn leave(
        &self,
        req: Request<proto::LeaveRequest>,
    ) -> Result<Response<proto::LeaveReply>, Status> {
        let who = identity(&req)?;
        let mut st = lock(&self.shared.state);
        let session = req.get_ref().session;
        self.touch(&mut st, &req, &who, session)?;
        if st.finished {
            st.acknowledged.insert(session);
        }
        st.end_session(&self.shared, session, "left", Instant::now());
        Ok(Response::new(proto::LeaveReply {}))
    }
}

fn rand_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_le_bytes(b)
}

/// Instructions sent together and the channel their arrivals come back on.
///
/// A synchronous round is one `send` then [`Batch::collect`]; an asynchronous loop keeps
/// one batch, `send`s as clients free up and takes arrivals with [`Batch::recv_timeout`].
pub struct Batch {
    shared: Arc<Shared>,
    tx: Sender<Arrival>,
    rx: Receiver<Arrival>,
    outstanding: usize,
    sent: usize,
    round: u64,
    last_deadline: Instant,
    state_round: Option<u64>,
}

impl Batch {
    /// The `state_round` of the instructions sent from now on (default: each
    /// instruction's round); see [`crate::Instruction::state_round`].
    pub fn set_state_round(&mut self, state_round: Option<u64>) {
        self.state_round = state_round;
    }

    /// Queues one instruction per `(client, payload)` of `round` and `kind`, due within
    /// `deadline`. Clients that are not connected settle at once as
    /// [`FailureKind::NotConnected`]. Payloads are shared, not copied: clone one
    /// [`Bytes`] for every client that gets the same model. Returns the instruction ids.
    pub fn send(
        &mut self,
        round: u64,
        kind: Kind,
        items: Vec<(ClientId, Bytes)>,
        deadline: Duration,
    ) -> Result<Vec<u64>> {
        let limit = self.shared.config.limits.max_instruction_payload;
        if let Some((client, p)) = items.iter().find(|(_, p)| p.len() > limit) {
            return Err(Error::Config {
                field: "payload",
                value: format!("client {client}: {} bytes", p.len()),
                expected: format!("at most limits.max_instruction_payload = {limit}"),
            });
        }
        let now = Instant::now();
        let due = now + deadline;
        let due_unix = unix_ms(SystemTime::now() + deadline);
        let mut st = lock(&self.shared.state);
        if st.stopped {
            return Err(Error::Shutdown);
        }
        let mut ids = Vec::with_capacity(items.len());
        let mut woken = HashSet::new();
        for (client, payload) in items {
            st.next_instruction += 1;
            let id = st.next_instruction;
            ids.push(id);
            self.outstanding += 1;
            self.sent += 1;
            let session = st
                .client_session
                .get(&client)
                .copied()
                .filter(|s| st.sessions.contains_key(s));
            let Some(session) = session else {
                let _ = self.tx.send(Arrival {
                    instruction: id,
                    client,
                    round,
                    kind,
                    result: Err(Failure::new(
                        FailureKind::NotConnected,
                        format!("client {client} is not connected"),
                    )),
                    late: false,
                    elapsed: Duration::ZERO,
                });
                continue;
            };
            st.pending.insert(
                id,
                Pending {
                    client,
                    round,
                    kind,
                    deadline: due,
                    deadline_unix_ms: due_unix,
                    payload,
                    tx: self.tx.clone(),
                    sent_at: now,
                    session,
                    state_round: self.state_round.unwrap_or(round),
                },
            );
            st.deadlines.push(Reverse((due, id)));
            if let Some(s) = st.sessions.get_mut(&session) {
                s.ready.push_back(id);
                if woken.insert(session) {
                    s.notify.notify_one();
                }
            }
        }
        self.round = round;
        self.last_deadline = self.last_deadline.max(due);
        Ok(ids)
    }

    /// Instructions sent and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The next settled instruction, in arrival order; `None` after `timeout` or when
    /// nothing is outstanding.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Arrival> {
        if self.outstanding == 0 {
            return None;
        }
        let a = self.rx.recv_timeout(timeout).ok()?;
        self.outstanding -= 1;
        Some(a)
    }

    /// Waits until every instruction has settled (replies, failures, and deadline
    /// failures at the deadline) and returns them ordered by client id. Fails with
    /// [`Error::QuorumNotMet`] when fewer than `quorum` replied successfully.
    pub fn collect(mut self, quorum: usize) -> Result<Vec<Arrival>> {
        let mut out = Vec::with_capacity(self.outstanding);
        // The tick settles everything at its deadline; this bound only guards against a
        // server that stopped ticking (shut down).
        let give_up = self.last_deadline + self.shared.config.tick * 10 + Duration::from_secs(1);
        while self.outstanding > 0 {
            let wait = give_up.saturating_duration_since(Instant::now());
            match self.recv_timeout(wait.max(Duration::from_millis(1))) {
                Some(a) => out.push(a),
                None if Instant::now() >= give_up => break,
                None => {}
            }
        }
        out.sort_by_key(|a| (a.client, a.instruction));
        let replied = out.iter().filter(|a| a.result.is_ok()).count();
        if replied < quorum {
            let deadline = out
                .iter()
                .filter(|a| matches!(&a.result, Err(f) if f.kind == FailureKind::Deadline))
                .count();
            return Err(Error::QuorumNotMet {
                round: self.round,
                quorum,
                sent: self.sent,
                replied,
                failed: out.len() - replied - deadline,
                missing: self.outstanding + deadline,
            });
        }
        Ok(out)
    }
}

/// A running fleet server. Dropping it closes every connection.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Binds `config.listen` and starts serving on a runtime of its own.
    pub fn start(config: ServerConfig) -> Result<Server> {
        config.validate()?;
        let tls = config.tls.as_ref().map(|t| t.rustls_config()).transpose()?;
        let verifier = Verifier::new(
            config.keys.clone(),
            config.auth_window,
            config.keys_reload,
            config.max_nonces,
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("fedpace-net-server")
            .enable_all()
            .build()
            .map_err(|e| Error::Listen {
                addr: config.listen.to_string(),
                source: e,
            })?;
        let listener = runtime
            .block_on(TcpListener::bind(config.listen))
            .map_err(|e| Error::Listen {
                addr: config.listen.to_string(),
                source: e,
            })?;
        let local_addr = listener.local_addr().map_err(|e| Error::Listen {
            addr: config.listen.to_string(),
            source: e,
        })?;
        let (late_tx, late_rx) = if config.late.capacity > 0 {
            let (tx, rx) = mpsc::sync_channel(config.late.capacity);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            config,
            verifier,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            late_tx,
            late_rx: Mutex::new(late_rx),
            counters: Counters::default(),
            start: Instant::now(),
        });
        lock(&shared.state).next_instruction = u64::from(rand_u32()) << 24;
        let (stop, stopped) = watch::channel(false);
        runtime.spawn(accept_loop(listener, shared.clone(), tls, stopped.clone()));
        let ticker = shared.clone();
        let mut stop_tick = stopped;
        runtime.spawn(async move {
            let mut every = tokio::time::interval(ticker.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => ticker.tick(),
                    _ = stop_tick.changed() => break,
                }
            }
        });
        Ok(Server {
            shared,
            local_addr,
            stop,
            runtime: Some(runtime),
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A new, empty batch.
    pub fn batch(&self) -> Batch {
        let (tx, rx) = mpsc::channel();
        Batch {
            shared: self.shared.clone(),
            tx,
            rx,
            outstanding: 0,
            sent: 0,
            round: 0,
            last_deadline: Instant::now(),
            state_round: None,
        }
    }

    /// Sets the `durable_round` sent with every instruction from now on: the round the
    /// server could restart from (its last checkpoint), so that clients may forget older
    /// states (docs/checkpoints.md, "Over the network").
    pub fn set_durable_round(&self, round: u64) {
        lock(&self.shared.state).durable_round = round;
    }

    /// Tells the nodes that the run is over: every Pull from now on answers `finished`
    /// (a node's [`crate::Node::serve`] returns with [`crate::ServeStats::finished`] and
    /// then leaves). Waits until every node with a session has left — a reply of
    /// `finished` may be lost with its connection, and the node then pulls again, so only
    /// its Leave shows that it heard — or until `linger` passes; returns how many nodes
    /// left. Instructions still queued are delivered first.
    pub fn finish(&self, linger: Duration) -> usize {
        let until = Instant::now() + linger;
        let mut st = lock(&self.shared.state);
        st.finished = true;
        for s in st.sessions.values() {
            s.notify.notify_waiters();
            s.notify.notify_one();
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if st.sessions.is_empty() || left.is_zero() {
                return st.acknowledged.len();
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// One synchronous round trip: sends `items`, returns every client's arrival ordered
    /// by client id when all have settled, or at `deadline` when at least `quorum`
    /// replied; otherwise [`Error::QuorumNotMet`] naming the round and the counts.
    pub fn dispatch(
        &self,
        round: u64,
        kind: Kind,
        items: Vec<(ClientId, Bytes)>,
        deadline: Duration,
        quorum: usize,
    ) -> Result<Vec<Arrival>> {
        if quorum > items.len() {
            return Err(Error::Config {
                field: "quorum",
                value: quorum.to_string(),
                expected: format!("at most the {} clients sent to", items.len()),
            });
        }
        let mut batch = self.batch();
        batch.send(round, kind, items, deadline)?;
        batch.collect(quorum)
    }

    /// The next late reply (after its instruction settled as late or gone), when
    /// `ServerConfig::late.capacity > 0`; `None` after `timeout`.
    pub fn recv_late(&self, timeout: Duration) -> Option<Arrival> {
        let rx = lock(&self.shared.late_rx);
        rx.as_ref()?.recv_timeout(timeout).ok()
    }

    /// Connected clients, ascending.
    pub fn clients(&self) -> Vec<ClientId> {
        let st = lock(&self.shared.state);
        let mut ids: Vec<ClientId> = st.client_session.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `client` is connected (its node holds a live session).
    pub fn is_connected(&self, client: ClientId) -> bool {
        let st = lock(&self.shared.state);
        st.client_session
            .get(&client)
            .is_some_and(|s| st.sessions.contains_key(s))
    }

    /// What client `id` reported about itself when its node last registered
    /// (`RegisterRequest.metadata`; opaque bytes), `None` if it reported nothing.
    /// Kept after the client disconnects.
    pub fn client_metadata(&self, id: ClientId) -> Option<Bytes> {
        lock(&self.shared.state).metadata.get(&id).cloned()
    }

    /// How many clients are connected.
    pub fn client_count(&self) -> usize {
        lock(&self.shared.state).client_count
    }

    /// Blocks until at least `n` clients are connected or `timeout` passes; returns the count.
    pub fn wait_for_clients(&self, n: usize, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while st.client_count < n {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.client_count
    }

    /// Connected nodes, by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let st = lock(&self.shared.state);
        let now = Instant::now();
        let mut out: Vec<NodeStatus> = st
            .sessions
            .iter()
            .map(|(&session, s)| NodeStatus {
                name: s.key.clone(),
                session,
                clients: s.clients.iter().map(|r| r.end - r.start).sum(),
                silent_for: now.saturating_duration_since(s.last_seen),
                wire_read: s
                    .conn
                    .as_ref()
                    .map_or(0, |c| c.read.load(Ordering::Relaxed)),
                wire_written: s
                    .conn
                    .as_ref()
                    .map_or(0, |c| c.written.load(Ordering::Relaxed)),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes and returns the traffic ledger of `round`, ordered by client then kind.
    /// The round loop takes each round's ledger once the round is over (late replies
    /// arriving afterwards open a fresh entry for that round).
    pub fn take_traffic(&self, round: u64) -> Vec<Traffic> {
        let mut st = lock(&self.shared.state);
        let mut out: Vec<Traffic> = st
            .traffic
            .remove(&round)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        out.sort_by_key(|t| (t.client, t.kind));
        out
    }

    /// [`Server::take_traffic`] of one kind only: the other kinds' figures of `round`
    /// stay for their own taker (on the real clock a dispatch number and an evaluation
    /// round can be the same number).
    pub fn take_traffic_of(&self, round: u64, kind: Kind) -> Vec<Traffic> {
        let mut st = lock(&self.shared.state);
        let Some(m) = st.traffic.get_mut(&round) else {
            return Vec::new();
        };
        let keys: Vec<(ClientId, Kind)> = m.keys().filter(|k| k.1 == kind).copied().collect();
        let mut out: Vec<Traffic> = keys.iter().filter_map(|k| m.remove(k)).collect();
        if m.is_empty() {
            st.traffic.remove(&round);
        }
        out.sort_by_key(|t| t.client);
        out
    }

    /// Counters of refused requests and dropped replies.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            refused_requests: c.refused.load(Ordering::Relaxed),
            late_dropped: c.late_dropped.load(Ordering::Relaxed),
            unknown_replies: c.unknown.load(Ordering::Relaxed),
            idle_closed: c.idle_closed.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            signed_requests: c.signed.load(Ordering::Relaxed),
            token_requests: c.by_token.load(Ordering::Relaxed),
        }
    }

    /// Rereads the key ring file now (it is also reread when it changes, every
    /// `ServerConfig::keys_reload`).
    pub fn reload_keys(&self) -> Result<()> {
        self.shared.verifier.reload()
    }

    /// Stops accepting, fails outstanding instructions as gone and closes every connection.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.stopped = true;
            let sessions: Vec<u64> = st.sessions.keys().copied().collect();
            for s in sessions {
                st.end_session(
                    &self.shared,
                    s,
                    "lost: the server shut down",
                    Instant::now(),
                );
            }
        }
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(shared.config.max_connections));
    let bodies = Arc::new(Semaphore::new(shared.config.max_buffered_requests));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let stats = Arc::new(ConnStats::new(shared.start));
        let gate = Gate {
            shared: shared.clone(),
            fleet: FleetServer::new(FleetService {
                shared: shared.clone(),
            })
            .max_decoding_message_size(shared.config.limits.max_request_bytes)
            .max_encoding_message_size(
                shared
                    .config
                    .limits
                    .max_pull_bytes
                    .saturating_add(shared.config.limits.max_instruction_payload),
            ),
            conn: stats.clone(),
            bodies: bodies.clone(),
            tokens: (acceptor.is_some() && shared.config.connection_tokens)
                .then(|| Arc::new(ConnectionTokens::default())),
        };
        let io = Counted {
            inner: ReadAhead::new(tcp),
            stats: stats.clone(),
        };
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let shared = gate.shared.clone();
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), gate, stats, stop).await,
                        Ok(Err(_)) => {}
                        Err(_) => {
                            shared.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => serve_connection(TokioIo::new(io), gate, stats, stop).await,
            }
        });
    }
}

async fn serve_connection<I>(
    io: I,
    gate: Gate,
    stats: Arc<ConnStats>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let shared = gate.shared.clone();
    let config = &shared.config;
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(config.max_streams_per_connection)
        .max_header_list_size(16 * 1024)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(crate::node::MAX_FRAME_SIZE)
        .max_send_buf_size(1 << 20)
        .serve_connection(io, gate);
    tokio::pin!(conn);
    let check = (config.idle_timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep(check) => {
                if stats.idle_for() > config.idle_timeout {
                    shared.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}
