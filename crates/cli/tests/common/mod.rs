//! What the tests that start `fedpace server` and `fedpace node`/`client` processes share:
//! keys and certificates, a TLS server on a free port, and the command of a node that
//! reaches it.
#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fedpace");

/// A port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes `command`'s process unable to write files past `bytes` (`RLIMIT_FSIZE`, with
/// SIGXFSZ ignored): a write past it fails with EFBIG, as a full disk fails one with
/// ENOSPC — a full disk for tests, without root or a mount.
pub fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `fedpace ARGS` and asserts that it succeeded.
pub fn fedpace(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fedpace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Child processes killed (and reaped) when dropped, so that a failing test leaves none.
pub struct Kill(pub Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// A local CA, server certificate and key ring in `dir` (`fedpace keys ca`), and one
/// credential `dir/NAME.key` per `(NAME, START..END)` (`fedpace keys generate`).
pub fn make_keys(dir: &Path, nodes: &[(&str, &str)]) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    fedpace(&["keys", "ca", "--dir", &s(dir)]);
    for (name, range) in nodes {
        fedpace(&[
            "keys",
            "generate",
            "--ring",
            &s(&dir.join("ring.toml")),
            "--name",
            name,
            "--clients",
            range,
            "--out",
            &s(&dir.join(format!("{name}.key"))),
        ]);
    }
}

/// A running `fedpace server` (killed when dropped while still running).
pub struct Server {
    /// The process.
    pub child: Child,
    /// The address it bound, `127.0.0.1:PORT`.
    pub addr: String,
    drain: Option<JoinHandle<String>>,
}

impl Server {
    /// Starts `fedpace server ARGS --listen LISTEN` with the TLS files and key ring of
    /// `keys` (see [`make_keys`]) and `--wait 60`; returns once it printed the address it
    /// bound.
    pub fn start<S: AsRef<OsStr>>(args: &[S], listen: &str, keys: &Path) -> Server {
        Server::start_with(args, listen, keys, |_| {})
    }

    /// [`Server::start`] with `adjust` applied to the command before it starts.
    pub fn start_with<S: AsRef<OsStr>>(
        args: &[S],
        listen: &str,
        keys: &Path,
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(BIN);
        adjust(&mut command);
        let mut child = command
            .arg("server")
            .args(args)
            .arg("--listen")
            .arg(listen)
            .arg("--keys")
            .arg(keys.join("ring.toml"))
            .arg("--tls-cert")
            .arg(keys.join("server.pem"))
            .arg("--tls-key")
            .arg(keys.join("server-key.pem"))
            .args(["--wait", "60"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The bound port is in the server's first line: "…: listening on 127.0.0.1:PORT, …".
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let (mut addr, mut seen) = (String::new(), String::new());
        while addr.is_empty() {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                child.kill().ok();
                child.wait().ok();
                panic!("server ended: {seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest.split(',').next().unwrap().to_string();
            }
        }
        let drain = std::thread::spawn(move || {
            for l in err.lines() {
                seen.push_str(&l.unwrap_or_default());
                seen.push('\n');
            }
            seen
        });
        Server {
            child,
            addr,
            drain: Some(drain),
        }
    }

    /// Waits for the server to exit; its status and everything it wrote to stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, self.drain.take().unwrap().join().unwrap())
    }

    /// Kills it with SIGKILL; everything it wrote to stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.drain.take().unwrap().join().unwrap()
    }

    /// The command of `fedpace SUBCOMMAND_ARGS --server ADDR --key KEYS/NAME.key --ca
    /// KEYS/ca.pem` (a `node` or `client` of this server), stdin and stdout closed.
    pub fn node<S: AsRef<OsStr>>(&self, args: &[S], keys: &Path, name: &str) -> Command {
        node_command(args, &self.addr, keys, name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.drain.is_some() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The command of a node reaching `addr` (see [`Server::node`]).
pub fn node_command<S: AsRef<OsStr>>(args: &[S], addr: &str, keys: &Path, name: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--server")
        .arg(addr)
        .arg("--key")
        .arg(keys.join(format!("{name}.key")))
        .arg("--ca")
        .arg(keys.join("ca.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// Lines of a file (0 when it does not exist yet).
pub fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

/// A run's metrics.jsonl without wall times and wire traffic: what a networked run that
/// was interrupted shares with an uninterrupted `fedpace run` (instructions sent again
/// after a restart are sent twice, and a plain run counts no wire bytes; traffic parity
/// is `federation.rs`'s `server_and_node_processes_over_tls_equal_the_simulation`).
pub fn metrics_without_times(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["wall_seconds"] = serde_json::Value::Null;
            v["traffic"] = serde_json::Value::Null;
            v
        })
        .collect()
}

/// Writes `dir/exp.toml`: the config `base` with the tables of `extra` merged in (a
/// table's keys added to the base's table of that name), and returns its path.
pub fn write_config(dir: &Path, base: &str, extra: &str) -> String {
    let mut table: toml::Table = base.parse().unwrap();
    for (k, v) in extra.parse::<toml::Table>().unwrap() {
        match (table.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => a.extend(b),
            (_, v) => {
                table.insert(k, v);
            }
        }
    }
    let cfg = dir.join("exp.toml");
    std::fs::write(&cfg, toml::to_string(&table).unwrap()).unwrap();
    cfg.to_str().unwrap().to_string()
}

/// Runs `cmd`; asserts the exit code and that stderr has exactly one `error:` line,
/// containing every one of `want`.
pub fn refused(mut cmd: Command, code: i32, want: &[&str]) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{cmd:?}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{cmd:?}: {err}");
    for w in want {
        assert!(errors[0].contains(w), "{cmd:?}: want {w:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
