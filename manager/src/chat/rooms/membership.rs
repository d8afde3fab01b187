//! Membership: clients connecting, disconnecting and moving between rooms,
//! each change announced in the rooms it touches. A connection lands in the
//! lobby; the last connection of a user to close takes the rooms that user
//! created with it (their removal itself is `lifecycle`'s job).

use super::state::Client;
use super::{ClientId, Effect, Rooms, LOBBY};

impl Rooms {
    /// A new connection of `login`: it lands in the lobby.
    pub fn connect(&mut self, id: ClientId, login: &str, now: i64) -> Vec<Effect> {
        self.clients.insert(
            id,
            Client {
                login: login.to_string(),
                room: LOBBY.to_string(),
            },
        );
        let mut fx = Vec::new();
        let lobby = self
            .rooms
            .get_mut(LOBBY)
            .expect("invariant: the lobby exists");
        lobby.members.insert(id);
        let here = lobby.members.len();
        fx.push(Effect::Move(id, LOBBY.into()));
        fx.push(self.answer(
            id,
            now,
            format!("welcome {login}; you are in {LOBBY} ({here} here); #help lists the commands"),
        ));
        fx.push(self.notice(LOBBY, now, format!("{login} joined {LOBBY}")));
        fx
    }

    /// A connection closed: it leaves its room, and when it was its user's
    /// last one, the rooms the user created are removed.
    pub fn disconnect(&mut self, id: ClientId, now: i64) -> Vec<Effect> {
        let Some(client) = self.clients.remove(&id) else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        if let Some(room) = self.rooms.get_mut(&client.room) {
            room.members.remove(&id);
        }
        fx.push(self.notice(
            &client.room,
            now,
            format!("{} left {}", client.login, client.room),
        ));
        if !self.clients.values().any(|c| c.login == client.login) {
            let created: Vec<String> = self
                .rooms
                .iter()
                .filter(|(_, r)| r.creator.as_deref() == Some(client.login.as_str()))
                .map(|(name, _)| name.clone())
                .collect();
            for name in created {
                let why = format!("its creator {} disconnected", client.login);
                fx.extend(self.remove_room(&name, &why, now));
            }
        }
        fx
    }

    /// `#gR`: the room must exist and not be the current one.
    pub(super) fn go(
        &mut self,
        id: ClientId,
        client: &Client,
        name: &str,
        now: i64,
    ) -> Vec<Effect> {
        if client.room == name {
            return vec![self.answer(id, now, format!("you are already in {name}"))];
        }
        if !self.rooms.contains_key(name) {
            let text = format!("no room named {name}; #lR lists the rooms, #cR {name} creates it");
            return vec![self.answer(id, now, text)];
        }
        self.enter(id, client, name, now)
    }

    /// Move client `id` into the existing room `to`, announcing it.
    pub(super) fn enter(
        &mut self,
        id: ClientId,
        client: &Client,
        to: &str,
        now: i64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(old) = self.rooms.get_mut(&client.room) {
            old.members.remove(&id);
        }
        let room = self
            .rooms
            .get_mut(to)
            .expect("invariant: callers check the room exists");
        room.members.insert(id);
        let here = room.members.len();
        if let Some(c) = self.clients.get_mut(&id) {
            c.room = to.to_string();
        }
        fx.push(self.answer(id, now, format!("you are now in {to} ({here} here)")));
        fx.push(self.notice(
            &client.room,
            now,
            format!("{} left {}", client.login, client.room),
        ));
        fx.push(Effect::Move(id, to.to_string()));
        fx.push(self.notice(to, now, format!("{} joined {to}", client.login)));
        fx
    }
}

#[cfg(test)]
mod tests {
    use crate::chat::rooms::tests::USERS;
    use crate::chat::rooms::{Command, Effect, Rooms, LOBBY};

    #[test]
    fn a_creator_with_another_connection_keeps_the_room() {
        let mut rooms = Rooms::new();
        rooms.connect(1, "alice", 0);
        rooms.connect(2, "alice", 0);
        rooms.handle(1, Command::Create("games".into()), &USERS, 0);
        let fx = rooms.disconnect(1, 0);
        assert!(!fx.contains(&Effect::Close("games".into())));
        let fx = rooms.disconnect(2, 0);
        assert!(fx.contains(&Effect::Close("games".into())));
        assert_eq!(rooms.occupancy(), vec![(LOBBY.to_string(), 0)]);
    }
}
