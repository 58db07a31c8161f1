//! Where replicas live: a pure function from the node registry, node health
//! and the current replica sets to the target replica sets. The controller on
//! the meta leader calls it every tick and moves groups toward the target one
//! step at a time (learner, then voter, then removal of the old replica).

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{GroupId, NodeId, NodeState};

/// Replicas per data group by default (`placement.replicas`; 5 tolerates
/// two nodes lost at once).
pub const REPLICAS: usize = 3;
/// Voters of the meta group at most.
pub const META_VOTERS: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    pub id: NodeId,
    pub state: NodeState,
    /// Answered the last probe.
    pub up: bool,
    /// Down for longer than the grace period: its replicas get new homes.
    pub dead: bool,
}

impl NodeHealth {
    /// May host replicas from now on.
    fn candidate(&self) -> bool {
        self.state == NodeState::Active && self.up
    }
    /// May keep the replicas it has (temporarily down nodes keep theirs).
    fn keeps(&self) -> bool {
        self.state == NodeState::Active && !self.dead
    }
}

/// Target voter sets for the data groups whose target differs from `current`.
pub fn plan_data_groups(nodes: &[NodeHealth], current: &BTreeMap<GroupId, BTreeSet<NodeId>>, replicas: usize) -> BTreeMap<GroupId, BTreeSet<NodeId>> {
    let keeps: BTreeSet<NodeId> = nodes.iter().filter(|n| n.keeps()).map(|n| n.id).collect();
    let candidates: BTreeSet<NodeId> = nodes.iter().filter(|n| n.candidate()).map(|n| n.id).collect();
    let want = replicas.min(keeps.len().max(candidates.len()));

    let mut target: BTreeMap<GroupId, BTreeSet<NodeId>> =
        current.iter().map(|(g, v)| (*g, v.intersection(&keeps).copied().collect())).collect();
    let load = |target: &BTreeMap<GroupId, BTreeSet<NodeId>>, n: NodeId| target.values().filter(|v| v.contains(&n)).count();

    // Fill every group up to `want` replicas with the least loaded candidates.
    let groups: Vec<GroupId> = target.keys().copied().collect();
    for g in &groups {
        while target[g].len() < want {
            let pick = candidates
                .iter()
                .filter(|n| !target[g].contains(n))
                .min_by_key(|n| (load(&target, **n), **n))
                .copied();
            match pick {
                Some(n) => {
                    target.get_mut(g).expect("group exists").insert(n);
                }
                None => break,
            }
        }
    }

    // Even out: move one replica at a time from the most to the least loaded
    // candidate until loads differ by at most one.
    for _ in 0..groups.len() * replicas {
        let loads: Vec<(usize, NodeId)> = candidates.iter().map(|n| (load(&target, *n), *n)).collect();
        let (Some(&(max, from)), Some(&(min, to))) = (loads.iter().max(), loads.iter().min()) else { break };
        if max <= min + 1 {
            break;
        }
        // Only groups whose replicas are all up move for balance: never trade
        // redundancy for evenness while a replica is down.
        let healthy = |g: &GroupId| target[g].iter().all(|n| candidates.contains(n));
        let Some(g) = groups.iter().copied().find(|g| target[g].contains(&from) && !target[g].contains(&to) && healthy(g)) else {
            break;
        };
        let set = target.get_mut(&g).expect("group exists");
        set.remove(&from);
        set.insert(to);
    }

    target.into_iter().filter(|(g, t)| current.get(g) != Some(t) && !t.is_empty()).collect()
}

/// Target voters of the meta group: up to five, an odd number from three on,
/// keeping current voters where it can.
pub fn plan_meta(nodes: &[NodeHealth], current: &BTreeSet<NodeId>) -> Option<BTreeSet<NodeId>> {
    let keeps: BTreeSet<NodeId> = nodes.iter().filter(|n| n.keeps()).map(|n| n.id).collect();
    let candidates: Vec<NodeId> = nodes.iter().filter(|n| n.candidate()).map(|n| n.id).collect();
    let pool = keeps.len().max(candidates.len());
    let size = match pool {
        0 => return None,
        n if n >= META_VOTERS => META_VOTERS,
        n if n >= 3 => 3,
        n => n,
    };
    let mut target: BTreeSet<NodeId> = current.intersection(&keeps).copied().collect();
    // Prefer dropping replicas that are down right now.
    while target.len() > size {
        let drop = target
            .iter()
            .copied()
            .find(|n| !candidates.contains(n))
            .or_else(|| target.iter().next_back().copied())
            .expect("non-empty");
        target.remove(&drop);
    }
    for n in &candidates {
        if target.len() >= size {
            break;
        }
        target.insert(*n);
    }
    (target != *current && !target.is_empty()).then_some(target)
}

