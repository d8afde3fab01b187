//! `dupla.v1.Rooms/Chat` on a storage server, for the users the manager
//! assigned here: one session task per connection.
//!
//! A line is parsed and throttled here (the same parser, limits and flood
//! rule as the manager's own chat: `dupla::chat`). A room message is
//! published by this server, as one PUBLISH on its room's topic, and comes
//! back through the broker to every server with members in the room,
//! this one included; the manager never sees it. A `#` command goes to the
//! manager (`RoomRelay/Command`), the authority for rooms, and its effects
//! are carried out here (`room_effects`). The connection's view of its
//! rooms and the delivery of room events live in `room_relay`.
//!
//! Answers come after the room events the connection's own earlier lines
//! caused (a script reads its message, then the answer to its next
//! command, as with the manager's chat): before running a command, the
//! session waits until its own events are back from the broker.

use crate::node::StorageNode;
use crate::room_effects::carry_out;
use crate::room_relay::{room_topic, Outbox, RoomRelay};
use dupla::chat::command::{self as chat, Command};
use dupla::chat::rate::{RateLimits, LINES_PER_SEC, LINE_BURST};
use dupla::chat::session::local_event;
use dupla::rpc::UserCredentials;
use dupla::shutdown::Shutdown;
use dupla::v1::rooms_server::Rooms;
use dupla::v1::{self as pb, chat_event, ChatEvent, ChatInput};
use dupla::{clock, Error};
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use dupla::chat::session::{FAREWELL_TIMEOUT, MAX_CHAT_MESSAGE_BYTES, TOKEN_RECHECK_INTERVAL};
/// Events queued for one connection; a connection whose queue is full has
/// stopped reading and is ended rather than waited for.
pub const CLIENT_QUEUE: usize = 256;
/// How long a command waits for the connection's own events to come back
/// from the broker before it is answered anyway.
pub const ECHO_WAIT: Duration = Duration::from_secs(5);
/// How long a chat opened while the server starts waits for its chat to
/// be ready (the manager and the broker reached) before it is refused.
pub const READY_WAIT: Duration = Duration::from_secs(10);

/// Lines per user here, across the user's connections on this server.
type SharedLimits = Arc<Mutex<RateLimits>>;

/// The chat of this server's users.
#[derive(Clone)]
pub struct RoomsService {
    node: Arc<StorageNode>,
    relay: Arc<RoomRelay>,
    lines: SharedLimits,
    /// Becomes true once the connections of this server's previous run
    /// were forgotten at the manager: chats may open.
    ready: Arc<watch::Sender<bool>>,
    shutdown: Shutdown,
}

impl RoomsService {
    /// Chats of `node`'s users through `relay`; sessions end at `shutdown`.
    pub fn new(node: Arc<StorageNode>, relay: Arc<RoomRelay>, shutdown: Shutdown) -> Self {
        RoomsService {
            node,
            relay,
            lines: Arc::new(Mutex::new(RateLimits::new(LINES_PER_SEC, LINE_BURST))),
            ready: Arc::new(watch::Sender::new(false)),
            shutdown,
        }
    }

