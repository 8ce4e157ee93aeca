//! Issue 13, the last two pieces of "clients bring their own data":
//!
//! - `fedpace client --format shakespeare`: participants bring Shakespeare's text (a play
//!   file as fetched with `--role`, or a plain text of one speaker's lines); a server that
//!   holds no data (`[input] seq_len/vocab`) and three such clients over TLS train the
//!   char-LSTM to the model `fedpace run` trains on the same play, byte for byte (the
//!   server also evaluates a role's windows it is given with `--test-data --test-role`).
//! - `fedpace server --test-data`: a server holding no data is given a test set of its own
//!   and reports the central evaluation `fedpace run` reports on the same held-out set.
//!
//! The play is the data crate's fixture `the_lantern.md` (written for the tests in the
//! fetched plays' markup), so nothing needs fetching.

mod common;

use common::{fedpace, Kill, Server, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures")
}

fn play() -> PathBuf {
    fixtures().join("shakespeare/plays/comedy/the_lantern.md")
}

/// A CA, a key ring and a credential for each of clients `0..n`, under `tmp/keys`.
fn keys(tmp: &Path, n: usize) {
    let names: Vec<(String, String)> = (0..n)
        .map(|i| (format!("client-{i}"), format!("{i}..{}", i + 1)))
        .collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    common::make_keys(&tmp.join("keys"), &pairs);
}

/// Runs a server (`server_args` after CONFIG) and one client process per entry of
/// `clients` (the arguments after `--id K`); returns the server's log.
fn federation(
    tmp: &Path,
    cfg: &str,
    server_args: &[&str],
    clients: &[Vec<String>],
    run: &str,
) -> String {
    let d = |p: &str| tmp.join(p).to_str().unwrap().to_string();
    let keys = tmp.join("keys");
    let mut args: Vec<String> = vec![cfg.to_string()];
    args.extend(server_args.iter().map(|a| a.to_string()));
    args.extend(["--out".to_string(), d(run)]);
    let server = Server::start(&args, "127.0.0.1:0", &keys);
    let mut children = Kill(Vec::new());
    for (i, extra) in clients.iter().enumerate() {
        let mut args: Vec<String> = vec!["client".into(), cfg.into()];
        args.extend(extra.iter().cloned());
        args.extend(["--id".into(), i.to_string()]);
        args.extend(["--state-dir".into(), d(&format!("{run}-state/{i}"))]);
        args.extend(["--give-up".into(), "60".into()]);
        children.0.push(
            server
                .node(&args, &keys, &format!("client-{i}"))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let (status, log) = server.wait();
    assert!(status.success(), "server: {log}");
    log
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every round's records of a metrics.jsonl without wall times and wire traffic.
fn records(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            strip(&mut v);
            v
        })
        .collect()
}

/// Drops keys that differ between a simulation and a network run by design (times,
/// traffic).
fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !(k.contains("time") || k.contains("second") || k == "traffic"));
            m.values_mut().for_each(strip);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

