//! Requests forwarded to a group's leader on another node travel on one
//! long-lived gRPC stream per peer (`ForwardStream`), not one HTTP/2 request
//! each.
//!
//! A forwarded write waits for its commit (milliseconds under load), so a
//! batch answered as a whole would hold every call back until the slowest
//! one. The stream avoids that: each side sends, in one message, everything
//! that queued up since its last message (calls one way, results the other),
//! and every result goes back as soon as it is ready. A call carries an id
//! unique on its stream; results come back in any order.

use std::collections::HashMap;

use courier_proto::peer::peer_client::PeerClient;
use courier_proto::peer::{ForwardBatch, ForwardCall, ForwardResult, RaftRequest};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::Channel;

/// Calls one stream may have unanswered; past it, callers queue.
pub const MAX_PENDING: usize = 4096;
/// Most calls (or results) in one stream message.
pub const MAX_BATCH: usize = 1024;
/// A message stops growing past this many payload bytes.
const MAX_BYTES: usize = 8 << 20;

type Reply = oneshot::Sender<Result<Vec<u8>, Status>>;

struct Call {
    req: RaftRequest,
    reply: Reply,
}

/// The forwarding stream to one peer, opened on first use and again after
/// it broke.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Call>,
}

impl Forwarder {
    pub fn start(client: PeerClient<Channel>) -> Forwarder {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        tokio::spawn(run(client, rx));
        Forwarder { tx }
    }

    /// Sends one request and waits for its result (the caller bounds the wait).
    pub async fn call(&self, req: RaftRequest) -> Result<Vec<u8>, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Call { req, reply }).await.map_err(|_| Status::unavailable("the forwarding queue stopped"))?;
        answer.await.map_err(|_| Status::unavailable("the forwarding stream broke"))?
    }
}

/// One stream at a time: a broken one is opened again by the next call.
async fn run(client: PeerClient<Channel>, mut rx: mpsc::Receiver<Call>) {
    while let Some(first) = rx.recv().await {
        stream(client.clone(), first, &mut rx).await;
    }
}

/// Runs one stream, starting with `first`, until it breaks or every caller
/// is gone.
async fn stream(mut client: PeerClient<Channel>, first: Call, rx: &mut mpsc::Receiver<Call>) {
    let (out, out_rx) = mpsc::unbounded_channel::<ForwardBatch>();
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 0u64;
    // Queues one message; false once the stream's sending side is gone.
    let mut send = |calls: Vec<Call>, pending: &mut HashMap<u64, Reply>| -> bool {
        let mut batch = ForwardBatch { calls: Vec::with_capacity(calls.len()) };
        for c in calls {
            next_id += 1;
            pending.insert(next_id, c.reply);
            batch.calls.push(ForwardCall { id: next_id, request: Some(c.req) });
        }
        out.send(batch).is_ok()
    };
    send(vec![first], &mut pending);
    let mut results = match client.forward_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            fail_all(&mut pending, &status);
            return;
        }
    };
    let status = loop {
        tokio::select! {
            call = rx.recv(), if pending.len() < MAX_PENDING => {
                let Some(mut call) = call else {
                    // Every caller is gone (the node stops): finish what is
                    // pending, for a few seconds at most.
                    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                    while !pending.is_empty() {
                        match tokio::time::timeout_at(until, results.message()).await {
                            Ok(Ok(Some(msg))) => answer(&mut pending, msg.results),
                            _ => break,
                        }
                    }
                    break Status::unavailable("the node is stopping");
                };
                // Everything queued, in messages of at most MAX_BYTES.
                loop {
                    let room = MAX_BATCH.min(MAX_PENDING.saturating_sub(pending.len()).max(1));
                    let (mut calls, rest) = crate::batch::take_queued(call, rx, room, MAX_BYTES, |c| c.req.payload.len());
                    calls.retain(|c| !c.reply.is_closed());
                    if !calls.is_empty() && !send(calls, &mut pending) {
                        break;
                    }
                    match rest {
                        Some(c) => call = c,
                        None => break,
                    }
                }
            }
            msg = results.message() => match msg {
                Ok(Some(msg)) => answer(&mut pending, msg.results),
                Ok(None) => break Status::unavailable("the peer closed the forwarding stream"),
                Err(status) => break status,
            },
        }
        if pending.len() >= MAX_PENDING {
            // Callers that gave up no longer hold a place.
            pending.retain(|_, r| !r.is_closed());
        }
    };
    fail_all(&mut pending, &status);
}

fn answer(pending: &mut HashMap<u64, Reply>, results: Vec<ForwardResult>) {
    for r in results {
        if let Some(reply) = pending.remove(&r.id) {
            let _ = reply.send(match r.result {
                Some(result) => crate::batch::from_result(result).map(|r| r.payload),
                None => Err(Status::internal("a forwarded call's result came without its content")),
            });
        }
    }
}

fn fail_all(pending: &mut HashMap<u64, Reply>, status: &Status) {
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(status.clone()));
    }
}

