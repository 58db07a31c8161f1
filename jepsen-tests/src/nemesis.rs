//! Nemeses: faults on a schedule, each healed before the next begins.
//! Quiet 3–6 s, a fault for 5–10 s, heal, and again, until the run ends.
//! The faults come in rounds: every enabled fault once per round, in a
//! random order, so a short run still sees each kind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::json;

use crate::cluster::Cluster;
use crate::history::History;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a random node, restarted at the heal.
    Kill,
    /// `kill -9` of the node leading the most groups.
    KillLeader,
    /// `kill -9` of a majority at once, all restarted at the heal.
    KillMajority,
    /// SIGSTOP of a random node, SIGCONT at the heal.
    Pause,
    /// Two random halves that cannot reach each other.
    PartitionHalves,
    /// The busiest leader cut off from everyone.
    PartitionLeader,
    /// Two halves and one node that reaches both (a bridge).
    PartitionBridge,
    /// A new node joins under load; at the heal it is decommissioned (`remove-node`).
    Membership,
    /// A node's data directory is wiped; it rejoins under a new id and the
    /// old id is removed.
    Wipe,
    /// A node's clock jumps by minutes (its `clock_offset_file`).
    Clock,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::KillMajority,
        Fault::Pause,
        Fault::PartitionHalves,
        Fault::PartitionLeader,
        Fault::PartitionBridge,
        Fault::Membership,
        Fault::Wipe,
        Fault::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::KillMajority => "kill-majority",
            Fault::Pause => "pause",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionBridge => "partition-bridge",
            Fault::Membership => "membership",
            Fault::Wipe => "wipe",
            Fault::Clock => "clock",
        }
    }
}

/// `all`, `none`, or a comma-separated list of `kill`, `pause`,
/// `partition`, `membership`, `wipe`, `clock` (or single fault names;
/// `kill-one` is the single random kill).
pub fn parse(spec: &str) -> Result<Vec<Fault>> {
    use Fault::*;
    let mut out = Vec::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let one = |f: &Fault| f.name() == word;
        let add: Vec<Fault> = match word {
            "all" => Fault::ALL.to_vec(),
            "none" => Vec::new(),
            "kill" => vec![Kill, KillLeader, KillMajority],
            "partition" => vec![PartitionHalves, PartitionLeader, PartitionBridge],
            "kill-one" => vec![Kill],
            _ => match Fault::ALL.iter().find(|f| one(f)) {
                Some(f) => vec![*f],
                None => bail!(
                    "unknown nemesis {word:?}: use all, none, or kill, pause, partition, membership, wipe, clock"
                ),
            },
        };
        for f in add {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// A fault's time in the run, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub fault: &'static str,
    pub detail: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// What must be undone.
enum Active {
    Killed(Vec<u32>),
    Paused(u32),
    Partitioned,
    Clock(u32),
    Joined { index: u32, id: u64 },
    Wiped { old_id: Option<u64> },
}

/// Which node pairs a partition cuts, for `nodes` in random order.
pub fn cuts(fault: Fault, nodes: &[u32], leader: Option<u32>) -> Vec<(u32, u32)> {
    let (a, b): (Vec<u32>, Vec<u32>) = match fault {
        Fault::PartitionLeader => {
            let l = leader.unwrap_or(nodes[0]);
            (vec![l], nodes.iter().copied().filter(|n| *n != l).collect())
        }
        Fault::PartitionBridge if nodes.len() >= 3 => {
            let bridge = nodes.len() / 2;
            (nodes[..bridge].to_vec(), nodes[bridge + 1..].to_vec())
        }
        _ => {
            let half = nodes.len() / 2;
            (nodes[..half].to_vec(), nodes[half..].to_vec())
        }
    };
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (*x, *y)))
        .collect()
}

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub history: &'a History,
    pub faults: Vec<Fault>,
    /// Index for the next node that joins.
    pub next_index: u32,
}

