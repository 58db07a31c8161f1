//! The gRPC services on the peer port: `Peer` (nodes only) and `Admin`
//! (operator certificates only). They are wiring: each call goes to the
//! part that owns it (the cluster, Raft, pushes, media chunks, auth).

use courier_proto::peer::admin_server::Admin;
use courier_proto::peer::peer_server::Peer;
use courier_proto::peer::*;
use courier_raft::batch::to_result;
use courier_raft::{RaftRpc, ask, cmd};
use tokio_stream::StreamExt;
use tonic::{Request, Status, Streaming};

use crate::cluster::Node;
use crate::certs::Role;
use crate::error::Error;
use crate::tls::PeerIdentity;

/// Largest key the KV probe accepts, in bytes.
const MAX_KEY: usize = 1024;
/// Largest value the KV probe accepts, in bytes.
const MAX_VALUE: usize = 1 << 20;

fn caller<T>(req: &Request<T>) -> Option<&PeerIdentity> {
    req.extensions().get::<PeerIdentity>()
}

fn require_node<T>(req: &Request<T>) -> Result<(), Status> {
    match caller(req).map(|c| &c.role) {
        Some(Role::Node(_)) => Ok(()),
        // In-process tests serve without TLS: no identity at all.
        None if cfg!(test) => Ok(()),
        other => {
            tracing::warn!(peer = ?caller(req).map(|c| c.addr), role = ?other, "refused: peer RPC without a node certificate");
            Err(Error::Unauthorized("a node certificate is required".into()).into())
        }
    }
}

fn require_operator<T>(req: &Request<T>) -> Result<(), Status> {
    match caller(req).map(|c| &c.role) {
        Some(Role::Operator(_)) => Ok(()),
        other => {
            tracing::warn!(peer = ?caller(req).map(|c| c.addr), role = ?other, "refused: operator command without an operator certificate");
            Err(Error::Unauthorized("an operator certificate from the cluster CA is required (courier cert create-client)".into()).into())
        }
    }
}

fn chunk_hash(b: &[u8]) -> Result<[u8; 32], Status> {
    b.try_into().map_err(|_| Error::BadRequest("a chunk hash is 32 bytes".into()).into())
}

pub struct PeerService {
    pub node: Node,
    pub pushes: std::sync::Arc<crate::push::Pushes>,
}

impl PeerService {
    async fn raft_rpc(&self, req: Request<RaftRequest>, rpc: RaftRpc) -> Result<tonic::Response<RaftReply>, Status> {
        require_node(&req)?;
        let r = req.into_inner();
        let payload = self.node.raft()?.handle_rpc(rpc, r.target, r.group, &r.payload).await.map_err(raft_err)?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }
}

