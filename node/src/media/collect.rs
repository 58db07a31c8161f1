//! The collector, run now and then by the repair worker: forgets uploads
//! left unfinished, deletes chunks nothing uses any more, and deletes the
//! copies this node holds off their homes once every home has one.

use std::collections::HashSet;

use super::logic::{self, Hash, ask, cmd};
use super::upkeep::HomeCheck;
use super::{Media, chunk_clock, led_groups, ring};
use crate::error::{Error, Result};

/// Of this node's chunks (`local`, with when each was last written), those
/// the collector may delete: used by no file or upload (`used`, every
/// group's) and last written before `cut`.
fn collectable(local: &[(Hash, u64)], used: &HashSet<Hash>, cut: u64) -> Vec<Hash> {
    local.iter().filter(|(h, t)| *t < cut && !used.contains(h)).map(|(h, _)| *h).collect()
}

/// Of this node's chunks, those in use whose homes among `ids` do not
/// include this node (`me`): copies a stand-in or a former home holds.
fn off_home(local: &[(Hash, u64)], used: &HashSet<Hash>, ids: &[u64], me: u64) -> Vec<Hash> {
    local.iter().map(|(h, _)| *h).filter(|h| used.contains(h) && !ring::homes(h, ids).contains(&me)).collect()
}

/// Of the copies `off` their homes, those that may go: every home said it
/// has the chunk (a home that lacks it, or does not answer, keeps the copy here).
fn moved(off: Vec<Hash>, check: &HomeCheck) -> Vec<Hash> {
    let lacking = check.lacking();
    off.into_iter().filter(|h| !lacking.contains(h) && !check.unconfirmed.contains(h)).collect()
}

/// An upload row (`key`, `u`) to forget: started before `before_ms`. Its id.
fn expired(key: &[u8], u: &logic::Upload, before_ms: u64) -> Option<u64> {
    if u.started_ms < before_ms { crate::state::id_after(key, logic::RefRows::Uploads.prefix().len()) } else { None }
}

impl Media {
    /// The collector: forgets uploads left unfinished past
    /// `media.upload_ttl_secs` (in the groups this node leads), deletes
    /// chunks no file or upload of any group uses once they were last
    /// written `media.gc_after_secs` ago, and deletes copies this node
    /// holds off their homes once every home has one.
    pub async fn gc_pass(&self) -> Result<()> {
        let cfg = self.node.config().media.clone();
        // Uploads carry the domain clock's time (the proposer's); chunk
        // write times are the machine's own clock, which tests do not shift.
        let now = self.clock.now_ms();
        self.expire_uploads(now.saturating_sub(cfg.upload_ttl_secs * 1000)).await?;
        let now = chunk_clock();
        let store = self.node.store().clone();
        let local = tokio::task::spawn_blocking(move || store.list_chunk_times()).await.map_err(|e| Error::Io(e.to_string()))??;
        if local.is_empty() {
            return Ok(());
        }
        // Every group's references, or nothing is collected this time.
        let used = self.referenced().await?;
        let cut = now.saturating_sub(cfg.gc_after_secs * 1000);
        let n = self.delete_local(collectable(&local, &used, cut), cut).await?;
        self.collected.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::info!(chunks = n, "collected chunks no file uses");
        }

