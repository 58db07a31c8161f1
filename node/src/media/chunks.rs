//! Chunks on their homes: quorum writes ([`WRITE_QUORUM`] of the
//! [`ring::REPLICAS`] homes, the next nodes of the ranking standing in for
//! homes that are down), verified reads (cache, this node's disk, then the
//! homes and any other node), read repair of a damaged local copy, and the
//! cache of chunks read lately.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use courier_proto::peer::{GetChunkRequest, PutChunkRequest};

use super::logic::Hash;
use super::{Media, chunk_clock, ring, sha256};
use crate::cluster::Node;
use crate::error::{Error, Result};

/// Chunks kept in memory for downloads.
const CACHE_BYTES: usize = 256 << 20;
/// Copies that must be on disk before a chunk counts as stored (G1).
const WRITE_QUORUM: usize = 2;
const CHUNK_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Chunks read or written lately, the least recently used dropped past
/// its byte bound.
pub(super) struct Cache {
    chunks: HashMap<Hash, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
    /// Bytes it holds at most ([`CACHE_BYTES`]).
    bound: usize,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::with_bound(CACHE_BYTES)
    }
}

impl Cache {
    fn with_bound(bound: usize) -> Cache {
        Cache { chunks: HashMap::new(), bytes: 0, tick: 0, bound }
    }

    pub(super) fn get(&mut self, h: &Hash) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.chunks.get_mut(h).map(|(b, t)| {
            *t = tick;
            b.clone()
        })
    }

    pub(super) fn remove(&mut self, h: &Hash) {
        if let Some((b, _)) = self.chunks.remove(h) {
            self.bytes -= b.len();
        }
    }

    pub(super) fn put(&mut self, h: Hash, b: Arc<Vec<u8>>) {
        self.tick += 1;
        self.bytes += b.len();
        if let Some((old, _)) = self.chunks.insert(h, (b, self.tick)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.bound {
            let Some(oldest) = self.chunks.iter().min_by_key(|(_, (_, t))| *t).map(|(h, _)| *h) else { break };
            self.remove(&oldest);
        }
    }
}

/// Where a chunk's copies go: its homes at once, then the stand-ins in
/// turn while fewer than `need` copies are on disk.
#[derive(Debug, PartialEq, Eq)]
struct WritePlan {
    homes: Vec<u64>,
    stand_ins: Vec<u64>,
    /// Copies a write waits for: [`WRITE_QUORUM`], or every node of a
    /// smaller cluster.
    need: usize,
}

impl WritePlan {
    /// The plan for chunk `hash` over the ring's node ids.
    fn of(hash: &Hash, ids: &[u64]) -> WritePlan {
        let mut homes = ring::rank(hash, ids);
        let need = WRITE_QUORUM.min(homes.len());
        let stand_ins = homes.split_off(homes.len().min(ring::REPLICAS));
        WritePlan { homes, stand_ins, need }
    }
}

/// What a read of one copy (replica) of a chunk found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Replica {
    /// Bytes that match the chunk's hash.
    Good(Vec<u8>),
    /// No copy there.
    Missing,
    /// Bytes that do not match the hash, or a copy that could not be read:
    /// to be replaced with a good copy.
    Damaged,
}

impl Replica {
    /// Judges the copy of chunk `hash` a read found (`None`: no copy).
    pub(super) fn of(hash: &Hash, bytes: Option<Vec<u8>>) -> Replica {
        match bytes {
            Some(b) if sha256(&b) == *hash => Replica::Good(b),
            None => Replica::Missing,
            Some(_) => Replica::Damaged,
        }
    }

    /// Judges what a read of this node's disk returned: a copy that
    /// cannot be read is damaged.
    pub(super) fn read<E>(hash: &Hash, read: std::result::Result<Option<Vec<u8>>, E>) -> Replica {
        read.map_or(Replica::Damaged, |b| Replica::of(hash, b))
    }
}

