//! Running commands: [`Rooms::handle`] dispatches one parsed [`Command`] of a
//! client to the part that carries it out (`membership` for moves,
//! `lifecycle` for creating and deleting rooms) and itself carries out the
//! ones that move no one: messages, `#help`, `#exit`, the room list (`#lR`),
//! the user list (`#show users`) and private messages. The last two look
//! users up in the [`Directory`] of accounts, which is why it is defined here.

use super::state::Client;
use super::{ClientId, Command, Effect, Kind, Rooms, HELP, LOBBY};

/// Where the registered users come from (the accounts database).
pub trait Directory {
    /// Whether `login` has an account.
    fn exists(&self, login: &str) -> bool;
    /// Every login, in order.
    fn logins(&self) -> Vec<String>;
}

impl Rooms {
    /// Run one command of client `id`.
    pub fn handle(
        &mut self,
        id: ClientId,
        command: Command,
        dir: &dyn Directory,
        now: i64,
    ) -> Vec<Effect> {
        let Some(client) = self.clients.get(&id).cloned() else {
            return Vec::new();
        };
        match command {
            // Everyone in the room, the sender included, sees the message.
            Command::Say(text) => {
                vec![self.room_event(&client.room, Kind::Message, &client.login, text, now)]
            }
            Command::Create(name) => self.create(id, &client, &name, now),
            Command::Go(name) => self.go(id, &client, &name, now),
            // No effect when already in the lobby, but say so.
            Command::Lobby if client.room == LOBBY => {
                vec![self.answer(id, now, format!("you are already in {LOBBY}"))]
            }
            Command::Lobby => self.enter(id, &client, LOBBY, now),
            Command::Delete(name) => self.delete(id, &client, &name, now),
            Command::List => vec![self.answer(id, now, self.list())],
            Command::ShowUsers => vec![self.answer(id, now, self.users(dir))],
            Command::Private { to, text } => self.private(id, &client, &to, text, dir, now),
            Command::Help => vec![self.answer(id, now, HELP.into())],
            Command::Exit => vec![self.answer(id, now, "bye".into()), Effect::Disconnect(id)],
        }
    }

    /// `#\private`: to every connection of `to`, or a clear answer why not.
    fn private(
        &mut self,
        id: ClientId,
        client: &Client,
        to: &str,
        text: String,
        dir: &dyn Directory,
        now: i64,
    ) -> Vec<Effect> {
        let targets = self.clients_of(to);
        if targets.is_empty() {
            let answer = if dir.exists(to) {
                format!("{to} is offline; private messages are not kept, try again later")
            } else {
                format!("no user named {to}; #show users lists them")
            };
            return vec![self.answer(id, now, answer)];
        }
        let mut fx = vec![self.answer(id, now, format!("private to {to}: {text}"))];
        for target in targets {
            let room = self.room_of(target).unwrap_or(LOBBY).to_string();
            let event = self.event(&room, Kind::Private, &client.login, text.clone(), now);
            fx.push(Effect::Tell(target, event));
        }
        fx
    }

    /// The `#lR` answer.
    fn list(&self) -> String {
        let rooms: Vec<String> = self
            .occupancy()
            .into_iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        format!("rooms: {}", rooms.join(", "))
    }

    /// The `#show users` answer.
    fn users(&self, dir: &dyn Directory) -> String {
        let users: Vec<String> = dir
            .logins()
            .into_iter()
            .map(|login| {
                let state = if self.is_online(&login) {
                    "online"
                } else {
                    "offline"
                };
                format!("{login} ({state})")
            })
            .collect();
        format!("users: {}", users.join(", "))
    }
}
