//! The media service: uploads in parts, files as content-addressed 1 MiB
//! chunks on R = 3 nodes chosen by rendezvous hashing (`ring.rs`), file
//! metadata in Raft (`logic.rs`), downloads by byte range from any node.
//!
//! Write path of a chunk: the node that holds all of a chunk's parts (they
//! are staged in its memory as they arrive) hashes the chunk, sends it to
//! its three homes in parallel and answers once two have fsynced it (the
//! third completes in the background; if homes are down, the next nodes in
//! the chunk's ranking stand in), then records the chunk in the upload's
//! Raft group. A part whose chunk is not complete yet is only in memory: a
//! node crash loses it, and `finish` reports it in `FILE_PART_MISSING`, so
//! the client sends it again (through any node).

pub mod logic;
pub mod ring;
pub mod thumbs;

use courier_proto::Code;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_proto::peer::{GetChunkRequest, PutChunkRequest};
use sha2::{Digest, Sha256};

use crate::app::{self, AppCommand, AppQuery, AppReply};
use crate::clock::Clock;
use crate::cluster::Node;
use crate::error::{Error, Result};
pub use logic::{File, Hash, MediaError};
use logic::{CHUNK_SIZE, ChunkRef, Cmd, Query, Reply};

/// Bytes of parts one upload may have waiting (parts far out of order).
/// The node's and each user's room are `media.staging_bytes`,
/// `media.staged_bytes_per_user` and `media.uploads_per_user`.
const STAGING_PER_UPLOAD: usize = 32 << 20;
/// An upload untouched this long loses its staged parts.
const STAGING_IDLE: Duration = Duration::from_secs(3600);
/// Chunks kept in memory for downloads.
const CACHE_BYTES: usize = 256 << 20;
/// Copies that must be on disk before a chunk counts as stored (G1).
const WRITE_QUORUM: usize = 2;
const CHUNK_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the repair worker looks at the chunks of this node's groups.
pub const REPAIR_EVERY: Duration = Duration::from_secs(2);
/// Bytes per second the repair worker copies at most.
const REPAIR_BYTES_PER_SEC: u64 = 64 << 20;
/// Chunks the scrub re-reads per pass (16 MiB/s at one pass every 2 s).
const SCRUB_PER_PASS: usize = 32;
/// Hashes per `HasChunks` call.
const HAS_BATCH: usize = 5_000;

/// File records kept in memory.
const FILES_CACHED: usize = 10_000;
/// Largest slice one `get_file` answers.
pub const MAX_READ: u32 = 512 << 10;

struct Staged {
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

/// Chunks a running hash holds for the ones before them (16 MiB).
const RUNNING_WAITING: usize = 16;

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
}

#[derive(Default)]
struct Cache {
    chunks: HashMap<Hash, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
}

impl Cache {
    fn get(&mut self, h: &Hash) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.chunks.get_mut(h).map(|(b, t)| {
            *t = tick;
            b.clone()
        })
    }

    fn remove(&mut self, h: &Hash) {
        if let Some((b, _)) = self.chunks.remove(h) {
            self.bytes -= b.len();
        }
    }

    fn put(&mut self, h: Hash, b: Arc<Vec<u8>>) {
        self.tick += 1;
        self.bytes += b.len();
        if let Some((old, _)) = self.chunks.insert(h, (b, self.tick)) {
            self.bytes -= old.len();
        }
        while self.bytes > CACHE_BYTES {
            let Some(oldest) = self.chunks.iter().min_by_key(|(_, (_, t))| *t).map(|(h, _)| *h) else { break };
            self.remove(&oldest);
        }
    }
}

pub struct Media {
    node: Node,
    clock: Clock,
    staging: Mutex<HashMap<u64, Staged>>,
    cache: Mutex<Cache>,
    /// File records read lately (a record's content never changes).
    files: Mutex<HashMap<u64, File>>,
    /// Copies the repair worker made since the node started, and its passes.
    repaired: std::sync::atomic::AtomicU64,
    passes: std::sync::atomic::AtomicU64,
    /// Damaged copies on this node replaced (by the scrub or a read).
    corrupt_repaired: std::sync::atomic::AtomicU64,
    scrubbed: std::sync::atomic::AtomicU64,
    /// The scrub's position: the last chunk it checked.
    scrub_cursor: Mutex<Option<Hash>>,
    /// The collector's work since the node started.
    collected: std::sync::atomic::AtomicU64,
    moved_off: std::sync::atomic::AtomicU64,
    uploads_expired: std::sync::atomic::AtomicU64,
    /// Image decodes for previews, one at a time.
    decoding: tokio::sync::Semaphore,
}

