//! Shared fixture of the loopback tests: a temporary directory with a local CA, a key
//! ring with one key per node, and a server with short timeouts.
#![allow(dead_code, clippy::single_range_in_vec_init)]

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fedpace_net::{
    generate_local_ca, keys, ClientTls, Credential, KeySource, LocalCa, NodeConfig, Server,
    ServerConfig,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fedpace-net-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Fixture {
    pub dir: PathBuf,
    pub ca: LocalCa,
    pub ring: PathBuf,
    pub credentials: Vec<PathBuf>,
    pub ranges: Vec<Range<u64>>,
}

impl Fixture {
    /// `nodes` keys, node `i` hosting clients `i*per_node .. (i+1)*per_node`.
    pub fn new(tag: &str, nodes: usize, per_node: u64) -> Fixture {
        let dir = temp_dir(tag);
        let ca =
            generate_local_ca(&dir.join("tls"), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let ring = dir.join("keys.toml");
        let mut credentials = Vec::new();
        let mut ranges = Vec::new();
        for i in 0..nodes as u64 {
            let path = dir.join(format!("node-{i}.key"));
            let range = i * per_node..(i + 1) * per_node;
            keys::generate(&ring, &format!("node-{i}"), vec![range.clone()], &path).unwrap();
            credentials.push(path);
            ranges.push(range);
        }
        Fixture {
            dir,
            ca,
            ring,
            credentials,
            ranges,
        }
    }

    /// Server settings with test-sized timeouts (heartbeat 100 ms, gone after 1 s).
    pub fn server_config(&self, listen: SocketAddr) -> ServerConfig {
        let mut c = ServerConfig::new(
            listen,
            Some(self.ca.server_tls().unwrap()),
            KeySource::File(self.ring.clone()),
        );
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(1000);
        c.max_pull_wait = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(5);
        c.keys_reload = Duration::from_millis(50);
        c.tick = Duration::from_millis(10);
        c
    }

    pub fn start(&self) -> Server {
        Server::start(self.server_config("127.0.0.1:0".parse().unwrap())).unwrap()
    }

    pub fn client_tls(&self) -> ClientTls {
        self.ca.client_tls("localhost").unwrap()
    }

    pub fn credential(&self, node: usize) -> Credential {
        Credential::load(&self.credentials[node]).unwrap()
    }

    /// Settings for node `i` (short pull wait so `serve` notices `stop` quickly).
    pub fn node_config(&self, addr: SocketAddr, node: usize) -> NodeConfig {
        let mut c = NodeConfig::new(
            format!("127.0.0.1:{}", addr.port()),
            Some(self.client_tls()),
            self.credential(node),
            vec![self.ranges[node].clone()],
        );
        c.pull_wait = Duration::from_millis(200);
        c.request_timeout = Duration::from_secs(5);
        c.reconnect_backoff = (Duration::from_millis(20), Duration::from_millis(200));
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The reply every test handler sends: the payload reversed, then the client id.
pub fn echo(ins: &fedpace_net::Instruction) -> bytes::Bytes {
    let mut out: Vec<u8> = ins.payload.iter().rev().copied().collect();
    out.extend_from_slice(&ins.client.to_le_bytes());
    out.into()
}

/// A message as a gRPC unary body: flag 0, big-endian length, protobuf bytes.
pub fn framed(m: &impl prost::Message) -> Vec<u8> {
    let bytes = m.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// Sends `msg` as the body of the RPC at `path` (e.g. `/fedpace.v1.Fleet/Push`), signed
/// with node `node`'s key, on a connection of its own; the reply, or the refusal's code
/// and message.
pub fn signed_unary<M, R>(
    fx: &Fixture,
    server: &Server,
    node: usize,
    path: &'static str,
    msg: M,
) -> Result<R, (tonic::Code, String)>
where
    M: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("127.0.0.1:{}", server.local_addr().port());
    let tls = fx.client_tls();
    runtime.block_on(async {
        let channel = fedpace_net::testing::endpoint(&addr, Some(&tls), Duration::from_secs(5))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
        grpc.ready().await.unwrap();
        let headers = fedpace_net::testing::sign_headers(
            &fx.credential(node),
            path,
            &framed(&msg),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let mut req = tonic::Request::new(msg);
        for (k, v) in headers {
            req.metadata_mut().insert(
                k,
                tonic::metadata::MetadataValue::try_from(v.as_str()).unwrap(),
            );
        }
        let codec = tonic_prost::ProstCodec::<M, R>::default();
        grpc.unary(req, http::uri::PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| (s.code(), s.message().to_string()))
    })
}
