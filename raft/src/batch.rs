//! Raft RPCs to one peer travel in batches.
//!
//! Every group replicates on its own, so a node with G groups would make up
//! to G append calls to each peer per round of replication, each its own
//! HTTP/2 request. Instead, each peer has one queue: a task takes everything
//! queued there and sends it as one `RaftBatch` call, with at most
//! [`IN_FLIGHT`] batches outstanding. Nothing waits for a timer: an idle
//! queue sends a lone call at once, and under load the calls that pile up
//! while earlier batches are in flight go out together (the same group commit
//! the WAL sync uses). Each group still has at most one append in flight per
//! follower (openraft's replication stream), so batching never reorders a
//! group's appends behind each other.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use courier_proto::peer::{RaftKind, RaftReply, RaftRequest, RaftResult};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// Batches one peer may have outstanding at once.
pub const IN_FLIGHT: usize = 2;
/// Most calls in one batch.
pub const MAX_CALLS: usize = 256;
/// A batch stops growing past this many payload bytes (a larger single call
/// still goes, alone).
pub const MAX_BYTES: usize = 16 << 20;
/// Calls one peer's queue holds before callers wait (back-pressure).
const QUEUE: usize = 4096;

/// The Raft RPCs one replica sends another (besides snapshots, which stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRpc {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

impl RaftRpc {
    pub fn to_wire(self) -> RaftKind {
        match self {
            RaftRpc::Append => RaftKind::Append,
            RaftRpc::Vote => RaftKind::Vote,
            RaftRpc::PreVote => RaftKind::PreVote,
            RaftRpc::TransferLeader => RaftKind::TransferLeader,
        }
    }

    /// `None` for a kind this version does not know.
    pub fn from_wire(kind: i32) -> Option<RaftRpc> {
        match RaftKind::try_from(kind).ok()? {
            RaftKind::Append => Some(RaftRpc::Append),
            RaftKind::Vote => Some(RaftRpc::Vote),
            RaftKind::PreVote => Some(RaftRpc::PreVote),
            RaftKind::TransferLeader => Some(RaftRpc::TransferLeader),
            RaftKind::Unspecified => None,
        }
    }
}

/// One queued RPC and where its answer goes.
pub struct Call {
    pub kind: RaftRpc,
    pub req: RaftRequest,
    /// The caller gives up at this instant; the batch carrying the call is
    /// abandoned no later than the latest deadline among its calls.
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<RaftReply, Status>>,
}

/// How many batches and calls went out (all peers), for the metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub calls: AtomicU64,
}

/// Starts the queue for one peer. `send` makes one round trip carrying the
/// given calls and answers one result per call, in order (or one error for
/// all). The task ends when every sender is dropped.
pub fn start<S, Fut>(send: S, stats: Arc<BatchStats>) -> mpsc::Sender<Call>
where
    S: Fn(Vec<(RaftRpc, RaftRequest)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Result<RaftReply, Status>>, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(rx, Arc::new(send), stats));
    tx
}

