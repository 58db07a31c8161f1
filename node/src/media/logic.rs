//! Media metadata as replicated state, and the upload rules, as pure
//! functions (no I/O, the clock passed in).
//!
//! A file is uploaded in parts (the brief's rules: at most 512 KiB, a
//! multiple of 1 KiB dividing 512 KiB, all equal but the last) and stored as
//! 1 MiB chunks named by their SHA-256. Because every allowed part size
//! divides 1 MiB, chunk `k` is exactly parts `k·p … (k+1)·p − 1` with
//! `p = 1 MiB / part_size`.
//!
//! Rows, in the upload's group (`1 + upload_id % G`; the file id carries the
//! same group in its low 16 bits, as chat ids do):
//! `f/u/<upload>` the chunks recorded so far, `f/f/<file>` a finished file,
//! `f/d/<upload>` the file an upload became (a repeated finish answers it).

use courier_proto::Code;
use std::collections::BTreeMap;

use courier_raft::logic::{StateRead, StateView};
use serde::{Deserialize, Serialize};

use crate::app::answer;
use crate::error::Result;
use crate::state::{Evolved, get, get_row, key, put, put_row};

pub const CHUNK_SIZE: u64 = 1 << 20;
pub const MAX_PART: u32 = 512 << 10;
pub const MAX_PARTS: u32 = 4000;
/// 4000 parts of 512 KiB (the brief's "2 GiB").
pub const MAX_FILE: u64 = MAX_PARTS as u64 * MAX_PART as u64;
pub const MAX_NAME: usize = 255;
pub const MAX_MIME: usize = 127;

pub type Hash = [u8; 32];

/// Why a media request is refused (each maps to a brief code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MediaError {
    #[error("FILE_PART_INVALID: {0}")]
    PartInvalid(String),
    #[error("FILE_PART_MISSING: parts {0:?} are missing")]
    PartMissing(Vec<u32>),
    #[error("FILE_TOO_BIG: files are limited to {MAX_FILE} bytes")]
    TooBig,
    #[error("FILE_NOT_FOUND: no such file")]
    NotFound,
    #[error("FILE_HASH_MISMATCH: the uploaded bytes do not have the declared SHA-256; upload them again")]
    HashMismatch,
    #[error("BAD_REQUEST: {0}")]
    BadRequest(String),
    // Outcomes cross the wire: new refusals at the end.
    /// Over a per-user media quota (docs/security.md).
    #[error("QUOTA_EXCEEDED: {0}")]
    QuotaExceeded(String),
}

impl MediaError {
    pub fn code(&self) -> courier_proto::Code {
        match self {
            MediaError::PartInvalid(_) => Code::FilePartInvalid,
            MediaError::PartMissing(_) => Code::FilePartMissing,
            MediaError::TooBig => Code::FileTooBig,
            MediaError::NotFound => Code::FileNotFound,
            MediaError::HashMismatch => Code::FileHashMismatch,
            MediaError::BadRequest(_) => Code::BadRequest,
            MediaError::QuotaExceeded(_) => Code::QuotaExceeded,
        }
    }
}

/// A part's place in its upload, checked against the brief's rules.
pub fn check_part(part: u32, part_size: u32, len: usize) -> Result<(), MediaError> {
    check_part_size(part_size)?;
    if part >= MAX_PARTS {
        return Err(MediaError::TooBig);
    }
    if len == 0 || len > part_size as usize {
        return Err(MediaError::PartInvalid(format!("part {part} has {len} bytes; parts have 1 to part_size ({part_size}) bytes")));
    }
    Ok(())
}

pub fn check_part_size(part_size: u32) -> Result<(), MediaError> {
    if part_size == 0 || part_size > MAX_PART || part_size % 1024 != 0 || MAX_PART % part_size != 0 {
        return Err(MediaError::PartInvalid(format!("part size {part_size}: a multiple of 1024 that divides 524288, at most 524288")));
    }
    Ok(())
}

/// Parts per chunk for a part size.
pub fn parts_per_chunk(part_size: u32) -> u32 {
    (CHUNK_SIZE / part_size as u64) as u32
}

