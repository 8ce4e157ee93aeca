//! A whole federation on this machine (docs/network.md, "Loopback"): a TLS server on
//! `127.0.0.1`, a fresh local CA and key ring in a temporary directory, and node threads
//! that host the pool's clients with [`ClientHost`]s and reach the server over real
//! sockets. It is what `fedpace run --grid loopback` runs, and what the parity tests and
//! the benchmark compare with the simulation.

use crate::{ClientHost, NetGrid, NetGridConfig};
use fedpace_core::{ClientFactory, ClientPool, Registry};
use fedpace_net::{
    generate_local_ca, keys, Credential, KeySource, Limits, Node, NodeConfig, ServeStats, Server,
    ServerConfig,
};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How a [`Loopback`] federation is laid out.
#[derive(Debug, Clone)]
pub struct LoopbackOptions {
    /// Node threads (each one connection); the clients are split between them in
    /// contiguous ranges (default 2).
    pub nodes: usize,
    /// Clients each node runs at once (default 1).
    pub workers_per_node: usize,
    /// Encoded bytes of the model, to size the message limits
    /// ([`Limits::for_model`]); `None` keeps the defaults (8 MiB).
    pub model_bytes: Option<usize>,
    /// Deadlines and quorum.
    pub grid: NetGridConfig,
    /// How long to wait for every client to connect (default 60 s).
    pub connect_timeout: Duration,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            workers_per_node: 1,
            model_bytes: None,
            grid: NetGridConfig::default(),
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// A running loopback federation (see the module doc). Dropping it stops the nodes and
/// removes the temporary directory.
pub struct Loopback {
    grid: NetGrid,
    stop: Arc<AtomicBool>,
    nodes: Vec<JoinHandle<Result<ServeStats, String>>>,
    dir: PathBuf,
}

/// `nodes` contiguous ranges covering `0..end`, the first ones one longer.
fn split(end: u64, nodes: usize) -> Vec<Range<u64>> {
    let n = (nodes.max(1) as u64).min(end.max(1));
    let (base, extra) = (end / n, end % n);
    let mut at = 0;
    (0..n)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let r = at..at + len;
            at += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

impl Loopback {
    /// Starts the server and the nodes and waits for every client of `pool` to connect.
    /// Errors are one line naming what failed.
    pub fn start(
        pool: Arc<dyn ClientPool>,
        factory: ClientFactory,
        registry: Registry,
        opts: &LoopbackOptions,
    ) -> Result<Loopback, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fedpace-loopback-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Client ids of the pool: 0..max+1 split between the nodes (ids the pool does
        // not hold are simply never sent anything).
        let end = pool.ids().max().map_or(0, |m| m + 1);
        let (server, mut node_configs) = Self::server(&dir, opts, &split(end, opts.nodes))?;
        // Every client describes itself at registration; the grid's pool is what they
        // sent (crate::meta), as for `fedpace server`.
        for c in &mut node_configs {
            c.metadata = crate::meta::metadata_of(pool.as_ref(), &c.clients)?;
        }
        let server = Arc::new(server);
        let mut lb = Loopback {
            grid: NetGrid::new(
                server.clone(),
                pool.clone(),
                registry.clone(),
                opts.grid.clone(),
            )
            .map_err(|e| e.to_string())?,
            stop: Arc::new(AtomicBool::new(false)),
            nodes: Vec::new(),
            dir,
        };
        for config in node_configs {
            let host = ClientHost::new(factory.clone(), registry.clone());
            let stop = lb.stop.clone();
            let workers = opts.workers_per_node;
            lb.nodes.push(
                std::thread::Builder::new()
                    .name("fedpace-loopback-node".into())
                    .spawn(move || {
                        let node = Node::connect(config).map_err(|e| e.to_string())?;
                        node.serve(workers, &stop, |ins| host.handle(ins))
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("starting a node thread: {e}"))?,
            );
        }
        let want = pool.len();
        let deadline = std::time::Instant::now() + opts.connect_timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let got = lb
                .grid
                .server()
                .wait_for_clients(want, left.min(Duration::from_millis(50)));
            if got >= want {
                break;
            }
            // A node that could not join has ended: its error says why, now.
            if let Some(i) = lb.nodes.iter().position(JoinHandle::is_finished) {
                let why = match lb.nodes.swap_remove(i).join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => "it stopped".into(),
                    Err(_) => "its thread panicked".into(),
                };
                return Err(format!(
                    "loopback: {got} of {want} clients connected; a node could not join: {why}"
                ));
            }
            if left.is_zero() {
                return Err(format!(
                    "loopback: {got} of {want} clients connected within {:?}",
                    opts.connect_timeout
                ));
            }
        }
        let registered = crate::meta::registered_pool(&server, pool.ids(), &registry, None)
            .map_err(|e| format!("loopback: {e}"))?;
        lb.grid = NetGrid::new(server, Arc::new(registered), registry, opts.grid.clone())
            .map_err(|e| e.to_string())?;
        Ok(lb)
    }

    /// A server with a fresh CA and key ring in `dir`, and the configs of nodes hosting
    /// `ranges`.
    fn server(
        dir: &std::path::Path,
        opts: &LoopbackOptions,
        ranges: &[Range<u64>],
    ) -> Result<(Server, Vec<NodeConfig>), String> {
        fn e(what: &'static str) -> impl Fn(fedpace_net::Error) -> String {
            move |err| format!("loopback: {what}: {err}")
        }
        std::fs::remove_dir_all(dir).ok();
        let ca = generate_local_ca(dir, &["localhost".into()]).map_err(e("local CA"))?;
        let ring = dir.join("keys.toml");
        keys::KeyRing::default()
            .save(&ring)
            .map_err(e("key ring"))?;
        let limits = opts.model_bytes.map(Limits::for_model).unwrap_or_default();
        let mut configs = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            let key = dir.join(format!("node-{i}.key"));
            keys::generate(&ring, &format!("node-{i}"), vec![r.clone()], &key)
                .map_err(e("node key"))?;
            let mut c = NodeConfig::new(
                String::new(),
                Some(ca.client_tls("localhost").map_err(e("TLS"))?),
                Credential::load(&key).map_err(e("node key"))?,
                vec![r.clone()],
            );
            c.max_instruction_payload = limits.max_instruction_payload;
            c.pull_max_bytes = limits.max_pull_bytes;
            c.pull_wait = Duration::from_millis(500);
            configs.push(c);
        }
        let mut cfg = ServerConfig::new(
            "127.0.0.1:0".parse().expect("a socket address"),
            Some(ca.server_tls().map_err(e("TLS"))?),
            KeySource::File(ring),
        );
        cfg.limits = limits;
        let server = Server::start(cfg).map_err(e("server"))?;
        let addr = format!("127.0.0.1:{}", server.local_addr().port());
        for c in &mut configs {
            c.server = addr.clone();
        }
        Ok((server, configs))
    }

    /// The grid to run rounds on.
    pub fn grid(&mut self) -> &mut NetGrid {
        &mut self.grid
    }

    /// Stops the nodes; returns what each served, or the first node's error.
    pub fn finish(mut self) -> Result<Vec<ServeStats>, String> {
        self.stop_nodes()
    }

    fn stop_nodes(&mut self) -> Result<Vec<ServeStats>, String> {
        if !self.nodes.is_empty() {
            // Pulls answer "finished" at once, so the nodes need not wait out their pull
            // (`pull_wait`); they leave, and this returns when all have. `stop` comes
            // after: a node that saw `stop` first would end its loop without leaving, and
            // the server would wait out the whole linger for it (5 s added to about one
            // run in 25).
            self.grid.server().finish(Duration::from_secs(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for h in self.nodes.drain(..) {
            out.push(
                h.join()
                    .map_err(|_| "a loopback node panicked".to_string())??,
            );
        }
        Ok(out)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let _ = self.stop_nodes();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn clients_split_into_contiguous_ranges() {
        assert_eq!(split(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(split(2, 5), vec![0..1, 1..2]);
        assert_eq!(split(6, 1), vec![0..6]);
        assert!(split(0, 2).is_empty());
    }
}
