//! Who is online for the social network: a user is online while one of
//! their `Social/Messages` streams is open on a storage server that is up,
//! under a token that still works (logout, expiry and account deletion
//! take a user offline at once, before their stream has even closed).
//!
//! Entries live in the manager's database (`login \0 server \0 stream` →
//! token key), so a manager restart keeps them; a restarted server clears
//! its own with `SocialGraph/ResetServer`.

use dupla::kv::{Batch, Kv};
use dupla::Result;
use std::sync::Arc;

const PRESENCE: &str = "social_presence";

/// One open stream of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The server holding it.
    pub server_id: String,
    /// Its id on that server.
    pub stream_id: String,
    /// The key of the token it was opened with.
    pub token_key: String,
}

/// The open streams.
pub struct Presence {
    kv: Arc<dyn Kv>,
}

fn key(login: &str, server_id: &str, stream_id: &str) -> Vec<u8> {
    format!("{login}\0{server_id}\0{stream_id}").into_bytes()
}

impl Presence {
    /// Presence kept in `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Presence { kv }
    }

    /// `login` opened a stream.
    pub fn attach(&self, login: &str, stream: &Stream) -> Result<()> {
        self.kv.put(
            PRESENCE,
            &key(login, &stream.server_id, &stream.stream_id),
            stream.token_key.as_bytes(),
        )
    }

    /// `login`'s stream closed.
    pub fn detach(&self, login: &str, server_id: &str, stream_id: &str) -> Result<()> {
        self.kv
            .delete(PRESENCE, &key(login, server_id, stream_id))
            .map(|_| ())
    }

    /// Every stream `login` has open (the caller filters dead tokens and
    /// servers).
    pub fn streams(&self, login: &str) -> Result<Vec<Stream>> {
        let mut prefix = login.as_bytes().to_vec();
        prefix.push(0);
        Ok(self
            .kv
            .scan_prefix(PRESENCE, &prefix)?
            .into_iter()
            .filter_map(|(k, v)| {
                let text = String::from_utf8(k).ok()?;
                let mut parts = text.splitn(3, '\0').skip(1);
                Some(Stream {
                    server_id: parts.next()?.to_string(),
                    stream_id: parts.next()?.to_string(),
                    token_key: String::from_utf8(v).ok()?,
                })
            })
            .collect())
    }

    /// Forget every stream of `server_id` (it restarted: they are gone) and
    /// of `login` (the account was deleted); either may be empty.
    pub fn forget(&self, server_id: &str, login: &str) -> Result<()> {
        let mut batch = Batch::new();
        for (k, _) in self.kv.scan_prefix(PRESENCE, b"")? {
            let text = String::from_utf8_lossy(&k);
            let mut parts = text.split('\0');
            let (who, server) = (parts.next(), parts.next());
            if (!login.is_empty() && who == Some(login))
                || (!server_id.is_empty() && server == Some(server_id))
            {
                batch.delete(PRESENCE, k.clone());
            }
        }
        self.kv.apply(&batch)
    }
}
