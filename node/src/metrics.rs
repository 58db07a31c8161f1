//! Prometheus metrics of a node: what an operator pages on.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use courier_raft::MultiRaft;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub leader_changes: Counter,
    pub proposals: Counter,
    pub groups_led: Gauge,
    pub groups_hosted: Gauge,
    pub apply_lag: Gauge,
    pub log_entries: Counter,
    pub raft_batches: Counter,
    pub raft_batched_calls: Counter,
    pub forwarded: Counter,
    pub client_connections: Gauge,
    pub client_connections_opened: Counter,
    pub client_requests: Counter,
    pub sign_ins: Counter,
    /// CPU time (user + system) of the node process since it started.
    cpu_seconds: Counter<f64, AtomicU64>,
    /// The media workers' last report, one gauge per figure.
    media: Vec<(&'static str, Gauge)>,
    last: Arc<Mutex<BTreeMap<u32, (Option<u64>, u64)>>>,
}

/// The media figures exported, with their help texts (`courier_media_…`).
const MEDIA: [(&str, &str); 9] = [
    ("chunks_stored", "Chunk copies on this node's disk"),
    ("chunks_in_use", "Chunks used by the files and uploads of the groups this node leads"),
    ("chunks_under_replicated", "Of those, chunks missing from one of their homes at the last repair pass"),
    ("copies_repaired", "Chunk copies the repair worker made since the node started"),
    ("chunks_scrubbed", "Chunks the scrub re-read and checked since the node started"),
    ("damaged_copies_replaced", "Copies whose bytes did not match their hash, replaced since the node started"),
    ("chunks_collected", "Chunks no file or upload used, deleted since the node started"),
    ("copies_moved_off", "Copies deleted because every one of their homes had one, since the node started"),
    ("uploads_expired", "Unfinished uploads forgotten since the node started"),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("courier");
        let m = Metrics {
            registry: Arc::default(),
            leader_changes: Counter::default(),
            proposals: Counter::default(),
            groups_led: Gauge::default(),
            groups_hosted: Gauge::default(),
            apply_lag: Gauge::default(),
            log_entries: Counter::default(),
            raft_batches: Counter::default(),
            raft_batched_calls: Counter::default(),
            forwarded: Counter::default(),
            client_connections: Gauge::default(),
            client_connections_opened: Counter::default(),
            client_requests: Counter::default(),
            sign_ins: Counter::default(),
            cpu_seconds: Counter::default(),
            media: MEDIA.iter().map(|(name, _)| (*name, Gauge::default())).collect(),
            last: Arc::default(),
        };
        for ((name, help), (_, g)) in MEDIA.iter().zip(&m.media) {
            registry.register(format!("media_{name}"), *help, g.clone());
        }
        registry.register("raft_leader_changes", "Leader changes seen by this node's replicas", m.leader_changes.clone());
        registry.register("raft_proposals", "Proposals submitted through this node", m.proposals.clone());
        registry.register("raft_groups_led", "Groups this node leads", m.groups_led.clone());
        registry.register("raft_groups_hosted", "Groups with a replica on this node", m.groups_hosted.clone());
        registry.register("raft_apply_lag", "Log entries written but not yet applied, summed over groups", m.apply_lag.clone());
        registry.register("raft_log_entries", "Log entries appended on groups this node leads", m.log_entries.clone());
        registry.register("raft_batches", "Batches of Raft calls this node sent to peers", m.raft_batches.clone());
        registry.register("raft_batched_calls", "Raft calls (appends, heartbeats, votes) those batches carried", m.raft_batched_calls.clone());
        registry.register("forwarded_requests", "Requests this node forwarded to their group's leader on another node", m.forwarded.clone());
        registry.register("client_connections", "Client QUIC connections open on this node", m.client_connections.clone());
        registry.register("client_connections_opened", "Client connections that said hello to this node since it started (a jump means clients reconnecting)", m.client_connections_opened.clone());
        registry.register("client_requests", "Client requests served by this node", m.client_requests.clone());
        registry.register("auth_sign_ins", "Sessions created (sign-in and sign-up) through this node", m.sign_ins.clone());
        registry.register("process_cpu_seconds", "CPU time (user and system) this node process used since it started", m.cpu_seconds.clone());
        *m.registry.lock().expect("registry lock") = registry;
        m
    }
}

