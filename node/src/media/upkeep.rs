//! The repair worker, for the life of the node: every [`REPAIR_EVERY`] a
//! scrub of some of this node's chunks (damaged copies replaced), a repair
//! pass over the chunks of the groups it leads (each home asked whether it
//! has them, missing copies put there), and now and then the collector
//! (`collect.rs`). What it saw goes to `cluster status`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_proto::peer::GroupChunks;

use super::chunks::{Replica, chunk_rpc, put_on};
use super::logic::{self, Hash};
use super::{Media, led_groups, ring};
use crate::error::{Error, Result};

/// How often the repair worker looks at the chunks of this node's groups.
pub const REPAIR_EVERY: Duration = Duration::from_secs(2);
/// Bytes per second the repair worker copies at most.
const REPAIR_BYTES_PER_SEC: u64 = 64 << 20;
/// Chunks the scrub re-reads per pass (16 MiB/s at one pass every 2 s).
const SCRUB_PER_PASS: usize = 32;
/// Hashes per `HasChunks` call.
const HAS_BATCH: usize = 5_000;

/// What a chunk's homes answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HomeCheck {
    /// (chunk, home) for each home that said it lacks the chunk.
    pub(super) missing: Vec<(Hash, u64)>,
    /// Chunks a home of which did not answer: not repaired (the home may be
    /// briefly down), not counted as safe either.
    pub(super) unconfirmed: BTreeSet<Hash>,
}

impl HomeCheck {
    /// What `home` answered about `batch`: whether it has each, or nothing
    /// (it could not be asked).
    fn record(&mut self, home: u64, batch: &[Hash], has: Option<Vec<bool>>) {
        match has {
            Some(has) => self.missing.extend(batch.iter().zip(has).filter(|(_, has)| !has).map(|(h, _)| (*h, home))),
            None => self.unconfirmed.extend(batch.iter().copied()),
        }
    }

    /// The chunks some home lacks (under-replicated).
    pub(super) fn lacking(&self) -> BTreeSet<Hash> {
        self.missing.iter().map(|(h, _)| *h).collect()
    }
}

/// Whom to ask about `chunks` among the nodes `ids`: each chunk's homes,
/// as (home, at most [`HAS_BATCH`] chunks) in home order.
fn questions<'a>(ids: &[u64], chunks: impl IntoIterator<Item = &'a Hash>) -> Vec<(u64, Vec<Hash>)> {
    let mut by_home: BTreeMap<u64, Vec<Hash>> = BTreeMap::new();
    for h in chunks {
        for home in ring::homes(h, ids) {
            by_home.entry(home).or_default().push(*h);
        }
    }
    by_home.into_iter().flat_map(|(home, hashes)| hashes.chunks(HAS_BATCH).map(|b| (home, b.to_vec())).collect::<Vec<_>>()).collect()
}

/// Each group's chunks, and how many of them are under-replicated and
/// unconfirmed.
fn group_health(per_group: &BTreeMap<u32, BTreeSet<Hash>>, under: &BTreeSet<Hash>, unconfirmed: &BTreeSet<Hash>) -> Vec<GroupChunks> {
    per_group
        .iter()
        .map(|(g, hs)| GroupChunks {
            group: *g,
            chunks: hs.len() as u64,
            under_replicated: hs.intersection(under).count() as u64,
            unconfirmed: hs.intersection(unconfirmed).count() as u64,
        })
        .collect()
}

/// How long a repair that copied `copied_bytes` in `elapsed` waits before
/// the next copy: never ahead of [`REPAIR_BYTES_PER_SEC`].
fn repair_wait(copied_bytes: u64, elapsed: Duration) -> Option<Duration> {
    let due = Duration::from_secs_f64(copied_bytes as f64 / REPAIR_BYTES_PER_SEC as f64);
    due.checked_sub(elapsed)
}

/// The next `n` of this node's chunks (`all`, sorted) for the scrub: those
/// after the last one checked (`after`), round and round.
fn scrub_batch(all: &[Hash], after: Option<Hash>, n: usize) -> Vec<Hash> {
    let start = after.map_or(0, |a| all.partition_point(|h| *h <= a));
    all.iter().skip(start).chain(all.iter().take(start)).take(n).copied().collect()
}