#[test]
fn own_shakespeare_text_trains_the_char_lstm_as_the_simulated_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let cfg = d("shakespeare.toml");
    // A small char-LSTM and a few steps: the test is about who holds which windows.
    std::fs::write(
        &cfg,
        format!(
            "name = \"own-shakespeare\"\nseed = 4\nrounds = 2\ndata_dir = {:?}\n\
             [data]\nsource = \"shakespeare\"\nverify = false\nvalidation_fraction = 0.2\n\
             [input]\nseq_len = 80\nvocab = 80\nnum_classes = 80\n\
             [model]\nname = \"char-lstm\"\nembedding = 4\nhidden = 8\nlayers = 1\n\
             [client]\nlr = 0.5\nbatch_size = 4\nsteps = 2\nshare = [\"label-histogram\"]\n\
             [strategy]\nname = \"fedavg\"\nclients_per_round = 3\n\
             [eval]\nevery = 2\nfinetune_steps = 0\n",
            fixtures().to_str().unwrap()
        ),
    )
    .unwrap();
    fedpace(&["run", &cfg, "--out", &d("sim")]);
    keys(tmp.path(), 3);
    // Client 1 brings OSRIC's lines as a plain text file of its own.
    let roles = fedpace_data::shakespeare::parse_play(&std::fs::read_to_string(play()).unwrap());
    let osric = &roles.iter().find(|r| r.0 == "OSRIC").unwrap().1;
    std::fs::write(d("my-lines.txt"), osric.join("\n") + "\n").unwrap();
    let p = play().to_str().unwrap().to_string();
    let clients = vec![
        vec!["--data".into(), p.clone(), "--role".into(), "merida".into()],
        vec!["--data".into(), d("my-lines.txt")],
        vec![
            "--data".into(),
            p,
            "--format".into(),
            "shakespeare".into(),
            "--role".into(),
            "the_lantern_THE_WATCHMAN".into(),
        ],
    ];
    // `source = "shakespeare"` does not say how many roles there are.
    // The server is given the play's MERIDA windows as a test set of its own (the
    // simulation has none: its records are compared without the central evaluation).
    let play = play();
    let log = federation(
        tmp.path(),
        &cfg,
        &[
            "--min-clients",
            "3",
            "--test-data",
            play.to_str().unwrap(),
            "--test-role",
            "MERIDA",
        ],
        &clients,
        "net",
    );
    assert!(log.contains("3 clients registered"), "{log}");
    let merida = &roles.iter().find(|r| r.0 == "MERIDA").unwrap().1;
    let windows = fedpace_data::shakespeare::encode_text(merida).len() - 80;
    assert!(
        log.contains(&format!(
            "central evaluation on --test-data, {windows} samples"
        )),
        "{log}"
    );
    let (sim, net) = (tmp.path().join("sim"), tmp.path().join("net"));
    let mut with_central = records(&net);
    let central = with_central[1]["eval"]["central"].take();
    assert_eq!(central["count"], windows, "{central}");
    with_central[1]["eval"]["central"] = serde_json::Value::Null;
    assert_eq!(records(&sim), with_central, "metrics differ");
    let csv = |p: &Path| String::from_utf8(read(p.join("clients.csv"))).unwrap();
    assert_eq!(csv(&sim), csv(&net), "clients.csv");
    assert_eq!(
        read(sim.join("model.safetensors")),
        read(net.join("model.safetensors")),
        "models differ"
    );
}

/// `label` of sample `i` of a small 3-class problem with 4 features (deterministic).
fn row(i: usize, label_of: impl Fn(&[f32]) -> usize) -> String {
    let x: Vec<f32> = (0..4)
        .map(|j| (((i * 37 + j * 11) % 23) as f32 - 11.0) / 7.0)
        .collect();
    let y = label_of(&x);
    format!("{},{},{},{},{y}\n", x[0], x[1], x[2], x[3])
}

fn label(x: &[f32]) -> usize {
    if x[0] + x[1] > 0.5 {
        0
    } else if x[2] > x[3] {
        1
    } else {
        2
    }
}

/// A 4-client CSV federation in `tmp` (240 training rows, a held-out `test.csv` of 90):
/// writes the data and `csv.toml` (`top`: its first keys, `lr`, then `extra` tables), runs
/// it in simulation into `tmp/sim`, exports the clients' parts, and returns the config's
/// path and the parts' paths in client order.
fn csv_federation(tmp: &Path, top: &str, lr: f64, extra: &str) -> (String, Vec<String>) {
    let d = |p: &str| tmp.join(p).to_str().unwrap().to_string();
    let header = "a,b,c,d,label\n";
    let train: String = (0..240).map(|i| row(i, label)).collect();
    let test: String = (1000..1090).map(|i| row(i, label)).collect();
    std::fs::write(d("train.csv"), format!("{header}{train}")).unwrap();
    std::fs::write(d("test.csv"), format!("{header}{test}")).unwrap();
    let cfg = d("csv.toml");
    std::fs::write(
        &cfg,
        format!(
            "{top}\n[data]\nsource = \"csv\"\nnum_clients = 4\n\
             [data.csv]\npath = {:?}\ntest_path = {:?}\n\
             [input]\nsample_shape = [4]\nnum_classes = 3\n\
             [model]\nname = \"logistic-regression\"\n\
             [client]\nlr = {lr}\nbatch_size = 8\nepochs = 1\n\
             [strategy]\nname = \"fedavg\"\nclients_per_round = 4\n\
             [eval]\nevery = 1\n{extra}",
            d("train.csv"),
            d("test.csv")
        ),
    )
    .unwrap();
    fedpace(&["run", &cfg, "--out", &d("sim")]);
    fedpace(&["datasets", "export", &cfg, "--out", &d("parts")]);
    let mut parts: Vec<String> = std::fs::read_dir(d("parts"))
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 4);
    (cfg, parts)
}

