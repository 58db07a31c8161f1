//! A node's set of Raft groups, and routing of proposals and reads to each
//! group's leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_storage::Store;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use openraft_multi::GroupNetworkFactory;
use serde::{Deserialize, Serialize};

pub use crate::batch::RaftRpc;
use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::logic::{self, ClusterState};
use crate::network::{GroupNetwork, Router};
use crate::state_machine::{StateMachine, StoreView};
use crate::types::*;

/// Raft timing and log retention; the defaults suit a LAN or one machine.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_logs: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub keep_logs: u64,
    /// How long a proposal or read waits for a leader before `Unavailable`.
    pub request_timeout: Duration,
    /// Heavy reads ([`logic::App::heavy`]) this node runs at once, off the
    /// async workers; more wait their turn.
    pub heavy_reads: usize,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            // A follower stands after its leader's lease (the maximum) plus
            // a timeout: 0.6-0.8 s without a heartbeat, so every group is
            // led again within about 0.8 s of its leader's death
            // (docs/architecture.md, "Timing defaults").
            heartbeat_ms: 100,
            election_min_ms: 200,
            election_max_ms: 400,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            request_timeout: Duration::from_secs(10),
            heavy_reads: 2,
        }
    }
}

/// A request executed by a group's leader (locally or forwarded to it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardOp {
    Write(Command),
    Read(Query),
    AddLearner { id: NodeId, node: NodeInfo },
    ChangeVoters(BTreeSet<NodeId>),
    TransferLeader(NodeId),
    /// Drops learners (never voters) from the group.
    RemoveLearners(BTreeSet<NodeId>),
    /// A read of the receiving node's own replica, without asking the
    /// leader: for rows that never change once written.
    ReadStale(Query),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardErr {
    NotLeader { leader: Option<NodeId>, node: Option<NodeInfo> },
    Unavailable(String),
    Invalid(String),
    Fatal(String),
}

/// What a forwarded request's executor answers: its reply's bytes (empty
/// for membership changes), or why not.
type ForwardReply = std::result::Result<Reply, ForwardErr>;

/// The format byte of an encoded [`ForwardReply`]: 2 since the raft
/// layer's typed answers (after 0.2.0). Replies of nodes up to 0.2.0
/// (format 1, an enum of reply kinds) are refused, not misread.
const FORWARD_REPLY_FORMAT: u8 = 2;

fn encode_reply(r: &ForwardReply) -> Vec<u8> {
    crate::codec::encode_as(FORWARD_REPLY_FORMAT, r)
}

fn decode_reply(bytes: &[u8]) -> Result<ForwardReply> {
    crate::codec::decode_as(FORWARD_REPLY_FORMAT, bytes)
}

/// One replica's view of its group, from local Raft metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub group: GroupId,
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub applied: u64,
    pub last_log: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub snapshot: u64,
    pub purged: u64,
}

impl GroupView {
    /// Whether this node is a member (voter or learner) of the group.
    pub fn hosts(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }
}

#[derive(Clone)]
pub struct MultiRaft {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    store: Store,
    router: Router,
    groups: BTreeMap<GroupId, Raft>,
    data_groups: u32,
    opts: RaftOptions,
    app: Arc<dyn logic::App>,
    /// Where each group's leader was last seen (peer address); lets a node
    /// that is not a member of a group reach its leader.
    hints: std::sync::Mutex<BTreeMap<GroupId, String>>,
    /// Peer addresses of the cluster's nodes, for when there is no hint.
    peers: std::sync::Mutex<Vec<String>>,
    /// Turns for heavy reads (`opts.heavy_reads`).
    heavy: tokio::sync::Semaphore,
}

