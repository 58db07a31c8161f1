//! The one RocksDB of a Courier node.
//!
//! Only this crate names `rocksdb::`. It stores opaque bytes for the layers above
//! and hides keys, column families and encodings:
//!
//! | column family | key                         | what                                   |
//! |---------------|-----------------------------|----------------------------------------|
//! | `meta`        | name                        | format version, node identity          |
//! | `raft_log`    | group (u32 BE) + index (u64 BE) | Raft log entries of every group    |
//! | `raft_state`  | group (u32 BE) + name       | vote, committed, purged, applied, membership, an install in progress |
//! | `sm`          | group (u32 BE) + key        | each group's state machine             |
//! | `chunks`      | chunk hash                  | media chunks (placement ring)          |
//!
//! Durability: log appends are written without a sync so they are visible at
//! once, then [`Store::sync_wal`] fsyncs the write-ahead log for every caller
//! that queued since the last sync (group commit: many groups, one fsync).

mod install;
mod syncer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

pub use install::{StageWriter, StagedGroup, StateChanges};
pub use syncer::SyncCallback;

/// Identifies a Raft group inside the node's one database.
pub type GroupId = u32;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"format_version";

const CF_META: &str = "meta";
const CF_LOG: &str = "raft_log";
const CF_STATE: &str = "raft_state";
const CF_SM: &str = "sm";
const CF_CHUNKS: &str = "chunks";
const ALL_CFS: [&str; 5] = [CF_META, CF_LOG, CF_STATE, CF_SM, CF_CHUNKS];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error(
        "data directory {path} has format version {found}, this build of courier supports version {supported}; \
         use a matching courier release or move the directory away"
    )]
    UnsupportedFormat { path: PathBuf, found: String, supported: u32 },
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the storage sync thread has stopped")]
    SyncerStopped,
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Engine(e.into_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handle on the node's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    syncer: syncer::Syncer,
    path: PathBuf,
    /// Chunk writes and the collector's deletes, one at a time: a chunk
    /// written again (its time refreshed) is never deleted by a collector
    /// that saw its old time.
    chunk_lock: std::sync::Mutex<()>,
    /// The `sm` column family's options, for the files snapshots are staged in.
    sm_opts: Options,
}

fn group_key(group: GroupId, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + rest.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// How many leading key bytes name a column family's memtable insert hint.
///
/// A memtable insert searches the skiplist from its top level unless the key
/// lands right after the previous insert; with a hint, RocksDB keeps the
/// insert position of each key prefix and fixes it up from the bottom. The
/// prefixes follow how rows are written: a group's log entries one after
/// another (`group`); a group's state rows by name (`group ‖ name`); and the
/// state machine's rows by group, row kind and the first id after it (`group
/// ‖ "m/msg/" ‖ chat`: a chat's messages, events and members are each written
/// in order). Pure tuning: a prefix only picks which remembered position an
/// insert starts from, never what is stored.
fn insert_hint_prefix(cf: &str) -> Option<usize> {
    match cf {
        CF_LOG => Some(4),
        CF_STATE => Some(4 + 12),
        CF_SM => Some(4 + 6 + 8),
        _ => None,
    }
}

/// The first key past every key of `group`.
fn group_end(group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => group_key(next, &[]),
        None => vec![0xff; 5],
    }
}