/// The parts chunk `k` is made of, for an upload of `parts` parts.
pub fn chunk_parts(k: u32, part_size: u32, parts: u32) -> std::ops::Range<u32> {
    let p = parts_per_chunk(part_size);
    (k * p).min(parts)..((k + 1) * p).min(parts)
}

/// Checks a finished upload's declared shape: `parts` parts of `part_size`
/// (the last shorter) make exactly `size` bytes.
pub fn check_shape(size: u64, parts: u32, part_size: u32) -> Result<u32, MediaError> {
    check_part_size(part_size)?;
    if size > MAX_FILE || parts > MAX_PARTS {
        return Err(MediaError::TooBig);
    }
    if size == 0 || parts == 0 {
        return Err(MediaError::PartInvalid("an empty file".into()));
    }
    if size.div_ceil(part_size as u64) != parts as u64 {
        return Err(MediaError::PartInvalid(format!("{parts} parts of {part_size} bytes cannot make {size} bytes")));
    }
    Ok(size.div_ceil(CHUNK_SIZE) as u32)
}

/// One stored chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

/// An upload in progress: the chunks already stored on their homes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub owner: u64,
    pub part_size: u32,
    pub chunks: BTreeMap<u32, ChunkRef>,
    pub started_ms: u64,
}

/// A finished file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub id: u64,
    pub owner: u64,
    pub size: u64,
    pub sha256: Hash,
    pub name: String,
    pub mime: String,
    pub chunks: Vec<ChunkRef>,
    pub created_ms: u64,
    /// Small and medium previews of an image (each one chunk).
    pub thumbs: Vec<Thumb>,
}

impl File {
    /// Every chunk the file needs: its bytes and its previews.
    pub fn chunk_hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        self.chunks.iter().chain(self.thumbs.iter().map(|t| &t.chunk)).map(|c| c.hash)
    }
}

impl Evolved for File {
    const FORMAT: u8 = 2;
    type Prev = FileV1;
}

/// A file record as written before thumbnails (format 1).
#[derive(Clone, Debug, Deserialize)]
pub struct FileV1 {
    id: u64,
    owner: u64,
    size: u64,
    sha256: Hash,
    name: String,
    mime: String,
    chunks: Vec<ChunkRef>,
    created_ms: u64,
    _chats: Vec<u64>,
}

impl From<FileV1> for File {
    fn from(f: FileV1) -> File {
        let FileV1 { id, owner, size, sha256, name, mime, chunks, created_ms, _chats } = f;
        File { id, owner, size, sha256, name, mime, chunks, created_ms, thumbs: Vec::new() }
    }
}

/// A preview of an image: JPEG, fitting a `size`×`size` box
/// (Telegram's `s` = 100 and `m` = 320).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumb {
    /// `b's'` or `b'm'`.
    pub kind: u8,
    pub width: u32,
    pub height: u32,
    pub chunk: ChunkRef,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cmd {
    AddChunk(cmd::AddChunk),
    FinishV1(cmd::FinishV1),
    Abort(cmd::Abort),
    Share(cmd::Share),
    // Commands are in Raft logs: a changed command is a new variant at the
    // end, and the old one keeps applying.
    Finish(cmd::Finish),
    Charge(cmd::Charge),
}

/// The media commands, one struct each (the variant of [`Cmd`] around it encodes as the struct variant it was).
pub mod cmd {
    use super::{ChunkRef, Hash, Thumb};
    use serde::{Deserialize, Serialize};

