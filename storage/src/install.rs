//! Installing a group's state machine from a snapshot, through a file.
//!
//! A follower that receives a snapshot writes its rows, as they arrive, to a
//! staged SST file ([`Store::stage_group`]); nothing of the group is held in
//! memory, whatever its size. The file also holds a range tombstone over the
//! whole group, which deletes every older row of the group and none of the
//! file's own: ingesting it replaces the group's rows in one step, so no
//! reader ever sees the group half-installed. Installing it
//! ([`Store::install_group`]) also sets the group's state rows (applied id,
//! membership), atomically across a crash:
//!
//! 1. one synced write records the install: a marker in `raft_state`
//!    naming the file and the state rows to set;
//! 2. a second name of the file is ingested into `sm` (RocksDB moves that
//!    name into the database; durable on return), after a flush of `sm`'s
//!    memtable so the ingest needs none while it holds the write queue;
//! 3. one synced write sets the state rows and deletes the marker;
//! 4. the staged file is removed.
//!
//! A node that stops between 1 and 3 finds the marker at the next open and
//! does 2–4 from it, before anything reads the group (ingesting twice leaves
//! the same rows: the second file's tombstone covers the first's). The
//! marker's own name of the file stays until step 4, so a marker whose file
//! is missing is damage, reported, never taken for progress. Staged files no
//! marker names are left over from installs that never began (or from step
//! 4) and are removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch};

use crate::{CF_SM, CF_STATE, Durability, Error, GroupId, Result, Store, group_end, group_key};

/// The state row that marks an install in progress.
const INSTALLING: &[u8] = b"installing";
/// The marker's format.
const MARKER_FORMAT: u8 = 1;
/// Where staged files live, under the data directory.
pub(crate) const STAGING_DIR: &str = "staging";

/// A group's rows in a staged file, not yet part of the database. Dropped
/// without being installed, the file goes.
pub struct StagedGroup {
    group: GroupId,
    /// Until an install's marker names it.
    file: Option<PathBuf>,
    rows: u64,
}

impl StagedGroup {
    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl Drop for StagedGroup {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Writes one group's rows, in key order, to a staged file.
pub struct StageWriter<'a> {
    writer: SstFileWriter<'a>,
    group: GroupId,
    key: Vec<u8>,
    rows: u64,
}

impl StageWriter<'_> {
    /// Adds a row (its key without the group); keys must come in strictly
    /// increasing order.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.key.clear();
        self.key.extend_from_slice(&self.group.to_be_bytes());
        self.key.extend_from_slice(key);
        self.writer.put(&self.key, value).map_err(|e| Error::Corrupt(format!("snapshot row {} of group {}: {e}", self.rows + 1, self.group)))?;
        self.rows += 1;
        Ok(())
    }
}

/// What an install leaves in the group's state rows: each name with its new
/// value, or `None` to delete it.
pub type StateChanges = Vec<(String, Option<Vec<u8>>)>;

