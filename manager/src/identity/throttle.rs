//! Throttles, as plain state with the time passed in: exponential back-off
//! of password guesses per source address and per login ([`LoginThrottle`]),
//! and token buckets per key ([`RateLimits`], in the core crate because the
//! storage servers throttle their users' chat lines by the same rule) that
//! keep one user or one address from flooding a room, registering accounts
//! or starting scrubs. No clock is read here, so the rules are tested by
//! moving time by hand.
//!
//! Every table is capped: a flood of invented keys evicts entries that no
//! longer matter first, then the oldest.

use dupla::chat::rate::evict_oldest;
pub use dupla::chat::rate::{RateLimits, TokenBucket, MAX_TRACKED_KEYS};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Password attempts a key may make before it has to wait: a user who
/// mistypes a few times is never slowed down.
pub const FREE_ATTEMPTS: u32 = 5;
/// Wait after the first attempt beyond [`FREE_ATTEMPTS`]; it doubles with
/// every further one.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait one source address can earn: guessing from one address
/// gets slower and slower, up to a few guesses an hour.
pub const SOURCE_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Longest wait one login can earn from guesses spread over many addresses.
/// Short, so guesses against a login never lock its owner out for long
/// (their own address has its own, clean, record).
pub const LOGIN_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A record untouched this long is forgotten: attempts spread over time
/// never add up.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Attempts of one key.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// Attempts counted and not yet forgiven.
    count: u32,
    /// No attempt is admitted before then.
    not_before: Instant,
    /// Last attempt admitted.
    last: Instant,
}

/// Exponential back-off per key: [`FREE_ATTEMPTS`] attempts at once, then
/// each one waits twice as long as the previous, up to a cap. An attempt is
/// counted when it is admitted, before the password is checked, so parallel
/// guesses are refused as surely as sequential ones; [`Backoff::forgive`]
/// takes back the attempt of a right password.
#[derive(Debug)]
pub struct Backoff {
    max_wait: Duration,
    by_key: HashMap<String, Attempts>,
}

impl Backoff {
    /// An empty table whose waits stop growing at `max_wait`.
    pub fn new(max_wait: Duration) -> Self {
        Backoff {
            max_wait,
            by_key: HashMap::new(),
        }
    }

    /// `Err(wait)` while `key` must wait at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.by_key.get(key) {
            Some(a) if a.not_before > now && !self.forgotten(a, now) => Err(a.not_before - now),
            _ => Ok(()),
        }
    }

    /// Count an attempt of `key` at `now` (call [`Backoff::check`] first).
    pub fn count(&mut self, key: &str, now: Instant) {
        if self.by_key.len() >= MAX_TRACKED_KEYS && !self.by_key.contains_key(key) {
            self.evict(now);
        }
        let max_wait = self.max_wait;
        let fresh = Attempts {
            count: 0,
            not_before: now,
            last: now,
        };
        let forgotten = self.by_key.get(key).is_some_and(|a| self.forgotten(a, now));
        let entry = self.by_key.entry(key.to_string()).or_insert(fresh);
        if forgotten {
            *entry = fresh;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count > FREE_ATTEMPTS {
            let doublings = (entry.count - FREE_ATTEMPTS - 1).min(20);
            let wait = BACKOFF_BASE.saturating_mul(1 << doublings).min(max_wait);
            entry.not_before = now + wait;
        }
    }

    /// Take back one attempt of `key` (it was the right password).
    pub fn forgive(&mut self, key: &str) {
        if let Some(entry) = self.by_key.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                self.by_key.remove(key);
            }
        }
    }

    /// Forget every attempt of `key`.
    pub fn clear(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    fn forgotten(&self, a: &Attempts, now: Instant) -> bool {
        now >= a.not_before && now.saturating_duration_since(a.last) >= FORGET_AFTER
    }

    /// Make room: drop entries that no longer matter, then the oldest.
    fn evict(&mut self, now: Instant) {
        let max_wait = self.max_wait;
        self.by_key.retain(|_, a| {
            a.not_before > now || now.saturating_duration_since(a.last) < max_wait.min(FORGET_AFTER)
        });
        evict_oldest(&mut self.by_key, |a| a.last);
    }
}

