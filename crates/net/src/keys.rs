//! Node credentials: the key ring the server reads and the private key a node holds
//! (docs/network.md, "Authentication"; becomes `fedpace keys generate|list|revoke`).
//!
//! Each node has an Ed25519 key pair. The server's key ring (a TOML file) lists every
//! node's name, public key, the client ids it may host, and whether it is revoked; the
//! node keeps its 32-byte secret seed in its own credential file (mode 0600).

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire::ClientId;

/// One node in the key ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The node's name (`[A-Za-z0-9._-]`, 1–64 characters); sent with every request.
    pub name: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Client ids this node may register (end excluded).
    pub clients: Vec<Range<ClientId>>,
    /// A revoked key is refused; kept in the file so its name is not reissued by mistake.
    pub revoked: bool,
}

impl KeyEntry {
    /// Whether every id in `range` is one this node may host.
    pub fn allows(&self, range: &Range<ClientId>) -> bool {
        self.clients
            .iter()
            .any(|r| r.start <= range.start && range.end <= r.end)
    }
}

/// The server's list of nodes allowed to join.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    /// Entries in file order.
    pub entries: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    #[serde(default)]
    node: Vec<EntryFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    public_key: String,
    clients: Vec<String>,
    #[serde(default)]
    revoked: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialFile {
    name: String,
    secret_key: String,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Checks a node name: 1–64 characters of `[A-Za-z0-9._-]` (it travels in a header).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: expected 1 to 64 characters of letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Parses `"A..B"` (end excluded) into a range of client ids.
pub fn parse_range(s: &str) -> std::result::Result<Range<ClientId>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected START..END"))?;
    let start: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: start {a:?} is not a client id"))?;
    let end: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: end {b:?} is not a client id"))?;
    if start >= end {
        return Err(format!("{s:?}: end must exceed start"));
    }
    Ok(start..end)
}

fn overlaps(
    a: &[Range<ClientId>],
    b: &[Range<ClientId>],
) -> Option<(Range<ClientId>, Range<ClientId>)> {
    for x in a {
        for y in b {
            if x.start < y.end && y.start < x.end {
                return Some((x.clone(), y.clone()));
            }
        }
    }
    None
}

