//! Request signing (node side) and verification with replay protection (server side);
//! docs/network.md, "Authentication".
//!
//! A signed request carries `fedpace-key` (node name), `fedpace-timestamp` (unix ms),
//! `fedpace-nonce` (16 random bytes, hex), `fedpace-digest` (`blake3`) and
//! `fedpace-signature` (Ed25519, hex) over `"fedpace.v1" 0 path 0 key 0 timestamp 0
//! nonce 0 BLAKE3(body)`. A request without `fedpace-digest` (a node built before it)
//! is checked against SHA-256(body) instead; any other value is refused
//! (docs/arch/0037-blake3-body-digest.md). The body is the raw gRPC request body, so the
//! signature covers exactly the bytes sent and a newer node's unknown fields do not break
//! it. The server refuses a timestamp outside its window and a nonce already seen within
//! the window.
//!
//! Over TLS a key is proven once per connection (docs/arch/0048-auth-once-per-connection.md):
//! the server answers a connection's first verified request from a key with
//! `fedpace-token` (32 random bytes, hex), and a later request on the same connection may
//! carry `fedpace-key` and that token instead of a signature. The token is worth nothing on
//! another connection; the key is still looked up (unknown or revoked: refused) on every
//! request. TLS keeps the connection's bytes from being replayed or altered, which the
//! timestamp, nonce and body digest do for a signed request.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, ED25519};
use tonic::{Code, Status};

use crate::error::Result;
use crate::keys::{hex, unhex, Credential, KeyRing, KeySource};
use crate::wire::{unix_ms, ClientId};

pub(crate) const KEY_HEADER: &str = "fedpace-key";
pub(crate) const TIMESTAMP_HEADER: &str = "fedpace-timestamp";
pub(crate) const NONCE_HEADER: &str = "fedpace-nonce";
pub(crate) const SIGNATURE_HEADER: &str = "fedpace-signature";
pub(crate) const DIGEST_HEADER: &str = "fedpace-digest";
pub(crate) const TOKEN_HEADER: &str = "fedpace-token";

/// The tokens one TLS connection's signed requests earned, one per key
/// (docs/arch/0048-auth-once-per-connection.md). Dropped with the connection.
#[derive(Default)]
pub(crate) struct ConnectionTokens {
    by_key: Mutex<HashMap<String, [u8; 32]>>,
}

impl ConnectionTokens {
    /// Most keys one connection holds tokens for (a proxy may carry several nodes); beyond
    /// it a connection's requests stay signed.
    pub(crate) const MAX_KEYS: usize = 16;

    /// The token of `key` on this connection (hex), made at its first verified request;
    /// `None` when the connection already holds [`Self::MAX_KEYS`] others or the system
    /// random generator fails (the node then keeps signing).
    pub(crate) fn issue(&self, key: &str) -> Option<String> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = by_key.get(key) {
            return Some(hex(t));
        }
        if by_key.len() >= Self::MAX_KEYS {
            return None;
        }
        let mut token = [0u8; 32];
        SystemRandom::new().fill(&mut token).ok()?;
        by_key.insert(key.to_string(), token);
        Some(hex(&token))
    }

    /// Whether `token` (hex) is the one issued to `key` on this connection; compared in
    /// constant time.
    fn holds(&self, key: &str, token: &str) -> bool {
        let Some(given) = unhex::<32>(token) else {
            return false;
        };
        let by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        by_key
            .get(key)
            .is_some_and(|issued| issued.iter().zip(&given).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0)
    }
}

/// The hash of the request body that a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyDigest {
    /// SHA-256: what a request without a `fedpace-digest` header is checked against.
    Sha256,
    /// BLAKE3 (`fedpace-digest: blake3`), what nodes send: about three times SHA-256's
    /// speed on large bodies, which a round's model updates are.
    Blake3,
}

impl BodyDigest {
    /// The digest a request's headers name: none is SHA-256; the error names the value.
    fn from_headers(headers: &HeaderMap) -> Result<BodyDigest, Status> {
        match headers.get(DIGEST_HEADER) {
            None => Ok(BodyDigest::Sha256),
            Some(v) if v.as_bytes() == b"blake3" => Ok(BodyDigest::Blake3),
            Some(v) => Err(Status::unauthenticated(format!(
                "{DIGEST_HEADER} {:?}: expected \"blake3\" (or no header for SHA-256)",
                String::from_utf8_lossy(v.as_bytes())
            ))),
        }
    }
}

/// The bytes a node signs for one request.
pub(crate) fn signed_message(
    path: &str,
    key: &str,
    timestamp: u64,
    nonce: &str,
    body_digest: BodyDigest,
    body: &[u8],
) -> Vec<u8> {
    let sha;
    let b3;
    let body_digest: &[u8] = match body_digest {
        BodyDigest::Sha256 => {
            sha = digest(&SHA256, body);
            sha.as_ref()
        }
        BodyDigest::Blake3 => {
            b3 = blake3::hash(body);
            b3.as_bytes()
        }
    };
    let mut m = Vec::with_capacity(64 + path.len() + key.len() + nonce.len());
    for part in [b"fedpace.v1".as_slice(), path.as_bytes(), key.as_bytes()] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(nonce.as_bytes());
    m.push(0);
    m.extend_from_slice(body_digest);
    m
}

