//! [`SpillStore`]: client states in memory up to a byte budget, the rest in an embedded
//! database ([redb](https://www.redb.org), pure Rust, one file).
//!
//! With a million registered clients and stateful algorithms (optimiser moments kept
//! across rounds, control variates, personal layers), keeping every state in memory
//! grows with the clients that have ever trained. This store keeps the most recently
//! stored states in memory while their estimated size stays within `memory_budget`
//! bytes and writes the oldest ones to disk (FIFO by the time they were stored); a state
//! taken back out is removed from wherever it is. Memory is then bounded by the budget
//! plus the clients in flight plus redb's page cache (`cache_bytes`), whatever the
//! number of registered clients.
//!
//! States are encoded with the versioned codec (`fedpace_core::codec`; f32 values
//! round-trip exactly); algorithm payloads in a state are decoded through the store's
//! payload [`Registry`] (set it with [`SpillStore::with_registry`]).
//! Writes use redb's `Eventual` durability (no fsync per round): the file is scratch
//! space, not a checkpoint.
//!
//! **One store per run, never shared.** The file gets a name no other store can have
//! (process id, time, a per-process counter and random bits), is created with
//! `create_new` (an existing file is never opened: a name that exists is skipped), and
//! on Unix its name is removed from the directory right after creation: the store
//! lives on the open file only, so no other process can ever open it, and the kernel
//! frees its space when the process ends, however it ends (SIGKILL included). Before
//! this, the file was named by process id and reopened if present, and a run killed with
//! SIGKILL handed its clients' states to the next run with the same id (always PID 1 in
//! a container). See docs/outputs.md.
//!
//! An I/O error of the database (disk full, file removed) is returned with the file's path;
//! the grid turns it into a failure of every client of the round (see `SimGrid`):
//! the simulation cannot continue without its clients' states.

use crate::StateStore;
use fedpace_core::codec::{decode_local_state, encode_local_state};
use fedpace_core::{ClientId, LocalState, Registry};
use redb::{Database, Durability, ReadableTableMetadata, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("states");

/// Default memory budget for states kept in memory: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;
/// Default page cache of the database: 32 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// Client states in memory up to a budget, spilled to a redb file beyond it.
pub struct SpillStore {
    hot: HashMap<ClientId, (u64, LocalState)>,
    /// Insertion sequence → client, oldest first (eviction order).
    order: BTreeMap<u64, ClientId>,
    seq: u64,
    hot_bytes: usize,
    budget: usize,
    db: Database,
    path: PathBuf,
    /// A second handle on the database file (its size, after the name is removed).
    file: File,
    on_disk: usize,
    spilled_total: u64,
    registry: Registry,
}

impl std::fmt::Debug for SpillStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillStore")
            .field("in_memory", &self.hot.len())
            .field("hot_bytes", &self.hot_bytes)
            .field("budget", &self.budget)
            .field("on_disk", &self.on_disk)
            .field("path", &self.path)
            .finish()
    }
}

/// Estimated heap bytes of a state: every buffer it holds (optimiser moments and every
/// payload's own count, [`fedpace_core::Payload::heap_bytes`]) plus fixed overheads.
pub fn state_bytes(s: &LocalState) -> usize {
    s.heap_bytes()
}

impl SpillStore {
    /// A store keeping at most `memory_budget` bytes of states in memory, spilling to a
    /// new database file of its own in `dir` (created if missing). The file is never
    /// one that existed before; on Unix its name is removed at once (see the module doc),
    /// elsewhere on drop.
    pub fn new(dir: &Path, memory_budget: usize) -> std::io::Result<Self> {
        Self::with_cache(dir, memory_budget, DEFAULT_CACHE_BYTES)
    }

