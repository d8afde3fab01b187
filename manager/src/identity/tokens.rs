//! Login tokens: random bearer tokens that stand for a logged-in session.
//!
//! A token is 256 random bits, shown to the client once, in hex. The manager
//! keeps only its blake3 (the *key*), so a copy of the database does not
//! hold usable tokens. Live tokens sit in memory for a check without I/O on
//! every call, and are written through to the [`Kv`] so a manager restart
//! logs nobody out and resurrects no revoked token. Time is passed in (Unix
//! milliseconds, since expiry must survive restarts), so expiry is tested
//! without waiting.
//!
//! Each token also remembers the storage server assigned at login, and
//! (in memory) when it was last used: the live tokens used within the idle
//! window are the server's connected sessions.

use crate::cluster::membership::NodeRef;
use dupla::kv::Kv;
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const TOKENS_TREE: &str = "tokens";

/// Bytes of randomness in a token: 256 bits, far past guessing.
pub const TOKEN_BYTES: usize = 32;
/// Live tokens one account may hold; logging in again past this revokes
/// the oldest, so a login loop cannot grow the table without bound.
pub const MAX_TOKENS_PER_USER: usize = 64;
/// Expired tokens are kept this long (to answer "expired" rather than
/// "unknown"), then forgotten.
pub const EXPIRED_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// What the manager knows of one token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Whose token it is.
    pub login: String,
    /// Issue time, ms since the Unix epoch.
    pub issued_unix_ms: i64,
    /// End of validity, ms since the Unix epoch.
    pub expires_unix_ms: i64,
    /// Storage server assigned at login, if one was up.
    pub server: Option<NodeRef>,
}

impl TokenRecord {
    /// Whether the token still works at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_unix_ms
    }
}

/// The key a token is stored under: its blake3, in hex.
pub fn token_key(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Every token, by key, over [`Kv`].
pub struct Tokens {
    kv: Arc<dyn Kv>,
    by_key: HashMap<String, TokenRecord>,
    /// Last use of each token, ms since the Unix epoch (not persisted:
    /// after a restart a session counts again from its next call).
    last_seen: HashMap<String, i64>,
}

fn encode(record: &TokenRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::Internal(format!("encoding a token: {e}")))
}

impl Tokens {
    /// Load the tokens kept in `kv`, forgetting long-expired ones.
    pub fn load(kv: Arc<dyn Kv>, now_ms: i64) -> Result<Tokens> {
        let mut by_key = HashMap::new();
        for (key, value) in kv.scan_prefix(TOKENS_TREE, b"")? {
            let key = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice::<TokenRecord>(&value) {
                Ok(record) => {
                    by_key.insert(key, record);
                }
                Err(e) => {
                    // A record we cannot read grants nothing: drop it.
                    tracing::warn!(cause = %e, "dropping an unreadable token record");
                    kv.delete(TOKENS_TREE, key.as_bytes())?;
                }
            }
        }
        let mut tokens = Tokens {
            kv,
            by_key,
            last_seen: HashMap::new(),
        };
        tokens.purge(now_ms)?;
        Ok(tokens)
    }

    /// Issue a token for `login`, valid for `ttl` from `now_ms`. Returns the
    /// token (the only time it exists in clear) and its record.
    pub fn issue(
        &mut self,
        login: &str,
        server: Option<NodeRef>,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<(String, TokenRecord)> {
        self.purge(now_ms)?;
        self.cap_user(login, now_ms)?;
        let token = hex::encode(rand::random::<[u8; TOKEN_BYTES]>());
        let record = TokenRecord {
            login: login.to_string(),
            issued_unix_ms: now_ms,
            expires_unix_ms: now_ms.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64),
            server,
        };
        let key = token_key(&token);
        self.kv
            .put(TOKENS_TREE, key.as_bytes(), &encode(&record)?)?;
        self.kv.flush()?;
        self.last_seen.insert(key.clone(), now_ms);
        self.by_key.insert(key, record.clone());
        Ok((token, record))
    }

    /// The record of a live `token` at `now_ms`, with its key; otherwise
    /// `Unauthenticated`, saying why and what to do.
    pub fn check(&self, token: &str, now_ms: i64) -> Result<(String, TokenRecord)> {
        let key = token_key(token);
        match self.by_key.get(&key) {
            Some(record) if record.is_live(now_ms) => Ok((key, record.clone())),
            Some(record) => Err(Error::Unauthenticated(format!(
                "the token expired at {}; log in again with `dupla login {}`",
                dupla::clock::format_utc(record.expires_unix_ms),
                record.login
            ))),
            None => Err(Error::Unauthenticated(
                "the token is unknown or was revoked (logged out); log in again with `dupla login USER`"
                    .into(),
            )),
        }
    }

