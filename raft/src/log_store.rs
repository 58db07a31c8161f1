//! openraft's log storage for one group, on the node's shared RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use courier_storage::{Durability, GroupId, Store};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};

use crate::codec::{decode, encode};
use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Store,
    /// The committed log id openraft last reported and no write has carried
    /// yet (encoded). It rides along with the next append instead of costing
    /// a write of its own per commit; what is on disk is therefore a
    /// slightly older committed id, which is still a committed id: on restart
    /// openraft re-applies up to it, and the rest once the leader is heard.
    committed: Arc<Mutex<Option<Vec<u8>>>>,
    /// The newest entries, as appended: a leader's replication reads what
    /// it just appended, and serving that from memory spares a RocksDB
    /// iterator and a decode per entry and per follower.
    tail: Arc<Mutex<Tail>>,
}

impl LogStore {
    pub fn new(group: GroupId, store: Store) -> Self {
        Self { group, store, committed: Arc::default(), tail: Arc::default() }
    }
}

/// Entries the tail keeps at most, and their encoded bytes at most.
const TAIL_ENTRIES: usize = 1024;
const TAIL_BYTES: usize = 1 << 20;

/// The last entries of the log, contiguous: `entries[i]` has index
/// `entries[0].index + i`. Kept in step with the stored log: appends push,
/// truncation and purges cut.
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        if self.entries.back().is_some_and(|(e, _)| e.log_id.index + 1 != entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > TAIL_ENTRIES || (self.bytes > TAIL_BYTES && self.entries.len() > 1) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forgets entries with index >= `from`.
    fn truncate(&mut self, from: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= from) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries with index <= `upto`.
    fn purge(&mut self, upto: u64) {
        while self.first().is_some_and(|first| first <= upto) {
            self.drop_oldest();
        }
    }

    /// Entries `start..end`, when the tail holds all of them.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first()?;
        let last = first + self.entries.len() as u64;
        if start < first || end > last || start >= end {
            return None;
        }
        Some(self.entries.range((start - first) as usize..(end - first) as usize).map(|(e, _)| e.clone()).collect())
    }
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(hit) = self.tail.lock().expect("tail lock").get(start, end) {
            return Ok(hit);
        }
        let rows = self.store.read_log(self.group, start, end).map_err(io_err)?;
        rows.iter().map(|(_, bytes)| decode::<Entry>(bytes).map_err(io_err)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.store.get_state(self.group, "vote").map_err(io_err)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(io_err)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = match self.store.get_state(self.group, "purged").map_err(io_err)? {
            Some(bytes) => Some(decode(&bytes).map_err(io_err)?),
            None => None,
        };
        let last = match self.store.last_log(self.group).map_err(io_err)? {
            Some((_, bytes)) => {
                let entry: Entry = decode(&bytes).map_err(io_err)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.store.put_state(self.group, "vote", &encode(vote), Durability::Synced).map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        *self.committed.lock().expect("committed lock") = Some(encode(&committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(pending) = self.committed.lock().expect("committed lock").as_deref() {
            return decode(pending).map_err(io_err);
        }
        match self.store.get_state(self.group, "committed").map_err(io_err)? {
            Some(bytes) => decode(&bytes).map_err(io_err),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded: Vec<(u64, Vec<u8>)> = entries.iter().map(|e| (e.log_id.index, encode(e))).collect();
        let committed = self.committed.lock().expect("committed lock").take();
        let states: Vec<(&str, &[u8])> = committed.as_deref().map(|c| ("committed", c)).into_iter().collect();
        self.store.append_log(self.group, encoded.iter().map(|(i, b)| (*i, b.as_slice())), &states).map_err(io_err)?;
        {
            let mut tail = self.tail.lock().expect("tail lock");
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                tail.push(entry, bytes.len());
            }
        }
        // Reported flushed only once the WAL is fsynced; appends of all groups share that fsync.
        self.store
            .sync_wal(Box::new(move |result| callback.io_completed(result.map_err(io_err))))
            .map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.tail.lock().expect("tail lock").truncate(from);
        self.store.truncate_log(self.group, from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.tail.lock().expect("tail lock").purge(log_id.index);
        self.store.purge_log(self.group, log_id.index, &encode(&log_id)).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::state_machine::StateMachine;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
            let store = Store::open(dir.path()).map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
            // A group other than 0, with a neighbour holding data, to catch key-range mistakes.
            store.append_log(8, [(1u64, &b"neighbour"[..])], &[]).unwrap();
            Ok((dir, LogStore::new(7, store.clone()), StateMachine::new(7, store, std::sync::Arc::new(crate::logic::NoApp))))
        }
    }

    fn tail_of(indexes: std::ops::RangeInclusive<u64>, size: usize) -> Tail {
        let mut t = Tail::default();
        for i in indexes {
            t.push(openraft::testing::blank_ent::<TypeConfig>(1, 1, i), size);
        }
        t
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    /// The tail answers only ranges it holds whole, and follows truncation
    /// and purges (the storage suite below checks the log as a whole).
    #[test]
    fn the_tail_answers_ranges_it_holds_and_follows_truncation_and_purges() {
        let mut t = tail_of(1..=10, 100);
        assert_eq!(indexes(t.get(3, 8)), Some((3..8).collect()));
        assert_eq!(indexes(t.get(1, 11)), Some((1..11).collect()));
        assert_eq!(t.get(0, 5), None, "before the tail: the store answers");
        assert_eq!(t.get(5, 12), None, "past the end");
        t.truncate(8);
        assert_eq!(indexes(t.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(t.get(5, 9), None, "truncated entries are gone");
        t.purge(4);
        assert_eq!(t.get(4, 6), None, "purged entries are gone");
        assert_eq!(indexes(t.get(5, 6)), Some(vec![5]));
        // A gap (cannot happen through openraft) starts a new tail.
        t.push(openraft::testing::blank_ent::<TypeConfig>(2, 1, 20), 100);
        assert_eq!(t.get(5, 6), None);
        assert_eq!(indexes(t.get(20, 21)), Some(vec![20]));
        assert_eq!(t.bytes, 100);
        // Bounded by entries and by bytes; the newest stay.
        let t = tail_of(1..=TAIL_ENTRIES as u64 + 10, 10);
        assert_eq!(t.first(), Some(11));
        let t = tail_of(1..=5, TAIL_BYTES / 2);
        assert_eq!(t.first(), Some(4));
        assert_eq!(t.bytes, TAIL_BYTES);
    }

    /// A leader's replication reads entries it just appended from memory:
    /// they are served even when the stored rows are gone (which only this
    /// test does behind the log's back).
    #[test]
    fn appended_entries_are_read_back_from_memory() {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut log = LogStore::new(3, store.clone());
            let entries: Vec<Entry> = (1..=5).map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i)).collect();
            let (tx, rx) = TypeConfig::oneshot();
            let flushed = IOFlushed::<TypeConfig>::signal(tx);
            log.append(entries, flushed).await.unwrap();
            rx.await.unwrap().unwrap();
            store.truncate_log(3, 0).unwrap();
            assert!(store.read_log(3, 1, 6).unwrap().is_empty());
            let read = log.try_get_log_entries(2..5).await.unwrap();
            assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![2, 3, 4]);
            // What the tail does not hold whole comes from the store (now empty).
            assert!(log.try_get_log_entries(0..3).await.unwrap().is_empty());
        });
    }

    /// openraft's conformance suite for log and state-machine storage.
    #[test]
    fn openraft_storage_suite() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { Suite::test_all(Builder).await.unwrap() });
    }
}
