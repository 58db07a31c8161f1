//! Cluster membership of this node: identity, init and join, health probes,
//! the placement controller (acting on the meta leader) and `cluster status`.

mod controller;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_proto::peer::{
    ChunkHealth,
    GroupStatus, JoinReply, JoinRequest, NodeStatus, ProbeReply, ProbeRequest, ReplicaStatus, ReplicaView, StatusReply, WebEndpoint,
};
use courier_raft::logic::ClusterState;
use courier_raft::network::Router;
use courier_raft::{GroupView, META_GROUP, MultiRaft, NodeId, NodeInfo, NodeState, ask, cmd};
use courier_storage::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What makes this node a member of a cluster; persisted once, never changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub data_groups: u32,
}

const IDENTITY_KEY: &str = "identity";
const INCARNATION_KEY: &str = "incarnation";

/// The last probe of one node.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub last_ok: Option<Instant>,
    pub down_since: Option<Instant>,
    pub views: Vec<ReplicaView>,
    /// Its media workers' last report.
    pub chunks: Option<ChunkHealth>,
    /// Where browsers reach it, as it last said.
    pub web: Option<WebEndpoint>,
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    cfg: NodeConfig,
    app: Arc<dyn courier_raft::logic::App>,
    store: Store,
    router: Router,
    raft: OnceCell<MultiRaft>,
    boot: tokio::sync::Mutex<()>,
    incarnation: u64,
    health: Mutex<BTreeMap<NodeId, Health>>,
    metrics: Metrics,
    started: Instant,
    chunk_health: Mutex<ChunkHealth>,
    /// Where browsers reach this node (set by the web part; told in probes).
    web: Mutex<Option<WebEndpoint>>,
    /// The other nodes' peer addresses (refreshed every placement tick).
    other_peers: Mutex<Vec<String>>,
    /// Certificates the peer port refuses (read from the meta group).
    revoked: Arc<crate::tls::Revoked>,
}

/// How often a node reads the revoked certificates (a revocation reaches
/// every node's peer port within about this long).
const REVOKED_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn view_to_proto(v: &GroupView) -> ReplicaView {
    ReplicaView {
        group: v.group,
        role: v.role.clone(),
        term: v.term,
        leader: v.leader.unwrap_or(0),
        applied: v.applied,
        last_log: v.last_log,
        voters: v.voters.iter().copied().collect(),
        learners: v.learners.iter().copied().collect(),
        initialized: !v.voters.is_empty(),
        snapshot: v.snapshot,
        purged: v.purged,
    }
}

/// The authoritative view of each group: the leader replica with the highest term.
pub(crate) fn leader_views(all: &BTreeMap<NodeId, Vec<ReplicaView>>) -> BTreeMap<u32, (NodeId, ReplicaView)> {
    let mut best: BTreeMap<u32, (NodeId, ReplicaView)> = BTreeMap::new();
    for (node, views) in all {
        for v in views.iter().filter(|v| v.role == "leader") {
            let better = best.get(&v.group).is_none_or(|(_, b)| v.term > b.term);
            if better {
                best.insert(v.group, (*node, v.clone()));
            }
        }
    }
    best
}

