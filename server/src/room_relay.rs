//! The chat rooms' side of a storage server's broker link: the chat
//! connections open here, which room each one talks to and hears, the
//! topics that takes, and the delivery of what the broker brings.
//!
//! Topics: `dupla/v1/rooms/<room>` carries a room's events (messages and
//! notices, one [`pb::RoomEnvelope`] each); `dupla/v1/chat/<server id>`
//! carries events for single connections on that server (answers to
//! someone else's command, private messages). A server subscribes to the
//! lobby always (every connection lands there, and members of a removed
//! room are sent there) and to every other room one of its connections is
//! in.
//!
//! **Order.** Every member must see a room's events in the same order.
//! The simplest correct rule here is the broker's own: all of a room's
//! events travel on the room's one topic through one broker, which hands
//! them to every subscriber in the order it took them (MQTT orders a topic
//! per publisher; Mosquitto, ActiveMQ and the embedded broker keep one
//! order per topic for all subscribers, since each processes a topic's
//! publishes one at a time). A per-room numbering server would survive
//! several brokers, but Dupla uses one broker, and a home server would add
//! a hop and a hand-over when servers come and go. The price: `seq` is
//! numbered here, by each receiving server in that order, from 1 for the
//! first event of the room it received — gapless for a client that keeps
//! up, the same order everywhere, but two servers may give one event
//! different numbers.
//!
//! **Joining.** A connection starts hearing a room at its own "joined"
//! notice, which names it (`joined`): events said before it came are not
//! shown, whatever the timing of the broker's deliveries.

use crate::broker::{BrokerLink, Inbound};
use dupla::v1::{self as pb, ChatEvent};
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// The room every connection lands in.
pub const LOBBY: &str = "lobby";

/// Where a connection's events go.
pub type Outbox = mpsc::Sender<Result<ChatEvent, Status>>;

/// The topic of room `room`'s events.
pub fn room_topic(room: &str) -> String {
    format!("dupla/v1/rooms/{room}")
}

/// The topic of events for single connections on server `id`.
pub fn chat_topic(id: &str) -> String {
    format!("dupla/v1/chat/{id}")
}

/// One chat connection here.
struct Local {
    /// Where its messages go.
    room: String,
    /// The room it hears; `None` between leaving one and its "joined"
    /// notice in the next.
    hearing: Option<String>,
    out: Outbox,
    /// Its own room events published and not yet back from the broker.
    echoes: watch::Sender<u32>,
    /// Set to a reason to end its session.
    kick: watch::Sender<Option<String>>,
}

/// What a new connection's session holds.
pub struct Registered {
    /// Becomes 0 when its own events are back.
    pub echoes: watch::Receiver<u32>,
    /// Becomes `Some(reason)` when it must end.
    pub kick: watch::Receiver<Option<String>>,
}

#[derive(Default)]
struct State {
    clients: HashMap<u64, Local>,
    /// Room topics subscribed to (besides the lobby's).
    subscribed: HashSet<String>,
    /// Events received per room: the next `seq`.
    seqs: HashMap<String, u64>,
}

/// The connections here and their rooms.
pub struct RoomRelay {
    server_id: String,
    link: Arc<BrokerLink>,
    state: Mutex<State>,
}

impl RoomRelay {
    /// Rooms of server `server_id`, through `link`.
    pub fn new(server_id: String, link: Arc<BrokerLink>) -> Self {
        RoomRelay {
            server_id,
            link,
            state: Mutex::new(State::default()),
        }
    }

    /// This server's id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The broker link.
    pub fn link(&self) -> &BrokerLink {
        &self.link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("room relay lock poisoned")
    }

    /// Connection `id` (named by the manager) opened here; it is in the
    /// lobby and hears it from its "joined" notice on.
    pub fn register(&self, id: u64, out: Outbox) -> Registered {
        let (echoes, echoes_rx) = watch::channel(0);
        let (kick, kick_rx) = watch::channel(None);
        let local = Local {
            room: LOBBY.into(),
            hearing: None,
            out,
            echoes,
            kick,
        };
        self.lock().clients.insert(id, local);
        Registered {
            echoes: echoes_rx,
            kick: kick_rx,
        }
    }

    /// Connection `id` closed.
    pub fn unregister(&self, id: u64) {
        let mut state = self.lock();
        state.clients.remove(&id);
        self.resubscribe(&mut state);
    }

