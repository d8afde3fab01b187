//! Carrying out what the manager's `RoomRelay` answered: room events are
//! published on their room's topic, events for connections here are handed
//! to them, events for connections elsewhere are published on their
//! server's topic, in the order the manager gave them.
//!
//! Kept apart from the session (`room_service`) because a connection's
//! departure is carried out after its session is gone, and a restarted
//! server carries out the departures of its previous run's connections.

use crate::room_relay::{chat_topic, room_topic, RoomRelay};
use dupla::v1::{self as pb, relay_effect};
use prost::Message as _;

/// What the effects mean for connection `me` itself.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct ForMe {
    /// It is to end (`#exit`), after the events it was handed.
    pub exit: bool,
}

/// Carry out `effects` made by (or for) connection `me` of this server (0:
/// none). A failed publish is logged: the manager already changed the
/// rooms, and the connection's own join notice, if lost, is replaced by
/// letting it hear its new room at once.
pub async fn carry_out(relay: &RoomRelay, me: u64, effects: Vec<pb::RelayEffect>) -> ForMe {
    let mut for_me = ForMe::default();
    let here = relay.server_id().to_string();
    let is_me = |c: &pb::ClientRef| me != 0 && c.server_id == here && c.client_id == me;
    for effect in effects.into_iter().filter_map(|e| e.effect) {
        match effect {
            relay_effect::Effect::Room(envelope) => {
                let Some(room) = envelope.event.as_ref().map(|e| e.room.clone()) else {
                    continue;
                };
                // Its own events in the room it is in come back to it: its
                // next answer waits for them.
                let echo = envelope.origin.as_ref().is_some_and(is_me)
                    && relay.room_of(me).as_deref() == Some(room.as_str());
                let joins_me = envelope.joined.iter().any(is_me);
                if echo {
                    relay.expect_echo(me, true);
                }
                let published = relay
                    .link()
                    .publish_bytes(room_topic(&room), envelope.encode_to_vec())
                    .await;
                if let Err(e) = published {
                    tracing::warn!(%room, error = %e, "a room notice was not published");
                    if echo {
                        relay.expect_echo(me, false);
                    }
                    if joins_me {
                        relay.hear(me, &room);
                    }
                }
            }
            relay_effect::Effect::Tell(one) => {
                let (Some(to), Some(event)) = (one.to.clone(), one.event.clone()) else {
                    continue;
                };
                if to.server_id == here {
                    relay.tell(to.client_id, event);
                    continue;
                }
                let envelope = pb::ClientEnvelope { events: vec![one] };
                let topic = chat_topic(&to.server_id);
                if let Err(e) = relay
                    .link()
                    .publish_bytes(topic, envelope.encode_to_vec())
                    .await
                {
                    tracing::warn!(server = %to.server_id, error = %e, "a chat event was not published");
                }
            }
            relay_effect::Effect::Disconnect(client) if is_me(&client) => for_me.exit = true,
            relay_effect::Effect::Disconnect(client) if client.server_id == here => {
                relay.kick(client.client_id, "disconnected")
            }
            relay_effect::Effect::Disconnect(_) => {}
        }
    }
    for_me
}
