//! The state machines' decisions: pure functions from (state, command) to
//! (new state, response). No clock, no randomness, no I/O: the caller passes a
//! [`StateView`] (RocksDB-backed in production, a map in tests).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::Result;
use crate::types::{Command, NodeId, NodeInfo, NodeState, Query, Refused, Reply, Request, cmd};
#[cfg(test)]
use crate::types::ask;

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

/// Applies one command at log index `index`: its answer's bytes.
pub fn apply(app: &dyn App, view: &mut dyn StateView, cmd: &Command, index: u64) -> Result<Reply> {
    Ok(match cmd {
        Command::App(c) => c.reply(app.apply(view, &c.0, index)?),
        Command::KvPut(c) => {
            view.put(&kv_key(&c.key), c.value.clone());
            c.reply(index)
        }
        Command::InitCluster(c) => c.reply(init_cluster(view, c)?),
        Command::RegisterNode(c) => c.reply(register_node(view, c)?),
        Command::SetNodeState(c) => c.reply(set_node_state(view, c)?),
        Command::UpdateNode(c) => c.reply(update_node(view, c)?),
        Command::RevokeCert(c) => {
            let key = [REVOKED_PREFIX, c.sha256.as_slice()].concat();
            if view.get(&key)?.is_none() {
                view.put(&key, encode(&index));
            }
            c.reply(index)
        }
    })
}

/// Answers one query from a replica's state: its answer's bytes.
pub fn query(app: &dyn App, view: &dyn StateRead, q: &Query) -> Result<Reply> {
    Ok(match q {
        Query::KvGet(q) => q.reply(view.get(&kv_key(&q.key))?),
        Query::Cluster(q) => q.reply(load_cluster(view)?),
        Query::App(q) => q.reply(app.query(view, &q.0)?),
        Query::RevokedCerts(q) => q.reply(revoked_certs(view)?),
    })
}

fn init_cluster(view: &mut dyn StateView, c: &cmd::InitCluster) -> Result<Result<NodeId, Refused>> {
    let mut st = load_cluster(view)?;
    if st.is_initialized() {
        return Ok(if st.cluster_id == c.cluster_id { Ok(1) } else { Err(Refused(format!("cluster {} is already initialized", st.cluster_id))) });
    }
    st.cluster_id = c.cluster_id.clone();
    st.data_groups = c.data_groups;
    st.next_node_id = 2;
    st.nodes.insert(1, NodeRecord { id: 1, info: c.first.clone(), state: NodeState::Active, incarnation: c.incarnation });
    view.put(CLUSTER_KEY, encode(&st));
    Ok(Ok(1))
}

fn register_node(view: &mut dyn StateView, c: &cmd::RegisterNode) -> Result<Result<NodeId, Refused>> {
    let mut st = load_cluster(view)?;
    if !st.is_initialized() {
        return Ok(Err(Refused("the cluster is not initialized".into())));
    }
    if let Some(existing) = st.nodes.values().find(|n| n.incarnation == c.incarnation) {
        return Ok(Ok(existing.id));
    }
    let id = st.next_node_id;
    st.next_node_id += 1;
    st.nodes.insert(id, NodeRecord { id, info: c.info.clone(), state: NodeState::Active, incarnation: c.incarnation });
    view.put(CLUSTER_KEY, encode(&st));
    Ok(Ok(id))
}

fn set_node_state(view: &mut dyn StateView, c: &cmd::SetNodeState) -> Result<Result<(), Refused>> {
    let (id, state) = (c.id, c.state);
    let mut st = load_cluster(view)?;
    let Some(node) = st.nodes.get_mut(&id) else {
        return Ok(Err(Refused(format!("node {id} is not registered"))));
    };
    let allowed = matches!(
        (node.state, state),
        (NodeState::Active, NodeState::Removing) | (NodeState::Removing, NodeState::Removed) | (NodeState::Active, NodeState::Removed)
    ) || node.state == state;
    if !allowed {
        return Ok(Err(Refused(format!("node {id} is {} and cannot become {}", node.state.as_str(), state.as_str()))));
    }
    node.state = state;
    view.put(CLUSTER_KEY, encode(&st));
    Ok(Ok(()))
}

