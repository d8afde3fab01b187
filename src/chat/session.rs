//! What every chat session has in common, wherever it runs (the manager's
//! own chat, a storage server's): the wire and timing limits, and the
//! events a session makes itself rather than the room rules.

use crate::clock;
use crate::v1::{chat_event, ChatEvent};
use std::time::Duration;

/// Largest ChatInput accepted on the wire: a 4 KiB line plus framing, with
/// room to answer "too long" for lines a little over the limit instead of
/// failing the whole stream.
pub const MAX_CHAT_MESSAGE_BYTES: usize = 64 << 10;

/// How often a connected session checks that its token still works, so an
/// expired token (or one revoked elsewhere) ends an idle chat too.
pub const TOKEN_RECHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How long a session that is ending waits to hand the client the reason.
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

/// An event for this connection only, made by its session (an answer it
/// gives itself, the reason it ends), stamped with this node's clock.
pub fn local_event(kind: chat_event::Kind, text: &str) -> ChatEvent {
    ChatEvent {
        kind: kind as i32,
        room: String::new(),
        seq: 0,
        server_unix_ms: clock::unix_ms(),
        from: String::new(),
        text: text.to_string(),
    }
}