    /// Chunk `index` of `upload` is stored (2 of its homes synced it).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct AddChunk {
        pub upload: u64,
        pub owner: u64,
        pub part_size: u32,
        pub index: u32,
        pub chunk: ChunkRef,
        pub now_ms: u64,
    }

    /// A finish as written before thumbnails (see `Finish`).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct FinishV1 {
        pub upload: u64,
        pub owner: u64,
        pub file: u64,
        pub size: u64,
        pub sha256: Hash,
        pub name: String,
        pub mime: String,
        pub now_ms: u64,
    }

    /// Forget an upload (its bytes did not match the declared hash, or it
    /// was abandoned).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Abort {
        pub upload: u64,
        pub owner: u64,
    }

    /// Retired (access to posted files goes through the message that
    /// carries them); applies as nothing.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Share {
        pub file: u64,
        pub chat: u64,
    }

    /// The upload becomes file `file` (id chosen by the proposer), with the
    /// previews the proposer made and stored.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Finish {
        pub upload: u64,
        pub owner: u64,
        pub file: u64,
        pub size: u64,
        pub sha256: Hash,
        pub name: String,
        pub mime: String,
        pub thumbs: Vec<Thumb>,
        pub now_ms: u64,
    }

    /// In the owner's group, before `Finish`: counts the file's `bytes`
    /// against the owner's stored bytes, refused past `quota` (0: none).
    /// Once per upload: a retried finish is not charged again.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Charge {
        pub owner: u64,
        pub upload: u64,
        pub bytes: u64,
        pub quota: u64,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Query {
    Upload(ask::Upload),
    File(ask::File),
    Finished(ask::Finished),
    ChunkRefs(ask::ChunkRefs),
}

/// The media queries, one struct each.
pub mod ask {
    use super::RefRows;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Upload {
        pub upload: u64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct File {
        pub file: u64,
    }

    /// The file an upload became, if it was finished.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Finished {
        pub upload: u64,
    }

    /// A page of the chunks the group's `rows` use, after row key `after`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct ChunkRefs {
        pub rows: RefRows,
        pub after: Vec<u8>,
        pub limit: u32,
    }
}

/// Which rows a scan of chunk references reads. A collector reads uploads
/// first, then files: a finish between two pages moves an upload's chunks
/// into a file row read later, never into one read before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefRows {
    Uploads,
    Files,
}

impl RefRows {
    /// The key prefix of these rows.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            RefRows::Uploads => UPLOAD_ROWS,
            RefRows::Files => FILE_ROWS,
        }
    }

    /// The chunks one such row uses (a file's include its previews').
    pub fn chunks(self, row: &[u8]) -> Result<Vec<Hash>> {
        Ok(match self {
            RefRows::Uploads => courier_raft::codec::decode::<Upload>(row)?.chunks.values().map(|c| c.hash).collect(),
            RefRows::Files => crate::state::decode_row::<File>(row)?.chunk_hashes().collect(),
        })
    }
}

/// The chunks a page of rows uses; `next`: the key to continue after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefPage {
    pub hashes: Vec<Hash>,
    pub next: Option<Vec<u8>>,
}

crate::app::requests!(AppCommand::Media, Cmd, cmd {
    AddChunk => Option<ChunkRef>,
    FinishV1 => File,
    Abort => (),
    Share => (),
    Finish => File,
    Charge => (),
});

crate::app::requests!(AppQuery::Media, Query, ask {
    Upload => Option<Upload>,
    File => File,
    Finished => File,
    ChunkRefs => RefPage,
});

/// An answer of type `T`, or a refusal.
pub type Outcome<T> = Result<T, MediaError>;

const UPLOAD_ROWS: &[u8] = b"f/u/";
const FILE_ROWS: &[u8] = b"f/f/";

fn upload_key(upload: u64) -> Vec<u8> {
    key(UPLOAD_ROWS, &[upload])
}
fn file_key(file: u64) -> Vec<u8> {
    key(FILE_ROWS, &[file])
}
fn done_key(upload: u64) -> Vec<u8> {
    key(b"f/d/", &[upload])
}
/// Bytes of the files a user stored (in the user's group).
fn used_key(owner: u64) -> Vec<u8> {
    key(b"f/used/", &[owner])
}
/// An upload already charged to its owner (in the owner's group).
fn charged_key(owner: u64, upload: u64) -> Vec<u8> {
    key(b"f/chg/", &[owner, upload])
}

/// The group of a file id (its low 16 bits).
pub fn file_group(file: u64) -> u32 {
    (file & 0xffff) as u32
}

