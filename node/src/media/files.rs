//! Finished files: their records (cached; any replica's copy when the
//! group has no quorum, a record never changes) and byte-range reads of a
//! file or of one of its previews.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use super::logic::{self, CHUNK_SIZE, ChunkRef, File, MediaError, ask};
use super::Media;
use crate::app;
use crate::error::{Error, Result};

/// File records kept in memory.
const FILES_CACHED: usize = 10_000;
/// Largest slice one `get_file` answers.
pub const MAX_READ: u32 = 512 << 10;

/// The bytes a read of up to `limit` from `offset` answers, of a file of
/// `size` bytes: at most [`MAX_READ`], none past the end (an offset past
/// it is refused).
fn wanted(offset: u64, limit: u32, size: u64) -> std::result::Result<Range<u64>, MediaError> {
    if offset > size {
        return Err(MediaError::BadRequest(format!("offset {offset} is past the end ({size} bytes)")));
    }
    Ok(offset..(offset + limit.min(MAX_READ) as u64).min(size))
}

/// The chunks (by index) that hold the non-empty range `bytes` of a file.
fn chunks_of(bytes: &Range<u64>) -> RangeInclusive<usize> {
    (bytes.start / CHUNK_SIZE) as usize..=((bytes.end - 1) / CHUNK_SIZE) as usize
}

/// What chunk `k` of a file (`c`) holds of the range `bytes`; `None` if
/// the chunk is shorter than its place in the file.
fn slice_in<'c>(k: usize, c: &'c [u8], bytes: &Range<u64>) -> Option<&'c [u8]> {
    let start = k as u64 * CHUNK_SIZE;
    let (a, b) = (bytes.start.max(start) - start, bytes.end.min(start + c.len() as u64) - start);
    c.get(a as usize..b as usize)
}

impl Media {
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
            _ => self.read(g, ask::File { file: id }).await,
        };
        let f = match f {
            Ok(f) => f,
            // The group has no quorum: a file's record never changes once
            // written, so any replica's copy will do.
            Err(e) if e.code() == courier_proto::Code::Unavailable => self.file_from_any_replica(g, id).await.ok_or(e)?,
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
        let q = ask::File { file: id };
        let file = |r: Result<Option<File>>| r.ok().flatten();
        if let Some(f) = file(app::read_stale(&self.node, group, None, q.clone()).await) {
            return Some(f);
        }
        let me = self.node.raft().ok()?.id();
        for (node, addr) in self.nodes().await.ok()? {
            if node == me {
                continue;
            }
            let r = tokio::time::timeout(Duration::from_secs(2), app::read_stale(&self.node, group, Some(&addr), q.clone())).await;
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
        let want = wanted(offset, limit, size)?;
        if want.is_empty() {
            return Ok((f, Vec::new()));
        }
        let fetched = futures::future::join_all(chunks_of(&want).map(|k| self.chunk(&chunks[k].hash))).await;
        let mut out = Vec::with_capacity((want.end - want.start) as usize);
        for (k, c) in chunks_of(&want).zip(fetched) {
            let c = c?;
            let Some(bytes) = slice_in(k, &c, &want) else {
                return Err(Error::Io(format!("file {id}: chunk {k} is shorter than its place in the file")));
            };
            out.extend_from_slice(bytes);
        }
        Ok((f, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_cut_at_max_read_and_at_the_end() {
        assert_eq!(wanted(0, 10, 5), Ok(0..5));
        assert_eq!(wanted(2, 2, 5), Ok(2..4));
        assert_eq!(wanted(5, 10, 5), Ok(5..5), "at the end: nothing");
        assert!(matches!(wanted(6, 10, 5), Err(MediaError::BadRequest(_))), "past the end");
        assert_eq!(wanted(7, u32::MAX, 1 << 30), Ok(7..7 + MAX_READ as u64));
        assert_eq!(wanted(0, 0, 5), Ok(0..0));
    }

    #[test]
    fn a_range_reads_the_chunks_it_spans_and_the_right_bytes_of_each() {
        assert_eq!(chunks_of(&(0..1)), 0..=0);
        assert_eq!(chunks_of(&(CHUNK_SIZE - 1..CHUNK_SIZE + 1)), 0..=1);
        assert_eq!(chunks_of(&(CHUNK_SIZE..2 * CHUNK_SIZE)), 1..=1, "a range ending on a chunk's end");
        // A file of two whole chunks and a short one, read back in slices.
        let file: Vec<u8> = (0..2 * CHUNK_SIZE + 1000).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = file.chunks(CHUNK_SIZE as usize).collect();
        for (offset, limit) in [(0, 10), (CHUNK_SIZE - 3, 7), (2 * CHUNK_SIZE - 100, MAX_READ), (2 * CHUNK_SIZE + 990, 100), (CHUNK_SIZE, 1)] {
            let want = wanted(offset, limit, file.len() as u64).unwrap();
            let read: Vec<u8> = chunks_of(&want).flat_map(|k| slice_in(k, chunks[k], &want).unwrap().to_vec()).collect();
            assert_eq!(read, file[want.start as usize..want.end as usize], "{offset}+{limit}");
        }
        // A chunk shorter than its place in the file answers no bytes.
        let want = CHUNK_SIZE + 10..CHUNK_SIZE + 20;
        assert_eq!(slice_in(1, &file[..5], &want), None);
        assert_eq!(slice_in(1, &file[..15], &want), Some(&file[10..15]), "what it has of the range");
    }
}