/// The receiving side's result stream: everything finished since the last
/// message goes in the next one, in messages of at most [`MAX_BYTES`] of
/// results (a gRPC message past the peer's limit would break the stream
/// and fail every call on it; one result alone always goes).
pub(crate) fn results_stream(rx: mpsc::Receiver<ForwardResult>) -> impl tokio_stream::Stream<Item = Result<courier_proto::peer::ForwardResults, Status>> + Send + 'static {
    futures::stream::unfold((rx, None), |(mut rx, held): (mpsc::Receiver<ForwardResult>, Option<ForwardResult>)| async move {
        let first = match held {
            Some(r) => r,
            None => rx.recv().await?,
        };
        let (results, rest) = crate::batch::take_queued(first, &mut rx, MAX_BATCH, MAX_BYTES, result_size);
        Some((Ok(courier_proto::peer::ForwardResults { results }), (rx, rest)))
    })
}

fn result_size(r: &ForwardResult) -> usize {
    r.result.as_ref().map_or(0, |x| x.payload.len() + x.message.len())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use courier_proto::peer::peer_server::{Peer, PeerServer};
    use courier_proto::peer::ForwardResults;
    use tokio_stream::StreamExt;
    use tonic::{Request, Response, Streaming};

    use super::*;

    /// A peer that answers each forwarded call with its group number, later
    /// calls sooner (so results return out of order), and counts what it got.
    #[derive(Clone, Default)]
    struct Fake {
        streams: Arc<Mutex<usize>>,
        messages: Arc<Mutex<usize>>,
    }

    fn reply_for(req: &RaftRequest) -> Vec<u8> {
        req.group.to_be_bytes().to_vec()
    }

    #[tonic::async_trait]
    impl Peer for Fake {
        async fn forward_stream(&self, req: Request<Streaming<ForwardBatch>>) -> Result<Response<tonic::codegen::BoxStream<ForwardResults>>, Status> {
            *self.streams.lock().unwrap() += 1;
            let (tx, rx) = mpsc::channel(MAX_PENDING);
            let mut incoming = req.into_inner();
            let messages = self.messages.clone();
            tokio::spawn(async move {
                while let Some(Ok(batch)) = incoming.next().await {
                    *messages.lock().unwrap() += 1;
                    for call in batch.calls {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let req = call.request.unwrap();
                            tokio::time::sleep(Duration::from_millis(200u64.saturating_sub(req.group as u64 * 4))).await;
                            let result = courier_proto::peer::RaftResult { payload: reply_for(&req), code: 0, message: String::new() };
                            let _ = tx.send(ForwardResult { id: call.id, result: Some(result) }).await;
                        });
                    }
                }
            });
            Ok(Response::new(Box::pin(results_stream(rx))))
        }
    }

    async fn serve(fake: Fake) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Forwarder::start(crate::network::Router::new(None).peer(&addr.to_string()).unwrap())
    }

    async fn call_all(f: &Forwarder, n: u32) {
        let calls = (0..n).map(|g| {
            let f = f.clone();
            async move { (g, tokio::time::timeout(Duration::from_secs(10), f.call(RaftRequest { group: g, payload: vec![1; 100], target: 0 })).await) }
        });
        for (g, result) in futures::future::join_all(calls).await {
            assert_eq!(result.expect("answered in time").expect("succeeded"), g.to_be_bytes().to_vec(), "call {g} got another call's result");
        }
    }

    #[tokio::test]
    async fn many_calls_share_one_stream_and_each_gets_its_own_result() {
        let fake = Fake::default();
        let f = serve(fake.clone()).await;
        call_all(&f, 40).await;
        call_all(&f, 40).await;
        assert_eq!(*fake.streams.lock().unwrap(), 1, "one stream for every call");
        let messages = *fake.messages.lock().unwrap();
        assert!(messages < 80, "calls queued together travel together: {messages} messages for 80 calls");
    }

    #[tokio::test]
    async fn results_go_in_messages_a_peer_can_take() {
        // 40 results of 3 MiB ready at once: one message would be 120 MiB,
        // past the 64 MiB a peer decodes.
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        for id in 0..40u64 {
            let result = courier_proto::peer::RaftResult { payload: vec![7; 3 << 20], code: 0, message: String::new() };
            tx.send(ForwardResult { id, result: Some(result) }).await.unwrap();
        }
        drop(tx);
        let messages: Vec<_> = results_stream(rx).collect().await;
        let mut ids = Vec::new();
        for m in &messages {
            let m = m.as_ref().unwrap();
            let bytes: usize = m.results.iter().map(result_size).sum();
            assert!(bytes <= MAX_BYTES, "a message of {bytes} bytes");
            ids.extend(m.results.iter().map(|r| r.id));
        }
        assert_eq!(ids, (0..40).collect::<Vec<_>>(), "every result once, in order");
        assert!(messages.len() >= 15, "{} messages", messages.len());
    }
}