impl Nemesis<'_> {
    /// Runs faults until `until` (or `stop`), healing each; returns their windows.
    pub fn run(&mut self, until: Instant, stop: &AtomicBool) -> Vec<Window> {
        let mut windows = Vec::new();
        let mut rng = rand::rng();
        let mut round: Vec<Fault> = Vec::new();
        let sleep_until = |t: Instant| {
            while Instant::now() < t && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        while !self.faults.is_empty() && !stop.load(Ordering::Relaxed) {
            sleep_until(
                Instant::now()
                    + Duration::from_millis(rng.random_range(3_000..6_000))
                        .min(until.saturating_duration_since(Instant::now())),
            );
            if until.saturating_duration_since(Instant::now()) < Duration::from_secs(8) {
                break;
            }
            if round.is_empty() {
                round = self.faults.clone();
                round.shuffle(&mut rng);
            }
            let fault = round.pop().expect("a round has faults");
            let start_ms = self.history.now_ms();
            let (active, detail) = match self.start(fault) {
                Ok(x) => x,
                Err(e) => {
                    self.history.note(
                        "nemesis",
                        "fault-error",
                        json!({"fault": fault.name(), "error": format!("{e:#}")}),
                    );
                    continue;
                }
            };
            self.history.note(
                "nemesis",
                "fault-start",
                json!({"fault": fault.name(), "detail": detail}),
            );
            tracing::info!(fault = fault.name(), %detail, "fault");
            sleep_until(Instant::now() + Duration::from_millis(rng.random_range(5_000..10_000)));
            if let Err(e) = self.heal(active) {
                self.history.note(
                    "nemesis",
                    "fault-error",
                    json!({"fault": fault.name(), "error": format!("{e:#}")}),
                );
            }
            let end_ms = self.history.now_ms();
            self.history
                .note("nemesis", "fault-stop", json!({"fault": fault.name()}));
            windows.push(Window {
                fault: fault.name(),
                detail,
                start_ms,
                end_ms,
            });
        }
        windows
    }

    fn start(&mut self, fault: Fault) -> Result<(Active, String)> {
        let mut rng = rand::rng();
        let mut nodes = self.cluster.live();
        nodes.shuffle(&mut rng);
        let Some(&one) = nodes.first() else {
            bail!("no live node")
        };
        Ok(match fault {
            Fault::Kill => {
                self.cluster.kill(one);
                (Active::Killed(vec![one]), format!("n{one}"))
            }
            Fault::KillLeader => {
                let l = self.cluster.busiest_leader().unwrap_or(one);
                self.cluster.kill(l);
                (Active::Killed(vec![l]), format!("n{l}"))
            }
            Fault::KillMajority => {
                let n = self.cluster.members().len() / 2 + 1;
                let victims: Vec<u32> = nodes.iter().copied().take(n).collect();
                for v in &victims {
                    self.cluster.kill(*v);
                }
                let names: Vec<String> = victims.iter().map(|v| format!("n{v}")).collect();
                (Active::Killed(victims), names.join(","))
            }
            Fault::Pause => {
                self.cluster.pause(one);
                (Active::Paused(one), format!("n{one}"))
            }
            Fault::PartitionHalves | Fault::PartitionLeader | Fault::PartitionBridge => {
                let leader = if fault == Fault::PartitionLeader {
                    self.cluster.busiest_leader()
                } else {
                    None
                };
                let cut = cuts(fault, &nodes, leader);
                self.cluster.partition(&cut)?;
                let names: Vec<String> = cut.iter().map(|(a, b)| format!("n{a}-n{b}")).collect();
                (Active::Partitioned, format!("cut {}", names.join(" ")))
            }
            Fault::Membership => {
                let i = self.next_index;
                self.next_index += 1;
                let id = self.cluster.join_new(i)?;
                (
                    Active::Joined { index: i, id },
                    format!("n{i} joined as id {id}"),
                )
            }
            Fault::Wipe => {
                let old_id = self
                    .cluster
                    .status()
                    .and_then(|s| self.cluster.node_id(&s, one));
                self.cluster.wipe(one)?;
                (
                    Active::Wiped { old_id },
                    format!(
                        "n{one} (id {}) wiped",
                        old_id.map_or("?".into(), |i| i.to_string())
                    ),
                )
            }
            Fault::Clock => {
                let secs = rng.random_range(60..600) * if rng.random_bool(0.5) { 1 } else { -1 };
                self.cluster.set_clock(one, secs)?;
                (Active::Clock(one), format!("n{one} {secs:+} s"))
            }
        })
    }

    fn heal(&mut self, active: Active) -> Result<()> {
        match active {
            Active::Killed(nodes) => {
                for n in nodes {
                    self.cluster.start(n)?;
                }
            }
            Active::Paused(n) => self.cluster.resume(n),
            Active::Partitioned => self.cluster.heal_network()?,
            Active::Clock(n) => self.cluster.set_clock(n, 0)?,
            Active::Joined { index, id } => {
                let removed = self.cluster.remove_node(id, Duration::from_secs(90));
                // Whether or not it finished, the node leaves the run.
                self.cluster.stop(index);
                self.cluster.nodes.get_mut(&index).expect("node").retired = true;
                removed?;
            }
            Active::Wiped { old_id: Some(id) } => {
                self.cluster.remove_node(id, Duration::from_secs(90))?
            }
            Active::Wiped { old_id: None } => {}
        }
        Ok(())
    }
}

/// Undoes whatever may be left: every member running, no partition, clocks true.
pub fn heal_all(cluster: &mut Cluster) -> Result<()> {
    cluster.heal_network()?;
    for i in cluster.members() {
        cluster.resume(i);
        cluster.start(i)?;
        cluster.set_clock(i, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_expand_to_faults() {
        assert_eq!(parse("kill,partition").unwrap().len(), 6);
        assert_eq!(parse("all").unwrap().len(), 10);
        assert!(parse("none").unwrap().is_empty());
        assert!(parse("kill,fire").is_err());
        assert_eq!(
            parse("kill-leader,clock,kill-one").unwrap(),
            vec![Fault::KillLeader, Fault::Clock, Fault::Kill]
        );
    }

    #[test]
    fn partitions_cut_the_right_pairs() {
        let nodes = [1, 2, 3, 4, 5];
        let halves = cuts(Fault::PartitionHalves, &nodes, None);
        assert_eq!(halves.len(), 6, "2 x 3 pairs");
        let leader = cuts(Fault::PartitionLeader, &nodes, Some(4));
        assert_eq!(leader, vec![(4, 1), (4, 2), (4, 3), (4, 5)]);
        let bridge = cuts(Fault::PartitionBridge, &nodes, None);
        assert_eq!(bridge.len(), 4, "{{1,2}} x {{4,5}}; 3 reaches everyone");
        assert!(bridge.iter().all(|(a, b)| *a != 3 && *b != 3));
    }
}
