//! `dupla.v1.Rooms`: the gRPC face of the chat. `Chat` is one
//! bidirectional stream per client (tonic routeguide's `route_chat` shape).
//! The bearer token was checked by the [`Authenticator`] interceptor before
//! the call reaches here; this module only adapts: each connection gets a
//! session task that reads lines, throttles them, asks the [`Hub`] to run
//! them, and forwards the events for the client to its response stream.
//! The decisions live in `rooms/`; the fan-out in `room_hub.rs`.

use crate::chat::room_hub::{Connection, Direct, Hub, RoomEvent};
use crate::chat::rooms::{self, ClientId, Command, Directory};
use crate::config::ChatLimits;
use crate::identity::accounts::Accounts;
use crate::identity::auth::{self, Authenticator, Session};
use crate::identity::throttle::RateLimits;
use dupla::chat::session::local_event;
use dupla::shutdown::Shutdown;
use dupla::v1::rooms_server::Rooms as RoomsRpc;
use dupla::v1::{chat_event, ChatEvent, ChatInput};
use dupla::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use dupla::chat::session::{FAREWELL_TIMEOUT, MAX_CHAT_MESSAGE_BYTES, TOKEN_RECHECK_INTERVAL};

/// Chat connections one user may open in a burst; each one joins the lobby
/// (a notice to everyone there), so reconnecting in a loop is throttled.
pub const CONNECT_BURST: f64 = 10.0;
/// Chat connections one user may open per second, sustained.
pub const CONNECTS_PER_SEC: f64 = 0.5;

/// Per-user token buckets shared by all of a user's connections.
type SharedLimits = Arc<Mutex<RateLimits>>;

/// Take one of `login`'s tokens in `limits` now, or how long to wait.
fn take(limits: &SharedLimits, login: &str) -> Result<(), Duration> {
    limits
        .lock()
        .expect("chat rate limits lock poisoned")
        .take(login, Instant::now())
}

/// Events on their way to one client.
type Outbox = mpsc::Sender<Result<ChatEvent, Status>>;

/// The Rooms service.
#[derive(Clone)]
pub struct RoomsService {
    hub: Arc<Hub>,
    accounts: Arc<Accounts>,
    auth: Authenticator,
    limits: ChatLimits,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
    /// Lines per user, across all of the user's connections.
    lines: SharedLimits,
    /// Connections (each a join notice) per user.
    connects: SharedLimits,
}

