//! Where a chunk lives: rendezvous (highest-random-weight) hashing over the
//! cluster's nodes. Every node ranks the nodes by `SHA-256(chunk ‖ node id)`
//! and the first `R` are the chunk's homes. A pure function of the chunk's
//! hash and the node set: every node computes the same homes with no table
//! to keep in sync.
//!
//! Why rendezvous rather than a ring with virtual nodes: with R = 3 it needs
//! no tuning (no virtual-node count) and moves the minimum. When a node
//! joins, a chunk's homes change only if the new node ranks in its first
//! three, and then it replaces exactly one home (the third): 1/N of the
//! stored copies move. When a node leaves, only the chunks it was home to
//! get one new home each.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// Copies of every chunk.
pub const REPLICAS: usize = 3;

/// The weight of `node` for `chunk`: a deterministic pseudo-random number.
fn weight(chunk: &[u8; 32], node: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(chunk);
    h.update(node.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Every node of `nodes`, best home for `chunk` first (ties by node id).
pub fn rank(chunk: &[u8; 32], nodes: &[u64]) -> Vec<u64> {
    let mut scored: Vec<(u64, u64)> = nodes.iter().map(|n| (weight(chunk, *n), *n)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, n)| *n);
    scored.into_iter().map(|(_, n)| n).collect()
}

/// The chunk's homes: the first [`REPLICAS`] of [`rank`] (fewer when the
/// cluster has fewer nodes).
pub fn homes(chunk: &[u8; 32], nodes: &[u64]) -> Vec<u64> {
    let mut r = rank(chunk, nodes);
    r.truncate(REPLICAS);
    r
}

/// The nodes chunks may live on (active, not dead past the grace period),
/// with their peer addresses.
pub struct Ring {
    pub nodes: BTreeMap<u64, String>,
    /// Nodes being decommissioned (already out of `nodes`).
    pub removing: Vec<u64>,
    /// Every active node is in the ring and none is leaving: copies off
    /// their homes may be deleted.
    pub settled: bool,
}

impl Ring {
    /// The ring of the `active` nodes (id, peer address) without the `dead`
    /// ones, unless that would leave none; `removing`: nodes being
    /// decommissioned.
    pub fn of(mut active: BTreeMap<u64, String>, dead: &BTreeSet<u64>, removing: Vec<u64>) -> Ring {
        let left_out = active.keys().any(|id| dead.contains(id));
        if active.len() > dead.len() {
            active.retain(|id, _| !dead.contains(id));
        }
        let settled = !left_out && removing.is_empty();
        Ring { nodes: active, removing, settled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_leaves_out_dead_nodes_and_is_settled_only_when_whole() {
        let active = |ids: &[u64]| -> BTreeMap<u64, String> { ids.iter().map(|id| (*id, format!("n{id}:7000"))).collect() };
        let ids = |r: &Ring| r.nodes.keys().copied().collect::<Vec<_>>();
        let whole = Ring::of(active(&[1, 2, 3]), &BTreeSet::new(), vec![]);
        assert_eq!((ids(&whole), whole.settled), (vec![1, 2, 3], true));
        assert_eq!(whole.nodes[&2], "n2:7000", "with their peer addresses");
        let one_dead = Ring::of(active(&[1, 2, 3]), &[2].into(), vec![]);
        assert_eq!((ids(&one_dead), one_dead.settled), (vec![1, 3], false), "a dead node is no home, and nothing is deleted off homes meanwhile");
        let all_dead = Ring::of(active(&[1, 2]), &[1, 2].into(), vec![]);
        assert_eq!((ids(&all_dead), all_dead.settled), (vec![1, 2], false), "never an empty ring");
        let leaving = Ring::of(active(&[1, 3]), &BTreeSet::new(), vec![2]);
        assert_eq!((ids(&leaving), leaving.settled, leaving.removing), (vec![1, 3], false, vec![2]), "a node leaving unsettles it");
        let dead_elsewhere = Ring::of(active(&[1, 2]), &[9].into(), vec![]);
        assert_eq!((ids(&dead_elsewhere), dead_elsewhere.settled), (vec![1, 2], true), "a dead node that is not active changes nothing");
    }

    fn chunk(i: u64) -> [u8; 32] {
        Sha256::digest(i.to_be_bytes()).into()
    }

    #[test]
    fn three_distinct_homes_the_same_everywhere() {
        let nodes = [1, 2, 3, 4, 5];
        for i in 0..100 {
            let h = homes(&chunk(i), &nodes);
            assert_eq!(h.len(), 3);
            assert!(h[0] != h[1] && h[1] != h[2] && h[0] != h[2]);
            let mut shuffled = nodes;
            shuffled.reverse();
            assert_eq!(homes(&chunk(i), &shuffled), h, "order of the node list does not matter");
        }
        assert_eq!(homes(&chunk(1), &[4, 9]).len(), 2, "fewer nodes than replicas");
    }

    #[test]
    fn load_is_even() {
        let nodes: Vec<u64> = (1..=5).collect();
        let mut per = [0usize; 6];
        for i in 0..10_000 {
            for n in homes(&chunk(i), &nodes) {
                per[n as usize] += 1;
            }
        }
        // 30,000 copies over 5 nodes: 6,000 each, within 5 %.
        for n in 1..=5 {
            assert!((5_700..=6_300).contains(&per[n]), "node {n}: {}", per[n]);
        }
    }

    /// The fraction of stored copies that move when nodes join: about 1/N.
    fn moved_when_joining(before: &[u64], after: &[u64]) -> f64 {
        let (mut moved, mut total) = (0usize, 0usize);
        for i in 0..20_000 {
            let (a, b) = (homes(&chunk(i), before), homes(&chunk(i), after));
            moved += b.iter().filter(|n| !a.contains(n)).count();
            total += b.len();
        }
        moved as f64 / total as f64
    }

    #[test]
    fn a_joining_node_takes_about_one_nth() {
        let f = moved_when_joining(&[1, 2, 3], &[1, 2, 3, 4]);
        assert!((0.23..=0.27).contains(&f), "3 → 4 nodes moved {f:.3} (1/4 expected)");
        let f = moved_when_joining(&[1, 2, 3, 4], &[1, 2, 3, 4, 5]);
        assert!((0.18..=0.22).contains(&f), "4 → 5 nodes moved {f:.3} (1/5 expected)");
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_copies() {
        let (before, after) = ([1u64, 2, 3, 4, 5], [1u64, 2, 3, 5]);
        for i in 0..2_000 {
            let (a, b) = (homes(&chunk(i), &before), homes(&chunk(i), &after));
            let kept: Vec<u64> = a.iter().copied().filter(|n| *n != 4).collect();
            assert!(kept.iter().all(|n| b.contains(n)), "chunk {i}: {a:?} → {b:?}");
        }
    }
}