    /// The room connection `id` talks to.
    pub fn room_of(&self, id: u64) -> Option<String> {
        self.lock().clients.get(&id).map(|c| c.room.clone())
    }

    /// Connection `id` is in `room` now (the manager said so): its messages
    /// go there, and, when it changed rooms, it stops hearing the old one
    /// until its "joined" notice in the new one arrives. Subscribes to the
    /// room first, so the notice published after this is received.
    pub fn moved(&self, id: u64, room: &str) {
        let mut state = self.lock();
        let Some(client) = state.clients.get_mut(&id) else {
            return;
        };
        if client.room != room {
            client.room = room.to_string();
            client.hearing = None;
        }
        self.resubscribe(&mut state);
    }

    /// Connection `id` hears `room` from now on (its join notice could not
    /// be published: the broker went away).
    pub fn hear(&self, id: u64, room: &str) {
        if let Some(client) = self.lock().clients.get_mut(&id) {
            client.hearing = Some(room.to_string());
        }
    }

    /// One more event of connection `id` is on its way through the broker
    /// (`up`), or one will not come after all (`!up`).
    pub fn expect_echo(&self, id: u64, up: bool) {
        if let Some(client) = self.lock().clients.get(&id) {
            client.echoes.send_modify(|n| {
                *n = if up { *n + 1 } else { n.saturating_sub(1) };
            });
        }
    }

    /// End connection `id`, telling it `reason`.
    pub fn kick(&self, id: u64, reason: &str) {
        if let Some(client) = self.lock().clients.get(&id) {
            client.kick.send_replace(Some(reason.to_string()));
        }
    }

    /// Hand `event` to connection `id` here, if it is; a connection whose
    /// queue is full stopped reading and is ended rather than waited for.
    pub fn tell(&self, id: u64, event: ChatEvent) {
        let state = self.lock();
        if let Some(client) = state.clients.get(&id) {
            offer(client, event);
        }
    }

    /// Subscribe to the rooms the connections need, drop the others.
    fn resubscribe(&self, state: &mut State) {
        let needed: HashSet<String> = state
            .clients
            .values()
            .flat_map(|c| [Some(&c.room), c.hearing.as_ref()])
            .flatten()
            .filter(|r| r.as_str() != LOBBY)
            .cloned()
            .collect();
        for room in needed.difference(&state.subscribed) {
            self.link.subscribe(&room_topic(room));
        }
        for room in state.subscribed.difference(&needed) {
            self.link.unsubscribe(&room_topic(room));
            state.seqs.remove(room);
        }
        state.subscribed = needed;
    }

