//! The chat hub: carries out the [`Rooms`] core's effects on channels.
//!
//! Fan-out is one bounded `tokio::sync::broadcast` channel per room: a
//! send never waits for anyone, and each member's session reads at its own
//! pace; one that falls more than the channel's capacity behind gets
//! `Lagged` and is disconnected (by its session). Events for one client
//! (answers, private messages, "you were moved") go through that client's
//! bounded queue with `try_send`: a client whose queue is full has stopped
//! reading and is disconnected rather than waited for. So no client, however
//! slow, holds up a room or another client.
//!
//! The hub's lock (a `std::sync::Mutex`) is never held across an `.await`:
//! every channel operation under it is non-blocking.

use crate::chat::rooms::{self, ClientId, Command, Directory, Effect, Rooms, LOBBY};
use crate::config::ChatLimits;
use dupla::clock;
use dupla::v1::{chat_event, ChatEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};

/// What travels on a room's broadcast channel: shared, not copied per member.
pub type RoomEvent = Arc<ChatEvent>;

/// Whether a login is online somewhere else.
type OnlineCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Something for one client's session.
#[derive(Debug)]
pub enum Direct {
    /// Show this event.
    Event(ChatEvent),
    /// Listen to this room from now on (the client was moved by someone else).
    Moved(broadcast::Receiver<RoomEvent>),
}

/// The hub's handle on one connected client.
struct Handle {
    /// Its queue of one-client events.
    direct: mpsc::Sender<Direct>,
    /// Set to a reason to end its session.
    kick: watch::Sender<Option<String>>,
    /// Key of the token it connected with, to end it on logout.
    token_key: String,
}

/// What a new connection gets.
pub struct Connection {
    /// Its client id.
    pub id: ClientId,
    /// Its queue of one-client events.
    pub direct: mpsc::Receiver<Direct>,
    /// Becomes `Some(reason)` when the hub ends the session.
    pub kick: watch::Receiver<Option<String>>,
    /// The lobby's channel.
    pub room: broadcast::Receiver<RoomEvent>,
    /// The welcome answer.
    pub welcome: Vec<ChatEvent>,
}

/// What a client's own command produced for that client.
#[derive(Default)]
pub struct Outcome {
    /// Answers and notices, in order.
    pub events: Vec<ChatEvent>,
    /// The channel of the room it moved to, if it moved.
    pub moved: Option<broadcast::Receiver<RoomEvent>>,
    /// The command ends the session (`#exit`).
    pub disconnect: bool,
}

/// State under the hub's lock.
struct Inner {
    rooms: Rooms,
    channels: HashMap<String, broadcast::Sender<RoomEvent>>,
    clients: HashMap<ClientId, Handle>,
    /// Events each room's channel holds for its slowest member.
    room_capacity: usize,
    /// Events handed to clients so far (see [`Hub::deliveries`]).
    deliveries: u64,
}

/// Every room's channel and every connected client's queue.
pub struct Hub {
    inner: Mutex<Inner>,
    limits: ChatLimits,
    next_id: AtomicU64,
    /// Room messages (lines that are not commands) this hub carried.
    lines: AtomicU64,
    /// Chat presence outside this hub (the servers' chats, `chat::relay`).
    elsewhere: std::sync::OnceLock<OnlineCheck>,
}

impl Hub {
    /// A hub with just the lobby.
    pub fn new(limits: ChatLimits) -> Self {
        let room_capacity = limits.room_capacity.max(1);
        let mut channels = HashMap::new();
        channels.insert(LOBBY.to_string(), broadcast::channel(room_capacity).0);
        Hub {
            inner: Mutex::new(Inner {
                rooms: Rooms::new(),
                channels,
                clients: HashMap::new(),
                room_capacity,
                deliveries: 0,
            }),
            limits,
            next_id: AtomicU64::new(1),
            lines: AtomicU64::new(0),
            elsewhere: std::sync::OnceLock::new(),
        }
    }

    /// Register a connection of `login` (holding token `token_key`); it lands
    /// in the lobby.
    pub fn connect(&self, login: &str, token_key: &str) -> Connection {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (direct_tx, direct) = mpsc::channel(self.limits.client_queue.max(1));
        let (kick_tx, kick) = watch::channel(None);
        let mut inner = self.lock();
        inner.clients.insert(
            id,
            Handle {
                direct: direct_tx,
                kick: kick_tx,
                token_key: token_key.to_string(),
            },
        );
        let effects = inner.rooms.connect(id, login, clock::unix_ms());
        let outcome = inner.apply(effects, id);
        Connection {
            id,
            direct,
            kick,
            room: outcome
                .moved
                .expect("invariant: connecting moves the client into the lobby"),
            welcome: outcome.events,
        }
    }

