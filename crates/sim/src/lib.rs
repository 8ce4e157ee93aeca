//! The in-memory simulation [`Grid`]: sampled clients train in parallel on a thread
//! pool; clients are created on demand from a factory; each client's [`LocalState`]
//! is kept in a store between rounds; a failing or panicking client becomes a reported
//! failure, not a crash.
//!
//! Determinism: every client computes from its own inputs and its own random streams,
//! and replies are returned in client-id order, so the thread count changes nothing.
//! Each client's model call should itself be single-threaded (the models do this).

pub mod asynchronous;
pub mod clock;
pub mod devices;

pub use asynchronous::{run_async, AsyncOptions};
pub use devices::{
    DeviceProfile, Devices, DevicesConfig, Distribution, EpochRange, LatePolicy, Systems,
};

use fedpace_core::protocol::validate_train_res;
use fedpace_core::{
    ClientFactory, ClientFailure, ClientId, ClientPool, Dataset, EvalIns, EvalRes, EvalStats, Grid,
    LocalState, ModelFactory, Progress, Reply, TrainIns, TrainRes,
};
use fedpace_params::ParamTree;
use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

pub mod pool;
pub mod spill;
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
}

/// The in-memory grid.
pub struct SimGrid {
    clients: Arc<dyn ClientPool>,
    factory: ClientFactory,
    store: Box<dyn StateStore>,
    pool: rayon::ThreadPool,
    central: Option<(Arc<dyn Dataset>, ModelFactory)>,
    central_validation: Option<(Arc<dyn Dataset>, ModelFactory)>,
}

/// Batch size of the central evaluation (does not change results).
const CENTRAL_BATCH: usize = 512;

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
            central: None,
            central_validation: None,
        })
    }

    /// Adds a server-side held-out test set, evaluated with models from `models`.
    pub fn with_central_test(mut self, test: Arc<dyn Dataset>, models: ModelFactory) -> Self {
        self.central = Some((test, models));
        self
    }

    /// Adds a server-side validation set (the validation part of the held-out set),
    /// evaluated with models from `models`.
    pub fn with_central_validation(
        mut self,
        validation: Arc<dyn Dataset>,
        models: ModelFactory,
    ) -> Self {
        self.central_validation = Some((validation, models));
        self
    }

    /// The global model on a server-side set, in parallel chunks. Counts are integers
    /// and loss sums are added in chunk order, so the result does not depend on the
    /// thread count.
    fn evaluate_set(
        &self,
        set: &(Arc<dyn Dataset>, ModelFactory),
        params: &ParamTree,
    ) -> fedpace_core::Result<EvalStats> {
        let (test, models) = set;
        let n = test.len();
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(CENTRAL_BATCH)
            .map(|s| (s, (s + CENTRAL_BATCH).min(n)))
            .collect();
        let parts: Vec<fedpace_core::Result<EvalStats>> = self.pool.install(|| {
            chunks
                .into_par_iter()
                .map(|(a, b)| {
                    let mut m = models()?;
                    let idx: Vec<usize> = (a..b).collect();
                    m.evaluate(params, &test.batch(&idx))
                })
                .collect()
        });
        let mut total = EvalStats::default();
        for p in parts {
            total.merge(&p?);
        }
        Ok(total)
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

    /// Client `id`'s stored state (a clone), for inspection and checkpoints.
    pub fn state_of(&mut self, id: ClientId) -> Result<LocalState, String> {
        let s = self.store.take(id)?;
        self.store.put(id, s.clone())?;
        Ok(s)
    }

    fn run_all<I, O>(
        &mut self,
        ins: Vec<(ClientId, I)>,
        progress: &dyn Progress,
        job: impl Fn(&mut dyn fedpace_core::Client, &I, &mut LocalState) -> fedpace_core::Result<O>
            + Sync,
    ) -> Vec<Reply<O>>
    where
        I: Send + Sync,
        O: Send,
    {
        let ids: Vec<ClientId> = ins.iter().map(|(id, _)| *id).collect();
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
        let mut work: Vec<(ClientId, I, LocalState)> = ins
            .into_iter()
            .zip(states)
            .map(|((id, i), s)| (id, i, s))
            .collect();
        work.sort_by_key(|w| w.0);
        let factory = &self.factory;
        let done: Vec<(ClientId, Result<O, ClientFailure>, LocalState)> = self.pool.install(|| {
            work.into_par_iter()
                .map(|(id, i, state)| {
                    let mut local = state.clone();
                    let out = catch_unwind(AssertUnwindSafe(|| {
                        let mut client = factory(id)?;
                        job(client.as_mut(), &i, &mut local)
                    }));
                    progress.client_done();
                    match out {
                        Ok(Ok(o)) => (id, Ok(o), local),
                        // On failure the state from before the round is kept: no lost work.
                        Ok(Err(e)) => (id, Err(ClientFailure::Error(e.to_string())), state),
                        Err(p) => (id, Err(ClientFailure::Panicked(panic_message(&p))), state),
                    }
                })
                .collect()
        });
        let mut states = Vec::with_capacity(done.len());
        let mut replies: Vec<Reply<O>> = done
            .into_iter()
            .map(|(id, result, state)| {
                states.push((id, state));
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
        let mut replies = self.run_all(ins, progress, |c, i, s| c.train(i, s));
        if let Some(spec) = spec {
            for r in &mut replies {
                if let Ok(res) = &r.result {
                    if let Err(f) = validate_train_res(res, &spec) {
                        r.result = Err(f);
                    }
                }
            }
        }
        replies
    }

    fn evaluate(
        &mut self,
        ins: Vec<(ClientId, EvalIns)>,
        progress: &dyn Progress,
    ) -> Vec<Reply<EvalRes>> {
        self.run_all(ins, progress, |c, i, s| c.evaluate(i, s))
    }

    fn evaluate_central(&mut self, params: &ParamTree) -> Option<fedpace_core::Result<EvalStats>> {
        let set = self.central.as_ref()?;
        Some(self.evaluate_set(set, params))
    }

    fn evaluate_central_validation(
        &mut self,
        params: &ParamTree,
    ) -> Option<fedpace_core::Result<EvalStats>> {
        let set = self.central_validation.as_ref()?;
        Some(self.evaluate_set(set, params))
    }
}
