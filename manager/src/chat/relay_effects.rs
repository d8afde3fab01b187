//! The core's [`Effect`]s as a storage server carries them out through the
//! broker. Pure, so the translation is tested on its own.
//!
//! - A room event becomes one [`pb::RoomEnvelope`] for the room's topic.
//! - A move is not sent by itself: it rides on the next event of the room
//!   the client enters (always its "joined" notice), in `joined`. So a
//!   client starts hearing a room exactly at its own join notice, in the
//!   order the broker delivers that room's events, and a server that holds
//!   the client needs no second message on another topic (whose order
//!   against the room's topic MQTT does not promise).
//! - An event for one client names the client's server; the calling
//!   server hands it over itself or publishes it on that server's topic.
//! - Opening and closing rooms are the manager's business only.

use crate::chat::room_hub::to_wire;
use crate::chat::rooms::{ClientId, Effect};
use dupla::v1::{self as pb, relay_effect};
use std::collections::HashMap;

/// Translate `effects`; `owner` says where a connection is (`None`: it is
/// gone, and what was for it is dropped); `origin` is the connection whose
/// line or command made them.
pub fn translate(
    effects: Vec<Effect>,
    owner: impl Fn(ClientId) -> Option<pb::ClientRef>,
    origin: Option<pb::ClientRef>,
) -> Vec<pb::RelayEffect> {
    let mut out = Vec::new();
    // Clients entering each room, waiting for the room's next event.
    let mut entering: HashMap<String, Vec<pb::ClientRef>> = HashMap::new();
    for effect in effects {
        let effect = match effect {
            Effect::Broadcast(event) => {
                let joined = entering.remove(&event.room).unwrap_or_default();
                let mut event = to_wire(event);
                // Numbered by each receiving server, in broker order.
                event.seq = 0;
                relay_effect::Effect::Room(pb::RoomEnvelope {
                    event: Some(event),
                    origin: origin.clone(),
                    joined,
                })
            }
            Effect::Move(id, room) => {
                if let Some(client) = owner(id) {
                    entering.entry(room).or_default().push(client);
                }
                continue;
            }
            Effect::Tell(id, event) => match owner(id) {
                Some(to) => relay_effect::Effect::Tell(pb::ClientEvent {
                    to: Some(to),
                    event: Some(to_wire(event)),
                }),
                None => continue,
            },
            Effect::Disconnect(id) => match owner(id) {
                Some(client) => relay_effect::Effect::Disconnect(client),
                None => continue,
            },
            Effect::Open(_) | Effect::Close(_) => continue,
        };
        out.push(pb::RelayEffect {
            effect: Some(effect),
        });
    }
    for (room, clients) in entering {
        // The core always announces an arrival; say so if it ever does not.
        tracing::warn!(%room, clients = clients.len(), "a move without a join notice");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::rooms::{Command, Rooms, LOBBY};

    struct NoUsers;
    impl crate::chat::rooms::Directory for NoUsers {
        fn exists(&self, _: &str) -> bool {
            false
        }
        fn logins(&self) -> Vec<String> {
            Vec::new()
        }
    }

    fn at(id: ClientId) -> Option<pb::ClientRef> {
        Some(pb::ClientRef {
            server_id: format!("s{id}"),
            client_id: id,
        })
    }

    /// `(kind, room or client, text, joined clients)` of each effect.
    fn show(effects: &[pb::RelayEffect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e.effect.as_ref().unwrap() {
                relay_effect::Effect::Room(env) => {
                    let ev = env.event.as_ref().unwrap();
                    let joined: Vec<String> = env
                        .joined
                        .iter()
                        .map(|c| format!("{}@{}", c.client_id, c.server_id))
                        .collect();
                    format!(
                        "room {} seq {} {:?} joined {joined:?}",
                        ev.room, ev.seq, ev.text
                    )
                }
                relay_effect::Effect::Tell(t) => format!(
                    "tell {} {:?}",
                    t.to.as_ref().unwrap().client_id,
                    t.event.as_ref().unwrap().text
                ),
                relay_effect::Effect::Disconnect(c) => format!("disconnect {}", c.client_id),
            })
            .collect()
    }

    #[test]
    fn a_move_rides_on_the_join_notice_of_the_room_entered() {
        let mut rooms = Rooms::new();
        let fx = rooms.connect(1, "alice", 0);
        assert_eq!(
            show(&translate(fx, at, at(1))),
            [
                "tell 1 \"welcome alice; you are in lobby (1 here); #help lists the commands\"",
                "room lobby seq 0 \"alice joined lobby\" joined [\"1@s1\"]",
            ]
        );
        rooms.connect(2, "bob", 0);
        let fx = rooms.handle(1, Command::Create("games".into()), &NoUsers, 0);
        assert_eq!(
            show(&translate(fx, at, at(1))),
            [
                "tell 1 \"you are now in games (1 here)\"",
                "room lobby seq 0 \"alice left lobby\" joined []",
                "room games seq 0 \"alice joined games\" joined [\"1@s1\"]",
            ]
        );
        rooms.handle(2, Command::Go("games".into()), &NoUsers, 0);
        // The creator leaves: bob, on another server, is sent to the lobby.
        let fx = rooms.disconnect(1, 0);
        assert_eq!(
            show(&translate(fx, at, at(1))),
            [
                "room games seq 0 \"alice left games\" joined []",
                "tell 2 \"room games was removed (its creator alice disconnected); you are back in lobby\"",
                "room lobby seq 0 \"bob joined lobby\" joined [\"2@s2\"]",
            ]
        );
        assert_eq!(rooms.room_of(2), Some(LOBBY));
    }

    #[test]
    fn effects_for_connections_that_are_gone_are_dropped() {
        let mut rooms = Rooms::new();
        rooms.connect(1, "alice", 0);
        let fx = rooms.handle(1, Command::Exit, &NoUsers, 0);
        assert_eq!(
            show(&translate(fx.clone(), at, None)),
            ["tell 1 \"bye\"", "disconnect 1"]
        );
        assert!(translate(fx, |_| None, None).is_empty());
    }
}
