//! TLS material: loading PEM files into rustls, and a local CA + server certificate for
//! trying a federation on one's own machines (docs/network.md, "TLS").

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};
use crate::keys::write_atomically;

/// The server's certificate chain and private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl ServerTls {
    /// Reads the chain and key from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        Ok(ServerTls {
            cert_pem: fs::read(cert).map_err(|e| Error::io(cert, e))?,
            key_pem: fs::read(key).map_err(|e| Error::io(key, e))?,
        })
    }

    pub(crate) fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("server certificate: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Tls(
                "server certificate: no CERTIFICATE block in the PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| Error::Tls(format!("server key: {e}")))?;
        // ring keeps the build light (aws-lc builds a large C library); it lacks post-quantum key
        // exchange, which rustls therefore marks deprecated (docs/arch/0010).
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        // AES-128-GCM first: 1.08–1.15 times AES-256-GCM's speed here (ring, 16 KB records,
        // `--example aead_speed`), and every update and model passes through it twice. The
        // server's order decides, whatever the node lists first (docs/network.md, "TLS").
        provider
            .cipher_suites
            .sort_by_key(|s| suite_rank(s.suite()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(format!("server certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// The server's preference among the provider's cipher suites: AES-128-GCM, then
/// AES-256-GCM, then the rest in the provider's order (the sort is stable).
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// What a node needs to trust the server: the CA certificate and the name the server's
/// certificate carries.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// Name to check the server certificate against (`localhost`, a DNS name or an IP).
    pub domain: String,
}

impl ClientTls {
    /// Reads the CA certificate from a file.
    pub fn from_file(ca: &Path, domain: &str) -> Result<ClientTls> {
        Ok(ClientTls {
            ca_pem: fs::read(ca).map_err(|e| Error::io(ca, e))?,
            domain: domain.to_string(),
        })
    }
}

/// Files written by [`generate_local_ca`].
#[derive(Clone, Debug)]
pub struct LocalCa {
    /// The CA certificate nodes trust (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The CA's private key (`ca-key.pem`, mode 0600): keep it to issue more server certificates.
    pub ca_key: PathBuf,
    /// The server certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// The server's private key (`server-key.pem`, mode 0600).
    pub server_key: PathBuf,
}

impl LocalCa {
    /// The server side of these files.
    pub fn server_tls(&self) -> Result<ServerTls> {
        ServerTls::from_files(&self.server_cert, &self.server_key)
    }

    /// The node side, checking the server's name `domain`.
    pub fn client_tls(&self, domain: &str) -> Result<ClientTls> {
        ClientTls::from_file(&self.ca_cert, domain)
    }
}

/// Writes a self-signed CA and a server certificate for `names` (DNS names or IP
/// addresses, e.g. `["localhost", "127.0.0.1"]`) into `dir`: `ca.pem`, `ca-key.pem`,
/// `server.pem`, `server-key.pem`. For local use and tests; a real deployment uses its
/// organisation's CA.
pub fn generate_local_ca(dir: &Path, names: &[String]) -> Result<LocalCa> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    if names.is_empty() {
        return Err(Error::Config {
            field: "names",
            value: "[]".into(),
            expected: "at least one DNS name or IP address for the server certificate".into(),
        });
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tls = |e: rcgen::Error| Error::Tls(format!("certificate generation: {e}"));
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fedpace local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;

    let server_key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(tls)?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(tls)?;

    let files = LocalCa {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    write_atomically(&files.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_atomically(&files.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    write_atomically(&files.server_cert, server_cert.pem().as_bytes(), false)?;
    write_atomically(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    /// A client that lists AES-256-GCM first (rustls's default order, which tonic's
    /// connector uses) still gets AES-128-GCM: the server's order decides.
    #[test]
    fn the_server_picks_aes_128_gcm_whatever_the_client_lists_first() {
        let dir = std::env::temp_dir().join(format!("fedpace-tls-suite-{}", std::process::id()));
        let ca = generate_local_ca(&dir, &["localhost".to_string()]).unwrap();
        let server_config = ca.server_tls().unwrap().rustls_config().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca.ca_cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        // The provider the server uses too (docs/arch/0010).
        #[allow(deprecated)]
        let client_provider = rustls::crypto::ring::default_provider();
        assert_eq!(
            client_provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the client of this test lists AES-256-GCM first"
        );
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        // The handshake in memory: each side's records handed to the other until both rest.
        for _ in 0..10 {
            let mut to_server = Vec::new();
            client.write_tls(&mut to_server).unwrap();
            server.read_tls(&mut to_server.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut to_client = Vec::new();
            server.write_tls(&mut to_client).unwrap();
            client.read_tls(&mut to_client.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        for suite in [
            client.negotiated_cipher_suite(),
            server.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
