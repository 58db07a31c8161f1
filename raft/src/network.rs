//! Outgoing Raft RPCs. One [`Router`] per node keeps one gRPC channel (one
//! HTTP/2 connection, mutual TLS) per peer; every group's replication to that
//! peer is multiplexed over it with the group id in each request, and the
//! calls queued for a peer travel together ([`crate::batch`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_proto::peer::peer_client::PeerClient;
use courier_proto::peer::{RaftBatchRequest, RaftCall, RaftReply, RaftRequest, SnapshotChunk};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::batch::{self, BatchStats, Call, RaftRpc};
use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::types::{GroupId, NodeId, NodeInfo, Snapshot, TypeConfig, Vote};

/// Largest gRPC message a node accepts or sends (snapshot chunks, batches).
pub const MAX_MESSAGE: usize = 64 << 20;
const SNAPSHOT_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    tls: Option<ClientTlsConfig>,
    /// The address this node's peer connections leave from (its own peer
    /// address), so a peer sees which node a connection comes from.
    local: Option<std::net::IpAddr>,
    channels: Mutex<HashMap<String, Channel>>,
    addrs: Mutex<HashMap<NodeId, String>>,
    /// Each peer's queue of Raft calls (see [`crate::batch`]).
    queues: Mutex<HashMap<String, tokio::sync::mpsc::Sender<Call>>>,
    /// Each peer's stream of forwarded requests (see [`crate::forward`]).
    forwarders: Mutex<HashMap<String, Forwarder>>,
    stats: Arc<BatchStats>,
    /// Requests forwarded to another node's leader, since start.
    forwarded: AtomicU64,
}

impl Router {
    /// `tls`: the node's identity and the cluster CA; `None` only in tests.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Router::with_local_address(tls, None)
    }

    /// Like [`Router::new`]; connections to peers are made from `local`.
    pub fn with_local_address(tls: Option<ClientTlsConfig>, local: Option<std::net::IpAddr>) -> Self {
        Router {
            inner: Arc::new(RouterInner {
                tls,
                local,
                channels: Mutex::default(),
                addrs: Mutex::default(),
                queues: Mutex::default(),
                forwarders: Mutex::default(),
                stats: Arc::default(),
                forwarded: AtomicU64::default(),
            }),
        }
    }

    /// Raft batches and the calls they carried, since start.
    pub fn batch_stats(&self) -> (u64, u64) {
        (self.inner.stats.batches.load(Ordering::Relaxed), self.inner.stats.calls.load(Ordering::Relaxed))
    }

    /// Requests this node forwarded to a leader elsewhere, since start.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// The shared channel to a peer address, created on first use; it
    /// reconnects by itself after failures.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        per_peer(&self.inner.channels, addr, || self.connect(addr))
    }

    fn connect(&self, addr: &str) -> Result<Channel> {
        let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::Invalid(format!("peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_connection_window_size(Some(8 << 20))
            .initial_stream_window_size(Some(4 << 20))
            .local_address(self.inner.local);
        if let Some(tls) = &self.inner.tls {
            ep = ep.tls_config(tls.clone()).map_err(|e| Error::Invalid(format!("tls: {e}")))?;
        }
        Ok(ep.connect_lazy())
    }

    pub fn peer(&self, addr: &str) -> Result<PeerClient<Channel>> {
        Ok(PeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Records where a node lives (from Raft membership).
    pub fn learn(&self, id: NodeId, addr: &str) {
        self.inner.addrs.lock().expect("router lock").insert(id, addr.to_string());
    }

    fn addr_of(&self, id: NodeId) -> Result<String, RPCError<TypeConfig>> {
        self.inner
            .addrs
            .lock()
            .expect("router lock")
            .get(&id)
            .cloned()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&AnyError::error(format!("no address for node {id}")))))
    }

    /// The queue of Raft calls to the peer at `addr`, started on first use.
    fn queue(&self, addr: &str) -> Result<tokio::sync::mpsc::Sender<Call>> {
        per_peer(&self.inner.queues, addr, || {
            let client = self.peer(addr)?;
            Ok(batch::start(move |calls| send_batch(client.clone(), calls), self.inner.stats.clone()))
        })
    }

    /// Sends a request to be executed by the node at `addr` (a group's
    /// leader) and returns its encoded reply.
    pub async fn forward(&self, addr: &str, req: RaftRequest) -> std::result::Result<Vec<u8>, tonic::Status> {
        let forwarder = per_peer(&self.inner.forwarders, addr, || Ok(Forwarder::start(self.peer(addr)?)))
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        self.inner.forwarded.fetch_add(1, Ordering::Relaxed);
        forwarder.call(req).await
    }

    async fn call<Req, Resp>(&self, target: NodeId, group: GroupId, kind: RaftRpc, rpc: &Req, option: &RPCOption) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let addr = self.addr_of(target)?;
        let queue = self.queue(&addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let deadline = tokio::time::Instant::now() + option.hard_ttl();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = Call { kind, req: RaftRequest { group, payload: encode(rpc), target }, deadline, reply };
        let trip = async {
            queue.send(call).await.map_err(|_| tonic::Status::unavailable("the peer queue stopped"))?;
            answer.await.map_err(|_| tonic::Status::unavailable("the peer queue dropped the call"))?
        };
        let reply = match tokio::time::timeout_at(deadline, trip).await {
            Err(_) => return Err(RPCError::Network(NetworkError::new(&AnyError::error("rpc timed out")))),
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(r)) => r,
        };
        decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// What `map` keeps for the peer at `addr`, made by `make` on first use.
fn per_peer<T: Clone>(map: &Mutex<HashMap<String, T>>, addr: &str, make: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut map = map.lock().expect("router lock");
    if let Some(v) = map.get(addr) {
        return Ok(v.clone());
    }
    let v = make()?;
    map.insert(addr.to_string(), v.clone());
    Ok(v)
}

/// One `RaftBatch` round trip to a peer with `calls`.
async fn send_batch(
    mut client: PeerClient<Channel>,
    calls: Vec<(RaftRpc, RaftRequest)>,
) -> std::result::Result<Vec<std::result::Result<RaftReply, tonic::Status>>, tonic::Status> {
    let req = RaftBatchRequest { calls: calls.into_iter().map(|(kind, req)| RaftCall { kind: kind.to_wire() as i32, request: Some(req) }).collect() };
    let reply = client.raft_batch(req).await?;
    Ok(reply.into_inner().results.into_iter().map(batch::from_result).collect())
}

fn status_to_rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(status.message())))
        }
        _ => RPCError::Network(NetworkError::new(&AnyError::error(format!("{}: {}", status.code(), status.message())))),
    }
}

