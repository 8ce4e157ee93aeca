//! The node side: runs the clients a node hosts (docs/network.md, "Deployment").
//!
//! [`ClientHost::handle`] is the handler given to [`fedpace_net::Node::serve`]. For each
//! instruction it decodes the payload ([`codec::decode_train_ins`] /
//! [`codec::decode_eval_ins`]; an undecodable one is a `bad_instruction` failure), makes
//! the client from the factory, runs it against the client's [`LocalState`], and encodes
//! the reply. Exactly as in the simulation grid, the state a client leaves behind is kept
//! only when it succeeds; on an error or a panic the state from before the instruction is
//! kept, so no work is half-applied. States live in memory, or in a directory (one file
//! per client, written atomically) so that a client keeps them across restarts.
//!
//! An exchange instruction (one step of secure aggregation, [`Client::exchange`]) runs the
//! same way with the client's [`Session`]: what it keeps between the steps of one round
//! (its secret keys). Sessions live in memory only, are never written with the state, and
//! are dropped when the client next trains, as in the simulation grid.

use bytes::Bytes;
use fedpace_core::{
    codec, Client, ClientFactory, ClientFailure, ClientId, LocalState, Registry, Session,
};
use fedpace_net::{Failure, FailureKind, Instruction, Kind};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where a host keeps its clients' states between instructions.
enum States {
    Memory(Mutex<HashMap<ClientId, LocalState>>),
    Dir(StateDir),
}

/// Client states on disk: `DIR/client-<id>.state`, each a [`codec::encode_local_state`]
/// frame, replaced atomically (written beside, then renamed).
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    registry: Registry,
}

impl StateDir {
    /// States under `dir` (created if missing), decoded with `registry`.
    pub fn new(dir: &Path, registry: Registry) -> Result<StateDir, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("state directory {}: {e}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            registry,
        })
    }

    fn path(&self, id: ClientId) -> PathBuf {
        self.dir.join(format!("client-{id}.state"))
    }

    /// Client `id`'s state: a fresh default when it has no file yet.
    pub fn load(&self, id: ClientId) -> Result<LocalState, String> {
        let p = self.path(id);
        match std::fs::read(&p) {
            Ok(b) => codec::decode_local_state(&b, &self.registry)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Replaces client `id`'s state (a default state removes the file).
    pub fn store(&self, id: ClientId, state: &LocalState) -> Result<(), String> {
        let p = self.path(id);
        if *state == LocalState::default() {
            return match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("{}: {e}", p.display()))
                }
                _ => Ok(()),
            };
        }
        let bytes = codec::encode_local_state(state).map_err(|e| format!("client {id}: {e}"))?;
        let tmp = self.dir.join(format!("client-{id}.state.tmp"));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// Runs the clients of one node (see the module doc).
pub struct ClientHost {
    factory: ClientFactory,
    registry: Registry,
    states: States,
    sessions: Mutex<HashMap<ClientId, Session>>,
}

