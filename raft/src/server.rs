//! The receiving half of Raft's transport: the `Peer` methods that carry
//! Raft calls (`RaftBatch`), snapshots (`Snapshot`) and forwarded requests
//! (`ForwardStream`), answered by this node's [`MultiRaft`]. The sending half
//! is [`crate::network`], [`crate::batch`] and [`crate::forward`].
//!
//! `Peer` is one gRPC service on the peer port, shared with the node's own
//! methods (join, probe, pushes, media chunks). [`PeerMux`] serves both under
//! the one service name: Raft's paths here, everything else to the node's
//! server. Who may call is the node's business: it checks the caller's
//! certificate in front of the whole service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use courier_proto::Code;
use courier_proto::peer::peer_server::{Peer, PeerServer, SERVICE_NAME};
use courier_proto::peer::*;
use tokio_stream::StreamExt;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Request, Response, Status, Streaming};

use crate::batch::{MAX_CALLS, to_result};
use crate::forward::{MAX_BATCH, MAX_PENDING, results_stream};
use crate::multi::{MultiRaft, RaftRpc};
use crate::network::MAX_MESSAGE;

/// The node's Raft once it runs: a node serves its peer port before it has
/// joined a cluster, and answers Raft calls `UNAVAILABLE` until then.
pub type RaftSlot = Arc<dyn Fn() -> Option<MultiRaft> + Send + Sync>;

/// The paths [`PeerMux`] sends to Raft (matched whole: a prefix of one
/// method's path may be another's).
pub const METHODS: [&str; 3] = ["/courier.peer.v1.Peer/RaftBatch", "/courier.peer.v1.Peer/Snapshot", "/courier.peer.v1.Peer/ForwardStream"];

/// Raft's `Peer` methods; the others answer UNIMPLEMENTED (they are the node's).
pub struct RaftPeer {
    raft: RaftSlot,
}

/// Raft's half of the `Peer` service, with the message limits of the sending side.
pub fn service(raft: RaftSlot) -> PeerServer<RaftPeer> {
    PeerServer::new(RaftPeer { raft }).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

impl RaftPeer {
    fn raft(&self) -> Result<MultiRaft, Status> {
        (self.raft)().ok_or_else(|| Code::Unavailable.status("this node is not part of an initialized cluster yet"))
    }
}

#[tonic::async_trait]
impl Peer for RaftPeer {
    async fn raft_batch(&self, req: Request<RaftBatchRequest>) -> Result<Response<RaftBatchReply>, Status> {
        let calls = req.into_inner().calls;
        if calls.len() > MAX_CALLS {
            return Err(Code::BadRequest.status(format!("a Raft batch holds at most {MAX_CALLS} calls")));
        }
        let raft = self.raft()?;
        // Concurrently: the calls are for different groups, and their log
        // appends share one fsync.
        let results = futures::future::join_all(calls.into_iter().map(|call| {
            let raft = &raft;
            async move {
                let Some(rpc) = RaftRpc::from_wire(call.kind) else {
                    return to_result(Err(Code::BadRequest.status(format!("unknown Raft call kind {}", call.kind))));
                };
                let Some(r) = call.request else {
                    return to_result(Err(Code::BadRequest.status("a Raft call without its request")));
                };
                to_result(raft.handle_rpc(rpc, r.target, r.group, &r.payload).await.map_err(Status::from))
            }
        }))
        .await;
        Ok(Response::new(RaftBatchReply { results }))
    }

    async fn snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Code::BadRequest.status("empty snapshot stream"))??;
        let raft = self.raft()?;
        raft.check_target(first.target)?;
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
        Ok(Response::new(RaftReply { payload: installed? }))
    }

    async fn forward_stream(&self, req: Request<Streaming<ForwardBatch>>) -> Result<Response<tonic::codegen::BoxStream<ForwardResults>>, Status> {
        let raft = self.raft()?;
        let mut calls = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_PENDING);
        // At most MAX_PENDING calls of a stream run at once; past that the
        // stream is not read (HTTP/2 flow control holds the sender back).
        let running = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
        tokio::spawn(async move {
            while let Some(Ok(batch)) = calls.next().await {
                if batch.calls.len() > MAX_BATCH {
                    tracing::warn!(calls = batch.calls.len(), "refused: a forwarded batch over the limit");
                    break;
                }
                for call in batch.calls {
                    let Ok(permit) = running.clone().acquire_owned().await else { return };
                    let (raft, tx) = (raft.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        let result = match call.request {
                            None => Err(Code::BadRequest.status("a forwarded call without its request")),
                            Some(r) => raft.handle_forward(r.group, &r.payload).await.map_err(Status::from),
                        };
                        let _ = tx.send(ForwardResult { id: call.id, result: Some(to_result(result)) }).await;
                    });
                }
            }
        });
        Ok(Response::new(Box::pin(results_stream(rx))))
    }
}