/// Up to `max` leadership transfers that even out how many groups each node
/// leads, each planned as if the earlier ones had happened, at most one per
/// group. A fresh cluster starts with every group led by its first node; one
/// transfer per round took half a minute to spread 16 groups over 3 nodes,
/// and clients meanwhile followed leaders that kept moving.
pub fn plan_leader_moves(leaders: &BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)>, up: &BTreeSet<NodeId>, max: usize) -> Vec<(GroupId, NodeId)> {
    let mut after = leaders.clone();
    let mut moved = BTreeSet::new();
    let mut moves = Vec::new();
    while moves.len() < max {
        let Some((g, to)) = next_leader_move(&after, up, &moved) else { break };
        after.get_mut(&g).expect("a planned group is in the map").0 = to;
        moved.insert(g);
        moves.push((g, to));
    }
    moves
}

/// One leadership transfer that evens out how many groups each node leads, if
/// any node leads two or more groups than another voter that could take one;
/// none of the groups in `fixed` moves.
fn next_leader_move(
    leaders: &BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)>,
    up: &BTreeSet<NodeId>,
    fixed: &BTreeSet<GroupId>,
) -> Option<(GroupId, NodeId)> {
    let mut led: BTreeMap<NodeId, usize> = up.iter().map(|n| (*n, 0)).collect();
    for (leader, _) in leaders.values() {
        *led.entry(*leader).or_default() += 1;
    }
    let (&busiest, &most) = led.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))?;
    leaders
        .iter()
        .filter(|(g, (l, _))| *l == busiest && !fixed.contains(*g))
        .flat_map(|(g, (_, voters))| voters.iter().filter(|v| up.contains(v)).map(move |v| (*g, *v)))
        .filter(|(_, v)| led.get(v).copied().unwrap_or(0) + 1 < most)
        .min_by_key(|(g, v)| (led.get(v).copied().unwrap_or(0), *g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(ids: &[NodeId]) -> Vec<NodeHealth> {
        ids.iter().map(|id| NodeHealth { id: *id, state: NodeState::Active, up: true, dead: false }).collect()
    }

    fn groups(n: u32, voters: &[NodeId]) -> BTreeMap<GroupId, BTreeSet<NodeId>> {
        (1..=n).map(|g| (g, voters.iter().copied().collect())).collect()
    }

    fn apply(current: &mut BTreeMap<GroupId, BTreeSet<NodeId>>, plan: BTreeMap<GroupId, BTreeSet<NodeId>>) {
        for (g, t) in plan {
            current.insert(g, t);
        }
    }

    fn loads(current: &BTreeMap<GroupId, BTreeSet<NodeId>>) -> BTreeMap<NodeId, usize> {
        let mut l = BTreeMap::new();
        for v in current.values() {
            for n in v {
                *l.entry(*n).or_default() += 1;
            }
        }
        l
    }

    #[test]
    fn new_nodes_fill_groups_to_three() {
        let mut cur = groups(16, &[1]);
        let p = plan_data_groups(&healthy(&[1, 2, 3]), &cur, REPLICAS);
        assert_eq!(p.len(), 16);
        apply(&mut cur, p);
        assert!(cur.values().all(|v| v.len() == 3));
        assert!(plan_data_groups(&healthy(&[1, 2, 3]), &cur, REPLICAS).is_empty(), "a settled placement plans nothing");
    }

    #[test]
    fn fourth_and_fifth_node_rebalance_within_bound() {
        let mut cur = groups(16, &[1, 2, 3]);
        let p = plan_data_groups(&healthy(&[1, 2, 3, 4, 5]), &cur, REPLICAS);
        apply(&mut cur, p);
        let l = loads(&cur);
        let bound = (3 * 16usize).div_ceil(5) + 1;
        assert!(l.values().all(|c| *c <= bound), "{l:?}");
        assert!(l.values().max().unwrap() - l.values().min().unwrap() <= 1, "{l:?}");
        assert!(cur.values().all(|v| v.len() == 3));
        // Moves are minimal: only the replicas the new nodes take change homes.
        let before = groups(16, &[1, 2, 3]);
        let changed: usize = cur.iter().map(|(g, v)| v.difference(&before[g]).count()).sum();
        assert_eq!(changed, l[&4] + l[&5], "moved {changed} replicas");
    }

    #[test]
    fn removing_node_loses_every_replica() {
        let mut cur = groups(16, &[1, 2, 3]);
        let mut nodes = healthy(&[1, 2, 3, 4]);
        let p = plan_data_groups(&nodes, &cur, REPLICAS);
        apply(&mut cur, p);
        nodes[1].state = NodeState::Removing;
        let p = plan_data_groups(&nodes, &cur, REPLICAS);
        apply(&mut cur, p);
        assert!(cur.values().all(|v| !v.contains(&2) && v.len() == 3), "{cur:?}");
    }

    #[test]
    fn down_node_keeps_replicas_until_dead() {
        let cur = groups(4, &[1, 2, 3]);
        let mut nodes = healthy(&[1, 2, 3, 4]);
        nodes[2].up = false;
        // While 3 is only down, nothing moves: balancing waits for every replica to be up.
        assert!(plan_data_groups(&nodes, &cur, REPLICAS).is_empty());
        nodes[2].dead = true;
        let mut cur2 = cur.clone();
        let p = plan_data_groups(&nodes, &cur, REPLICAS);
        apply(&mut cur2, p);
        assert!(cur2.values().all(|v| !v.contains(&3) && v.len() == 3), "{cur2:?}");
    }

    #[test]
    fn meta_voters_are_odd_and_at_most_five() {
        assert_eq!(plan_meta(&healthy(&[1, 2]), &BTreeSet::from([1])), Some(BTreeSet::from([1, 2])));
        assert_eq!(plan_meta(&healthy(&[1, 2, 3, 4]), &BTreeSet::from([1])), Some(BTreeSet::from([1, 2, 3])));
        assert_eq!(plan_meta(&healthy(&[1, 2, 3, 4]), &BTreeSet::from([1, 2, 3])), None);
        let seven = healthy(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(plan_meta(&seven, &BTreeSet::from([1, 2, 3])).unwrap().len(), 5);
        let mut nodes = healthy(&[1, 2, 3, 4]);
        nodes[0].state = NodeState::Removing;
        assert_eq!(plan_meta(&nodes, &BTreeSet::from([1, 2, 3])), Some(BTreeSet::from([2, 3, 4])));
    }

    #[test]
    fn leaders_spread() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let all_on_one: BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)> = (1..=6).map(|g| (g, (1, voters.clone()))).collect();
        let up: BTreeSet<NodeId> = [1, 2, 3].into();
        let [(g, to)] = plan_leader_moves(&all_on_one, &up, 1)[..] else { panic!("one move") };
        assert_eq!(all_on_one[&g].0, 1);
        assert_ne!(to, 1);
        let even: BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)> = (1..=6).map(|g| (g, ((g as u64 % 3) + 1, voters.clone()))).collect();
        assert_eq!(plan_leader_moves(&even, &up, 1), vec![]);
    }

    #[test]
    fn a_fresh_cluster_spreads_its_leaders_in_a_few_rounds_of_bounded_size() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let up: BTreeSet<NodeId> = [1, 2, 3].into();
        let mut leaders: BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)> = (1..=16).map(|g| (g, (1, voters.clone()))).collect();
        let mut rounds = 0;
        loop {
            let moves = plan_leader_moves(&leaders, &up, 4);
            if moves.is_empty() {
                break;
            }
            rounds += 1;
            assert!(moves.len() <= 4, "{moves:?}");
            let groups: BTreeSet<GroupId> = moves.iter().map(|(g, _)| *g).collect();
            assert_eq!(groups.len(), moves.len(), "a group moves once a round: {moves:?}");
            for (g, to) in moves {
                assert!(leaders[&g].1.contains(&to), "group {g} moved to {to}, not one of its voters");
                leaders.get_mut(&g).unwrap().0 = to;
            }
            assert!(rounds < 10, "still moving after {rounds} rounds: {leaders:?}");
        }
        let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (l, _) in leaders.values() {
            *led.entry(*l).or_default() += 1;
        }
        assert_eq!(led.values().copied().collect::<Vec<_>>(), vec![6, 5, 5], "{led:?}");
        assert_eq!(rounds, 3, "16 groups off one node: 10 moves, 4 a round");
        // Balanced leaders plan nothing; a voter that is down takes nothing.
        assert!(plan_leader_moves(&leaders, &up, 4).is_empty());
        let all_on_one: BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)> = (1..=6).map(|g| (g, (1, voters.clone()))).collect();
        let moves = plan_leader_moves(&all_on_one, &[1, 2].into(), 4);
        assert_eq!(moves.len(), 3, "6 groups over nodes 1 and 2: 3 each: {moves:?}");
        assert!(moves.iter().all(|(_, to)| *to == 2), "{moves:?}");
    }
}
