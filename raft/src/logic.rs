//! The state machines' decisions: pure functions from (state, command) to
//! (new state, response). No clock, no randomness, no I/O: the caller passes a
//! [`StateView`] (RocksDB-backed in production, a map in tests).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::Result;
use crate::types::{Command, NodeId, NodeInfo, NodeState, Response};

/// Reads of one group's state machine.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// At most `limit` rows whose keys start with `prefix` and sort after
    /// `after` (empty: from the first), in key order. Queries page with it;
    /// commands being applied cannot (their view is not a snapshot).
    fn scan(&self, _prefix: &[u8], _after: &[u8], _limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Err(crate::Error::Invalid("this state view cannot scan".into()))
    }
}

/// Reads and buffered writes of one group's state machine during apply.
pub trait StateView: StateRead {
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
}

/// The application's replicated logic: the services in `node/` (auth,
/// messaging, media metadata) implement it. The raft layer hands it the opaque
/// bytes of [`Command::App`] and [`crate::Query::App`]; it must be a pure
/// function of the state and the bytes (the proposer stamps the time into the
/// command), so every replica computes the same result. An `Err` stops the
/// group (it means storage failed); a command the application refuses is an
/// `Ok` answer that says so.
pub trait App: Send + Sync + 'static {
    fn apply(&self, view: &mut dyn StateView, cmd: &[u8], index: u64) -> Result<Vec<u8>>;
    fn query(&self, view: &dyn StateRead, query: &[u8]) -> Result<Vec<u8>>;
    /// The leader's look at a command before proposing it: `Some(reply)`
    /// answers the caller with `reply`, as if `apply` had, and nothing is
    /// proposed. For budgets that must hold cluster-wide without costing a
    /// write: a group has one leader at a time (a new leader starts with
    /// fresh counts). The command's own time is the clock.
    fn admit(&self, _group: crate::GroupId, _cmd: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// Whether a query scans many rows (a search): the leader runs at most
    /// `RaftOptions::heavy_reads` of them at once, off the async workers.
    fn heavy(&self, _query: &[u8]) -> bool {
        false
    }
}

/// An [`App`] that refuses every command (tests of the raft layer alone).
pub struct NoApp;

impl App for NoApp {
    fn apply(&self, _: &mut dyn StateView, _: &[u8], _: u64) -> Result<Vec<u8>> {
        Err(crate::Error::Invalid("no application state machine".into()))
    }
    fn query(&self, _: &dyn StateRead, _: &[u8]) -> Result<Vec<u8>> {
        Err(crate::Error::Invalid("no application state machine".into()))
    }
}

/// The meta group's whole state; small (one record per node ever registered).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: String,
    pub data_groups: u32,
    pub next_node_id: NodeId,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub info: NodeInfo,
    pub state: NodeState,
    pub incarnation: u64,
}

impl ClusterState {
    pub fn is_initialized(&self) -> bool {
        !self.cluster_id.is_empty()
    }
    pub fn active_nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.state == NodeState::Active)
    }
}

pub const CLUSTER_KEY: &[u8] = b"cluster";
/// Meta group: `revoked/<sha256>` for each revoked certificate.
pub const REVOKED_PREFIX: &[u8] = b"revoked/";
/// Certificates a cluster may revoke: the list is read whole by every node.
pub const REVOKED_MAX: usize = 10_000;

/// The revoked certificates, in key order.
pub fn revoked_certs(view: &dyn StateRead) -> Result<Vec<[u8; 32]>> {
    let rows = view.scan(REVOKED_PREFIX, &[], REVOKED_MAX)?;
    Ok(rows.iter().filter_map(|(k, _)| k.get(REVOKED_PREFIX.len()..)?.try_into().ok()).collect())
}
pub const KV_PREFIX: &str = "kv/";

pub fn kv_key(key: &str) -> Vec<u8> {
    format!("{KV_PREFIX}{key}").into_bytes()
}

pub fn load_cluster(view: &dyn StateRead) -> Result<ClusterState> {
    Ok(match view.get(CLUSTER_KEY)? {
        Some(bytes) => decode(&bytes)?,
        None => ClusterState::default(),
    })
}