async fn run<S, Fut>(mut rx: mpsc::Receiver<Call>, send: Arc<S>, stats: Arc<BatchStats>)
where
    S: Fn(Vec<(RaftRpc, RaftRequest)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Result<RaftReply, Status>>, Status>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Call> = None;
    loop {
        // Wait for a free slot first: calls arriving meanwhile pile up and
        // leave together.
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let first = match carry.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        let mut calls;
        (calls, carry) = take_queued(first, &mut rx, MAX_CALLS, MAX_BYTES, |c| c.req.payload.len());
        // Calls whose callers already gave up are not sent.
        calls.retain(|c| !c.reply.is_closed());
        if calls.is_empty() {
            continue;
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        let deadline = calls.iter().map(|c| c.deadline).max().expect("a batch has a call");
        let mut wire = Vec::with_capacity(calls.len());
        let mut replies = Vec::with_capacity(calls.len());
        for c in calls {
            wire.push((c.kind, c.req));
            replies.push(c.reply);
        }
        let trip = send(wire);
        tokio::spawn(async move {
            let _slot = slot;
            let results = match tokio::time::timeout_at(deadline, trip).await {
                Ok(Ok(results)) if results.len() == replies.len() => results,
                Ok(Ok(results)) => {
                    vec![Err(Status::internal(format!("a batch of {} calls got {} results", replies.len(), results.len()))); replies.len()]
                }
                Ok(Err(status)) => vec![Err(status); replies.len()],
                Err(_) => vec![Err(Status::deadline_exceeded("raft batch timed out")); replies.len()],
            };
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }
}

/// A result as the wire carries it (code 0: success), back as a call's outcome.
pub fn from_result(r: RaftResult) -> Result<RaftReply, Status> {
    match r.code {
        0 => Ok(RaftReply { payload: r.payload }),
        code => Err(Status::new(tonic::Code::from_i32(code), r.message)),
    }
}

/// A call's outcome as the wire carries it.
pub(crate) fn to_result(outcome: Result<Vec<u8>, Status>) -> RaftResult {
    match outcome {
        Ok(payload) => RaftResult { payload, code: 0, message: String::new() },
        Err(s) => RaftResult { payload: Vec::new(), code: s.code() as i32, message: s.message().to_string() },
    }
}

/// `first` and whatever else is queued in `rx` right now, up to `max` items
/// and `max_bytes` (by `size`; `first` goes regardless). An item that would
/// pass the byte bound comes back apart, to lead the next batch.
pub fn take_queued<T>(first: T, rx: &mut mpsc::Receiver<T>, max: usize, max_bytes: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut items = vec![first];
    while items.len() < max {
        match rx.try_recv() {
            Ok(item) if bytes + size(&item) > max_bytes => return (items, Some(item)),
            Ok(item) => {
                bytes += size(&item);
                items.push(item);
            }
            Err(_) => break,
        }
    }
    (items, None)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn call(tx: &mpsc::Sender<Call>, group: u32, bytes: usize) -> (impl Future<Output = Result<(), mpsc::error::SendError<Call>>> + '_, oneshot::Receiver<Result<RaftReply, Status>>) {
        let (reply, rx) = oneshot::channel();
        let req = RaftRequest { group, payload: vec![group as u8; bytes], target: 1 };
        (tx.send(Call { kind: RaftRpc::Append, req, deadline: Instant::now() + Duration::from_secs(5), reply }), rx)
    }

    /// A peer that answers after `delay`, echoing each call's group, and
    /// records the size of every batch it got.
    fn peer(delay: Duration, seen: Arc<Mutex<Vec<usize>>>) -> impl Fn(Vec<(RaftRpc, RaftRequest)>) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<Result<RaftReply, Status>>, Status>> + Send>> {
        move |calls| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(calls.len());
                tokio::time::sleep(delay).await;
                Ok(calls.into_iter().map(|(_, r)| Ok(RaftReply { payload: r.group.to_be_bytes().to_vec() })).collect())
            })
        }
    }

    #[tokio::test]
    async fn calls_queued_while_batches_are_in_flight_leave_together_and_each_gets_its_own_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(BatchStats::default());
        let tx = start(peer(Duration::from_millis(100), seen.clone()), stats.clone());
        let mut answers = Vec::new();
        for g in 0..40u32 {
            let (send, rx) = call(&tx, g, 10);
            send.await.unwrap();
            answers.push((g, rx));
        }
        for (g, rx) in answers {
            let reply = tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().unwrap().unwrap();
            assert_eq!(reply.payload, g.to_be_bytes().to_vec(), "call for group {g} got another call's answer");
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.iter().sum::<usize>(), 40, "every call is sent exactly once: {seen:?}");
        // The first calls leave alone (slots free); the rest queue behind them.
        assert!(seen.len() <= IN_FLIGHT + 1, "40 calls queued at once took {} round trips: {seen:?}", seen.len());
        assert_eq!(stats.calls.load(Ordering::Relaxed), 40);
        assert_eq!(stats.batches.load(Ordering::Relaxed), seen.len() as u64);
    }

    #[tokio::test]
    async fn an_idle_queue_sends_a_lone_call_at_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tx = start(peer(Duration::ZERO, seen.clone()), Arc::default());
        let t = std::time::Instant::now();
        for g in 0..3u32 {
            let (send, rx) = call(&tx, g, 10);
            send.await.unwrap();
            rx.await.unwrap().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), vec![1, 1, 1]);
        assert!(t.elapsed() < Duration::from_secs(2), "no timer may hold a call back");
    }

    #[tokio::test]
    async fn batches_stop_at_the_byte_bound_and_failures_reach_every_call() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Both slots busy, then four 6 MiB calls: at most two fit in 16 MiB.
        let tx = start(peer(Duration::from_millis(200), seen.clone()), Arc::default());
        let mut answers = Vec::new();
        for g in 0..6u32 {
            let (send, rx) = call(&tx, g, if g < 2 { 1 } else { 6 << 20 });
            send.await.unwrap();
            answers.push(rx);
        }
        for rx in answers {
            tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().unwrap().unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.iter().sum::<usize>(), 6);
        assert!(seen.iter().skip(1).all(|n| *n <= 2), "a batch went past the byte bound: {seen:?}");

        let failing = start(
            |calls: Vec<(RaftRpc, RaftRequest)>| async move {
                let _ = calls;
                Err::<Vec<Result<RaftReply, Status>>, _>(Status::unavailable("peer down"))
            },
            Arc::default(),
        );
        let (send, rx) = call(&failing, 1, 1);
        send.await.unwrap();
        let err = rx.await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn every_kind_crosses_the_wire_and_back() {
        for k in [RaftRpc::Append, RaftRpc::Vote, RaftRpc::PreVote, RaftRpc::TransferLeader] {
            assert_eq!(RaftRpc::from_wire(k.to_wire() as i32), Some(k));
        }
        assert_eq!(RaftRpc::from_wire(0), None);
        assert_eq!(RaftRpc::from_wire(99), None);
    }
}