/// The nodes chunks may live on (active, not dead past the grace period),
/// with their peer addresses.
struct Ring {
    nodes: BTreeMap<u64, String>,
    /// Nodes being decommissioned (already out of `nodes`).
    removing: Vec<u64>,
    /// Every active node is in the ring and none is leaving: copies off
    /// their homes may be deleted.
    settled: bool,
}

/// What a chunk's homes answered.
struct HomeCheck {
    /// (chunk, home) for each home that said it lacks the chunk.
    missing: Vec<(Hash, u64)>,
    /// Chunks a home of which did not answer: not repaired (the home may be
    /// briefly down), not counted as safe either.
    unconfirmed: BTreeSet<Hash>,
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

pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

impl Media {
    pub fn new(node: Node, clock: Clock) -> Media {
        Media {
            node,
            clock,
            staging: Mutex::default(),
            cache: Mutex::default(),
            files: Mutex::default(),
            repaired: Default::default(),
            passes: Default::default(),
            corrupt_repaired: Default::default(),
            scrubbed: Default::default(),
            scrub_cursor: Mutex::default(),
            collected: Default::default(),
            moved_off: Default::default(),
            uploads_expired: Default::default(),
            decoding: tokio::sync::Semaphore::new(1),
        }
    }

    async fn exec(&self, group: u32, cmd: Cmd) -> Result<Reply> {
        unwrap_reply(app::write(&self.node, group, &AppCommand::Media(cmd)).await?)
    }

    async fn read(&self, group: u32, q: Query) -> Result<Reply> {
        unwrap_reply(app::read(&self.node, group, &AppQuery::Media(q)).await?)
    }

    fn upload_group(&self, upload: u64) -> Result<u32> {
        Ok(logic::upload_group(upload, self.node.raft()?.data_groups()))
    }

