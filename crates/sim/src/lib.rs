//! The in-memory simulation [`Grid`]: sampled clients train in parallel on a thread
//! pool; clients are created on demand from a factory; each client's [`LocalState`]
//! is kept in a store between rounds; a failing or panicking client becomes a reported
//! failure, not a crash.
//!
//! Determinism: every client computes from its own inputs and its own random streams,
//! and replies are returned in client-id order, so the thread count changes nothing.
//! Each client's model call should itself be single-threaded (the models do this).

pub mod asynchronous;
pub mod central;
pub mod clock;
pub mod devices;

pub use asynchronous::{run_async, run_async_from, AsyncOptions, SimulatedArrivals};
pub use central::HeldOut;
pub use devices::{
    DeviceProfile, Devices, DevicesConfig, Distribution, EpochRange, LatePolicy, Systems,
};

use fedpace_core::protocol::validate_train_res;
use fedpace_core::{
    ClientFactory, ClientFailure, ClientId, ClientPool, EvalIns, EvalRes, ExchangeIns, Extensions,
    Grid, LocalState, Progress, Reply, Session, TrainIns, TrainRes,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

pub mod pool;
pub mod spill;
pub mod testing;
pub use pool::{DataPool, DeviceClasses};
pub use spill::SpillStore;

/// Where clients' local states live between rounds.
pub trait StateStore: Send {
    /// Takes client `id`'s state out (a fresh default if it has none). Errors (a
    /// database's I/O) are messages naming the store.
    fn take(&mut self, id: ClientId) -> Result<LocalState, String>;
    /// Puts client `id`'s state back.
    fn put(&mut self, id: ClientId, state: LocalState) -> Result<(), String>;
    /// Number of clients with stored state.
    fn len(&self) -> usize;
    /// One line about where the states are (for benchmarks and logs).
    fn describe(&self) -> String {
        format!("{} stored", self.len())
    }
    /// Whether no client has stored state.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Takes the states of `ids` out, in order (one round's sampled clients; a store
    /// backed by a database reads them in one transaction).
    fn take_many(&mut self, ids: &[ClientId]) -> Result<Vec<LocalState>, String> {
        ids.iter().map(|&id| self.take(id)).collect()
    }
    /// Puts several states back (one transaction for a database-backed store).
    fn put_many(&mut self, states: Vec<(ClientId, LocalState)>) -> Result<(), String> {
        for (id, s) in states {
            self.put(id, s)?;
        }
        Ok(())
    }
    /// Calls `visit` with every stored state (for a checkpoint), the store unchanged.
    fn for_each(
        &mut self,
        visit: &mut dyn FnMut(ClientId, &LocalState) -> Result<(), String>,
    ) -> Result<(), String>;
}

/// Keeps every state in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: HashMap<ClientId, LocalState>,
}

impl StateStore for MemoryStore {
    fn take(&mut self, id: ClientId) -> Result<LocalState, String> {
        Ok(self.states.remove(&id).unwrap_or_default())
    }
    fn put(&mut self, id: ClientId, state: LocalState) -> Result<(), String> {
        if state != LocalState::default() {
            self.states.insert(id, state);
        }
        Ok(())
    }
    fn len(&self) -> usize {
        self.states.len()
    }
    fn describe(&self) -> String {
        format!("{} in memory (no budget)", self.states.len())
    }
    fn for_each(
        &mut self,
        visit: &mut dyn FnMut(ClientId, &LocalState) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut ids: Vec<ClientId> = self.states.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            visit(id, &self.states[&id])?;
        }
        Ok(())
    }
}

/// The in-memory grid.
pub struct SimGrid {
    clients: Arc<dyn ClientPool>,
    factory: ClientFactory,
    store: Box<dyn StateStore>,
    pool: rayon::ThreadPool,
    /// What clients keep between the protocol steps of a round ([`Grid::exchange`]);
    /// dropped when the next round's training starts.
    sessions: HashMap<ClientId, Session>,
}

