//! Chat rooms, the pure core: who is connected, who is in which room, who
//! created what, which commands parse and who may run them. No tokio, no
//! sockets, no clock: each call takes the time and returns [`Effect`]s —
//! "broadcast this in room X", "tell client 3 that", "client 3 now listens
//! to room Y" — that the hub (`room_hub.rs`) carries out on channels.
//!
//! Rules, as in docs/chat.md: a client lands in [`LOBBY`]; lines not
//! starting with `#` go to everyone in its room (the sender included),
//! shown under the user's login; membership changes are announced in the
//! room; a room lives until its creator deletes it or the creator's last
//! connection closes, and its members then return to the lobby with a
//! notice. Room events carry a per-room sequence number.
//!
//! The parts, each with one job (all private; everything public is
//! re-exported here, so callers keep using `crate::chat::rooms::…`):
//!
//! - `dupla::chat::command` (in the core crate, since the storage servers
//!   parse lines too): one line of text to a [`Command`], or the answer why
//!   not.
//! - `event`: what the core hands back — [`Event`], [`Kind`], [`Effect`].
//! - `state`: the [`Rooms`] data, its read-only queries and how events are
//!   stamped with a room's sequence number.
//! - `membership`: clients connecting, disconnecting and moving between rooms.
//! - `lifecycle`: rooms being created and removed, and the limits on them.
//! - `handle`: running one [`Command`], and the answers that need the
//!   [`Directory`] of users (private messages, `#show users`) or `#lR`.
//! - `tests`: golden transcripts of whole sessions, and the fixtures the
//!   submodules' unit tests share.

mod event;
mod handle;
mod lifecycle;
mod membership;
mod state;
#[cfg(test)]
mod tests;

pub use dupla::chat::command::{
    parse, validate_room, Command, HELP, MAX_LINE_BYTES, MAX_ROOM_NAME,
};
pub use event::{Effect, Event, Kind};
pub use handle::Directory;
pub use lifecycle::{MAX_ROOMS, MAX_ROOMS_PER_USER};
pub use state::Rooms;

/// Identifies one chat connection (a user may have several).
pub type ClientId = u64;

/// The default room: every client lands here; it is never deleted.
pub const LOBBY: &str = "lobby";
