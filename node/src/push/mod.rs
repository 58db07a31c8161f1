//! Pushes: what reaches client connections without being asked for, on
//! this node and on every other. A service hands [`Pushes::publish`] an
//! update and its audience ([`update::Push`]); this node's [`Registry`]
//! delivers it to its connections, and one queue per other node carries
//! it there (`Peer.Notify`, as many notices per call as piled up).
//! Presence (online, last seen) is read from every node's registry.
//!
//! Arrows: services and transports depend on this; this depends on the
//! cluster (its router and node list) and nothing above it.

pub mod registry;
pub mod update;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cluster::Node;
pub use registry::{Conn, Link, PUSH_QUEUE, Registry, Session, close};
pub use update::{Audience, Notice, NoticeError, Origin, Push, TokenHash, client_update};

/// Notices one node's queue holds; more are dropped (devices catch up by
/// difference).
const NOTICE_QUEUE: usize = 4096;
/// Notices sent at most in one call.
const NOTICE_BATCH: usize = 256;

pub struct Pushes {
    node: Node,
    registry: Registry,
    /// One queue of encoded notices per other node: see [`Pushes::publish`].
    pipes: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
}

impl Pushes {
    /// `lease`: how long a session check holds ([`Registry::lease_valid`]).
    pub fn new(node: Node, lease: Duration) -> Arc<Pushes> {
        Arc::new(Pushes { node, registry: Registry::new(lease), pipes: Mutex::default() })
    }

    /// This node's connections.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Hands `push` to this node's connections and queues it for every
    /// other node, without waiting: each node's queue is sent in order by
    /// one task, as many notices per call as have piled up meanwhile. A
    /// notice that cannot be delivered is dropped: devices fill gaps by
    /// difference.
    pub fn publish(&self, push: Push) {
        self.registry.deliver(&push);
        let payload = Notice::Push(push).encode();
        let peers = self.node.other_peers();
        let mut pipes = self.pipes.lock().expect("notice pipes");
        for addr in peers {
            let pipe = pipes.entry(addr.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
                tokio::spawn(send_notices(self.node.router().clone(), addr.clone(), rx));
                tx
            });
            if pipe.try_send(payload.clone()).is_err() {
                tracing::debug!(node = %addr, "notice queue full; dropped a notice");
            }
        }
    }

    /// Sends `notice` to every node of the cluster (this one included) and
    /// waits at most `timeout`. Returns whether every node confirmed it.
    pub async fn broadcast(&self, notice: Notice, timeout: Duration) -> bool {
        if self.node.raft().is_err() {
            return false;
        }
        self.registry.apply(&notice);
        let payload = notice.encode();
        let answers = self
            .node
            .ask_peers(timeout, move |mut client| {
                let payload = payload.clone();
                async move { client.notify(courier_proto::peer::NotifyRequest { payloads: vec![payload] }).await }
            })
            .await;
        answers.map(|a| a.iter().all(Option::is_some)).unwrap_or(false)
    }

    /// A notice from another node (`Peer.Notify`).
    pub fn receive(&self, payload: &[u8]) -> Result<(), NoticeError> {
        self.registry.apply(&Notice::decode(payload)?);
        Ok(())
    }

    /// Online users among `users` (a connection on any node that answers
    /// within a second) and the others' last-seen times, newest over the nodes.
    pub async fn presence(&self, users: &[u64]) -> (HashSet<u64>, HashMap<u64, u64>) {
        let (online, seen) = self.registry.presence(users);
        let mut online: HashSet<u64> = online.into_iter().collect();
        let mut last: HashMap<u64, u64> = seen.into_iter().collect();
        let asks = self
            .node
            .ask_peers(Duration::from_secs(1), |mut client| {
                let users = users.to_vec();
                async move { client.presence(courier_proto::peer::PresenceRequest { users }).await }
            })
            .await;
        for reply in asks.unwrap_or_default().into_iter().flatten() {
            online.extend(reply.online);
            for s in reply.last_seen {
                let at = last.entry(s.user).or_default();
                *at = (*at).max(s.at_ms);
            }
        }
        (online, last)
    }
}

/// One node's queue of notices, until the node is dropped.
async fn send_notices(router: courier_raft::network::Router, addr: String, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(first) = rx.recv().await {
        let (payloads, _) = courier_raft::batch::take_queued(first, &mut rx, NOTICE_BATCH, usize::MAX, |_| 0);
        let Ok(mut client) = router.peer(&addr) else { continue };
        let req = courier_proto::peer::NotifyRequest { payloads };
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(2), client.notify(req)).await.map_err(|_| tonic::Status::deadline_exceeded("2 s")) {
            tracing::debug!(node = %addr, "notices not delivered: {e}");
        }
    }
}
