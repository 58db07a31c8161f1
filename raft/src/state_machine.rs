//! openraft's state machine for one group: applies committed commands with
//! [`crate::logic::apply`], and makes and installs snapshots.

use std::collections::BTreeMap;
use std::io;

use courier_storage::{Durability, GroupId, Store, WriteSet};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use crate::codec::{decode, encode};
use crate::log_store::io_err;
use crate::logic::{self, StateRead, StateView};
use crate::snapshot::SnapshotData;
use crate::types::{LogId, Reply, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
/// Where versions before on-demand snapshots kept a copy of the rows; deleted when seen.
const LEGACY_SNAPSHOT: &str = "snapshot";

#[derive(Clone)]
pub struct StateMachine {
    group: GroupId,
    store: Store,
    app: std::sync::Arc<dyn logic::App>,
    cache: std::sync::Arc<RowCache>,
}

/// Rows the apply path read, as they are stored: a send reads its chat's
/// row and the sender's member row and writes both back, every time, and a
/// lookup in a large memtable costs microseconds of cache misses. Only this
/// group's apply writes its rows, so the cache is kept exact: rows enter when
/// apply reads them from the store, a write that reaches the store updates a
/// cached row (rows not cached stay out: message rows are written, seldom
/// read back), and installing a snapshot empties it. Past [`CACHE_ROWS`] it
/// starts over.
#[derive(Default)]
struct RowCache {
    rows: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

/// Rows one group's cache holds before it is emptied.
const CACHE_ROWS: usize = 4096;

impl RowCache {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.rows.lock().expect("row cache lock").get(key).cloned()
    }

    fn fill(&self, key: &[u8], value: &[u8]) {
        let mut rows = self.rows.lock().expect("row cache lock");
        if rows.len() >= CACHE_ROWS {
            rows.clear();
        }
        rows.insert(key.to_vec(), value.to_vec());
    }

    /// The writes among `pending` that touch cached rows.
    fn updates(&self, pending: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let rows = self.rows.lock().expect("row cache lock");
        pending.iter().filter(|(k, _)| rows.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Called once the writes are in the store.
    fn apply(&self, updates: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut rows = self.rows.lock().expect("row cache lock");
        for (k, v) in updates {
            match v {
                Some(v) => rows.insert(k, v),
                None => rows.remove(&k),
            };
        }
    }

    fn clear(&self) {
        self.rows.lock().expect("row cache lock").clear();
    }
}

/// A [`StateView`] over the stored state plus the writes of the batch being applied.
struct BatchView<'a> {
    group: GroupId,
    store: &'a Store,
    cache: &'a RowCache,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl StateRead for BatchView<'_> {
    fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.get(key) {
            return Ok(Some(v));
        }
        let stored = self.store.get_sm(self.group, key)?;
        if let Some(v) = &stored {
            self.cache.fill(key, v);
        }
        Ok(stored)
    }
}

/// The stored state of one group, read-only.
pub struct StoreView<'a> {
    pub group: GroupId,
    pub store: &'a Store,
}

impl StateRead for StoreView<'_> {
    fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        Ok(self.store.get_sm(self.group, key)?)
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.store.scan_sm_page(self.group, prefix, after, limit)?)
    }
}

impl StateView for BatchView<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.pending.insert(key.to_vec(), Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.pending.insert(key.to_vec(), None);
    }
}

impl StateMachine {
    pub fn new(group: GroupId, store: Store, app: std::sync::Arc<dyn logic::App>) -> Self {
        Self { group, store, app, cache: Default::default() }
    }

    /// The group as it is now, pinned: the applied id and membership are
    /// read together (apply may run meanwhile), the rows not at all.
    fn pinned(&self) -> Result<Snapshot, io::Error> {
        let pinned = self.store.pin_group(self.group);
        let meta = meta_of(&pinned.states(&[APPLIED, MEMBERSHIP]).map_err(io_err)?)?;
        Ok(Snapshot { meta, snapshot: SnapshotData::Pinned(pinned) })
    }
}

/// Snapshots on demand. The group's rows are in RocksDB, durable with the
/// applied id they belong to, so a snapshot "built" for log compaction is
/// only that id and the membership, pinned with the rows they go with
/// (a RocksDB snapshot, see [`crate::snapshot`]): nothing is copied or
/// read. The rows are read when a snapshot is sent to a follower.
impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snapshot = self.pinned()?;
        // A copy of the rows that an older version stored.
        let mut ws = WriteSet::new();
        ws.delete_state(self.group, LEGACY_SNAPSHOT);
        self.store.write(ws, Durability::Buffered).map_err(io_err)?;
        tracing::info!(group = self.group, index = ?snapshot.meta.last_log_id.map(|l| l.index), "snapshot point (the log before it may be purged)");
        Ok(snapshot)
    }
}

