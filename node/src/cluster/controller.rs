//! The placement controller. It runs on every node and acts only on the meta
//! group's leader: each tick it asks [`courier_raft::placement`] for target
//! replica sets and moves groups toward them, a few at a time, each as
//! learner → caught up → voter set replaced (joint consensus) → old replica gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_proto::peer::{GroupStatus, ReplicaView};
use courier_raft::logic::ClusterState;
use courier_raft::placement::{self, NodeHealth};
use courier_raft::{GroupId, cmd, META_GROUP, MultiRaft, NodeId, NodeInfo, NodeState};

use super::{Health, Node};

/// Groups moved at the same time.
const MAX_CONCURRENT_MOVES: usize = 4;
/// Leadership transfers started in one round (the next round waits 2 s, for
/// the probes to see where leaders are): a fresh 3-node cluster spreads its
/// 16 groups in three rounds, and no more elections run at once than this
/// (PD, TiKV's scheduler, limits leader moves to 4 at a time by default too).
const MAX_LEADER_MOVES: usize = 4;
/// How long one move (including a learner catching up) may take before it is retried.
const MOVE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub(super) struct Controller {
    inflight: Arc<Mutex<BTreeSet<GroupId>>>,
    last_leader_move: Option<Instant>,
}

/// Whether every group has a leader and its full replica set, no
/// decommissioned node holds a replica, and the planner has nothing to move
/// (treating the nodes in `up` as up and every other node as merely down).
pub(super) fn is_settled(cluster: &ClusterState, groups: &[GroupStatus], up: &BTreeSet<NodeId>, replicas: usize) -> bool {
    let active = cluster.active_nodes().count();
    let leaving: BTreeSet<NodeId> = cluster.nodes.values().filter(|n| n.state != NodeState::Active).map(|n| n.id).collect();
    let nodes: Vec<NodeHealth> = cluster
        .nodes
        .values()
        .filter(|n| n.state != NodeState::Removed)
        .map(|n| NodeHealth { id: n.id, state: n.state, up: up.contains(&n.id), dead: false })
        .collect();
    let current: BTreeMap<GroupId, BTreeSet<NodeId>> =
        groups.iter().filter(|g| g.id != META_GROUP).map(|g| (g.id, g.voters.iter().copied().collect())).collect();
    if !placement::plan_data_groups(&nodes, &current, replicas).is_empty() {
        return false;
    }
    if let Some(meta) = groups.iter().find(|g| g.id == META_GROUP) {
        if placement::plan_meta(&nodes, &meta.voters.iter().copied().collect()).is_some() {
            return false;
        }
    }
    groups.iter().all(|g| {
        let want = if g.id == META_GROUP { active.min(placement::META_VOTERS) } else { active.min(replicas) };
        g.leader != 0
            && g.learners.is_empty()
            && g.voters.len() >= want.min(3)
            && !g.voters.iter().any(|v| leaving.contains(v))
    })
}

impl Controller {
    /// `leaders`: each group's view from its leader, as the last probes saw it.
    pub(super) async fn tick(
        &mut self,
        node: &Node,
        cluster: &ClusterState,
        health: &BTreeMap<NodeId, Health>,
        leaders: &BTreeMap<GroupId, (NodeId, ReplicaView)>,
    ) {
        let Ok(multi) = node.raft() else { return };
        let dead_after = Duration::from_secs(node.config().placement.dead_after_secs);
        let now = Instant::now();
        let nodes: Vec<NodeHealth> = cluster
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Removed)
            .map(|n| {
                let down_since = health.get(&n.id).and_then(|h| h.down_since);
                NodeHealth {
                    id: n.id,
                    state: n.state,
                    up: health.contains_key(&n.id) && down_since.is_none(),
                    dead: down_since.is_some_and(|t| now.duration_since(t) > dead_after),
                }
            })
            .collect();
        let infos: BTreeMap<NodeId, NodeInfo> = cluster.nodes.values().map(|n| (n.id, n.info.clone())).collect();