/// The authentication headers for a request to `path` with `body`, its digest BLAKE3.
pub fn sign_headers(
    credential: &Credential,
    path: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Vec<(&'static str, String)>, Status> {
    sign_headers_with(credential, path, body, now, BodyDigest::Blake3)
}

/// [`sign_headers`] with the body's digest chosen: [`BodyDigest::Sha256`] signs as a node
/// built before `fedpace-digest` did (no such header).
pub fn sign_headers_with(
    credential: &Credential,
    path: &str,
    body: &[u8],
    now: SystemTime,
    body_digest: BodyDigest,
) -> Result<Vec<(&'static str, String)>, Status> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Status::internal("system random generator failed"))?;
    let nonce = hex(&nonce);
    let timestamp = unix_ms(now);
    let signature = credential.sign(&signed_message(
        path,
        &credential.name,
        timestamp,
        &nonce,
        body_digest,
        body,
    ));
    let mut headers = vec![
        (KEY_HEADER, credential.name.clone()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, hex(&signature)),
    ];
    if body_digest == BodyDigest::Blake3 {
        headers.push((DIGEST_HEADER, "blake3".to_string()));
    }
    Ok(headers)
}

/// Who sent a verified request.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub name: String,
    pub clients: Vec<Range<ClientId>>,
}

struct Known {
    public_key: [u8; 32],
    identity: Arc<Identity>,
    revoked: bool,
}

/// Nonces seen within the window, oldest first; bounded by `capacity`.
struct Nonces {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<(u64, [u8; 16])>,
    capacity: usize,
}

/// Server-side verifier: the key ring (reread when its file changes) and the nonce cache.
pub(crate) struct Verifier {
    source: KeySource,
    known: RwLock<HashMap<String, Known>>,
    file_stamp: Mutex<Option<FileStamp>>,
    last_check_ms: AtomicU64,
    reload_every: Duration,
    window: Duration,
    nonces: Mutex<Nonces>,
}

fn index(ring: &KeyRing) -> HashMap<String, Known> {
    ring.entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                Known {
                    public_key: e.public_key,
                    identity: Arc::new(Identity {
                        name: e.name.clone(),
                        clients: e.clients.clone(),
                    }),
                    revoked: e.revoked,
                },
            )
        })
        .collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str, max_len: usize) -> Result<&'a str, Status> {
    let value = headers
        .get(name)
        .ok_or_else(|| Status::unauthenticated(format!("missing {name} header")))?;
    if value.len() > max_len {
        return Err(Status::unauthenticated(format!(
            "{name} header: {} bytes, at most {max_len}",
            value.len()
        )));
    }
    value
        .to_str()
        .map_err(|_| Status::unauthenticated(format!("{name} header: not ASCII")))
}

impl Verifier {
    pub(crate) fn new(
        source: KeySource,
        window: Duration,
        reload_every: Duration,
        max_nonces: usize,
    ) -> Result<Verifier> {
        let (ring, stamp) = match &source {
            KeySource::Fixed(ring) => (ring.clone(), None),
            KeySource::File(path) => (KeyRing::load(path)?, modified(path)),
        };
        Ok(Verifier {
            source,
            known: RwLock::new(index(&ring)),
            file_stamp: Mutex::new(stamp),
            last_check_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            reload_every,
            window,
            nonces: Mutex::new(Nonces {
                seen: HashMap::new(),
                order: VecDeque::new(),
                capacity: max_nonces,
            }),
        })
    }