fn log_key(group: GroupId, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

fn decode_index(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key
        .get(4..12)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Puts and deletes applied atomically by [`Store::write`].
#[derive(Default)]
pub struct WriteSet {
    ops: Vec<Op>,
}

enum Op {
    PutSm(GroupId, Vec<u8>, Vec<u8>),
    DeleteSm(GroupId, Vec<u8>),
    PutState(GroupId, Vec<u8>, Vec<u8>),
    DeleteState(GroupId, Vec<u8>),
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put_sm(&mut self, group: GroupId, key: &[u8], value: Vec<u8>) {
        self.ops.push(Op::PutSm(group, key.to_vec(), value));
    }
    pub fn delete_sm(&mut self, group: GroupId, key: &[u8]) {
        self.ops.push(Op::DeleteSm(group, key.to_vec()));
    }
    pub fn put_state(&mut self, group: GroupId, name: &str, value: Vec<u8>) {
        self.ops.push(Op::PutState(group, name.as_bytes().to_vec(), value));
    }
    pub fn delete_state(&mut self, group: GroupId, name: &str) {
        self.ops.push(Op::DeleteState(group, name.as_bytes().to_vec()));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Whether a write returns before or after it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Visible at once; on disk with the next WAL sync.
    Buffered,
    /// On disk (WAL fsynced) before the call returns.
    Synced,
}

impl Store {
    /// Opens (or creates) the database in `dir`, refusing a directory written by
    /// an unknown format version.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Engine(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("db");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // One block cache for every column family. Bloom filters (10 bits a
        // key, ~1 % false positives) in the tables and in the memtables let a
        // point lookup of a key that is not there (a send's `random_id`
        // check, most of all) skip the skiplist and every table.
        let cache = rocksdb::Cache::new_lru_cache(64 << 20);
        let mut cfs = Vec::new();
        let mut sm_opts = None;
        for name in ALL_CFS {
            let mut cf = match insert_hint_prefix(name) {
                Some(len) => Options::default()
                    .get_options_from_string(format!("memtable_insert_with_hint_prefix_extractor=rocksdb.CappedPrefix.{len}"))?,
                None => Options::default(),
            };
            cf.set_write_buffer_size(32 << 20);
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            cf.set_block_based_table_factory(&table);
            cf.set_memtable_whole_key_filtering(true);
            cf.set_memtable_prefix_bloom_ratio(0.1);
            if name != CF_CHUNKS {
                cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            } else {
                // Chunk bytes go to blob files when the memtable is flushed:
                // compactions then move small references, not megabytes
                // (deleted chunks' space comes back by blob GC in compaction).
                cf.set_enable_blob_files(true);
                cf.set_min_blob_size(4096);
                cf.set_blob_file_size(256 << 20);
                cf.set_enable_blob_gc(true);
            }
            if name == CF_SM {
                sm_opts = Some(cf.clone());
            }
            cfs.push(ColumnFamilyDescriptor::new(name, cf));
        }
        let fresh = !path.join("CURRENT").exists();
        let db = DB::open_cf_descriptors(&opts, &path, cfs)?;
        let meta = db.cf_handle(CF_META).expect("meta column family is created at open");
        match db.get_cf(meta, FORMAT_KEY)? {
            Some(v) if v == FORMAT_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(Error::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                    supported: FORMAT_VERSION,
                });
            }
            None if fresh => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(meta, FORMAT_KEY, FORMAT_VERSION.to_string(), &wo)?;
            }
            None => {
                return Err(Error::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: "none".into(),
                    supported: FORMAT_VERSION,
                });
            }
        }
        let db = Arc::new(db);
        let syncer = syncer::Syncer::start(db.clone());
        let sm_opts = sm_opts.expect("sm is one of the column families");
        let store = Store { inner: Arc::new(Inner { db, syncer, path: dir.to_path_buf(), chunk_lock: std::sync::Mutex::default(), sm_opts }) };
        store.recover_installs()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn db(&self) -> &DB {
        &self.inner.db
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db().cf_handle(name).expect("every column family is created at open")
    }

    fn write_opts(durability: Durability) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Synced);
        wo
    }

    // ---- node metadata ----

    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.cf(CF_META), name.as_bytes())?)
    }

    /// Writes a node metadata value, synced.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.db().put_cf_opt(self.cf(CF_META), name.as_bytes(), value, &Self::write_opts(Durability::Synced))?;
        Ok(())
    }

    // ---- Raft log ----

    /// Appends (or overwrites) log entries of a group, and sets the group's
    /// state values `states` in the same write. Visible on return; durable
    /// after the next [`Store::sync_wal`] completes.
    pub fn append_log<'a>(&self, group: GroupId, entries: impl IntoIterator<Item = (u64, &'a [u8])>, states: &[(&str, &[u8])]) -> Result<()> {
        let cf = self.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for (index, bytes) in entries {
            batch.put_cf(cf, log_key(group, index), bytes);
        }
        for (name, value) in states {
            batch.put_cf(self.cf(CF_STATE), group_key(group, name.as_bytes()), value);
        }
        self.db().write_opt(batch, &Self::write_opts(Durability::Buffered))?;
        Ok(())
    }

    /// Queues `done` to run once everything written so far is on disk. Many
    /// callers share one fsync.
    pub fn sync_wal(&self, done: SyncCallback) -> Result<()> {
        self.inner.syncer.request(done)
    }

    /// Deletes log entries with index >= `from`.
    pub fn truncate_log(&self, group: GroupId, from: u64) -> Result<()> {
        let cf = self.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_key(group, from).to_vec(), group_end(group));
        self.db().write_opt(batch, &Self::write_opts(Durability::Buffered))?;
        Ok(())
    }

    /// Deletes log entries with index <= `upto` and records `purged` under the
    /// group's state name `purged`, atomically.
    pub fn purge_log(&self, group: GroupId, upto: u64, purged: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), group_key(group, b"purged"), purged);
        batch.delete_range_cf(self.cf(CF_LOG), log_key(group, 0), log_key(group, upto.saturating_add(1)));
        self.db().write_opt(batch, &Self::write_opts(Durability::Buffered))?;
        Ok(())
    }

    /// Entries with `start <= index < end`, in order.
    pub fn read_log(&self, group: GroupId, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(group, end).to_vec());
        let from = log_key(group, start);
        let iter = self.db().iterator_cf_opt(self.cf(CF_LOG), ro, IteratorMode::From(&from, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            out.push((decode_index(&k)?, v.into_vec()));
        }
        Ok(out)
    }

    /// The entry with the highest index of a group.
    pub fn last_log(&self, group: GroupId) -> Result<Option<(u64, Vec<u8>)>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(log_key(group, 0).to_vec());
        let upper = log_key(group, u64::MAX);
        let mut iter = self.db().iterator_cf_opt(self.cf(CF_LOG), ro, IteratorMode::From(&upper, rocksdb::Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                if k.len() == 12 && k[..4] == group.to_be_bytes() {
                    Ok(Some((decode_index(&k)?, v.into_vec())))
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }

    // ---- per-group Raft state ----

    pub fn get_state(&self, group: GroupId, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.cf(CF_STATE), group_key(group, name.as_bytes()))?)
    }

    pub fn put_state(&self, group: GroupId, name: &str, value: &[u8], durability: Durability) -> Result<()> {
        self.db().put_cf_opt(self.cf(CF_STATE), group_key(group, name.as_bytes()), value, &Self::write_opts(durability))?;
        Ok(())
    }

    // ---- state machines ----

    pub fn get_sm(&self, group: GroupId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.cf(CF_SM), group_key(group, key))?)
    }

    /// Every `(key, value)` of a group's state machine whose key starts with `prefix`.
    pub fn scan_sm(&self, group: GroupId, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_sm_page(group, prefix, &[], usize::MAX)
    }

    /// At most `limit` rows of a group whose keys start with `prefix` and
    /// sort after `after` (empty: from the first), in key order.
    pub fn scan_sm_page(&self, group: GroupId, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = group_key(group, prefix);
        let mut ro = ReadOptions::default();
        if let Some(end) = prefix_end(&start) {
            ro.set_iterate_upper_bound(end);
        }
        let from = if after.is_empty() { start } else { group_key(group, after) };
        let iter = self.db().iterator_cf_opt(self.cf(CF_SM), ro, IteratorMode::From(&from, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !after.is_empty() && &k[4..] <= after {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push((k[4..].to_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// A group's state machine and state rows as they are now, to be read
    /// later (for a Raft snapshot): a RocksDB snapshot, which keeps that
    /// moment readable without copying anything, until dropped.
    pub fn pin_group(&self, group: GroupId) -> GroupSnapshot {
        let snap = self.db().snapshot();
        // SAFETY: the snapshot borrows the database. `GroupSnapshot` holds
        // the database (through `store`) for as long as it holds the
        // snapshot, and drops the snapshot first (fields drop in declaration
        // order); nothing borrowed from the snapshot leaves its methods.
        let snap = unsafe { std::mem::transmute::<rocksdb::Snapshot<'_>, rocksdb::Snapshot<'static>>(snap) };
        GroupSnapshot { snap, store: self.clone(), group }
    }

    // ---- media chunks ----
    // `1 ‖ SHA-256` → the chunk's bytes (1 is the format); `0 ‖ SHA-256` →
    // when it was last written (ms, big-endian; empty in chunks written
    // before: time 0) indexes them, so listing reads small keys, not data.

    /// Stores a chunk under its hash and records that it was written at
    /// `now_ms`. The bytes are written unless the same bytes are here
    /// already (a damaged copy is replaced). Visible at once; durable after
    /// the next [`Store::sync_wal`] (callers share that fsync).
    pub fn put_chunk(&self, hash: &[u8; 32], bytes: &[u8], now_ms: u64) -> Result<()> {
        let _one = self.inner.chunk_lock.lock().expect("chunk lock");
        let cf = self.cf(CF_CHUNKS);
        let mut batch = WriteBatch::default();
        if self.db().get_pinned_cf(cf, chunk_key(hash))?.is_none_or(|old| *old != *bytes) {
            batch.put_cf(cf, chunk_key(hash), bytes);
        }
        batch.put_cf(cf, chunk_index_key(hash), now_ms.to_be_bytes());
        self.db().write_opt(batch, &Self::write_opts(Durability::Buffered))?;
        Ok(())
    }

    /// Deletes a chunk unless it was written after `written_before_ms`
    /// (checked and deleted under the chunk lock). Returns whether it did.
    pub fn delete_chunk_if_older(&self, hash: &[u8; 32], written_before_ms: u64) -> Result<bool> {
        let _one = self.inner.chunk_lock.lock().expect("chunk lock");
        let Some(v) = self.db().get_cf(self.cf(CF_CHUNKS), chunk_index_key(hash))? else { return Ok(false) };
        if chunk_time(&v) >= written_before_ms {
            return Ok(false);
        }
        self.delete_chunk(hash)?;
        Ok(true)
    }

    /// Every chunk stored here with when it was last written, in hash order.
    pub fn list_chunk_times(&self) -> Result<Vec<([u8; 32], u64)>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(vec![CHUNK_INDEX + 1]);
        let iter = self.db().iterator_cf_opt(self.cf(CF_CHUNKS), ro, IteratorMode::From(&[CHUNK_INDEX], rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if let Ok(h) = k[1..].try_into() {
                out.push((h, chunk_time(&v)));
            }
        }
        Ok(out)
    }

    pub fn get_chunk(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.cf(CF_CHUNKS), chunk_key(hash))?)
    }

    pub fn has_chunk(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self.db().get_pinned_cf(self.cf(CF_CHUNKS), chunk_key(hash))?.is_some())
    }

    /// [`Store::has_chunk`] for each of `hashes`, in order.
    pub fn has_chunks(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>> {
        hashes.iter().map(|h| self.has_chunk(h)).collect()
    }

    pub fn delete_chunk(&self, hash: &[u8; 32]) -> Result<()> {
        let cf = self.cf(CF_CHUNKS);
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, chunk_key(hash));
        batch.delete_cf(cf, chunk_index_key(hash));
        self.db().write_opt(batch, &Self::write_opts(Durability::Synced))?;
        Ok(())
    }

    /// The hashes of every chunk stored here, in order (from the index).
    pub fn list_chunks(&self) -> Result<Vec<[u8; 32]>> {
        Ok(self.list_chunk_times()?.into_iter().map(|(h, _)| h).collect())
    }

    /// Applies a [`WriteSet`] atomically.
    pub fn write(&self, set: WriteSet, durability: Durability) -> Result<()> {
        let mut batch = WriteBatch::default();
        for op in set.ops {
            match op {
                Op::PutSm(g, k, v) => batch.put_cf(self.cf(CF_SM), group_key(g, &k), v),
                Op::DeleteSm(g, k) => batch.delete_cf(self.cf(CF_SM), group_key(g, &k)),
                Op::PutState(g, k, v) => batch.put_cf(self.cf(CF_STATE), group_key(g, &k), v),
                Op::DeleteState(g, k) => batch.delete_cf(self.cf(CF_STATE), group_key(g, &k)),
            }
        }
        self.db().write_opt(batch, &Self::write_opts(durability))?;
        Ok(())
    }
}

const CHUNK_FORMAT: u8 = 1;
const CHUNK_INDEX: u8 = 0;

fn chunk_index_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = CHUNK_INDEX;
    k[1..].copy_from_slice(hash);
    k
}

fn chunk_time(index_value: &[u8]) -> u64 {
    index_value.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn chunk_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = CHUNK_FORMAT;
    k[1..].copy_from_slice(hash);
    k
}

/// Helpers for tests that need to put a data directory into a given state.
pub mod testing {
    use super::*;

    /// Rewrites the format marker of a closed data directory.
    pub fn set_format_version(dir: &Path, version: &str) -> Result<()> {
        let store = Store::open(dir)?;
        store.db().put_cf_opt(store.cf(CF_META), FORMAT_KEY, version, &Store::write_opts(Durability::Synced))?;
        Ok(())
    }
}

/// One group's rows at the moment [`Store::pin_group`] was called.
pub struct GroupSnapshot {
    // Declared before `store`, so dropped before it (see `pin_group`).
    snap: rocksdb::Snapshot<'static>,
    store: Store,
    group: GroupId,
}

impl GroupSnapshot {
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// State rows of the group, as they were then.
    pub fn states(&self, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        names.iter().map(|name| Ok(self.snap.get_cf(self.store.cf(CF_STATE), group_key(self.group, name.as_bytes()))?)).collect()
    }

    /// Calls `each` with every state-machine row of the group (key without
    /// the group, value) in key order, as they were then; stops at the
    /// first error, `each`'s own included. Reads from disk: call it off the
    /// async runtime.
    pub fn for_each_row(&self, mut each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let start = group_key(self.group, &[]);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(group_end(self.group));
        // Rows read once, in order: they need not stay in the block cache.
        ro.fill_cache(false);
        let mut iter = self.snap.raw_iterator_cf_opt(self.store.cf(CF_SM), ro);
        iter.seek(&start);
        while iter.valid() {
            let (k, v) = (iter.key().expect("a valid iterator has a key"), iter.value().expect("a valid iterator has a value"));
            each(&k[4..], v)?;
            iter.next();
        }
        Ok(iter.status()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::mpsc;

    #[test]
    fn log_append_read_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries: Vec<(u64, Vec<u8>)> = (1..=10).map(|i| (i, vec![i as u8])).collect();
        store.append_log(3, entries.iter().map(|(i, v)| (*i, v.as_slice())), &[("committed", b"c")]).unwrap();
        store.append_log(4, [(1u64, &b"other"[..])], &[]).unwrap();
        assert_eq!(store.get_state(3, "committed").unwrap(), Some(b"c".to_vec()));
        assert_eq!(store.get_state(4, "committed").unwrap(), None);
        assert_eq!(store.read_log(3, 2, 5).unwrap(), vec![(2, vec![2]), (3, vec![3]), (4, vec![4])]);
        assert_eq!(store.last_log(3).unwrap(), Some((10, vec![10])));
        assert_eq!(store.last_log(5).unwrap(), None);
        store.truncate_log(3, 8).unwrap();
        assert_eq!(store.last_log(3).unwrap(), Some((7, vec![7])));
        store.purge_log(3, 4, b"p").unwrap();
        assert_eq!(store.read_log(3, 0, 100).unwrap().first().map(|e| e.0), Some(5));
        assert_eq!(store.get_state(3, "purged").unwrap(), Some(b"p".to_vec()));
        // The neighbouring group is untouched.
        assert_eq!(store.read_log(4, 0, 100).unwrap(), vec![(1, b"other".to_vec())]);
    }

    /// The insert hints are tuning, invisible to reads: this checks that
    /// RocksDB took them (its OPTIONS file records each column family's),
    /// and that rows written under one hint prefix read back in order.
    #[test]
    fn memtable_insert_hints_are_set_per_column_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .unwrap();
        let text = std::fs::read_to_string(options).unwrap();
        let mut hints = BTreeMap::new();
        let mut cf = String::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("[CFOptions \"").and_then(|l| l.strip_suffix("\"]")) {
                cf = name.to_string();
            } else if let Some(v) = line.trim().strip_prefix("memtable_insert_with_hint_prefix_extractor=") {
                hints.insert(cf.clone(), v.to_string());
            }
        }
        let want = [
            ("meta", "nullptr"),
            ("raft_log", "rocksdb.CappedPrefix.4"),
            ("raft_state", "rocksdb.CappedPrefix.16"),
            ("sm", "rocksdb.CappedPrefix.18"),
            ("chunks", "nullptr"),
        ];
        for (name, hint) in want {
            assert_eq!(hints.get(name).map(String::as_str), Some(hint), "column family {name}");
        }
        let mut set = WriteSet::new();
        for id in (0..200u64).rev() {
            set.put_sm(9, &[b"m/msg/".as_slice(), &7u64.to_be_bytes(), &id.to_be_bytes()].concat(), id.to_be_bytes().to_vec());
        }
        store.write(set, Durability::Buffered).unwrap();
        let rows = store.scan_sm(9, b"m/msg/").unwrap();
        assert_eq!(rows.iter().map(|(_, v)| u64::from_be_bytes(v[..8].try_into().unwrap())).collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_keep_when_they_were_last_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        store.put_chunk(&a, b"aaa", 100).unwrap();
        store.put_chunk(&b, b"bbb", 100).unwrap();
        // Written again: the time moves; a differing (damaged) copy is replaced.
        store.put_chunk(&a, b"aaa", 500).unwrap();
        assert_eq!(store.list_chunk_times().unwrap()[0], (a, 500));
        store.put_chunk(&a, b"xxx", 500).unwrap();
        assert_eq!(store.get_chunk(&a).unwrap().as_deref(), Some(&b"xxx"[..]));
        assert_eq!(store.list_chunk_times().unwrap(), vec![(a, 500), (b, 100)]);
        store.put_chunk(&b, b"BBB", 100).unwrap();
        assert_eq!(store.get_chunk(&b).unwrap().as_deref(), Some(&b"BBB"[..]));
        store.put_chunk(&a, b"aaa", 500).unwrap();
        // Only what was written before the cut is collected.
        assert!(!store.delete_chunk_if_older(&a, 300).unwrap());
        assert!(store.delete_chunk_if_older(&b, 300).unwrap());
        assert!(!store.delete_chunk_if_older(&b, 300).unwrap(), "already gone");
        assert_eq!(store.list_chunks().unwrap(), vec![a]);
        assert!(!store.has_chunk(&b).unwrap());
    }

    #[test]
    fn sync_wal_runs_every_callback() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..50u64 {
            store.append_log(1, [(i, &b"x"[..])], &[]).unwrap();
            let tx = tx.clone();
            store.sync_wal(Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        }
        let oks: Vec<bool> = (0..50).map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
        assert!(oks.iter().all(|ok| *ok));
    }

    #[test]
    fn state_machine_write_set_and_pinned_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut ws = WriteSet::new();
        ws.put_sm(1, b"a", b"1".to_vec());
        ws.put_sm(1, b"b", b"2".to_vec());
        ws.put_sm(2, b"a", b"x".to_vec());
        ws.put_state(1, "applied", b"7".to_vec());
        store.write(ws, Durability::Synced).unwrap();
        let pinned = store.pin_group(1);
        // Written after the pin: not in it.
        let mut ws = WriteSet::new();
        ws.put_sm(1, b"a", b"changed".to_vec());
        ws.put_sm(1, b"b2", b"new".to_vec());
        ws.put_state(1, "applied", b"8".to_vec());
        store.write(ws, Durability::Buffered).unwrap();
        let rows = |p: &GroupSnapshot| {
            let mut rows = Vec::new();
            p.for_each_row(|k, v| Ok(rows.push((k.to_vec(), v.to_vec())))).unwrap();
            rows
        };
        assert_eq!(pinned.states(&["applied", "missing"]).unwrap(), vec![Some(b"7".to_vec()), None]);
        assert_eq!(rows(&pinned), vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(rows(&store.pin_group(1)).len(), 3);
        let mut seen = 0;
        let stopped = pinned.for_each_row(|_, _| {
            seen += 1;
            Err(Error::Engine("enough".into()))
        });
        assert!(stopped.is_err() && seen == 1, "an error from the callback ends the walk");
        drop(pinned);
        // A group's rows are replaced whole by installing a staged group.
        let staged = store.stage_group(1, |w| w.put(b"c", b"3")).unwrap();
        store.install_group(staged, Vec::new()).unwrap();
        assert_eq!(store.scan_sm(1, b"").unwrap(), vec![(b"c".to_vec(), b"3".to_vec())]);
        assert_eq!(store.get_sm(2, b"a").unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        testing::set_format_version(dir.path(), "99").unwrap();
        let err = Store::open(dir.path()).err().expect("a future format must be refused");
        assert!(matches!(err, Error::UnsupportedFormat { ref found, .. } if found == "99"), "{err}");
        assert!(err.to_string().contains("format version 99"));
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_meta("node_id", b"5").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_meta("node_id").unwrap(), Some(b"5".to_vec()));
    }
}