    /// [`SpillStore::new`] with redb's page cache set to `cache_bytes`.
    pub fn with_cache(
        dir: &Path,
        memory_budget: usize,
        cache_bytes: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (path, file) = create_unique(dir)?;
        let db_err =
            |e: redb::DatabaseError| std::io::Error::other(format!("{}: {e}", path.display()));
        let handle = file.try_clone()?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create_file(file)
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                db_err(e)
            })?;
        // Nothing but this store will ever see the file (module doc).
        #[cfg(unix)]
        std::fs::remove_file(&path)?;
        Ok(Self {
            hot: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            hot_bytes: 0,
            budget: memory_budget,
            db,
            path,
            file: handle,
            on_disk: 0,
            spilled_total: 0,
            registry: Registry::new(),
        })
    }

    /// The payload types the stored states may hold (an algorithm's state payloads are
    /// unknown to the default, core-only registry: reading them back is then an error).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Path the database file was created at (on Unix already removed from the
    /// directory: the store holds the only handle).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// States held in memory.
    pub fn in_memory(&self) -> usize {
        self.hot.len()
    }
    /// States held on disk.
    pub fn on_disk(&self) -> usize {
        self.on_disk
    }
    /// Estimated bytes of the states held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.hot_bytes
    }
    /// States written to disk so far (counting repeats).
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("state store {}: {what}: {e}", self.path.display())
    }

    fn insert_hot(&mut self, id: ClientId, state: LocalState) {
        let bytes = state_bytes(&state);
        self.seq += 1;
        if let Some((old_seq, old)) = self.hot.insert(id, (self.seq, state)) {
            self.order.remove(&old_seq);
            self.hot_bytes -= state_bytes(&old);
        }
        self.order.insert(self.seq, id);
        self.hot_bytes += bytes;
    }

    /// Writes the oldest in-memory states to disk until within budget.
    fn evict(&mut self) -> Result<(), String> {
        if self.hot_bytes <= self.budget {
            return Ok(());
        }
        let mut out: Vec<(ClientId, LocalState)> = Vec::new();
        while self.hot_bytes > self.budget {
            let Some((_, id)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, s)) = self.hot.remove(&id) {
                self.hot_bytes -= state_bytes(&s);
                out.push((id, s));
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| self.err("write", e))?;
        txn.set_durability(Durability::Eventual);
        let mut added = 0;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err("open", e))?;
            for (id, s) in &out {
                let buf = encode_local_state(s).map_err(|e| self.err("encode", e))?;
                let prev = table
                    .insert(*id, buf.as_slice())
                    .map_err(|e| self.err("insert", e))?;
                if prev.is_none() {
                    added += 1;
                }
            }
        }
        txn.commit().map_err(|e| self.err("commit", e))?;
        self.on_disk += added;
        self.spilled_total += out.len() as u64;
        Ok(())
    }

    /// Removes and decodes the states of `ids` from disk (absent ids are skipped).
    fn take_from_disk(
        &mut self,
        ids: &[ClientId],
    ) -> Result<HashMap<ClientId, LocalState>, String> {
        let mut found = HashMap::new();
        if self.on_disk == 0 || ids.is_empty() {
            return Ok(found);
        }
        let mut txn = self.db.begin_write().map_err(|e| self.err("write", e))?;
        txn.set_durability(Durability::Eventual);
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err("open", e))?;
            for &id in ids {
                let got = table.remove(id).map_err(|e| self.err("remove", e))?;
                if let Some(v) = got {
                    let s = decode_local_state(v.value(), &self.registry)
                        .map_err(|e| self.err("decode", e))?;
                    found.insert(id, s);
                }
            }
        }
        txn.commit().map_err(|e| self.err("commit", e))?;
        self.on_disk -= found.len();
        Ok(found)
    }

    /// Number of states in the database file (reads the table; for tests).
    pub fn count_on_disk(&self) -> Result<u64, String> {
        let txn = self.db.begin_read().map_err(|e| self.err("read", e))?;
        match txn.open_table(TABLE) {
            Ok(t) => t.len().map_err(|e| self.err("len", e)),
            Err(_) => Ok(0),
        }
    }
}