    /// Forget, at the manager, the connections of this server's previous
    /// run (their rooms hear them leave), once the broker is connected;
    /// then accept chats. Retries until it is done or `shutdown`.
    pub async fn reset(self, mut shutdown: Shutdown) {
        let mut pause = Duration::from_millis(100);
        loop {
            if self.relay.link().is_ready() {
                let request = self.node.secret.request(pb::RelayResetRequest {
                    server_id: self.relay.server_id().to_string(),
                });
                match self.node.room_relay().reset_rooms(request).await {
                    Ok(reply) => {
                        carry_out(&self.relay, 0, reply.into_inner().effects).await;
                        self.ready.send_replace(true);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "chat setup: the manager did not answer yet")
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

#[tonic::async_trait]
impl Rooms for RoomsService {
    type ChatStream = ReceiverStream<Result<ChatEvent, Status>>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatInput>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        // A chat opened as the server starts waits a moment for it.
        let mut ready = self.ready.subscribe();
        let waited = tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        if !waited {
            return Err(Error::Unavailable(
                "this server's chat is not ready yet (it has not reached the manager and the message broker); try again in a moment"
                    .into(),
            )
            .into());
        }
        let creds = UserCredentials::of(&request)?;
        let mut open = self.node.secret.request(pb::RelayOpenRequest {
            server_id: self.relay.server_id().to_string(),
        });
        creds.attach(&mut open);
        let reply = self.node.room_relay().open(open).await?.into_inner();
        let id = reply.client_id;
        let (out, out_rx) = mpsc::channel(CLIENT_QUEUE);
        let registered = self.relay.register(id, out.clone());
        tracing::info!(login = %reply.login, client = id, "chat connected");
        let session = Session {
            guard: Guard {
                relay: self.relay.clone(),
                node: self.node.clone(),
                id,
            },
            login: reply.login,
            creds,
            lines: self.lines.clone(),
            out,
            echoes: registered.echoes,
        };
        let input = request.into_inner();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            session
                .run(reply.effects, input, registered.kick, shutdown)
                .await
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// Leaves the rooms when the session ends, however it ends: out of the
/// relay at once, at the manager in the background, whose answer (the
/// departure's notices) is published then.
struct Guard {
    relay: Arc<RoomRelay>,
    node: Arc<StorageNode>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.relay.unregister(self.id);
        let relay = self.relay.clone();
        let request = self.node.secret.request(pb::RelayCloseRequest {
            server_id: relay.server_id().to_string(),
            client_id: self.id,
        });
        let mut manager = self.node.room_relay();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match manager.close(request).await {
                    Ok(reply) => {
                        carry_out(&relay, 0, reply.into_inner().effects).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "could not tell the manager a chat closed")
                    }
                }
            });
        }
    }
}

/// Why a session stops.
enum End {
    /// Quietly: the client left, or its connection is gone.
    Quiet,
    /// With a last notice to the client.
    Told(String),
}

/// One connection's session.
struct Session {
    guard: Guard,
    login: String,
    creds: UserCredentials,
    lines: SharedLimits,
    out: Outbox,
    echoes: watch::Receiver<u32>,
}

impl Session {
    /// Serve until the client leaves, is ended, or the server stops.
    async fn run(
        mut self,
        welcome: Vec<pb::RelayEffect>,
        mut input: Streaming<ChatInput>,
        mut kick: watch::Receiver<Option<String>>,
        mut shutdown: Shutdown,
    ) {
        let mut recheck = tokio::time::interval(TOKEN_RECHECK_INTERVAL);
        recheck.tick().await;
        let mut end = carry_out(&self.guard.relay, self.guard.id, welcome)
            .await
            .exit
            .then_some(End::Quiet);
        while end.is_none() {
            end = tokio::select! {
                biased;
                _ = shutdown.wait() => Some(End::Told("the server is shutting down".into())),
                _ = kick.changed() => {
                    let reason = kick.borrow().clone().unwrap_or_else(|| "disconnected".into());
                    Some(End::Told(reason))
                }
                message = input.message() => match message {
                    Ok(Some(message)) => self.on_line(&message.line).await,
                    // End of input: what it said is shown before the end.
                    Ok(None) => {
                        self.await_echoes().await;
                        Some(End::Quiet)
                    }
                    Err(_) => Some(End::Quiet),
                },
                _ = recheck.tick() => self.check_token().await,
            };
        }
        if let Some(End::Told(reason)) = end {
            tracing::info!(login = %self.login, client = self.guard.id, %reason, "chat ended");
            let farewell = self
                .out
                .send(Ok(local_event(chat_event::Kind::Notice, &reason)));
            let _ = tokio::time::timeout(FAREWELL_TIMEOUT, farewell).await;
        } else {
            tracing::info!(login = %self.login, client = self.guard.id, "chat left");
        }
    }

