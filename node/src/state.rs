//! Typed access to a group's state-machine rows for the services' pure
//! apply logic: values are encoded by the raft codec (a format byte, then
//! postcard), so every row is versioned.

use courier_raft::logic::{StateRead, StateView};

use crate::error::Result;

pub fn get<T: serde::de::DeserializeOwned>(view: &dyn StateRead, key: &[u8]) -> Result<Option<T>> {
    match view.get(key)? {
        Some(b) => Ok(Some(courier_raft::codec::decode(&b)?)),
        None => Ok(None),
    }
}

pub fn put<T: serde::Serialize>(view: &mut dyn StateView, key: &[u8], value: &T) {
    view.put(key, courier_raft::codec::encode(value));
}

/// A row whose layout grew since rows were first written: it is written
/// under `FORMAT` (above the codec's first format), and a row carrying an
/// older format byte is read as `Prev` and converted. Adding a field to a
/// stored struct means: the old struct becomes `Prev`, `FORMAT` goes up.
pub trait Evolved: serde::Serialize + serde::de::DeserializeOwned {
    const FORMAT: u8;
    type Prev: serde::de::DeserializeOwned + Into<Self>;

    /// A row of an older `format` (below `FORMAT`). By default it is the
    /// codec's first format, read as `Prev`; a row that evolved more than
    /// once reads each older format through its own layout.
    fn older(_format: u8, bytes: &[u8]) -> Result<Self> {
        Ok(courier_raft::codec::decode::<Self::Prev>(bytes)?.into())
    }
}

pub fn decode_row<T: Evolved>(bytes: &[u8]) -> Result<T> {
    let (format, body) = courier_raft::codec::split_format(bytes)?;
    if format == T::FORMAT {
        Ok(courier_raft::codec::decode_body(body)?)
    } else if format < T::FORMAT {
        T::older(format, bytes)
    } else {
        Err(courier_raft::Error::Decode(format!("unknown row format {format}")).into())
    }
}

pub fn get_row<T: Evolved>(view: &dyn StateRead, key: &[u8]) -> Result<Option<T>> {
    view.get(key)?.map(|b| decode_row(&b)).transpose()
}

pub fn put_row<T: Evolved>(view: &mut dyn StateView, key: &[u8], value: &T) {
    view.put(key, courier_raft::codec::encode_as(T::FORMAT, value));
}

/// The id [`key`] wrote right after `prefix` (the key's first `prefix` bytes),
/// or `None` for a key too short to hold one.
pub fn id_after(key: &[u8], prefix: usize) -> Option<u64> {
    key.get(prefix..prefix + 8)?.try_into().ok().map(u64::from_be_bytes)
}

/// `prefix` followed by big-endian ids: keys that sort by id.
pub fn key(prefix: &[u8], ids: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8 * ids.len());
    k.extend_from_slice(prefix);
    for id in ids {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}