        // The meta group: this node leads it, so its local view is current.
        let meta_view = multi.views().into_iter().find(|v| v.group == META_GROUP);
        if let Some(mv) = &meta_view {
            if let Some(target) = placement::plan_meta(&nodes, &mv.voters) {
                self.spawn_move(multi, META_GROUP, mv.voters.clone(), target, &infos);
            }
        }

        // Data groups whose leader answered the probe.
        let current: BTreeMap<GroupId, BTreeSet<NodeId>> = (1..=multi.data_groups())
            .filter_map(|g| leaders.get(&g).map(|(_, v)| (g, v.voters.iter().copied().collect())))
            .collect();
        let plan = placement::plan_data_groups(&nodes, &current, node.config().placement.replicas);
        for (g, target) in &plan {
            self.spawn_move(multi, *g, current[g].clone(), target.clone(), &infos);
        }

        // Learners that no move of ours is adding (one was interrupted, or
        // another meta leader started it) are dropped; a later plan re-adds
        // them if they are still wanted.
        // (`spawn_task` skips groups with a move in flight.)
        for (&g, (_, v)) in leaders {
            if v.learners.is_empty() || plan.contains_key(&g) {
                continue;
            }
            let stale: BTreeSet<NodeId> = v.learners.iter().copied().collect();
            self.spawn_task(g, {
                let multi = multi.clone();
                async move {
                    tracing::info!(group = g, ?stale, "removing stale learners");
                    multi.remove_learners(g, stale).await
                }
            });
        }

        // Decommissioned nodes that hold nothing any more (no replicas, and
        // no chunk that is not also on its new homes) are removed.
        let all_known = current.len() == multi.data_groups() as usize;
        for n in cluster.nodes.values().filter(|n| n.state == NodeState::Removing) {
            let holds = leaders.values().any(|(_, v)| v.voters.contains(&n.id) || v.learners.contains(&n.id))
                || meta_view.as_ref().is_some_and(|m| m.hosts(n.id));
            // Its chunks too: every group's leader has repaired with it out of the ring.
            if all_known && !holds && chunks_moved(n.id, multi.data_groups(), leaders, health) {
                let multi = multi.clone();
                let id = n.id;
                tokio::spawn(async move {
                    match multi.write(META_GROUP, cmd::SetNodeState { id, state: NodeState::Removed }).await {
                        Ok(Ok(())) => tracing::info!(node = id, "node removed: it holds no replicas any more"),
                        Ok(Err(refused)) => tracing::warn!(node = id, "cannot mark node removed: {refused}"),
                        Err(e) => tracing::warn!(node = id, "cannot mark node removed: {e}"),
                    }
                });
            }
        }

        // Spread leadership once placement is settled.
        let idle = self.inflight.lock().expect("inflight lock").is_empty();
        let recently = self.last_leader_move.is_some_and(|t| now.duration_since(t) < Duration::from_secs(2));
        if node.config().placement.balance_leaders && plan.is_empty() && idle && all_known && !recently {
            let up: BTreeSet<NodeId> = nodes.iter().filter(|n| n.up && n.state == NodeState::Active).map(|n| n.id).collect();
            let data_leaders: BTreeMap<GroupId, (NodeId, BTreeSet<NodeId>)> = leaders
                .iter()
                .filter(|(g, _)| **g != META_GROUP)
                .map(|(g, (_, v))| (*g, (v.leader, v.voters.iter().copied().collect())))
                .collect();
            for (g, to) in placement::plan_leader_moves(&data_leaders, &up, MAX_LEADER_MOVES) {
                self.last_leader_move = Some(now);
                let multi = multi.clone();
                tokio::spawn(async move {
                    if let Err(e) = multi.transfer_leader(g, to).await {
                        tracing::debug!(group = g, to, "leader transfer failed: {e}");
                    }
                });
            }
        }
    }

    fn spawn_move(&self, multi: &MultiRaft, group: GroupId, current: BTreeSet<NodeId>, target: BTreeSet<NodeId>, infos: &BTreeMap<NodeId, NodeInfo>) {
        let multi = multi.clone();
        let infos = infos.clone();
        self.spawn_task(group, async move {
            tracing::info!(group, ?current, ?target, "moving group");
            for n in target.difference(&current) {
                let info = infos.get(n).cloned().ok_or_else(|| courier_raft::Error::Invalid(format!("node {n} unknown")))?;
                multi.add_learner(group, *n, info).await?;
            }
            multi.change_voters(group, target.clone()).await?;
            tracing::info!(group, ?target, "group moved");
            Ok(())
        });
    }

    /// Runs one membership change of `group` in the background, at most one per
    /// group and `MAX_CONCURRENT_MOVES` in all; a failure is retried by a later tick.
    fn spawn_task(&self, group: GroupId, task: impl std::future::Future<Output = courier_raft::Result<()>> + Send + 'static) {
        {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            if inflight.contains(&group) || inflight.len() >= MAX_CONCURRENT_MOVES {
                return;
            }
            inflight.insert(group);
        }
        let inflight = self.inflight.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(MOVE_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(group, "membership change failed, will retry: {e}"),
                Err(_) => tracing::warn!(group, "membership change timed out, will retry"),
            }
            inflight.lock().expect("inflight lock").remove(&group);
        });
    }
}

