//! A per-key token bucket (per client address on one node). Pure: the caller
//! passes the time.

use std::collections::HashMap;
use std::hash::Hash;

/// Keys kept before full (idle) buckets are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    buckets: HashMap<K, (f64, u64)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute == 0` never limits.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, buckets: HashMap::new() }
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
            Ok(())
        } else {
            Err((((1.0 - *tokens) / rate) / 1000.0).ceil().max(1.0) as u32)
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
}
