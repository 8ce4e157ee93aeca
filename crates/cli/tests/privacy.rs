//! `fedpace privacy` (docs/privacy.md, "Metrics and `fedpace privacy`"), through the real
//! binary: the ε it prints for `examples/privacy-dp.toml` is the one the run's summary
//! reports; `--target-epsilon` prints a noise multiplier that meets the target, checked
//! again with the accountant and by a run at that multiplier; bad input is one line on
//! stderr and exit status 2.

use fedpace_privacy::accountant::epsilon_for;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fedpace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedpace"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/privacy-dp.toml")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The number after `key` in `text` (e.g. `ε = 3.413506 after one round`).
fn number_after(text: &str, key: &str) -> f64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} not in {text}"));
    let rest = &text[at + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key:?} in {text}: {e}"))
}

/// Runs the example (optionally with one override) and returns its summary's ε.
fn run_epsilon(dir: &Path, set: Option<String>) -> f64 {
    let out = dir.join("run");
    let mut cmd = fedpace();
    cmd.arg("run")
        .arg(example())
        .arg("--out")
        .arg(&out)
        .arg("--force");
    if let Some(s) = set {
        cmd.args(["--set", &s]);
    }
    ok(&cmd.output().unwrap());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    summary["privacy"]["epsilon"].as_f64().unwrap()
}

#[test]
fn printed_epsilon_equals_the_runs_summary() {
    let printed = ok(&fedpace().arg("privacy").arg(example()).output().unwrap());
    // 10 of 30 clients, z = 1, δ = 1e-5, 20 rounds (docs/privacy.md's example).
    assert!(printed.contains("q = 0.333333"), "{printed}");
    let one = number_after(&printed, "ε = ");
    let total = number_after(&printed, "after one round, ε = ");
    assert!((one - 3.413506).abs() < 1e-6, "{printed}");
    assert!((total - 11.674737).abs() < 1e-6, "{printed}");
    // The accountant itself, at full precision.
    let exact = epsilon_for(1.0 / 3.0, 1.0, 20, 1e-5).unwrap().epsilon;
    assert!((total - exact).abs() <= 5e-7, "{total} vs {exact}");

    let tmp = tempfile::tempdir().unwrap();
    let run = run_epsilon(tmp.path(), None);
    assert!(
        (run - total).abs() <= 5e-7,
        "summary ε {run}, printed {total}"
    );
}

#[test]
fn target_epsilon_gives_a_noise_multiplier_that_meets_it() {
    for target in [8.0, 2.0] {
        let printed = ok(&fedpace()
            .arg("privacy")
            .arg(example())
            .args(["--target-epsilon", &target.to_string()])
            .output()
            .unwrap());
        let z = number_after(&printed, "noise_multiplier = ");
        assert!(
            printed.contains(&format!("meets ε = {target} after 20 rounds")),
            "{printed}"
        );
        // Re-checked with the accountant: z meets the target (to the printed precision,
        // six decimals) and is the smallest that does (1e-3 less misses it).
        let q = 1.0 / 3.0;
        let eps = epsilon_for(q, z, 20, 1e-5).unwrap().epsilon;
        assert!(
            eps <= target * (1.0 + 1e-5),
            "z = {z}: ε = {eps} > {target}"
        );
        let below = epsilon_for(q, z - 1e-3, 20, 1e-5).unwrap().epsilon;
        assert!(below > target, "z − 0.001 = {}: ε = {below}", z - 1e-3);
        // The ε line printed for that z is the target's.
        let total = number_after(&printed, "after one round, ε = ");
        assert!((total - target).abs() <= target * 1e-5, "{printed}");
        if target == 8.0 {
            assert!((z - 1.270774).abs() < 1e-6, "{printed}");
            // A run at the printed z spends what the accountant said.
            let tmp = tempfile::tempdir().unwrap();
            let run = run_epsilon(tmp.path(), Some(format!("privacy.noise_multiplier={z}")));
            assert!(
                (run - eps).abs() <= 1e-9 * eps,
                "run ε {run}, accountant {eps}"
            );
            assert!(run <= target * (1.0 + 1e-5), "run ε {run}");
        }
    }
}

#[test]
fn bad_input_is_one_line_and_exit_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let no_privacy = tmp.path().join("plain.toml");
    std::fs::write(
        &no_privacy,
        std::fs::read_to_string(example())
            .unwrap()
            .split("[privacy]")
            .next()
            .unwrap()
            .to_string()
            + "[eval]\nevery = 5\n",
    )
    .unwrap();
    let missing = tmp.path().join("missing.toml");
    let ex = example();
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec![ex.as_os_str(), "--target-epsilon=-1".as_ref()],
            "epsilon",
        ),
        (
            vec![ex.as_os_str(), "--target-epsilon".as_ref(), "0".as_ref()],
            "epsilon",
        ),
        (
            vec![ex.as_os_str(), "--target-epsilon".as_ref(), "NaN".as_ref()],
            "epsilon",
        ),
        (
            vec![ex.as_os_str(), "--clients".as_ref(), "0".as_ref()],
            "--clients = 0",
        ),
        (
            vec![ex.as_os_str(), "--set".as_ref(), "privacy.delta=2".as_ref()],
            "delta",
        ),
        (
            vec![
                ex.as_os_str(),
                "--set".as_ref(),
                "privacy.noise_multiplier=-1".as_ref(),
            ],
            "noise_multiplier",
        ),
        (
            vec![no_privacy.as_os_str()],
            "privacy.noise_multiplier: missing",
        ),
        (vec![missing.as_os_str()], "missing.toml"),
    ];
    for (args, names) in cases {
        let out = fedpace().arg("privacy").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