impl RoomsService {
    /// Serve the chat over `hub`; `accounts` answers `#show users` and
    /// private-message lookups; sessions end when `shutdown` fires.
    pub fn new(
        hub: Arc<Hub>,
        accounts: Arc<Accounts>,
        auth: Authenticator,
        limits: ChatLimits,
        shutdown: Shutdown,
    ) -> Self {
        RoomsService {
            hub,
            accounts,
            auth,
            permits: Arc::new(Semaphore::new(limits.max_clients.max(1))),
            lines: Arc::new(Mutex::new(RateLimits::new(
                limits.lines_per_sec,
                limits.burst,
            ))),
            connects: Arc::new(Mutex::new(RateLimits::new(CONNECTS_PER_SEC, CONNECT_BURST))),
            limits,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl RoomsRpc for RoomsService {
    type ChatStream = ReceiverStream<Result<ChatEvent, Status>>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatInput>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let session = auth::session(&request)?;
        if let Err(wait) = take(&self.connects, &session.login) {
            return Err(Error::Exhausted(format!(
                "{} joined the chat too often; try again in {} s",
                session.login,
                wait.as_secs().max(1)
            ))
            .into());
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::Exhausted(format!(
                "the chat is full ({} connections); try again later",
                self.limits.max_clients
            ))
        })?;
        let input = request.into_inner();
        let (out, out_rx) = mpsc::channel(self.limits.client_queue.max(1));
        let connection = self.hub.connect(&session.login, &session.token_key);
        tracing::info!(login = %session.login, client = connection.id, "chat connected");
        let worker = Worker {
            guard: Guard {
                hub: self.hub.clone(),
                id: connection.id,
            },
            accounts: self.accounts.clone(),
            auth: self.auth.clone(),
            lines: self.lines.clone(),
            limits: self.limits.clone(),
            session,
            out,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            worker.run(connection, input, shutdown).await;
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// Leaves the hub when the session ends, however it ends (cleanup in
/// `Drop`, so a cancelled or panicked session still leaves its room).
struct Guard {
    hub: Arc<Hub>,
    id: ClientId,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}

/// One connected client's session.
struct Worker {
    guard: Guard,
    accounts: Arc<Accounts>,
    auth: Authenticator,
    lines: SharedLimits,
    limits: ChatLimits,
    session: Session,
    out: Outbox,
}

/// Why a session stops.
enum End {
    /// Quietly: the client left or its connection is gone.
    Quiet,
    /// With a last notice to the client.
    Told(String),
}

impl Worker {
    /// Serve until the client leaves, is kicked, lags, or the manager stops.
    async fn run(
        mut self,
        conn: Connection,
        mut input: Streaming<ChatInput>,
        mut shutdown: Shutdown,
    ) {
        let Connection {
            mut direct,
            mut kick,
            mut room,
            welcome,
            ..
        } = conn;
        let mut recheck = tokio::time::interval(TOKEN_RECHECK_INTERVAL);
        recheck.tick().await;
        let mut end = self.send_all(welcome).await;
        let mut room_open = true;
        while end.is_none() {
            // Biased: the client's own input first (a flooder starves only
            // itself), then its queue, then the room.
            end = tokio::select! {
                biased;
                _ = shutdown.wait() => Some(End::Told("the manager is shutting down".into())),
                _ = kick.changed() => {
                    let reason = kick.borrow().clone().unwrap_or_else(|| "disconnected".into());
                    Some(End::Told(reason))
                }
                message = input.message() => match message {
                    Ok(Some(message)) => self.on_line(&message.line, &mut room, &mut room_open).await,
                    // The client closed its side, or its connection broke.
                    Ok(None) | Err(_) => Some(End::Quiet),
                },
                direct = direct.recv() => match direct {
                    Some(Direct::Event(event)) => self.send(event).await,
                    // Moved by someone else (its room was removed): first
                    // the old room's last events, then the new room.
                    Some(Direct::Moved(rx)) => {
                        let end = self.drain(&mut room).await;
                        room = rx;
                        room_open = true;
                        end
                    }
                    None => Some(End::Quiet),
                },
                event = room.recv(), if room_open => match event {
                    Ok(event) => self.send(ChatEvent::clone(&event)).await,
                    Err(RecvError::Lagged(missed)) => Some(lagged(missed)),
                    // The room was removed; the move to the lobby is queued.
                    Err(RecvError::Closed) => {
                        room_open = false;
                        None
                    }
                },
                _ = recheck.tick() => self.check_token(),
            };
        }
        if let Some(End::Told(reason)) = end {
            tracing::info!(login = %self.session.login, client = self.guard.id, %reason, "chat ended");
            // Best effort: a client that stopped reading cannot be told,
            // and is not waited for long.
            let farewell = self.out.send(Ok(notice(&reason)));
            let _ = tokio::time::timeout(FAREWELL_TIMEOUT, farewell).await;
        } else {
            tracing::info!(login = %self.session.login, client = self.guard.id, "chat left");
        }
    }

    /// One line from the client: throttle, parse, run.
    async fn on_line(
        &mut self,
        line: &str,
        room: &mut broadcast::Receiver<RoomEvent>,
        room_open: &mut bool,
    ) -> Option<End> {
        if let Some(end) = self.check_token() {
            return Some(end);
        }
        // What the room said before this line is shown before its answer,
        // so a script sees events in the order they happened.
        if *room_open {
            if let Some(end) = self.drain(room).await {
                return Some(end);
            }
        }
        if take(&self.lines, &self.session.login).is_err() {
            let text = format!(
                "slow down: at most {} lines per second from you (all your connections together); this line was not sent",
                self.limits.lines_per_sec
            );
            return self.send(answer(&text)).await;
        }
        let command = match rooms::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return None,
            Err(text) => return self.send(answer(&text)).await,
        };
        let dir = Snapshot::for_command(&self.accounts, &command);
        let outcome = self.guard.hub.handle(self.guard.id, command, &dir);
        if let Some(rx) = outcome.moved {
            *room = rx;
            *room_open = true;
        }
        let end = self.send_all(outcome.events).await;
        if outcome.disconnect {
            return Some(End::Quiet);
        }
        end
    }

    /// End the session if the token stopped working.
    fn check_token(&self) -> Option<End> {
        (!self.auth.still_valid(&self.session)).then(|| {
            End::Told("your token expired or was revoked; log in again with `dupla login`".into())
        })
    }

    /// Forward what is waiting in a room's channel now, without waiting.
    async fn drain(&self, room: &mut broadcast::Receiver<RoomEvent>) -> Option<End> {
        loop {
            match room.try_recv() {
                Ok(event) => {
                    if let Some(end) = self.send(ChatEvent::clone(&event)).await {
                        return Some(end);
                    }
                }
                Err(TryRecvError::Lagged(missed)) => return Some(lagged(missed)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// Send events in order; stop at the first that cannot be delivered.
    async fn send_all(&self, events: Vec<ChatEvent>) -> Option<End> {
        for event in events {
            if let Some(end) = self.send(event).await {
                return Some(end);
            }
        }
        None
    }

    /// Hand one event to the client's stream, waiting at most
    /// `slow_client_timeout` for room in it.
    async fn send(&self, event: ChatEvent) -> Option<End> {
        match tokio::time::timeout(self.limits.slow_client_timeout, self.out.send(Ok(event))).await
        {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(End::Quiet),
            Err(_) => Some(End::Told(format!(
                "you did not read events for {:?}; disconnected",
                self.limits.slow_client_timeout
            ))),
        }
    }
}

/// The end of a session that fell `missed` events behind its room.
fn lagged(missed: u64) -> End {
    End::Told(format!(
        "you fell {missed} events behind in the room; disconnected so the room is not held up (reconnect with `dupla chat`)"
    ))
}

/// Accounts as one command needs them, read before taking the rooms'
/// lock so no database read happens under it (shared with the relay).
pub struct Snapshot(Vec<String>);

impl Snapshot {
    /// What `command` needs to know about accounts.
    pub fn for_command(accounts: &Accounts, command: &Command) -> Snapshot {
        let logins = match command {
            Command::ShowUsers => accounts.logins(),
            Command::Private { to, .. } => {
                accounts
                    .exists(to)
                    .map(|known| if known { vec![to.clone()] } else { Vec::new() })
            }
            _ => Ok(Vec::new()),
        };
        Snapshot(logins.unwrap_or_else(|e| {
            tracing::warn!(cause = %e, "reading accounts for the chat");
            Vec::new()
        }))
    }
}

impl Directory for Snapshot {
    fn exists(&self, login: &str) -> bool {
        self.0.iter().any(|l| l == login)
    }

    fn logins(&self) -> Vec<String> {
        self.0.clone()
    }
}

/// An answer to this client, made here rather than by the core.
fn answer(text: &str) -> ChatEvent {
    local_event(chat_event::Kind::Answer, text)
}

/// A notice to this client, made here rather than by the core.
fn notice(text: &str) -> ChatEvent {
    local_event(chat_event::Kind::Notice, text)
}
