//! Throttles, as plain state with the time passed in: the lockout that
//! follows repeated failed logins for one login name, and the token bucket
//! that keeps one chat client from flooding a room. No clock is read here,
//! so the rules are tested by moving time by hand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failed logins for one name tolerated within [`FAILURE_WINDOW`].
pub const MAX_LOGIN_FAILURES: u32 = 5;
/// Failures older than this no longer count: a user who mistypes now and
/// then is never locked out.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a login stays refused after too many failures: long enough to
/// make guessing slow (5 tries a minute), short enough for the real user.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Login names tracked at once, so a flood of invented names cannot grow
/// the table without bound (the oldest entries go first).
pub const MAX_TRACKED_LOGINS: usize = 10_000;

/// Failures of one login name.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Failures since `since`.
    count: u32,
    /// Start of the current window.
    since: Instant,
    /// Refused until then.
    locked_until: Option<Instant>,
}

/// Failed logins per login name, and the lockouts they cause.
#[derive(Debug, Default)]
pub struct LoginFailures {
    by_login: HashMap<String, Failures>,
}

impl LoginFailures {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(wait)` while `login` is locked out at `now`: how long is left.
    pub fn check(&self, login: &str, now: Instant) -> Result<(), Duration> {
        match self.by_login.get(login).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Count a failed login; returns true when it starts a lockout.
    pub fn fail(&mut self, login: &str, now: Instant) -> bool {
        if self.by_login.len() >= MAX_TRACKED_LOGINS && !self.by_login.contains_key(login) {
            self.evict(now);
        }
        let entry = self.by_login.entry(login.to_string()).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.saturating_duration_since(entry.since) >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= MAX_LOGIN_FAILURES {
            entry.locked_until = Some(now + LOCKOUT);
            // The next window starts when the lockout ends.
            entry.count = 0;
            entry.since = now + LOCKOUT;
            return true;
        }
        false
    }

    /// Forget `login`'s failures (after a successful login).
    pub fn clear(&mut self, login: &str) {
        self.by_login.remove(login);
    }

    /// Make room: drop entries that no longer matter, then the oldest.
    fn evict(&mut self, now: Instant) {
        self.by_login.retain(|_, f| {
            f.locked_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(f.since) < FAILURE_WINDOW
        });
        if self.by_login.len() >= MAX_TRACKED_LOGINS {
            if let Some(oldest) = self
                .by_login
                .iter()
                .min_by_key(|(_, f)| f.since)
                .map(|(k, _)| k.clone())
            {
                self.by_login.remove(&oldest);
            }
        }
    }
}

/// A token bucket: `burst` lines at once, then `rate` per second.
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
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_a_minute_lock_the_login_for_a_while() {
        let mut f = LoginFailures::new();
        let t0 = Instant::now();
        for i in 0..MAX_LOGIN_FAILURES - 1 {
            assert!(!f.fail("alice", t0 + Duration::from_secs(u64::from(i))));
            assert!(f.check("alice", t0).is_ok());
        }
        assert!(f.fail("alice", t0 + Duration::from_secs(10)));
        let wait = f.check("alice", t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Other logins are not affected.
        assert!(f.check("bob", t0 + Duration::from_secs(20)).is_ok());
        // The lockout passes.
        assert!(f.check("alice", t0 + Duration::from_secs(70)).is_ok());
    }

    #[test]
    fn failures_spread_over_time_never_lock() {
        let mut f = LoginFailures::new();
        let t0 = Instant::now();
        for i in 0..20u64 {
            assert!(!f.fail("alice", t0 + FAILURE_WINDOW * 2 * i as u32 / 3));
        }
        assert!(f.check("alice", t0 + FAILURE_WINDOW * 14).is_ok());
    }

    #[test]
    fn success_clears_failures() {
        let mut f = LoginFailures::new();
        let t0 = Instant::now();
        for _ in 0..MAX_LOGIN_FAILURES - 1 {
            f.fail("alice", t0);
        }
        f.clear("alice");
        assert!(!f.fail("alice", t0));
        assert!(f.check("alice", t0).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut f = LoginFailures::new();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_LOGINS + 10 {
            f.fail(&format!("user{i}"), t0);
        }
        assert!(f.by_login.len() <= MAX_TRACKED_LOGINS);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(t0 + Duration::from_millis(500)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }
}