/// Brings a counter up to `total`, a count kept elsewhere since start (a
/// counter never goes down).
fn catch_up<N, A>(counter: &Counter<N, A>, total: N)
where
    N: PartialOrd + std::ops::Sub<Output = N> + Copy,
    A: Atomic<N>,
{
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl Metrics {
    /// Updates the gauges from the replicas' current state.
    pub fn observe(&self, multi: &MultiRaft) {
        let views = multi.views();
        let me = multi.id();
        let mut last = self.last.lock().expect("metrics lock");
        let (mut led, mut hosted, mut lag) = (0, 0, 0u64);
        for v in &views {
            if v.hosts(me) {
                hosted += 1;
            }
            if v.leader == Some(me) {
                led += 1;
            }
            lag += v.last_log.saturating_sub(v.applied);
            let prev = last.insert(v.group, (v.leader, v.last_log));
            if let Some((prev_leader, prev_log)) = prev {
                if prev_leader != v.leader && v.leader.is_some() {
                    self.leader_changes.inc();
                }
                if v.leader == Some(me) && v.last_log > prev_log {
                    self.log_entries.inc_by(v.last_log - prev_log);
                }
            }
        }
        let (batches, calls) = multi.router().batch_stats();
        catch_up(&self.raft_batches, batches);
        catch_up(&self.raft_batched_calls, calls);
        catch_up(&self.forwarded, multi.router().forwarded());
        self.groups_led.set(led);
        self.groups_hosted.set(hosted);
        self.apply_lag.set(lag as i64);
    }

    /// Brings the process CPU counter up to date (read at every scrape):
    /// with a client's request count, it gives CPU per request, the
    /// figure that sets throughput when nodes share their cores.
    pub fn observe_process(&self) {
        // SAFETY: getrusage only writes the struct it is given.
        let usage = unsafe {
            let mut u = std::mem::zeroed::<libc::rusage>();
            (libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0).then_some(u)
        };
        if let Some(u) = usage {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            catch_up(&self.cpu_seconds, secs(u.ru_utime) + secs(u.ru_stime));
        }
    }

    /// Exports the media workers' report.
    pub fn set_media(&self, h: &courier_proto::peer::ChunkHealth) {
        let values = [h.stored, h.chunks, h.under_replicated, h.repaired, h.scrubbed, h.corrupt_repaired, h.collected, h.moved_off, h.uploads_expired];
        for ((_, g), v) in self.media.iter().zip(values) {
            g.set(v as i64);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().expect("registry lock"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_is_exported_and_only_grows() {
        let m = Metrics::default();
        let value = |m: &Metrics| -> f64 {
            let text = m.render();
            let line = text.lines().find(|l| l.starts_with("courier_process_cpu_seconds_total ")).unwrap_or_else(|| panic!("no CPU counter in:\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        m.observe_process();
        let first = value(&m);
        // Burn a little CPU (bounded), then read again.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        m.observe_process();
        let second = value(&m);
        assert!(first > 0.0, "{first}");
        assert!(second > first, "{first} then {second}");
    }

    #[test]
    fn media_figures_are_exported() {
        let m = Metrics::default();
        m.set_media(&courier_proto::peer::ChunkHealth { stored: 42, under_replicated: 3, collected: 7, ..Default::default() });
        let text = m.render();
        for line in ["courier_media_chunks_stored 42", "courier_media_chunks_under_replicated 3", "courier_media_chunks_collected 7", "courier_media_uploads_expired 0"] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