impl GroupRouter<TypeConfig, GroupId> for Router {
    type SnapshotData = crate::snapshot::SnapshotData;

    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, RaftRpc::Append, &rpc, &option).await
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, RaftRpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, RaftRpc::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let addr = self.addr_of(target).map_err(rpc_to_streaming)?;
        let mut client = self.peer(&addr).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let meta = encode(&(&vote, &snapshot.meta));
        // The body is read and encoded on a blocking thread, a piece at a
        // time, while the stream sends the pieces before it.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.try_send(SnapshotChunk { group, meta, data: Vec::new(), target }).expect("room for the first chunk");
        let data = snapshot.snapshot;
        // A snapshot takes as long as its size needs: what times out is a
        // transfer that stops moving, no piece taken for `idle`. Before the
        // first piece (the rows are counted first) and after the last (the
        // follower syncs and ingests what it staged) it may take ten times that.
        let started = tokio::time::Instant::now();
        let moved = Arc::new(AtomicU64::new(0));
        let (moved_by_reader, read_all) = (moved.clone(), Arc::new(AtomicBool::new(false)));
        let read_all_by_reader = read_all.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let walked = data.encode_in_pieces(SNAPSHOT_CHUNK, |piece| {
                let sent = tx.blocking_send(SnapshotChunk { group, meta: Vec::new(), data: piece, target }).is_ok();
                moved_by_reader.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                sent
            });
            read_all_by_reader.store(true, Ordering::Relaxed);
            walked
        });
        let idle = option.hard_ttl().max(Duration::from_secs(60));
        let stalled = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let last = moved.load(Ordering::Relaxed);
                let allowed = if last == 0 || read_all.load(Ordering::Relaxed) { idle * 10 } else { idle };
                if started.elapsed().saturating_sub(Duration::from_millis(last)) > allowed {
                    return;
                }
            }
        };
        let send = client.snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            r = send => Ok(r),
            () = stalled => Err(()),
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        // A body that could not be read all (the stream then ended early)
        // fails the send, whatever the follower made of it.
        if let Ok(Err(e)) | Err(e) = reader.await.map_err(|e| Error::Fatal(format!("snapshot reader: {e}"))) {
            return Err(StreamingError::Network(NetworkError::new(&e)));
        }
        let reply = match reply {
            Err(()) => return Err(StreamingError::Network(NetworkError::new(&AnyError::error(format!("snapshot stalled for {idle:?}"))))),
            Ok(Err(status)) => return Err(rpc_to_streaming(status_to_rpc_error(status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        decode(&reply.payload).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, RaftRpc::TransferLeader, &req, &option).await
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(200))))
    }
}

fn rpc_to_streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        other => StreamingError::Network(NetworkError::new(&AnyError::error(other.to_string()))),
    }
}

/// Per-group network factory handed to openraft.
pub struct GroupNetwork(pub GroupNetworkFactory<Router, GroupId>);

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, Router>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        self.0.factory.learn(target, &node.peer_addr);
        GroupNetworkAdapter::new(self.0.factory.clone(), target, self.0.group_id)
    }
}