    async fn recorded(&self, upload: u64, owner: u64) -> Result<Option<logic::Upload>> {
        match self.read(self.upload_group(upload)?, Query::Upload { upload }).await? {
            Reply::Upload(Some(u)) if u.owner != owner => Err(MediaError::BadRequest("not an upload id you can use; choose a new random one".into()).into()),
            Reply::Upload(u) => Ok(u),
            _ => Err(Error::Io("unexpected media reply".into())),
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
            // A chunk is complete when it has all its parts at full size (the
            // file's last, shorter chunk is completed by `finish`).
            let range = k * ppc..(k + 1) * ppc;
            let full = range.clone().all(|p| s.parts.get(&p).is_some_and(|b| b.len() == part_size as usize));
            if full { Some(take_parts(s, range)) } else { None }
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
            let cmd = Cmd::AddChunk { upload, owner: me, part_size, index: k, chunk, now_ms: self.clock.now_ms() };
            self.exec(self.upload_group(upload)?, cmd).await
        }
        .await;
        let mut staging = self.staging.lock().expect("staging");
        let s = staging.entry(upload).or_insert_with(|| Staged::new(me, part_size, BTreeSet::new()));
        match stored {
            // Another node recorded other bytes for this chunk first: those
            // count, and this node's running hash cannot stand for the file.
            Ok(Reply::Chunk(recorded)) if recorded != chunk => {
                s.stored.insert(k);
                s.running = None;
                Ok(recorded)
            }
            Ok(_) => {
                s.stored.insert(k);
                s.hashed(k, bytes);
                Ok(chunk)
            }
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
        // The record is the authority on which chunks are stored (the upload
        // may have expired since this node staged parts of it).
        if let Some(s) = self.staging.lock().expect("staging").get_mut(&upload) {
            let recorded: BTreeSet<u32> = record.as_ref().map(|r| r.chunks.keys().copied().collect()).unwrap_or_default();
            if s.stored != recorded {
                s.stored = recorded;
                s.running = None;
            }
        }
        let mut stored: BTreeMap<u32, ChunkRef> = match record {
            Some(r) => r.chunks,
            // No upload under this id: finished before (a retry), or new.
            None => match self.read(group, Query::Finished { upload }).await {
                Ok(Reply::File(f)) if f.owner == me => return Ok(*f),
                Ok(_) | Err(Error::Media(MediaError::NotFound)) => BTreeMap::new(),
                Err(e) => return Err(e),
            },
        };
        // Store every chunk this node has all the parts of.
        let last_len = size - (parts as u64 - 1) * part_size as u64;
        for k in 0..chunks {
            if stored.contains_key(&k) {
                continue;
            }
            let range = logic::chunk_parts(k, part_size, parts);
            let taken = {
                let mut staging = self.staging.lock().expect("staging");
                match staging.get_mut(&upload) {
                    Some(s) if s.owner == me && range.clone().all(|p| s.parts.contains_key(&p)) => {
                        for p in range.clone() {
                            let want = if p + 1 == parts { last_len as usize } else { part_size as usize };
                            if s.parts[&p].len() != want {
                                return Err(MediaError::PartInvalid(format!("part {p} has {} bytes, not {want}", s.parts[&p].len())).into());
                            }
                        }
                        Some(take_parts(s, range))
                    }
                    _ => None,
                }
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
            self.exec(group, Cmd::Abort { upload, owner: me }).await?;
            self.staging.lock().expect("staging").remove(&upload);
            return Err(MediaError::HashMismatch.into());
        }
        // The owner's quota, counted in their own group (files land in any).
        let quota = self.node.config().media.stored_bytes_per_user;
        let charge = Cmd::Charge { owner: me, upload, bytes: size, quota };
        if let Err(e) = self.exec(crate::auth::logic::user_group(me), charge).await {
            if matches!(e, Error::Media(MediaError::QuotaExceeded(_))) {
                self.exec(group, Cmd::Abort { upload, owner: me }).await?;
                self.staging.lock().expect("staging").remove(&upload);
            }
            return Err(e);
        }
        // The file id carries its group in the low 16 bits, as chat ids do.
        let file = (rand::random::<u64>() & !0xffff) | (1 << 16) | group as u64;
        let thumbs = self.store_previews(whole).await?;
        let cmd = Cmd::Finish { upload, owner: me, file, size, sha256: sha, name, mime, thumbs, now_ms: self.clock.now_ms() };
        let file = match self.exec(group, cmd).await? {
            Reply::File(f) => *f,
            _ => return Err(Error::Io("unexpected media reply".into())),
        };
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

    /// A file's record, if `me` may read it: its uploader, or anyone when
    /// `shared` (the caller checked a message in one of their chats carries it).
    pub async fn file(&self, me: u64, id: u64, shared: bool) -> Result<File> {
        let g = logic::file_group(id);
        if !self.node.raft()?.is_data_group(g) {
            return Err(MediaError::NotFound.into());
        }
        let cached = self.files.lock().expect("files").get(&id).cloned();
        let f = match cached {
            Some(f) if f.owner == me || shared => return Ok(f),
            _ => self.read(g, Query::File { file: id }).await,
        };
        let f = match f {
            Ok(Reply::File(f)) => *f,
            Ok(_) => return Err(Error::Io("unexpected media reply".into())),
            // The group has no quorum: a file's record never changes once
            // written, so any replica's copy will do.
            Err(e) if e.code() == Code::Unavailable => self.file_from_any_replica(g, id).await.ok_or(e)?,
            Err(e) => return Err(e),
        };
        if f.owner != me && !shared {
            return Err(MediaError::NotFound.into());
        }
        let mut files = self.files.lock().expect("files");
        if files.len() >= FILES_CACHED {
            files.clear();
        }
        files.insert(id, f.clone());
        Ok(f)
    }

    async fn file_from_any_replica(&self, group: u32, id: u64) -> Option<File> {
        let q = AppQuery::Media(Query::File { file: id });
        let file = |r: Result<Option<AppReply>>| match r.ok().flatten().map(unwrap_reply) {
            Some(Ok(Reply::File(f))) => Some(*f),
            _ => None,
        };
        if let Some(f) = file(app::read_stale(&self.node, group, None, &q).await) {
            return Some(f);
        }
        let me = self.node.raft().ok()?.id();
        for (node, addr) in self.nodes().await.ok()? {
            if node == me {
                continue;
            }
            let r = tokio::time::timeout(Duration::from_secs(2), app::read_stale(&self.node, group, Some(&addr), &q)).await;
            if let Some(f) = r.ok().and_then(file) {
                return Some(f);
            }
        }
        None
    }

    /// Up to `limit` bytes from `offset` of a file, or of its preview `thumb`.
    pub async fn read_file(&self, me: u64, id: u64, shared: bool, thumb: Option<u8>, offset: u64, limit: u32) -> Result<(File, Vec<u8>)> {
        let f = self.file(me, id, shared).await?;
        let chunks: Vec<ChunkRef> = match thumb {
            None => f.chunks.clone(),
            Some(kind) => match f.thumbs.iter().find(|t| t.kind == kind) {
                Some(t) => vec![t.chunk],
                None => return Err(MediaError::BadRequest("this file has no such preview (only images have previews)".into()).into()),
            },
        };
        let size: u64 = chunks.iter().map(|c| c.len as u64).sum();
        if offset > size {
            return Err(MediaError::BadRequest(format!("offset {offset} is past the end ({size} bytes)")).into());
        }
        let end = (offset + limit.min(MAX_READ) as u64).min(size);
        if end == offset {
            return Ok((f, Vec::new()));
        }
        let (first, last) = ((offset / CHUNK_SIZE) as usize, ((end - 1) / CHUNK_SIZE) as usize);
        let fetched = futures::future::join_all((first..=last).map(|k| self.chunk(&chunks[k].hash))).await;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (k, c) in (first..=last).zip(fetched) {
            let c = c?;
            let start = k as u64 * CHUNK_SIZE;
            let (a, b) = (offset.max(start) - start, end.min(start + c.len() as u64) - start);
            let Some(bytes) = c.get(a as usize..b as usize) else {
                return Err(Error::Io(format!("file {id}: chunk {k} is shorter than its place in the file")));
            };
            out.extend_from_slice(bytes);
        }
        Ok((f, out))
    }

    /// The nodes chunks may live on, and their peer addresses: the active
    /// nodes but those down past the grace period (their chunks get new homes).
    async fn nodes(&self) -> Result<BTreeMap<u64, String>> {
        Ok(self.ring().await?.nodes)
    }

    /// The ring as this node sees it now.
    async fn ring(&self) -> Result<Ring> {
        Ok(self.ring_of(self.node.registry().await?))
    }

    fn ring_of(&self, cluster: courier_raft::logic::ClusterState) -> Ring {
        let dead = self.node.dead_nodes();
        let mut nodes: BTreeMap<u64, String> = cluster.active_nodes().map(|n| (n.id, n.info.peer_addr.clone())).collect();
        let left_out = nodes.keys().any(|id| dead.contains(id));
        if nodes.len() > dead.len() {
            nodes.retain(|id, _| !dead.contains(id));
        }
        let removing: Vec<u64> = cluster.nodes.values().filter(|n| n.state == courier_raft::types::NodeState::Removing).map(|n| n.id).collect();
        let settled = !left_out && removing.is_empty();
        Ring { nodes, removing, settled }
    }

    /// Puts a chunk on its homes; returns once [`WRITE_QUORUM`] have it on disk.
    pub async fn store_chunk(&self, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
        let nodes = self.nodes().await?;
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let ranked = ring::rank(&hash, &ids);
        let need = WRITE_QUORUM.min(ranked.len());
        self.cache.lock().expect("cache").put(hash, bytes.clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(ring::REPLICAS);
        let homes = ranked.iter().take(ring::REPLICAS).count();
        for &id in ranked.iter().take(ring::REPLICAS) {
            let (tx, this, addr, bytes) = (tx.clone(), self.node.clone(), nodes[&id].clone(), bytes.clone());
            // Spawned: the third copy completes after the caller was answered.
            tokio::spawn(async move {
                let r = put_on(&this, id, &addr, hash, bytes).await;
                if let Err(e) = &r {
                    tracing::warn!(node = id, chunk = %hex::encode(&hash[..8]), "chunk copy failed: {e}");
                }
                let _ = tx.send(r.is_ok()).await;
            });
        }
        drop(tx);
        let mut ok = 0;
        for _ in 0..homes {
            if rx.recv().await == Some(true) {
                ok += 1;
                if ok >= need {
                    return Ok(());
                }
            }
        }
        // Homes are down: the next nodes in the ranking stand in (repair moves them home).
        for &id in ranked.iter().skip(ring::REPLICAS) {
            if put_on(&self.node, id, &nodes[&id], hash, bytes.clone()).await.is_ok() {
                ok += 1;
                if ok >= need {
                    return Ok(());
                }
            }
        }
        Err(Error::Unavailable(format!("only {ok} of {need} copies of a chunk could be stored; retry")))
    }

    /// A chunk's bytes, verified against its hash: from the cache, this
    /// node's disk, or its homes (then any other node), in that order.
    pub async fn chunk(&self, hash: &Hash) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.cache.lock().expect("cache").get(hash) {
            return Ok(b);
        }
        let store = self.node.store().clone();
        let h = *hash;
        let local = tokio::task::spawn_blocking(move || store.get_chunk(&h)).await.map_err(|e| Error::Io(e.to_string()))?;
        let damaged = match local {
            Ok(Some(b)) if sha256(&b) == *hash => {
                let b = Arc::new(b);
                self.cache.lock().expect("cache").put(*hash, b.clone());
                return Ok(b);
            }
            Ok(None) => false,
            Ok(Some(_)) | Err(_) => true,
        };
        let good = self.remote_chunk(hash).await?;
        if damaged {
            // Read repair: the good copy replaces the damaged one.
            self.replace_damaged(hash, good.clone()).await;
        }
        Ok(good)
    }

    /// Replaces this node's damaged copy of a chunk with good bytes.
    async fn replace_damaged(&self, hash: &Hash, good: Arc<Vec<u8>>) {
        tracing::error!(chunk = %hex::encode(&hash[..8]), "a stored chunk did not match its hash; replaced it with a good copy");
        match store_local(&self.node, *hash, good).await {
            Ok(()) => {
                self.corrupt_repaired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(chunk = %hex::encode(&hash[..8]), "cannot replace a damaged chunk: {e}"),
        }
    }

    /// A verified copy of a chunk from another node: its homes first.
    async fn remote_chunk(&self, hash: &Hash) -> Result<Arc<Vec<u8>>> {
        let nodes = self.nodes().await?;
        let me = self.node.raft()?.id();
        let ids: Vec<u64> = nodes.keys().copied().collect();
        for id in ring::rank(hash, &ids).into_iter().filter(|id| *id != me) {
            let Ok(mut client) = self.node.router().peer(&nodes[&id]) else { continue };
            let req = GetChunkRequest { target: id, hash: hash.to_vec() };
            let Ok(Ok(reply)) = tokio::time::timeout(CHUNK_RPC_TIMEOUT, client.get_chunk(req)).await else { continue };
            let reply = reply.into_inner();
            if reply.found && sha256(&reply.bytes) == *hash {
                let b = Arc::new(reply.bytes);
                self.cache.lock().expect("cache").put(*hash, b.clone());
                return Ok(b);
            }
            if reply.found {
                tracing::error!(node = id, chunk = %hex::encode(&hash[..8]), "a node answered a chunk that does not match its hash");
            }
        }
        Err(Error::Unavailable("no node could provide a chunk of this file right now; retry".into()))
    }
}

impl Media {
    /// The repair worker, for the life of the node: every [`REPAIR_EVERY`],
    /// one [`Media::repair_pass`]; what it saw goes to `cluster status`.
    pub async fn run_repair(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let gc_every = Duration::from_secs(self.node.config().media.gc_every_secs);
        let mut last_gc = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPAIR_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.node.raft().is_err() {
                continue;
            }
            // The scrub lists this node's chunks; the count goes into the health.
            let stored = self.scrub_pass().await.inspect_err(|e| tracing::warn!("chunk scrub pass failed: {e}")).ok();
            match self.repair_pass().await {
                Ok(mut h) => {
                    h.stored = stored.unwrap_or(h.stored);
                    self.node.set_chunk_health(h);
                }
                Err(e) => tracing::warn!("chunk repair pass failed: {e}"),
            }
            // The collector runs in the same loop: never beside a repair on this node.
            if last_gc.elapsed() >= gc_every {
                last_gc = Instant::now();
                if let Err(e) = self.gc_pass().await {
                    tracing::info!("chunk collection skipped this time: {e}");
                }
            }
        }
    }

    /// The collector: forgets uploads left unfinished past
    /// `media.upload_ttl_secs` (in the groups this node leads), deletes
    /// chunks no file or upload of any group uses once they were last
    /// written `media.gc_after_secs` ago, and deletes copies this node
    /// holds off their homes once every home has one.
    pub async fn gc_pass(&self) -> Result<()> {
        let cfg = self.node.config().media.clone();
        // Uploads carry the domain clock's time (the proposer's); chunk
        // write times are the machine's own clock, which tests do not shift.
        let now = self.clock.now_ms();
        self.expire_uploads(now.saturating_sub(cfg.upload_ttl_secs * 1000)).await?;
        let now = chunk_clock();
        let store = self.node.store().clone();
        let local = tokio::task::spawn_blocking(move || store.list_chunk_times()).await.map_err(|e| Error::Io(e.to_string()))??;
        if local.is_empty() {
            return Ok(());
        }
        // Every group's references, or nothing is collected this time.
        let used = self.referenced().await?;
        let cut = now.saturating_sub(cfg.gc_after_secs * 1000);
        let unused: Vec<Hash> = local.iter().filter(|(h, t)| *t < cut && !used.contains(h)).map(|(h, _)| *h).collect();
        let n = self.delete_local(unused, cut).await?;
        self.collected.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::info!(chunks = n, "collected chunks no file uses");
        }

        // Deleting copies needs the current membership, not a lagging replica's.
        let ring = self.ring_of(self.node.cluster_state().await?);
        if !ring.settled {
            return Ok(());
        }
        let me = self.node.raft()?.id();
        let ids: Vec<u64> = ring.nodes.keys().copied().collect();
        let off: Vec<Hash> = local.iter().map(|(h, _)| *h).filter(|h| used.contains(h) && !ring::homes(h, &ids).contains(&me)).collect();
        // A home that lacks the chunk, or does not answer, keeps the copy here.
        let check = self.check_homes(&ring.nodes, &off).await;
        let lacking: BTreeSet<Hash> = check.missing.iter().map(|(h, _)| *h).collect();
        let moved: Vec<Hash> = off.into_iter().filter(|h| !lacking.contains(h) && !check.unconfirmed.contains(h)).collect();
        let n = self.delete_local(moved, u64::MAX).await?;
        self.moved_off.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::info!(chunks = n, "deleted copies whose homes all have them");
        }
        Ok(())
    }

    /// Deletes chunks here last written before `cut`; returns how many.
    async fn delete_local(&self, hashes: Vec<Hash>, cut: u64) -> Result<u64> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let store = self.node.store().clone();
        let deleted = tokio::task::spawn_blocking(move || -> Result<Vec<Hash>> {
            let mut deleted = Vec::new();
            for h in hashes {
                if store.delete_chunk_if_older(&h, cut)? {
                    deleted.push(h);
                }
            }
            Ok(deleted)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let mut cache = self.cache.lock().expect("cache");
        for h in &deleted {
            cache.remove(h);
        }
        Ok(deleted.len() as u64)
    }

    /// Every chunk the files and uploads of every group use (uploads
    /// first: see [`logic::RefRows`]). Fails if any group cannot be read.
    async fn referenced(&self) -> Result<std::collections::HashSet<Hash>> {
        let mut used = std::collections::HashSet::new();
        for g in 1..=self.node.raft()?.data_groups() {
            for rows in [logic::RefRows::Uploads, logic::RefRows::Files] {
                let mut after = Vec::new();
                loop {
                    match self.read(g, Query::ChunkRefs { rows, after: after.clone(), limit: 1_000 }).await? {
                        Reply::ChunkRefs { hashes, next } => {
                            used.extend(hashes);
                            match next {
                                Some(k) => after = k,
                                None => break,
                            }
                        }
                        _ => return Err(Error::Io("unexpected media reply".into())),
                    }
                }
            }
        }
        Ok(used)
    }

    /// Forgets the uploads of the groups this node leads that started before `before_ms`.
    async fn expire_uploads(&self, before_ms: u64) -> Result<()> {
        let led = led_groups(self.node.raft()?);
        let store = self.node.store().clone();
        let stale = tokio::task::spawn_blocking(move || -> Result<Vec<(u32, u64, u64)>> {
            let mut out = Vec::new();
            for g in led {
                let prefix = logic::RefRows::Uploads.prefix();
                for (k, v) in store.scan_sm(g, prefix)? {
                    let u = courier_raft::codec::decode::<logic::Upload>(&v)?;
                    if u.started_ms < before_ms && let Some(id) = crate::state::id_after(&k, prefix.len()) {
                        out.push((g, id, u.owner));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        for (g, upload, owner) in stale {
            self.exec(g, Cmd::Abort { upload, owner }).await?;
            self.staging.lock().expect("staging").remove(&upload);
            self.uploads_expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(upload, "forgot an upload left unfinished");
        }
        Ok(())
    }

    /// Asks each of `chunks`' homes among `nodes` whether it holds the
    /// chunk, in batches per home.
    async fn check_homes<'a>(&self, nodes: &BTreeMap<u64, String>, chunks: impl IntoIterator<Item = &'a Hash>) -> HomeCheck {
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let mut by_home: BTreeMap<u64, Vec<Hash>> = BTreeMap::new();
        for h in chunks {
            for home in ring::homes(h, &ids) {
                by_home.entry(home).or_default().push(*h);
            }
        }
        let mut check = HomeCheck { missing: Vec::new(), unconfirmed: BTreeSet::new() };
        for (home, hashes) in by_home {
            for batch in hashes.chunks(HAS_BATCH) {
                match self.has_chunks(home, &nodes[&home], batch).await {
                    Ok(has) => check.missing.extend(batch.iter().zip(has).filter(|(_, has)| !has).map(|(h, _)| (*h, home))),
                    Err(e) => {
                        tracing::debug!(node = home, "cannot ask which chunks it has: {e}");
                        check.unconfirmed.extend(batch.iter().copied());
                    }
                }
            }
        }
        check
    }

    /// Makes sure every chunk used by the groups this node leads has a copy
    /// on each of its homes (the active nodes' ranking): asks each home
    /// which chunks it has, and copies the missing ones from any copy
    /// (verified), at most [`REPAIR_BYTES_PER_SEC`]. A node removed from the
    /// cluster stops being a home, so its chunks get new homes at once.
    pub async fn repair_pass(&self) -> Result<courier_proto::peer::ChunkHealth> {
        let ring = self.ring().await?;
        let nodes = ring.nodes;
        let led = led_groups(self.node.raft()?);
        let store = self.node.store().clone();
        let per_group = tokio::task::spawn_blocking(move || -> Result<BTreeMap<u32, BTreeSet<Hash>>> {
            let mut per_group: BTreeMap<u32, BTreeSet<Hash>> = BTreeMap::new();
            for g in led {
                let used = per_group.entry(g).or_default();
                for rows in [logic::RefRows::Uploads, logic::RefRows::Files] {
                    for (_, v) in store.scan_sm(g, rows.prefix())? {
                        used.extend(rows.chunks(&v)?);
                    }
                }
            }
            Ok(per_group)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let used: BTreeSet<Hash> = per_group.values().flatten().copied().collect();

        let HomeCheck { missing, unconfirmed } = self.check_homes(&nodes, &used).await;
        let under: BTreeSet<Hash> = missing.iter().map(|(h, _)| *h).collect();
        let started = Instant::now();
        let mut copied_bytes = 0u64;
        for (h, home) in &missing {
            let Ok(bytes) = self.chunk(h).await else {
                tracing::warn!(chunk = %hex::encode(&h[..8]), "no readable copy of a chunk to repair from");
                continue;
            };
            copied_bytes += bytes.len() as u64;
            if put_on(&self.node, *home, &nodes[home], *h, bytes).await.is_ok() {
                self.repaired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // Rate limit: never ahead of REPAIR_BYTES_PER_SEC.
            let due = Duration::from_secs_f64(copied_bytes as f64 / REPAIR_BYTES_PER_SEC as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if !missing.is_empty() {
            tracing::info!(chunks = under.len(), copies = missing.len(), "repaired under-replicated chunks");
        }
        let passes = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let groups = per_group
            .iter()
            .map(|(g, hs)| courier_proto::peer::GroupChunks {
                group: *g,
                chunks: hs.len() as u64,
                under_replicated: hs.intersection(&under).count() as u64,
                unconfirmed: hs.intersection(&unconfirmed).count() as u64,
            })
            .collect();
        Ok(courier_proto::peer::ChunkHealth {
            groups,
            chunks: used.len() as u64,
            under_replicated: under.len() as u64,
            repaired: self.repaired.load(std::sync::atomic::Ordering::Relaxed),
            stored: 0, // filled in from the scrub's listing
            passes,
            scrubbed: self.scrubbed.load(std::sync::atomic::Ordering::Relaxed),
            corrupt_repaired: self.corrupt_repaired.load(std::sync::atomic::Ordering::Relaxed),
            collected: self.collected.load(std::sync::atomic::Ordering::Relaxed),
            moved_off: self.moved_off.load(std::sync::atomic::Ordering::Relaxed),
            uploads_expired: self.uploads_expired.load(std::sync::atomic::Ordering::Relaxed),
            decommissioned: ring.removing,
        })
    }

    /// Re-reads the next [`SCRUB_PER_PASS`] chunks on this node's disk (in
    /// hash order, round and round) and replaces any whose bytes no longer
    /// match their hash with a good copy from another node. Returns how
    /// many chunks this node stores.
    pub async fn scrub_pass(&self) -> Result<u64> {
        let store = self.node.store().clone();
        let after = *self.scrub_cursor.lock().expect("scrub cursor");
        let (stored, batch) = tokio::task::spawn_blocking(move || -> Result<(u64, Vec<(Hash, bool)>)> {
            let all = store.list_chunks()?;
            let start = after.map_or(0, |a| all.partition_point(|h| *h <= a));
            let mut out = Vec::new();
            for h in all.iter().skip(start).chain(all.iter().take(start)).take(SCRUB_PER_PASS) {
                let good = matches!(store.get_chunk(h), Ok(Some(b)) if sha256(&b) == *h);
                out.push((*h, good));
            }
            Ok((all.len() as u64, out))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        for (h, good) in &batch {
            self.scrubbed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !good {
                self.cache.lock().expect("cache").remove(h);
                match self.remote_chunk(h).await {
                    Ok(b) => self.replace_damaged(h, b).await,
                    Err(e) => tracing::error!(chunk = %hex::encode(&h[..8]), "a damaged chunk has no good copy to repair it from now: {e}"),
                }
            }
        }
        if let Some((h, _)) = batch.last() {
            *self.scrub_cursor.lock().expect("scrub cursor") = Some(*h);
        }
        Ok(stored)
    }

    async fn has_chunks(&self, id: u64, addr: &str, hashes: &[Hash]) -> Result<Vec<bool>> {
        if id == self.node.raft()?.id() {
            let store = self.node.store().clone();
            let hashes = hashes.to_vec();
            return Ok(tokio::task::spawn_blocking(move || store.has_chunks(&hashes)).await.map_err(|e| Error::Io(e.to_string()))??);
        }
        let mut client = self.node.router().peer(addr)?;
        let req = courier_proto::peer::HasChunksRequest { target: id, hashes: hashes.iter().map(|h| h.to_vec()).collect() };
        let has = chunk_rpc(id, client.has_chunks(req)).await?.has;
        if has.len() != hashes.len() {
            return Err(Error::Io(format!("node {id} answered has_chunks for the wrong number of chunks")));
        }
        Ok(has)
    }
}

/// The data groups this node leads: it looks after their files' chunks.
fn led_groups(raft: &courier_raft::MultiRaft) -> Vec<u32> {
    let me = raft.id();
    raft.views().iter().filter(|v| v.group != courier_raft::META_GROUP && v.leader == Some(me)).map(|v| v.group).collect()
}

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

/// Stores a chunk on node `id` (this node: its own disk), fsynced.
async fn put_on(node: &Node, id: u64, addr: &str, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
    if id == node.raft()?.id() {
        return store_local(node, hash, bytes).await;
    }
    let mut client = node.router().peer(addr)?;
    let req = PutChunkRequest { target: id, hash: hash.to_vec(), bytes: bytes.to_vec() };
    chunk_rpc(id, client.put_chunk(req)).await.map(|_| ())
}

/// A chunk RPC to node `id`, within [`CHUNK_RPC_TIMEOUT`]; a failure is `UNAVAILABLE`.
async fn chunk_rpc<T>(id: u64, call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
    match tokio::time::timeout(CHUNK_RPC_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(Error::Unavailable(format!("node {id}: {}", s.message()))),
        Err(_) => Err(Error::Unavailable(format!("node {id}: timed out"))),
    }
}

/// Writes a chunk to this node's disk (a damaged copy is replaced; the
/// same bytes again only get a new time, so the collector leaves them alone
/// for another delay) and waits for the fsync, shared with every other
/// write waiting for it.
pub async fn store_local(node: &Node, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
    let store = node.store().clone();
    let now_ms = chunk_clock();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || -> Result<()> {
        store.put_chunk(&hash, &bytes, now_ms)?;
        store.sync_wal(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::Io(e.to_string()))??;
    rx.await.map_err(|_| Error::Io("the WAL sync was dropped".into()))??;
    Ok(())
}

/// When a chunk is written, and the collector's now: the machine's clock,
/// never the shifted domain clock (a clock-skew test must not age chunks).
fn chunk_clock() -> u64 {
    Clock::default().now_ms()
}

fn unwrap_reply(reply: AppReply) -> Result<Reply> {
    app::service_reply(reply, |r| if let AppReply::Media(o) = r { Ok(o) } else { Err(r) })
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
        let code = |r: Result<()>| r.err().map(|e| e.code().to_string());
        assert_eq!(code(staging_room(&staging, &cfg, 7, 1, 10)), None, "an upload that holds parts goes on");
        assert_eq!(code(staging_room(&staging, &cfg, 7, 3, 10)).as_deref(), Some("QUOTA_EXCEEDED"), "a third unfinished upload");
        staging.insert(3, staged(7, 0));
        assert_eq!(code(staging_room(&staging, &cfg, 7, 3, 10)).as_deref(), Some("QUOTA_EXCEEDED"), "an empty entry is still new");
        assert_eq!(code(staging_room(&staging, &cfg, 7, 1, 25)).as_deref(), Some("QUOTA_EXCEEDED"), "past the user's bytes");
        assert_eq!(code(staging_room(&staging, &cfg, 8, 9, 40)), None, "another user has their own room");
        staging.insert(4, staged(9, 40));
        staging.insert(5, staged(10, 35));
        assert_eq!(code(staging_room(&staging, &cfg, 8, 9, 10)).as_deref(), Some("UNAVAILABLE"), "then the node's room");
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
}
