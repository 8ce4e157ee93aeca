//! The registered clients as the server sees them: how many there are, and each one's
//! metadata ([`ClientInfo`]) on demand.
//!
//! A pool need not hold a row per registered client. A simulation of a million clients
//! computes a client's metadata when a strategy or policy asks for it (each round, the
//! sampled ones), and the pool-wide figure policies need (the total of training
//! samples, for `by-data-size`) once. Strategies and policies therefore never iterate
//! over the pool per round; [`ClientPool::id_at`] lets a sampler turn `k` drawn indices
//! into ids without touching the other clients.
//!
//! A `Vec<ClientInfo>` sorted by id is a pool too (tests, small federations), and
//! [`PoolSubset`] is a view of some clients of another pool (e.g. those reachable in a
//! round).

use crate::{ClientId, ClientInfo, Error, Result};

/// The registered clients: a count, and each client's metadata on demand.
pub trait ClientPool: Send + Sync {
    /// Number of clients.
    fn len(&self) -> usize;
    /// Whether the pool has no client.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The id of the `i`-th client (`i < len()`); ids ascend with `i`. Default: `i`
    /// (clients numbered `0..len`).
    fn id_at(&self, i: usize) -> ClientId {
        i as ClientId
    }
    /// Client `id`'s metadata, computed on demand; an error naming the id when it is not
    /// a client of the pool.
    fn info(&self, id: ClientId) -> Result<ClientInfo>;
    /// Σ training samples over the pool. Default: one pass over the pool holding one
    /// row at a time; implementations may compute it once and keep the number.
    fn total_train(&self) -> Result<u64> {
        (0..self.len()).try_fold(0u64, |s, i| Ok(s + self.info(self.id_at(i))?.num_train))
    }
}

impl dyn ClientPool + '_ {
    /// Every client's metadata in id order, computed one at a time (a pass over a
    /// million clients holds one row at a time).
    pub fn iter(&self) -> impl Iterator<Item = Result<ClientInfo>> + '_ {
        (0..self.len()).map(move |i| self.info(self.id_at(i)))
    }

    /// Every client id in order.
    pub fn ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        (0..self.len()).map(move |i| self.id_at(i))
    }
}

/// The error for an id that is not in a pool.
pub fn not_in_pool(id: ClientId) -> Error {
    Error::invalid("client", id, "a client of the pool")
}

/// Looks `id` up in rows sorted by id (directly when ids are `0..n`).
fn find(rows: &[ClientInfo], id: ClientId) -> Option<&ClientInfo> {
    match rows.get(id as usize) {
        Some(c) if c.id == id => Some(c),
        _ => rows
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &rows[i]),
    }
}

/// Rows sorted by id, every one held in memory.
impl ClientPool for Vec<ClientInfo> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn id_at(&self, i: usize) -> ClientId {
        self[i].id
    }
    fn info(&self, id: ClientId) -> Result<ClientInfo> {
        find(self, id).cloned().ok_or_else(|| not_in_pool(id))
    }
    fn total_train(&self) -> Result<u64> {
        Ok(self.as_slice().iter().map(|c| c.num_train).sum())
    }
}

/// Some clients of another pool, by id (e.g. the clients reachable in a round). Holds
/// only the ids.
pub struct PoolSubset<'a> {
    base: &'a dyn ClientPool,
    ids: Vec<ClientId>,
}

impl<'a> PoolSubset<'a> {
    /// The clients `ids` of `base`; ids are sorted and deduplicated here.
    pub fn new(base: &'a dyn ClientPool, mut ids: Vec<ClientId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self { base, ids }
    }
    /// The clients of `base` for which `keep(id)` holds (one pass over the ids; the
    /// metadata is not computed).
    pub fn filter(base: &'a dyn ClientPool, mut keep: impl FnMut(ClientId) -> bool) -> Self {
        let ids = base.ids().filter(|&id| keep(id)).collect();
        Self { base, ids }
    }
}

impl ClientPool for PoolSubset<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn id_at(&self, i: usize) -> ClientId {
        self.ids[i]
    }
    fn info(&self, id: ClientId) -> Result<ClientInfo> {
        if self.ids.binary_search(&id).is_ok() {
            self.base.info(id)
        } else {
            Err(not_in_pool(id))
        }
    }
}

/// Another pool as the server sees it: each client's metadata reduced to the payloads
/// clients share (`client.share`), so that strategies and policies work from what a
/// deployed client would report, never from the simulator's own knowledge of its data.
pub struct Disclosed {
    base: std::sync::Arc<dyn ClientPool>,
    shared: Vec<String>,
}

impl Disclosed {
    /// `base` with only the metadata named in `shared` kept.
    pub fn new(base: std::sync::Arc<dyn ClientPool>, shared: Vec<String>) -> Self {
        Self { base, shared }
    }
}

impl ClientPool for Disclosed {
    fn len(&self) -> usize {
        self.base.len()
    }
    fn id_at(&self, i: usize) -> ClientId {
        self.base.id_at(i)
    }
    fn info(&self, id: ClientId) -> Result<ClientInfo> {
        let mut c = self.base.info(id)?;
        c.metadata
            .retain(|name| self.shared.iter().any(|s| s == name));
        Ok(c)
    }
    fn total_train(&self) -> Result<u64> {
        self.base.total_train()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[u64]) -> Vec<ClientInfo> {
        ids.iter()
            .map(|&id| ClientInfo::new(id, 10 + id, 1))
            .collect()
    }

    #[test]
    fn rows_are_a_pool_with_their_own_ids() {
        let p = rows(&[2, 5, 9]);
        let pool: &dyn ClientPool = &p;
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.ids().collect::<Vec<_>>(), vec![2, 5, 9]);
        assert_eq!(pool.info(5).unwrap().num_train, 15);
        assert_eq!(
            pool.info(3).unwrap_err().to_string(),
            "client = 3: a client of the pool"
        );
        assert_eq!(pool.total_train().unwrap(), 12 + 15 + 19);
        assert_eq!(pool.iter().count(), 3);
    }

    #[test]
    fn a_subset_sees_only_its_clients_and_sums_over_them() {
        let p = rows(&[0, 1, 2, 3, 4]);
        let s = PoolSubset::filter(&p, |id| id % 2 == 0);
        assert_eq!(s.len(), 3);
        assert_eq!((s.id_at(0), s.id_at(2)), (0, 4));
        assert!(s.info(1).is_err());
        assert_eq!(s.info(2).unwrap().num_train, 12);
        // The default pass over the pool.
        assert_eq!(s.total_train().unwrap(), 10 + 12 + 14);
        assert_eq!(PoolSubset::new(&p, vec![3, 1, 3]).ids, vec![1, 3]);
    }

    #[test]
    fn a_disclosed_pool_keeps_only_the_shared_metadata() {
        let mut p = rows(&[0, 1]);
        p[1].metadata.insert(crate::LabelHistogram(vec![2, 3]));
        let p: std::sync::Arc<dyn ClientPool> = std::sync::Arc::new(p);
        let hidden = Disclosed::new(p.clone(), vec![]);
        assert_eq!(hidden.info(1).unwrap().label_histogram(), None);
        assert_eq!(hidden.total_train().unwrap(), 21);
        let shown = Disclosed::new(p, vec!["label-histogram".into()]);
        assert_eq!(
            shown.info(1).unwrap().label_histogram(),
            Some(&[2u64, 3][..])
        );
    }
}
