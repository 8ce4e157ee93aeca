//! `fedpace resume` end to end (docs/checkpoints.md; issue 11, item 5): a run killed
//! with SIGKILL at a random point after a checkpoint and resumed ends as the
//! uninterrupted run does — the same model bytes, the same metrics lines (wall times
//! aside), the same clients.csv — for fedavg with client Adam (`keep`) under a stateful
//! policy, scaffold, feddyn, fedasync (stragglers and dropouts on the simulated clock),
//! ditto and fedrep, with client states in memory and spilled to disk. And what must
//! be refused is refused with one line: another config, a damaged checkpoint, nothing
//! left to run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Small but real: 16 synthetic clients, an MLP, rounds of some tens of milliseconds
/// so that a kill lands inside the run.
const BASE: &str = r#"
name = "resume"
seed = 5
rounds = 10
threads = 1
[data]
source = "synthetic"
num_clients = 16
[model]
name = "mlp"
hidden = [24]
[client]
lr = 0.02
batch_size = 8
epochs = 2
[eval]
every = 3
finetune_steps = 2
[checkpoint]
every = 2
"#;

/// The algorithms of the issue's matrix, each as the tables it adds to [`BASE`].
const CASES: [(&str, &str); 6] = [
    (
        "fedavg-adam-keep",
        r#"client.optimizer = { name = "adam" }
client.state_mode = "keep"
[strategy]
name = "fedavg"
clients_per_round = 5
[policy]
name = "loss-based"
"#,
    ),
    (
        "scaffold",
        "[strategy]\nname = \"scaffold\"\nclients_per_round = 5\n",
    ),
    (
        "feddyn",
        "[strategy]\nname = \"feddyn\"\nclients_per_round = 5\nalpha = 0.01\n",
    ),
    (
        "fedasync",
        r#"rounds = 24
eval.every = 6
checkpoint.every = 4
[strategy]
name = "fedasync"
async_alpha = 0.6
concurrency = 4
rate_decay = true
[devices]
speed = { dist = "log-normal", mu = 1.0, sigma = 1.0 }
dropout = 0.1
stragglers = 0.3
"#,
    ),
    (
        "ditto",
        "[strategy]\nname = \"ditto\"\nclients_per_round = 5\nlambda = 1.0\n",
    ),
    (
        "fedrep",
        "[strategy]\nname = \"fedrep\"\nclients_per_round = 5\nhead_epochs = 2\nbody_epochs = 1\n",
    ),
];

/// `BASE` with `extra` merged in (dotted keys before the first table go to the top).
fn config(dir: &Path, name: &str, extra: &str, spill: Option<&Path>) -> PathBuf {
    let mut base: toml::Table = BASE.parse().unwrap();
    let extra: toml::Table = extra.parse().unwrap();
    merge(&mut base, extra);
    if let Some(s) = spill {
        let mut state = toml::Table::new();
        state.insert("memory_mb".into(), 0.into());
        state.insert("dir".into(), s.display().to_string().into());
        base.insert("state".into(), state.into());
    }
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml::to_string(&base).unwrap()).unwrap();
    p
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn run(cfg: &Path, out: &Path) -> Output {
    let o = fedpace()
        .arg("run")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn resume(out: &Path, args: &[&str]) -> Output {
    fedpace()
        .arg("resume")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

/// Starts the run, waits until a checkpoint exists and `rounds` rounds are recorded,
/// then kills it with SIGKILL (no handler runs, nothing is flushed).
fn run_and_kill(cfg: &Path, out: &Path, rounds: usize) {
    let mut child = fedpace()
        .arg("run")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !(out.join("checkpoint.fdpc").exists() && lines(&out.join("metrics.jsonl")) >= rounds) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{}: the run ended ({st}) before the kill", cfg.display());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("summary.json").exists(),
        "{}: the run finished before the kill; make its rounds slower",
        cfg.display()
    );
}

/// metrics.jsonl without wall times (which differ from run to run).
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["wall_seconds"] = serde_json::Value::Null;
            v
        })
        .collect()
}

