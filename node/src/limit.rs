//! Budgets: a token bucket per key, and a node's share of a cluster-wide
//! budget. Pure: the caller passes the time. Where each budget is counted,
//! and why there: docs/security.md, "Cluster-wide budgets: how".

use std::collections::HashMap;
use std::hash::Hash;


/// Keys kept before full (idle) buckets are dropped.
const MAX_KEYS: usize = 100_000;
/// The longest a penalized caller can be made to wait: an hour of its rate.
const MAX_DEBT_MINUTES: f64 = 60.0;

#[derive(Debug)]
pub struct RateLimiter<K> {
    /// Tokens per window (and the burst); 0 never limits.
    per_minute: u32,
    /// The window the tokens refill over (a minute unless [`RateLimiter::per_hour`]).
    window_ms: u64,
    /// Refused attempts cost a token too (down to an hour of debt): a caller
    /// who keeps knocking while refused waits longer each time.
    penalize: bool,
    buckets: HashMap<K, (f64, u64)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute == 0` never limits.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, window_ms: 60_000, penalize: false, buckets: HashMap::new() }
    }

    /// `per_hour` tokens refilled over an hour (penalizing, as [`RateLimiter::penalizing`]).
    pub fn per_hour(per_hour: u32) -> Self {
        RateLimiter { window_ms: 3_600_000, ..Self::penalizing(per_hour) }
    }

    /// Like [`RateLimiter::new`], and a refused attempt adds to the wait.
    pub fn penalizing(per_minute: u32) -> Self {
        RateLimiter { penalize: true, ..Self::new(per_minute) }
    }

    /// [`RateLimiter::check`] at this node's share of a cluster-wide
    /// `budget` (per window) when `live_nodes` share it.
    pub fn check_share(&mut self, key: &K, now_ms: u64, budget: u32, live_nodes: usize) -> Result<(), u32> {
        self.per_minute = node_share(budget, live_nodes);
        self.check(key, now_ms)
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when there is none.
    pub fn check(&mut self, key: &K, now_ms: u64) -> Result<(), u32> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / self.window_ms as f64;
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
            *tokens = (*tokens - 1.0).max(-rate * MAX_DEBT_MINUTES * 60_000.0);
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


/// Work in flight per key, at most `cap` each (`cap == 0`: no limit).
#[derive(Debug)]
pub struct InFlight<K> {
    cap: usize,
    counts: HashMap<K, usize>,
}

impl<K: Hash + Eq + Clone> InFlight<K> {
    pub fn new(cap: usize) -> Self {
        InFlight { cap, counts: HashMap::new() }
    }

    /// Takes a place for `key`; `false` (nothing taken) when it has `cap`.
    pub fn try_take(&mut self, key: &K) -> bool {
        let n = self.counts.entry(key.clone()).or_default();
        if self.cap > 0 && *n >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    pub fn give_back(&mut self, key: &K) {
        if let Some(n) = self.counts.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn work_in_flight_is_capped_per_key() {
        let mut f = InFlight::new(2);
        assert!(f.try_take(&1) && f.try_take(&1));
        assert!(!f.try_take(&1), "a third at once");
        assert!(f.try_take(&2), "another key");
        f.give_back(&1);
        assert!(f.try_take(&1), "a place came back");
        f.give_back(&2);
        assert!(f.counts.get(&2).is_none(), "idle keys are forgotten");
        let mut open = InFlight::new(0);
        assert!((0..100).all(|_| open.try_take(&1)));
    }

    #[test]
    fn an_hourly_budget_refills_over_the_hour() {
        let mut l = RateLimiter::per_hour(2);
        l.check(&1, 0).unwrap();
        l.check(&1, 0).unwrap();
        let wait = l.check(&1, 0).unwrap_err();
        assert!((3600..=3601).contains(&wait), "the third in an hour waits for two tokens (the refusal counts): {wait}");
        l.check(&1, u64::from(wait) * 1000).expect("waiting out the answer is enough");
    }
}
