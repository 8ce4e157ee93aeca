//! Secure aggregation over the network through the binary (docs/privacy.md, "Over the
//! network"): `fedpace run --grid loopback` gives the simulation's model byte for byte and
//! carries the protocol as `exchange` messages; a `fedpace server` and three `fedpace node`
//! processes over TLS run it as a deployment — keys, masks and rounding from the operating
//! system, so the model is the simulation's within the quantiser's error, not bit for bit.

mod common;

use common::{fedpace, make_keys, Kill, Server};
use std::path::Path;
use std::process::Stdio;

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

    let keys = tmp.path().join("keys");
    let ranges = ["0..4", "4..7", "7..10"];
    make_keys(
        &keys,
        &[
            ("node-0", ranges[0]),
            ("node-1", ranges[1]),
            ("node-2", ranges[2]),
        ],
    );
    let server = Server::start(&with(&[cfg, "--out", &d("net")]), "127.0.0.1:0", &keys);
    let mut children = Kill(Vec::new());
    for (i, r) in ranges.iter().enumerate() {
        children.0.push(
            server
                .node(
                    &with(&["node", cfg, "--clients", r]),
                    &keys,
                    &format!("node-{i}"),
                )
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let (status, log) = server.wait();
    assert!(status.success(), "server: {log}");
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