impl Store {
    /// Writes the rows `fill` puts to a staged file for `group`. Blocking: call
    /// it off the async runtime. On error nothing is left behind.
    pub fn stage_group(&self, group: GroupId, fill: impl FnOnce(&mut StageWriter<'_>) -> Result<()>) -> Result<StagedGroup> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = self.staging_dir();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = dir.join(format!("g{group}-{nanos}-{}.sst", SEQ.fetch_add(1, Ordering::Relaxed)));
        // From here on the file is the staged group's: dropped on any error.
        let mut staged = StagedGroup { group, file: Some(path.clone()), rows: 0 };
        let writer = SstFileWriter::create(&self.inner.sm_opts);
        writer.open(&path)?;
        let mut w = StageWriter { writer, group, key: Vec::new(), rows: 0 };
        // The file replaces the whole group (a group without rows too: a
        // file of just the tombstone).
        w.writer.delete_range(group_key(group, &[]), group_end(group))?;
        fill(&mut w)?;
        staged.rows = w.rows;
        // `finish` syncs the file; its name is synced before a marker names it.
        w.writer.finish()?;
        sync_dir(&dir)?;
        Ok(staged)
    }

    /// Replaces `staged`'s group's rows with the staged ones and applies
    /// `states` to its state rows, atomically across a crash (see the module
    /// text). Blocking: call it off the async runtime, with nothing else
    /// writing the group.
    pub fn install_group(&self, staged: StagedGroup, states: StateChanges) -> Result<()> {
        self.install_steps(staged, states, 4)
    }

    /// The install's first `steps` steps (all four but in tests).
    pub(crate) fn install_steps(&self, mut staged: StagedGroup, states: StateChanges, steps: u8) -> Result<()> {
        let path = staged.file.as_ref().expect("a staged group not yet installed has its file");
        let marker = Marker { file: path.file_name().expect("a staged file has a name").to_string_lossy().into_owned(), states };
        let group = staged.group;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_STATE), group_key(group, INSTALLING), marker.encode());
        self.db().write_opt(batch, &Self::write_opts(Durability::Synced))?;
        // The marker names the file now: it goes with the install, not the drop.
        staged.file = None;
        if steps > 1 {
            self.finish_install(group, &marker, steps)?;
        }
        Ok(())
    }

    /// Steps 2–4 of an install whose marker is written.
    fn finish_install(&self, group: GroupId, marker: &Marker, steps: u8) -> Result<()> {
        let file = self.staging_dir().join(&marker.file);
        let second = file.with_extension("ingest");
        // A second name left by an install a stop interrupted goes first.
        match std::fs::remove_file(&second) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Engine(format!("remove {}: {e}", second.display()))),
            _ => {}
        }
        std::fs::hard_link(&file, &second).map_err(|e| Error::Engine(format!("link {}: {e}", second.display())))?;
        self.db().flush_cf(self.cf(CF_SM))?;
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.db().ingest_external_file_cf_opts(self.cf(CF_SM), &opts, vec![&second])?;
        if steps < 3 {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (name, value) in &marker.states {
            match value {
                Some(v) => batch.put_cf(self.cf(CF_STATE), group_key(group, name.as_bytes()), v),
                None => batch.delete_cf(self.cf(CF_STATE), group_key(group, name.as_bytes())),
            }
        }
        batch.delete_cf(self.cf(CF_STATE), group_key(group, INSTALLING));
        self.db().write_opt(batch, &Self::write_opts(Durability::Synced))?;
        if steps > 3 {
            let _ = std::fs::remove_file(&file);
        }
        Ok(())
    }

    fn staging_dir(&self) -> PathBuf {
        self.path().join(STAGING_DIR)
    }

    /// Makes the staging directory (its name synced), finishes every install
    /// a stop interrupted, then removes staged files nothing names. Called
    /// at open, before anything reads a group.
    pub(crate) fn recover_installs(&self) -> Result<()> {
        let dir = self.staging_dir();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Engine(format!("create {}: {e}", dir.display())))?;
            sync_dir(self.path())?;
        }
        let mut interrupted = Vec::new();
        for item in self.db().iterator_cf(self.cf(CF_STATE), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            if k.len() == 4 + INSTALLING.len() && &k[4..] == INSTALLING {
                let group = GroupId::from_be_bytes(k[..4].try_into().expect("4 bytes"));
                interrupted.push((group, Marker::decode(&v).map_err(|e| Error::Corrupt(format!("group {group}: {e}")))?));
            }
        }
        for (group, marker) in interrupted {
            let file = dir.join(&marker.file);
            tracing::warn!(group, file = %file.display(), "finishing a snapshot install a stop interrupted");
            let advice = "move this node's data directory away and let the node join again (its replicas come back by snapshot)";
            match file.try_exists() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::Corrupt(format!("group {group}: an interrupted snapshot install's file {} is gone; {advice}", file.display())));
                }
                Err(e) => return Err(Error::Engine(format!("group {group}: cannot look for {}: {e}", file.display()))),
            }
            self.finish_install(group, &marker, 4).map_err(|e| {
                Error::Engine(format!("group {group}: finishing an interrupted snapshot install from {}: {e}; {advice}", file.display()))
            })?;
        }
        remove_staged_files(&dir);
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::Engine(format!("sync {}: {e}", dir.display())))
}

fn remove_staged_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(file = %e.path().display(), "cannot remove a staged snapshot file: {err}");
        }
    }
}

/// What an interrupted install needs to be finished.
struct Marker {
    /// The staged file's name in the staging directory.
    file: String,
    states: StateChanges,
}

