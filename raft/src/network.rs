//! Outgoing Raft RPCs. One [`Router`] per node keeps one gRPC channel (one
//! HTTP/2 connection, mutual TLS) per peer; every group's replication to that
//! peer is multiplexed over it with the group id in each request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_proto::peer::peer_client::PeerClient;
use courier_proto::peer::{RaftReply, RaftRequest, SnapshotChunk};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
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
}

impl Router {
    /// `tls`: the node's identity and the cluster CA; `None` only in tests.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Router::with_local_address(tls, None)
    }

    /// Like [`Router::new`]; connections to peers are made from `local`.
    pub fn with_local_address(tls: Option<ClientTlsConfig>, local: Option<std::net::IpAddr>) -> Self {
        Router { inner: Arc::new(RouterInner { tls, local, channels: Mutex::default(), addrs: Mutex::default() }) }
    }

    /// The shared channel to a peer address, created on first use; it
    /// reconnects by itself after failures.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.inner.channels.lock().expect("router lock");
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
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
        let ch = ep.connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
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

    async fn call<Req, Resp, F, Fut>(&self, target: NodeId, group: GroupId, rpc: &Req, option: &RPCOption, f: F) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(PeerClient<Channel>, RaftRequest) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftReply>, tonic::Status>>,
    {
        let addr = self.addr_of(target)?;
        let client = self.peer(&addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let req = RaftRequest { group, payload: encode(rpc), target };
        let reply = match tokio::time::timeout(option.hard_ttl(), f(client, req)).await {
            Err(_) => return Err(RPCError::Network(NetworkError::new(&AnyError::error("rpc timed out")))),
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
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
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, &rpc, &option, |mut c, r| async move { c.append(r).await }).await
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, &rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group, &rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
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
        let data = snapshot.snapshot;
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK + 1);
        chunks.push(SnapshotChunk { group, meta, data: Vec::new(), target });
        for c in data.chunks(SNAPSHOT_CHUNK) {
            chunks.push(SnapshotChunk { group, meta: Vec::new(), data: c.to_vec(), target });
        }
        let send = client.snapshot(tokio_stream::iter(chunks));
        let reply = tokio::select! {
            r = tokio::time::timeout(option.hard_ttl().max(Duration::from_secs(60)), send) => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = match reply {
            Err(_) => return Err(StreamingError::Network(NetworkError::new(&AnyError::error("snapshot timed out")))),
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
        self.call(target, group, &req, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
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