impl Media {
    /// Puts a chunk on its homes; returns once [`WRITE_QUORUM`] have it on disk.
    pub async fn store_chunk(&self, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
        let nodes = self.nodes().await?;
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let WritePlan { homes, stand_ins, need } = WritePlan::of(&hash, &ids);
        self.cache.lock().expect("cache").put(hash, bytes.clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(ring::REPLICAS);
        for &id in &homes {
            let (tx, this, addr, bytes) = (tx.clone(), self.node.clone(), nodes[&id].clone(), bytes.clone());
            // Spawned: the third copy completes after the caller was answered.
            tokio::spawn(async move {
                let r = put_on(&this, id, &addr, hash, bytes).await;
                if let Err(e) = &r {
                    tracing::warn!(node = id, chunk = %hex::encode(&hash[..8]), "chunk copy failed: {e}");
                }
                let _ = tx.send(r.is_ok()).await;
            });
        }
        drop(tx);
        let mut ok = 0;
        for _ in 0..homes.len() {
            if rx.recv().await == Some(true) {
                ok += 1;
                if ok >= need {
                    return Ok(());
                }
            }
        }
        // Homes are down: the next nodes in the ranking stand in (repair moves them home).
        for &id in &stand_ins {
            if put_on(&self.node, id, &nodes[&id], hash, bytes.clone()).await.is_ok() {
                ok += 1;
                if ok >= need {
                    return Ok(());
                }
            }
        }
        Err(Error::Unavailable(format!("only {ok} of {need} copies of a chunk could be stored; retry")))
    }

    /// A chunk's bytes, verified against its hash: from the cache, this
    /// node's disk, or its homes (then any other node), in that order.
    pub async fn chunk(&self, hash: &Hash) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.cache.lock().expect("cache").get(hash) {
            return Ok(b);
        }
        let store = self.node.store().clone();
        let h = *hash;
        let local = tokio::task::spawn_blocking(move || store.get_chunk(&h)).await.map_err(|e| Error::Io(e.to_string()))?;
        let damaged = match Replica::read(hash, local) {
            Replica::Good(b) => {
                let b = Arc::new(b);
                self.cache.lock().expect("cache").put(*hash, b.clone());
                return Ok(b);
            }
            Replica::Missing => false,
            Replica::Damaged => true,
        };
        let good = self.remote_chunk(hash).await?;
        if damaged {
            // Read repair: the good copy replaces the damaged one.
            self.replace_damaged(hash, good.clone()).await;
        }
        Ok(good)
    }