fn update_node(view: &mut dyn StateView, c: &cmd::UpdateNode) -> Result<Result<(), Refused>> {
    let mut st = load_cluster(view)?;
    let Some(node) = st.nodes.get_mut(&c.id) else {
        return Ok(Err(Refused(format!("node {} is not registered", c.id))));
    };
    node.info = c.info.clone();
    view.put(CLUSTER_KEY, encode(&st));
    Ok(Ok(()))
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

    /// Applies `c` and reads its answer as its own type.
    fn run<C: Request + Clone + Into<Command>>(view: &mut MemView, c: C, index: u64) -> C::Answer {
        C::read(apply(&NoApp, view, &c.clone().into(), index).unwrap()).unwrap()
    }

    fn register(name: &str, incarnation: u64) -> cmd::RegisterNode {
        cmd::RegisterNode { info: info(name), incarnation }
    }

    fn set_state(id: NodeId, state: NodeState) -> cmd::SetNodeState {
        cmd::SetNodeState { id, state }
    }

    fn init(view: &mut MemView) {
        assert_eq!(run(view, cmd::InitCluster { cluster_id: "c1".into(), data_groups: 16, first: info("a"), incarnation: 10 }, 1), Ok(1));
    }

    #[test]
    fn register_assigns_fresh_ids_and_dedupes_retries() {
        let mut v = MemView::default();
        assert!(run(&mut v, register("b", 20), 1).is_err());
        init(&mut v);
        let b = run(&mut v, register("b", 20), 2);
        let b_again = run(&mut v, register("b", 20), 3);
        let c = run(&mut v, register("c", 30), 4);
        assert_eq!((b, b_again, c), (Ok(2), Ok(2), Ok(3)));
        // A wiped node comes back with a new incarnation: a new id, never a reused one.
        assert_eq!(run(&mut v, register("b", 21), 5), Ok(4));
        let st = load_cluster(&v).unwrap();
        assert_eq!(st.next_node_id, 5);
        assert_eq!(st.data_groups, 16);
    }

    #[test]
    fn init_is_idempotent_but_refuses_another_cluster() {
        let mut v = MemView::default();
        init(&mut v);
        init(&mut v);
        let other = run(&mut v, cmd::InitCluster { cluster_id: "c2".into(), data_groups: 4, first: info("z"), incarnation: 1 }, 3);
        assert_eq!(other, Err(Refused("cluster c1 is already initialized".into())));
        assert_eq!(load_cluster(&v).unwrap().cluster_id, "c1");
    }

    #[test]
    fn node_state_transitions() {
        let mut v = MemView::default();
        init(&mut v);
        run(&mut v, register("b", 2), 2).unwrap();
        assert_eq!(run(&mut v, set_state(2, NodeState::Removing), 3), Ok(()));
        assert!(run(&mut v, set_state(2, NodeState::Active), 4).is_err());
        assert_eq!(run(&mut v, set_state(2, NodeState::Removed), 5), Ok(()));
        assert!(run(&mut v, set_state(9, NodeState::Removed), 6).is_err());
    }

    #[test]
    fn kv_put_writes_under_prefix_and_reads_back() {
        let mut v = MemView::default();
        assert_eq!(run(&mut v, cmd::KvPut { key: "k".into(), value: b"v".to_vec() }, 7), 7);
        assert_eq!(v.get(&kv_key("k")).unwrap(), Some(b"v".to_vec()));
        let got = ask::KvGet::read(query(&NoApp, &v, &ask::KvGet { key: "k".into() }.into()).unwrap()).unwrap();
        assert_eq!(got, Some(b"v".to_vec()));
    }

    #[test]
    fn revoked_certs_are_listed_once() {
        let mut v = MemView::default();
        assert_eq!(run(&mut v, cmd::RevokeCert { sha256: [7; 32] }, 3), 3);
        assert_eq!(run(&mut v, cmd::RevokeCert { sha256: [7; 32] }, 4), 4);
        let certs = ask::RevokedCerts::read(query(&NoApp, &v, &ask::RevokedCerts.into()).unwrap()).unwrap();
        assert_eq!(certs, vec![[7; 32]]);
    }

    /// An answer that does not read as the asked request's type is a
    /// decode error.
    #[test]
    fn an_answer_read_as_another_type_is_an_error() {
        let mut v = MemView::default();
        init(&mut v);
        let cluster = query(&NoApp, &v, &ask::Cluster.into()).unwrap();
        assert!(matches!(ask::RevokedCerts::read(cluster.clone()), Err(crate::Error::Decode(_))));
        assert_eq!(ask::Cluster::read(cluster).unwrap().cluster_id, "c1");
    }
}