/// The snapshot meta from the (applied, membership) state rows.
fn meta_of(states: &[Option<Vec<u8>>]) -> Result<SnapshotMeta, io::Error> {
    let last_log_id: Option<LogId> = states[0].as_deref().map(decode).transpose().map_err(io_err)?;
    let last_membership: StoredMembership = states[1].as_deref().map(decode).transpose().map_err(io_err)?.unwrap_or_default();
    Ok(SnapshotMeta { last_log_id, last_membership })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let meta = self.pinned()?.meta;
        Ok((meta.last_log_id, meta.last_membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut view = BatchView { group: self.group, store: &self.store, cache: &self.cache, pending: BTreeMap::new() };
        let mut ws = WriteSet::new();
        let mut last_applied = None;
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => Reply::default(),
                EntryPayload::Normal(cmd) => logic::apply(self.app.as_ref(), &mut view, cmd, entry.log_id.index).map_err(io_err)?,
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    ws.put_state(self.group, MEMBERSHIP, encode(&stored));
                    Reply::default()
                }
            };
            if let Some(r) = responder {
                responders.push((r, response));
            }
        }
        let cached = self.cache.updates(&view.pending);
        for (k, v) in std::mem::take(&mut view.pending) {
            match v {
                Some(v) => ws.put_sm(self.group, &k, v),
                None => ws.delete_sm(self.group, &k),
            }
        }
        if let Some(applied) = last_applied {
            ws.put_state(self.group, APPLIED, encode(&applied));
        }
        // Not synced: the log entries are already durable, and the WAL keeps this
        // write ordered before anything (a purge) that depends on it.
        self.store.write(ws, Durability::Buffered).map_err(io_err)?;
        self.cache.apply(cached);
        for (r, response) in responders {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let (store, group) = (self.store.clone(), self.group);
        let staged = match snapshot {
            SnapshotData::Staged(staged) if staged.group() == group => staged,
            SnapshotData::Staged(staged) => return Err(io_err(format!("a snapshot of group {} offered to group {group}", staged.group()))),
            // Another state machine's own snapshot (openraft's test suite
            // hands one over): staged from its rows.
            SnapshotData::Pinned(pinned) => {
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.stage_group(group, |w| pinned.for_each_row(|k, v| w.put(k, v))))
                    .await
                    .map_err(io_err)?
                    .map_err(io_err)?
            }
        };
        let states = vec![
            (APPLIED.to_owned(), meta.last_log_id.as_ref().map(encode)),
            (MEMBERSHIP.to_owned(), Some(encode(&meta.last_membership))),
            (LEGACY_SNAPSHOT.to_owned(), None),
        ];
        let rows = staged.rows();
        tokio::task::spawn_blocking(move || store.install_group(staged, states)).await.map_err(io_err)?.map_err(io_err)?;
        // Apply does not run meanwhile (it takes the state machine too), so
        // emptying the cache once the rows are in is enough.
        self.cache.clear();
        tracing::info!(group = self.group, index = ?meta.last_log_id.map(|l| l.index), rows, "installed snapshot");
        Ok(())
    }

    /// The state now, pinned: the applied id and membership are read, the
    /// rows only when the snapshot is sent (openraft asks at start-up, for
    /// the meta, and when a follower needs a snapshot).
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshot = self.pinned()?;
        Ok(snapshot.meta.last_log_id.is_some().then_some(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;

    use super::*;
    use crate::types::{Command, Entry};

    /// `inc` reads the row `n`, adds one and writes it back; `del` deletes it.
    struct Counter;

    impl logic::App for Counter {
        fn apply(&self, view: &mut dyn logic::StateView, cmd: &[u8], _index: u64) -> crate::Result<Vec<u8>> {
            if cmd == b"del" {
                view.delete(b"n");
                return Ok(Vec::new());
            }
            let n = view.get(b"n")?.map(|v| u64::from_be_bytes(v.try_into().unwrap())).unwrap_or(0) + 1;
            view.put(b"n", n.to_be_bytes().to_vec());
            Ok(Vec::new())
        }
        fn query(&self, _: &dyn StateRead, _: &[u8]) -> crate::Result<Vec<u8>> {
            Ok(Vec::new())
        }
    }

    async fn run(sm: &mut StateMachine, index: &mut u64, cmds: &[&[u8]]) {
        for cmd in cmds {
            *index += 1;
            let entry = Entry::new_normal(log_id::<TypeConfig>(1, 1, *index), Command::App(crate::types::cmd::App(cmd.to_vec())));
            sm.apply(futures::stream::iter(vec![Ok((entry, None))])).await.unwrap();
        }
    }

    fn stored(store: &Store) -> Option<u64> {
        store.get_sm(5, b"n").unwrap().map(|v| u64::from_be_bytes(v.try_into().unwrap()))
    }

    #[tokio::test]
    async fn snapshots_copy_nothing_until_asked_for_and_then_are_the_state_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut sm = StateMachine::new(5, store.clone(), std::sync::Arc::new(Counter));
        assert!(sm.get_current_snapshot().await.unwrap().is_none(), "nothing applied, no snapshot");
        // A copy an older version kept goes at the next snapshot point.
        store.put_state(5, LEGACY_SNAPSHOT, b"old copy", Durability::Buffered).unwrap();
        let mut index = 0;
        run(&mut sm, &mut index, &[b"inc", b"inc"]).await;
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        assert!(matches!(built.snapshot, SnapshotData::Pinned(_)), "a snapshot point copies no rows");
        assert_eq!(store.get_state(5, LEGACY_SNAPSHOT).unwrap(), None, "and nothing is stored for it");

        // Asked for later, the snapshot is the state then, with its own applied id.
        run(&mut sm, &mut index, &[b"inc"]).await;
        let now = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(now.meta.last_log_id.map(|l| l.index), Some(3));
        // Applies go on before it is sent: what is sent is still the state
        // its meta names (the rows are read from the pinned moment).
        run(&mut sm, &mut index, &[b"inc", b"inc"]).await;
        assert_eq!(stored(&store), Some(5));
        let mut wire = Vec::new();
        now.snapshot
            .encode_in_pieces(1 << 20, |piece| {
                wire.push(piece);
                true
            })
            .unwrap();
        let other = tempfile::tempdir().unwrap();
        let other_store = Store::open(other.path()).unwrap();
        let mut follower = StateMachine::new(5, other_store.clone(), std::sync::Arc::new(Counter));
        let staged = crate::snapshot::receive(&other_store, 5, wire.into_iter()).unwrap();
        follower.install_snapshot(&now.meta, SnapshotData::Staged(staged)).await.unwrap();
        assert_eq!(stored(&other_store), Some(3), "installing it gives the rows of the moment it was asked for");
        assert_eq!(follower.applied_state().await.unwrap().0, now.meta.last_log_id);
        assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, now.meta, "an installed snapshot is the follower's current one");
    }

    #[tokio::test]
    async fn rows_read_by_apply_stay_exact_across_writes_deletes_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut sm = StateMachine::new(5, store.clone(), std::sync::Arc::new(Counter));
        let mut index = 0;
        run(&mut sm, &mut index, &[b"inc", b"inc", b"inc"]).await;
        assert_eq!(stored(&store), Some(3));
        assert_eq!(sm.cache.get(&b"n"[..]), Some(3u64.to_be_bytes().to_vec()), "a row apply reads is cached, and kept current");

        // A snapshot replaces the row; the next apply must read the new value.
        let rows = vec![(b"n".to_vec(), 100u64.to_be_bytes().to_vec())];
        let meta = SnapshotMeta { last_log_id: Some(log_id::<TypeConfig>(1, 1, 50)), last_membership: StoredMembership::default() };
        let body = encode(&crate::snapshot::SnapshotBody { rows });
        let staged = crate::snapshot::receive(&store, 5, std::iter::once(body)).unwrap();
        sm.install_snapshot(&meta, SnapshotData::Staged(staged)).await.unwrap();
        index = 50;
        run(&mut sm, &mut index, &[b"inc"]).await;
        assert_eq!(stored(&store), Some(101));

        // A delete reaches the cache too.
        run(&mut sm, &mut index, &[b"del", b"inc"]).await;
        assert_eq!(stored(&store), Some(1));

        // Past its bound the cache starts over and stays right.
        for k in 0..CACHE_ROWS + 10 {
            sm.cache.fill(format!("k{k}").as_bytes(), b"x");
        }
        run(&mut sm, &mut index, &[b"inc"]).await;
        assert_eq!(stored(&store), Some(2));
        assert!(sm.cache.rows.lock().unwrap().len() <= CACHE_ROWS);
    }
}