/// FNV-1a: a stable hash, the same on every platform and release.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The data group (1..=G) that owns `key`.
pub fn group_for_key(key: &[u8], data_groups: u32) -> GroupId {
    1 + (fnv1a(key) % u64::from(data_groups.max(1))) as GroupId
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl MultiRaft {
    /// Starts the meta group and `data_groups` data groups on this node. A
    /// group this node is not a member of stays idle until a leader adds it.
    pub async fn start(
        id: NodeId,
        store: Store,
        router: Router,
        data_groups: u32,
        opts: RaftOptions,
        app: Arc<dyn logic::App>,
    ) -> Result<Self> {
        let config = openraft::Config {
            cluster_name: "courier".into(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_min_ms,
            election_timeout_max: opts.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_logs),
            max_in_snapshot_log_to_keep: opts.keep_logs,
            install_snapshot_timeout: 60_000,
            max_payload_entries: 1024,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Invalid(format!("raft config: {e}")))?;
        let config = Arc::new(config);
        let mut groups = BTreeMap::new();
        for g in 0..=data_groups {
            let network = GroupNetwork(GroupNetworkFactory::new(router.clone(), g));
            let raft = Raft::new(id, config.clone(), network, LogStore::new(g, store.clone()), StateMachine::new(g, store.clone(), app.clone()))
                .await
                .map_err(|e| Error::Fatal(format!("start group {g}: {e}")))?;
            groups.insert(g, raft);
        }
        Ok(MultiRaft {
            inner: Arc::new(Inner {
                id,
                store,
                router,
                groups,
                data_groups,
                heavy: tokio::sync::Semaphore::new(opts.heavy_reads.max(1)),
                opts,
                app,
                hints: Default::default(),
                peers: Default::default(),
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn data_groups(&self) -> u32 {
        self.inner.data_groups
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn raft(&self, group: GroupId) -> Result<&Raft> {
        self.inner.groups.get(&group).ok_or(Error::UnknownGroup(group))
    }

    /// Whether `group` is one of the data groups (1..=G): a group number
    /// taken from a client's id is checked with this before anything is
    /// read or written (0 is the meta group).
    pub fn is_data_group(&self, group: GroupId) -> bool {
        (1..=self.inner.data_groups).contains(&group)
    }

    pub fn group_for_key(&self, key: &[u8]) -> GroupId {
        group_for_key(key, self.inner.data_groups)
    }

    /// Makes this node the single voter of every group (cluster init).
    /// Groups that are already initialized are left alone.
    pub async fn initialize_all(&self, me: NodeInfo) -> Result<()> {
        for (g, raft) in &self.inner.groups {
            let members = BTreeMap::from([(self.inner.id, me.clone())]);
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => tracing::debug!(group = g, "already initialized: {e}"),
                Err(RaftError::Fatal(e)) => return Err(Error::Fatal(e.to_string())),
            }
        }
        Ok(())
    }

    /// Local metrics of every group.
    pub fn views(&self) -> Vec<GroupView> {
        self.inner
            .groups
            .iter()
            .map(|(g, raft)| {
                let m = raft.metrics().borrow_watched().clone();
                let membership = m.membership_config.membership();
                GroupView {
                    group: *g,
                    role: role(m.state).to_string(),
                    term: m.current_term,
                    leader: m.current_leader,
                    applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                    last_log: m.last_log_index.unwrap_or(0),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    snapshot: m.snapshot.map(|l| l.index).unwrap_or(0),
                    purged: m.purged.map(|l| l.index).unwrap_or(0),
                }
            })
            .collect()
    }

    /// Each data group's leader and its client address, as this node last
    /// heard: from its replica, else (a group it does not host) from the
    /// leader it last forwarded to; `None`: not known here. Clients send a
    /// chat's writes there.
    pub fn leader_client_addrs(&self) -> Vec<(GroupId, Option<(NodeId, String)>)> {
        let mut registry: Option<Vec<(NodeId, NodeInfo)>> = None;
        (1..=self.inner.data_groups)
            .map(|g| {
                let local = self.inner.groups.get(&g).and_then(|raft| {
                    let metrics = raft.metrics();
                    let m = metrics.borrow_watched();
                    let id = m.current_leader?;
                    Some((id, m.membership_config.membership().get_node(&id)?.client_addr.clone()))
                });
                let leader = local.or_else(|| {
                    let hint = self.inner.hints.lock().expect("hints lock").get(&g).cloned()?;
                    let nodes = registry.get_or_insert_with(|| {
                        self.local_cluster().map(|c| c.nodes.values().map(|n| (n.id, n.info.clone())).collect()).unwrap_or_default()
                    });
                    nodes.iter().find(|(_, info)| info.peer_addr == hint).map(|(id, info)| (*id, info.client_addr.clone()))
                });
                (g, leader.filter(|(_, addr)| !addr.is_empty()))
            })
            .collect()
    }

    /// The meta group's state as this replica has applied it (may lag the leader).
    pub fn local_cluster(&self) -> Result<ClusterState> {
        logic::load_cluster(&StoreView { group: META_GROUP, store: &self.inner.store })
    }

    /// Proposes a command to `group` through its leader: its answer once
    /// applied.
    pub async fn write<C: Request + Into<Command>>(&self, group: GroupId, cmd: C) -> Result<C::Answer> {
        C::read(self.route(group, ForwardOp::Write(cmd.into())).await?)
    }

    /// A linearizable read of `group`'s state, served by its leader.
    pub async fn read<Q: Request + Into<Query>>(&self, group: GroupId, query: Q) -> Result<Q::Answer> {
        Q::read(self.route(group, ForwardOp::Read(query.into())).await?)
    }

    /// Adds `id` as a learner of `group` and waits until it has caught up.
    pub async fn add_learner(&self, group: GroupId, id: NodeId, node: NodeInfo) -> Result<()> {
        self.route(group, ForwardOp::AddLearner { id, node }).await.map(|_| ())
    }

    /// Makes `voters` the voter set of `group` (joint consensus); replicas not
    /// in it are removed.
    pub async fn change_voters(&self, group: GroupId, voters: BTreeSet<NodeId>) -> Result<()> {
        self.route(group, ForwardOp::ChangeVoters(voters)).await.map(|_| ())
    }

    /// Removes learners left behind by an interrupted move.
    pub async fn remove_learners(&self, group: GroupId, learners: BTreeSet<NodeId>) -> Result<()> {
        self.route(group, ForwardOp::RemoveLearners(learners)).await.map(|_| ())
    }

    /// Reads this node's own replica of `group` (possibly behind the
    /// leader); `None` when it holds none. Only for rows that never change
    /// once written: they are either absent or right.
    pub fn read_stale<Q: Request + Into<Query>>(&self, group: GroupId, query: Q) -> Result<Option<Q::Answer>> {
        self.read_stale_reply(group, &query.into())?.map(Q::read).transpose()
    }

    fn read_stale_reply(&self, group: GroupId, query: &Query) -> Result<Option<Reply>> {
        let me = self.inner.id;
        if !self.views().iter().any(|v| v.group == group && v.hosts(me)) {
            return Ok(None);
        }
        self.read_local(group, query).map(Some)
    }

    /// [`MultiRaft::read_stale`] on the node at `addr`.
    pub async fn read_stale_at<Q: Request + Into<Query>>(&self, addr: &str, group: GroupId, query: Q) -> Result<Option<Q::Answer>> {
        match self.forward(addr, group, &ForwardOp::ReadStale(query.into())).await? {
            Ok(reply) => Q::read(reply).map(Some),
            Err(_) => Ok(None),
        }
    }

    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<()> {
        self.route(group, ForwardOp::TransferLeader(to)).await.map(|_| ())
    }

    /// Records where `group`'s leader is (its peer address).
    pub fn set_leader_hint(&self, group: GroupId, peer_addr: &str) {
        self.inner.hints.lock().expect("hints lock").insert(group, peer_addr.to_string());
    }

    /// The peer addresses of the cluster's nodes (for reaching groups this
    /// node does not host when no leader hint is known).
    pub fn set_peers(&self, mut addrs: Vec<String>) {
        addrs.sort();
        addrs.dedup();
        *self.inner.peers.lock().expect("peers lock") = addrs;
    }

    /// Where to send a request for `group` that this node cannot place itself:
    /// the last known leader, else the peers in turn (any member answers with
    /// the leader's address).
    fn pick_target(&self, group: GroupId, attempt: usize) -> Option<String> {
        if let Some(h) = self.inner.hints.lock().expect("hints lock").get(&group) {
            return Some(h.clone());
        }
        let peers = self.inner.peers.lock().expect("peers lock");
        (!peers.is_empty()).then(|| peers[attempt % peers.len()].clone())
    }

    /// Runs `op` on the group's leader: here if this node leads, else forwarded
    /// to the leader this node knows of, the last leader seen, or any peer
    /// (which redirects). Retries while the group has no leader, until the
    /// request timeout.
    async fn route(&self, group: GroupId, op: ForwardOp) -> Result<Reply> {
        let started = Instant::now();
        let deadline = started + self.inner.opts.request_timeout;
        // No leader to be found (or none with a majority) for this long:
        // the group has no quorum now; the caller hears so at once
        // (`UNAVAILABLE`, retryable) rather than after the request timeout.
        let leaderless = started + self.leaderless_after();
        let mut last;
        let mut attempt = 0usize;
        loop {
            let target = match self.exec_local(group, op.clone()).await {
                Err(ForwardErr::NotLeader { node: Some(node), leader: Some(leader) }) if leader != self.inner.id => Ok(node.peer_addr),
                Err(ForwardErr::NotLeader { .. }) => self.pick_target(group, attempt).ok_or(ForwardErr::NotLeader { leader: None, node: None }),
                Ok(ok) => return Ok(ok),
                Err(e) => Err(e),
            };
            let err = match target {
                Ok(addr) => match self.forward(&addr, group, &op).await {
                    Ok(Ok(ok)) => {
                        self.set_leader_hint(group, &addr);
                        return Ok(ok);
                    }
                    Ok(Err(ForwardErr::NotLeader { node: Some(node), .. })) => {
                        // Redirected: go straight there next.
                        self.set_leader_hint(group, &node.peer_addr);
                        attempt += 1;
                        if Instant::now() < deadline {
                            if attempt > 3 {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                        ForwardErr::NotLeader { leader: None, node: Some(node) }
                    }
                    Ok(Err(e)) => {
                        self.inner.hints.lock().expect("hints lock").remove(&group);
                        e
                    }
                    Err(e) => {
                        self.inner.hints.lock().expect("hints lock").remove(&group);
                        ForwardErr::Unavailable(e.to_string())
                    }
                },
                Err(e) => e,
            };
            match err {
                ForwardErr::Invalid(m) => return Err(Error::Invalid(m)),
                ForwardErr::Fatal(m) => return Err(Error::Fatal(m)),
                ForwardErr::NotLeader { leader, .. } => last = format!("leader moving (last seen: {leader:?})"),
                ForwardErr::Unavailable(m) => last = m,
            }
            attempt += 1;
            if Instant::now() >= deadline.min(leaderless) {
                tracing::warn!(group, "request gave up: {last}");
                return Err(Error::Unavailable { group });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long a request looks for a leader with a majority before it
    /// answers `Unavailable`: three election timeouts, at least 2 s. An
    /// ordinary failover takes about two (the survivors' votes split
    /// against the old leader's lease, `docs/architecture.md`), so it never
    /// turns into an error; a group with no majority is told in ~2 s.
    fn leaderless_after(&self) -> Duration {
        Duration::from_millis((3 * self.inner.opts.election_max_ms).max(2000)).min(self.inner.opts.request_timeout)
    }

    /// `Unavailable` when this node leads `group` but has not heard from a
    /// majority for two election timeouts: its writes and reads would wait
    /// for a quorum that is not there (the other voters dead or cut off);
    /// by then its followers would have elected another leader if they could.
    fn leader_has_quorum(&self, raft: &Raft) -> std::result::Result<(), ForwardErr> {
        // Read in place: this runs before every write and read this node leads.
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        // A lone voter is its own majority.
        if m.current_leader != Some(self.inner.id) || m.membership_config.membership().voter_ids().count() <= 1 {
            return Ok(());
        }
        let lost = Duration::from_millis((2 * self.inner.opts.election_max_ms).max(1000));
        match m.last_quorum_acked.as_ref().map(|t| openraft::Instant::elapsed(&**t)) {
            Some(t) if t > lost => Err(ForwardErr::Unavailable(format!("no majority has answered for {t:?}"))),
            _ => Ok(()),
        }
    }

    async fn forward(&self, addr: &str, group: GroupId, op: &ForwardOp) -> Result<ForwardReply> {
        let req = courier_proto::peer::RaftRequest { group, payload: encode(op), target: 0 };
        let reply = tokio::time::timeout(self.inner.opts.request_timeout, self.inner.router.forward(addr, req))
            .await
            .map_err(|_| Error::Rpc(format!("forward to {addr} timed out")))?
            .map_err(|s| Error::Rpc(format!("forward to {addr}: {}", s.message())))?;
        decode_reply(&reply)
    }

    /// Executes `op` if this node leads `group`; never forwards.
    async fn exec_local(&self, group: GroupId, op: ForwardOp) -> ForwardReply {
        let raft = self.raft(group).map_err(|e| ForwardErr::Invalid(e.to_string()))?;
        match op {
            ForwardOp::ReadStale(q) => match self.read_stale_reply(group, &q) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(ForwardErr::Invalid(format!("node {} holds no replica of group {group}", self.inner.id))),
                Err(e) => Err(ForwardErr::Fatal(e.to_string())),
            },
            ForwardOp::Write(cmd) => {
                self.leader_has_quorum(raft)?;
                if let Command::App(c) = &cmd
                    && raft.is_leader()
                    && let Some(refusal) = self.inner.app.admit(group, &c.0)
                {
                    return Ok(c.reply(refusal));
                }
                match raft.client_write(cmd).await {
                    Ok(resp) => Ok(resp.data),
                    Err(e) => Err(write_err(e)),
                }
            }
            ForwardOp::Read(q) => {
                self.leader_has_quorum(raft)?;
                match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(_) => {}
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                        return Err(ForwardErr::NotLeader { leader: f.leader_id, node: f.leader_node });
                    }
                    Err(RaftError::APIError(e)) => return Err(ForwardErr::Unavailable(e.to_string())),
                    Err(RaftError::Fatal(e)) => return Err(ForwardErr::Fatal(e.to_string())),
                }
                if let Query::App(a) = &q
                    && self.inner.app.heavy(&a.0)
                {
                    // A few at a time, on the blocking pool: the async workers
                    // (heartbeats, appends) never wait behind a scan.
                    let _turn = self.inner.heavy.acquire().await.map_err(|_| ForwardErr::Unavailable("shutting down".into()))?;
                    let me = self.clone();
                    let read = tokio::task::spawn_blocking(move || me.read_local(group, &q)).await;
                    return read.map_err(|e| ForwardErr::Fatal(e.to_string()))?.map_err(|e| ForwardErr::Fatal(e.to_string()));
                }
                self.read_local(group, &q).map_err(|e| ForwardErr::Fatal(e.to_string()))
            }
            ForwardOp::AddLearner { id, node } => match raft.add_learner(id, node, true).await {
                Ok(_) => Ok(Reply::default()),
                Err(e) => Err(write_err(e)),
            },
            ForwardOp::ChangeVoters(voters) => match raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false).await {
                Ok(_) => Ok(Reply::default()),
                Err(e) => Err(write_err(e)),
            },
            ForwardOp::RemoveLearners(ids) => {
                let m = raft.metrics().borrow_watched().clone();
                if ids.iter().any(|id| m.membership_config.membership().voter_ids().any(|v| v == *id)) {
                    return Err(ForwardErr::Invalid("refusing to remove a voter as a learner".into()));
                }
                match raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await {
                    Ok(_) => Ok(Reply::default()),
                    Err(e) => Err(write_err(e)),
                }
            }
            ForwardOp::TransferLeader(to) => {
                if !raft.is_leader() {
                    let m = raft.metrics().borrow_watched().clone();
                    let node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                    return Err(ForwardErr::NotLeader { leader: m.current_leader, node });
                }
                raft.trigger().transfer_leader(to).await.map_err(|e| ForwardErr::Fatal(e.to_string()))?;
                Ok(Reply::default())
            }
        }
    }

    fn read_local(&self, group: GroupId, q: &Query) -> Result<Reply> {
        logic::query(self.inner.app.as_ref(), &StoreView { group, store: &self.inner.store }, q)
    }

    // ---- incoming peer RPCs ----

    /// Refuses a Raft RPC meant for another node id: a wiped node that rejoined
    /// under a new id may listen on its old address.
    pub fn check_target(&self, target: NodeId) -> Result<()> {
        if target != 0 && target != self.inner.id {
            return Err(Error::Invalid(format!("request for node {target} reached node {}", self.inner.id)));
        }
        Ok(())
    }

    pub(crate) async fn handle_forward(&self, group: GroupId, payload: &[u8]) -> Result<Vec<u8>> {
        let op: ForwardOp = decode(payload)?;
        Ok(encode_reply(&self.exec_local(group, op).await))
    }

    /// Serves one Raft RPC from a peer replica of `group`.
    pub(crate) async fn handle_rpc(&self, rpc: RaftRpc, target: NodeId, group: GroupId, payload: &[u8]) -> Result<Vec<u8>> {
        self.check_target(target)?;
        let raft = self.raft(group)?;
        let fatal = |e: &dyn std::fmt::Display| Error::Fatal(e.to_string());
        Ok(match rpc {
            RaftRpc::Append => encode(&raft.append_entries(decode(payload)?).await.map_err(|e| fatal(&e))?),
            RaftRpc::Vote => encode(&raft.vote(decode(payload)?).await.map_err(|e| fatal(&e))?),
            RaftRpc::PreVote => encode(&raft.pre_vote(decode(payload)?).await.map_err(|e| fatal(&e))?),
            RaftRpc::TransferLeader => encode(&raft.handle_transfer_leader(decode(payload)?).await.map_err(|e| fatal(&e))?),
        })
    }

    /// Installs the snapshot a leader streams: its vote and meta, then its
    /// encoded body in `pieces` as they arrive (a body cut short installs
    /// nothing). Answers the encoded response.
    pub(crate) async fn handle_snapshot(&self, group: GroupId, meta: &[u8], mut pieces: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Result<Vec<u8>> {
        let (vote, meta): (Vote, SnapshotMeta) = decode(meta)?;
        let raft = self.raft(group)?;
        // Staged to a file as the pieces come (a blocking thread decodes and
        // writes them), so the group is never held in memory.
        let store = self.inner.store.clone();
        let staged = tokio::task::spawn_blocking(move || crate::snapshot::receive(&store, group, std::iter::from_fn(|| pieces.blocking_recv())))
            .await
            .map_err(|e| Error::Fatal(format!("snapshot receiver: {e}")))??;
        let resp = raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: crate::snapshot::SnapshotData::Staged(staged) })
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?;
        Ok(encode(&resp))
    }

    /// Hands leadership of every group this node leads to another voter, then
    /// stops all groups.
    pub async fn shutdown(&self) {
        let mut handed = Vec::new();
        for (g, raft) in &self.inner.groups {
            if raft.is_leader() {
                let m = raft.metrics().borrow_watched().clone();
                // The voter that has the most of the log: it can take over
                // at once (a lagging one would first have to catch up).
                let matched = |v: &NodeId| m.replication.as_ref().and_then(|r| r.get(v).cloned().flatten()).map(|l| l.index);
                let to = m.membership_config.membership().voter_ids().filter(|v| *v != self.inner.id).max_by_key(|v| matched(v));
                if let Some(to) = to {
                    let _ = raft.trigger().transfer_leader(to).await;
                    tracing::info!(group = g, to, "handing over leadership");
                    handed.push(raft);
                }
            }
        }
        // Stay until each handed-over group knows its new leader (stepping
        // down comes before the new leader's election ends), at most 2 s.
        let me = self.inner.id;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && handed.iter().any(|r| r.metrics().borrow_watched().current_leader.is_none_or(|l| l == me)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for raft in self.inner.groups.values() {
            let _ = raft.shutdown().await;
        }
    }
}

fn write_err(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ForwardErr {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardErr::NotLeader { leader: f.leader_id, node: f.leader_node },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ForwardErr::Invalid(e.to_string()),
        RaftError::APIError(e) => ForwardErr::Unavailable(e.to_string()),
        RaftError::Fatal(e) => ForwardErr::Fatal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_data_groups_stably() {
        // Pinned values: changing the hash would move every key of a running cluster.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut seen = BTreeSet::new();
        for i in 0..1000 {
            let g = group_for_key(format!("user:{i}").as_bytes(), 16);
            assert!((1..=16).contains(&g));
            seen.insert(g);
        }
        assert_eq!(seen.len(), 16, "1000 keys should reach every group");
    }

    /// A forwarded reply keeps its bytes and its format; one from a node of
    /// another version (format 1, 0.2.0's enum of reply kinds) is refused,
    /// never read as an answer.
    #[test]
    fn forwarded_replies_are_versioned() {
        let ok: ForwardReply = Ok(Reply(vec![1, 0, 7]));
        let bytes = encode_reply(&ok);
        assert_eq!(bytes, vec![2, 0, 3, 1, 0, 7]);
        assert_eq!(decode_reply(&bytes).unwrap(), ok);
        let err = decode_reply(&encode_reply(&Err(ForwardErr::Unavailable("x".into())))).unwrap();
        assert!(matches!(err, Err(ForwardErr::Unavailable(m)) if m == "x"));
        let old = encode(&0u8); // format 1
        assert!(decode_reply(&old).unwrap_err().to_string().contains("unknown format version 1"));
        assert!(decode_reply(&[]).is_err());
    }
}