    /// Note that the token under `key` was used at `now_ms`.
    pub fn touch(&mut self, key: &str, now_ms: i64) {
        if self.by_key.contains_key(key) {
            self.last_seen.insert(key.to_string(), now_ms);
        }
    }

    /// Whether a token is stored under `key` (live or expired, not revoked).
    pub fn is_known(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Revoke the token stored under `key`, returning its record.
    pub fn revoke(&mut self, key: &str) -> Result<Option<TokenRecord>> {
        self.last_seen.remove(key);
        let old = self.by_key.remove(key);
        if old.is_some() {
            self.kv.delete(TOKENS_TREE, key.as_bytes())?;
            self.kv.flush()?;
        }
        Ok(old)
    }

    /// Revoke every token of `login`; returns their keys.
    pub fn revoke_user(&mut self, login: &str) -> Result<Vec<String>> {
        let keys: Vec<String> = self
            .by_key
            .iter()
            .filter(|(_, r)| r.login == login)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.by_key.remove(key);
            self.last_seen.remove(key);
            self.kv.delete(TOKENS_TREE, key.as_bytes())?;
        }
        self.kv.flush()?;
        Ok(keys)
    }

    /// Connected sessions per storage server id at `now_ms`: live tokens
    /// used within the last `idle`.
    pub fn sessions_per_server(&self, now_ms: i64, idle: Duration) -> HashMap<String, usize> {
        let since = now_ms.saturating_sub(idle.as_millis().min(i64::MAX as u128) as i64);
        let mut counts = HashMap::new();
        let connected = self.by_key.iter().filter(|(key, r)| {
            r.is_live(now_ms) && self.last_seen.get(*key).is_some_and(|&t| t >= since)
        });
        for (_, record) in connected {
            if let Some(server) = &record.server {
                *counts.entry(server.id.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Logins with a live token used within the last `idle`: the users
    /// connected now (the web console's "online").
    pub fn active_logins(&self, now_ms: i64, idle: Duration) -> std::collections::HashSet<String> {
        let since = now_ms.saturating_sub(idle.as_millis().min(i64::MAX as u128) as i64);
        self.by_key
            .iter()
            .filter(|(key, r)| {
                r.is_live(now_ms) && self.last_seen.get(*key).is_some_and(|&t| t >= since)
            })
            .map(|(_, r)| r.login.clone())
            .collect()
    }

    /// Live tokens at `now_ms`.
    pub fn live(&self, now_ms: i64) -> usize {
        self.by_key.values().filter(|r| r.is_live(now_ms)).count()
    }

    /// Forget tokens expired for longer than [`EXPIRED_RETENTION`].
    fn purge(&mut self, now_ms: i64) -> Result<()> {
        let cutoff = now_ms.saturating_sub(EXPIRED_RETENTION.as_millis() as i64);
        let stale: Vec<String> = self
            .by_key
            .iter()
            .filter(|(_, r)| r.expires_unix_ms <= cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &stale {
            self.by_key.remove(key);
            self.last_seen.remove(key);
            self.kv.delete(TOKENS_TREE, key.as_bytes())?;
        }
        Ok(())
    }

    /// Make room for one more token of `login`: revoke its oldest beyond
    /// [`MAX_TOKENS_PER_USER`] - 1.
    fn cap_user(&mut self, login: &str, now_ms: i64) -> Result<()> {
        let mut mine: Vec<(i64, String)> = self
            .by_key
            .iter()
            .filter(|(_, r)| r.login == login)
            .map(|(k, r)| {
                (
                    if r.is_live(now_ms) {
                        r.issued_unix_ms
                    } else {
                        i64::MIN
                    },
                    k.clone(),
                )
            })
            .collect();
        if mine.len() < MAX_TOKENS_PER_USER {
            return Ok(());
        }
        mine.sort();
        for (_, key) in mine.iter().take(mine.len() + 1 - MAX_TOKENS_PER_USER) {
            self.by_key.remove(key);
            self.kv.delete(TOKENS_TREE, key.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::kv::{MemoryKv, SledKv};

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: i64 = 1_700_000_000_000;

    fn server(id: &str) -> Option<NodeRef> {
        Some(NodeRef {
            id: id.into(),
            addr: format!("{id}:1"),
        })
    }

    #[test]
    fn tokens_are_random_hex_and_stored_hashed() {
        let kv = Arc::new(MemoryKv::new());
        let mut tokens = Tokens::load(kv.clone(), T0).unwrap();
        let (a, _) = tokens.issue("ada", None, HOUR, T0).unwrap();
        let (b, _) = tokens.issue("ada", None, HOUR, T0).unwrap();
        assert_eq!(a.len(), TOKEN_BYTES * 2);
        assert_ne!(a, b);
        let stored = kv.scan_prefix(TOKENS_TREE, b"").unwrap();
        assert_eq!(stored.len(), 2);
        for (k, v) in stored {
            assert!(!String::from_utf8_lossy(&k).contains(&a));
            assert!(!String::from_utf8_lossy(&v).contains(&a));
        }
    }

    #[test]
    fn a_token_works_until_it_expires_or_is_revoked() {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), T0).unwrap();
        let (token, record) = tokens.issue("ada", server("s1"), HOUR, T0).unwrap();
        assert_eq!(record.expires_unix_ms, T0 + 3_600_000);
        let (key, found) = tokens.check(&token, T0 + 1).unwrap();
        assert_eq!(found.login, "ada");
        let err = tokens.check(&token, T0 + 3_600_000).unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)));
        assert!(err.to_string().contains("expired"), "{err}");
        // A readable UTC time, as `dupla login` prints it, not unix ms.
        assert_eq!(
            err.to_string(),
            "the token expired at 2023-11-14 23:13:20 UTC; log in again with `dupla login ada`"
        );
        assert!(tokens.revoke(&key).unwrap().is_some());
        let err = tokens.check(&token, T0 + 1).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        assert!(tokens.check("garbage", T0).is_err());
    }

    #[test]
    fn a_zero_lifetime_token_is_born_expired() {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), T0).unwrap();
        let (token, _) = tokens.issue("ada", None, Duration::ZERO, T0).unwrap();
        assert!(tokens.check(&token, T0).is_err());
    }

    #[test]
    fn sessions_are_counted_per_server_among_live_tokens() {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), T0).unwrap();
        tokens.issue("a", server("s1"), HOUR, T0).unwrap();
        tokens.issue("b", server("s1"), HOUR, T0).unwrap();
        tokens.issue("c", server("s2"), HOUR, T0).unwrap();
        tokens.issue("d", server("s2"), Duration::ZERO, T0).unwrap();
        tokens.issue("e", None, HOUR, T0).unwrap();
        let counts = tokens.sessions_per_server(T0 + 1, HOUR);
        assert_eq!(counts.get("s1"), Some(&2));
        assert_eq!(counts.get("s2"), Some(&1));
        assert_eq!(tokens.live(T0 + 1), 4);
        assert_eq!(tokens.revoke_user("b").unwrap().len(), 1);
        assert_eq!(tokens.sessions_per_server(T0 + 1, HOUR).get("s1"), Some(&1));
    }

    #[test]
    fn an_idle_session_stops_counting_until_it_is_used_again() {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), T0).unwrap();
        let (token, _) = tokens.issue("a", server("s1"), 10 * HOUR, T0).unwrap();
        let idle = Duration::from_secs(60);
        let later = T0 + 61_000;
        assert_eq!(tokens.sessions_per_server(later, idle).get("s1"), None);
        let (key, _) = tokens.check(&token, later).unwrap();
        tokens.touch(&key, later);
        assert_eq!(tokens.sessions_per_server(later, idle).get("s1"), Some(&1));
    }

    #[test]
    fn one_user_holds_a_bounded_number_of_tokens() {
        let mut tokens = Tokens::load(Arc::new(MemoryKv::new()), T0).unwrap();
        let (first, _) = tokens.issue("ada", None, HOUR, T0).unwrap();
        for i in 1..=MAX_TOKENS_PER_USER as i64 {
            tokens.issue("ada", None, HOUR, T0 + i).unwrap();
        }
        assert_eq!(tokens.live(T0 + 100), MAX_TOKENS_PER_USER);
        assert!(tokens.check(&first, T0 + 100).is_err(), "the oldest went");
    }

    #[test]
    fn tokens_and_revocations_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, gone) = {
            let kv = Arc::new(SledKv::open(dir.path()).unwrap());
            let mut tokens = Tokens::load(kv, T0).unwrap();
            let (kept, _) = tokens.issue("ada", server("s1"), HOUR, T0).unwrap();
            let (gone, _) = tokens.issue("ada", server("s1"), HOUR, T0).unwrap();
            tokens.revoke(&token_key(&gone)).unwrap();
            (kept, gone)
        };
        {
            let kv = Arc::new(SledKv::open(dir.path()).unwrap());
            let tokens = Tokens::load(kv, T0 + 1).unwrap();
            assert!(tokens.check(&kept, T0 + 1).is_ok());
            assert!(tokens.check(&gone, T0 + 1).is_err());
        }
        // Long-expired tokens are forgotten at load.
        let much_later = T0 + (HOUR + EXPIRED_RETENTION).as_millis() as i64 + 1;
        let tokens = Tokens::load(Arc::new(SledKv::open(dir.path()).unwrap()), much_later).unwrap();
        assert_eq!(tokens.by_key.len(), 0);
    }
}
