//! Issue 13, clients that bring their own data: `fedpace datasets export` writes each
//! client's partition to its own `.npz`; a `fedpace server` that reads no data (the file's
//! `[input]`) and four `fedpace client CONFIG --data FILE` processes over TLS run the
//! rounds. Rate policies that read client metadata (`by-data-size`: the sizes every
//! client reports; `by-label-skew`: the label histograms clients share) give the same
//! plans as the simulation of the same partition — and, because the exported files make
//! each client's own split the simulation's, the same model byte for byte; also with two
//! of the clients reading the same samples from CSV files.

mod common;

use common::{fedpace, Kill, Server, BIN};
use std::path::Path;
use std::process::{Command, Stdio};

/// Every round's (client, lr, group rates, work, samples) from a metrics.jsonl.
fn plans(run: &Path) -> Vec<Vec<(u64, String)>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["clients"].is_array())
        .map(|v| {
            v["clients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let plan = format!(
                        "lr={} rates={} work={} n={}",
                        c["lr"], c["group_rates"], c["work"], c["num_examples"]
                    );
                    (c["id"].as_u64().unwrap(), plan)
                })
                .collect()
        })
        .collect()
}

/// Runs a server and `n` own-data clients; returns the server's log.
fn federation(tmp: &Path, cfg: &str, sets: &[&str], files: &[String], run: &str) -> String {
    let d = |p: &str| tmp.join(p).to_str().unwrap().to_string();
    let keys = tmp.join("keys");
    let mut args = vec!["--out".to_string(), d(run), cfg.to_string()];
    args.extend(sets.iter().map(|s| s.to_string()));
    let server = Server::start(&args, "127.0.0.1:0", &keys);
    let mut children = Kill(Vec::new());
    for (i, f) in files.iter().enumerate() {
        children.0.push(
            server
                .node(&["client", cfg], &keys, &format!("client-{i}"))
                .args(sets)
                .args(["--data", f, "--id", &i.to_string()])
                .args(["--state-dir", &d(&format!("{run}-state/{i}"))])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let (status, log) = server.wait();
    assert!(status.success(), "server: {log}");
    log
}

#[test]
fn own_data_clients_get_the_simulation_plans_from_the_metadata_they_register() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml");
    let cfg = cfg.to_str().unwrap();
    fedpace(&["keys", "ca", "--dir", &d("keys")]);
    for i in 0..4 {
        fedpace(&[
            "keys",
            "generate",
            "--ring",
            &d("keys/ring.toml"),
            "--name",
            &format!("client-{i}"),
            "--clients",
            &format!("{i}..{}", i + 1),
            "--out",
            &d(&format!("keys/client-{i}.key")),
        ]);
    }
    for policy in ["by-data-size", "by-label-skew"] {
        let policy_set = format!("policy.name={policy}");
        let sets = [
            "--set",
            "rounds=3",
            "--set",
            "data.num_clients=4",
            "--set",
            "strategy.clients_per_round=4",
            "--set",
            "data.validation_fraction=0.2",
            "--set",
            &policy_set,
            "--set",
            "client.share=[\"label-histogram\"]",
        ];
        let sim = d(&format!("sim-{policy}"));
        let mut args = vec!["run", cfg, "--out", &sim];
        args.extend_from_slice(&sets);
        fedpace(&args);
        let data = d(&format!("data-{policy}"));
        let mut args = vec!["datasets", "export", cfg, "--out", &data];
        args.extend_from_slice(&sets);
        fedpace(&args);
        let mut files: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path().to_str().unwrap().to_string())
            .collect();
        files.sort();
        assert_eq!(files.len(), 4);
        let run = format!("net-{policy}");
        let log = federation(tmp.path(), cfg, &sets, &files, &run);
        assert!(log.contains("4 clients registered"), "{log}");
        assert!(log.contains("central evaluation off"), "{log}");
        let net = tmp.path().join(&run);
        let sim = Path::new(&sim);
        let (a, b) = (plans(sim), plans(&net));
        assert_eq!(a.len(), 3);
        assert_eq!(a, b, "{policy}: plans differ");
        // The policy gave the clients different rates (it read their metadata).
        let lrs: std::collections::BTreeSet<&String> = a[0].iter().map(|c| &c.1).collect();
        assert!(lrs.len() > 1, "{policy}: {lrs:?}");
        // Sizes and shared histograms (label entropy) as the simulator knows them.
        assert_eq!(
            std::fs::read_to_string(sim.join("clients.csv")).unwrap(),
            std::fs::read_to_string(net.join("clients.csv")).unwrap(),
            "{policy}"
        );
        assert_eq!(
            std::fs::read(sim.join("model.safetensors")).unwrap(),
            std::fs::read(net.join("model.safetensors")).unwrap(),
            "{policy}: models differ"
        );
        if policy == "by-data-size" {
            // The same samples as CSV for two of the clients (`--data client-K.csv`, the
            // format guessed from the name): the same run, byte for byte.
            let mut mixed = files.clone();
            for f in mixed.iter_mut().take(2) {
                let csv = f.replace(".npz", ".csv");
                write_csv(Path::new(f), Path::new(&csv));
                *f = csv;
            }
            let run = "net-csv";
            let log = federation(tmp.path(), cfg, &sets, &mixed, run);
            assert!(log.contains("4 clients registered"), "{log}");
            let csv = tmp.path().join(run);
            assert_eq!(plans(sim), plans(&csv), "CSV clients: plans differ");
            assert!(
                std::fs::read(sim.join("model.safetensors")).unwrap()
                    == std::fs::read(csv.join("model.safetensors")).unwrap(),
                "CSV clients: models differ"
            );
        }
    }
}

