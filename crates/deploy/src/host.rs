//! The node side: runs the clients a node hosts (docs/network.md, "Deployment").
//!
//! [`ClientHost::handle`] is the handler given to [`fedpace_net::Node::serve`]. For each
//! instruction it decodes the payload ([`codec::decode_train_ins`] /
//! [`codec::decode_eval_ins`]; an undecodable one is a `bad_instruction` failure), makes
//! the client from the factory, runs it against the client's [`LocalState`], and encodes
//! the reply. Exactly as in the simulation grid, the state a client leaves behind is kept
//! only when it succeeds; on an error or a panic the state from before the instruction is
//! kept, so no work is half-applied. A client keeps one state per round it trained in,
//! back to the server's last checkpoint, and each instruction names the state it starts
//! from ([`Instruction::state_round`], [`Instruction::durable_round`]): a server restarted
//! from a checkpoint sends earlier rounds again and they see the states they saw the first
//! time (docs/checkpoints.md, "Over the network"). States live in memory, or in a
//! directory (one file per client and round, written atomically) so that a client keeps
//! them across restarts of its node too.
//!
//! Instructions whose payload is the same buffer — a model the node received once and its
//! other clients named (docs/network.md, "One model per node") — are decoded once: the
//! host keeps the latest decoded train and evaluate instruction with the buffer it came
//! from, and its clients share the decoded model as the simulation's clients share theirs.
//!
//! An exchange instruction (one step of secure aggregation, [`Client::exchange`]) runs the
//! same way with the client's [`Session`]: what it keeps between the steps of one round
//! (its secret keys). Sessions live in memory only, are never written with the state, and
//! are dropped when the client next trains, as in the simulation grid.

use bytes::Bytes;
use fedpace_core::{
    codec, Client, ClientFactory, ClientFailure, ClientId, EvalIns, LocalState, Registry, Session,
    TrainIns,
};
use fedpace_net::{Failure, FailureKind, Instruction, Kind};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a host keeps its clients' states between instructions: per client, one state
/// per round it trained in (docs/checkpoints.md, "Over the network").
enum States {
    Memory(Mutex<HashMap<ClientId, BTreeMap<u64, LocalState>>>),
    Dir(StateDir),
}

/// Client states on disk: `DIR/client-<id>/<round>.state`, each a
/// [`codec::encode_local_state`] frame, replaced atomically (written beside, then
/// renamed). A client keeps the state each training round left, so that a server
/// restarted from an earlier checkpoint finds the state of that round; states the
/// server can no longer go back to are removed. `DIR/client-<id>.state` (one state, as
/// written before states were kept per round) reads as round 0.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    registry: Registry,
}