impl SimGrid {
    /// A grid over the pool `clients` (a [`DataPool`], or rows in a `Vec<ClientInfo>`)
    /// made by `factory`, running `threads` clients at once (0 = one per core).
    pub fn new(
        clients: impl ClientPool + 'static,
        factory: ClientFactory,
        threads: usize,
    ) -> fedpace_core::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fedpace-client-{i}"))
            .build()
            .map_err(|e| fedpace_core::Error::Backend(format!("thread pool: {e}")))?;
        Ok(Self {
            clients: Arc::new(clients),
            factory,
            store: Box::new(MemoryStore::default()),
            pool,
            sessions: HashMap::new(),
        })
    }

    /// Replaces the state store.
    pub fn with_store(mut self, store: Box<dyn StateStore>) -> Self {
        self.store = store;
        self
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The state store's own description (e.g. how many states are on disk).
    pub fn store_stats(&self) -> String {
        self.store.describe()
    }

    /// Client `id`'s stored state (a clone), for inspection.
    pub fn state_of(&mut self, id: ClientId) -> Result<LocalState, String> {
        let s = self.store.take(id)?;
        self.store.put(id, s.clone())?;
        Ok(s)
    }

    /// Puts saved client states into the store (a checkpoint's, before resuming).
    pub fn restore_states(&mut self, states: Vec<(ClientId, LocalState)>) -> Result<(), String> {
        self.store.put_many(states)
    }

    fn run_all<I, O>(
        &mut self,
        ins: Vec<(ClientId, I)>,
        progress: &dyn Progress,
        job: impl Fn(
                &mut dyn fedpace_core::Client,
                &I,
                &mut LocalState,
                &mut Session,
            ) -> fedpace_core::Result<O>
            + Sync,
    ) -> Vec<Reply<O>>
    where
        I: Send + Sync,
        O: Send,
    {
        let ids: Vec<ClientId> = ins.iter().map(|(id, _)| *id).collect();
        let mut sessions: Vec<Session> = ids
            .iter()
            .map(|id| self.sessions.remove(id).unwrap_or_default())
            .collect();
        let states = match self.store.take_many(&ids) {
            Ok(s) => s,
            // No client can train without its state: the round fails as a whole.
            Err(e) => {
                let mut ids = ids;
                ids.sort_unstable();
                return ids
                    .into_iter()
                    .map(|client| Reply {
                        client,
                        result: Err(ClientFailure::Error(e.clone())),
                    })
                    .collect();
            }
        };
        let mut work: Vec<(ClientId, I, LocalState, Session)> = ins
            .into_iter()
            .zip(states)
            .zip(sessions.drain(..))
            .map(|(((id, i), s), session)| (id, i, s, session))
            .collect();
        work.sort_by_key(|w| w.0);
        let factory = &self.factory;
        type Done<O> = (ClientId, Result<O, ClientFailure>, LocalState, Session);
        let done: Vec<Done<O>> = self.pool.install(|| {
            // One client per piece of work (`with_max_len(1)`): an idle thread can steal
            // any client not yet started, so a round ends at most one client after the
            // last thread has run out of work. Rayon's default cuts the clients into
            // runs of about a quarter of the round (on two threads) and cuts only runs
            // that get stolen, so a thread that finishes early can wait while the other
            // works through a run it cannot take. Each client's result lands at its
            // own index whatever thread ran it, so the order of `done` is unchanged.
            work.into_par_iter()
                .with_max_len(1)
                .map(|(id, i, state, mut session)| {
                    let mut local = state.clone();
                    let out = catch_unwind(AssertUnwindSafe(|| {
                        let mut client = factory(id)?;
                        job(client.as_mut(), &i, &mut local, &mut session)
                    }));
                    progress.client_done();
                    match out {
                        Ok(Ok(o)) => (id, Ok(o), local, session),
                        // On failure the state from before the round is kept: no lost work.
                        Ok(Err(e)) => {
                            (id, Err(ClientFailure::Error(e.to_string())), state, session)
                        }
                        Err(p) => (
                            id,
                            Err(ClientFailure::Panicked(panic_message(&p))),
                            state,
                            Session::default(),
                        ),
                    }
                })
                .collect()
        });
        let mut states = Vec::with_capacity(done.len());
        let mut replies: Vec<Reply<O>> = done
            .into_iter()
            .map(|(id, result, state, session)| {
                states.push((id, state));
                if !session.is_empty() {
                    self.sessions.insert(id, session);
                }
                Reply { client: id, result }
            })
            .collect();
        if let Err(e) = self.store.put_many(states) {
            // States that could not be kept make the round's work unusable.
            for r in &mut replies {
                r.result = Err(ClientFailure::Error(e.clone()));
            }
        }
        replies
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl Grid for SimGrid {
    fn pool(&self) -> Arc<dyn ClientPool> {
        self.clients.clone()
    }

    fn train(
        &mut self,
        ins: Vec<(ClientId, TrainIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<TrainRes>> {
        let spec = ins.first().map(|i| i.1.params.spec().clone());
        // A new round: what clients kept from the last round's protocol is dropped.
        self.sessions.clear();
        // Each reply is checked on the thread that trained the client (a pass over its
        // whole update, which would otherwise run on one thread while the others wait);
        // a reply that fails the check becomes that failure, as before, and the
        // client's state is kept as trained.
        let checked = self.run_all(ins, progress, |c, i, s, _| {
            let res = c.train(i, s)?;
            let verdict = match &spec {
                Some(spec) => validate_train_res(&res, spec),
                None => Ok(()),
            };
            Ok((res, verdict))
        });
        checked
            .into_iter()
            .map(|r| Reply {
                client: r.client,
                result: r.result.and_then(|(res, verdict)| verdict.map(|()| res)),
            })
            .collect()
    }

    fn evaluate(
        &mut self,
        ins: Vec<(ClientId, EvalIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<EvalRes>> {
        self.run_all(ins, progress, |c, i, s, _| c.evaluate(i, s))
    }

    fn exchange(
        &mut self,
        ins: Vec<(ClientId, ExchangeIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<Extensions>> {
        self.run_all(ins, progress, |c, i, s, session| c.exchange(i, s, session))
    }

    fn visit_states(
        &mut self,
        visit: &mut dyn FnMut(ClientId, &LocalState) -> fedpace_core::Result<()>,
    ) -> fedpace_core::Result<()> {
        // The visitor's own error is kept whole; the store's are messages.
        let mut failed = None;
        let r = self.store.for_each(&mut |id, s| {
            visit(id, s).map_err(|e| {
                let m = e.to_string();
                failed = Some(e);
                m
            })
        });
        match (r, failed) {
            (_, Some(e)) => Err(e),
            (Err(m), None) => Err(fedpace_core::Error::Backend(m)),
            (Ok(()), None) => Ok(()),
        }
    }
}
