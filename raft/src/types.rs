use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use courier_storage::GroupId;

pub type NodeId = u64;

/// The meta group: node registry and cluster settings.
pub const META_GROUP: GroupId = 0;

/// How peers reach a node; carried in Raft memberships.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub peer_addr: String,
    pub client_addr: String,
    pub admin_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

/// Lifecycle of a registered node. Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Active,
    /// Decommissioning: replicas move away, then it becomes `Removed`.
    Removing,
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Removing => "removing",
            NodeState::Removed => "removed",
        }
    }
}

/// A replicated proposal. Every variant is idempotent or carries its own
/// deduplication key, so a retry after an unknown outcome is safe.
/// New variants are only ever appended (the encoding is positional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Meta group: create the cluster; the first node gets id 1.
    InitCluster { cluster_id: String, data_groups: u32, first: NodeInfo, incarnation: u64 },
    /// Meta group: register a node under the next never-used id. A retry with
    /// the same `incarnation` returns the id given the first time.
    RegisterNode { info: NodeInfo, incarnation: u64 },
    /// Meta group: change a node's lifecycle state.
    SetNodeState { id: NodeId, state: NodeState },
    /// Meta group: update the addresses of a registered node.
    UpdateNode { id: NodeId, info: NodeInfo },
    /// Data group: the replicated key-value probe (a test and debug tool).
    KvPut { key: String, value: Vec<u8> },
    /// Data group: a command of the application (the services in `node/`),
    /// applied by its [`crate::logic::App`]. The bytes carry their own version.
    App(Vec<u8>),
    // Commands are in Raft logs: new ones at the end.
    /// Meta group: refuse a certificate (its SHA-256, of the DER) on every
    /// node's peer port from now on (a removed node's, a stolen one).
    RevokeCert { sha256: [u8; 32] },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster { cluster_id, .. } => write!(f, "InitCluster({cluster_id})"),
            Command::RegisterNode { info, .. } => write!(f, "RegisterNode({info})"),
            Command::SetNodeState { id, state } => write!(f, "SetNodeState({id}, {state:?})"),
            Command::UpdateNode { id, info } => write!(f, "UpdateNode({id}, {info})"),
            Command::KvPut { key, value } => write!(f, "KvPut({key}, {} bytes)", value.len()),
            Command::App(bytes) => write!(f, "App({} bytes)", bytes.len()),
            Command::RevokeCert { sha256 } => write!(f, "RevokeCert({:02x}{:02x}{:02x}{:02x}…)", sha256[0], sha256[1], sha256[2], sha256[3]),
        }
    }
}

/// The result of applying a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Empty,
    NodeId(NodeId),
    Written { index: u64 },
    /// The command was refused by the state machine (nothing was changed).
    Refused(String),
    /// The application's answer to a [`Command::App`].
    App(Vec<u8>),
}

/// A linearizable read of one group's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    KvGet { key: String },
    Cluster,
    /// A read of the application's state, answered by its [`crate::logic::App`].
    App(Vec<u8>),
    // Queries cross the wire: new ones at the end.
    /// Meta group: the revoked certificates ([`Command::RevokeCert`]).
    RevokedCerts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    Value(Option<Vec<u8>>),
    Cluster(crate::logic::ClusterState),
    App(Vec<u8>),
    Certs(Vec<[u8; 32]>),
}

/// What a data group's replica set should become.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

openraft::declare_raft_types!(
    /// Courier's Raft types: our command, response and node address types,
    /// everything else openraft's defaults.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::snapshot::SnapshotData>;

/// Commands are in Raft logs and queries cross the wire: one sample of
/// every variant, and the exact bytes it has always encoded to.
#[cfg(test)]
mod bytes {
    use super::*;
    use crate::codec::encode;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn same(samples: Vec<Vec<u8>>, expected: &[&str]) {
        let got: Vec<String> = samples.iter().map(|b| hex(b)).collect();
        if got.len() != expected.len() || got.iter().zip(expected).any(|(g, e)| g != e) {
            got.iter().for_each(|g| println!("\"{g}\","));
        }
        assert_eq!(got.len(), expected.len(), "one literal per sample");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g, e, "sample {i}");
        }
    }

    fn info() -> NodeInfo {
        NodeInfo { name: "n1".into(), peer_addr: "10.0.0.1:7001".into(), client_addr: "10.0.0.1:7000".into(), admin_addr: "127.0.0.1:7002".into() }
    }

    #[test]
    fn raft_commands_and_queries_keep_their_bytes() {
        let samples = vec![
            encode(&Command::InitCluster { cluster_id: "c1".into(), data_groups: 16, first: info(), incarnation: 7 }),
            encode(&Command::RegisterNode { info: info(), incarnation: 8 }),
            encode(&Command::SetNodeState { id: 2, state: NodeState::Removing }),
            encode(&Command::UpdateNode { id: 3, info: info() }),
            encode(&Command::KvPut { key: "k".into(), value: vec![1, 2, 3] }),
            encode(&Command::App(vec![1, 1, 5, 9])),
            encode(&Command::RevokeCert { sha256: [4; 32] }),
            encode(&Query::KvGet { key: "k".into() }),
            encode(&Query::Cluster),
            encode(&Query::App(vec![1, 0, 2])),
            encode(&Query::RevokedCerts),
        ];
        same(
            samples,
            &[
                "010002633110026e310d31302e302e302e313a373030310d31302e302e302e313a373030300e3132372e302e302e313a3730303207",
                "0101026e310d31302e302e302e313a373030310d31302e302e302e313a373030300e3132372e302e302e313a3730303208",
                "01020201",
                "010303026e310d31302e302e302e313a373030310d31302e302e302e313a373030300e3132372e302e302e313a37303032",
                "0104016b03010203",
                "01050401010509",
                "01060404040404040404040404040404040404040404040404040404040404040404",
                "0100016b",
                "0101",
                "010203010002",
                "0103",
            ],
        );
    }
}