/// Writes the samples of an exported `.npz` (arrays x, y) as a CSV file with a header and
/// the label last; each value printed as the shortest text that reads back to the same f32.
fn write_csv(npz: &Path, csv: &Path) {
    use fedpace_core::{Dataset, Inputs};
    let data = fedpace_data::NpyConfig::new(npz).load(npz, None).unwrap();
    let mut text = String::new();
    for i in 0..data.len() {
        let Inputs::Dense { data: x, .. } = data.batch(&[i]).inputs else {
            panic!("dense samples expected");
        };
        if i == 0 {
            let names: Vec<String> = (0..x.len()).map(|j| format!("x{j}")).collect();
            text.push_str(&names.join(","));
            text.push_str(",label\n");
        }
        for v in &x {
            text.push_str(&format!("{v},"));
        }
        text.push_str(&format!("{}\n", data.label(i)));
    }
    std::fs::write(csv, text).unwrap();
}

/// Bad input to `fedpace client --data` is one line naming the file and the problem.
#[test]
fn own_data_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml");
    let bad = tmp.path().join("client.npz");
    std::fs::write(&bad, b"PK\x03\x04 not really a zip").unwrap();
    let out = Command::new(BIN)
        .args(["client", cfg.to_str().unwrap(), "--data"])
        .arg(&bad)
        .args([
            "--id",
            "0",
            "--server",
            "127.0.0.1:9",
            "--key",
            "k",
            "--ca",
            "c",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("client.npz") && err.contains("zip"), "{err}");
    // Without [input], the server and clients cannot agree on the model.
    let plain = tmp.path().join("plain.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let no_input = text.replace("[input]\nsample_shape = [60]\nnum_classes = 10\n", "");
    assert_ne!(no_input, text);
    std::fs::write(&plain, no_input).unwrap();
    let out = Command::new(BIN)
        .args(["client", plain.to_str().unwrap(), "--data"])
        .arg(&bad)
        .args([
            "--id",
            "0",
            "--server",
            "127.0.0.1:9",
            "--key",
            "k",
            "--ca",
            "c",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no [input] table"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