    /// Replaces this node's damaged copy of a chunk with good bytes.
    pub(super) async fn replace_damaged(&self, hash: &Hash, good: Arc<Vec<u8>>) {
        tracing::error!(chunk = %hex::encode(&hash[..8]), "a stored chunk did not match its hash; replaced it with a good copy");
        match store_local(&self.node, *hash, good).await {
            Ok(()) => {
                self.corrupt_repaired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(chunk = %hex::encode(&hash[..8]), "cannot replace a damaged chunk: {e}"),
        }
    }

    /// A verified copy of a chunk from another node: its homes first.
    pub(super) async fn remote_chunk(&self, hash: &Hash) -> Result<Arc<Vec<u8>>> {
        let nodes = self.nodes().await?;
        let me = self.node.raft()?.id();
        let ids: Vec<u64> = nodes.keys().copied().collect();
        for id in ring::rank(hash, &ids).into_iter().filter(|id| *id != me) {
            let Ok(mut client) = self.node.router().peer(&nodes[&id]) else { continue };
            let req = GetChunkRequest { target: id, hash: hash.to_vec() };
            let Ok(Ok(reply)) = tokio::time::timeout(CHUNK_RPC_TIMEOUT, client.get_chunk(req)).await else { continue };
            let reply = reply.into_inner();
            match Replica::of(hash, reply.found.then_some(reply.bytes)) {
                Replica::Good(b) => {
                    let b = Arc::new(b);
                    self.cache.lock().expect("cache").put(*hash, b.clone());
                    return Ok(b);
                }
                Replica::Damaged => tracing::error!(node = id, chunk = %hex::encode(&hash[..8]), "a node answered a chunk that does not match its hash"),
                Replica::Missing => {}
            }
        }
        Err(Error::Unavailable("no node could provide a chunk of this file right now; retry".into()))
    }
}

/// Stores a chunk on node `id` (this node: its own disk), fsynced.
pub(super) async fn put_on(node: &Node, id: u64, addr: &str, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
    if id == node.raft()?.id() {
        return store_local(node, hash, bytes).await;
    }
    let mut client = node.router().peer(addr)?;
    let req = PutChunkRequest { target: id, hash: hash.to_vec(), bytes: bytes.to_vec() };
    chunk_rpc(id, client.put_chunk(req)).await.map(|_| ())
}

/// A chunk RPC to node `id`, within [`CHUNK_RPC_TIMEOUT`]; a failure is `UNAVAILABLE`.
pub(super) async fn chunk_rpc<T>(id: u64, call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
    match tokio::time::timeout(CHUNK_RPC_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(Error::Unavailable(format!("node {id}: {}", s.message()))),
        Err(_) => Err(Error::Unavailable(format!("node {id}: timed out"))),
    }
}

/// Writes a chunk to this node's disk (a damaged copy is replaced; the
/// same bytes again only get a new time, so the collector leaves them alone
/// for another delay) and waits for the fsync, shared with every other
/// write waiting for it.
pub async fn store_local(node: &Node, hash: Hash, bytes: Arc<Vec<u8>>) -> Result<()> {
    let store = node.store().clone();
    let now_ms = chunk_clock();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || -> Result<()> {
        store.put_chunk(&hash, &bytes, now_ms)?;
        store.sync_wal(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::Io(e.to_string()))??;
    rx.await.map_err(|_| Error::Io("the WAL sync was dropped".into()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u8, len: usize) -> (Hash, Arc<Vec<u8>>) {
        let b = vec![i; len];
        (sha256(&b), Arc::new(b))
    }

    #[test]
    fn the_cache_keeps_its_byte_bound_by_dropping_the_least_recently_used() {
        let mut c = Cache::with_bound(300);
        let (a, b, d) = (chunk(1, 100), chunk(2, 100), chunk(3, 100));
        c.put(a.0, a.1.clone());
        c.put(b.0, b.1.clone());
        c.put(d.0, d.1.clone());
        assert_eq!(c.bytes, 300, "up to the bound exactly");
        assert_eq!(c.get(&a.0), Some(a.1.clone()), "a read makes `a` the most recent");
        let e = chunk(4, 150);
        c.put(e.0, e.1.clone());
        assert_eq!((c.get(&b.0), c.get(&d.0)), (None, None), "the two least recently used went, oldest first, until it fit");
        assert_eq!((c.get(&a.0), c.get(&e.0)), (Some(a.1.clone()), Some(e.1)));
        assert_eq!(c.bytes, 250);
        // The same chunk again replaces itself (its bytes counted once).
        c.put(a.0, a.1.clone());
        assert_eq!(c.bytes, 250);
        c.remove(&a.0);
        c.remove(&a.0);
        assert_eq!((c.bytes, c.get(&a.0)), (150, None), "a removal counts once");
        // A chunk larger than the bound is not kept (and drops the rest).
        let big = chunk(5, 301);
        c.put(big.0, big.1);
        assert_eq!((c.bytes, c.chunks.len()), (0, 0));
        assert_eq!(Cache::default().bound, CACHE_BYTES);
    }

    #[test]
    fn a_write_goes_to_the_homes_first_and_waits_for_a_quorum() {
        let (h, _) = chunk(7, 10);
        let ids: Vec<u64> = (1..=6).collect();
        let plan = WritePlan::of(&h, &ids);
        assert_eq!(plan.homes, ring::homes(&h, &ids), "the chunk's three homes at once");
        assert_eq!([plan.homes.clone(), plan.stand_ins.clone()].concat(), ring::rank(&h, &ids), "then the rest of its ranking in order");
        assert_eq!((plan.homes.len(), plan.stand_ins.len(), plan.need), (3, 3, 2));
        let small = WritePlan::of(&h, &[4]);
        assert_eq!(small, WritePlan { homes: vec![4], stand_ins: vec![], need: 1 }, "a one-node cluster needs its one copy");
        assert_eq!(WritePlan::of(&h, &[4, 5]).need, 2);
        assert_eq!(WritePlan::of(&h, &[]), WritePlan { homes: vec![], stand_ins: vec![], need: 0 });
    }

    #[test]
    fn a_copy_is_good_only_if_its_bytes_match_the_hash() {
        let (h, b) = chunk(3, 64);
        assert_eq!(Replica::of(&h, Some(b.to_vec())), Replica::Good(b.to_vec()));
        assert_eq!(Replica::of(&h, None), Replica::Missing, "no copy: nothing to repair here");
        let mut flipped = b.to_vec();
        flipped[10] ^= 1;
        assert_eq!(Replica::of(&h, Some(flipped)), Replica::Damaged, "one bit off");
        assert_eq!(Replica::of(&h, Some(Vec::new())), Replica::Damaged, "truncated");
        assert_eq!(Replica::read(&h, Err(Error::Io("bad block".into()))), Replica::Damaged, "an unreadable copy on disk");
        assert_eq!(Replica::read::<Error>(&h, Ok(None)), Replica::Missing);
        assert_eq!(Replica::read::<Error>(&h, Ok(Some(b.to_vec()))), Replica::Good(b.to_vec()));
    }
}