impl KeyRing {
    /// Reads a key ring file; every field is checked, errors name the entry and field.
    pub fn load(path: &Path) -> Result<KeyRing> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: RingFile =
            toml::from_str(&text).map_err(|e| Error::file(path, e.message().to_string()))?;
        let mut ring = KeyRing::default();
        for (i, e) in file.node.into_iter().enumerate() {
            let at =
                |field: &str, msg: String| Error::file(path, format!("node[{i}].{field} = {msg}"));
            check_name(&e.name).map_err(|m| at("name", m))?;
            let public_key = unhex::<32>(&e.public_key).ok_or_else(|| {
                at(
                    "public_key",
                    format!("{:?}: expected 64 hex digits", e.public_key),
                )
            })?;
            let clients = e
                .clients
                .iter()
                .map(|s| parse_range(s))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|m| at("clients", m))?;
            if clients.is_empty() {
                return Err(at("clients", "[]: expected at least one range".into()));
            }
            if ring.entries.iter().any(|x| x.name == e.name) {
                return Err(at("name", format!("{:?}: used twice", e.name)));
            }
            ring.entries.push(KeyEntry {
                name: e.name,
                public_key,
                clients,
                revoked: e.revoked,
            });
        }
        Ok(ring)
    }

    /// Writes the key ring (to a temporary file first, then renamed over `path`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = RingFile {
            node: self
                .entries
                .iter()
                .map(|e| EntryFile {
                    name: e.name.clone(),
                    public_key: hex(&e.public_key),
                    clients: e
                        .clients
                        .iter()
                        .map(|r| format!("{}..{}", r.start, r.end))
                        .collect(),
                    revoked: e.revoked,
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| Error::file(path, e.to_string()))?;
        let text = format!(
            "# fedpace key ring: nodes allowed to join, read by the server.\n\
             # Managed with `fedpace keys generate|list|revoke`; see docs/network.md.\n\n{body}"
        );
        write_atomically(path, text.as_bytes(), false)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`;
/// `private` files get mode 0600 on Unix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    {
        use std::io::Write;
        let mut f = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A node's private credential: its name and Ed25519 key pair.
#[derive(Clone)]
pub struct Credential {
    /// The node's name in the server's key ring.
    pub name: String,
    seed: [u8; 32],
    pair: Arc<Ed25519KeyPair>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("public_key", &hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A fresh random key pair for node `name`.
    pub fn generate(name: &str) -> Result<Credential> {
        check_name(name).map_err(|m| Error::Config {
            field: "name",
            value: name.to_string(),
            expected: m,
        })?;
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::Tls("system random generator failed".into()))?;
        Credential::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: [u8; 32]) -> Result<Credential> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| Error::Tls(format!("ed25519 key: {e}")))?;
        Ok(Credential {
            name: name.to_string(),
            seed,
            pair: Arc::new(pair),
        })
    }

    /// The public half, as listed in the key ring.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs `message` (64-byte Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// Reads a credential file written by [`generate`].
    pub fn load(path: &Path) -> Result<Credential> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: CredentialFile =
            toml::from_str(&text).map_err(|e| Error::file(path, e.message().to_string()))?;
        check_name(&file.name).map_err(|m| Error::file(path, format!("name = {m}")))?;
        let seed = unhex::<32>(&file.secret_key)
            .ok_or_else(|| Error::file(path, "secret_key: expected 64 hex digits".to_string()))?;
        Credential::from_seed(&file.name, seed).map_err(|e| Error::file(path, e.to_string()))
    }

    /// Writes the credential (mode 0600 on Unix).
    pub fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string(&CredentialFile {
            name: self.name.clone(),
            secret_key: hex(&self.seed),
        })
        .map_err(|e| Error::file(path, e.to_string()))?;
        let text = format!(
            "# fedpace node credential: keep private; the server knows only the public key.\n{body}"
        );
        write_atomically(path, text.as_bytes(), true)
    }
}

/// Creates a key pair for node `name` hosting `clients`, adds its public key to the key
/// ring at `ring_path` (created if missing) and writes the private credential to
/// `credential_path`. Refuses a name already in the ring and clients that overlap a
/// non-revoked node's.
pub fn generate(
    ring_path: &Path,
    name: &str,
    clients: Vec<Range<ClientId>>,
    credential_path: &Path,
) -> Result<KeyEntry> {
    let mut ring = if ring_path.exists() {
        KeyRing::load(ring_path)?
    } else {
        KeyRing::default()
    };
    if ring.get(name).is_some() {
        return Err(Error::Config {
            field: "name",
            value: name.to_string(),
            expected: format!("a name not yet in {}", ring_path.display()),
        });
    }
    if clients.is_empty() || clients.iter().any(|r| r.start >= r.end) {
        return Err(Error::Config {
            field: "clients",
            value: format!("{clients:?}"),
            expected: "at least one non-empty range START..END".into(),
        });
    }
    for other in ring.entries.iter().filter(|e| !e.revoked) {
        if let Some((a, b)) = overlaps(&clients, &other.clients) {
            return Err(Error::Config {
                field: "clients",
                value: format!("{}..{}", a.start, a.end),
                expected: format!(
                    "ids no other node holds (node {:?} has {}..{})",
                    other.name, b.start, b.end
                ),
            });
        }
    }
    let credential = Credential::generate(name)?;
    let entry = KeyEntry {
        name: name.to_string(),
        public_key: credential.public_key(),
        clients,
        revoked: false,
    };
    credential.save(credential_path)?;
    ring.entries.push(entry.clone());
    ring.save(ring_path)?;
    Ok(entry)
}

/// The entries of the key ring at `ring_path`.
pub fn list(ring_path: &Path) -> Result<Vec<KeyEntry>> {
    Ok(KeyRing::load(ring_path)?.entries)
}

/// Marks node `name` revoked; a running server refuses it once it rereads the ring
/// (within `ServerConfig::keys_reload`).
pub fn revoke(ring_path: &Path, name: &str) -> Result<()> {
    let mut ring = KeyRing::load(ring_path)?;
    let entry = ring
        .entries
        .iter_mut()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::Config {
            field: "name",
            value: name.to_string(),
            expected: format!("a node in {}", ring_path.display()),
        })?;
    entry.revoked = true;
    ring.save(ring_path)
}

/// Where the key ring comes from: a file the server rereads when it changes, or a fixed
/// ring (tests, embedding).
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A key ring file.
    File(PathBuf),
    /// A ring held in memory.
    Fixed(KeyRing),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1: the key pair and the signature of the empty message.
    #[test]
    fn ed25519_matches_rfc8032_test_vector_1() {
        let seed = unhex::<32>("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let c = Credential::from_seed("rfc", seed).unwrap();
        assert_eq!(
            hex(&c.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex(&c.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065\
             224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn ranges_and_hex_parse_or_say_why() {
        assert_eq!(parse_range("3..7"), Ok(3..7));
        assert!(parse_range("7..3")
            .unwrap_err()
            .contains("end must exceed start"));
        assert!(parse_range("a..3").unwrap_err().contains("not a client id"));
        assert!(parse_range("3").unwrap_err().contains("START..END"));
        assert_eq!(unhex::<2>("0aFf"), Some([10, 255]));
        assert_eq!(unhex::<2>("0aF"), None);
        assert_eq!(unhex::<1>("+1"), None);
    }
}
