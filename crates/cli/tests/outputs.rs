//! End-to-end tests of the run directory (docs/outputs.md): signals, refusing to mix
//! runs, atomic and complete files, metrics.csv, TensorBoard event files, and the spill
//! store of a killed run. Named after the reliability review's defects they guard.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml")
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Spawns with SIGINT and SIGTERM at their defaults, whatever the test runner inherited
/// (a background job of a non-interactive shell starts with SIGINT ignored, and
/// fedpace keeps an inherited "ignore", as the shells do).
fn spawn(mut c: Command) -> Child {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn metric_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// Waits until `dir/metrics.jsonl` has more than `n` lines (a round just finished).
fn wait_for_round_after(dir: &Path, n: usize, child: &mut Child) {
    let start = Instant::now();
    while metric_lines(dir) <= n {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("fedpace exited early ({st})");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no round in 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: sending a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// What an interrupted run must leave: every file, the summary marked, whole lines.
fn assert_interrupted_run(dir: &Path, signal: &str, out: &Output) {
    let s = read_json(&dir.join("summary.json"));
    assert_eq!(s["interrupted"], true, "{s}");
    assert_eq!(s["interrupted_by"], signal);
    // A checkpoint is written at the stop: `fedpace resume` continues the run.
    assert_eq!(s["resumable"], true, "{s}");
    assert!(
        std::fs::metadata(dir.join("checkpoint.fdpc"))
            .unwrap()
            .len()
            > 0
    );
    let done = s["rounds_completed"].as_u64().unwrap();
    assert!(done >= 1 && done < s["rounds"].as_u64().unwrap(), "{s}");
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count() as u64,
        done,
        "one line per completed round"
    );
    for l in metrics.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    assert!(metrics.ends_with('\n'));
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count() as u64, done + 1);
    for f in ["model.safetensors", "clients.csv", "config.toml"] {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 0, "{f}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!(
            "fedpace: stopped by {signal} after round {done} of "
        )),
        "{stderr}"
    );
    let temps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

fn long_quickstart(out: &Path, state_dir: &Path) -> Command {
    let mut c = fedpace();
    c.arg("run")
        .arg(quickstart())
        .args(["--set", "rounds=1000000", "--threads", "1"])
        .args(["--set", "state.memory_mb=0", "--set"])
        .arg(format!("state.dir={}", state_dir.display()))
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn sigint_and_sigterm_stop_after_the_round_and_write_an_interrupted_run() {
    for (signal, name, code) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let states = tmp.path().join("states");
        let mut child = spawn(long_quickstart(&out, &states));
        wait_for_round_after(&out, 3, &mut child);
        kill(child.id(), signal);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", text(&o));
        assert_interrupted_run(&out, name, &o);
        assert_eq!(
            std::fs::read_dir(&states).unwrap().count(),
            0,
            "spill file left"
        );
        // The page flags it.
        let page = tmp.path().join("r.html");
        let r = fedpace()
            .arg("report")
            .arg(&out)
            .arg("--out")
            .arg(&page)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", text(&r));
        assert!(std::fs::read_to_string(&page)
            .unwrap()
            .contains("interrupted"));
    }
}

#[test]
fn sigint_stops_an_asynchronous_run_between_server_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = fedpace();
    c.arg("run")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fedasync.toml"))
        .args(["--set", "rounds=1000000", "--threads", "1", "--out"])
        .arg(&out);
    let mut child = spawn(c);
    wait_for_round_after(&out, 3, &mut child);
    kill(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert_interrupted_run(&out, "SIGINT", &o);
}