fn assert_same_run(straight: &Path, resumed: &Path, what: &str) {
    assert!(
        std::fs::read(straight.join("model.safetensors")).unwrap()
            == std::fs::read(resumed.join("model.safetensors")).unwrap(),
        "{what}: the final model differs"
    );
    let (a, b) = (metrics(straight), metrics(resumed));
    assert_eq!(a.len(), b.len(), "{what}: metrics.jsonl lines");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: metrics.jsonl line {}", i + 1);
    }
    for f in ["clients.csv", "metrics.csv"] {
        let strip = |d: &Path| {
            let t = std::fs::read_to_string(d.join(f)).unwrap();
            if f == "metrics.csv" {
                // The wall-time column is the only one allowed to differ.
                let head: Vec<&str> = t.lines().next().unwrap().split(',').collect();
                let wall = head.iter().position(|h| *h == "wall_seconds");
                t.lines()
                    .map(|l| {
                        let mut c: Vec<&str> = l.split(',').collect();
                        if let Some(w) = wall.filter(|&w| w < c.len()) {
                            c[w] = "";
                        }
                        c.join(",")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                t
            }
        };
        assert_eq!(strip(straight), strip(resumed), "{what}: {f}");
    }
    let s = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(resumed.join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["interrupted"], false, "{what}: {s}");
    assert!(s["resumed_after_rounds"].is_array(), "{what}: {s}");
}

#[test]
fn a_run_killed_after_a_checkpoint_and_resumed_ends_bit_identical_to_the_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    // A different kill point for each case (a seeded generator: reproducible).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for (i, (name, extra)) in CASES.iter().enumerate() {
        let case = tmp.path().join(format!("{i}"));
        std::fs::create_dir_all(&case).unwrap();
        // One straight run, in memory: where the states live changes no result.
        let straight = case.join("straight");
        run(&config(&case, name, extra, None), &straight);
        let total = lines(&straight.join("metrics.jsonl"));
        for spilled in [false, true] {
            let what = format!("{name} ({})", if spilled { "spilled" } else { "in memory" });
            let spill = spilled.then(|| case.join("spill"));
            if let Some(s) = &spill {
                std::fs::create_dir_all(s).unwrap();
            }
            let cfg = config(&case, &format!("{name}-{spilled}"), extra, spill.as_deref());
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Kill after 2 … total − 3 recorded rounds (a checkpoint exists after 2).
            let at = 2 + (rng >> 33) as usize % (total - 4);
            let killed = case.join(format!("killed-{spilled}"));
            run_and_kill(&cfg, &killed, at);
            let o = resume(&killed, &[]);
            assert!(o.status.success(), "{what}: {}", text(&o));
            assert_same_run(&straight, &killed, &what);
        }
    }
}

#[test]
fn a_run_stopped_by_sigint_without_periodic_checkpoints_resumes_bit_identical() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let (name, extra) = CASES[0];
    // No `[checkpoint] every`: the stop itself writes the checkpoint.
    let cfg = config(tmp.path(), name, extra, None);
    let raw = std::fs::read_to_string(&cfg).unwrap();
    let mut t: toml::Table = raw.parse().unwrap();
    t.remove("checkpoint");
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let straight = tmp.path().join("straight");
    run(&cfg, &straight);
    let stopped = tmp.path().join("stopped");
    let mut c = fedpace();
    c.arg("run").arg(&cfg).arg("--out").arg(&stopped);
    // SAFETY: only async-signal-safe calls between fork and exec (SIGINT at its
    // default, whatever the test runner inherited).
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wherever the stop lands (an evaluated round included: every third), the resumed
    // run must record what the straight run does.
    while lines(&stopped.join("metrics.jsonl")) < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: a signal to the process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stopped.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (&s["interrupted"], &s["resumable"]),
        (&true.into(), &true.into()),
        "{s}"
    );
    let o = resume(&stopped, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_run(&straight, &stopped, "fedavg-adam-keep after SIGINT");
}

const FEDAVG: &str = r#"
name = "small"
seed = 1
rounds = 4
[data]
source = "synthetic"
num_clients = 8
[model]
name = "logistic-regression"
[strategy]
clients_per_round = 3
[eval]
every = 2
finetune_steps = 0
[checkpoint]
every = 2
"#;

fn small_run(dir: &Path) -> PathBuf {
    let cfg = dir.join("small.toml");
    std::fs::write(&cfg, FEDAVG).unwrap();
    let out = dir.join("run");
    run(&cfg, &out);
    out
}

fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn resuming_with_another_config_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = small_run(tmp.path());
    let cfg = out.join("config.toml");
    let t = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, t.replace("seed = 1", "seed = 2")).unwrap();
    let e = one_line_error(&resume(&out, &["--rounds", "6"]));
    assert!(
        e.contains("config.toml: seed = 2 (the checkpoint's run had 1)"),
        "{e}"
    );
    // What may change does: more rounds, threads, outputs.
    std::fs::write(&cfg, t.replace("trace = false", "trace = true")).unwrap();
    let o = resume(&out, &["--rounds", "6", "--threads", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lines(&out.join("metrics.jsonl")), 6);
}

