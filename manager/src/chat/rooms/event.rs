//! What the core hands back: the [`Event`]s clients see, how each is shown
//! ([`Kind`]), and the [`Effect`]s the hub carries out on its channels. Plain
//! data, shared by every part of the core and by the hub, which turns events
//! into wire messages.

use super::ClientId;

/// How a client shows an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Said in a room: `from: text`.
    Message,
    /// To one user: `[private] from: text`.
    Private,
    /// Something happened in the room: `* text`.
    Notice,
    /// The answer to the client's own command: `* text`.
    Answer,
}

/// One event for one client or a whole room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// How to show it.
    pub kind: Kind,
    /// The room it belongs to (or the receiver's room, for one-client events).
    pub room: String,
    /// Per-room sequence number of room events; 0 for one-client events.
    pub seq: u64,
    /// Server time, ms since the Unix epoch.
    pub unix_ms: i64,
    /// Sender login (messages); empty otherwise.
    pub from: String,
    /// The text.
    pub text: String,
}

/// What the hub must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send to everyone listening to `event.room`.
    Broadcast(Event),
    /// Send to one client only.
    Tell(ClientId, Event),
    /// The client now listens to this room (and no longer to its old one).
    Move(ClientId, String),
    /// A room was created: open its channel.
    Open(String),
    /// A room was removed: close its channel (after the moves before it).
    Close(String),
    /// End this client's session.
    Disconnect(ClientId),
}
