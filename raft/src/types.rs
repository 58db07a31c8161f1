use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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
/// New variants are only ever appended (the encoding is positional). Each
/// variant is a struct of [`cmd`] paired with its answer ([`Request`]); the
/// bytes are those of the struct variants they replaced (`types::bytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Meta group: create the cluster; the first node gets id 1.
    InitCluster(cmd::InitCluster),
    /// Meta group: register a node under the next never-used id. A retry with
    /// the same `incarnation` returns the id given the first time.
    RegisterNode(cmd::RegisterNode),
    /// Meta group: change a node's lifecycle state.
    SetNodeState(cmd::SetNodeState),
    /// Meta group: update the addresses of a registered node.
    UpdateNode(cmd::UpdateNode),
    /// Data group: the replicated key-value probe (a test and debug tool).
    KvPut(cmd::KvPut),
    /// Data group: a command of the application (the services in `node/`),
    /// applied by its [`crate::logic::App`]. The bytes carry their own version.
    App(cmd::App),
    // Commands are in Raft logs: new ones at the end.
    /// Meta group: refuse a certificate (its SHA-256, of the DER) on every
    /// node's peer port from now on (a removed node's, a stolen one).
    RevokeCert(cmd::RevokeCert),
}

/// The raft layer's commands, one struct each.
pub mod cmd {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct InitCluster {
        pub cluster_id: String,
        pub data_groups: u32,
        pub first: NodeInfo,
        pub incarnation: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RegisterNode {
        pub info: NodeInfo,
        pub incarnation: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SetNodeState {
        pub id: NodeId,
        pub state: NodeState,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdateNode {
        pub id: NodeId,
        pub info: NodeInfo,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KvPut {
        pub key: String,
        pub value: Vec<u8>,
    }

    /// The application's encoded command; its answer is the application's
    /// encoded answer, passed through untouched.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct App(pub Vec<u8>);

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RevokeCert {
        pub sha256: [u8; 32],
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster(c) => write!(f, "InitCluster({})", c.cluster_id),
            Command::RegisterNode(c) => write!(f, "RegisterNode({})", c.info),
            Command::SetNodeState(c) => write!(f, "SetNodeState({}, {:?})", c.id, c.state),
            Command::UpdateNode(c) => write!(f, "UpdateNode({}, {})", c.id, c.info),
            Command::KvPut(c) => write!(f, "KvPut({}, {} bytes)", c.key, c.value.len()),
            Command::App(c) => write!(f, "App({} bytes)", c.0.len()),
            Command::RevokeCert(c) => {
                let s = &c.sha256;
                write!(f, "RevokeCert({:02x}{:02x}{:02x}{:02x}…)", s[0], s[1], s[2], s[3])
            }
        }
    }
}

/// A linearizable read of one group's state. Each variant is a struct of
/// [`ask`] paired with its answer ([`Request`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    KvGet(ask::KvGet),
    Cluster(ask::Cluster),
    /// A read of the application's state, answered by its [`crate::logic::App`].
    App(ask::App),
    // Queries cross the wire: new ones at the end.
    /// Meta group: the revoked certificates ([`cmd::RevokeCert`]).
    RevokedCerts(ask::RevokedCerts),
}

/// The raft layer's queries, one struct each.
pub mod ask {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KvGet {
        pub key: String,
    }

    /// The node registry and cluster settings (meta group).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Cluster;

    /// The application's encoded query; its answer is the application's
    /// encoded answer, passed through untouched.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct App(pub Vec<u8>);

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RevokedCerts;
}

/// The encoded answer to a command or query: what the state machine returns
/// to openraft and what a forwarded request's leader sends back. The caller
/// reads it as the answer type of what it asked ([`Request::read`]), so no
/// caller matches on a kind of reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(pub Vec<u8>);

/// Why the state machine refused a command of the raft layer (nothing was
/// changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A command or query paired with the type of its answer: each arm of
/// [`crate::logic::apply`] and of a query's read encodes its request's
/// answer ([`Request::reply`]), and the caller decodes that same type.
pub trait Request {
    type Answer;
    /// The answer's bytes.
    fn reply(&self, answer: Self::Answer) -> Reply;
    /// The answer out of its bytes.
    fn read(reply: Reply) -> Result<Self::Answer>;
}

macro_rules! requests {
    ($enum:ident, $m:ident { $($v:ident => $answer:ty),* $(,)? }) => {$(
        impl From<$m::$v> for $enum {
            fn from(c: $m::$v) -> $enum {
                $enum::$v(c)
            }
        }
        impl Request for $m::$v {
            type Answer = $answer;
            fn reply(&self, answer: $answer) -> Reply {
                Reply(crate::codec::encode(&answer))
            }
            fn read(reply: Reply) -> Result<$answer> {
                crate::codec::decode(&reply.0)
            }
        }
    )*};
}

requests!(Command, cmd {
    InitCluster => std::result::Result<NodeId, Refused>,
    RegisterNode => std::result::Result<NodeId, Refused>,
    SetNodeState => std::result::Result<(), Refused>,
    UpdateNode => std::result::Result<(), Refused>,
    // The log index it was applied at.
    KvPut => u64,
    RevokeCert => u64,
});

requests!(Query, ask {
    KvGet => Option<Vec<u8>>,
    Cluster => crate::logic::ClusterState,
    RevokedCerts => Vec<[u8; 32]>,
});

/// The application's bytes both ways: it types its own answers.
macro_rules! app_request {
    ($enum:ident, $m:ident) => {
        impl From<$m::App> for $enum {
            fn from(c: $m::App) -> $enum {
                $enum::App(c)
            }
        }
        impl Request for $m::App {
            type Answer = Vec<u8>;
            fn reply(&self, answer: Vec<u8>) -> Reply {
                Reply(answer)
            }
            fn read(reply: Reply) -> Result<Vec<u8>> {
                Ok(reply.0)
            }
        }
    };
}
app_request!(Command, cmd);
app_request!(Query, ask);

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
        R = Reply,
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
            encode(&Command::from(cmd::InitCluster { cluster_id: "c1".into(), data_groups: 16, first: info(), incarnation: 7 })),
            encode(&Command::from(cmd::RegisterNode { info: info(), incarnation: 8 })),
            encode(&Command::from(cmd::SetNodeState { id: 2, state: NodeState::Removing })),
            encode(&Command::from(cmd::UpdateNode { id: 3, info: info() })),
            encode(&Command::from(cmd::KvPut { key: "k".into(), value: vec![1, 2, 3] })),
            encode(&Command::from(cmd::App(vec![1, 1, 5, 9]))),
            encode(&Command::from(cmd::RevokeCert { sha256: [4; 32] })),
            encode(&Query::from(ask::KvGet { key: "k".into() })),
            encode(&Query::from(ask::Cluster)),
            encode(&Query::from(ask::App(vec![1, 0, 2]))),
            encode(&Query::from(ask::RevokedCerts)),
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
