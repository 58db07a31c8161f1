//! The media service: uploads in parts, files as content-addressed 1 MiB
//! chunks on R = 3 nodes chosen by rendezvous hashing (`ring.rs`), file
//! metadata in Raft (`logic.rs`), downloads by byte range from any node.
//!
//! Write path of a chunk: the node that holds all of a chunk's parts (they
//! are staged in its memory as they arrive) hashes the chunk, sends it to
//! its three homes in parallel and answers once two have fsynced it (the
//! third completes in the background; if homes are down, the next nodes in
//! the chunk's ranking stand in), then records the chunk in the upload's
//! Raft group. A part whose chunk is not complete yet is only in memory: a
//! node crash loses it, and `finish` reports it in `FILE_PART_MISSING`, so
//! the client sends it again (through any node).
//!
//! By concern: `staging.rs` (parts waiting in memory, chunks made of them,
//! `finish`), `chunks.rs` (quorum writes, verified reads, read repair, the
//! chunk cache), `files.rs` (file records and byte-range reads),
//! `upkeep.rs` (the repair loop, the scrub) and `collect.rs` (the
//! collector, expired uploads). Each keeps its decisions in pure functions
//! tested beside them; the `impl Media` blocks do the I/O.

pub mod logic;
pub mod ring;
pub mod thumbs;

mod chunks;
mod collect;
mod files;
mod staging;
mod upkeep;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::app::{self, AppCommand, AppQuery, Request};
use crate::clock::Clock;
use crate::cluster::Node;
use crate::error::Result;
pub use chunks::store_local;
pub use files::MAX_READ;
pub use logic::{File, Hash, MediaError};
use ring::Ring;
pub use upkeep::REPAIR_EVERY;

pub struct Media {
    node: Node,
    clock: Clock,
    staging: Mutex<HashMap<u64, staging::Staged>>,
    cache: Mutex<chunks::Cache>,
    /// File records read lately (a record's content never changes).
    files: Mutex<HashMap<u64, File>>,
    /// Copies the repair worker made since the node started, and its passes.
    repaired: std::sync::atomic::AtomicU64,
    passes: std::sync::atomic::AtomicU64,
    /// Damaged copies on this node replaced (by the scrub or a read).
    corrupt_repaired: std::sync::atomic::AtomicU64,
    scrubbed: std::sync::atomic::AtomicU64,
    /// The scrub's position: the last chunk it checked.
    scrub_cursor: Mutex<Option<Hash>>,
    /// The collector's work since the node started.
    collected: std::sync::atomic::AtomicU64,
    moved_off: std::sync::atomic::AtomicU64,
    uploads_expired: std::sync::atomic::AtomicU64,
    /// Image decodes for previews, one at a time.
    decoding: tokio::sync::Semaphore,
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

impl Media {
    pub fn new(node: Node, clock: Clock) -> Media {
        Media {
            node,
            clock,
            staging: Mutex::default(),
            cache: Mutex::default(),
            files: Mutex::default(),
            repaired: Default::default(),
            passes: Default::default(),
            corrupt_repaired: Default::default(),
            scrubbed: Default::default(),
            scrub_cursor: Mutex::default(),
            collected: Default::default(),
            moved_off: Default::default(),
            uploads_expired: Default::default(),
            decoding: tokio::sync::Semaphore::new(1),
        }
    }

    async fn exec<C: Request + Into<AppCommand>>(&self, group: u32, cmd: C) -> Result<C::Answer> {
        app::write(&self.node, group, cmd).await
    }

    async fn read<Q: Request + Into<AppQuery>>(&self, group: u32, q: Q) -> Result<Q::Answer> {
        app::read(&self.node, group, q).await
    }

    /// The nodes chunks may live on, and their peer addresses: the active
    /// nodes but those down past the grace period (their chunks get new homes).
    async fn nodes(&self) -> Result<BTreeMap<u64, String>> {
        Ok(self.ring().await?.nodes)
    }

    /// The ring as this node sees it now.
    async fn ring(&self) -> Result<Ring> {
        Ok(self.ring_of(self.node.registry().await?))
    }

    fn ring_of(&self, cluster: courier_raft::logic::ClusterState) -> Ring {
        let active = cluster.active_nodes().map(|n| (n.id, n.info.peer_addr.clone())).collect();
        let removing = cluster.nodes.values().filter(|n| n.state == courier_raft::types::NodeState::Removing).map(|n| n.id).collect();
        Ring::of(active, &self.node.dead_nodes(), removing)
    }
}

/// The data groups this node leads: it looks after their files' chunks.
fn led_groups(raft: &courier_raft::MultiRaft) -> Vec<u32> {
    let me = raft.id();
    raft.views().iter().filter(|v| v.group != courier_raft::META_GROUP && v.leader == Some(me)).map(|v| v.group).collect()
}

/// When a chunk is written, and the collector's now: the machine's clock,
/// never the shifted domain clock (a clock-skew test must not age chunks).
fn chunk_clock() -> u64 {
    Clock::default().now_ms()
}

