//! What a group's snapshot carries, and its encoding on the wire.
//!
//! A snapshot this node makes is a pinned moment of its own store (a RocksDB
//! snapshot: nothing copied), read only when it is sent to a follower, and
//! then streamed piece by piece: at start-up (openraft reads the current
//! snapshot's meta only) and at every snapshot point nothing is read at all,
//! and sending one holds a piece at a time, not the group. A snapshot
//! received from a leader is its encoded body.
//!
//! The body's encoding is that of [`SnapshotBody`] under [`codec::encode`]
//! (the format byte, then postcard), whether streamed or not, so nodes of
//! every version read what any other sends.

use courier_storage::GroupSnapshot;
use serde::{Deserialize, Serialize};

use crate::codec::{self, decode};
use crate::error::Result;

/// Every state-machine row of a group (key without the group, value), in key order.
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The data of a group's snapshot.
pub enum SnapshotData {
    /// This node's own rows, as of the moment the snapshot was asked for.
    Pinned(GroupSnapshot),
    /// An encoded [`SnapshotBody`], as a leader sent it.
    Encoded(Vec<u8>),
}

impl SnapshotData {
    /// The rows. Reads a pinned group from disk: call it off the async runtime.
    pub fn rows(self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self {
            SnapshotData::Encoded(bytes) => Ok(decode::<SnapshotBody>(&bytes)?.rows),
            SnapshotData::Pinned(p) => {
                let mut rows = Vec::new();
                p.for_each_row(|k, v| {
                    rows.push((k.to_vec(), v.to_vec()));
                    Ok(())
                })?;
                Ok(rows)
            }
        }
    }

    /// The encoded body, handed to `out` in pieces of about `piece` bytes
    /// (a row longer than that makes a longer piece); a pinned group is read
    /// twice (its rows counted, then encoded) and never held whole. Stops
    /// early, without error, once `out` returns false (the receiver is
    /// gone). Reads from disk: call it off the async runtime.
    pub fn encode_in_pieces(&self, piece: usize, mut out: impl FnMut(Vec<u8>) -> bool) -> Result<()> {
        match self {
            SnapshotData::Encoded(bytes) => {
                for c in bytes.chunks(piece.max(1)) {
                    if !out(c.to_vec()) {
                        return Ok(());
                    }
                }
                Ok(())
            }
            SnapshotData::Pinned(p) => {
                let mut count = 0u64;
                p.for_each_row(|_, _| {
                    count += 1;
                    Ok(())
                })?;
                // What postcard writes for a `SnapshotBody`: the row count,
                // then each key and value with its length, lengths as varints.
                let mut buf = vec![codec::FORMAT];
                push_varint(&mut buf, count);
                let (mut written, mut gone) = (0u64, false);
                let walked = p.for_each_row(|k, v| {
                    if written == count {
                        // The pin holds one moment: a second walk sees the same rows.
                        return Err(courier_storage::Error::Corrupt("a pinned group grew between two reads".into()));
                    }
                    written += 1;
                    push_varint(&mut buf, k.len() as u64);
                    buf.extend_from_slice(k);
                    push_varint(&mut buf, v.len() as u64);
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
    }
}

/// Appends `n` as postcard writes a length: 7 bits a byte, low first, the
/// high bit set on every byte but the last.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use courier_storage::{Durability, Store, WriteSet};

    use super::*;
    use crate::codec::encode;

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

        // Received bytes travel as they came; both kinds give the rows back.
        let encoded = SnapshotData::Encoded(expected.clone());
        assert!(pieces(&encoded, 1000).concat() == expected);
        assert!(encoded.rows().unwrap() == rows);
        assert!(pinned.rows().unwrap() == rows);
        let empty = SnapshotData::Pinned(store.pin_group(9));
        assert_eq!(pieces(&empty, 1024).concat(), encode(&SnapshotBody { rows: vec![] }));
    }
}