/// Applies one command at log index `index`.
pub fn apply(app: &dyn App, view: &mut dyn StateView, cmd: &Command, index: u64) -> Result<Response> {
    match cmd {
        Command::App(bytes) => Ok(Response::App(app.apply(view, bytes, index)?)),
        Command::KvPut { key, value } => {
            view.put(&kv_key(key), value.clone());
            Ok(Response::Written { index })
        }
        Command::InitCluster { cluster_id, data_groups, first, incarnation } => {
            let mut st = load_cluster(view)?;
            if st.is_initialized() {
                return Ok(if st.cluster_id == *cluster_id {
                    Response::NodeId(1)
                } else {
                    Response::Refused(format!("cluster {} is already initialized", st.cluster_id))
                });
            }
            st.cluster_id = cluster_id.clone();
            st.data_groups = *data_groups;
            st.next_node_id = 2;
            st.nodes.insert(1, NodeRecord { id: 1, info: first.clone(), state: NodeState::Active, incarnation: *incarnation });
            view.put(CLUSTER_KEY, encode(&st));
            Ok(Response::NodeId(1))
        }
        Command::RegisterNode { info, incarnation } => {
            let mut st = load_cluster(view)?;
            if !st.is_initialized() {
                return Ok(Response::Refused("the cluster is not initialized".into()));
            }
            if let Some(existing) = st.nodes.values().find(|n| n.incarnation == *incarnation) {
                return Ok(Response::NodeId(existing.id));
            }
            let id = st.next_node_id;
            st.next_node_id += 1;
            st.nodes.insert(id, NodeRecord { id, info: info.clone(), state: NodeState::Active, incarnation: *incarnation });
            view.put(CLUSTER_KEY, encode(&st));
            Ok(Response::NodeId(id))
        }
        Command::SetNodeState { id, state } => {
            let mut st = load_cluster(view)?;
            let Some(node) = st.nodes.get_mut(id) else {
                return Ok(Response::Refused(format!("node {id} is not registered")));
            };
            let allowed = matches!(
                (node.state, *state),
                (NodeState::Active, NodeState::Removing)
                    | (NodeState::Removing, NodeState::Removed)
                    | (NodeState::Active, NodeState::Removed)
            ) || node.state == *state;
            if !allowed {
                return Ok(Response::Refused(format!("node {id} is {} and cannot become {}", node.state.as_str(), state.as_str())));
            }
            node.state = *state;
            view.put(CLUSTER_KEY, encode(&st));
            Ok(Response::Empty)
        }
        Command::UpdateNode { id, info } => {
            let mut st = load_cluster(view)?;
            let Some(node) = st.nodes.get_mut(id) else {
                return Ok(Response::Refused(format!("node {id} is not registered")));
            };
            node.info = info.clone();
            view.put(CLUSTER_KEY, encode(&st));
            Ok(Response::Empty)
        }
        Command::RevokeCert { sha256 } => {
            let key = [REVOKED_PREFIX, sha256.as_slice()].concat();
            if view.get(&key)?.is_none() {
                view.put(&key, encode(&index));
            }
            Ok(Response::Written { index })
        }
    }
}

/// An in-memory [`StateView`] for tests and tools.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct MemView(pub HashMap<Vec<u8>, Vec<u8>>);

impl StateRead for MemView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = self.0.iter().filter(|(k, _)| k.starts_with(prefix) && k.as_slice() > after).map(|(k, v)| (k.clone(), v.clone())).collect();
        rows.sort();
        rows.truncate(limit);
        Ok(rows)
    }
}

impl StateView for MemView {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key.to_vec(), value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> NodeInfo {
        NodeInfo { name: name.into(), peer_addr: format!("{name}:1"), ..Default::default() }
    }

    fn init(view: &mut MemView) {
        let r = apply(&NoApp, view, &Command::InitCluster { cluster_id: "c1".into(), data_groups: 16, first: info("a"), incarnation: 10 }, 1).unwrap();
        assert_eq!(r, Response::NodeId(1));
    }

    #[test]
    fn register_assigns_fresh_ids_and_dedupes_retries() {
        let mut v = MemView::default();
        assert!(matches!(apply(&NoApp, &mut v, &Command::RegisterNode { info: info("b"), incarnation: 20 }, 1).unwrap(), Response::Refused(_)));
        init(&mut v);
        let b = apply(&NoApp, &mut v, &Command::RegisterNode { info: info("b"), incarnation: 20 }, 2).unwrap();
        let b_again = apply(&NoApp, &mut v, &Command::RegisterNode { info: info("b"), incarnation: 20 }, 3).unwrap();
        let c = apply(&NoApp, &mut v, &Command::RegisterNode { info: info("c"), incarnation: 30 }, 4).unwrap();
        assert_eq!((b, b_again, c), (Response::NodeId(2), Response::NodeId(2), Response::NodeId(3)));
        // A wiped node comes back with a new incarnation: a new id, never a reused one.
        let b2 = apply(&NoApp, &mut v, &Command::RegisterNode { info: info("b"), incarnation: 21 }, 5).unwrap();
        assert_eq!(b2, Response::NodeId(4));
        let st = load_cluster(&v).unwrap();
        assert_eq!(st.next_node_id, 5);
        assert_eq!(st.data_groups, 16);
    }

    #[test]
    fn init_is_idempotent_but_refuses_another_cluster() {
        let mut v = MemView::default();
        init(&mut v);
        init(&mut v);
        let other = apply(&NoApp, &mut v, &Command::InitCluster { cluster_id: "c2".into(), data_groups: 4, first: info("z"), incarnation: 1 }, 3).unwrap();
        assert!(matches!(other, Response::Refused(_)));
        assert_eq!(load_cluster(&v).unwrap().cluster_id, "c1");
    }

    #[test]
    fn node_state_transitions() {
        let mut v = MemView::default();
        init(&mut v);
        apply(&NoApp, &mut v, &Command::RegisterNode { info: info("b"), incarnation: 2 }, 2).unwrap();
        assert_eq!(apply(&NoApp, &mut v, &Command::SetNodeState { id: 2, state: NodeState::Removing }, 3).unwrap(), Response::Empty);
        assert!(matches!(apply(&NoApp, &mut v, &Command::SetNodeState { id: 2, state: NodeState::Active }, 4).unwrap(), Response::Refused(_)));
        assert_eq!(apply(&NoApp, &mut v, &Command::SetNodeState { id: 2, state: NodeState::Removed }, 5).unwrap(), Response::Empty);
        assert!(matches!(apply(&NoApp, &mut v, &Command::SetNodeState { id: 9, state: NodeState::Removed }, 6).unwrap(), Response::Refused(_)));
    }

    #[test]
    fn kv_put_writes_under_prefix() {
        let mut v = MemView::default();
        assert_eq!(apply(&NoApp, &mut v, &Command::KvPut { key: "k".into(), value: b"v".to_vec() }, 7).unwrap(), Response::Written { index: 7 });
        assert_eq!(v.get(&kv_key("k")).unwrap(), Some(b"v".to_vec()));
    }
}