    /// A room event from the broker: number it, let the connections it
    /// names in, count back its sender's echo, hand it to every connection
    /// here hearing the room.
    fn on_room(&self, room: &str, envelope: pb::RoomEnvelope) {
        let Some(mut event) = envelope.event else {
            return;
        };
        let mut state = self.lock();
        let seq = state.seqs.entry(room.to_string()).or_insert(0);
        *seq += 1;
        event.seq = *seq;
        event.room = room.to_string();
        let mut moved = false;
        for joined in envelope
            .joined
            .iter()
            .filter(|c| c.server_id == self.server_id)
        {
            if let Some(client) = state.clients.get_mut(&joined.client_id) {
                client.room = room.to_string();
                client.hearing = Some(room.to_string());
                moved = true;
            }
        }
        if moved {
            // Sent here by someone else (its room was removed): the old
            // room may have no listener left.
            self.resubscribe(&mut state);
        }
        if let Some(origin) = envelope.origin.filter(|o| o.server_id == self.server_id) {
            if let Some(client) = state.clients.get(&origin.client_id) {
                client.echoes.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        for client in state.clients.values() {
            if client.hearing.as_deref() == Some(room) {
                offer(client, event.clone());
            }
        }
    }

    /// Events for single connections here.
    fn on_direct(&self, envelope: pb::ClientEnvelope) {
        for one in envelope.events {
            let (Some(to), Some(event)) = (one.to, one.event) else {
                continue;
            };
            if to.server_id == self.server_id {
                self.tell(to.client_id, event);
            }
        }
    }
}

/// Queue `event` for `client`, or end it if its queue is full.
fn offer(client: &Local, event: ChatEvent) {
    if let Err(mpsc::error::TrySendError::Full(_)) = client.out.try_send(Ok(event)) {
        client.kick.send_replace(Some(
            "you stopped reading events and fell too far behind; disconnected".into(),
        ));
    }
}

impl Inbound for RoomRelay {
    fn topics(&self) -> Vec<String> {
        let state = self.lock();
        let mut topics = vec![chat_topic(&self.server_id), room_topic(LOBBY)];
        topics.extend(state.subscribed.iter().map(|r| room_topic(r)));
        topics
    }

    fn deliver(&self, topic: &str, payload: &[u8]) -> bool {
        if let Some(room) = topic.strip_prefix("dupla/v1/rooms/") {
            match pb::RoomEnvelope::decode(payload) {
                Ok(envelope) => self.on_room(room, envelope),
                Err(e) => tracing::warn!(%topic, error = %e, "ignoring a bad room event"),
            }
            return true;
        }
        if topic == chat_topic(&self.server_id) {
            match pb::ClientEnvelope::decode(payload) {
                Ok(envelope) => self.on_direct(envelope),
                Err(e) => tracing::warn!(%topic, error = %e, "ignoring a bad chat event"),
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(text: &str, joined: &[u64], origin: Option<u64>) -> Vec<u8> {
        let me = |id: u64| pb::ClientRef {
            server_id: "s1".into(),
            client_id: id,
        };
        pb::RoomEnvelope {
            event: Some(ChatEvent {
                text: text.into(),
                ..Default::default()
            }),
            origin: origin.map(me),
            joined: joined.iter().map(|&id| me(id)).collect(),
        }
        .encode_to_vec()
    }

    fn texts(rx: &mut mpsc::Receiver<Result<ChatEvent, Status>>) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Ok(Ok(e)) = rx.try_recv() {
            out.push((e.text, e.seq));
        }
        out
    }

    #[test]
    fn a_connection_hears_a_room_from_its_join_notice_in_broker_order() {
        let relay = RoomRelay::new("s1".into(), Arc::new(BrokerLink::new()));
        let (tx1, mut rx1) = mpsc::channel(16);
        let (tx2, mut rx2) = mpsc::channel(16);
        let one = relay.register(1, tx1);
        relay.register(2, tx2);
        let lobby = room_topic(LOBBY);
        assert!(relay.deliver(&lobby, &envelope("1 joined", &[1], Some(1))));
        assert_eq!(*one.echoes.borrow(), 0, "never below zero");
        relay.expect_echo(1, true);
        assert!(relay.deliver(&lobby, &envelope("hello", &[], Some(1))));
        assert_eq!(*one.echoes.borrow(), 0, "the echo came back");
        // Said before 2 joined: 2 does not hear it.
        assert!(relay.deliver(&lobby, &envelope("2 joined", &[2], None)));
        assert!(relay.deliver(&lobby, &envelope("after", &[], None)));
        assert_eq!(
            texts(&mut rx1),
            [
                ("1 joined".into(), 1),
                ("hello".into(), 2),
                ("2 joined".into(), 3),
                ("after".into(), 4)
            ]
        );
        assert_eq!(
            texts(&mut rx2),
            [("2 joined".into(), 3), ("after".into(), 4)]
        );
        // Moving: nothing of the old room, nothing of the new before the notice.
        relay.moved(1, "games");
        assert!(relay.deliver(&lobby, &envelope("1 left", &[], Some(1))));
        assert!(relay.deliver(
            &room_topic("games"),
            &envelope("1 joined games", &[1], Some(1))
        ));
        assert_eq!(texts(&mut rx1), [("1 joined games".into(), 1)]);
        assert!(!relay.deliver("dupla/v1/broadcast", &[]));
    }

    #[test]
    fn a_connection_that_stops_reading_is_ended() {
        let relay = RoomRelay::new("s1".into(), Arc::new(BrokerLink::new()));
        let (tx, _rx) = mpsc::channel(1);
        let reg = relay.register(1, tx);
        relay.deliver(&room_topic(LOBBY), &envelope("joined", &[1], None));
        assert!(reg.kick.borrow().is_none());
        relay.deliver(&room_topic(LOBBY), &envelope("more", &[], None));
        assert!(reg
            .kick
            .borrow()
            .as_deref()
            .unwrap()
            .contains("stopped reading"));
    }
}
