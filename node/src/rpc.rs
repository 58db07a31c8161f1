//! The gRPC services on the peer port: `Peer` (nodes only) and `Admin`
//! (operator certificates only). They are wiring: each call goes to the
//! part that owns it (the cluster, pushes, media chunks, auth). Raft's own
//! `Peer` methods are served by `courier_raft::server`, beside these
//! (`lib.rs` puts the two halves under one service and [`node_only`] in
//! front of both).

use courier_proto::peer::admin_server::Admin;
use courier_proto::peer::peer_server::Peer;
use courier_proto::peer::*;
use courier_raft::{ask, cmd};
use tonic::{Request, Status};

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

/// The `Peer` service's gate, for both halves (an interceptor: it runs
/// before a request's body is read).
pub fn node_only(req: Request<()>) -> Result<Request<()>, Status> {
    match caller(&req).map(|c| &c.role) {
        Some(Role::Node(_)) => Ok(req),
        // In-process tests serve without TLS: no identity at all.
        None if cfg!(test) => Ok(req),
        other => {
            tracing::warn!(peer = ?caller(&req).map(|c| c.addr), role = ?other, "refused: peer RPC without a node certificate");
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

/// The node's half of the `Peer` service.
pub struct PeerService {
    pub node: Node,
    pub pushes: std::sync::Arc<crate::push::Pushes>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<tonic::Response<JoinReply>, Status> {
        let incarnation = req
            .metadata()
            .get("courier-incarnation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Status::invalid_argument("BAD_REQUEST: join without courier-incarnation"))?;
        Ok(tonic::Response::new(self.node.handle_join(req.into_inner(), incarnation).await?))
    }

    async fn probe(&self, _req: Request<ProbeRequest>) -> Result<tonic::Response<ProbeReply>, Status> {
        Ok(tonic::Response::new(self.node.probe_local()))
    }

    async fn notify(&self, req: Request<NotifyRequest>) -> Result<tonic::Response<NotifyReply>, Status> {
        for payload in &req.into_inner().payloads {
            self.pushes.receive(payload).map_err(|e| Status::from(Error::BadRequest(format!("notice: {e}"))))?;
        }
        Ok(tonic::Response::new(NotifyReply {}))
    }

    async fn put_chunk(&self, req: Request<PutChunkRequest>) -> Result<tonic::Response<PutChunkReply>, Status> {
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target)?;
        let hash = chunk_hash(&r.hash)?;
        if crate::media::sha256(&r.bytes) != hash {
            return Err(Error::BadRequest("put_chunk: the bytes do not match the hash".into()).into());
        }
        crate::media::store_local(&self.node, hash, std::sync::Arc::new(r.bytes)).await?;
        Ok(tonic::Response::new(PutChunkReply {}))
    }

    async fn get_chunk(&self, req: Request<GetChunkRequest>) -> Result<tonic::Response<GetChunkReply>, Status> {
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target)?;
        let hash = chunk_hash(&r.hash)?;
        let store = self.node.store().clone();
        let bytes = tokio::task::spawn_blocking(move || store.get_chunk(&hash)).await.map_err(|e| Status::internal(e.to_string()))?.map_err(Error::from)?;
        Ok(tonic::Response::new(GetChunkReply { found: bytes.is_some(), bytes: bytes.unwrap_or_default() }))
    }

    async fn has_chunks(&self, req: Request<HasChunksRequest>) -> Result<tonic::Response<HasChunksReply>, Status> {
        let r = req.into_inner();
        self.node.raft()?.check_target(r.target)?;
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
        let index = multi.write(group, cmd::KvPut { key: r.key, value: r.value }).await?;
        Ok(tonic::Response::new(KvPutReply { group, index }))
    }

    async fn kv_get(&self, req: Request<KvGetRequest>) -> Result<tonic::Response<KvGetReply>, Status> {
        require_operator(&req)?;
        let key = req.into_inner().key;
        let multi = self.node.raft()?;
        let group = multi.group_for_key(key.as_bytes());
        let v = multi.read(group, ask::KvGet { key }).await?;
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