/// The group of a client-chosen upload id among `groups` data groups.
pub fn upload_group(upload: u64, groups: u32) -> u32 {
    1 + (upload % groups.max(1) as u64) as u32
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

/// Another user's upload id is treated as unknown (nothing leaks).
fn own_upload(view: &dyn StateRead, upload: u64, owner: u64) -> Result<Result<Option<Upload>, MediaError>> {
    Ok(match get::<Upload>(view, &upload_key(upload))? {
        Some(u) if u.owner != owner => Err(MediaError::BadRequest("not an upload id you can use; choose a new random one".into())),
        other => Ok(other),
    })
}

/// An upload becomes a file once every chunk is recorded and their sizes add up.
#[allow(clippy::too_many_arguments)]
fn finish(view: &mut dyn StateView, upload: u64, owner: u64, file: u64, size: u64, sha256: Hash, name: &str, mime: &str, thumbs: Vec<Thumb>, now_ms: u64) -> Result<Outcome<File>> {
    if let Some(id) = get::<u64>(view, &done_key(upload))? {
        return Ok(match get_row::<File>(view, &file_key(id))? {
            Some(f) if f.owner == owner => Ok(f),
            _ => Err(MediaError::NotFound),
        });
    }
    let Some(u) = tri!(own_upload(view, upload, owner)?) else {
        return Ok(Err(MediaError::PartMissing(Vec::new())));
    };
    let n = tri!(check_shape(size, size.div_ceil(u.part_size as u64) as u32, u.part_size));
    let chunks: Vec<ChunkRef> = (0..n).filter_map(|k| u.chunks.get(&k).copied()).collect();
    let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
    if chunks.len() != n as usize || total != size {
        return Ok(Err(MediaError::PartInvalid(format!("the stored chunks hold {total} bytes, not {size}"))));
    }
    // Every chunk but the last is whole (reads find byte k in chunk k / 1 MiB).
    if let Some(k) = chunks.iter().take(n as usize - 1).position(|c| c.len as u64 != CHUNK_SIZE) {
        return Ok(Err(MediaError::PartInvalid(format!("chunk {k} was stored short; upload this file under a new upload id"))));
    }
    let f = File { id: file, owner, size, sha256, name: name.to_owned(), mime: mime.to_owned(), chunks, created_ms: now_ms, thumbs };
    put_row(view, &file_key(file), &f);
    put(view, &done_key(upload), &file);
    view.delete(&upload_key(upload));
    Ok(Ok(f))
}

/// Applies one media command: its answer encoded ([`answer`]: each arm
/// answers its command's own type). `Err` only for storage failures.
pub fn apply(view: &mut dyn StateView, cmd: &Cmd) -> Result<Vec<u8>> {
    match cmd {
        Cmd::AddChunk(r) => answer(r, apply_add_chunk(view, r)),
        Cmd::FinishV1(r) => answer(r, apply_finish_v1(view, r)),
        Cmd::Finish(r) => answer(r, apply_finish(view, r)),
        Cmd::Abort(r) => answer(r, apply_abort(view, r)),
        Cmd::Share(r) => answer(r, apply_share(view, r)),
        Cmd::Charge(r) => answer(r, apply_charge(view, r)),
    }
}

fn apply_add_chunk(view: &mut dyn StateView, req: &cmd::AddChunk) -> Result<Outcome<Option<ChunkRef>>> {
    let cmd::AddChunk { upload, owner, part_size, index, chunk, now_ms } = req;
    if get::<u64>(view, &done_key(*upload))?.is_some() {
        return Ok(Ok(None));
    }
    let mut u = tri!(own_upload(view, *upload, *owner)?).unwrap_or(Upload { owner: *owner, part_size: *part_size, chunks: BTreeMap::new(), started_ms: *now_ms });
    if u.part_size != *part_size {
        return Ok(Err(MediaError::PartInvalid(format!("this upload's parts are {} bytes", u.part_size))));
    }
    if *index as u64 * CHUNK_SIZE >= MAX_FILE {
        return Ok(Err(MediaError::TooBig));
    }
    // The first chunk recorded for an index stays: the answer says
    // which one that is, so the proposer hashes what was recorded.
    let recorded = *u.chunks.entry(*index).or_insert(*chunk);
    put(view, &upload_key(*upload), &u);
    Ok(Ok(Some(recorded)))
}

fn apply_finish_v1(view: &mut dyn StateView, req: &cmd::FinishV1) -> Result<Outcome<File>> {
    let cmd::FinishV1 { upload, owner, file, size, sha256, name, mime, now_ms } = req;
    finish(view, *upload, *owner, *file, *size, *sha256, name, mime, Vec::new(), *now_ms)
}

fn apply_finish(view: &mut dyn StateView, req: &cmd::Finish) -> Result<Outcome<File>> {
    let cmd::Finish { upload, owner, file, size, sha256, name, mime, thumbs, now_ms } = req;
    finish(view, *upload, *owner, *file, *size, *sha256, name, mime, thumbs.clone(), *now_ms)
}

fn apply_abort(view: &mut dyn StateView, req: &cmd::Abort) -> Result<Outcome<()>> {
    let cmd::Abort { upload, owner } = req;
    if tri!(own_upload(view, *upload, *owner)?).is_some() {
        view.delete(&upload_key(*upload));
    }
    Ok(Ok(()))
}

/// Retired: applies as nothing.
fn apply_share(_view: &mut dyn StateView, _req: &cmd::Share) -> Result<Outcome<()>> {
    Ok(Ok(()))
}

fn apply_charge(view: &mut dyn StateView, req: &cmd::Charge) -> Result<Outcome<()>> {
    let cmd::Charge { owner, upload, bytes, quota } = req;
    if view.get(&charged_key(*owner, *upload))?.is_some() {
        return Ok(Ok(()));
    }
    let used = get::<u64>(view, &used_key(*owner))?.unwrap_or(0);
    if *quota > 0 && used.saturating_add(*bytes) > *quota {
        return Ok(Err(MediaError::QuotaExceeded(format!("your files take {used} of your {quota} bytes; this one needs {bytes}"))));
    }
    put(view, &used_key(*owner), &used.saturating_add(*bytes));
    put(view, &charged_key(*owner, *upload), bytes);
    Ok(Ok(()))
}

/// Answers one media query, encoded ([`answer`]).
pub fn query(view: &dyn StateRead, q: &Query) -> Result<Vec<u8>> {
    match q {
        Query::Upload(r) => answer(r, ask_upload(view, r)),
        Query::File(r) => answer(r, ask_file(view, r)),
        Query::Finished(r) => answer(r, ask_finished(view, r)),
        Query::ChunkRefs(r) => answer(r, ask_chunk_refs(view, r)),
    }
}

fn ask_upload(view: &dyn StateRead, req: &ask::Upload) -> Result<Outcome<Option<Upload>>> {
    let ask::Upload { upload } = req;
    Ok(Ok(get(view, &upload_key(*upload))?))
}

fn ask_file(view: &dyn StateRead, req: &ask::File) -> Result<Outcome<File>> {
    let ask::File { file } = req;
    Ok(match get_row::<File>(view, &file_key(*file))? {
        Some(f) => Ok(f),
        None => Err(MediaError::NotFound),
    })
}

fn ask_finished(view: &dyn StateRead, req: &ask::Finished) -> Result<Outcome<File>> {
    let ask::Finished { upload } = req;
    match get::<u64>(view, &done_key(*upload))? {
        Some(file) => ask_file(view, &ask::File { file }),
        None => Ok(Err(MediaError::NotFound)),
    }
}

fn ask_chunk_refs(view: &dyn StateRead, req: &ask::ChunkRefs) -> Result<Outcome<RefPage>> {
    let ask::ChunkRefs { rows, after, limit } = req;
    let limit = (*limit).clamp(1, 10_000) as usize;
    let page = view.scan(rows.prefix(), after, limit)?;
    let mut hashes = Vec::new();
    for (_, v) in &page {
        hashes.extend(rows.chunks(v)?);
    }
    let next = (page.len() == limit).then(|| page.last().map(|(k, _)| k.clone())).flatten();
    Ok(Ok(RefPage { hashes, next }))
}

/// The parts still needed to finish: those of chunks neither stored nor
/// completable from `staged` (parts held by this node).
pub fn missing_parts(recorded: &BTreeMap<u32, ChunkRef>, staged: &std::collections::BTreeSet<u32>, parts: u32, part_size: u32) -> Vec<u32> {
    let chunks = parts.div_ceil(parts_per_chunk(part_size));
    (0..chunks).filter(|k| !recorded.contains_key(k)).flat_map(|k| chunk_parts(k, part_size, parts)).filter(|p| !staged.contains(p)).collect()
}

#[cfg(test)]
mod tests;