    /// One line from the client: throttle, parse, then publish it or have
    /// the manager run it.
    async fn on_line(&mut self, line: &str) -> Option<End> {
        let now = Instant::now();
        let allowed = self
            .lines
            .lock()
            .expect("chat rate limits lock poisoned")
            .take(&self.login, now);
        if allowed.is_err() {
            return self.answer(&format!(
                "slow down: at most {LINES_PER_SEC} lines per second from you (all your connections together); this line was not sent"
            ));
        }
        match chat::parse(line) {
            Err(text) => self.answer(&text),
            Ok(None) => None,
            Ok(Some(Command::Say(text))) => self.say(text).await,
            Ok(Some(_)) => self.command(line).await,
        }
    }

    /// A room message: one PUBLISH on the room's topic; the client sees it
    /// when it comes back, in the room's order.
    async fn say(&mut self, text: String) -> Option<End> {
        let relay = &self.guard.relay;
        let id = self.guard.id;
        let room = relay.room_of(id)?;
        let envelope = pb::RoomEnvelope {
            event: Some(ChatEvent {
                kind: chat_event::Kind::Message as i32,
                room: room.clone(),
                seq: 0,
                server_unix_ms: clock::unix_ms(),
                from: self.login.clone(),
                text,
            }),
            origin: Some(pb::ClientRef {
                server_id: relay.server_id().to_string(),
                client_id: id,
            }),
            joined: Vec::new(),
        };
        relay.expect_echo(id, true);
        let published = relay
            .link()
            .publish_bytes(room_topic(&room), envelope.encode_to_vec())
            .await;
        match published {
            Ok(()) => None,
            Err(e) => {
                relay.expect_echo(id, false);
                self.answer(&broker_down(relay, e))
            }
        }
    }

    /// A `#` command, run by the manager.
    async fn command(&mut self, line: &str) -> Option<End> {
        self.await_echoes().await;
        let relay = self.guard.relay.clone();
        if !relay.link().is_ready() {
            return self.answer(&format!(
                "the message broker {} is unreachable: nothing was done; try again in a moment",
                relay.link().url()
            ));
        }
        let request = self.guard.node.secret.request(pb::RelayCommandRequest {
            server_id: relay.server_id().to_string(),
            client_id: self.guard.id,
            line: line.to_string(),
        });
        let reply = match self.guard.node.room_relay().command(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                return self.answer(&format!(
                    "the manager could not run that command ({}): nothing was done; try again in a moment",
                    status.message()
                ))
            }
        };
        if reply.gone {
            return Some(End::Told(reply.reason));
        }
        relay.moved(self.guard.id, &reply.room);
        let for_me = carry_out(&relay, self.guard.id, reply.effects).await;
        for_me.exit.then_some(End::Quiet)
    }

    /// Wait (a bounded time) until this connection's own room events are
    /// back from the broker, so what follows is shown after them.
    async fn await_echoes(&mut self) {
        let back = self.echoes.wait_for(|n| *n == 0);
        let _ = tokio::time::timeout(ECHO_WAIT, back).await;
    }

    /// End the session if the token stopped working (the check counts as
    /// use, so an open chat keeps its session connected).
    async fn check_token(&self) -> Option<End> {
        match self.guard.node.check_user(&self.creds).await {
            Err(Error::Unauthenticated(_)) => Some(token_gone()),
            // The manager unreachable is not the user's fault.
            _ => None,
        }
    }

    /// Answer the client (queued with the room events, in order).
    fn answer(&self, text: &str) -> Option<End> {
        let event = local_event(chat_event::Kind::Answer, text);
        self.guard.relay.tell(self.guard.id, event);
        None
    }
}

/// The answer to a line the broker did not take. The link's own words
/// when they start as a chat script expects ("the message broker … is
/// unreachable: nothing was sent …"); a connection that dropped while the
/// line was on its way is said in the same words, with the cause, and
/// without promising more than is known.
fn broker_down(relay: &RoomRelay, e: Error) -> String {
    let text = e.to_string();
    if text.starts_with("the message broker") {
        return text;
    }
    format!(
        "the message broker {} is unreachable ({text}): your line was probably not delivered; try again in a moment",
        relay.link().url()
    )
}

/// The end of a session whose token stopped working.
fn token_gone() -> End {
    End::Told("your token expired or was revoked; log in again with `dupla login`".into())
}