/// Creates `fedpace-states-<pid>-<time>-<counter>-<random>.redb` in `dir` with
/// `create_new`: an existing file is never opened, whoever left it there.
fn create_unique(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..100 {
        let path = dir.join(format!(
            "fedpace-states-{}-{nanos:x}-{}-{:08x}.redb",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            }
        }
    }
    Err(std::io::Error::other(format!(
        "{}: no unused name for a state database after 100 tries",
        dir.display()
    )))
}

#[cfg(not(unix))]
impl Drop for SpillStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl StateStore for SpillStore {
    fn take(&mut self, id: ClientId) -> Result<LocalState, String> {
        Ok(self.take_many(&[id])?.pop().unwrap_or_default())
    }

    fn put(&mut self, id: ClientId, state: LocalState) -> Result<(), String> {
        self.put_many(vec![(id, state)])
    }

    fn len(&self) -> usize {
        self.hot.len() + self.on_disk
    }

    fn describe(&self) -> String {
        format!(
            "{} stored: {} in memory ({:.1} MB estimated, budget {:.1} MB), {} on disk \
             ({} written so far, file {:.1} MB)",
            self.len(),
            self.in_memory(),
            self.hot_bytes as f64 / 1e6,
            self.budget as f64 / 1e6,
            self.on_disk,
            self.spilled_total,
            self.file.metadata().map_or(0.0, |m| m.len() as f64 / 1e6)
        )
    }

