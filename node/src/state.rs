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

/// `prefix` followed by big-endian ids: keys that sort by id.
pub fn key(prefix: &[u8], ids: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8 * ids.len());
    k.extend_from_slice(prefix);
    for id in ids {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}