fn raft_err(e: courier_raft::Error) -> Status {
    Error::from(e).into()
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append(&self, req: Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, Status> {
        self.raft_rpc(req, RaftRpc::Append).await
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, Status> {
        self.raft_rpc(req, RaftRpc::Vote).await
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, Status> {
        self.raft_rpc(req, RaftRpc::PreVote).await
    }

    async fn transfer_leader(&self, req: Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, Status> {
        self.raft_rpc(req, RaftRpc::TransferLeader).await
    }

    async fn raft_batch(&self, req: Request<RaftBatchRequest>) -> Result<tonic::Response<RaftBatchReply>, Status> {
        require_node(&req)?;
        let calls = req.into_inner().calls;
        if calls.len() > courier_raft::batch::MAX_CALLS {
            return Err(Error::BadRequest(format!("a Raft batch holds at most {} calls", courier_raft::batch::MAX_CALLS)).into());
        }
        let raft = self.node.raft()?;
        // Concurrently: the calls are for different groups, and their log
        // appends share one fsync.
        let results = futures::future::join_all(calls.into_iter().map(|call| async move {
            let Some(rpc) = RaftRpc::from_wire(call.kind) else {
                return to_result(Err(Status::invalid_argument(format!("BAD_REQUEST: unknown Raft call kind {}", call.kind))));
            };
            let Some(r) = call.request else {
                return to_result(Err(Status::invalid_argument("BAD_REQUEST: a Raft call without its request")));
            };
            to_result(raft.handle_rpc(rpc, r.target, r.group, &r.payload).await.map_err(raft_err))
        }))
        .await;
        Ok(tonic::Response::new(RaftBatchReply { results }))
    }

    async fn snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<tonic::Response<RaftReply>, Status> {
        require_node(&req)?;
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("BAD_REQUEST: empty snapshot stream"))??;
        let raft = self.node.raft()?;
        raft.check_target(first.target).map_err(raft_err)?;
        let (group, meta) = (first.group, first.meta);
        // The pieces go to the receiver as they come (two queued at most: the
        // stream is not read faster than the body is staged).
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let feed = async move {
            if !first.data.is_empty() && tx.send(first.data).await.is_err() {
                return Ok(());
            }
            while let Some(chunk) = stream.next().await {
                if tx.send(chunk?.data).await.is_err() {
                    // The receiver refused the body; its error is the answer.
                    break;
                }
            }
            Ok::<_, Status>(())
        };
        let (fed, installed) = tokio::join!(feed, raft.handle_snapshot(group, &meta, rx));
        fed?;
        let payload = installed.map_err(raft_err)?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }

    async fn forward_stream(&self, req: Request<Streaming<ForwardBatch>>) -> Result<tonic::Response<tonic::codegen::BoxStream<ForwardResults>>, Status> {
        require_node(&req)?;
        let raft = self.node.raft()?.clone();
        let mut calls = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(courier_raft::forward::MAX_PENDING);
        // At most MAX_PENDING calls of a stream run at once; past that the
        // stream is not read (HTTP/2 flow control holds the sender back).
        let running = std::sync::Arc::new(tokio::sync::Semaphore::new(courier_raft::forward::MAX_PENDING));
        tokio::spawn(async move {
            while let Some(Ok(batch)) = calls.next().await {
                if batch.calls.len() > courier_raft::forward::MAX_BATCH {
                    tracing::warn!(calls = batch.calls.len(), "refused: a forwarded batch over the limit");
                    break;
                }
                for call in batch.calls {
                    let Ok(permit) = running.clone().acquire_owned().await else { return };
                    let (raft, tx) = (raft.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        let result = match call.request {
                            None => Err(Status::invalid_argument("BAD_REQUEST: a forwarded call without its request")),
                            Some(r) => raft.handle_forward(r.group, &r.payload).await.map_err(raft_err),
                        };
                        let _ = tx.send(ForwardResult { id: call.id, result: Some(to_result(result)) }).await;
                    });
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(courier_raft::forward::results_stream(rx))))
    }

    async fn forward(&self, req: Request<RaftRequest>) -> Result<tonic::Response<RaftReply>, Status> {
        require_node(&req)?;
        let r = req.into_inner();
        let payload = self.node.raft()?.handle_forward(r.group, &r.payload).await.map_err(raft_err)?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<tonic::Response<JoinReply>, Status> {
        require_node(&req)?;
        let incarnation = req
            .metadata()
            .get("courier-incarnation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Status::invalid_argument("BAD_REQUEST: join without courier-incarnation"))?;
        Ok(tonic::Response::new(self.node.handle_join(req.into_inner(), incarnation).await?))
    }

    async fn probe(&self, req: Request<ProbeRequest>) -> Result<tonic::Response<ProbeReply>, Status> {
        require_node(&req)?;
        Ok(tonic::Response::new(self.node.probe_local()))
    }

    async fn notify(&self, req: Request<NotifyRequest>) -> Result<tonic::Response<NotifyReply>, Status> {
        require_node(&req)?;
        for payload in &req.into_inner().payloads {
            self.pushes.receive(payload).map_err(|e| Status::from(Error::BadRequest(format!("notice: {e}"))))?;
        }
        Ok(tonic::Response::new(NotifyReply {}))
    }

    async fn put_chunk(&self, req: Request<PutChunkRequest>) -> Result<tonic::Response<PutChunkReply>, Status> {
        require_node(&req)?;
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target).map_err(raft_err)?;
        let hash = chunk_hash(&r.hash)?;
        if crate::media::sha256(&r.bytes) != hash {
            return Err(Error::BadRequest("put_chunk: the bytes do not match the hash".into()).into());
        }
        crate::media::store_local(&self.node, hash, std::sync::Arc::new(r.bytes)).await?;
        Ok(tonic::Response::new(PutChunkReply {}))
    }

    async fn get_chunk(&self, req: Request<GetChunkRequest>) -> Result<tonic::Response<GetChunkReply>, Status> {
        require_node(&req)?;
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target).map_err(raft_err)?;
        let hash = chunk_hash(&r.hash)?;
        let store = self.node.store().clone();
        let bytes = tokio::task::spawn_blocking(move || store.get_chunk(&hash)).await.map_err(|e| Status::internal(e.to_string()))?.map_err(Error::from)?;
        Ok(tonic::Response::new(GetChunkReply { found: bytes.is_some(), bytes: bytes.unwrap_or_default() }))
    }

    async fn has_chunks(&self, req: Request<HasChunksRequest>) -> Result<tonic::Response<HasChunksReply>, Status> {
        require_node(&req)?;
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target).map_err(raft_err)?;
        if r.hashes.len() > 10_000 {
            return Err(Error::BadRequest("has_chunks: at most 10000 hashes".into()).into());
        }
        let hashes = r.hashes.iter().map(|h| chunk_hash(h)).collect::<Result<Vec<_>, _>>()?;
        let store = self.node.store().clone();
        let has = tokio::task::spawn_blocking(move || store.has_chunks(&hashes))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Error::from)?;
        Ok(tonic::Response::new(HasChunksReply { has }))
    }

    async fn presence(&self, req: Request<PresenceRequest>) -> Result<tonic::Response<PresenceReply>, Status> {
        require_node(&req)?;
        let users = req.into_inner().users;
        if users.len() > 1000 {
            return Err(Error::BadRequest("presence: at most 1000 users".into()).into());
        }
        let (online, seen) = self.pushes.registry().presence(&users);
        let last_seen = seen.into_iter().map(|(user, at_ms)| LastSeen { user, at_ms }).collect();
        Ok(tonic::Response::new(PresenceReply { online, last_seen }))
    }
}

pub struct AdminService {
    pub node: Node,
    pub auth: std::sync::Arc<crate::auth::Auth>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init(&self, req: Request<InitRequest>) -> Result<tonic::Response<InitReply>, Status> {
        require_operator(&req)?;
        let id = self.node.init(req.into_inner().data_groups).await?;
        Ok(tonic::Response::new(InitReply { node_id: id.node_id, cluster_id: id.cluster_id, data_groups: id.data_groups }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<tonic::Response<StatusReply>, Status> {
        require_operator(&req)?;
        Ok(tonic::Response::new(self.node.status().await?))
    }

    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<tonic::Response<RemoveNodeReply>, Status> {
        require_operator(&req)?;
        let state = self.node.remove_node(req.into_inner().node_id).await?;
        Ok(tonic::Response::new(RemoveNodeReply { state }))
    }

    async fn kv_put(&self, req: Request<KvPutRequest>) -> Result<tonic::Response<KvPutReply>, Status> {
        require_operator(&req)?;
        let r = req.into_inner();
        if r.key.is_empty() || r.key.len() > MAX_KEY || r.value.len() > MAX_VALUE {
            return Err(Error::BadRequest(format!("key must be 1..={MAX_KEY} bytes and value at most {MAX_VALUE} bytes")).into());
        }
        let multi = self.node.raft()?;
        let group = multi.group_for_key(r.key.as_bytes());
        self.node.metrics().proposals.inc();
        let index = multi.write(group, cmd::KvPut { key: r.key, value: r.value }).await.map_err(raft_err)?;
        Ok(tonic::Response::new(KvPutReply { group, index }))
    }

    async fn kv_get(&self, req: Request<KvGetRequest>) -> Result<tonic::Response<KvGetReply>, Status> {
        require_operator(&req)?;
        let key = req.into_inner().key;
        let multi = self.node.raft()?;
        let group = multi.group_for_key(key.as_bytes());
        let v = multi.read(group, ask::KvGet { key }).await.map_err(raft_err)?;
        Ok(tonic::Response::new(KvGetReply { found: v.is_some(), value: v.unwrap_or_default() }))
    }

    async fn login_code(&self, req: Request<LoginCodeRequest>) -> Result<tonic::Response<LoginCodeReply>, Status> {
        require_operator(&req)?;
        let code = self.auth.login_code(&req.into_inner().phone).await?;
        Ok(tonic::Response::new(LoginCodeReply {
            found: code.is_some(),
            expires_ms: code.as_ref().map_or(0, |c| c.expires_ms),
            code: code.map(|c| c.code).unwrap_or_default(),
        }))
    }

    async fn revoke_cert(&self, req: Request<RevokeCertRequest>) -> Result<tonic::Response<RevokeCertReply>, Status> {
        require_operator(&req)?;
        let sha256: [u8; 32] = req.into_inner().sha256.try_into().map_err(|_| Error::BadRequest("sha256: 32 bytes, of the certificate's DER".into()))?;
        let revoked = self.node.revoke_cert(sha256).await?;
        Ok(tonic::Response::new(RevokeCertReply { revoked: revoked as u32 }))
    }
}
