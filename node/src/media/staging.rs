//! Uploads in progress on this node: parts wait in memory (within the
//! node's and each user's room) until their chunk is complete, the chunk is
//! stored and recorded in the upload's group, and `finish` turns the upload
//! into a file (storing the chunks still staged, checking the declared
//! hash, charging the owner's quota, making an image's previews).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::logic::{self, ChunkRef, File, Hash, MediaError, ask, cmd};
use super::{Media, sha256, thumbs};
use crate::error::{Error, Result};

/// Bytes of parts one upload may have waiting (parts far out of order).
/// The node's and each user's room are `media.staging_bytes`,
/// `media.staged_bytes_per_user` and `media.uploads_per_user`.
const STAGING_PER_UPLOAD: usize = 32 << 20;
/// An upload untouched this long loses its staged parts.
const STAGING_IDLE: Duration = Duration::from_secs(3600);
/// Chunks a running hash holds for the ones before them (16 MiB).
const RUNNING_WAITING: usize = 16;

pub(super) struct Staged {
    owner: u64,
    part_size: u32,
    parts: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
    /// Chunks known to be stored (recorded in Raft).
    stored: BTreeSet<u32>,
    touched: Instant,
    /// The file's SHA-256 so far, over the chunks this node stored, in
    /// order; `None` once it cannot be kept (chunks stored elsewhere, or
    /// too far out of order): `finish` then reads the chunks back.
    running: Option<Running>,
}

struct Running {
    next: u32,
    sha: Sha256,
    /// Chunks stored ahead of `next`.
    waiting: BTreeMap<u32, Arc<Vec<u8>>>,
}

impl Staged {
    fn new(owner: u64, part_size: u32, stored: BTreeSet<u32>) -> Staged {
        let running = stored.is_empty().then(|| Running { next: 0, sha: Sha256::new(), waiting: BTreeMap::new() });
        Staged { owner, part_size, parts: BTreeMap::new(), bytes: 0, stored, touched: Instant::now(), running }
    }

    /// Chunk `k` was stored: the running hash takes it (now or when its turn comes).
    fn hashed(&mut self, k: u32, bytes: Arc<Vec<u8>>) {
        let Some(r) = &mut self.running else { return };
        if k < r.next {
            return;
        }
        r.waiting.insert(k, bytes);
        while let Some(b) = r.waiting.remove(&r.next) {
            r.sha.update(&*b);
            r.next += 1;
        }
        if r.waiting.len() > RUNNING_WAITING {
            self.running = None;
        }
    }

    /// The SHA-256 of the whole file, if the running hash saw all `chunks`.
    fn whole_hash(&self, chunks: u32) -> Option<Hash> {
        self.running.as_ref().filter(|r| r.next == chunks).map(|r| r.sha.clone().finalize().into())
    }

    /// Whether the parts of a chunk (`range`) are all here at full size: the
    /// chunk can be stored before `finish` (which completes the file's last,
    /// shorter chunk).
    fn ready(&self, range: std::ops::Range<u32>, part_size: u32) -> bool {
        range.into_iter().all(|p| self.parts.get(&p).is_some_and(|b| b.len() == part_size as usize))
    }

    /// At `finish` of `parts` parts making `size` bytes: the parts of a
    /// chunk (`range`) if they are all here, each the size it must have
    /// (the file's last part the rest); `None` (nothing taken) if one is not.
    fn take_for_finish(&mut self, range: std::ops::Range<u32>, parts: u32, part_size: u32, size: u64) -> std::result::Result<Option<BTreeMap<u32, Vec<u8>>>, MediaError> {
        if !range.clone().all(|p| self.parts.contains_key(&p)) {
            return Ok(None);
        }
        let last_len = size - (parts as u64 - 1) * part_size as u64;
        for p in range.clone() {
            let want = if p + 1 == parts { last_len as usize } else { part_size as usize };
            if self.parts[&p].len() != want {
                return Err(MediaError::PartInvalid(format!("part {p} has {} bytes, not {want}", self.parts[&p].len())));
            }
        }
        Ok(Some(take_parts(self, range)))
    }