impl ClientHost {
    /// A host making clients with `factory`, decoding payloads with `registry`, keeping
    /// states in memory.
    pub fn new(factory: ClientFactory, registry: Registry) -> ClientHost {
        ClientHost {
            factory,
            registry,
            states: States::Memory(Mutex::new(HashMap::new())),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps the states in `dir` instead (they survive a restart of the process).
    pub fn with_state_dir(mut self, dir: StateDir) -> ClientHost {
        self.states = States::Dir(dir);
        self
    }

    /// Client `id`'s current state (a clone).
    pub fn state_of(&self, id: ClientId) -> Result<LocalState, String> {
        self.take(id)
    }

    fn take(&self, id: ClientId) -> Result<LocalState, String> {
        match &self.states {
            States::Memory(m) => Ok(lock(m).get(&id).cloned().unwrap_or_default()),
            States::Dir(d) => d.load(id),
        }
    }

    fn put(&self, id: ClientId, state: LocalState) -> Result<(), String> {
        match &self.states {
            States::Memory(m) => {
                let mut m = lock(m);
                if state == LocalState::default() {
                    m.remove(&id);
                } else {
                    m.insert(id, state);
                }
                Ok(())
            }
            States::Dir(d) => d.store(id, &state),
        }
    }

    /// Answers one instruction: the encoded reply, or why there is none.
    pub fn handle(&self, ins: &Instruction) -> Result<Bytes, Failure> {
        let bad = |e: fedpace_core::Error| Failure::new(FailureKind::BadInstruction, e.to_string());
        let encoded = match ins.kind {
            Kind::Train => {
                let t = codec::decode_train_ins(&ins.payload, &self.registry).map_err(bad)?;
                // A new round: what the client kept from the last round's protocol goes.
                lock(&self.sessions).remove(&ins.client);
                let res = self.run(ins.client, |c, s| c.train(&t, s))?;
                codec::encode_train_res(&res)
            }
            Kind::Evaluate => {
                let e = codec::decode_eval_ins(&ins.payload, &self.registry).map_err(bad)?;
                let res = self.run(ins.client, |c, s| c.evaluate(&e, s))?;
                Ok(codec::encode_eval_res(&res))
            }
            Kind::Exchange => {
                let x = codec::decode_exchange_ins(&ins.payload, &self.registry).map_err(bad)?;
                let mut session = lock(&self.sessions).remove(&ins.client).unwrap_or_default();
                let res = self.run(ins.client, |c, s| c.exchange(&x, s, &mut session));
                // Kept after an error too (the simulation grid's rule); a panic drops it.
                if !session.is_empty()
                    && !matches!(&res, Err(f) if f.reason.starts_with("panicked"))
                {
                    lock(&self.sessions).insert(ins.client, session);
                }
                codec::encode_exchange_res(&res?)
            }
        };
        encoded
            .map(Bytes::from)
            .map_err(|e| client_failure(&ClientFailure::Error(format!("encoding the reply: {e}"))))
    }

    /// Runs `job` on client `id` with its state; keeps the new state only on success.
    fn run<O>(
        &self,
        id: ClientId,
        job: impl FnOnce(&mut dyn Client, &mut LocalState) -> fedpace_core::Result<O>,
    ) -> Result<O, Failure> {
        let state = self
            .take(id)
            .map_err(|e| client_failure(&ClientFailure::Error(e)))?;
        let mut local = state.clone();
        let out = catch_unwind(AssertUnwindSafe(|| {
            let mut client = (self.factory)(id)?;
            job(client.as_mut(), &mut local)
        }));
        match out {
            Ok(Ok(o)) => {
                self.put(id, local)
                    .map_err(|e| client_failure(&ClientFailure::Error(e)))?;
                Ok(o)
            }
            Ok(Err(e)) => Err(client_failure(&ClientFailure::Error(e.to_string()))),
            Err(p) => Err(client_failure(&ClientFailure::Panicked(panic_message(&*p)))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// A client's failure as it travels: kind `client`, the reason `error: …` or
/// `panicked: …` ([`ClientFailure`]'s display), which [`from_wire`] reads back.
pub(crate) fn client_failure(f: &ClientFailure) -> Failure {
    Failure::new(FailureKind::Client, f.to_string())
}

/// The [`ClientFailure`] a transport failure becomes: a client's own error or panic as
/// it was, a reply the server refused as a bad report, anything the server decided
/// (deadline, gone, not connected, declined) as an error naming it.
pub(crate) fn from_wire(f: &Failure) -> ClientFailure {
    match f.kind {
        FailureKind::Client => {
            if let Some(m) = f.reason.strip_prefix("panicked: ") {
                ClientFailure::Panicked(m.to_string())
            } else if let Some(m) = f.reason.strip_prefix("error: ") {
                ClientFailure::Error(m.to_string())
            } else {
                ClientFailure::Error(f.reason.clone())
            }
        }
        FailureKind::Rejected => ClientFailure::BadReport(format!("rejected: {}", f.reason)),
        _ => ClientFailure::Error(f.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_failures_cross_the_wire_unchanged() {
        for f in [
            ClientFailure::Error("disk full".into()),
            ClientFailure::Panicked("index out of bounds".into()),
        ] {
            assert_eq!(from_wire(&client_failure(&f)), f);
        }
        let late = Failure::new(FailureKind::Deadline, "no reply within 5 s");
        assert_eq!(
            from_wire(&late),
            ClientFailure::Error("deadline: no reply within 5 s".into())
        );
        let big = Failure::new(FailureKind::Rejected, "Reply.payload: 9 bytes: at most 8");
        assert_eq!(from_wire(&big).kind(), "bad report");
    }

    #[test]
    fn state_dir_round_trips_and_forgets_defaults() {
        let dir =
            std::env::temp_dir().join(format!("fedpace-deploy-states-{}", std::process::id()));
        let d = StateDir::new(&dir, Registry::new()).unwrap();
        assert_eq!(d.load(7).unwrap(), LocalState::default());
        let s = LocalState {
            rounds_trained: 3,
            steps_done: 40,
            ..Default::default()
        };
        d.store(7, &s).unwrap();
        assert_eq!(d.load(7).unwrap(), s);
        d.store(7, &LocalState::default()).unwrap();
        assert!(!dir.join("client-7.state").exists());
        std::fs::write(dir.join("client-8.state"), b"junk").unwrap();
        let e = d.load(8).unwrap_err();
        assert!(e.contains("client-8.state") && e.contains("frame"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