    fn take_many(&mut self, ids: &[ClientId]) -> Result<Vec<LocalState>, String> {
        let mut out: Vec<Option<LocalState>> = ids
            .iter()
            .map(|id| {
                self.hot.remove(id).map(|(seq, s)| {
                    self.order.remove(&seq);
                    self.hot_bytes -= state_bytes(&s);
                    s
                })
            })
            .collect();
        let missing: Vec<ClientId> = ids
            .iter()
            .zip(&out)
            .filter(|(_, s)| s.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut disk = self.take_from_disk(&missing)?;
        for (id, slot) in ids.iter().zip(&mut out) {
            if slot.is_none() {
                *slot = disk.remove(id);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn put_many(&mut self, states: Vec<(ClientId, LocalState)>) -> Result<(), String> {
        for (id, s) in states {
            if s != LocalState::default() {
                self.insert_hot(id, s);
            }
        }
        self.evict()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::needless_update)]
    fn state(k: u64, len: usize) -> LocalState {
        LocalState {
            rounds_trained: k as u32,
            steps_done: k * 10,
            optimizer: Some(fedpace_optim::State {
                count: k,
                buffers: vec![(0..len).map(|i| (i as f32 + k as f32) * 0.1).collect()],
                children: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn spills_past_the_budget_and_returns_every_state_exactly() {
        let dir = std::env::temp_dir().join("fedpace-spill-test");
        // Room for about 3 states of 100 floats.
        let mut s = SpillStore::new(&dir, 3 * state_bytes(&state(0, 100))).unwrap();
        let path = s.path().to_path_buf();
        s.put_many((0..10).map(|k| (k, state(k, 100))).collect())
            .unwrap();
        assert_eq!(s.len(), 10);
        assert!(s.in_memory() <= 3, "{s:?}");
        assert_eq!(s.on_disk(), 10 - s.in_memory());
        assert_eq!(s.count_on_disk().unwrap() as usize, s.on_disk());
        assert!(s.memory_bytes() <= 3 * state_bytes(&state(0, 100)));
        // Mixed: some from disk (oldest), some from memory (newest), one never stored.
        let got = s.take_many(&[0, 9, 4, 42]).unwrap();
        assert_eq!(got[0], state(0, 100));
        assert_eq!(got[1], state(9, 100));
        assert_eq!(got[2], state(4, 100));
        assert_eq!(got[3], LocalState::default());
        assert_eq!(s.len(), 7);
        assert_eq!(s.count_on_disk().unwrap() as usize, s.on_disk());
        // Single-item trait methods; default states are not stored.
        s.put(0, state(100, 100)).unwrap();
        s.put(1, LocalState::default()).unwrap();
        assert_eq!(s.take(0).unwrap(), state(100, 100));
        for k in [1, 2, 3, 5, 6, 7, 8] {
            assert_eq!(s.take(k).unwrap(), state(k, 100), "client {k}");
        }
        assert!(s.is_empty());
        drop(s);
        assert!(!path.exists(), "file removed on drop");
    }

    #[test]
    fn every_buffer_of_a_state_counts_against_the_budget() {
        let bare = state_bytes(&LocalState::default());
        let mut s = state(0, 100);
        s.ext.insert(fedpace_core::LabelHistogram(vec![0; 50]));
        assert!(state_bytes(&s) >= bare + 4 * 100 + 8 * 50);
    }

    #[test]
    fn a_payload_the_registry_does_not_know_is_an_error_naming_it() {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Mine(u8);
        impl fedpace_core::Payload for Mine {
            const NAME: &'static str = "test-mine";
        }
        let dir = std::env::temp_dir().join("fedpace-spill-test");
        let mut s = SpillStore::new(&dir, 0).unwrap();
        let mut st = state(1, 3);
        st.ext.insert(Mine(7));
        s.put(1, st.clone()).unwrap();
        let e = s.take(1).unwrap_err();
        assert!(e.contains("unknown extension \"test-mine\""), "{e}");
        let mut r = Registry::new();
        r.register::<Mine>().unwrap();
        let mut s = SpillStore::new(&dir, 0).unwrap().with_registry(r);
        s.put(1, st.clone()).unwrap();
        assert_eq!(s.take(1).unwrap(), st);
    }

    /// Regression (reliability review D1): a database left at the old PID-based name by
    /// a run killed with SIGKILL was reopened by the next run with the same PID, which
    /// then trained from the dead run's client states.
    #[test]
    fn a_database_left_by_a_killed_run_is_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        // What the killed run left: its states under every name the old scheme would
        // give this process.
        for n in 0..8 {
            let old = tmp
                .path()
                .join(format!("fedpace-states-{}-{n}.redb", std::process::id()));
            let db = Database::create(&old).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(TABLE).unwrap();
                for id in 0..10u64 {
                    let mut buf = Vec::new();
                    buf.extend(encode_local_state(&state(99, 10)).unwrap());
                    t.insert(id, buf.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let before: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        for _ in 0..3 {
            let mut s = SpillStore::new(tmp.path(), 0).unwrap();
            assert_eq!((s.len(), s.count_on_disk().unwrap()), (0, 0));
            s.put(3, state(3, 5)).unwrap();
            let got = s.take_many(&(0..10).collect::<Vec<_>>()).unwrap();
            for (id, g) in got.iter().enumerate() {
                let want = if id == 3 {
                    state(3, 5)
                } else {
                    LocalState::default()
                };
                assert_eq!(*g, want, "client {id} got a state it never stored");
            }
        }
        // The stale files are left alone (not ours to delete), nothing is added.
        let after: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(before.len(), after.len());
    }

    #[cfg(unix)]
    #[test]
    fn the_database_file_has_no_name_while_the_store_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = SpillStore::new(tmp.path(), 0).unwrap();
        s.put_many((0..50).map(|k| (k, state(k, 1000))).collect())
            .unwrap();
        assert_eq!(s.on_disk(), 50);
        // Nothing another run could open, and nothing left if this process is killed.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(
            s.file.metadata().unwrap().len() > 50 * 4000,
            "{}",
            s.describe()
        );
        assert_eq!(s.take(7).unwrap(), state(7, 1000));
    }

    #[test]
    fn zero_budget_keeps_nothing_in_memory() {
        let dir = std::env::temp_dir().join("fedpace-spill-test");
        let mut s = SpillStore::new(&dir, 0).unwrap();
        s.put(7, state(7, 5)).unwrap();
        assert_eq!((s.in_memory(), s.on_disk()), (0, 1));
        assert_eq!(s.take(7).unwrap(), state(7, 5));
    }
}
