//! openraft's log storage for one group, on the node's shared RocksDB.

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
}

impl LogStore {
    pub fn new(group: GroupId, store: Store) -> Self {
        Self { group, store, committed: Arc::default() }
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
        let encoded: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.log_id.index, encode(&e))).collect();
        let committed = self.committed.lock().expect("committed lock").take();
        let states: Vec<(&str, &[u8])> = committed.as_deref().map(|c| ("committed", c)).into_iter().collect();
        self.store.append_log(self.group, encoded.iter().map(|(i, b)| (*i, b.as_slice())), &states).map_err(io_err)?;
        // Reported flushed only once the WAL is fsynced; appends of all groups share that fsync.
        self.store
            .sync_wal(Box::new(move |result| callback.io_completed(result.map_err(io_err))))
            .map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.store.truncate_log(self.group, from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
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