    /// Chunk `k` was stored as `ours` (made of `bytes`) and the upload's
    /// group answered `recorded`: another node's chunk recorded first
    /// counts, and this node's running hash cannot stand for the file then.
    /// Returns the chunk that counts.
    fn stored_as(&mut self, k: u32, ours: ChunkRef, recorded: Option<ChunkRef>, bytes: Arc<Vec<u8>>) -> ChunkRef {
        self.stored.insert(k);
        match recorded {
            Some(theirs) if theirs != ours => {
                self.running = None;
                theirs
            }
            _ => {
                self.hashed(k, bytes);
                ours
            }
        }
    }

    /// The upload's record names `recorded` as its stored chunks: it is the
    /// authority (the upload may have expired since this node staged parts
    /// of it); a running hash over other chunks is dropped.
    fn reconcile(&mut self, recorded: BTreeSet<u32>) {
        if self.stored != recorded {
            self.stored = recorded;
            self.running = None;
        }
    }
}

/// Whether `incoming` more bytes for `upload` of user `me` may wait in
/// `staging`: the user's unfinished uploads and bytes first (their own
/// quota: `QUOTA_EXCEEDED`), then the node's room (`UNAVAILABLE`, retry).
/// An upload holding no bytes yet counts as new.
fn staging_room(staging: &HashMap<u64, Staged>, cfg: &crate::config::MediaConfig, me: u64, upload: u64, incoming: usize) -> Result<()> {
    let (mut total, mut mine, mut my_uploads) = (0, 0, 0);
    for (id, s) in staging {
        total += s.bytes;
        if s.owner == me && s.bytes > 0 {
            mine += s.bytes;
            if *id != upload {
                my_uploads += 1;
            }
        }
    }
    let holds = staging.get(&upload).is_some_and(|s| s.bytes > 0);
    if !holds && my_uploads >= cfg.uploads_per_user {
        return Err(MediaError::QuotaExceeded(format!("at most {} unfinished uploads with parts waiting on a node; finish one first", cfg.uploads_per_user)).into());
    }
    if mine + incoming > cfg.staged_bytes_per_user {
        return Err(MediaError::QuotaExceeded(format!("at most {} bytes of your parts may wait on a node; send each chunk's parts before the next", cfg.staged_bytes_per_user)).into());
    }
    if total + incoming > cfg.staging_bytes {
        return Err(Error::Unavailable("too many parts waiting on this node; retry".into()));
    }
    Ok(())
}

/// Takes the parts of `range` (those present) out of `s`.
fn take_parts(s: &mut Staged, range: std::ops::Range<u32>) -> BTreeMap<u32, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in range {
        if let Some(b) = s.parts.remove(&p) {
            s.bytes -= b.len();
            out.insert(p, b);
        }
    }
    out
}

/// A new file's id: random, with its group in the low 16 bits (as chat
/// ids carry theirs) and bit 16 set.
fn file_id(random: u64, group: u32) -> u64 {
    (random & !0xffff) | (1 << 16) | group as u64
}

impl Media {
    fn upload_group(&self, upload: u64) -> Result<u32> {
        Ok(logic::upload_group(upload, self.node.raft()?.data_groups()))
    }

    async fn recorded(&self, upload: u64, owner: u64) -> Result<Option<logic::Upload>> {
        match self.read(self.upload_group(upload)?, ask::Upload { upload }).await? {
            Some(u) if u.owner != owner => Err(MediaError::BadRequest("not an upload id you can use; choose a new random one".into()).into()),
            u => Ok(u),
        }
    }

