//! The README's one-command federation, `scripts/local-federation.sh`, run as a user runs
//! it (with this build's binary, a temporary output directory and a free port): a local
//! CA, ten client keys, a TLS server and ten `fedpace client` processes on 127.0.0.1 —
//! each taking its partition (`--partition-of`), then each bringing its own exported file
//! (`--own-data`). Both end with the model `fedpace run` gives for the same config, byte
//! for byte. (The script stops its clients when the server is done.)

mod common;

use common::{fedpace, free_port, BIN};
use std::path::Path;
use std::process::Command;

#[test]
fn the_local_federation_script_ends_with_the_simulation_model_both_ways() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = root.join("examples/federation.toml");
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    fedpace(&["run", cfg.to_str().unwrap(), "--out", sim.to_str().unwrap()]);
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    for own in [false, true] {
        let out = tmp.path().join(if own { "own" } else { "partition" });
        let mut script = Command::new("bash");
        script.arg(root.join("scripts/local-federation.sh"));
        if own {
            script.arg("--own-data");
        }
        let run = script
            .env("BIN", BIN)
            .env("OUT", &out)
            .env("PORT", free_port().to_string())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(run.status.success(), "own data: {own}: {text}");
        assert!(text.contains("federation done"), "{text}");
        let log = std::fs::read_to_string(out.join("server.log")).unwrap();
        assert!(log.contains("10 clients registered"), "{log}");
        assert!(
            model(&sim) == model(&out.join("run")),
            "own data: {own}: the model differs from `fedpace run`'s"
        );
    }
}