impl Media {
    /// The repair worker, for the life of the node: every [`REPAIR_EVERY`],
    /// one [`Media::repair_pass`]; what it saw goes to `cluster status`.
    pub async fn run_repair(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let gc_every = Duration::from_secs(self.node.config().media.gc_every_secs);
        let mut last_gc = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPAIR_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.node.raft().is_err() {
                continue;
            }
            // The scrub lists this node's chunks; the count goes into the health.
            let stored = self.scrub_pass().await.inspect_err(|e| tracing::warn!("chunk scrub pass failed: {e}")).ok();
            match self.repair_pass().await {
                Ok(mut h) => {
                    h.stored = stored.unwrap_or(h.stored);
                    self.node.set_chunk_health(h);
                }
                Err(e) => tracing::warn!("chunk repair pass failed: {e}"),
            }
            // The collector runs in the same loop: never beside a repair on this node.
            if last_gc.elapsed() >= gc_every {
                last_gc = Instant::now();
                if let Err(e) = self.gc_pass().await {
                    tracing::info!("chunk collection skipped this time: {e}");
                }
            }
        }
    }

    /// Asks each of `chunks`' homes among `nodes` whether it holds the
    /// chunk, in batches per home.
    pub(super) async fn check_homes<'a>(&self, nodes: &BTreeMap<u64, String>, chunks: impl IntoIterator<Item = &'a Hash>) -> HomeCheck {
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let mut check = HomeCheck::default();
        for (home, batch) in questions(&ids, chunks) {
            let has = self.has_chunks(home, &nodes[&home], &batch).await.inspect_err(|e| tracing::debug!(node = home, "cannot ask which chunks it has: {e}")).ok();
            check.record(home, &batch, has);
        }
        check
    }

    /// Makes sure every chunk used by the groups this node leads has a copy
    /// on each of its homes (the active nodes' ranking): asks each home
    /// which chunks it has, and copies the missing ones from any copy
    /// (verified), at most [`REPAIR_BYTES_PER_SEC`]. A node removed from the
    /// cluster stops being a home, so its chunks get new homes at once.
    pub async fn repair_pass(&self) -> Result<courier_proto::peer::ChunkHealth> {
        let ring = self.ring().await?;
        let nodes = ring.nodes;
        let led = led_groups(self.node.raft()?);
        let store = self.node.store().clone();
        let per_group = tokio::task::spawn_blocking(move || -> Result<BTreeMap<u32, BTreeSet<Hash>>> {
            let mut per_group: BTreeMap<u32, BTreeSet<Hash>> = BTreeMap::new();
            for g in led {
                let used = per_group.entry(g).or_default();
                for rows in [logic::RefRows::Uploads, logic::RefRows::Files] {
                    for (_, v) in store.scan_sm(g, rows.prefix())? {
                        used.extend(rows.chunks(&v)?);
                    }
                }
            }
            Ok(per_group)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let used: BTreeSet<Hash> = per_group.values().flatten().copied().collect();

        let check = self.check_homes(&nodes, &used).await;
        let under = check.lacking();
        let started = Instant::now();
        let mut copied_bytes = 0u64;
        for (h, home) in &check.missing {
            let Ok(bytes) = self.chunk(h).await else {
                tracing::warn!(chunk = %hex::encode(&h[..8]), "no readable copy of a chunk to repair from");
                continue;
            };
            copied_bytes += bytes.len() as u64;
            if put_on(&self.node, *home, &nodes[home], *h, bytes).await.is_ok() {
                self.repaired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(wait) = repair_wait(copied_bytes, started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if !check.missing.is_empty() {
            tracing::info!(chunks = under.len(), copies = check.missing.len(), "repaired under-replicated chunks");
        }
        let passes = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Ok(courier_proto::peer::ChunkHealth {
            groups: group_health(&per_group, &under, &check.unconfirmed),
            chunks: used.len() as u64,
            under_replicated: under.len() as u64,
            repaired: self.repaired.load(std::sync::atomic::Ordering::Relaxed),
            stored: 0, // filled in from the scrub's listing
            passes,
            scrubbed: self.scrubbed.load(std::sync::atomic::Ordering::Relaxed),
            corrupt_repaired: self.corrupt_repaired.load(std::sync::atomic::Ordering::Relaxed),
            collected: self.collected.load(std::sync::atomic::Ordering::Relaxed),
            moved_off: self.moved_off.load(std::sync::atomic::Ordering::Relaxed),
            uploads_expired: self.uploads_expired.load(std::sync::atomic::Ordering::Relaxed),
            decommissioned: ring.removing,
        })
    }

    /// Re-reads the next [`SCRUB_PER_PASS`] chunks on this node's disk (in
    /// hash order, round and round) and replaces any whose bytes no longer
    /// match their hash with a good copy from another node. Returns how
    /// many chunks this node stores.
    pub async fn scrub_pass(&self) -> Result<u64> {
        let store = self.node.store().clone();
        let after = *self.scrub_cursor.lock().expect("scrub cursor");
        let (stored, batch) = tokio::task::spawn_blocking(move || -> Result<(u64, Vec<(Hash, bool)>)> {
            let all = store.list_chunks()?;
            let mut out = Vec::new();
            for h in scrub_batch(&all, after, SCRUB_PER_PASS) {
                let good = matches!(Replica::read(&h, store.get_chunk(&h)), Replica::Good(_));
                out.push((h, good));
            }
            Ok((all.len() as u64, out))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        for (h, good) in &batch {
            self.scrubbed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !good {
                self.cache.lock().expect("cache").remove(h);
                match self.remote_chunk(h).await {
                    Ok(b) => self.replace_damaged(h, b).await,
                    Err(e) => tracing::error!(chunk = %hex::encode(&h[..8]), "a damaged chunk has no good copy to repair it from now: {e}"),
                }
            }
        }
        if let Some((h, _)) = batch.last() {
            *self.scrub_cursor.lock().expect("scrub cursor") = Some(*h);
        }
        Ok(stored)
    }

    async fn has_chunks(&self, id: u64, addr: &str, hashes: &[Hash]) -> Result<Vec<bool>> {
        if id == self.node.raft()?.id() {
            let store = self.node.store().clone();
            let hashes = hashes.to_vec();
            return Ok(tokio::task::spawn_blocking(move || store.has_chunks(&hashes)).await.map_err(|e| Error::Io(e.to_string()))??);
        }
        let mut client = self.node.router().peer(addr)?;
        let req = courier_proto::peer::HasChunksRequest { target: id, hashes: hashes.iter().map(|h| h.to_vec()).collect() };
        let has = chunk_rpc(id, client.has_chunks(req)).await?.has;
        if has.len() != hashes.len() {
            return Err(Error::Io(format!("node {id} answered has_chunks for the wrong number of chunks")));
        }
        Ok(has)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sha256;

    fn hashes(n: u32) -> Vec<Hash> {
        (0..n).map(|i| sha256(&i.to_be_bytes())).collect()
    }

    #[test]
    fn each_chunk_is_asked_of_each_of_its_homes_in_bounded_batches() {
        let ids = [1, 2, 3, 4, 5];
        let chunks = hashes(40);
        let asked = questions(&ids, &chunks);
        for h in &chunks {
            let askers: Vec<u64> = asked.iter().filter(|(_, b)| b.contains(h)).map(|(home, _)| *home).collect();
            let mut homes = ring::homes(h, &ids);
            homes.sort();
            assert_eq!(askers, homes, "asked of its homes only, once each");
        }
        assert!(asked.windows(2).all(|w| w[0].0 < w[1].0), "one batch per home here, in home order");
        // Past HAS_BATCH, a home's chunks go in several calls.
        let many = hashes(HAS_BATCH as u32 + 1);
        let asked = questions(&[1, 2, 3], &many);
        assert_eq!(asked.iter().map(|(home, b)| (*home, b.len())).collect::<Vec<_>>(), [(1, HAS_BATCH), (1, 1), (2, HAS_BATCH), (2, 1), (3, HAS_BATCH), (3, 1)]);
    }

    #[test]
    fn a_home_that_lacks_a_chunk_gets_a_copy_and_one_that_does_not_answer_leaves_it_unconfirmed() {
        let [a, b, c, d] = hashes(4).try_into().unwrap();
        let mut check = HomeCheck::default();
        check.record(1, &[a, b], Some(vec![true, false]));
        check.record(2, &[a, c], Some(vec![false, false]));
        check.record(3, &[b, d], None);
        assert_eq!(check.missing, vec![(b, 1), (a, 2), (c, 2)], "each copy to make, and where");
        assert_eq!(check.lacking(), [a, b, c].into());
        assert_eq!(check.unconfirmed, [b, d].into(), "a home that did not answer is not repaired, nor counted safe");
        let per_group: BTreeMap<u32, BTreeSet<Hash>> = [(1, [a, b].into()), (2, [c, d].into()), (3, BTreeSet::new())].into();
        let health: Vec<(u32, u64, u64, u64)> = group_health(&per_group, &check.lacking(), &check.unconfirmed).iter().map(|g| (g.group, g.chunks, g.under_replicated, g.unconfirmed)).collect();
        assert_eq!(health, [(1, 2, 2, 1), (2, 2, 1, 1), (3, 0, 0, 0)]);
    }

    #[test]
    fn repair_copies_no_faster_than_its_rate() {
        let rate = REPAIR_BYTES_PER_SEC;
        assert_eq!(repair_wait(rate, Duration::from_millis(250)), Some(Duration::from_millis(750)), "a second's worth in a quarter second");
        assert_eq!(repair_wait(rate / 2, Duration::from_secs(1)), None, "behind its rate: no wait");
        assert_eq!(repair_wait(0, Duration::ZERO), Some(Duration::ZERO));
    }

    #[test]
    fn the_scrub_goes_round_the_chunks_from_where_it_stopped() {
        let mut all = hashes(5);
        all.sort();
        assert_eq!(scrub_batch(&all, None, 2), all[..2], "from the first");
        assert_eq!(scrub_batch(&all, Some(all[1]), 2), all[2..4], "after the last one checked");
        assert_eq!(scrub_batch(&all, Some(all[3]), 3), [all[4], all[0], all[1]], "round again");
        assert_eq!(scrub_batch(&all, Some(all[4]), 9), all, "each once per pass");
        let rest: Vec<Hash> = all.iter().copied().filter(|h| *h != all[2]).collect();
        assert_eq!(scrub_batch(&rest, Some(all[2]), 2), all[3..5], "the last one checked need not be there any more");
    }
}