#[test]
fn a_server_without_data_evaluates_its_own_test_set_as_the_simulation_does() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let (cfg, files) = csv_federation(
        tmp.path(),
        "name = \"own-test-set\"\nseed = 2\nrounds = 3",
        0.1,
        "",
    );
    keys(tmp.path(), 4);
    let clients: Vec<Vec<String>> = files
        .into_iter()
        .map(|f| vec!["--data".into(), f])
        .collect();
    let test_csv = d("test.csv");
    let log = federation(
        tmp.path(),
        &cfg,
        &["--test-data", &test_csv],
        &clients,
        "net",
    );
    assert!(
        log.contains("central evaluation on --test-data, 90 samples")
            && !log.contains("central evaluation off"),
        "{log}"
    );
    let (sim, net) = (tmp.path().join("sim"), tmp.path().join("net"));
    let summary = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&read(p.join("summary.json"))).unwrap()
    };
    let (a, b) = (summary(&sim), summary(&net));
    assert_eq!(a["global"]["evaluated_on"], "held-out test set");
    assert_eq!(a["global"], b["global"], "central evaluation differs");
    let acc = a["global"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.0 && acc < 1.0, "{acc}");
    // Every round's records, the central accuracy and loss among them.
    let (ra, rb) = (records(&sim), records(&net));
    assert_eq!(ra, rb, "metrics differ");
    assert!(
        ra.iter()
            .filter(|r| r["eval"]["central"]["count"] == 90)
            .count()
            == 3,
        "{ra:?}"
    );
    assert_eq!(
        read(sim.join("model.safetensors")),
        read(net.join("model.safetensors"))
    );
}

/// Bad input is one line naming the flag or the file, before the server listens.
#[test]
fn a_bad_test_set_or_role_is_one_line_before_listening() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/federation.toml");
    let cfg = cfg.to_str().unwrap();
    // federation.toml's [input] is 60 features, 10 classes.
    std::fs::write(d("five.csv"), "a,b,c,d,e,label\n1,2,3,4,5,0\n").unwrap();
    std::fs::write(
        d("labels.csv"),
        format!(
            "{},label\n{},12\n",
            (0..60)
                .map(|i| format!("f{i}"))
                .collect::<Vec<_>>()
                .join(","),
            vec!["0"; 60].join(",")
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("listening"), "{err}");
        err
    };
    keys(tmp.path(), 1);
    let (ring, cert, key) = (
        d("keys/ring.toml"),
        d("keys/server.pem"),
        d("keys/server-key.pem"),
    );
    let server = |test: &str, tag: &str| {
        let args = [
            "server",
            cfg,
            "--test-data",
            test,
            "--listen",
            "127.0.0.1:0",
            "--keys",
            &ring,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--out",
        ];
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(d(&format!("run-{tag}")));
        v
    };
    let five = d("five.csv");
    let args = server(&five, "shape");
    let err = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("--test-data")
            && err.contains("five.csv")
            && err.contains("[input] says [60]"),
        "{err}"
    );
    let labels = d("labels.csv");
    let args = server(&labels, "labels");
    let err = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("labels.csv") && err.contains("label 12") && err.contains("below 10"),
        "{err}"
    );
    // An IDX image file needs its labels: the server's flag is named.
    let idx = d("t10k-images-idx3-ubyte");
    std::fs::write(&idx, b"not idx").unwrap();
    let err = run(&server(&idx, "idx")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        err.contains("--test-data: --test-labels = (missing)") && err.contains("t10k-images"),
        "{err}"
    );
    // A server that reads its data set (no [input]) takes no other test set.
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let mut args = server(&five, "no-input");
    args[1] = quick.to_str().unwrap().to_string();
    let err = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.starts_with("error: --test-data ") && err.contains("no [input] table"),
        "{err}"
    );
    // A role the play does not have.
    let p = play();
    let err = run(&[
        "client",
        cfg,
        "--data",
        p.to_str().unwrap(),
        "--role",
        "HAMLET",
        "--id",
        "0",
        "--server",
        "127.0.0.1:9",
        "--key",
        "k",
        "--ca",
        "c",
    ]);
    assert!(
        err.contains("--role = HAMLET: a speaking role of") && err.contains("nearest: "),
        "{err}"
    );
}