    /// Rereads the key ring file if it changed since the last look (at most once per
    /// `reload_every`). A ring that fails to parse keeps the old one in force.
    fn maybe_reload(&self, now_ms: u64) {
        let KeySource::File(path) = &self.source else {
            return;
        };
        let last = self.last_check_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.reload_every.as_millis()).unwrap_or(u64::MAX);
        if now_ms < last.saturating_add(every)
            || self
                .last_check_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let _ = self.reload_file(path);
    }

    fn reload_file(&self, path: &PathBuf) -> Result<()> {
        let stamp = modified(path);
        let mut current = self.file_stamp.lock().unwrap_or_else(|p| p.into_inner());
        if stamp.is_some() && stamp == *current {
            return Ok(());
        }
        let ring = KeyRing::load(path)?;
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = index(&ring);
        *current = stamp;
        Ok(())
    }

    /// Rereads the key ring now (for `fedpace keys revoke` followed by a signal, tests).
    pub(crate) fn reload(&self) -> Result<()> {
        match &self.source {
            KeySource::File(path) => {
                *self.file_stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.reload_file(path)
            }
            KeySource::Fixed(_) => Ok(()),
        }
    }

    /// The checks that need no body: a known, unrevoked key and a timestamp in the window.
    pub(crate) fn precheck(&self, headers: &HeaderMap) -> Result<(), Status> {
        let now_ms = unix_ms(SystemTime::now());
        self.maybe_reload(now_ms);
        let name = header(headers, KEY_HEADER, 64)?;
        self.known_key(name)?;
        self.check_timestamp(headers, now_ms)?;
        Ok(())
    }

    /// Checks a request that carries a connection token instead of a signature: a known,
    /// unrevoked key, and the token this connection issued to it.
    pub(crate) fn verify_token(
        &self,
        headers: &HeaderMap,
        tokens: &ConnectionTokens,
    ) -> Result<Arc<Identity>, Status> {
        self.maybe_reload(unix_ms(SystemTime::now()));
        let name = header(headers, KEY_HEADER, 64)?;
        let (_, identity) = self.known_key(name)?;
        let token = header(headers, TOKEN_HEADER, 64)?;
        if !tokens.holds(name, token) {
            return Err(Status::unauthenticated(format!(
                "{TOKEN_HEADER}: not issued to key {name:?} on this connection; sign the request"
            )));
        }
        Ok(identity)
    }

    /// Whether key `name` may still be served (known, not revoked), the ring reread if it
    /// is due: a long request that began before a revocation checks again before it
    /// answers (a Pull woken by instructions).
    pub(crate) fn still_allowed(&self, name: &str) -> Result<(), Status> {
        self.maybe_reload(unix_ms(SystemTime::now()));
        self.known_key(name).map(|_| ())
    }

    fn known_key(&self, name: &str) -> Result<([u8; 32], Arc<Identity>), Status> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let k = known
            .get(name)
            .ok_or_else(|| Status::unauthenticated(format!("unknown key {name:?}")))?;
        if k.revoked {
            return Err(Status::permission_denied(format!(
                "key {name:?} is revoked"
            )));
        }
        Ok((k.public_key, k.identity.clone()))
    }

    fn check_timestamp(&self, headers: &HeaderMap, now_ms: u64) -> Result<u64, Status> {
        let text = header(headers, TIMESTAMP_HEADER, 20)?;
        let timestamp: u64 = text.parse().map_err(|_| {
            Status::unauthenticated(format!(
                "{TIMESTAMP_HEADER} {text:?}: not unix milliseconds"
            ))
        })?;
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if timestamp.abs_diff(now_ms) > window_ms {
            return Err(Status::unauthenticated(format!(
                "timestamp {timestamp} is {} ms from the server's clock, window is {window_ms} ms",
                timestamp.abs_diff(now_ms)
            )));
        }
        Ok(timestamp)
    }

    /// Checks one request: known, unrevoked key; timestamp within the window; valid
    /// signature over path and body; nonce not seen before.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
    ) -> Result<Arc<Identity>, Status> {
        let now_ms = unix_ms(SystemTime::now());
        let name = header(headers, KEY_HEADER, 64)?;
        let (public_key, identity) = self.known_key(name)?;
        let timestamp = self.check_timestamp(headers, now_ms)?;
        let nonce_text = header(headers, NONCE_HEADER, 32)?;
        let signature_text = header(headers, SIGNATURE_HEADER, 128)?;
        let nonce = unhex::<16>(nonce_text).ok_or_else(|| {
            Status::unauthenticated(format!("{NONCE_HEADER}: expected 32 hex digits"))
        })?;
        let signature = unhex::<64>(signature_text).ok_or_else(|| {
            Status::unauthenticated(format!("{SIGNATURE_HEADER}: expected 128 hex digits"))
        })?;
        let body_digest = BodyDigest::from_headers(headers)?;
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let message = signed_message(path, name, timestamp, nonce_text, body_digest, body);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&message, &signature)
            .map_err(|_| Status::unauthenticated(format!("bad signature for key {name:?}")))?;
        // Only a correctly signed request may take a nonce slot.
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(expiry, old)) = nonces.order.front() {
            if expiry > now_ms {
                break;
            }
            nonces.order.pop_front();
            nonces.seen.remove(&old);
        }
        if nonces.seen.contains_key(&nonce) {
            return Err(Status::unauthenticated(format!(
                "replayed request: nonce {nonce_text} already used by key {name:?}"
            )));
        }
        if nonces.seen.len() >= nonces.capacity {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "more than {} requests within the replay window",
                    nonces.capacity
                ),
            ));
        }
        let expiry = timestamp.saturating_add(window_ms).max(now_ms);
        nonces.seen.insert(nonce, expiry);
        nonces.order.push_back((expiry, nonce));
        Ok(identity)
    }
}

/// What tells a changed key ring file: its modification time, length and inode. The time
/// alone can miss a change: file systems stamp with a coarse clock (a tick of several
/// milliseconds), and `fedpace keys revoke` replaces the file by renaming a new one over it.
type FileStamp = (SystemTime, u64, u64);

fn modified(path: &PathBuf) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some((m.modified().ok()?, m.len(), inode))
}
