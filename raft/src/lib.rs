//! Multi-Raft for Courier.
//!
//! Every node runs one [`openraft::Raft`] per group: group 0 is the meta group
//! (node registry, cluster settings), groups `1..=G` are data groups. All of a
//! node's groups share its one RocksDB (through `courier-storage`) and one gRPC
//! connection per peer (through [`network::Router`]). Both halves of the
//! transport are here: [`network`] sends, [`server`] answers. Any node accepts a write
//! for any group and forwards it to that group's leader ([`MultiRaft::write`]).

pub mod batch;
pub mod codec;
pub mod error;
pub mod forward;
pub mod log_store;
pub mod logic;
pub mod multi;
pub mod network;
pub mod placement;
pub mod server;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use error::{Error, Result};
pub use multi::{GroupView, MultiRaft, RaftOptions, RaftRpc};
pub use types::*;