/// Whether `unshare` with these namespace flags works here. Where it does not, the
/// test is skipped with the reason, except under CI=true (CI runs as root on a machine
/// where it works), unless FEDPACE_SKIP_UNSHARE_TESTS=1 says so deliberately.
fn unshare_permitted(flags: &[&str]) -> bool {
    let probe = Command::new("unshare").args(flags).arg("true").output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    let why = match &probe {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    let msg = format!("unshare {} is not permitted here ({why})", flags.join(" "));
    if std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("FEDPACE_SKIP_UNSHARE_TESTS").as_deref() != Ok("1")
    {
        panic!("{msg}; set FEDPACE_SKIP_UNSHARE_TESTS=1 to skip");
    }
    eprintln!("skipped: {msg}");
    false
}

/// Regression (reliability review D6): a full disk at the end of a run left a 0-byte
/// summary.json or clients.csv beside the other outputs, and its error named no file.
#[test]
fn a_full_disk_names_the_file_and_leaves_no_partial_output() {
    if !unshare_permitted(&["--mount"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    assert!(run_quickstart(&reference, &["--set", "rounds=40"])
        .status
        .success());
    // The space the run takes on tmpfs (whole pages per file), then sizes from a bit
    // below it (full while writing metrics) to above it (the final files).
    let pages: u64 = std::fs::read_dir(&reference)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len().div_ceil(4096) * 4)
        .sum();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut failures = std::collections::BTreeSet::new();
    for kb in (pages.saturating_sub(40)..=pages + 8).step_by(4) {
        // In a mount namespace of its own: the tmpfs goes away with it.
        let script = format!(
            "mount -t tmpfs -o size={kb}k tmpfs {m} && {bin} run {cfg} --set rounds=40 --threads 1 --out {m}/r >/dev/null 2>{m}/err; echo rc=$?; tail -n 1 {m}/err; cd {m}/r && stat -c '%n %s' * .[!.]* 2>/dev/null",
            m = mnt.display(),
            bin = env!("CARGO_BIN_EXE_fedpace"),
            cfg = quickstart().display()
        );
        let o = Command::new("unshare")
            .args(["--mount", "sh", "-c", &script])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let mut lines = out.lines();
        let rc = lines.next().unwrap_or("");
        let files: BTreeMap<String, u64> = lines
            .clone()
            .filter_map(|l| {
                let (n, s) = l.rsplit_once(' ')?;
                Some((n.to_string(), s.parse().ok()?))
            })
            .collect();
        assert!(
            files.keys().all(|n| !n.contains(".tmp-")),
            "{kb}k: temporary file left: {out}"
        );
        for f in [
            "clients.csv",
            "model.safetensors",
            "summary.json",
            "config.toml",
        ] {
            assert_ne!(files.get(f), Some(&0), "{kb}k: empty {f}: {out}");
        }
        if rc == "rc=0" {
            assert!(files.contains_key("summary.json"), "{kb}k: {out}");
            continue;
        }
        assert_eq!(rc, "rc=1", "{kb}k: {out}");
        let err = out.lines().nth(1).unwrap_or("");
        assert!(err.contains("No space left on device"), "{kb}k: {out}");
        let named = [
            "metrics.jsonl",
            "metrics.csv",
            "clients.csv",
            "model.safetensors",
            "summary.json",
        ]
        .into_iter()
        .find(|f| err.contains(&format!("/r/{f}")));
        assert!(
            named.is_some(),
            "{kb}k: the error names no output file: {err}"
        );
        failures.insert(named.unwrap());
        assert!(
            !files.contains_key("summary.json"),
            "{kb}k: a failed run has a summary"
        );
    }
    // The sweep reached the final files, not only the per-round ones.
    assert!(failures.len() >= 2, "{failures:?}");
}

/// PID 1 (a container's entrypoint) ignores every signal it has no handler for.
#[test]
fn sigterm_stops_the_run_as_pid_1() {
    if !unshare_permitted(&["--pid", "--fork"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let states = tmp.path().join("states");
    let inner = long_quickstart(&out, &states);
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork"])
        .arg(inner.get_program())
        .args(inner.get_args());
    let mut child = spawn(c);
    wait_for_round_after(&out, 3, &mut child);
    // fedpace is the child of `unshare` (PID 1 in its namespace).
    let pid = children_of(child.id());
    assert_eq!(pid.len(), 1, "{pid:?}");
    let ns_pid = std::fs::read_to_string(format!("/proc/{}/status", pid[0]))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .unwrap();
    assert_eq!(ns_pid, "1");
    kill(pid[0], libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", text(&o));
    assert_interrupted_run(&out, "SIGTERM", &o);
    assert_eq!(std::fs::read_dir(&states).unwrap().count(), 0);
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Rounds long enough (about 1.8 s on one thread here) that the second signal, sent
/// 200 ms after the first, lands inside a round: with 40 epochs a round took about 0.3 s
/// and a fresh-clone CI run saw the round end, and the run stop, before the second signal.
const SLOW_ROUNDS: &str = r#"
name = "slow"
rounds = 1000
[data]
source = "synthetic"
num_clients = 10
[model]
name = "mlp"
hidden = [256, 256]
[client]
epochs = 200
[strategy]
clients_per_round = 10
[eval]
every = 0
finetune_steps = 0
"#;

#[test]
fn a_second_signal_stops_at_once_without_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("slow.toml");
    std::fs::write(&cfg, SLOW_ROUNDS).unwrap();
    let out = tmp.path().join("run");
    let mut c = fedpace();
    c.arg("run")
        .arg(&cfg)
        .args(["--threads", "1", "--out"])
        .arg(&out);
    let mut child = spawn(c);
    // Right after a round ends, so the next one (seconds long) is in progress.
    wait_for_round_after(&out, 0, &mut child);
    kill(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    kill(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    let waited = second.elapsed();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(waited < Duration::from_secs(2), "took {waited:?} to stop");
    assert!(
        text(&o).contains("SIGINT again: stopped at once"),
        "{}",
        text(&o)
    );
    assert!(!out.join("summary.json").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.ends_with('\n'));
    for l in metrics.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    // The page says the run is incomplete instead of refusing it.
    let page = tmp.path().join("r.html");
    let r = fedpace()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("incomplete"));
}

#[test]
fn an_inherited_ignored_sigint_stays_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = fedpace();
    c.arg("run")
        .arg(quickstart())
        .args(["--set", "rounds=150", "--threads", "1", "--out"])
        .arg(&out);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_round_after(&out, 1, &mut child);
    kill(child.id(), libc::SIGINT);
    assert!(child.wait().unwrap().success());
    let s = read_json(&out.join("summary.json"));
    assert_eq!(
        (s["interrupted"].clone(), s["rounds_completed"].clone()),
        (false.into(), 150.into())
    );
}

/// Regression (reliability review D1, D5): a run killed with SIGKILL left its spill
/// database behind, for the next run with the same PID to reopen.
#[test]
fn a_run_killed_with_sigkill_leaves_no_spill_database() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let states = tmp.path().join("states");
    let mut child = spawn(long_quickstart(&out, &states));
    wait_for_round_after(&out, 2, &mut child);
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(std::fs::read_dir(&states).unwrap().count(), 0);
}

fn run_quickstart(out: &Path, extra: &[&str]) -> Output {
    fedpace()
        .arg("run")
        .arg(quickstart())
        .args(["--threads", "1", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Regression (reliability review D2, D14): `--out` over an existing run replaced parts
/// of it, and a failed or shorter rerun left a directory mixing two runs.
#[test]
fn an_output_directory_holding_a_run_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let first = run_quickstart(&out, &["--set", "rounds=5", "--trace"]);
    assert!(first.status.success(), "{}", text(&first));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = std::fs::read(out.join("summary.json")).unwrap();
    // Refused, one line, exit 2, nothing touched.
    let again = run_quickstart(&out, &["--set", "rounds=2", "--trace"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), before);
    // --force replaces the run: no round file of the old one is left beside the new index.
    let forced = run_quickstart(&out, &["--set", "rounds=2", "--trace", "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    let mut rounds: Vec<String> = std::fs::read_dir(out.join("trace"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rounds.sort();
    assert_eq!(
        rounds,
        [
            "index.json",
            "round-0001.safetensors",
            "round-0002.safetensors"
        ]
    );
    assert_eq!(read_json(&out.join("summary.json"))["rounds"], 2);
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    // A config error with --force leaves the old run whole.
    let bad = run_quickstart(&out, &["--set", "client.lr=-1", "--force"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(read_json(&out.join("summary.json"))["rounds"], 2);
    // An empty directory (mktemp -d) is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(run_quickstart(&empty, &["--set", "rounds=1"])
        .status
        .success());
}

#[test]
fn metrics_csv_has_a_row_per_round_that_agrees_with_metrics_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run_quickstart(&out, &["--set", "rounds=10"]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let json: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), 10);
    for (r, j) in rows.iter().zip(&json) {
        assert_eq!(r.len(), header.len());
        assert_eq!(r[col("round")], j["round"].to_string());
        let f = |c: &str| r[col(c)].parse::<f64>().unwrap();
        // serde_json reads floats to within an ulp (no `float_roundtrip` feature).
        let same = |a: f64, b: &serde_json::Value| {
            let b = b.as_f64().unwrap();
            assert!((a - b).abs() <= 1e-15 * b.abs(), "{a} vs {b}");
        };
        same(f("train_loss"), &j["train_loss"]);
        same(f("rate_mean"), &j["rates"]["mean"]);
        // the quickstart's logistic regression has one group, `head`
        assert!((f("rate_head") - f("rate_mean")).abs() < 1e-9);
        if j["eval"].is_object() {
            same(
                f("personalized_mean_accuracy"),
                &j["eval"]["personalized_mean_accuracy"],
            );
        } else {
            assert_eq!(r[col("global_accuracy")], "");
        }
    }
}

/// The Python with TensorBoard installed by scripts/ci-python-deps.sh.
fn tensorboard_python() -> Option<PathBuf> {
    let venv = std::env::var_os("FEDPACE_PY_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv"),
        PathBuf::from,
    );
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let msg = format!(
        "TensorBoard is not installed in {} (run scripts/ci-python-deps.sh)",
        venv.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

#[test]
fn tensorboard_reads_back_the_event_files() {
    let Some(python) = tensorboard_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run_quickstart(
        &out,
        &["--set", "rounds=12", "--set", "output.tensorboard=true"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_tensorboard.py");
    let r = Command::new(python)
        .arg(script)
        .arg(out.join("tensorboard"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));
    let read: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let json: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Scalars: one per round, equal to metrics.jsonl in f32.
    let scalars = &read["scalars"];
    let steps = |tag: &str| -> Vec<(u64, f64)> {
        scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {scalars}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    let loss = steps("loss/train");
    assert_eq!(loss.len(), 12);
    for ((step, v), j) in loss.iter().zip(&json) {
        assert_eq!(*step, j["round"].as_u64().unwrap());
        assert_eq!(*v as f32, j["train_loss"].as_f64().unwrap() as f32);
    }
    let evaluated: Vec<&serde_json::Value> =
        json.iter().filter(|j| j["eval"].is_object()).collect();
    let acc = steps("accuracy/personalized_mean");
    assert_eq!(acc.len(), evaluated.len());
    for ((step, v), j) in acc.iter().zip(&evaluated) {
        assert_eq!(*step, j["round"].as_u64().unwrap());
        assert_eq!(
            *v as f32,
            j["eval"]["personalized_mean_accuracy"].as_f64().unwrap() as f32
        );
    }
    for tag in [
        "accuracy/global",
        "server/lr",
        "server/step_norm",
        "update_norm/mean",
        "rate/group/head",
    ] {
        assert!(!steps(tag).is_empty(), "{tag}");
    }
    // Histograms of the clients' rates: every sampled client counted once per round.
    let h = read["histograms"]["rate/clients"].as_array().unwrap();
    assert_eq!(h.len(), 12);
    for (h, j) in h.iter().zip(&json) {
        let lrs: Vec<f64> = j["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["lr"].as_f64().unwrap())
            .collect();
        assert_eq!(h["num"].as_f64().unwrap(), lrs.len() as f64);
        assert_eq!(h["bucket_total"].as_f64().unwrap(), lrs.len() as f64);
        let min = lrs.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((h["min"].as_f64().unwrap() - min).abs() <= 1e-15 * min);
    }
    // Every event (the script checked CRCs and protobuf re-encoding): file version + rounds.
    assert_eq!(read["records"], 13);
}