/// Back-off of password checks (Login, Unregister) per source address and
/// per login. An attempt must pass both; it is counted against both before
/// argon2 runs.
#[derive(Debug)]
pub struct LoginThrottle {
    by_source: Backoff,
    by_login: Backoff,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginThrottle {
    /// Empty tables.
    pub fn new() -> Self {
        LoginThrottle {
            by_source: Backoff::new(SOURCE_MAX_BACKOFF),
            by_login: Backoff::new(LOGIN_MAX_BACKOFF),
        }
    }

    /// Admit and count an attempt at `login`'s password from `source`, or
    /// `Err(wait)`: how long that source or login must wait. A refused
    /// attempt is not counted.
    pub fn admit(&mut self, login: &str, source: &str, now: Instant) -> Result<(), Duration> {
        self.by_source.check(source, now)?;
        self.by_login.check(login, now)?;
        self.by_source.count(source, now);
        self.by_login.count(login, now);
        Ok(())
    }

    /// The password was right: the login's record is cleared, and the
    /// source's attempt is taken back (its earlier failures still count).
    pub fn succeeded(&mut self, login: &str, source: &str) {
        self.by_login.clear(login);
        self.by_source.forgive(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_few_attempts_are_free_then_waits_double() {
        let mut b = Backoff::new(SOURCE_MAX_BACKOFF);
        let t0 = Instant::now();
        for _ in 0..FREE_ATTEMPTS {
            assert!(b.check("k", t0).is_ok());
            b.count("k", t0);
        }
        assert!(b.check("k", t0).is_ok());
        b.count("k", t0);
        assert_eq!(b.check("k", t0), Err(secs(1)));
        b.count("k", t0 + secs(1));
        assert_eq!(b.check("k", t0 + secs(1)), Err(secs(2)));
        b.count("k", t0 + secs(3));
        assert_eq!(b.check("k", t0 + secs(3)), Err(secs(4)));
        // Other keys are not affected.
        assert!(b.check("other", t0).is_ok());
    }

    #[test]
    fn waits_stop_growing_at_the_cap_and_old_records_are_forgotten() {
        let mut b = Backoff::new(LOGIN_MAX_BACKOFF);
        let mut now = Instant::now();
        for _ in 0..100 {
            if let Err(wait) = b.check("k", now) {
                assert!(wait <= LOGIN_MAX_BACKOFF);
                now += wait;
            }
            b.count("k", now);
        }
        assert_eq!(b.check("k", now), Err(LOGIN_MAX_BACKOFF));
        assert!(b.check("k", now + FORGET_AFTER).is_ok());
        b.count("k", now + FORGET_AFTER);
        assert!(b.check("k", now + FORGET_AFTER).is_ok(), "forgotten");
    }

    #[test]
    fn parallel_guesses_are_counted_before_the_password_is_checked() {
        // Fifty guesses at the same instant, none answered yet: only the
        // free ones and one more get through.
        let mut t = LoginThrottle::new();
        let t0 = Instant::now();
        let admitted = (0..50)
            .filter(|_| t.admit("alice", "10.0.0.66", t0).is_ok())
            .count();
        assert_eq!(admitted, FREE_ATTEMPTS as usize + 1);
    }

    #[test]
    fn guesses_from_one_address_never_lock_the_owner_out_for_long() {
        let mut t = LoginThrottle::new();
        let mut now = Instant::now();
        // Thirty guesses from one address, each as soon as it is let.
        for _ in 0..30 {
            while let Err(wait) = t.admit("alice", "10.0.0.66", now) {
                now += wait;
            }
        }
        let wait = t.admit("alice", "10.0.0.66", now).unwrap_err();
        assert!(wait > LOGIN_MAX_BACKOFF, "the guesser waits long: {wait:?}");
        // Alice, from her own address, waits at most the login's cap.
        let alice_at = match t.admit("alice", "10.0.0.7", now) {
            Ok(()) => now,
            Err(wait) => {
                assert!(wait <= LOGIN_MAX_BACKOFF);
                t.admit("alice", "10.0.0.7", now + wait).unwrap();
                now + wait
            }
        };
        t.succeeded("alice", "10.0.0.7");
        assert!(t.admit("alice", "10.0.0.7", alice_at).is_ok());
        // The guesser still waits.
        assert!(t.admit("alice", "10.0.0.66", alice_at).is_err());
    }

    #[test]
    fn a_right_password_takes_its_attempt_back() {
        let mut t = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..100 {
            t.admit("bob", "10.0.0.1", t0).unwrap();
            t.succeeded("bob", "10.0.0.1");
        }
        assert!(t.admit("bob", "10.0.0.1", t0).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut b = Backoff::new(LOGIN_MAX_BACKOFF);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KEYS + 10 {
            b.count(&format!("user{i}"), t0);
        }
        assert!(b.by_key.len() <= MAX_TRACKED_KEYS);
    }
}