    /// Stores one part; stores its chunk once the chunk's parts are all here.
    pub async fn upload_part(&self, me: u64, upload: u64, part: u32, part_size: u32, bytes: Vec<u8>) -> Result<()> {
        logic::check_part(part, part_size, bytes.len())?;
        let known = self.staging.lock().expect("staging").contains_key(&upload);
        if !known {
            let rec = self.recorded(upload, me).await?;
            if let Some(r) = &rec
                && r.part_size != part_size
            {
                return Err(MediaError::PartInvalid(format!("this upload's parts are {} bytes", r.part_size)).into());
            }
            let stored = rec.map(|r| r.chunks.keys().copied().collect()).unwrap_or_default();
            self.staging.lock().expect("staging").entry(upload).or_insert_with(|| Staged::new(me, part_size, stored));
        }
        let ppc = logic::parts_per_chunk(part_size);
        let k = part / ppc;
        let ready = {
            let mut staging = self.staging.lock().expect("staging");
            staging.retain(|_, s| s.touched.elapsed() < STAGING_IDLE);
            staging_room(&staging, &self.node.config().media, me, upload, bytes.len())?;
            let s = staging.entry(upload).or_insert_with(|| Staged::new(me, part_size, BTreeSet::new()));
            if s.owner != me {
                return Err(MediaError::BadRequest("not an upload id you can use; choose a new random one".into()).into());
            }
            if s.part_size != part_size {
                return Err(MediaError::PartInvalid(format!("this upload's parts are {} bytes", s.part_size)).into());
            }
            s.touched = Instant::now();
            if s.stored.contains(&k) {
                return Ok(());
            }
            if s.bytes + bytes.len() > STAGING_PER_UPLOAD {
                return Err(Error::Unavailable("too many parts waiting on this node; send the parts in order and retry".into()));
            }
            s.bytes += bytes.len();
            if let Some(old) = s.parts.insert(part, bytes) {
                s.bytes -= old.len();
            }
            let range = k * ppc..(k + 1) * ppc;
            if s.ready(range.clone(), part_size) { Some(take_parts(s, range)) } else { None }
        };
        if let Some(parts) = ready {
            self.store_staged(me, upload, part_size, k, parts).await?;
        }
        Ok(())
    }

    /// Stores chunk `k` made of `parts`; on failure the parts go back to staging.
    async fn store_staged(&self, me: u64, upload: u64, part_size: u32, k: u32, parts: BTreeMap<u32, Vec<u8>>) -> Result<ChunkRef> {
        let bytes: Arc<Vec<u8>> = Arc::new(parts.values().flatten().copied().collect());
        let hash = sha256(&bytes);
        let chunk = ChunkRef { hash, len: bytes.len() as u32 };
        let stored = async {
            self.store_chunk(hash, bytes.clone()).await?;
            let cmd = cmd::AddChunk { upload, owner: me, part_size, index: k, chunk, now_ms: self.clock.now_ms() };
            self.exec(self.upload_group(upload)?, cmd).await
        }
        .await;
        let mut staging = self.staging.lock().expect("staging");
        let s = staging.entry(upload).or_insert_with(|| Staged::new(me, part_size, BTreeSet::new()));
        match stored {
            Ok(recorded) => Ok(s.stored_as(k, chunk, recorded, bytes)),
            Err(e) => {
                for (p, b) in parts {
                    s.bytes += b.len();
                    s.parts.entry(p).or_insert(b);
                }
                Err(e)
            }
        }
    }

