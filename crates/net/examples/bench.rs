//! Transport benchmark (docs/network.md, "Measurements"): the overhead of a loopback
//! round over TLS against handing the same payloads to the same handler in-process, and
//! one server holding 10,000 logical clients (4 node processes) through 5 rounds.
//!
//! ```text
//! cargo run --release -p fedpace-net --example bench            # full: 10,000 clients
//! cargo run --release -p fedpace-net --example bench -- --quick # 1,000 clients
//! ```
//!
//! Nodes run as child processes of this binary (`--node SPEC`), so the memory printed is
//! the server's alone.
#![allow(clippy::single_range_in_vec_init)] // client ranges are a Vec<Range> by design

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedpace_net::{
    generate_local_ca, keys, ClientTls, Credential, KeySource, Kind, Node, NodeConfig, Server,
    ServerConfig,
};

/// W-MLP's parameters (784·200 + 200 + 200·10 + 10 = 159,010 f32) as bytes.
const W_MLP_BYTES: usize = 159_010 * 4;

/// First client id of the scale part (the overhead part uses 0..10).
const BASE: u64 = 1_000_000;

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The node side: echo handler that answers `reply` bytes (0: the payload itself).
fn node_main(spec: &str) {
    let f: Vec<&str> = spec.split('|').collect();
    let mut config = NodeConfig::new(
        f[0],
        Some(ClientTls::from_file(f[2].as_ref(), "localhost").expect("ca")),
        Credential::load(f[1].as_ref()).expect("credential"),
        vec![f[3].parse().expect("start")..f[4].parse().expect("end")],
    );
    let reply: usize = f[5].parse().expect("reply bytes");
    config.pull_wait = Duration::from_millis(500);
    config.pull_max_bytes = 8 << 20;
    let node = Node::connect(config).expect("connect");
    let stop = AtomicBool::new(false);
    let canned = Bytes::from(vec![3u8; reply]);
    let _ = node.serve(2, &stop, |ins| {
        if reply == 0 {
            Ok(Bytes::copy_from_slice(&ins.payload))
        } else {
            Ok(canned.clone())
        }
    });
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_nodes(
    dir: &std::path::Path,
    ring: &std::path::Path,
    server: &Server,
    base: u64,
    (nodes, per_node): (u64, u64),
    reply: usize,
) -> Children {
    let exe = std::env::current_exe().expect("exe");
    let mut children = Children(Vec::new());
    for i in 0..nodes {
        let name = format!("bench-{}-{i}", per_node);
        let cred = dir.join(format!("{name}.key"));
        let range = base + i * per_node..base + (i + 1) * per_node;
        if !cred.exists() {
            keys::generate(ring, &name, vec![range.clone()], &cred).expect("keys");
            server.reload_keys().expect("reload keys");
        }
        let spec = format!(
            "127.0.0.1:{}|{}|{}|{}|{}|{reply}",
            server.local_addr().port(),
            cred.display(),
            dir.join("tls/ca.pem").display(),
            range.start,
            range.end
        );
        children.0.push(
            Command::new(&exe)
                .args(["--node", &spec])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn node"),
        );
    }
    children
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        node_main(&args[i + 1]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("fedpace-net-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = generate_local_ca(&dir.join("tls"), &["localhost".into()]).expect("ca");
    let ring = dir.join("keys.toml");
    // Empty at start; the nodes' keys are added as they are spawned (reread every 100 ms).
    fedpace_net::KeyRing::default().save(&ring).expect("keys");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Some(ca.server_tls().expect("tls")),
        KeySource::File(ring.clone()),
    );
    config.keys_reload = Duration::from_millis(100);
    config.limits.max_pull_bytes = 8 << 20;
    let server = Server::start(config).expect("server");
    println!("# fedpace-net bench, {} UTC, load {}", now_utc(), load());

    // 1. Round overhead: K clients on 2 nodes, W-MLP-sized payload echoed back.
    let k: u64 = 10;
    let _small = spawn_nodes(&dir, &ring, &server, 0, (2, k / 2), 0);
    assert_eq!(
        server.wait_for_clients(k as usize, Duration::from_secs(30)),
        k as usize
    );
    let handler = |p: &Bytes| Bytes::copy_from_slice(p);
    for (label, size) in [("empty", 0usize), ("W-MLP", W_MLP_BYTES)] {
        let payload = Bytes::from(vec![1u8; size]);
        let items: Vec<(u64, Bytes)> = (0..k).map(|c| (c, payload.clone())).collect();
        let (mut wire, mut local) = (Vec::new(), Vec::new());
        for round in 0..12 {
            // Interleaved: one in-process round, one loopback round.
            let t = Instant::now();
            let replies: Vec<Bytes> = items.iter().map(|(_, p)| handler(p)).collect();
            std::hint::black_box(&replies);
            local.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let r = server
                .dispatch(
                    round,
                    Kind::Train,
                    items.clone(),
                    Duration::from_secs(30),
                    k as usize,
                )
                .expect("round");
            assert!(r
                .iter()
                .all(|a| a.result.as_ref().map(|b| b.len()) == Ok(size)));
            wire.push(t.elapsed().as_secs_f64());
            server.take_traffic(round);
        }
        let (w, l) = (median(wire[2..].to_vec()), median(local[2..].to_vec()));
        println!(
            "round, {k} clients, {label} payload ({size} B each way): loopback TLS {:.2} ms, in-process {:.3} ms, overhead {:.2} ms/round = {:.3} ms per client, {:.0} MB/s both ways",
            w * 1e3,
            l * 1e3,
            (w - l) * 1e3,
            (w - l) * 1e3 / k as f64,
            2.0 * (k as usize * size) as f64 / w / 1e6
        );
    }
    drop(_small);

    // 2. Holding 10,000 clients on 4 nodes through 5 rounds, replies streamed.
    let total: u64 = if quick { 1_000 } else { 10_000 };
    let nodes = 4;
    let payload_size = 4096;
    let rss_before = proc_status("VmRSS:");
    let t = Instant::now();
    let _nodes = spawn_nodes(
        &dir,
        &ring,
        &server,
        BASE,
        (nodes, total / nodes),
        payload_size,
    );
    let mut joined = 0;
    while joined < total as usize && t.elapsed() < Duration::from_secs(120) {
        server.wait_for_clients(server.client_count() + 1, Duration::from_millis(100));
        joined = server.clients().iter().filter(|&&c| c >= BASE).count();
    }
    let join_time = t.elapsed();
    assert_eq!(joined, total as usize, "clients connected");
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = proc_status("VmRSS:");
    println!(
        "{total} clients on {nodes} node processes: connected in {:.2} s; server RSS {:.1} MB before, {:.1} MB holding them idle",
        join_time.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
    let payload = Bytes::from(vec![2u8; payload_size]);
    let mut times = Vec::new();
    for round in 100..105 {
        let t = Instant::now();
        let mut batch = server.batch();
        batch
            .send(
                round,
                Kind::Train,
                (BASE..BASE + total).map(|c| (c, payload.clone())).collect(),
                Duration::from_secs(120),
            )
            .expect("send");
        let mut ok = 0;
        while let Some(a) = batch.recv_timeout(Duration::from_secs(130)) {
            ok += usize::from(a.result.is_ok()); // streamed: each reply dropped once counted
        }
        assert_eq!(ok, total as usize, "round {round}");
        let traffic = server.take_traffic(round);
        let sent: u64 = traffic.iter().map(|t| t.sent_bytes).sum();
        let received: u64 = traffic.iter().map(|t| t.received_bytes).sum();
        times.push(t.elapsed().as_secs_f64());
        println!(
            "  round {round}: {total} replies in {:.2} s ({:.0} clients/s), {:.1} MB sent, {:.1} MB received, server RSS {:.1} MB",
            times.last().unwrap(),
            total as f64 / times.last().unwrap(),
            sent as f64 / 1e6,
            received as f64 / 1e6,
            proc_status("VmRSS:") as f64 / 1024.0
        );
    }
    println!(
        "{total} clients × 5 rounds of {payload_size} B: median round {:.2} s; server peak RSS {:.1} MB (VmHWM); load {}",
        median(times),
        proc_status("VmHWM:") as f64 / 1024.0,
        load()
    );
    drop(_nodes);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}
