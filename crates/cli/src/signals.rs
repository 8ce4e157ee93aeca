//! SIGINT and SIGTERM: the first one stops the run at the next round boundary (the run
//! directory is then written as usual, its summary marked interrupted); a second one
//! ends the process at once. docs/outputs.md describes what is left on disk.
//!
//! Handlers are installed explicitly, so they work as PID 1 in a container too, where
//! the kernel ignores a signal whose handler is the default. A signal the parent set to
//! *ignored* (a background job of a non-interactive shell, `nohup`-like wrappers) stays
//! ignored, as in Python and the shells: the parent asked for that.
//!
//! The handler only stores the signal number and writes a fixed line to stderr (both
//! async-signal-safe); the round loops read it through `Observer::should_stop`.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The process is a node (`fedpace node`/`client`): it has no run to stop and write.
static NODE: AtomicBool = AtomicBool::new(false);

/// Says that this process is a node, for the lines a signal prints: it leaves the server
/// and exits, it does not stop a run.
pub fn node_mode() {
    NODE.store(true, Ordering::SeqCst);
}

/// A stop request by signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The signal number.
    pub signal: i32,
}

impl Stop {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(&self) -> &'static str {
        match self.signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "signal",
        }
    }
    /// 128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shells' convention).
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

/// The stop request, once a signal has arrived.
pub fn requested() -> Option<Stop> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Stop { signal }),
    }
}

/// Installs the handlers for SIGINT and SIGTERM (once, at start).
pub fn install() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        if inherited_ignored(signal) {
            continue;
        }
        // SAFETY: the action only touches an atomic and calls write(2) and _exit(2),
        // which are async-signal-safe.
        unsafe { signal_hook::low_level::register(signal, move || on_signal(signal)) }?;
    }
    Ok(())
}

fn on_signal(signal: i32) {
    let first = RECEIVED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    let say = |msg: &[u8]| {
        // SAFETY: write(2) on stderr with a static buffer.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    };
    let node = NODE.load(Ordering::SeqCst);
    if first && node {
        say(match signal {
            libc::SIGINT => b"\nfedpace: SIGINT: the node finishes the clients it is training, leaves the server and exits (send it again to stop at once)\n",
            _ => b"\nfedpace: SIGTERM: the node finishes the clients it is training, leaves the server and exits (send it again to stop at once)\n",
        });
    } else if node {
        say(match signal {
            libc::SIGINT => b"\nfedpace: SIGINT again: stopped at once; the server counts this node gone after its heartbeat timeout\n",
            _ => b"\nfedpace: SIGTERM again: stopped at once; the server counts this node gone after its heartbeat timeout\n",
        });
        signal_hook::low_level::exit(128 + signal);
    } else if first {
        say(match signal {
            libc::SIGINT => b"\nfedpace: SIGINT: stopping after the current round and writing the results (send it again to stop at once)\n",
            _ => b"\nfedpace: SIGTERM: stopping after the current round and writing the results (send it again to stop at once)\n",
        });
    } else {
        say(match signal {
            libc::SIGINT => b"\nfedpace: SIGINT again: stopped at once; the run directory holds the metrics of the completed rounds only\n",
            _ => b"\nfedpace: SIGTERM again: stopped at once; the run directory holds the metrics of the completed rounds only\n",
        });
        signal_hook::low_level::exit(128 + signal);
    }
}

/// Whether the signal's disposition is SIG_IGN (set by the parent before exec).
fn inherited_ignored(signal: i32) -> bool {
    // SAFETY: a query (null new action) into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}
