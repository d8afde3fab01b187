//! Token buckets per key (a user, an address): the flood control of chat
//! lines, shared by the manager (its own `Rooms` service, registrations,
//! scrubs) and the storage servers (chat lines of their own users), so both
//! apply the same rule. Plain state with the time passed in, so the rules
//! are tested by moving time by hand. Every table is capped: a flood of
//! invented keys evicts entries that no longer matter first, then the
//! oldest.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys tracked at once by one table, so invented logins or addresses
/// cannot grow it without bound.
pub const MAX_TRACKED_KEYS: usize = 10_000;

/// Chat lines one user may send per second, sustained (all of the user's
/// connections together).
pub const LINES_PER_SEC: f64 = 20.0;
/// Chat lines one user may send in a burst above the sustained rate.
pub const LINE_BURST: f64 = 40.0;

/// Drop the entry with the smallest `age` key if `map` is still full.
pub fn evict_oldest<K: Clone + Eq + Hash, V>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> Instant) {
    if map.len() >= MAX_TRACKED_KEYS {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
}

/// A token bucket: `burst` events at once, then `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there, from `now`.
    pub fn wait(&self, now: Instant) -> Duration {
        let mut b = *self;
        b.refill(now);
        if b.tokens >= 1.0 || b.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((1.0 - b.tokens) / b.rate).min(1e9))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Whether the bucket is full again at `now` (its key can be forgotten).
    pub fn full_at(&self, now: Instant) -> bool {
        let mut b = *self;
        b.refill(now);
        b.tokens >= b.burst
    }
}

/// A [`TokenBucket`] per key (a user, an address), all with the same rate.
#[derive(Debug)]
pub struct RateLimits {
    rate: f64,
    burst: f64,
    by_key: HashMap<String, TokenBucket>,
}

impl RateLimits {
    /// `burst` events at once per key, then `rate` per second.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimits {
            rate,
            burst,
            by_key: HashMap::new(),
        }
    }

    /// Take one token of `key` at `now`, or `Err(wait)` until there is one.
    pub fn take(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.by_key.len() >= MAX_TRACKED_KEYS && !self.by_key.contains_key(key) {
            self.by_key.retain(|_, b| !b.full_at(now));
            evict_oldest(&mut self.by_key, |b| b.last);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self
            .by_key
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        if bucket.take(now) {
            Ok(())
        } else {
            Err(bucket.wait(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut r = RateLimits::new(1.0, 1.0);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KEYS + 10 {
            let _ = r.take(&format!("user{i}"), t0);
        }
        assert!(r.by_key.len() <= MAX_TRACKED_KEYS);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert_eq!(b.wait(t0), Duration::from_millis(500));
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(t0 + Duration::from_millis(500)));
        // A long pause refills only up to the burst.
        let later = t0 + secs(100);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn rate_limits_are_per_key() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(1.0, 2.0);
        assert!(r.take("a", t0).is_ok() && r.take("a", t0).is_ok());
        assert_eq!(r.take("a", t0), Err(secs(1)));
        assert!(r.take("b", t0).is_ok());
        assert!(r.take("a", t0 + secs(1)).is_ok());
    }
}