/// `fedpace server --resume` evaluates on the test set the run was started with (recorded
/// in the run directory as `server-test-set.json`), so the resumed run's central
/// evaluation equals the simulation's in every round; another test set, or one where the
/// run had none, is refused in one line.
#[test]
fn a_resumed_server_keeps_its_test_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    // Enough rounds (a few ms each) for the kill to land inside the run.
    let (cfg, parts) = csv_federation(
        tmp.path(),
        "name = \"resume-test-set\"\nseed = 4\nrounds = 400",
        0.05,
        "[checkpoint]\nevery = 1\n",
    );
    std::fs::copy(d("train.csv"), d("other.csv")).unwrap();
    keys(tmp.path(), 4);
    let keys = tmp.path().join("keys");
    let net = tmp.path().join("net");
    let server = common::Server::start(
        &[&cfg, "--test-data", &d("test.csv"), "--out", &d("net")],
        "127.0.0.1:0",
        &keys,
    );
    let addr = server.addr.clone();
    let mut clients = Kill(
        (0..4)
            .map(|i| {
                server
                    .node(
                        &[
                            "client",
                            &cfg,
                            "--data",
                            &parts[i],
                            "--id",
                            &i.to_string(),
                            "--state-dir",
                            &d(&format!("state/{i}")),
                            "--give-up",
                            "60",
                        ],
                        &keys,
                        &format!("client-{i}"),
                    )
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let start = std::time::Instant::now();
    while !(net.join("checkpoint.fdpc").exists() && common::lines(&net.join("metrics.jsonl")) >= 3)
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no progress"
        );
        for c in &mut clients.0 {
            assert!(c.try_wait().unwrap().is_none(), "a client ended");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    server.kill();
    assert!(
        !net.join("summary.json").exists(),
        "the run finished before the kill; give it more rounds"
    );
    assert!(net.join("server-test-set.json").is_file());

    // Another test set, or none where the run had one, cannot be mixed in.
    let refused = |extra: &[&str], dir: &str| {
        let out = Command::new(BIN)
            .args(["server", "--resume", dir])
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--keys"])
            .arg(keys.join("ring.toml"))
            .arg("--tls-cert")
            .arg(keys.join("server.pem"))
            .arg("--tls-key")
            .arg(keys.join("server-key.pem"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    let err = refused(&["--test-data", &d("other.csv")], &d("net"));
    assert!(
        err.lines().count() == 1
            && err.contains("other.csv")
            && err.contains("test.csv")
            && err.contains("expected the same test set"),
        "{err}"
    );

    // Resumed without --test-data: the recorded set, and every round evaluated on it.
    let server = common::Server::start(&["--resume", &d("net")], &addr, &keys);
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("the run's test set"), "{log}");
    for mut c in std::mem::take(&mut clients.0) {
        assert!(c.wait().unwrap().success());
    }
    let (sim, net) = (tmp.path().join("sim"), tmp.path().join("net"));
    let (ra, rb) = (records(&sim), records(&net));
    assert_eq!(ra.len(), rb.len());
    for (i, (a, b)) in ra.iter().zip(&rb).enumerate() {
        assert_eq!(
            a["eval"]["central"],
            b["eval"]["central"],
            "round {}",
            i + 1
        );
        assert_eq!(b["eval"]["central"]["count"], 90, "round {}", i + 1);
    }
    assert_eq!(
        read(sim.join("model.safetensors")),
        read(net.join("model.safetensors"))
    );
}