    /// Turns an upload into a file (see `FinishUpload` in client.proto).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(&self, me: u64, upload: u64, parts: u32, part_size: u32, size: u64, sha: Hash, name: String, mime: String) -> Result<File> {
        let chunks = logic::check_shape(size, parts, part_size)?;
        let group = self.upload_group(upload)?;
        let record = self.recorded(upload, me).await?;
        if let Some(s) = self.staging.lock().expect("staging").get_mut(&upload) {
            s.reconcile(record.as_ref().map(|r| r.chunks.keys().copied().collect()).unwrap_or_default());
        }
        let mut stored: BTreeMap<u32, ChunkRef> = match record {
            Some(r) => r.chunks,
            // No upload under this id: finished before (a retry), or new.
            None => match self.read(group, ask::Finished { upload }).await {
                Ok(f) if f.owner == me => return Ok(f),
                Ok(_) | Err(Error::Media(MediaError::NotFound)) => BTreeMap::new(),
                Err(e) => return Err(e),
            },
        };
        // Store every chunk this node has all the parts of.
        for k in 0..chunks {
            if stored.contains_key(&k) {
                continue;
            }
            let range = logic::chunk_parts(k, part_size, parts);
            let taken = match self.staging.lock().expect("staging").get_mut(&upload) {
                Some(s) if s.owner == me => s.take_for_finish(range, parts, part_size, size)?,
                _ => None,
            };
            if let Some(p) = taken {
                let chunk = self.store_staged(me, upload, part_size, k, p).await?;
                stored.insert(k, chunk);
            }
        }
        let staged: BTreeSet<u32> = self.staging.lock().expect("staging").get(&upload).map(|s| s.parts.keys().copied().collect()).unwrap_or_default();
        let missing = logic::missing_parts(&stored, &staged, parts, part_size);
        if !missing.is_empty() {
            return Err(MediaError::PartMissing(missing).into());
        }
        // Parts that completed a chunk while this finish ran: not stored yet.
        if let Some(k) = (0..chunks).find(|k| !stored.contains_key(k)) {
            return Err(MediaError::PartMissing(logic::chunk_parts(k, part_size, parts).collect()).into());
        }
        // The declared hash: kept while this node stored the chunks, or
        // over the chunks read back in order. A small file's bytes are read
        // for its previews.
        let running = self.staging.lock().expect("staging").get(&upload).and_then(|s| s.whole_hash(chunks));
        let mut h = Sha256::new();
        let mut whole = Vec::new();
        let read_back = running.is_none() || size <= thumbs::MAX_SOURCE;
        if read_back {
            for k in 0..chunks {
                let c = self.chunk(&stored[&k].hash).await?;
                h.update(&*c);
                if size <= thumbs::MAX_SOURCE {
                    whole.extend_from_slice(&c);
                }
            }
        }
        // The bytes read back, when they were, are what the file will serve.
        let actual: Hash = match running {
            Some(r) if !read_back => r,
            _ => h.finalize().into(),
        };
        if actual != sha {
            self.exec(group, cmd::Abort { upload, owner: me }).await?;
            self.staging.lock().expect("staging").remove(&upload);
            return Err(MediaError::HashMismatch.into());
        }
        // The owner's quota, counted in their own group (files land in any).
        let quota = self.node.config().media.stored_bytes_per_user;
        let charge = cmd::Charge { owner: me, upload, bytes: size, quota };
        if let Err(e) = self.exec(crate::auth::logic::user_group(me), charge).await {
            if matches!(e, Error::Media(MediaError::QuotaExceeded(_))) {
                self.exec(group, cmd::Abort { upload, owner: me }).await?;
                self.staging.lock().expect("staging").remove(&upload);
            }
            return Err(e);
        }
        let file = file_id(rand::random::<u64>(), group);
        let thumbs = self.store_previews(whole).await?;
        let cmd = cmd::Finish { upload, owner: me, file, size, sha256: sha, name, mime, thumbs, now_ms: self.clock.now_ms() };
        let file = self.exec(group, cmd).await?;
        self.staging.lock().expect("staging").remove(&upload);
        Ok(file)
    }

    /// Makes an image's previews and stores each as a chunk.
    async fn store_previews(&self, image: Vec<u8>) -> Result<Vec<logic::Thumb>> {
        if image.is_empty() {
            return Ok(Vec::new());
        }
        // One decode at a time per node: a small file can declare a large canvas.
        let _turn = self.decoding.acquire().await.map_err(|e| Error::Io(e.to_string()))?;
        let previews = tokio::task::spawn_blocking(move || thumbs::previews(&image)).await.map_err(|e| Error::Io(e.to_string()))?;
        let mut out = Vec::new();
        for p in previews {
            let hash = sha256(&p.jpeg);
            let chunk = ChunkRef { hash, len: p.jpeg.len() as u32 };
            self.store_chunk(hash, Arc::new(p.jpeg)).await?;
            out.push(logic::Thumb { kind: p.kind, width: p.width, height: p.height, chunk });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_waiting_parts_have_their_own_room_before_the_nodes() {
        let cfg = crate::config::MediaConfig { staging_bytes: 100, staged_bytes_per_user: 40, uploads_per_user: 2, ..Default::default() };
        let mut staging = HashMap::new();
        let staged = |owner, bytes| Staged { bytes, ..Staged::new(owner, 8, BTreeSet::new()) };
        staging.insert(1, staged(7, 10));
        staging.insert(2, staged(7, 10));
        let code = |r: Result<()>| r.err().map(|e| e.code());
        assert_eq!(code(staging_room(&staging, &cfg, 7, 1, 10)), None, "an upload that holds parts goes on");
        assert_eq!(code(staging_room(&staging, &cfg, 7, 3, 10)), Some(courier_proto::Code::QuotaExceeded), "a third unfinished upload");
        staging.insert(3, staged(7, 0));
        assert_eq!(code(staging_room(&staging, &cfg, 7, 3, 10)), Some(courier_proto::Code::QuotaExceeded), "an empty entry is still new");
        assert_eq!(code(staging_room(&staging, &cfg, 7, 1, 25)), Some(courier_proto::Code::QuotaExceeded), "past the user's bytes");
        assert_eq!(code(staging_room(&staging, &cfg, 8, 9, 40)), None, "another user has their own room");
        staging.insert(4, staged(9, 40));
        staging.insert(5, staged(10, 35));
        assert_eq!(code(staging_room(&staging, &cfg, 8, 9, 10)), Some(courier_proto::Code::Unavailable), "then the node's room");
    }

    #[test]
    fn the_running_hash_takes_chunks_in_order_whatever_order_they_are_stored_in() {
        let chunks: Vec<Arc<Vec<u8>>> = (0..4u8).map(|i| Arc::new(vec![i; 1000])).collect();
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut s = Staged::new(1, 1024, BTreeSet::new());
        for k in [1, 0, 3] {
            s.hashed(k, chunks[k as usize].clone());
        }
        assert_eq!(s.whole_hash(4), None, "chunk 2 is not hashed yet");
        s.hashed(2, chunks[2].clone());
        s.hashed(1, chunks[1].clone()); // stored again: already counted
        assert_eq!(s.whole_hash(4), Some(sha256(&whole)));
        // An upload this node did not start has no running hash.
        assert_eq!(Staged::new(1, 1024, [0].into()).whole_hash(1), None);
        // Too far out of order: it gives up (finish reads the chunks back).
        let mut far = Staged::new(1, 1024, BTreeSet::new());
        for k in 1..=(RUNNING_WAITING as u32 + 1) {
            far.hashed(k, chunks[0].clone());
        }
        assert!(far.running.is_none());
    }

    /// An upload of 1 KiB parts holding `parts`, each `len(p)` bytes.
    fn holding(parts: impl IntoIterator<Item = u32>, len: impl Fn(u32) -> usize) -> Staged {
        let mut s = Staged::new(1, 1024, BTreeSet::new());
        for p in parts {
            s.parts.insert(p, vec![p as u8; len(p)]);
            s.bytes += len(p);
        }
        s
    }

    #[test]
    fn a_chunk_is_made_of_its_own_parts_all_at_full_size() {
        let mut s = holding([0, 1, 2, 4], |_| 1024);
        assert!(s.ready(0..3, 1024));
        assert!(!s.ready(3..6, 1024), "part 3 is missing");
        s.parts.insert(3, vec![3; 1000]);
        s.bytes += 1000;
        assert!(!s.ready(3..5, 1024), "a short part completes no chunk before finish");
        let taken = take_parts(&mut s, 0..3);
        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(taken[&1], vec![1; 1024]);
        assert_eq!((s.parts.keys().copied().collect::<Vec<_>>(), s.bytes), (vec![3, 4], 2024), "the other parts and their bytes stay");
        assert_eq!(take_parts(&mut s, 4..9).len(), 1, "a range takes the parts it has");
        assert_eq!(s.bytes, 1000);
    }

    #[test]
    fn finish_takes_a_chunk_whose_parts_are_all_here_at_their_sizes() {
        // 5 parts of 1 KiB making 4,196 bytes: the last part holds 100.
        let (parts, size) = (5, 4 * 1024 + 100);
        let mut s = holding(0..5, |p| if p == 4 { 100 } else { 1024 });
        assert_eq!(s.take_for_finish(0..3, parts, 1024, size).unwrap().map(|t| t.len()), Some(3));
        assert_eq!(s.take_for_finish(3..5, parts, 1024, size).unwrap().map(|t| t.len()), Some(2), "the last part is the rest");
        assert_eq!(s.bytes, 0);
        let mut gap = holding([0, 2], |_| 1024);
        assert_eq!(gap.take_for_finish(0..3, parts, 1024, size), Ok(None), "a missing part: the client sends it again");
        assert_eq!(gap.parts.len(), 2, "nothing taken");
        let mut short = holding(0..3, |p| if p == 1 { 1000 } else { 1024 });
        assert!(matches!(short.take_for_finish(0..3, parts, 1024, size), Err(MediaError::PartInvalid(_))), "a short part before the last");
        let mut long_last = holding(3..5, |_| 1024);
        assert!(matches!(long_last.take_for_finish(3..5, parts, 1024, size), Err(MediaError::PartInvalid(_))), "a last part longer than the rest");
        assert_eq!(long_last.parts.len(), 2, "nothing taken");
    }

    #[test]
    fn a_chunk_recorded_by_another_node_first_counts_and_ends_the_running_hash() {
        let bytes = Arc::new(vec![5u8; 100]);
        let ours = ChunkRef { hash: sha256(&bytes), len: 100 };
        let theirs = ChunkRef { hash: [9; 32], len: 100 };
        let mut s = Staged::new(1, 1024, BTreeSet::new());
        assert_eq!(s.stored_as(0, ours, Some(ours), bytes.clone()), ours, "the group recorded this node's chunk");
        assert_eq!(s.whole_hash(1), Some(sha256(&bytes)), "the running hash took it");
        assert_eq!(s.stored_as(1, ours, None, bytes.clone()), ours, "a reply naming no chunk: ours counts");
        assert_eq!(s.whole_hash(2), Some(sha256(&[bytes.as_slice(), bytes.as_slice()].concat())));
        assert_eq!(s.stored_as(2, ours, Some(theirs), bytes.clone()), theirs);
        assert!(s.running.is_none(), "finish reads the chunks back");
        assert_eq!(s.stored, [0, 1, 2].into());
        // The record is the authority on what is stored.
        let mut r = Staged::new(1, 1024, BTreeSet::new());
        r.stored_as(0, ours, None, bytes.clone());
        r.reconcile([0].into());
        assert!(r.running.is_some(), "the same chunks: the running hash stands");
        r.reconcile([0, 1].into());
        assert_eq!((r.stored.clone(), r.running.is_none()), ([0, 1].into(), true), "chunks stored elsewhere: it does not");
    }

    #[test]
    fn a_file_id_carries_its_group() {
        for (random, group) in [(0, 1), (u64::MAX, 7), (0x1234_5678_9abc_def0, 0xffff)] {
            let id = file_id(random, group);
            assert_eq!(logic::file_group(id), group);
            assert_eq!(id >> 17, random >> 17, "random above the group");
            assert_ne!(id >> 16, 0, "never only a group");
        }
    }
}