/// Whether a decommissioned node's chunks have moved: each data group's
/// leader reported a repair pass that already left `node` out of the ring
/// (`decommissioned`) and found every chunk of the group on its homes, each
/// home having answered.
/// (That pass counted its copies before making them, so the pass after the
/// one that repaired is the first to say so.)
pub fn chunks_moved(node: NodeId, data_groups: u32, leaders: &BTreeMap<GroupId, (NodeId, ReplicaView)>, health: &BTreeMap<NodeId, Health>) -> bool {
    (1..=data_groups).all(|g| {
        let Some(report) = leaders.get(&g).and_then(|(leader, _)| health.get(leader)).and_then(|h| h.chunks.as_ref()) else { return false };
        report.decommissioned.contains(&node) && report.groups.iter().any(|c| c.group == g && c.under_replicated == 0 && c.unconfirmed == 0)
    })
}

#[cfg(test)]
mod tests {
    use courier_proto::peer::{ChunkHealth, GroupChunks};

    use super::*;

    fn report(decommissioned: Vec<u64>, groups: &[(u32, u64)]) -> Health {
        let groups = groups.iter().map(|&(group, under)| GroupChunks { group, chunks: 10, under_replicated: under, unconfirmed: 0 }).collect();
        Health { chunks: Some(ChunkHealth { decommissioned, groups, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn a_leaving_node_waits_for_every_group_s_chunks() {
        let leaders: BTreeMap<GroupId, (NodeId, ReplicaView)> = [(1, (1, ReplicaView::default())), (2, (3, ReplicaView::default()))].into();
        let mut health: BTreeMap<NodeId, Health> = [(1, report(vec![2], &[(1, 0)])), (3, report(vec![2], &[(2, 4)]))].into();
        assert!(!chunks_moved(2, 2, &leaders, &health), "group 2 still has chunks to copy");
        health.insert(3, report(vec![], &[(2, 0)]));
        assert!(!chunks_moved(2, 2, &leaders, &health), "node 3's pass ran before it knew node 2 was leaving");
        health.insert(3, report(vec![2], &[(2, 0)]));
        assert!(chunks_moved(2, 2, &leaders, &health));
        let mut silent = report(vec![2], &[(2, 0)]);
        silent.chunks.as_mut().unwrap().groups[0].unconfirmed = 1;
        assert!(!chunks_moved(2, 2, &leaders, &[(1, report(vec![2], &[(1, 0)])), (3, silent)].into()), "a home did not answer");
        assert!(!chunks_moved(2, 3, &leaders, &health), "group 3 has no leader to ask");
        health.remove(&1);
        assert!(!chunks_moved(2, 2, &leaders, &health), "no report from group 1's leader");
    }
}
