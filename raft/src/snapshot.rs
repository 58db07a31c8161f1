//! What a group's snapshot carries, and its encoding on the wire.
//!
//! A snapshot this node makes is a pinned moment of its own store (a RocksDB
//! snapshot: nothing copied), read only when it is sent to a follower, and
//! then streamed piece by piece: at start-up (openraft reads the current
//! snapshot's meta only) and at every snapshot point nothing is read at all,
//! and sending one holds a piece at a time, not the group. A snapshot
//! received from a leader is decoded as it arrives and its rows written to a
//! staged file ([`receive`]), which the install then swaps in: a follower
//! does not hold the group in memory either.
//!
//! The body's encoding is that of [`SnapshotBody`] under [`codec::encode`]
//! (the format byte, then postcard), whether streamed or not, so nodes of
//! every version read what any other sends.

use courier_storage::{GroupSnapshot, StagedGroup, Store};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};

/// Every state-machine row of a group (key without the group, value), in key order.
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Longest key or value a received snapshot may hold (rows are messages,
/// members, lists: far smaller): a length past it is a corrupt stream,
/// refused before anything is buffered for it.
const MAX_FIELD: u64 = 64 << 20;

/// The data of a group's snapshot.
pub enum SnapshotData {
    /// This node's own rows, as of the moment the snapshot was asked for.
    Pinned(GroupSnapshot),
    /// A leader's snapshot as received: its rows in a staged file.
    Staged(StagedGroup),
}

impl SnapshotData {
    /// The encoded body, handed to `out` in pieces of about `piece` bytes
    /// (a row longer than that makes a longer piece); a pinned group is read
    /// twice (its rows counted, then encoded) and never held whole. Stops
    /// early, without error, once `out` returns false (the receiver is
    /// gone). Reads from disk: call it off the async runtime.
    pub fn encode_in_pieces(&self, piece: usize, mut out: impl FnMut(Vec<u8>) -> bool) -> Result<()> {
        let p = match self {
            SnapshotData::Pinned(p) => p,
            // openraft sends the current snapshot, which is always pinned.
            SnapshotData::Staged(_) => return Err(Error::Invalid("a received snapshot is installed, never sent on".into())),
        };
        let mut count = 0u64;
        p.for_each_row(|_, _| {
            count += 1;
            Ok(())
        })?;
        // What postcard writes for a `SnapshotBody`: the row count, then
        // each key and value with its length, lengths as varints.
        let mut buf = vec![codec::FORMAT];
        push_len(&mut buf, count);
        let (mut written, mut gone) = (0u64, false);
        let walked = p.for_each_row(|k, v| {
            if written == count {
                // The pin holds one moment: a second walk sees the same rows.
                return Err(courier_storage::Error::Corrupt("a pinned group grew between two reads".into()));
            }
            written += 1;
            push_len(&mut buf, k.len() as u64);
            buf.extend_from_slice(k);
            push_len(&mut buf, v.len() as u64);
            buf.extend_from_slice(v);
            if buf.len() >= piece && !out(std::mem::take(&mut buf)) {
                gone = true;
                return Err(courier_storage::Error::Engine("the snapshot's receiver is gone".into()));
            }
            Ok(())
        });
        if gone {
            return Ok(());
        }
        walked?;
        if written != count {
            return Err(courier_storage::Error::Corrupt(format!("a pinned group had {count} rows, then {written}")).into());
        }
        if !buf.is_empty() {
            out(buf);
        }
        Ok(())
    }
}

/// Decodes an encoded body from `pieces` (split anywhere) as they come and
/// stages its rows for `group` in `store`. Every row must arrive: a body cut
/// short or with rows out of order is an error, and nothing is left behind.
/// Bytes after the last row are read and ignored, as [`codec::decode`]
/// ignores them (a later version's trailer). Blocking: call it off the
/// async runtime.
pub fn receive(store: &Store, group: u32, pieces: impl Iterator<Item = Vec<u8>>) -> Result<StagedGroup> {
    let mut body = Pieces { pieces, buf: Vec::new(), at: 0 };
    match body.byte()? {
        codec::FORMAT => {}
        other => return Err(Error::Decode(format!("snapshot body of unknown format {other}"))),
    }
    let count = body.varint()?;
    let staged = store.stage_group(group, |w| {
        for _ in 0..count {
            let k = body.field().map_err(as_storage)?.to_vec();
            let v = body.field().map_err(as_storage)?;
            w.put(&k, v)?;
        }
        Ok(())
    })?;
    for _ in body.pieces.by_ref() {}
    Ok(staged)
}

fn as_storage(e: Error) -> courier_storage::Error {
    courier_storage::Error::Corrupt(e.to_string())
}

/// Bytes read across pieces.
struct Pieces<I> {
    pieces: I,
    buf: Vec<u8>,
    at: usize,
}

impl<I: Iterator<Item = Vec<u8>>> Pieces<I> {
    /// Makes `n` bytes readable at `at`, or says the body was cut short.
    fn fill(&mut self, n: usize) -> Result<()> {
        while self.buf.len() - self.at < n {
            let Some(piece) = self.pieces.next() else {
                return Err(Error::Decode("snapshot body cut short".into()));
            };
            self.buf.drain(..self.at);
            self.at = 0;
            self.buf.extend_from_slice(&piece);
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        self.fill(1)?;
        self.at += 1;
        Ok(self.buf[self.at - 1])
    }

    /// A length as postcard writes it (a varint of at most 10 bytes).
    fn varint(&mut self) -> Result<u64> {
        // Up to 10 bytes, fewer where the body ends sooner.
        if self.fill(10).is_err() && self.buf.len() == self.at {
            return Err(Error::Decode("snapshot body cut short".into()));
        }
        let avail = &self.buf[self.at..];
        let (n, rest) = postcard::take_from_bytes::<u64>(avail).map_err(|e| Error::Decode(format!("snapshot length: {e}")))?;
        self.at += avail.len() - rest.len();
        Ok(n)
    }

    /// A length-prefixed byte string.
    fn field(&mut self) -> Result<&[u8]> {
        let n = self.varint()?;
        if n > MAX_FIELD {
            return Err(Error::Decode(format!("a snapshot field of {n} bytes")));
        }
        self.fill(n as usize)?;
        self.at += n as usize;
        Ok(&self.buf[self.at - n as usize..self.at])
    }
}

/// Appends a length as postcard writes it (a varint).
fn push_len(out: &mut Vec<u8>, n: u64) {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(&n, buf).expect("a u64 always encodes");
}

#[cfg(test)]
mod tests {
    use courier_storage::{Durability, Store, WriteSet};

    use super::*;
    use crate::codec::{decode, encode};

    fn pieces(data: &SnapshotData, piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        data.encode_in_pieces(piece, |p| {
            out.push(p);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn a_pinned_group_streams_exactly_the_encoding_of_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Lengths on both sides of the one-byte varint bound, an empty value,
        // and a row larger than a piece.
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> =
            (0..300u32).map(|i| (format!("k{i:05}").into_bytes(), vec![i as u8; (i as usize * 7) % 300])).collect();
        rows.push((b"z-big".to_vec(), vec![9; 5000]));
        let mut ws = WriteSet::new();
        for (k, v) in &rows {
            ws.put_sm(3, k, v.clone());
        }
        ws.put_sm(4, b"another group", b"x".to_vec());
        store.write(ws, Durability::Buffered).unwrap();

        let pinned = SnapshotData::Pinned(store.pin_group(3));
        let mut ws = WriteSet::new();
        ws.put_sm(3, b"k00001", b"written after the pin".to_vec());
        store.write(ws, Durability::Buffered).unwrap();

        let expected = encode(&SnapshotBody { rows: rows.clone() });
        let got = pieces(&pinned, 1024);
        assert!(got.len() > 3, "streamed in pieces, not whole: {}", got.len());
        assert!(got.iter().all(|p| p.len() < 1024 + 5100), "no piece holds much more than asked");
        assert!(got.concat() == expected, "the bytes a node of any version decodes");
        assert!(decode::<SnapshotBody>(&got.concat()).unwrap().rows == rows, "the rows of the pinned moment");
        assert!(pieces(&pinned, usize::MAX).concat() == expected);

        // A receiver that goes away ends the walk quietly.
        let mut taken = 0;
        pinned
            .encode_in_pieces(100, |_| {
                taken += 1;
                taken < 2
            })
            .unwrap();
        assert_eq!(taken, 2);

        let empty = SnapshotData::Pinned(store.pin_group(9));
        assert_eq!(pieces(&empty, 1024).concat(), encode(&SnapshotBody { rows: vec![] }));
    }

    fn rows_of(store: &Store, group: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        store.scan_sm(group, b"").unwrap()
    }

    #[test]
    fn a_received_body_is_staged_row_by_row_whatever_its_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32).map(|i| (format!("k{i:05}").into_bytes(), vec![i as u8; (i as usize * 13) % 400])).collect();
        rows.push((b"z-big".to_vec(), vec![7; 20_000]));
        let body = encode(&SnapshotBody { rows: rows.clone() });
        for piece in [1, 2, 3, 127, 128, 1000, body.len()] {
            let staged = receive(&store, 8, body.chunks(piece).map(<[u8]>::to_vec)).unwrap();
            assert_eq!(staged.rows(), rows.len() as u64, "pieces of {piece}");
            store.install_group(staged, Vec::new()).unwrap();
            assert!(rows_of(&store, 8) == rows, "pieces of {piece}: the rows sent");
        }
        let empty = receive(&store, 8, std::iter::once(encode(&SnapshotBody { rows: vec![] }))).unwrap();
        assert_eq!(empty.rows(), 0);
        drop(empty);

        // Bodies that are not whole, or not a body, are refused, staging nothing.
        let staged_files = || std::fs::read_dir(dir.path().join("staging")).map(|d| d.count()).unwrap_or(0);
        let cut = body[..body.len() - 1].to_vec();
        let unordered = encode(&SnapshotBody { rows: vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])] });
        let mut other_format = body.clone();
        other_format[0] = 9;
        let mut huge = vec![codec::FORMAT, 1];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        for (what, bad) in [("cut short", cut), ("out of order", unordered), ("other format", other_format), ("a huge field", huge)] {
            assert!(receive(&store, 8, bad.chunks(100).map(<[u8]>::to_vec)).is_err(), "{what}");
            assert_eq!(staged_files(), 0, "{what}: nothing left behind");
        }
        assert!(receive(&store, 8, std::iter::empty()).is_err(), "nothing at all");
        assert!(rows_of(&store, 8) == rows, "the installed rows stand");

        // A later version's trailer after the rows is read past, as `decode` does.
        let mut longer = body.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        let staged = receive(&store, 8, longer.chunks(1000).map(<[u8]>::to_vec)).unwrap();
        assert_eq!(staged.rows(), rows.len() as u64);
        assert_eq!(decode::<SnapshotBody>(&longer).unwrap().rows.len(), rows.len(), "as older receivers read it");

        // What this node sends, another receives: a pinned group through pieces.
        let other = tempfile::tempdir().unwrap();
        let other = Store::open(other.path()).unwrap();
        let sent = pieces(&SnapshotData::Pinned(store.pin_group(8)), 4096);
        other.install_group(receive(&other, 8, sent.into_iter()).unwrap(), Vec::new()).unwrap();
        assert!(rows_of(&other, 8) == rows);
    }
}
