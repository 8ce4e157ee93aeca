//! End-to-end tests of `fedpace bench` and of the spilling state store: they check
//! what is printed and that results do not depend on where states live — never timings
//! (targets are checked by running the benchmark, docs/benchmarks.md).

use std::process::Command;

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn ok(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn bench_lr_quick_prints_every_figure() {
    let out = ok(&fedpace()
        .args(["bench", "--workload", "lr", "--quick", "--threads", "1"])
        .output()
        .unwrap());
    for want in [
        "sgemm 512×512",
        "GFLOP/s on 1 thread",
        "bench-lr",
        "whole run",
        "rounds per second",
        "local epoch",
        "peak memory (VmHWM)",
        "load average",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

/// Stored peer figures come from another day: they are printed with their date and never
/// turned into a speed-up (a ratio against a peer needs both in one window).
#[test]
fn bench_prints_stored_peer_figures_as_dated_references_not_ratios() {
    let out = ok(&fedpace()
        .args(["bench", "--workload", "lr", "--quick", "--threads", "1"])
        .output()
        .unwrap());
    let refs: Vec<&str> = out.lines().filter(|l| l.contains("[ref]")).collect();
    assert!(
        refs.iter().any(|l| l.contains("Flower 15.9 s")),
        "no stored Flower figure in\n{out}"
    );
    assert!(
        refs.iter().any(|l| l.contains("2026-12-04")),
        "stored figures without their date in\n{out}"
    );
    assert!(out.contains("scripts/peers/run.sh"), "{out}");
    for line in out.lines() {
        let peer = line.contains("Flower") || line.contains("PyTorch");
        assert!(
            !(peer && (line.contains("faster") || line.contains("×"))),
            "a ratio against a peer: {line}"
        );
    }
}

#[test]
fn bench_scale_spills_states_to_disk() {
    let out = ok(&fedpace()
        .args([
            "bench",
            "--workload",
            "scale",
            "--clients",
            "20000",
            "--rounds",
            "2",
            "--state-mb",
            "1",
        ])
        .output()
        .unwrap());
    assert!(out.contains("20000 registered clients"), "{out}");
    // 2 rounds × 1000 clients of Adam state (≈ 5 KB each) do not fit in 1 MiB.
    let line = out.lines().find(|l| l.contains("client states")).unwrap();
    let on_disk: usize = line
        .split(", ")
        .find(|p| p.contains(" on disk ("))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(on_disk > 0, "{line}");
}

const STATEFUL: &str = r#"
name = "stateful"
rounds = 4
[data]
source = "bench"
num_clients = 12
sample_shape = [60]
samples_per_client = 100
[model]
name = "logistic-regression"
[client]
lr = 0.01
batch_size = 20
optimizer = { name = "adam" }
state_mode = "keep"
[strategy]
clients_per_round = 6
[policy]
name = "constant"
[eval]
every = 0
finetune_steps = 0
"#;

/// SCAFFOLD: each client's control variate c_i lives in its state.
const SCAFFOLD: &str = r#"
name = "stateful-scaffold"
rounds = 4
[data]
source = "bench"
num_clients = 12
sample_shape = [60]
samples_per_client = 100
[model]
name = "logistic-regression"
[client]
lr = 0.01
batch_size = 20
[strategy]
name = "scaffold"
clients_per_round = 6
[policy]
name = "constant"
[eval]
every = 0
finetune_steps = 0
"#;

/// FedPer: each client's head lives in its state.
const FEDPER: &str = r#"
name = "stateful-fedper"
rounds = 4
[data]
source = "bench"
num_clients = 12
sample_shape = [60]
samples_per_client = 100
[model]
name = "mlp"
hidden = [10]
[client]
lr = 0.01
batch_size = 20
[strategy]
name = "fedper"
clients_per_round = 6
personal_groups = ["head"]
[policy]
name = "constant"
[eval]
every = 0
finetune_steps = 0
"#;

#[test]
fn spilled_states_give_the_same_model_as_states_in_memory() {
    // Local Adam with kept moments, SCAFFOLD's control variates, FedPer's heads.
    for (i, text) in [STATEFUL, SCAFFOLD, FEDPER].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("exp.toml");
        std::fs::write(&cfg, text).unwrap();
        let run = |name: &str, extra: &[&str]| {
            let out = tmp.path().join(name);
            let mut c = fedpace();
            c.args(["run", cfg.to_str().unwrap(), "--out"]).arg(&out);
            c.args(extra);
            ok(&c.output().unwrap());
            std::fs::read(out.join("model.safetensors")).unwrap()
        };
        let memory = run("memory", &[]);
        let dir = tmp.path().join("spill");
        let spilled = run(
            "spilled",
            &[
                "--set",
                "state.memory_mb=0",
                "--set",
                &format!("state.dir={}", dir.display()),
            ],
        );
        assert_eq!(
            memory, spilled,
            "config {i}: spilling states changed the result"
        );
        if i == 0 {
            // Kept Adam state matters: resetting it each round gives another model.
            let reset = run("reset", &["--set", "client.state_mode=reset"]);
            assert_ne!(memory, reset);
        }
        // The scratch database is removed at exit.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn bench_scale_runs_scaffold_and_fedper_with_spilled_states() {
    for algorithm in ["scaffold", "fedper"] {
        let out = ok(&fedpace()
            .args([
                "bench",
                "--workload",
                "scale",
                "--algorithm",
                algorithm,
                "--clients",
                "20000",
                "--rounds",
                "1",
                "--state-mb",
                "1",
                "--quick",
            ])
            .output()
            .unwrap());
        assert!(out.contains("20000 registered clients"), "{out}");
        // 1,000 control variates or heads (≈ 2.5–3 KB each) do not fit in 1 MiB.
        let line = out.lines().find(|l| l.contains("client states")).unwrap();
        let on_disk: usize = line
            .split(", ")
            .find(|p| p.contains(" on disk ("))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(on_disk > 0, "{algorithm}: {line}");
    }
}

const CNN: &str = r#"
name = "cnn-grain"
rounds = 2
client_threads = 2
[data]
source = "optdigits"
num_clients = 4
[model]
name = "cnn"
[client]
lr = 0.05
batch_size = 16
steps = 3
[strategy]
clients_per_round = 2
[policy]
name = "constant"
[eval]
every = 0
finetune_steps = 0
"#;

#[test]
fn neither_client_threads_nor_the_pool_size_changes_the_numerics() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("cnn.toml");
    std::fs::write(&cfg, CNN).unwrap();
    let run = |name: &str, threads: &str, client_threads: &str| {
        let out = tmp.path().join(name);
        ok(&fedpace()
            .args(["run", cfg.to_str().unwrap(), "--threads", threads, "--set"])
            .arg(format!("client_threads={client_threads}"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap());
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    // One client at a time on one thread, two clients whose blocks are shared by three
    // pool threads, every idle thread (the default, 0), each client on its own thread:
    // same bits.
    let one = run("t1", "1", "2");
    assert_eq!(one, run("t3", "3", "2"));
    assert_eq!(one, run("auto", "3", "0"));
    assert_eq!(one, run("own", "2", "1"));
}

/// The loopback workload runs its three runs (simulation, one node, two nodes) taking
/// turns, and their final models are bit-identical; `FEDPACE_BENCH_ROUNDS` gets every
/// round's time of each run (each set's first round left out).
#[test]
fn bench_loopback_quick_keeps_the_models_identical_and_writes_its_rounds() {
    let dir = std::env::temp_dir().join(format!("fedpace-bench-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rounds = dir.join("rounds.json");
    let out = ok(&fedpace()
        .args([
            "bench",
            "--workload",
            "loopback",
            "--quick",
            "--rounds",
            "3",
        ])
        .env("FEDPACE_BENCH_ROUNDS", &rounds)
        .output()
        .unwrap());
    for want in [
        "2 sets of 3 rounds, the three runs of a set taking turns round by round",
        "round, simulation",
        "1 node, ",
        "2 nodes, half the clients each",
        "loopback / sim",
        "final models bit-identical: yes",
        "round by round",
        "median of the 2 sets' ratios",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rounds).unwrap()).unwrap();
    for run in ["simulation", "loopback_1_node", "loopback_2_nodes"] {
        let times = json[run]
            .as_array()
            .unwrap_or_else(|| panic!("{run} in {json}"));
        assert_eq!(times.len(), 4, "2 sets × (3 rounds − the first): {json}");
        assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0), "{json}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Fewer than 2 rounds leave nothing to measure: one line, before any work.
    let out = fedpace()
        .args(["bench", "--workload", "loopback", "--rounds", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "error: --rounds 1: the loopback workload needs at least 2 (each set's first round is left out)"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