static TMP: AtomicU64 = AtomicU64::new(0);

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

    fn legacy(&self, id: ClientId) -> PathBuf {
        self.dir.join(format!("client-{id}.state"))
    }

    fn client_dir(&self, id: ClientId) -> PathBuf {
        self.dir.join(format!("client-{id}"))
    }

    fn path(&self, id: ClientId, round: u64) -> PathBuf {
        if round == 0 && self.legacy(id).exists() {
            return self.legacy(id);
        }
        self.client_dir(id).join(format!("{round}.state"))
    }

    /// The rounds client `id` has a state of, ascending.
    pub fn rounds(&self, id: ClientId) -> Result<Vec<u64>, String> {
        let dir = self.client_dir(id);
        let mut out = Vec::new();
        if self.legacy(id).exists() {
            out.push(0);
        }
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if let Some(r) = name.strip_suffix(".state").and_then(|r| r.parse().ok()) {
                        out.push(r);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Client `id`'s state of `round` (a fresh default when there is none).
    pub fn load_round(&self, id: ClientId, round: u64) -> Result<LocalState, String> {
        let p = self.path(id, round);
        match std::fs::read(&p) {
            Ok(b) => codec::decode_local_state(&b, &self.registry)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Client `id`'s newest state: a fresh default when it has none yet.
    pub fn load(&self, id: ClientId) -> Result<LocalState, String> {
        match self.rounds(id)?.last() {
            Some(&r) => self.load_round(id, r),
            None => Ok(LocalState::default()),
        }
    }

    /// Writes client `id`'s state of `round` (atomically).
    pub fn store_round(&self, id: ClientId, round: u64, state: &LocalState) -> Result<(), String> {
        let dir = self.client_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = dir.join(format!("{round}.state"));
        let bytes = codec::encode_local_state(state).map_err(|e| format!("client {id}: {e}"))?;
        // Two runs of one client may overlap (an instruction delivered again after a
        // server restart): each writes its own temporary file.
        let n = TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{round}.{}.{n}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if round == 0 {
            self.remove_round(id, u64::MAX)?; // the legacy file, now shadowed
        }
        Ok(())
    }

    /// Replaces client `id`'s newest state (round 0 when it has none).
    pub fn store(&self, id: ClientId, state: &LocalState) -> Result<(), String> {
        let round = self.rounds(id)?.last().copied().unwrap_or(0);
        self.store_round(id, round, state)
    }

    /// Removes client `id`'s state of `round` (`u64::MAX`: the legacy single file only).
    fn remove_round(&self, id: ClientId, round: u64) -> Result<(), String> {
        let mut paths = Vec::new();
        if round == 0 || round == u64::MAX {
            paths.push(self.legacy(id));
        }
        if round != u64::MAX {
            paths.push(self.client_dir(id).join(format!("{round}.state")));
        }
        for p in paths {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: {e}", p.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Which kept state an instruction starts from: the newest of a round before `before`
/// (`None`: the newest).
fn pick(rounds: &[u64], before: Option<u64>) -> Option<u64> {
    match before {
        Some(b) => rounds.iter().rev().find(|&&r| r < b).copied(),
        None => rounds.last().copied(),
    }
}

/// Rounds that may be forgotten once the server cannot restart before `durable`: all
/// older than the newest round at or before it.
fn forgettable(rounds: &[u64], durable: u64) -> Vec<u64> {
    match rounds.iter().rev().find(|&&r| r <= durable) {
        Some(&base) => rounds.iter().copied().filter(|&r| r < base).collect(),
        None => Vec::new(),
    }
}

/// Runs the clients of one node (see the module doc).
pub struct ClientHost {
    factory: ClientFactory,
    registry: Registry,
    states: States,
    sessions: Mutex<HashMap<ClientId, Session>>,
    /// The latest decoded instructions, with the payload they came from.
    decoded: Mutex<Decoded>,
}

/// One decoding of a shared payload: the first worker to need it decodes, the others
/// wait for that result instead of decoding the same bytes again.
type Once<T> = Arc<OnceLock<Result<T, String>>>;

/// A payload buffer and its (one) decoding.
type Slot<T> = Option<(Bytes, Once<T>)>;

#[derive(Default)]
struct Decoded {
    train: Slot<TrainIns>,
    eval: Slot<EvalIns>,
}

/// Whether `b` is the buffer `a` holds (a held buffer cannot be reused, so the same
/// address means the same bytes).
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The instruction decoded from `payload`, decoded once per buffer: `slot` keeps the
/// latest buffer's decoding, which workers handed the same buffer share (at a round's
/// start both take their first instruction at once; the second waits for the first's
/// decoding rather than doing it again). Decoding itself runs outside the lock, so
/// workers decoding different payloads do not wait on each other.
fn decode_shared<T: Clone>(
    decoded: &Mutex<Decoded>,
    slot: fn(&mut Decoded) -> &mut Slot<T>,
    payload: &Bytes,
    decode: impl FnOnce(&[u8]) -> fedpace_core::Result<T>,
) -> Result<T, String> {
    // The decoding replaced is dropped only after the new one is made (so the two
    // never share an address).
    let (once, _replaced) = {
        let mut d = lock(decoded);
        match slot(&mut d) {
            Some((b, once)) if same_buffer(b, payload) => (once.clone(), None),
            s => {
                let once = Once::default();
                (once.clone(), s.replace((payload.clone(), once)))
            }
        }
    };
    once.get_or_init(|| decode(payload).map_err(|e| e.to_string()))
        .clone()
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
            decoded: Mutex::new(Decoded::default()),
        }
    }

    /// Keeps the states in `dir` instead (they survive a restart of the process).
    pub fn with_state_dir(mut self, dir: StateDir) -> ClientHost {
        self.states = States::Dir(dir);
        self
    }

    /// Client `id`'s current (newest) state (a clone).
    pub fn state_of(&self, id: ClientId) -> Result<LocalState, String> {
        Ok(self.take(id, None)?.1)
    }

    /// The rounds client `id` keeps a state of, ascending.
    pub fn state_rounds(&self, id: ClientId) -> Result<Vec<u64>, String> {
        match &self.states {
            States::Memory(m) => Ok(lock(m)
                .get(&id)
                .map(|h| h.keys().copied().collect())
                .unwrap_or_default()),
            States::Dir(d) => d.rounds(id),
        }
    }

    /// The state to start from (see [`pick`]) and its round.
    fn take(&self, id: ClientId, before: Option<u64>) -> Result<(Option<u64>, LocalState), String> {
        match &self.states {
            States::Memory(m) => {
                let m = lock(m);
                let Some(h) = m.get(&id) else {
                    return Ok((None, LocalState::default()));
                };
                let rounds: Vec<u64> = h.keys().copied().collect();
                let r = pick(&rounds, before);
                Ok((r, r.and_then(|r| h.get(&r).cloned()).unwrap_or_default()))
            }
            States::Dir(d) => {
                let r = pick(&d.rounds(id)?, before);
                Ok((
                    r,
                    r.map(|r| d.load_round(id, r))
                        .transpose()?
                        .unwrap_or_default(),
                ))
            }
        }
    }

    /// Keeps `state` as client `id`'s state of `round`, then forgets the states the
    /// server can no longer go back to (`durable`).
    fn put(&self, id: ClientId, round: u64, state: LocalState, durable: u64) -> Result<(), String> {
        match &self.states {
            States::Memory(m) => {
                let mut m = lock(m);
                let h = m.entry(id).or_default();
                h.insert(round, state);
                let rounds: Vec<u64> = h.keys().copied().collect();
                for r in forgettable(&rounds, durable) {
                    h.remove(&r);
                }
                Ok(())
            }
            States::Dir(d) => {
                d.store_round(id, round, &state)?;
                for r in forgettable(&d.rounds(id)?, durable) {
                    d.remove_round(id, r)?;
                }
                Ok(())
            }
        }
    }

    /// Answers one instruction: the encoded reply, or why there is none.
    ///
    /// Training starts from the client's newest state of a round before the
    /// instruction's `state_round` (its round when unset) and keeps the result as the
    /// state of its round; evaluation reads the newest state before `state_round` (the
    /// newest when unset). So an instruction sent again after a server restarted from
    /// a checkpoint sees exactly the state it saw the first time.
    pub fn handle(&self, ins: &Instruction) -> Result<Bytes, Failure> {
        let bad = |e: String| Failure::new(FailureKind::BadInstruction, e);
        let set = (ins.state_round > 0).then_some(ins.state_round);
        let encoded = match ins.kind {
            Kind::Train => {
                let t = decode_shared(
                    &self.decoded,
                    |d| &mut d.train,
                    &ins.payload,
                    |b| codec::decode_train_ins(b, &self.registry),
                )
                .map_err(bad)?;
                // A new round: what the client kept from the last round's protocol goes.
                lock(&self.sessions).remove(&ins.client);
                let before = set.unwrap_or(ins.round);
                let res = self.run(ins, Some(before), ins.round, |c, s| c.train(&t, s))?;
                codec::encode_train_res(&res)
            }
            Kind::Evaluate => {
                let e = decode_shared(
                    &self.decoded,
                    |d| &mut d.eval,
                    &ins.payload,
                    |b| codec::decode_eval_ins(b, &self.registry),
                )
                .map_err(bad)?;
                let res = self.run(ins, set, u64::MAX, |c, s| c.evaluate(&e, s))?;
                Ok(codec::encode_eval_res(&res))
            }
            Kind::Exchange => {
                let x = codec::decode_exchange_ins(&ins.payload, &self.registry)
                    .map_err(|e| bad(e.to_string()))?;
                let mut session = lock(&self.sessions).remove(&ins.client).unwrap_or_default();
                // One step of round `ins.round`'s protocol: it reads (and keeps) the state that
                // round's training left.
                let res = self.run(ins, Some(ins.round.saturating_add(1)), u64::MAX, |c, s| {
                    c.exchange(&x, s, &mut session)
                });
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

    /// Runs `job` on the instruction's client with the state picked by `before`; keeps
    /// the new state only on success, as the state of round `keep_as` (`u64::MAX`: of
    /// the round it was read from) when it changed.
    fn run<O>(
        &self,
        ins: &Instruction,
        before: Option<u64>,
        keep_as: u64,
        job: impl FnOnce(&mut dyn Client, &mut LocalState) -> fedpace_core::Result<O>,
    ) -> Result<O, Failure> {
        let id = ins.client;
        let (from, state) = self
            .take(id, before)
            .map_err(|e| client_failure(&ClientFailure::Error(e)))?;
        let mut local = state.clone();
        let out = catch_unwind(AssertUnwindSafe(|| {
            let mut client = (self.factory)(id)?;
            job(client.as_mut(), &mut local)
        }));
        match out {
            Ok(Ok(o)) => {
                if local != state {
                    let round = if keep_as == u64::MAX {
                        from.unwrap_or(0)
                    } else {
                        keep_as
                    };
                    self.put(id, round, local, ins.durable_round)
                        .map_err(|e| client_failure(&ClientFailure::Error(e)))?;
                }
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
    use std::sync::Arc;

    /// A client that fails, naming the address of the model it was given.
    struct Pointer;

    impl Client for Pointer {
        fn train(
            &mut self,
            ins: &TrainIns,
            _: &mut LocalState,
        ) -> fedpace_core::Result<fedpace_core::TrainRes> {
            Err(fedpace_core::Error::Backend(format!(
                "{:p}",
                Arc::as_ptr(&ins.params)
            )))
        }
        fn evaluate(
            &mut self,
            ins: &EvalIns,
            _: &mut LocalState,
        ) -> fedpace_core::Result<fedpace_core::EvalRes> {
            Err(fedpace_core::Error::Backend(format!(
                "{:p}",
                Arc::as_ptr(&ins.params)
            )))
        }
    }

    #[test]
    fn a_payload_buffer_named_by_several_clients_is_decoded_once() {
        use fedpace_params::{ParamSpec, ParamTree};
        let spec = Arc::new(ParamSpec::builder().add("w", &[3], "body").build().unwrap());
        let model = Arc::new(ParamTree::from_vec(spec, vec![0.5, -1.0, 2.0]).unwrap());
        let ins = TrainIns::new(2, model, fedpace_core::testing::plan(), 7);
        let bytes = Bytes::from(codec::encode_train_ins(&ins).unwrap());
        let copy = Bytes::from(bytes.to_vec());
        let host = ClientHost::new(
            Arc::new(|_| Ok(Box::new(Pointer) as Box<dyn Client>)),
            Registry::new(),
        );
        let run = |client: ClientId, payload: &Bytes| {
            host.handle(&Instruction {
                id: client,
                client,
                round: 2,
                kind: Kind::Train,
                deadline: std::time::SystemTime::now() + std::time::Duration::from_secs(60),
                payload: payload.clone(),
                state_round: 0,
                durable_round: 0,
            })
            .unwrap_err()
            .reason
        };
        // Clients 1 and 2 got the node's one buffer: one decoded model, shared.
        let (a, b) = (run(1, &bytes), run(2, &bytes.clone()));
        assert_eq!(a, b);
        // The same bytes in another buffer are decoded on their own.
        let c = run(3, &copy);
        assert_ne!(a, c);
        // And a new buffer replaces the kept one.
        let d = run(4, &bytes);
        assert_ne!(d, c);
        // Workers handed a new buffer at the same moment share one decoding too.
        let fresh = Bytes::from(bytes.to_vec());
        let start = std::sync::Barrier::new(4);
        let seen: Vec<String> = std::thread::scope(|s| {
            let all: Vec<_> = (0..4)
                .map(|i| {
                    let (run, start, fresh) = (&run, &start, &fresh);
                    s.spawn(move || {
                        start.wait();
                        run(10 + i, fresh)
                    })
                })
                .collect();
            all.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.iter().all(|r| *r == seen[0]), "{seen:?}");
        assert_ne!(seen[0], d);
    }

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
    fn state_dir_keeps_states_per_round() {
        let dir =
            std::env::temp_dir().join(format!("fedpace-deploy-states-{}", std::process::id()));
        let d = StateDir::new(&dir, Registry::new()).unwrap();
        assert_eq!(d.load(7).unwrap(), LocalState::default());
        let s = |n| LocalState {
            rounds_trained: n,
            steps_done: 40,
            ..Default::default()
        };
        d.store_round(7, 3, &s(3)).unwrap();
        d.store_round(7, 5, &s(5)).unwrap();
        assert_eq!(d.rounds(7).unwrap(), [3, 5]);
        assert_eq!(d.load(7).unwrap(), s(5));
        assert_eq!(d.load_round(7, 3).unwrap(), s(3));
        assert!(dir.join("client-7/5.state").exists());
        // A state written before states were kept per round reads as round 0.
        std::fs::write(
            dir.join("client-8.state"),
            codec::encode_local_state(&s(1)).unwrap(),
        )
        .unwrap();
        assert_eq!(d.rounds(8).unwrap(), [0]);
        assert_eq!(d.load(8).unwrap(), s(1));
        std::fs::write(dir.join("client-9.state"), b"junk").unwrap();
        let e = d.load(9).unwrap_err();
        assert!(e.contains("client-9.state") && e.contains("frame"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_state_picked_is_the_newest_before_and_old_ones_go_once_durable() {
        let rounds = [2, 4, 7, 9];
        assert_eq!(pick(&rounds, Some(7)), Some(4));
        assert_eq!(pick(&rounds, Some(8)), Some(7));
        assert_eq!(pick(&rounds, Some(2)), None);
        assert_eq!(pick(&rounds, None), Some(9));
        // A server that can restart from round 5 needs round 4's state and the later ones.
        assert_eq!(forgettable(&rounds, 5), [2]);
        assert_eq!(forgettable(&rounds, 1), Vec::<u64>::new());
        assert_eq!(forgettable(&rounds, 9), [2, 4, 7]);
    }
}