#[test]
fn a_finished_run_has_nothing_to_resume_until_given_more_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = small_run(tmp.path());
    let e = one_line_error(&resume(&out, &[]));
    assert!(
        e.contains("the checkpoint is at round 4 and the run has 4 rounds")
            && e.contains("--rounds"),
        "{e}"
    );
    let e = one_line_error(&resume(&out, &["--rounds", "3"]));
    assert!(e.contains("at round 4 and the run has 3 rounds"), "{e}");
    let e = one_line_error(&resume(&tmp.path().join("nowhere"), &[]));
    assert!(e.contains("nowhere: not a directory"), "{e}");
}

#[test]
fn a_truncated_or_corrupt_checkpoint_is_an_error_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let out = small_run(tmp.path());
    let path = out.join("checkpoint.fdpc");
    let good = std::fs::read(&path).unwrap();
    // Cut at a spread of points, and flip a byte in each part of the file.
    let n = good.len();
    for cut in [0, 3, 8, 20, n / 3, n / 2, n - 9, n - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = one_line_error(&resume(&out, &["--rounds", "6"]));
        assert!(
            e.contains("checkpoint.fdpc: checkpoint: "),
            "cut at {cut}: {e}"
        );
    }
    for at in [5, 30, n / 2, n - 20, n - 3] {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        std::fs::write(&path, &b).unwrap();
        let e = one_line_error(&resume(&out, &["--rounds", "6"]));
        assert!(
            e.contains("checkpoint.fdpc: checkpoint: "),
            "byte {at}: {e}"
        );
    }
    std::fs::remove_file(&path).unwrap();
    let e = one_line_error(&resume(&out, &["--rounds", "6"]));
    assert!(e.contains("no checkpoint"), "{e}");
}

/// A run whose writes fail part-way (a full disk; here a file-size limit, which fails a
/// write with EFBIG where a full disk fails it with ENOSPC) stops with the write's error
/// and how to continue; resumed where writes succeed, it ends as the uninterrupted run.
#[test]
fn a_run_whose_writes_fail_says_how_to_resume_and_then_ends_as_the_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(&cfg, FEDAVG.replace("rounds = 4", "rounds = 40")).unwrap();
    let straight = tmp.path().join("straight");
    run(&cfg, &straight);
    // ≈ 2.2 KB of metrics.jsonl a round: the limit falls after several checkpoints.
    let limit = 40_000;
    assert!(
        std::fs::metadata(straight.join("metrics.jsonl"))
            .unwrap()
            .len()
            > 2 * limit
    );

    let limited = tmp.path().join("limited");
    let mut cmd = fedpace();
    cmd.arg("run").arg(&cfg).arg("--out").arg(&limited);
    common::limit_file_size(&mut cmd, limit);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The run's description line, then the error in one line.
    let e = stderr.trim().lines().last().unwrap().to_string();
    assert!(
        e.starts_with("error: recording the run: ") && e.contains("metrics.jsonl"),
        "{e}"
    );
    assert!(e.contains("(os error 27)"), "the write's own error: {e}");
    assert!(e.contains("the checkpoint after round "), "{e}");
    let command = format!("`fedpace resume {}` continues the run", limited.display());
    assert!(e.contains(&command), "{e}");
    assert!(!limited.join("summary.json").exists());

    let o = resume(&limited, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_run(&straight, &limited, "resumed after failed writes");
}

/// While a run writes its directory, a second command on it — `resume`, `run --force` —
/// is refused with one line and exit code 2, touching nothing; once the run is killed
/// (SIGKILL: no handler runs) the kernel has dropped its lock and `resume` finishes it,
/// every round recorded once.
#[test]
fn a_second_command_on_a_running_directory_is_refused_and_a_killed_runs_lock_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "locked", "rounds = 200\n", None);
    let out = tmp.path().join("run");
    let mut child = fedpace()
        .arg("run")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("checkpoint.fdpc").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = [
        resume(&out, &[]),
        fedpace()
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .arg("--force")
            .output()
            .unwrap(),
    ];
    for o in &second {
        let e = one_line_error(o);
        assert!(
            e.contains(&format!(
                "{}: another fedpace run is writing",
                out.display()
            )),
            "{e}"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the second commands; make it longer"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = resume(&out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let rounds: Vec<u64> = metrics(&out)
        .iter()
        .map(|m| m["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, (1..=200).collect::<Vec<_>>());
}