impl Node {
    /// `app`: what the groups' state machines apply (the services' commands,
    /// `app::Services`); the cluster runs it without knowing it.
    pub fn open(cfg: NodeConfig, metrics: Metrics, app: Arc<dyn courier_raft::logic::App>) -> Result<Node> {
        let store = Store::open(&cfg.data_dir)?;
        let incarnation = match store.get_meta(INCARNATION_KEY)? {
            Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| Error::Io("corrupt incarnation".into()))?),
            None => {
                let i: u64 = rand::random::<u64>() | 1;
                store.put_meta(INCARNATION_KEY, &i.to_be_bytes())?;
                i
            }
        };
        let tls = crate::tls::client_tls(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;
        // Peer connections leave from this node's own peer address (when it
        // names one), so firewall rules and peers' logs can tell nodes apart
        // on a host with several addresses.
        let local = cfg.peer_addr.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        let router = Router::with_local_address(Some(tls), local);
        Ok(Node {
            inner: Arc::new(NodeInner {
                cfg,
                store,
                router,
                app,
                raft: OnceCell::new(),
                boot: tokio::sync::Mutex::new(()),
                incarnation,
                health: Mutex::default(),
                metrics,
                started: Instant::now(),
                chunk_health: Mutex::default(),
                web: Mutex::default(),
                other_peers: Mutex::default(),
                revoked: Arc::default(),
            }),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// This node's database (media chunks are read and written here directly).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The other nodes' peer addresses (not removed), as of the last
    /// placement tick.
    pub fn other_peers(&self) -> Vec<String> {
        self.inner.other_peers.lock().expect("other peers").clone()
    }

    /// Calls every other node of the cluster (not removed) concurrently, each
    /// within `timeout`: the answers in no particular order, `None` for a
    /// node that failed or was late; `Err` if the node list is unknown.
    pub async fn ask_peers<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<Vec<Option<T>>>
    where
        F: Fn(courier_proto::peer::peer_client::PeerClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let me = self.raft()?.id();
        let cluster = self.registry().await.inspect_err(|e| tracing::warn!("cannot list the nodes: {e}"))?;
        let asks = cluster.nodes.values().filter(|n| n.id != me && n.state != NodeState::Removed).map(|n| {
            let client = self.inner.router.peer(&n.info.peer_addr).ok();
            let call = client.map(&call);
            async move { tokio::time::timeout(timeout, call?).await.ok()?.ok().map(tonic::Response::into_inner) }
        });
        Ok(futures::future::join_all(asks).await)
    }

    pub fn raft(&self) -> Result<&MultiRaft> {
        self.inner.raft.get().ok_or(Error::NotInitialized)
    }

    pub fn my_info(&self) -> NodeInfo {
        let c = &self.inner.cfg;
        NodeInfo { name: c.name.clone(), peer_addr: c.peer_addr.clone(), client_addr: c.client_addr.clone(), admin_addr: c.admin_addr.clone() }
    }

    fn identity(&self) -> Result<Option<Identity>> {
        match self.inner.store.get_meta(IDENTITY_KEY)? {
            Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| Error::Io(format!("corrupt identity: {e}")))?)),
            None => Ok(None),
        }
    }

    /// Starts Raft if this node already belongs to a cluster; otherwise joins
    /// through `join` in the background, or waits for `cluster init`.
    pub async fn boot(&self) -> Result<()> {
        if let Some(id) = self.identity()? {
            tracing::info!(node = id.node_id, cluster = %id.cluster_id, "rejoining cluster");
            self.start_raft(&id).await?;
        } else if !self.inner.cfg.join.is_empty() {
            let node = self.clone();
            tokio::spawn(async move { node.join_loop().await });
        } else {
            tracing::info!("waiting for `courier cluster init` (no identity, nothing to join)");
        }
        Ok(())
    }

    async fn start_raft(&self, id: &Identity) -> Result<&MultiRaft> {
        let multi = MultiRaft::start(id.node_id, self.inner.store.clone(), self.inner.router.clone(), id.data_groups, self.inner.cfg.raft_options(), self.inner.app.clone())
            .await?;
        let multi = self.inner.raft.get_or_init(|| async { multi }).await;
        multi.set_peers(self.inner.cfg.join.clone());
        let node = self.clone();
        tokio::spawn(async move { node.background().await });
        Ok(multi)
    }

    /// `cluster init`: this node becomes node 1, the first voter of every group.
    pub async fn init(&self, data_groups: u32) -> Result<Identity> {
        let _boot = self.inner.boot.lock().await;
        if let Some(id) = self.identity()? {
            return Err(Error::BadRequest(format!("this node already belongs to cluster {} as node {}", id.cluster_id, id.node_id)));
        }
        if !self.inner.cfg.join.is_empty() {
            return Err(Error::BadRequest("this node is configured to join another node (`join`); init the first node instead".into()));
        }
        let data_groups = if data_groups == 0 { self.inner.cfg.data_groups } else { data_groups };
        if !(1..=1024).contains(&data_groups) {
            return Err(Error::BadRequest("data groups must be between 1 and 1024".into()));
        }
        let id = Identity { node_id: 1, cluster_id: format!("{:016x}", rand::random::<u64>()), data_groups };
        self.inner.store.put_meta(IDENTITY_KEY, &serde_json::to_vec(&id).expect("identity serializes"))?;
        let multi = self.start_raft(&id).await?;
        multi.initialize_all(self.my_info()).await?;
        let init = cmd::InitCluster { cluster_id: id.cluster_id.clone(), data_groups, first: self.my_info(), incarnation: self.inner.incarnation };
        match multi.write(META_GROUP, init).await? {
            Ok(1) => {}
            Ok(other) => return Err(Error::Io(format!("init gave this node id {other}, not 1"))),
            Err(refused) => return Err(Error::BadRequest(format!("init refused: {refused}"))),
        }
        tracing::info!(cluster = %id.cluster_id, data_groups, "cluster initialized");
        Ok(id)
    }

    async fn join_loop(&self) {
        let req = JoinRequest {
            name: self.inner.cfg.name.clone(),
            peer_addr: self.inner.cfg.peer_addr.clone(),
            client_addr: self.inner.cfg.client_addr.clone(),
            admin_addr: self.inner.cfg.admin_addr.clone(),
        };
        let mut attempt = 0u64;
        loop {
            for seed in &self.inner.cfg.join {
                let Ok(mut client) = self.inner.router.peer(seed) else { continue };
                let mut r = tonic::Request::new(req.clone());
                r.metadata_mut().insert("courier-incarnation", self.inner.incarnation.to_string().parse().expect("digits are ascii"));
                match tokio::time::timeout(Duration::from_secs(15), client.join(r)).await {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        let id = Identity { node_id: reply.node_id, cluster_id: reply.cluster_id, data_groups: reply.data_groups };
                        let _boot = self.inner.boot.lock().await;
                        if let Err(e) = self.inner.store.put_meta(IDENTITY_KEY, &serde_json::to_vec(&id).expect("identity serializes")) {
                            tracing::error!("cannot persist identity: {e}");
                            return;
                        }
                        tracing::info!(node = id.node_id, cluster = %id.cluster_id, via = %seed, "joined cluster");
                        if let Err(e) = self.start_raft(&id).await {
                            tracing::error!("cannot start raft after join: {e}");
                        }
                        return;
                    }
                    Ok(Err(status)) if attempt.is_multiple_of(10) => tracing::info!(%seed, "join not accepted yet: {}", status.message()),
                    Err(_) if attempt.is_multiple_of(10) => tracing::info!(%seed, "join timed out"),
                    _ => {}
                }
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A new node asks for an id (any member answers; the write goes to the meta leader).
    pub async fn handle_join(&self, req: JoinRequest, incarnation: u64) -> Result<JoinReply> {
        let multi = self.raft()?;
        for (field, v) in [("peer_addr", &req.peer_addr), ("client_addr", &req.client_addr), ("admin_addr", &req.admin_addr)] {
            if v.parse::<std::net::SocketAddr>().is_err() {
                return Err(Error::BadRequest(format!("join: {field} {v:?} is not an address")));
            }
        }
        let info = NodeInfo { name: req.name, peer_addr: req.peer_addr, client_addr: req.client_addr, admin_addr: req.admin_addr };
        let node_id = multi.write(META_GROUP, cmd::RegisterNode { info: info.clone(), incarnation }).await?.map_err(|why| Error::BadRequest(why.0))?;
        let cluster = self.cluster_state().await?;
        tracing::info!(node = node_id, %info, "node registered");
        Ok(JoinReply { node_id, cluster_id: cluster.cluster_id, data_groups: cluster.data_groups })
    }

    /// The node registry: this node's own copy when it is a member of the meta
    /// group (current, and available without a meta quorum), else read
    /// through the meta leader (a node outside the group has no copy, or a
    /// stale one from before it left).
    pub(crate) async fn registry(&self) -> Result<ClusterState> {
        let multi = self.raft()?;
        let meta_member = multi.views().iter().any(|v| v.group == META_GROUP && v.hosts(multi.id()));
        match multi.local_cluster() {
            Ok(c) if c.is_initialized() && meta_member => Ok(c),
            _ => self.cluster_state().await,
        }
    }

    /// The meta group's state, read linearizably through its leader.
    pub async fn cluster_state(&self) -> Result<ClusterState> {
        Ok(self.raft()?.read(META_GROUP, ask::Cluster).await?)
    }

    pub fn probe_local(&self) -> ProbeReply {
        let (node_id, replicas) = match self.inner.raft.get() {
            Some(m) => (m.id(), m.views().iter().map(view_to_proto).collect()),
            None => (0, Vec::new()),
        };
        let chunks = Some(self.inner.chunk_health.lock().expect("chunk health").clone());
        let web = self.web();
        ProbeReply { node_id, replicas, name: self.inner.cfg.name.clone(), chunks, development: self.inner.cfg.development, web }
    }

    /// Where browsers reach this node; told to the others in probes.
    pub fn set_web(&self, web: WebEndpoint) {
        *self.inner.web.lock().expect("web lock") = Some(web);
    }

    pub fn web(&self) -> Option<WebEndpoint> {
        self.inner.web.lock().expect("web lock").clone()
    }

    /// Where browsers reach each node that said so in its last answered
    /// probe and is up (this node's own included).
    pub fn web_endpoints(&self) -> BTreeMap<NodeId, WebEndpoint> {
        self.web_endpoints_where(|h| h.down_since.is_none())
    }

    /// [`Node::web_endpoints`] of every node ever heard from, down ones too.
    pub fn known_web_endpoints(&self) -> BTreeMap<NodeId, WebEndpoint> {
        self.web_endpoints_where(|_| true)
    }

    fn web_endpoints_where(&self, keep: impl Fn(&Health) -> bool) -> BTreeMap<NodeId, WebEndpoint> {
        let mut all: BTreeMap<NodeId, WebEndpoint> = {
            let health = self.inner.health.lock().expect("health lock");
            health.iter().filter(|(_, h)| keep(h)).filter_map(|(id, h)| Some((*id, h.web.clone()?))).collect()
        };
        if let (Some(web), Ok(multi)) = (self.web(), self.raft()) {
            all.insert(multi.id(), web);
        }
        all
    }

    /// Nodes this node's probes have found down for longer than
    /// `placement.dead_after_secs`: their replicas and chunks get new homes.
    pub fn dead_nodes(&self) -> BTreeSet<NodeId> {
        let dead_after = Duration::from_secs(self.inner.cfg.placement.dead_after_secs);
        let now = Instant::now();
        let health = self.inner.health.lock().expect("health lock");
        health.iter().filter(|(_, h)| h.down_since.is_some_and(|t| now.duration_since(t) > dead_after)).map(|(id, _)| *id).collect()
    }

    /// Nodes this node's last probes found up, itself included (at least 1):
    /// what a cluster-wide budget is shared over.
    pub fn live_nodes(&self) -> usize {
        let health = self.inner.health.lock().expect("health lock");
        health.values().filter(|h| h.down_since.is_none()).count().max(1)
    }

    /// What the media repair worker saw in its last pass (shown by `cluster status`).
    pub fn set_chunk_health(&self, h: ChunkHealth) {
        self.inner.metrics.set_media(&h);
        *self.inner.chunk_health.lock().expect("chunk health") = h;
    }

    /// Probes every registered node in parallel (itself locally).
    async fn probe_all(&self, cluster: &ClusterState, timeout: Duration) -> BTreeMap<NodeId, Option<ProbeReply>> {
        let me = self.raft().map(|m| m.id()).unwrap_or(0);
        let mut tasks = tokio::task::JoinSet::new();
        for n in cluster.nodes.values().filter(|n| n.state != NodeState::Removed) {
            let id = n.id;
            if id == me {
                continue;
            }
            let client = self.inner.router.peer(&n.info.peer_addr);
            tasks.spawn(async move {
                let reply = match client {
                    Ok(mut c) => match tokio::time::timeout(timeout, c.probe(ProbeRequest {})).await {
                        Ok(Ok(r)) => Some(r.into_inner()).filter(|r| r.node_id == id),
                        _ => None,
                    },
                    Err(_) => None,
                };
                (id, reply)
            });
        }
        let mut out = BTreeMap::new();
        if me != 0 {
            out.insert(me, Some(self.probe_local()));
        }
        while let Some(Ok((id, reply))) = tasks.join_next().await {
            out.insert(id, reply);
        }
        out
    }

    /// Records probe results; returns the health table.
    fn record_probes(&self, probes: &BTreeMap<NodeId, Option<ProbeReply>>) -> BTreeMap<NodeId, Health> {
        let now = Instant::now();
        let mut health = self.inner.health.lock().expect("health lock");
        for (id, reply) in probes {
            let h = health.entry(*id).or_insert_with(|| Health { down_since: Some(self.inner.started), ..Default::default() });
            match reply {
                Some(r) => {
                    h.last_ok = Some(now);
                    h.down_since = None;
                    h.views = r.replicas.clone();
                    h.chunks = r.chunks.clone();
                    h.web = r.web.clone();
                }
                None => {
                    h.down_since.get_or_insert(now);
                    h.views.clear();
                    h.chunks = None;
                    // Kept: where browsers reached it (its pages' origin
                    // stays allowed while they move to another node).
                }
            }
        }
        health.retain(|id, _| probes.contains_key(id));
        health.clone()
    }

    /// `cluster status`: nodes, groups, leaders, terms and lag.
    pub async fn status(&self) -> Result<StatusReply> {
        let multi = self.raft()?;
        let cluster = self.registry().await?;
        let probes = self.probe_all(&cluster, Duration::from_millis(1500)).await;
        let views: BTreeMap<NodeId, Vec<ReplicaView>> =
            probes.iter().filter_map(|(id, r)| r.as_ref().map(|r| (*id, r.replicas.clone()))).collect();
        let leaders = leader_views(&views);
        let answered: BTreeSet<NodeId> = probes.iter().filter(|(_, r)| r.is_some()).map(|(id, _)| *id).collect();
        // A majority of the voters answers probes.
        let quorum = |voters: &[u64]| 2 * voters.iter().filter(|v| answered.contains(v)).count() > voters.len();
        let mut groups = Vec::new();
        for g in 0..=multi.data_groups() {
            let Some((_, lv)) = leaders.get(&g) else {
                // No leader reachable: show what any replica knows.
                let any = views.values().flatten().filter(|v| v.group == g && v.initialized).max_by_key(|v| v.term);
                let voters = any.map(|v| v.voters.clone()).unwrap_or_default();
                groups.push(GroupStatus {
                    id: g,
                    leader: 0,
                    quorum: quorum(&voters),
                    voters,
                    learners: any.map(|v| v.learners.clone()).unwrap_or_default(),
                    term: any.map(|v| v.term).unwrap_or(0),
                    applied: any.map(|v| v.applied).unwrap_or(0),
                    replicas: Vec::new(),
                });
                continue;
            };
            let members: BTreeSet<NodeId> = lv.voters.iter().chain(lv.learners.iter()).copied().collect();
            let replicas = members
                .iter()
                .map(|n| {
                    let applied = views.get(n).and_then(|vs| vs.iter().find(|v| v.group == g)).map(|v| v.applied);
                    ReplicaStatus { node: *n, applied: applied.unwrap_or(0), lag: applied.map(|a| lv.last_log.saturating_sub(a)).unwrap_or(u64::MAX) }
                })
                .collect();
            let has_quorum = quorum(&lv.voters);
            groups.push(GroupStatus {
                id: g,
                // A leader without a majority leads nothing.
                leader: if has_quorum { lv.leader } else { 0 },
                quorum: has_quorum,
                voters: lv.voters.clone(),
                learners: lv.learners.clone(),
                term: lv.term,
                applied: lv.applied,
                replicas,
            });
        }
        let nodes = cluster
            .nodes
            .values()
            .map(|n| {
                let up = probes.get(&n.id).is_some_and(|r| r.is_some());
                let state = match (n.state, up) {
                    (NodeState::Removed, _) => "removed",
                    (_, true) => "up",
                    (_, false) => "down",
                };
                NodeStatus {
                    id: n.id,
                    name: n.info.name.clone(),
                    addr: n.info.client_addr.clone(),
                    peer_addr: n.info.peer_addr.clone(),
                    admin_addr: n.info.admin_addr.clone(),
                    state: state.into(),
                    replicas: groups.iter().filter(|g| g.voters.contains(&n.id) || g.learners.contains(&n.id)).count() as u32,
                    leads: groups.iter().filter(|g| g.leader == n.id).count() as u32,
                    lifecycle: n.state.as_str().into(),
                    chunks_stored: probes.get(&n.id).and_then(|r| r.as_ref()).and_then(|r| r.chunks.as_ref()).map_or(0, |c| c.stored),
                    development: probes.get(&n.id).and_then(|r| r.as_ref()).is_some_and(|r| r.development),
                }
            })
            .collect();
        let up: BTreeSet<NodeId> = probes.iter().filter(|(_, r)| r.is_some()).map(|(id, _)| *id).collect();
        let settled = controller::is_settled(&cluster, &groups, &up, self.inner.cfg.placement.replicas);
        let mut chunks = ChunkHealth::default();
        // Each group's chunks as its current leader counted them (a node that
        // led it before may still report it).
        for (g, (leader, _)) in &leaders {
            let report = probes.get(leader).and_then(|r| r.as_ref()).and_then(|r| r.chunks.as_ref());
            if let Some(gc) = report.and_then(|h| h.groups.iter().find(|gc| gc.group == *g)) {
                chunks.chunks += gc.chunks;
                chunks.under_replicated += gc.under_replicated;
            }
        }
        for h in probes.values().flatten().filter_map(|r| r.chunks.as_ref()) {
            chunks.repaired += h.repaired;
            chunks.stored += h.stored;
            chunks.passes += h.passes;
            chunks.scrubbed += h.scrubbed;
            chunks.corrupt_repaired += h.corrupt_repaired;
            chunks.collected += h.collected;
            chunks.moved_off += h.moved_off;
            chunks.uploads_expired += h.uploads_expired;
        }
        Ok(StatusReply { cluster_id: cluster.cluster_id, nodes, groups, data_groups: multi.data_groups(), placement_settled: settled, chunks: Some(chunks) })
    }

    /// `cluster remove-node`: mark it; the controller moves its replicas away
    /// and then marks it removed.
    pub async fn remove_node(&self, id: NodeId) -> Result<String> {
        let cluster = self.cluster_state().await?;
        let Some(node) = cluster.nodes.get(&id) else {
            return Err(Error::BadRequest(format!("node {id} is not registered")));
        };
        if node.state != NodeState::Active {
            return Ok(node.state.as_str().into());
        }
        if cluster.active_nodes().count() <= 1 {
            return Err(Error::BadRequest("refusing to remove the last active node".into()));
        }
        self.raft()?.write(META_GROUP, cmd::SetNodeState { id, state: NodeState::Removing }).await?.map_err(|why| Error::BadRequest(why.0))?;
        Ok(NodeState::Removing.as_str().into())
    }

    /// Runs for the life of the node once Raft started: probes, placement, metrics.
    async fn background(&self) {
        let tick = Duration::from_millis(self.inner.cfg.placement.tick_ms);
        let mut controller = controller::Controller::default();
        let mut revoked_read = Instant::now().checked_sub(REVOKED_EVERY).unwrap_or_else(Instant::now);
        loop {
            tokio::time::sleep(tick).await;
            let Ok(multi) = self.raft() else { continue };
            self.inner.metrics.observe(multi);
            if revoked_read.elapsed() >= REVOKED_EVERY {
                revoked_read = Instant::now();
                self.refresh_revoked().await;
            }
            let cluster = match self.registry().await {
                Ok(c) if c.is_initialized() => c,
                _ => continue,
            };
            let mut peers: Vec<String> =
                cluster.nodes.values().filter(|n| n.state != NodeState::Removed && n.id != multi.id()).map(|n| n.info.peer_addr.clone()).collect();
            *self.inner.other_peers.lock().expect("other peers") = peers.clone();
            peers.extend(self.inner.cfg.join.iter().cloned());
            multi.set_peers(peers);
            let probes = self.probe_all(&cluster, tick.min(Duration::from_millis(800))).await;
            let health = self.record_probes(&probes);
            let views: BTreeMap<NodeId, Vec<ReplicaView>> = health.iter().map(|(id, h)| (*id, h.views.clone())).collect();
            let leaders = leader_views(&views);
            for (g, (leader, _)) in &leaders {
                if let Some(n) = cluster.nodes.get(leader) {
                    multi.set_leader_hint(*g, &n.info.peer_addr);
                }
            }
            if multi.raft(META_GROUP).map(|r| r.is_leader()).unwrap_or(false) {
                controller.tick(self, &cluster, &health, &leaders).await;
            }
        }
    }

    /// The certificates the peer port refuses.
    pub fn revoked(&self) -> Arc<crate::tls::Revoked> {
        self.inner.revoked.clone()
    }

    /// Reads the revoked certificates from the meta group (keeping the
    /// last list when it cannot).
    async fn refresh_revoked(&self) {
        let Ok(multi) = self.raft() else { return };
        match multi.read(META_GROUP, ask::RevokedCerts).await {
            Ok(list) => {
                if self.inner.revoked.replace(list) {
                    tracing::info!(revoked = self.inner.revoked.len(), "the list of revoked certificates changed");
                }
            }
            Err(e) => tracing::debug!("cannot read the revoked certificates: {e}"),
        }
    }

    /// Revokes a certificate cluster-wide (operators: `courier cluster
    /// revoke-cert`); answers how many are revoked now.
    pub async fn revoke_cert(&self, sha256: [u8; 32]) -> Result<usize> {
        let multi = self.raft()?;
        multi.write(META_GROUP, cmd::RevokeCert { sha256 }).await?;
        self.refresh_revoked().await;
        Ok(self.inner.revoked.len())
    }

    /// Hands over leadership and stops Raft.
    pub async fn shutdown(&self) {
        if let Some(m) = self.inner.raft.get() {
            m.shutdown().await;
        }
    }
}