/// The `Peer` service of a node: Raft's methods ([`METHODS`]) to `raft`,
/// every other path to `other` (the node's own `PeerServer`).
#[derive(Clone)]
pub struct PeerMux<O> {
    raft: PeerServer<RaftPeer>,
    other: O,
}

impl<O> PeerMux<O> {
    pub fn new(raft: PeerServer<RaftPeer>, other: O) -> PeerMux<O> {
        PeerMux { raft, other }
    }
}

impl<O> Service<http::Request<tonic::body::Body>> for PeerMux<O>
where
    O: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = Infallible> + Clone + Send + 'static,
    O::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call readies the service it goes to.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if METHODS.contains(&req.uri().path()) { Box::pin(ready_call(self.raft.clone(), req)) } else { Box::pin(ready_call(self.other.clone(), req)) }
    }
}

/// Waits until `svc` is ready, then hands it the request.
async fn ready_call<S>(mut svc: S, req: http::Request<tonic::body::Body>) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

impl<O> tonic::server::NamedService for PeerMux<O> {
    const NAME: &'static str = SERVICE_NAME;
}

#[cfg(test)]
mod tests {
    use courier_proto::peer::peer_client::PeerClient;

    use super::*;

    /// A node half that answers `Probe` only.
    struct NodeHalf;

    #[tonic::async_trait]
    impl Peer for NodeHalf {
        async fn probe(&self, _req: Request<ProbeRequest>) -> Result<Response<ProbeReply>, Status> {
            Ok(Response::new(ProbeReply { node_id: 7, ..Default::default() }))
        }
    }

    async fn serve(raft: RaftSlot) -> PeerClient<tonic::transport::Channel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mux = PeerMux::new(service(raft), PeerServer::new(NodeHalf));
        tokio::spawn(tonic::transport::Server::builder().add_service(mux).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        crate::network::Router::new(None).peer(&addr.to_string()).unwrap()
    }

    #[tokio::test]
    async fn raft_paths_reach_raft_and_the_rest_the_node() {
        let mut client = serve(Arc::new(|| None)).await;
        let probe = client.probe(ProbeRequest::default()).await.expect("the node's half answers probes");
        assert_eq!(probe.into_inner().node_id, 7);
        // Raft's half answers (UNAVAILABLE before the node runs Raft), not the
        // node's (which would say UNIMPLEMENTED).
        let call = RaftCall { kind: 0, request: Some(RaftRequest { group: 1, payload: vec![], target: 0 }) };
        let batch = client.raft_batch(RaftBatchRequest { calls: vec![call] }).await.unwrap_err();
        assert_eq!(batch.code(), tonic::Code::Unavailable, "{batch:?}");
        let forward = client.forward_stream(tokio_stream::iter(vec![ForwardBatch::default()])).await.unwrap_err();
        assert_eq!(forward.code(), tonic::Code::Unavailable, "{forward:?}");
        let snapshot = client.snapshot(tokio_stream::iter(vec![SnapshotChunk::default()])).await.unwrap_err();
        assert_eq!(snapshot.code(), tonic::Code::Unavailable, "{snapshot:?}");
        // A method neither half serves.
        let chunk = client.has_chunks(HasChunksRequest::default()).await.unwrap_err();
        assert_eq!(chunk.code(), tonic::Code::Unimplemented, "{chunk:?}");
    }

    #[tokio::test]
    async fn an_oversized_batch_is_refused_before_anything_runs() {
        let mut client = serve(Arc::new(|| None)).await;
        let call = RaftCall { kind: 0, request: Some(RaftRequest { group: 1, payload: vec![], target: 0 }) };
        let err = client.raft_batch(RaftBatchRequest { calls: vec![call; MAX_CALLS + 1] }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("BAD_REQUEST"), "{err:?}");
    }

    #[test]
    fn raft_errors_keep_their_codes_on_the_wire() {
        let s = Status::from(crate::Error::Unavailable { group: 3 });
        assert_eq!((s.code(), s.message().starts_with("UNAVAILABLE: ")), (tonic::Code::Unavailable, true), "{s:?}");
        let s = Status::from(crate::Error::NotLeader { group: 3, leader: Some(2) });
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
        let s = Status::from(crate::Error::Invalid("request for node 4".into()));
        assert_eq!((s.code(), s.message().starts_with("BAD_REQUEST: ")), (tonic::Code::InvalidArgument, true), "{s:?}");
        let s = Status::from(crate::Error::Fatal("stopped".into()));
        assert_eq!((s.code(), s.message().starts_with("INTERNAL: ")), (tonic::Code::Internal, true), "{s:?}");
    }
}
