//! The room state: every connection ([`Client`]) and every room ([`Room`]),
//! held in [`Rooms`]. This part owns the data, its read-only queries and the
//! stamping of events (a room's sequence number is room state); the changes
//! to it live in `membership` (clients) and `lifecycle` (rooms), and
//! `handle` runs commands. The fields are visible to those sibling parts
//! only, never outside `rooms`.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClientId, Effect, Event, Kind, LOBBY};

/// One connection.
#[derive(Debug, Clone)]
pub(super) struct Client {
    pub(super) login: String,
    pub(super) room: String,
}

/// One room.
#[derive(Debug, Clone, Default)]
pub(super) struct Room {
    /// Login of the creator; `None` for the lobby.
    pub(super) creator: Option<String>,
    pub(super) members: BTreeSet<ClientId>,
    /// Sequence number of the last room event.
    pub(super) seq: u64,
}

/// Every room and connection.
#[derive(Debug, Clone)]
pub struct Rooms {
    pub(super) clients: BTreeMap<ClientId, Client>,
    pub(super) rooms: BTreeMap<String, Room>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    /// Just the lobby, empty.
    pub fn new() -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(LOBBY.to_string(), Room::default());
        Rooms {
            clients: BTreeMap::new(),
            rooms,
        }
    }

    /// Connections of `login`.
    pub fn clients_of(&self, login: &str) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(_, c)| c.login == login)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `login` has a connection.
    pub fn is_online(&self, login: &str) -> bool {
        self.clients.values().any(|c| c.login == login)
    }

    /// The room client `id` is in.
    pub fn room_of(&self, id: ClientId) -> Option<&str> {
        self.clients.get(&id).map(|c| c.room.as_str())
    }

    /// Every room name with its number of participants, lobby first.
    pub fn occupancy(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .rooms
            .iter()
            .map(|(name, r)| (name.clone(), r.members.len()))
            .collect();
        all.sort_by_key(|(name, _)| (name != LOBBY, name.clone()));
        all
    }

    /// A one-client answer, stamped with the client's room.
    pub(super) fn answer(&self, id: ClientId, now: i64, text: String) -> Effect {
        let room = self.room_of(id).unwrap_or(LOBBY).to_string();
        Effect::Tell(id, self.event(&room, Kind::Answer, "", text, now))
    }

    /// A room notice with the room's next sequence number.
    pub(super) fn notice(&mut self, room: &str, now: i64, text: String) -> Effect {
        self.room_event(room, Kind::Notice, "", text, now)
    }

    /// A room event with the room's next sequence number.
    pub(super) fn room_event(
        &mut self,
        room: &str,
        kind: Kind,
        from: &str,
        text: String,
        now: i64,
    ) -> Effect {
        let seq = match self.rooms.get_mut(room) {
            Some(r) => {
                r.seq += 1;
                r.seq
            }
            None => 0,
        };
        Effect::Broadcast(Event {
            seq,
            ..self.event(room, kind, from, text, now)
        })
    }

    /// An event without a sequence number.
    pub(super) fn event(
        &self,
        room: &str,
        kind: Kind,
        from: &str,
        text: String,
        now: i64,
    ) -> Event {
        Event {
            kind,
            room: room.to_string(),
            seq: 0,
            unix_ms: now,
            from: from.to_string(),
            text,
        }
    }
}
