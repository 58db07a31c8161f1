//! Files: resumable uploads in parts and downloads by range, built on
//! [`Client::upload_part`], [`Client::finish_upload`] and [`Client::get_file`].
//!
//! An upload is named by a client-chosen id; sending the same file again
//! with the same id resumes it: `finish` answers which parts the cluster
//! lacks (`FILE_PART_MISSING`), and only those are sent. A download writes
//! `OUT.part`, continues it after an interruption, and checks the whole
//! file's SHA-256 before renaming it to `OUT`.

use courier_proto::Code;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use sha2::{Digest, Sha256};

use crate::{Client, Error, Result, pb};

/// Parts of 512 KiB (the largest the brief allows).
pub const PART_SIZE: u32 = 512 << 10;
/// Parts in flight at once.
const PARALLEL: usize = 4;
/// Tries of one part (or slice) before the transfer fails.
const TRIES: u32 = 8;

/// What uploading a file needs to know about it.
#[derive(Clone, Debug)]
pub struct Upload {
    pub upload_id: u64,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub name: String,
    pub mime: String,
}

impl Upload {
    /// Reads `path` once to hash it. `upload_id`: a random id, or the one of
    /// an interrupted upload of the same file to resume it.
    pub fn prepare(path: &Path, upload_id: u64) -> Result<Upload> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut h = Sha256::new();
        let size = std::io::copy(&mut f, &mut h).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Upload { upload_id, path: path.into(), size, sha256: h.finalize().into(), mime: guess_mime(&name).into(), name })
    }

    pub fn parts(&self) -> u32 {
        self.size.div_ceil(PART_SIZE as u64) as u32
    }
}

/// A MIME type from a file name's extension.
pub fn guess_mime(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Retries `f` on retryable errors (a node down, no quorum), at most [`TRIES`] times.
async fn retrying<T, F: std::future::Future<Output = Result<T>>>(mut f: impl FnMut() -> F) -> Result<T> {
    let mut wait = Duration::from_millis(200);
    for attempt in 1.. {
        match f().await {
            Err(e) if e.is_retryable() && attempt < TRIES => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(3));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

fn read_part(path: &Path, part: u32, size: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let start = part as u64 * PART_SIZE as u64;
    let mut buf = vec![0; (size - start).min(PART_SIZE as u64) as usize];
    f.read_exact_at(&mut buf, start).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(buf)
}

/// What a download reads: a file, or one of its previews; a file somebody
/// else posted is read through the message that carries it (the file
/// reference: only members of that chat may read it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileLocation {
    pub file_id: u64,
    pub chat_id: u64,
    pub message_id: u64,
    /// `Some('s')` or `Some('m')`: that preview of an image.
    pub thumb: Option<char>,
}

impl FileLocation {
    /// A file you uploaded.
    pub fn own(file_id: u64) -> FileLocation {
        FileLocation { file_id, ..Default::default() }
    }

    /// The file a message carries, if any.
    pub fn of_message(m: &pb::Message) -> Option<FileLocation> {
        let f = m.media.as_ref()?.file.as_ref()?;
        Some(FileLocation { file_id: f.id, chat_id: m.chat_id, message_id: m.id, thumb: None })
    }

    pub fn thumb(self, kind: char) -> FileLocation {
        FileLocation { thumb: Some(kind), ..self }
    }
}

impl From<u64> for FileLocation {
    fn from(file_id: u64) -> FileLocation {
        FileLocation::own(file_id)
    }
}

impl Client {
    /// Sends the parts the cluster lacks (all of them for a new upload), then
    /// finishes; `progress` hears the bytes sent so far.
    pub async fn upload(&self, u: &Upload, progress: impl Fn(u64) + Send + Sync) -> Result<pb::File> {
        let parts = u.parts();
        // Resuming: ask first which parts are missing.
        let mut todo: Vec<u32> = match self.finish(u).await {
            Ok(f) => return Ok(f),
            Err(Error::Api { code, parts: missing, .. }) if code == Code::FilePartMissing && !missing.is_empty() => missing,
            Err(e) if e.code() == Code::FilePartMissing => (0..parts).collect(),
            Err(e) => return Err(e),
        };
        let sent = AtomicU64::new((parts as u64 - todo.len() as u64) * PART_SIZE as u64);
        for _round in 0..10 {
            progress(sent.load(Relaxed).min(u.size));
            let mut pending = todo.into_iter();
            let mut in_flight = FuturesUnordered::new();
            loop {
                while in_flight.len() < PARALLEL {
                    let Some(part) = pending.next() else { break };
                    let (path, size, id) = (u.path.clone(), u.size, u.upload_id);
                    let bytes = tokio::task::spawn_blocking(move || read_part(&path, part, size)).await.map_err(|e| Error::Config(e.to_string()))??;
                    in_flight.push(async move {
                        let n = bytes.len() as u64;
                        retrying(|| self.upload_part(id, part, PART_SIZE, bytes.clone())).await.map(|_| n)
                    });
                }
                let Some(r) = in_flight.next().await else { break };
                let n = r?;
                let total = sent.fetch_add(n, Relaxed) + n;
                progress(total.min(u.size));
            }
            match self.finish(u).await {
                Ok(f) => return Ok(f),
                // A node holding parts of an incomplete chunk died: send them again.
                Err(Error::Api { code, parts: missing, .. }) if code == Code::FilePartMissing => {
                    todo = if missing.is_empty() { (0..parts).collect() } else { missing };
                    sent.store((parts as u64 - todo.len() as u64) * PART_SIZE as u64, Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable("the upload did not complete after 10 rounds; run it again to resume".into()))
    }

    async fn finish(&self, u: &Upload) -> Result<pb::File> {
        retrying(|| self.finish_upload(u.upload_id, u.parts(), PART_SIZE, u.size, u.sha256, &u.name, &u.mime)).await
    }

    /// Downloads a file to `out` (through `out.part`, continued if present);
    /// `progress` hears (bytes so far, size).
    pub async fn download(&self, at: impl Into<FileLocation>, out: &Path, progress: impl Fn(u64, u64)) -> Result<pb::File> {
        let at = at.into();
        let partial = PathBuf::from(format!("{}.part", out.display()));
        let io = |e: std::io::Error| Error::Config(format!("{}: {e}", partial.display()));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&partial).map_err(io)?;
        let mut offset = f.metadata().map_err(io)?.len();
        let info = loop {
            let slice = retrying(|| self.get_file(at, offset, PART_SIZE)).await?;
            let mut file = slice.file.clone().unwrap_or_default();
            if let Some(kind) = at.thumb {
                file.size = file.thumbs.iter().find(|t| t.kind == kind.to_string()).map_or(0, |t| t.size as u64);
            }
            if offset > file.size {
                return Err(Error::Config(format!("{} is longer than the file; remove it", partial.display())));
            }
            std::io::Write::write_all(&mut &f, &slice.bytes).map_err(io)?;
            offset += slice.bytes.len() as u64;
            progress(offset, file.size);
            if offset >= file.size || slice.bytes.is_empty() {
                break file;
            }
        };
        let mut h = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&partial).map_err(io)?, &mut h).map_err(io)?;
        // A preview has no hash of its own (the chunk it is in was verified by the node).
        if at.thumb.is_none() && h.finalize().as_slice() != info.sha256.as_slice() {
            let _ = std::fs::remove_file(&partial);
            return Err(Error::Protocol("the downloaded bytes do not match the file's SHA-256 (removed; download again)".into()));
        }
        std::fs::rename(&partial, out).map_err(io)?;
        Ok(info)
    }
}
