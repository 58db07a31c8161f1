//! Prometheus metrics of a node: what an operator pages on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use courier_raft::MultiRaft;
use prometheus_client::metrics::counter::Counter;
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
    pub client_connections: Gauge,
    pub client_requests: Counter,
    pub sign_ins: Counter,
    last: Arc<Mutex<BTreeMap<u32, (Option<u64>, u64)>>>,
}

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
            client_connections: Gauge::default(),
            client_requests: Counter::default(),
            sign_ins: Counter::default(),
            last: Arc::default(),
        };
        registry.register("raft_leader_changes", "Leader changes seen by this node's replicas", m.leader_changes.clone());
        registry.register("raft_proposals", "Proposals submitted through this node", m.proposals.clone());
        registry.register("raft_groups_led", "Groups this node leads", m.groups_led.clone());
        registry.register("raft_groups_hosted", "Groups with a replica on this node", m.groups_hosted.clone());
        registry.register("raft_apply_lag", "Log entries written but not yet applied, summed over groups", m.apply_lag.clone());
        registry.register("raft_log_entries", "Log entries appended on groups this node leads", m.log_entries.clone());
        registry.register("client_connections", "Client QUIC connections open on this node", m.client_connections.clone());
        registry.register("client_requests", "Client requests served by this node", m.client_requests.clone());
        registry.register("auth_sign_ins", "Sessions created (sign-in and sign-up) through this node", m.sign_ins.clone());
        *m.registry.lock().expect("registry lock") = registry;
        m
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
        self.groups_led.set(led);
        self.groups_hosted.set(hosted);
        self.apply_lag.set(lag as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().expect("registry lock"));
        out
    }
}
