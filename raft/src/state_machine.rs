//! openraft's state machine for one group: applies committed commands with
//! [`crate::logic::apply`] and builds and installs snapshots.

use std::collections::BTreeMap;
use std::io;

use courier_storage::{Durability, GroupId, Store, WriteSet};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::log_store::io_err;
use crate::logic::{self, StateRead, StateView};
use crate::types::{LogId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

#[derive(Clone)]
pub struct StateMachine {
    group: GroupId,
    store: Store,
    app: std::sync::Arc<dyn logic::App>,
}

/// The body of a snapshot: every state machine row of the group.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A [`StateView`] over the stored state plus the writes of the batch being applied.
struct BatchView<'a> {
    group: GroupId,
    store: &'a Store,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl StateRead for BatchView<'_> {
    fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.store.get_sm(self.group, key)?),
        }
    }
}

/// The stored state of one group, read-only.
pub struct StoreView<'a> {
    pub group: GroupId,
    pub store: &'a Store,
}

impl StateRead for StoreView<'_> {
    fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        Ok(self.store.get_sm(self.group, key)?)
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.store.scan_sm_page(self.group, prefix, after, limit)?)
    }
}

impl StateView for BatchView<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.pending.insert(key.to_vec(), Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.pending.insert(key.to_vec(), None);
    }
}

impl StateMachine {
    pub fn new(group: GroupId, store: Store, app: std::sync::Arc<dyn logic::App>) -> Self {
        Self { group, store, app }
    }

    fn read_state<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, io::Error> {
        match self.store.get_state(self.group, name).map_err(io_err)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(io_err)?)),
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let group = self.group;
        let (states, rows) = tokio::task::spawn_blocking(move || store.export_group(group, &[APPLIED, MEMBERSHIP]))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        let last_log_id: Option<LogId> = states[0].as_deref().map(decode).transpose().map_err(io_err)?;
        let last_membership: StoredMembership =
            states[1].as_deref().map(decode).transpose().map_err(io_err)?.unwrap_or_default();
        let meta = SnapshotMeta { last_log_id, last_membership };
        let data = encode(&SnapshotBody { rows });
        self.store
            .put_state(self.group, SNAPSHOT, &encode(&(&meta, &data)), Durability::Buffered)
            .map_err(io_err)?;
        tracing::info!(group = self.group, index = ?last_log_id.map(|l| l.index), bytes = data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.read_state::<LogId>(APPLIED)?;
        let membership = self.read_state::<StoredMembership>(MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut view = BatchView { group: self.group, store: &self.store, pending: BTreeMap::new() };
        let mut ws = WriteSet::new();
        let mut last_applied = None;
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Normal(cmd) => logic::apply(self.app.as_ref(), &mut view, cmd, entry.log_id.index).map_err(io_err)?,
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    ws.put_state(self.group, MEMBERSHIP, encode(&stored));
                    Response::Empty
                }
            };
            if let Some(r) = responder {
                responders.push((r, response));
            }
        }
        for (k, v) in std::mem::take(&mut view.pending) {
            match v {
                Some(v) => ws.put_sm(self.group, &k, v),
                None => ws.delete_sm(self.group, &k),
            }
        }
        if let Some(applied) = last_applied {
            ws.put_state(self.group, APPLIED, encode(&applied));
        }
        // Not synced: the log entries are already durable, and the WAL keeps this
        // write ordered before anything (a purge) that depends on it.
        self.store.write(ws, Durability::Buffered).map_err(io_err)?;
        for (r, response) in responders {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let body: SnapshotBody = decode(&snapshot).map_err(io_err)?;
        let mut ws = WriteSet::new();
        ws.clear_sm(self.group);
        for (k, v) in body.rows {
            ws.put_sm(self.group, &k, v);
        }
        if let Some(applied) = &meta.last_log_id {
            ws.put_state(self.group, APPLIED, encode(applied));
        }
        ws.put_state(self.group, MEMBERSHIP, encode(&meta.last_membership));
        ws.put_state(self.group, SNAPSHOT, encode(&(meta, &snapshot)));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(ws, Durability::Synced)).await.map_err(io_err)?.map_err(io_err)?;
        tracing::info!(group = self.group, index = ?meta.last_log_id.map(|l| l.index), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .read_state::<(SnapshotMeta, Vec<u8>)>(SNAPSHOT)?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}