    /// Run client `id`'s command; `dir` answers questions about accounts.
    pub fn handle(&self, id: ClientId, command: Command, dir: &dyn Directory) -> Outcome {
        if matches!(command, Command::Say(_)) {
            self.lines.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.lock();
        let effects = inner.rooms.handle(id, command, dir, clock::unix_ms());
        inner.apply(effects, id)
    }

    /// Chat events handed to clients since the manager started (a room
    /// message counts once per member), for `/metrics`.
    pub fn deliveries(&self) -> u64 {
        self.lock().deliveries
    }

    /// Room messages the manager itself carried since it started: only
    /// clients of its own (compatibility) `Rooms` service count; chats on
    /// the storage servers go through the broker, and their lines never
    /// reach the manager. For `/metrics` (`chat_lines_relayed_total`).
    pub fn lines_relayed(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Client `id` is gone: it leaves its room (and its rooms may go).
    pub fn disconnect(&self, id: ClientId) {
        let mut inner = self.lock();
        inner.clients.remove(&id);
        let effects = inner.rooms.disconnect(id, clock::unix_ms());
        inner.apply(effects, id);
    }

    /// End every session of `login`, telling it `reason`.
    pub fn kick_login(&self, login: &str, reason: &str) {
        let inner = self.lock();
        for id in inner.rooms.clients_of(login) {
            inner.kick(id, reason);
        }
    }

    /// End every session opened with the token stored under `token_key`.
    pub fn kick_token(&self, token_key: &str, reason: &str) {
        let inner = self.lock();
        for (id, handle) in &inner.clients {
            if handle.token_key == token_key {
                inner.kick(*id, reason);
            }
        }
    }

    /// Whether `login` is connected, here or (see [`Hub::online_elsewhere`])
    /// on a storage server's chat.
    pub fn is_online(&self, login: &str) -> bool {
        self.lock().rooms.is_online(login) || self.elsewhere.get().is_some_and(|f| f(login))
    }

    /// Also count as online whom `online` says is (set once, at start).
    pub fn online_elsewhere(&self, online: impl Fn(&str) -> bool + Send + Sync + 'static) {
        let _ = self.elsewhere.set(Box::new(online));
    }

    /// Every room with its number of participants, lobby first.
    pub fn occupancy(&self) -> Vec<(String, usize)> {
        self.lock().rooms.occupancy()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("chat hub lock poisoned")
    }
}

impl Inner {
    /// Carry out `effects`; those for client `me` are returned instead of
    /// queued, so its own session shows them in order.
    fn apply(&mut self, effects: Vec<Effect>, me: ClientId) -> Outcome {
        let mut mine = Outcome::default();
        for effect in effects {
            match effect {
                // No receiver (an empty room) is not an error.
                Effect::Broadcast(event) => {
                    if let Some(tx) = self.channels.get(&event.room) {
                        let receivers = tx.send(Arc::new(to_wire(event))).unwrap_or(0);
                        self.deliveries += receivers as u64;
                    }
                }
                Effect::Tell(id, event) if id == me => {
                    self.deliveries += 1;
                    mine.events.push(to_wire(event))
                }
                Effect::Tell(id, event) => {
                    self.deliveries += 1;
                    self.deliver(id, Direct::Event(to_wire(event)))
                }
                Effect::Move(id, room) => {
                    let Some(tx) = self.channels.get(&room) else {
                        continue;
                    };
                    if id == me {
                        mine.moved = Some(tx.subscribe());
                    } else {
                        self.deliver(id, Direct::Moved(tx.subscribe()));
                    }
                }
                Effect::Open(room) => {
                    let (tx, _) = broadcast::channel(self.room_capacity);
                    self.channels.insert(room, tx);
                }
                // Dropping the sender ends the room for its last listeners.
                Effect::Close(room) => {
                    self.channels.remove(&room);
                }
                Effect::Disconnect(id) if id == me => mine.disconnect = true,
                Effect::Disconnect(id) => self.kick(id, "disconnected"),
            }
        }
        mine
    }

    /// Queue `direct` for client `id`; a full queue means it stopped reading.
    fn deliver(&self, id: ClientId, direct: Direct) {
        let Some(handle) = self.clients.get(&id) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = handle.direct.try_send(direct) {
            self.kick(
                id,
                "you stopped reading events and fell too far behind; disconnected",
            );
        }
    }

    fn kick(&self, id: ClientId, reason: &str) {
        if let Some(handle) = self.clients.get(&id) {
            handle.kick.send_replace(Some(reason.to_string()));
        }
    }
}

/// A core event as it goes on the wire.
pub fn to_wire(event: rooms::Event) -> ChatEvent {
    let kind = match event.kind {
        rooms::Kind::Message => chat_event::Kind::Message,
        rooms::Kind::Private => chat_event::Kind::Private,
        rooms::Kind::Notice => chat_event::Kind::Notice,
        rooms::Kind::Answer => chat_event::Kind::Answer,
    };
    ChatEvent {
        kind: kind as i32,
        room: event.room,
        seq: event.seq,
        server_unix_ms: event.unix_ms,
        from: event.from,
        text: event.text,
    }
}
