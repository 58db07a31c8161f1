//! Login budgets. Pure: the caller passes the time.
//!
//! Two places count (docs/security.md, "Budgets"):
//! - [`RateLimiter`] per client address on the node the client reached,
//!   before anything is proposed. Its rate is this node's share of the
//!   cluster's budget (the budget over the live nodes), so a client that
//!   spreads over every node gets the budget once, not once per node.
//! - [`LoginGate`] per phone and asking address, on the leader of the
//!   phone's group, before it proposes: one leader per group at a time, so
//!   the count is cluster-wide without a write (a new leader starts afresh;
//!   nobody outside can make leaders change).

use std::collections::HashMap;
use std::hash::Hash;

use super::logic::Cmd;

/// Keys kept before full (idle) buckets are dropped.
const MAX_KEYS: usize = 100_000;
/// The longest a penalized caller can be made to wait: an hour of its rate.
const MAX_DEBT_MINUTES: f64 = 60.0;

#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    /// Refused attempts cost a token too (down to an hour of debt): a caller
    /// who keeps knocking while refused waits longer each time.
    penalize: bool,
    buckets: HashMap<K, (f64, u64)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute == 0` never limits.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, penalize: false, buckets: HashMap::new() }
    }

    /// Like [`RateLimiter::new`], and a refused attempt adds to the wait.
    pub fn penalizing(per_minute: u32) -> Self {
        RateLimiter { penalize: true, ..Self::new(per_minute) }
    }

    /// Changes the rate (a node's share when the live node count changes).
    pub fn set_per_minute(&mut self, per_minute: u32) {
        self.per_minute = per_minute;
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when there is none.
    pub fn check(&mut self, key: &K, now_ms: u64) -> Result<(), u32> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60_000.0;
        if self.buckets.len() >= MAX_KEYS {
            self.buckets.retain(|_, (tokens, at)| *tokens + now_ms.saturating_sub(*at) as f64 * rate < cap);
        }
        let (tokens, at) = self.buckets.entry(key.clone()).or_insert((cap, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) as f64 * rate).min(cap);
        *at = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        if self.penalize {
            *tokens = (*tokens - 1.0).max(-cap * MAX_DEBT_MINUTES);
        }
        Err((((1.0 - *tokens) / rate) / 1000.0).ceil().max(1.0) as u32)
    }
}

/// A node's share of a cluster-wide budget: the budget over the live nodes,
/// rounded up, at least 1 (0 stays "no limit").
pub fn node_share(budget: u32, live_nodes: usize) -> u32 {
    if budget == 0 {
        return 0;
    }
    budget.div_ceil(live_nodes.max(1) as u32).max(1)
}

/// Login attempts (codes asked for, sign-ins, sign-ups) per phone and
/// asking address, checked by the phone group's leader before it proposes.
#[derive(Debug)]
pub struct LoginGate {
    per_phone: RateLimiter<(String, String)>,
}

impl LoginGate {
    pub fn new(per_phone_per_minute: u32) -> Self {
        LoginGate { per_phone: RateLimiter::penalizing(per_phone_per_minute) }
    }

    /// `Err(seconds)` when `cmd` is a login attempt over the budget of its
    /// phone and address; every other command passes.
    pub fn admit(&mut self, cmd: &Cmd) -> Result<(), u32> {
        let (phone, asker, now_ms) = match cmd {
            Cmd::SendCodeFrom { phone, asker, now_ms, .. } => (phone, asker.as_str(), *now_ms),
            Cmd::SignIn { phone, session, now_ms, .. } | Cmd::SignUp { phone, session, now_ms, .. } => {
                (phone, host_of(&session.address), *now_ms)
            }
            _ => return Ok(()),
        };
        self.per_phone.check(&(phone.clone(), asker.to_string()), now_ms)
    }
}

/// The address part of `ip:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    addr.parse::<std::net::SocketAddr>().map_or(addr, |_| addr.rsplit_once(':').map_or(addr, |(h, _)| h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::logic::NewSession;

    #[test]
    fn bucket_refills_over_a_minute() {
        let mut l = RateLimiter::new(3);
        for _ in 0..3 {
            l.check(&"a", 0).unwrap();
        }
        assert_eq!(l.check(&"a", 0), Err(20));
        l.check(&"b", 0).unwrap();
        assert_eq!(l.check(&"a", 10_000), Err(10));
        l.check(&"a", 20_000).unwrap();
        assert!(l.check(&"a", 20_000).is_err());
        let mut open = RateLimiter::new(0);
        for _ in 0..1000 {
            open.check(&"a", 0).unwrap();
        }
    }

    #[test]
    fn a_caller_who_keeps_knocking_waits_longer_and_one_who_waits_gets_through() {
        let mut l = RateLimiter::penalizing(6);
        for _ in 0..6 {
            l.check(&"a", 0).unwrap();
        }
        let waits: Vec<u32> = (0..5).map(|_| l.check(&"a", 0).unwrap_err()).collect();
        assert_eq!(waits, vec![20, 30, 40, 50, 60]);
        // Waiting out the last answer is enough.
        assert!(l.check(&"a", 59_000).is_err());
        let mut patient = RateLimiter::penalizing(6);
        for _ in 0..6 {
            patient.check(&"b", 0).unwrap();
        }
        let wait = patient.check(&"b", 0).unwrap_err();
        patient.check(&"b", u64::from(wait) * 1000 + 10_000).unwrap();
        // The debt is bounded: an hour of the rate.
        let mut l = RateLimiter::penalizing(1);
        let last = (0..10_000).map(|_| l.check(&"c", 0)).last().unwrap().unwrap_err();
        assert!(last <= 3660, "{last}");
    }

    #[test]
    fn a_node_takes_its_share_of_a_cluster_budget() {
        assert_eq!(node_share(30, 3), 10);
        assert_eq!(node_share(30, 4), 8);
        assert_eq!(node_share(2, 5), 1);
        assert_eq!(node_share(30, 0), 30);
        assert_eq!(node_share(0, 3), 0);
    }

    #[test]
    fn the_gate_counts_login_attempts_per_phone_and_address() {
        let sign_in = |phone: &str, addr: &str, now_ms| Cmd::SignIn {
            phone: phone.into(),
            code_id: 1,
            code: "1".into(),
            session: NewSession { token_hash: [0; 32], device: String::new(), app_version: String::new(), node_id: 1, address: addr.into() },
            now_ms,
        };
        let mut g = LoginGate::new(2);
        g.admit(&sign_in("+1", "10.0.0.1:5", 0)).unwrap();
        g.admit(&sign_in("+1", "10.0.0.1:6", 0)).unwrap();
        assert!(g.admit(&sign_in("+1", "10.0.0.1:7", 0)).is_err(), "another port is the same address");
        g.admit(&sign_in("+1", "10.0.0.2:5", 0)).expect("another address has its own budget");
        g.admit(&sign_in("+2", "10.0.0.1:5", 0)).expect("another phone too");
        let code = |asker: &str| Cmd::SendCodeFrom { phone: "+1".into(), code_id: 1, code: "1".into(), ttl_ms: 1, max_per_day: 5, now_ms: 0, asker: asker.into() };
        assert!(g.admit(&code("10.0.0.1")).is_err(), "codes and sign-ins share the budget");
        let touch = Cmd::Touch { token_hash: [0; 32], node_id: 1, address: "10.0.0.1:5".into(), now_ms: 0 };
        g.admit(&touch).expect("not a login attempt");
        assert_eq!(host_of("[::1]:5"), "[::1]");
        assert_eq!(host_of("nonsense"), "nonsense");
    }
}