        // Deleting copies needs the current membership, not a lagging replica's.
        let ring = self.ring_of(self.node.cluster_state().await?);
        if !ring.settled {
            return Ok(());
        }
        let me = self.node.raft()?.id();
        let ids: Vec<u64> = ring.nodes.keys().copied().collect();
        let off = off_home(&local, &used, &ids, me);
        let check = self.check_homes(&ring.nodes, &off).await;
        let n = self.delete_local(moved(off, &check), u64::MAX).await?;
        self.moved_off.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            tracing::info!(chunks = n, "deleted copies whose homes all have them");
        }
        Ok(())
    }

    /// Deletes chunks here last written before `cut`; returns how many.
    async fn delete_local(&self, hashes: Vec<Hash>, cut: u64) -> Result<u64> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let store = self.node.store().clone();
        let deleted = tokio::task::spawn_blocking(move || -> Result<Vec<Hash>> {
            let mut deleted = Vec::new();
            for h in hashes {
                if store.delete_chunk_if_older(&h, cut)? {
                    deleted.push(h);
                }
            }
            Ok(deleted)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let mut cache = self.cache.lock().expect("cache");
        for h in &deleted {
            cache.remove(h);
        }
        Ok(deleted.len() as u64)
    }

    /// Every chunk the files and uploads of every group use (uploads
    /// first: see [`logic::RefRows`]). Fails if any group cannot be read.
    async fn referenced(&self) -> Result<HashSet<Hash>> {
        let mut used = HashSet::new();
        for g in 1..=self.node.raft()?.data_groups() {
            for rows in [logic::RefRows::Uploads, logic::RefRows::Files] {
                let mut after = Vec::new();
                loop {
                    let logic::RefPage { hashes, next } = self.read(g, ask::ChunkRefs { rows, after: after.clone(), limit: 1_000 }).await?;
                    used.extend(hashes);
                    match next {
                        Some(k) => after = k,
                        None => break,
                    }
                }
            }
        }
        Ok(used)
    }

    /// Forgets the uploads of the groups this node leads that started before `before_ms`.
    async fn expire_uploads(&self, before_ms: u64) -> Result<()> {
        let led = led_groups(self.node.raft()?);
        let store = self.node.store().clone();
        let stale = tokio::task::spawn_blocking(move || -> Result<Vec<(u32, u64, u64)>> {
            let mut out = Vec::new();
            for g in led {
                for (k, v) in store.scan_sm(g, logic::RefRows::Uploads.prefix())? {
                    let u = courier_raft::codec::decode::<logic::Upload>(&v)?;
                    if let Some(id) = expired(&k, &u, before_ms) {
                        out.push((g, id, u.owner));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        for (g, upload, owner) in stale {
            self.exec(g, cmd::Abort { upload, owner }).await?;
            self.staging.lock().expect("staging").remove(&upload);
            self.uploads_expired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(upload, "forgot an upload left unfinished");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sha256;

    #[test]
    fn only_unused_chunks_written_before_the_cut_are_collected() {
        let [a, b, c, d] = [1u8, 2, 3, 4].map(|i| sha256(&[i]));
        let local = [(a, 10), (b, 10), (c, 99), (d, 100)];
        let used: HashSet<Hash> = [b].into();
        assert_eq!(collectable(&local, &used, 100), vec![a, c], "in use, or written at the cut or later, stays");
        assert_eq!(collectable(&local, &used, 0), Vec::<Hash>::new());
        assert_eq!(collectable(&local, &HashSet::new(), u64::MAX), vec![a, b, c, d]);
    }

    #[test]
    fn a_copy_off_its_homes_goes_once_every_home_confirms_it() {
        let ids = [1, 2, 3, 4, 5];
        let chunks: Vec<Hash> = (0..20u8).map(|i| sha256(&[i])).collect();
        let local: Vec<(Hash, u64)> = chunks.iter().map(|h| (*h, 0)).collect();
        let used: HashSet<Hash> = chunks[..15].iter().copied().collect();
        let off = off_home(&local, &used, &ids, 4);
        assert!(off.len() > 2, "{} copies off their homes", off.len());
        for h in &chunks {
            let expect = used.contains(h) && !ring::homes(h, &ids).contains(&4);
            assert_eq!(off.contains(h), expect, "used, and this node is not one of its homes");
        }
        let (lacks, silent, kept) = (off[0], off[1], off[2..].to_vec());
        let check = HomeCheck { missing: vec![(lacks, 1)], unconfirmed: [silent].into() };
        assert_eq!(moved(off.clone(), &check), kept, "a home that lacks it or did not answer keeps it here");
        assert_eq!(moved(off.clone(), &HomeCheck::default()), off);
    }

    #[test]
    fn uploads_started_before_the_cut_expire() {
        let upload = |started_ms| logic::Upload { owner: 7, part_size: 1024, chunks: Default::default(), started_ms };
        let key = crate::state::key(logic::RefRows::Uploads.prefix(), &[42]);
        assert_eq!(expired(&key, &upload(99), 100), Some(42));
        assert_eq!(expired(&key, &upload(100), 100), None, "started at the cut: kept");
        assert_eq!(expired(&key, &upload(0), 0), None);
        assert_eq!(expired(&key[..key.len() - 1], &upload(0), 100), None, "a malformed key names no upload");
    }
}
