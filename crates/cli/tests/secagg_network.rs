//! Secure aggregation over the network through the binary (docs/privacy.md, "Over the
//! network"): `fedpace run --grid loopback` gives the simulation's model byte for byte and
//! carries the protocol as `exchange` messages; a `fedpace server` and three `fedpace node`
//! processes over TLS run it as a deployment — keys, masks and rounding from the operating
//! system, so the model is the simulation's within the quantiser's error, not bit for bit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fedpace");

fn config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml")
}

const SETS: [&str; 8] = [
    "--set",
    "rounds=3",
    "--set",
    "strategy.aggregation=\"linear\"",
    "--set",
    "strategy.normalize=\"on\"",
    "--set",
    "secure_aggregation={num_shares=5}",
];

fn fedpace(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fedpace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

fn floats(p: &Path) -> Vec<f32> {
    // safetensors: u64 header length, JSON header, then the raw little-endian f32s.
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn secure_rounds(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("secure_aggregation").cloned())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn secure_aggregation_runs_over_loopback_and_between_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let cfg = config();
    let cfg = cfg.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend_from_slice(&SETS);
        v.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| fedpace(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    run(with(&["run", cfg, "--out", &d("sim"), "--traffic"]));
    run(with(&["run", cfg, "--out", &d("lb"), "--grid", "loopback"]));
    let model = |run: &str| std::fs::read(tmp.path().join(run).join("model.safetensors")).unwrap();
    assert_eq!(model("sim"), model("lb"), "loopback model");
    for run in ["sim", "lb"] {
        let t = std::fs::read_to_string(tmp.path().join(run).join("traffic.csv")).unwrap();
        // 3 rounds × 10 clients, the four protocol steps summed per client and round.
        assert_eq!(
            t.lines().filter(|l| l.contains(",exchange,")).count(),
            30,
            "{run}: {t}"
        );
        let s = secure_rounds(&tmp.path().join(run));
        assert_eq!(s.len(), 3, "{run}");
        assert!(s.iter().all(|r| r["survivors"] == 10), "{run}: {s:?}");
    }

    fedpace(&["keys", "ca", "--dir", &d("keys")]);
    let ranges = ["0..4", "4..7", "7..10"];
    for (i, r) in ranges.iter().enumerate() {
        fedpace(&[
            "keys",
            "generate",
            "--ring",
            &d("keys/ring.toml"),
            "--name",
            &format!("node-{i}"),
            "--clients",
            r,
            "--out",
            &d(&format!("keys/node-{i}.key")),
        ]);
    }
    let mut children = Kill(Vec::new());
    let mut server = Command::new(BIN)
        .args(with(&[
            "server",
            cfg,
            "--listen",
            "127.0.0.1:0",
            "--keys",
            &d("keys/ring.toml"),
        ]))
        .args(["--tls-cert", &d("keys/server.pem")])
        .args(["--tls-key", &d("keys/server-key.pem")])
        .args(["--out", &d("net"), "--wait", "60"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let (mut addr, mut seen) = (String::new(), String::new());
    while addr.is_empty() {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "server ended: {seen}"
        );
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = rest.split(',').next().unwrap().to_string();
        }
    }
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        for l in err.lines() {
            rest.push_str(&l.unwrap_or_default());
            rest.push('\n');
        }
        rest
    });
    for (i, r) in ranges.iter().enumerate() {
        children.0.push(
            Command::new(BIN)
                .args(with(&["node", cfg, "--clients", r, "--server", &addr]))
                .args(["--key", &d(&format!("keys/node-{i}.key"))])
                .args(["--ca", &d("keys/ca.pem")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let status = server.wait().unwrap();
    let log = drain.join().unwrap();
    assert!(status.success(), "server: {seen}{log}");
    let s = secure_rounds(&tmp.path().join("net"));
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(s.iter().all(|r| r["survivors"] == 10), "{s:?}");
    // Operating-system randomness: the stochastic rounding differs from the seeded
    // simulation's, by at most a few quantiser steps (2·8/2²² per value and client).
    let (a, b) = (
        floats(&tmp.path().join("sim/model.safetensors")),
        floats(&tmp.path().join("net/model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "largest difference {worst}");
    assert!(
        worst > 0.0,
        "a deployment must not reuse the simulation's seeded randomness"
    );
}