impl Marker {
    /// Format byte; the state count (u32 BE); per state its name and value
    /// (u32 BE length first; a value's length `u32::MAX` for a delete); then
    /// the staged file's name (the rest, UTF-8).
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![MARKER_FORMAT];
        out.extend_from_slice(&(self.states.len() as u32).to_be_bytes());
        for (name, value) in &self.states {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            match value {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v);
                }
                None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
        out.extend_from_slice(self.file.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Marker> {
        let bad = || Error::Corrupt("snapshot install marker".into());
        let mut rest = match bytes.split_first() {
            Some((&MARKER_FORMAT, rest)) => rest,
            Some((f, _)) => return Err(Error::Corrupt(format!("snapshot install marker of unknown format {f}"))),
            None => return Err(bad()),
        };
        let u32_at = |rest: &mut &[u8]| -> Result<u32> {
            let (n, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            *rest = tail;
            Ok(u32::from_be_bytes(*n))
        };
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            if rest.len() < n {
                return Err(bad());
            }
            let (v, tail) = rest.split_at(n);
            *rest = tail;
            Ok(v.to_vec())
        };
        let count = u32_at(&mut rest)?;
        let mut states = Vec::new();
        for _ in 0..count {
            let n = u32_at(&mut rest)? as usize;
            let name = String::from_utf8(take(&mut rest, n)?).map_err(|_| bad())?;
            let value = match u32_at(&mut rest)? {
                u32::MAX => None,
                n => Some(take(&mut rest, n as usize)?),
            };
            states.push((name, value));
        }
        let file = String::from_utf8(rest.to_vec()).ok().filter(|f| !f.is_empty() && !f.contains('/')).ok_or_else(bad)?;
        Ok(Marker { file, states })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteSet;

    fn rows(store: &Store, group: GroupId) -> Vec<(Vec<u8>, Vec<u8>)> {
        store.scan_sm(group, b"").unwrap()
    }

    fn stage(store: &Store, group: GroupId, n: u32) -> StagedGroup {
        store
            .stage_group(group, |w| {
                for i in 0..n {
                    w.put(format!("new{i:04}").as_bytes(), &i.to_be_bytes())?;
                }
                Ok(())
            })
            .unwrap()
    }

    fn states() -> StateChanges {
        vec![("applied".into(), Some(b"7".to_vec())), ("old".into(), None)]
    }

    fn expected(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n).map(|i| (format!("new{i:04}").into_bytes(), i.to_be_bytes().to_vec())).collect()
    }

    fn seed(store: &Store) {
        let mut ws = WriteSet::new();
        ws.put_sm(5, b"old-row", b"x".to_vec());
        ws.put_sm(4, b"other group", b"y".to_vec());
        ws.put_sm(6, b"other group", b"z".to_vec());
        ws.put_state(5, "old", b"o".to_vec());
        ws.put_state(5, "applied", b"3".to_vec());
        store.write(ws, Durability::Synced).unwrap();
    }

    fn staging_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(STAGING_DIR)).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn an_install_swaps_the_groups_rows_and_sets_its_states() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        seed(&store);
        let staged = stage(&store, 5, 500);
        assert_eq!(staged.rows(), 500);
        assert_eq!(staging_files(dir.path()), 1);
        store.install_group(staged, states()).unwrap();
        assert!(rows(&store, 5) == expected(500));
        assert_eq!(rows(&store, 4), vec![(b"other group".to_vec(), b"y".to_vec())], "other groups untouched");
        assert_eq!(rows(&store, 6), vec![(b"other group".to_vec(), b"z".to_vec())]);
        assert_eq!(store.pin_group(5).states(&["applied", "old", "installing"]).unwrap(), vec![Some(b"7".to_vec()), None, None]);
        assert_eq!(staging_files(dir.path()), 0, "the staged file is gone");

        // A group without rows, and a staged group never installed.
        store.install_group(stage(&store, 5, 0), states()).unwrap();
        assert!(rows(&store, 5).is_empty());
        drop(stage(&store, 5, 3));
        assert_eq!(staging_files(dir.path()), 0);
        assert!(store.stage_group(5, |w| { w.put(b"b", b"")?; w.put(b"a", b"") }).is_err(), "rows out of order");
        assert_eq!(staging_files(dir.path()), 0, "nothing left behind");
    }

    #[test]
    fn an_install_a_stop_interrupted_is_finished_at_the_next_open() {
        for steps in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Store::open(dir.path()).unwrap();
                seed(&store);
                store.install_steps(stage(&store, 5, 300), states(), steps).unwrap();
                if steps == 1 {
                    assert_eq!(rows(&store, 5), vec![(b"old-row".to_vec(), b"x".to_vec())], "the old rows stand until the ingest replaces them");
                }
                // A staged file no install names, as a stop leaves it.
                std::fs::write(dir.path().join(STAGING_DIR).join("g5-stray.sst"), b"x").unwrap();
            }
            let store = Store::open(dir.path()).unwrap();
            assert!(rows(&store, 5) == expected(300), "after step {steps}: the snapshot's rows");
            assert_eq!(rows(&store, 4).len(), 1);
            assert_eq!(
                store.pin_group(5).states(&["applied", "old", "installing"]).unwrap(),
                vec![Some(b"7".to_vec()), None, None],
                "after step {steps}"
            );
            assert_eq!(staging_files(dir.path()), 0);
        }

        // A marker whose file is gone is damage: the node says so and does not open.
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            seed(&store);
            store.install_steps(stage(&store, 5, 10), states(), 2).unwrap();
            for f in std::fs::read_dir(dir.path().join(STAGING_DIR)).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        let err = Store::open(dir.path()).err().expect("a marker without its file is refused");
        assert!(err.to_string().contains("is gone") && err.to_string().contains("join again"), "{err}");
    }

    #[test]
    fn markers_round_trip_and_refuse_garbage() {
        let m = Marker { file: "g1-2-3.sst".into(), states: states() };
        let back = Marker::decode(&m.encode()).unwrap();
        assert_eq!((back.file, back.states), (m.file, m.states));
        let nameless = Marker { file: String::new(), states: vec![] };
        assert!(Marker::decode(&nameless.encode()).is_err(), "a marker names its file");
        let elsewhere = Marker { file: "../db/CURRENT".into(), states: vec![] };
        assert!(Marker::decode(&elsewhere.encode()).is_err(), "only a name in the staging directory");
        assert!(Marker::decode(&[2, 0, 0, 0, 0]).is_err(), "unknown format");
        assert!(Marker::decode(&[1, 0, 0, 0, 1, 0, 0]).is_err(), "truncated");
    }
}
