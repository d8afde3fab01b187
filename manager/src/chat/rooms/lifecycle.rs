//! Room lifecycle: rooms being created (`#cR`, within [`MAX_ROOMS`] and
//! [`MAX_ROOMS_PER_USER`], so room creation cannot exhaust the manager's
//! memory) and removed (`#dR` by their creator, or when the creator's last
//! connection closes), their members sent back to the lobby with a notice.

use super::state::{Client, Room};
use super::{ClientId, Effect, Kind, Rooms, LOBBY};

/// Rooms at once, so room creation cannot exhaust the manager's memory.
pub const MAX_ROOMS: usize = 1000;
/// Rooms one user may have created at once.
pub const MAX_ROOMS_PER_USER: usize = 16;

impl Rooms {
    /// `#cR`: refuse an existing name or a user with too many rooms.
    pub(super) fn create(
        &mut self,
        id: ClientId,
        client: &Client,
        name: &str,
        now: i64,
    ) -> Vec<Effect> {
        if self.rooms.contains_key(name) {
            let text = format!("room {name} already exists; #gR {name} enters it");
            return vec![self.answer(id, now, text)];
        }
        let mine = self
            .rooms
            .values()
            .filter(|r| r.creator.as_deref() == Some(client.login.as_str()))
            .count();
        if mine >= MAX_ROOMS_PER_USER || self.rooms.len() >= MAX_ROOMS {
            let text = format!(
                "cannot create {name}: too many rooms (at most {MAX_ROOMS_PER_USER} per user, {MAX_ROOMS} in all); #dR one first"
            );
            return vec![self.answer(id, now, text)];
        }
        self.rooms.insert(
            name.to_string(),
            Room {
                creator: Some(client.login.clone()),
                ..Room::default()
            },
        );
        let mut fx = vec![Effect::Open(name.to_string())];
        fx.extend(self.enter(id, client, name, now));
        fx
    }

    /// `#dR`: only the creator; the lobby never.
    pub(super) fn delete(
        &mut self,
        id: ClientId,
        client: &Client,
        name: &str,
        now: i64,
    ) -> Vec<Effect> {
        let text = match self.rooms.get(name) {
            None => format!("no room named {name}; #lR lists the rooms"),
            Some(room) => match room.creator.as_deref() {
                None => format!("{LOBBY} cannot be deleted"),
                Some(creator) if creator != client.login => {
                    format!("only {creator}, who created {name}, may delete it")
                }
                Some(_) => {
                    let why = format!("{} deleted it", client.login);
                    let mut fx = self.remove_room(name, &why, now);
                    fx.insert(0, self.answer(id, now, format!("deleted room {name}")));
                    return fx;
                }
            },
        };
        vec![self.answer(id, now, text)]
    }

    /// Remove a room: its members go to the lobby, told why.
    pub(super) fn remove_room(&mut self, name: &str, why: &str, now: i64) -> Vec<Effect> {
        let Some(room) = self.rooms.remove(name) else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        for member in room.members {
            let Some(client) = self.clients.get_mut(&member) else {
                continue;
            };
            client.room = LOBBY.to_string();
            let login = client.login.clone();
            self.rooms
                .get_mut(LOBBY)
                .expect("invariant: the lobby exists")
                .members
                .insert(member);
            fx.push(Effect::Move(member, LOBBY.into()));
            let text = format!("room {name} was removed ({why}); you are back in {LOBBY}");
            fx.push(Effect::Tell(
                member,
                self.event(LOBBY, Kind::Notice, "", text, now),
            ));
            fx.push(self.notice(LOBBY, now, format!("{login} joined {LOBBY}")));
        }
        fx.push(Effect::Close(name.to_string()));
        fx
    }
}

#[cfg(test)]
mod tests {
    use crate::chat::rooms::tests::USERS;
    use crate::chat::rooms::{Command, Effect, Rooms, MAX_ROOMS_PER_USER};

    #[test]
    fn room_creation_is_bounded_per_user() {
        let mut rooms = Rooms::new();
        rooms.connect(1, "alice", 0);
        for i in 0..MAX_ROOMS_PER_USER {
            let fx = rooms.handle(1, Command::Create(format!("r{i}")), &USERS, 0);
            assert!(matches!(fx[0], Effect::Open(_)));
        }
        let fx = rooms.handle(1, Command::Create("one-more".into()), &USERS, 0);
        assert!(matches!(&fx[0], Effect::Tell(1, e) if e.text.contains("too many rooms")));
    }
}
