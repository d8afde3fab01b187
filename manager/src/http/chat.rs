//! Chat from a browser: the same rooms as `dupla chat`, reached through
//! `Rooms/Chat` itself. A chat session here is one `Rooms/Chat` stream
//! that the manager opens as the user where `dupla chat` would: on the
//! user's assigned storage server (then the other `up` ones), whose rooms
//! travel through the message broker; on the manager's own gRPC port only
//! when no server is up or serves chat. So every rule of the rooms, `#`
//! commands, flood control and kicks included, is the gRPC one, and the
//! page and a terminal meet in the same rooms. Its events are kept in a
//! short buffer the page long-polls.
//!
//! `POST /api/chat` opens a session, `POST /api/chat/{id}/lines` sends a
//! line, `GET /api/chat/{id}/events?after=N` waits for events after the
//! N-th, `DELETE /api/chat/{id}` leaves. A session nobody polls for
//! [`CHAT_IDLE`] is closed, as a vanished page would be.

use super::{Api, Caller};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dupla::v1::{self as pb};
use dupla::web::{ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use dupla::{Error, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use utoipa::{IntoParams, ToSchema};

/// Events a session keeps for a page that polls late.
const CHAT_BUFFER_EVENTS: usize = 256;
/// Lines queued towards the rooms per session.
const CHAT_INPUT_LINES: usize = 16;
/// How long one poll waits for an event before answering empty.
const CHAT_POLL_WAIT: Duration = Duration::from_secs(20);
/// A session not polled this long is closed (the page went away).
pub const CHAT_IDLE: Duration = Duration::from_secs(60);
/// Chat sessions one user may hold open here at once.
const CHAT_SESSIONS_PER_USER: usize = 4;

/// Open chat sessions.
#[derive(Default)]
pub struct ChatSessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

struct Session {
    login: String,
    input: mpsc::Sender<pb::ChatInput>,
    log: Mutex<Log>,
    changed: Notify,
}

#[derive(Default)]
struct Log {
    /// Index of the first event kept.
    first: u64,
    events: VecDeque<ChatEvent>,
    /// The stream ended: why.
    closed: Option<String>,
    polled: Option<Instant>,
}

/// One chat event.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatEvent {
    /// `message`, `private`, `notice` or `answer`.
    pub kind: String,
    /// The room.
    pub room: String,
    /// Sender (messages).
    pub from: String,
    /// Text.
    pub text: String,
    /// Server time, ms.
    pub server_unix_ms: i64,
}

impl From<pb::ChatEvent> for ChatEvent {
    fn from(e: pb::ChatEvent) -> Self {
        let kind = match pb::chat_event::Kind::try_from(e.kind) {
            Ok(pb::chat_event::Kind::Message) => "message",
            Ok(pb::chat_event::Kind::Private) => "private",
            Ok(pb::chat_event::Kind::Notice) => "notice",
            _ => "answer",
        };
        ChatEvent {
            kind: kind.into(),
            room: e.room,
            from: e.from,
            text: e.text,
            server_unix_ms: e.server_unix_ms,
        }
    }
}

/// An opened session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChatOpened {
    /// Session id for the other chat routes.
    pub id: String,
}

/// A line to say or a `#` command.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatLine {
    /// As typed (`hello`, `#cR room`, `#lR`, `#\private bob hi`…).
    pub line: String,
}

/// Events after `after`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct After {
    /// Index of the last event seen (0 at first).
    #[serde(default)]
    pub after: u64,
}

/// A page of events.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChatEvents {
    /// Index of the last event returned: poll again with `after` set to it.
    pub last: u64,
    /// The events.
    pub events: Vec<ChatEvent>,
    /// Set when the session ended (logged out, kicked, `#exit`): why.
    pub closed: Option<String>,
}

impl ChatSessions {
    fn get(&self, id: &str, login: &str) -> Result<Arc<Session>> {
        self.by_id
            .lock()
            .expect("chat sessions lock poisoned")
            .get(id)
            .filter(|s| s.login == login)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no chat session {} of yours; open one",
                    dupla::name::excerpt(id)
                ))
            })
    }

    /// Close sessions not polled for [`CHAT_IDLE`].
    pub fn sweep(&self) {
        let now = Instant::now();
        self.by_id
            .lock()
            .expect("chat sessions lock poisoned")
            .retain(|_, s| {
                let log = s.log.lock().expect("chat log lock poisoned");
                log.closed.is_none() && log.polled.is_none_or(|t| now.duration_since(t) < CHAT_IDLE)
            });
    }
}

/// The caller's login, checked as every user call is.
fn login_of(api: &Api, caller: &Caller) -> Result<String> {
    Ok(session_of(api, caller)?.login)
}

fn session_of(api: &Api, caller: &Caller) -> Result<crate::identity::auth::Session> {
    let auth = crate::identity::auth::Authenticator::new(api.tokens.clone());
    auth.check_token(caller.token.as_deref().unwrap_or_default())
}

/// Where `dupla chat` would open this user's chat (see
/// [`Membership::chat_servers`](crate::cluster::membership::Membership::chat_servers)).
fn chat_servers(api: &Api, assigned: Option<&str>) -> Vec<String> {
    api.state
        .lock_membership()
        .chat_servers(Instant::now(), assigned)
}

/// Open the user's chat stream as `dupla chat` does: on the first server
/// of [`chat_servers`] that can be reached, or on the manager's own rooms
/// when none can or the server has no chat (`UNIMPLEMENTED`, an older
/// version). Any other refusal is the answer: falling back to the
/// manager's rooms then would put the page in rooms no terminal is in.
async fn open_stream(
    api: &Api,
    caller: &Caller,
    assigned: Option<&str>,
) -> Result<(mpsc::Sender<pb::ChatInput>, tonic::Streaming<pb::ChatEvent>)> {
    for addr in chat_servers(api, assigned) {
        let channel = match api.state.transport.connect(&addr).await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "console chat: server unreachable; trying the next");
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(CHAT_INPUT_LINES);
        let request = caller.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        match pb::rooms_client::RoomsClient::new(channel)
            .chat(request)
            .await
        {
            Ok(events) => return Ok((tx, events.into_inner())),
            Err(status) if status.code() == tonic::Code::Unimplemented => break,
            Err(status) => return Err(Error::from_status(status)),
        }
    }
    let (tx, rx) = mpsc::channel(CHAT_INPUT_LINES);
    let request = caller.request(tokio_stream::wrappers::ReceiverStream::new(rx));
    let channel = api.state.transport.connect_lazy(&api.grpc_addr)?;
    let events = pb::rooms_client::RoomsClient::new(channel)
        .chat(request)
        .await
        .map_err(Error::from_status)?
        .into_inner();
    Ok((tx, events))
}

#[utoipa::path(post, path = "/api/chat", tag = "chat",
    responses((status = 200, description = "In the lobby", body = ChatOpened),
        (status = 401, body = ErrorBody), (status = 429, description = "Too many open sessions", body = ErrorBody)),
    security(("bearer" = [])))]
/// Join the chat (the lobby) as the caller.
pub async fn open(State(api): State<Api>, caller: Caller) -> ApiResult<Json<ChatOpened>> {
    let session = session_of(&api, &caller)?;
    let login = session.login;
    api.chat.sweep();
    let held = api
        .chat
        .by_id
        .lock()
        .expect("chat sessions lock poisoned")
        .values()
        .filter(|s| s.login == login)
        .count();
    if held >= CHAT_SESSIONS_PER_USER {
        return Err(Error::Exhausted(format!(
            "{held} chat sessions are open for {login}; leave one first"
        ))
        .into());
    }
    let assigned = session.server.as_ref().map(|n| n.id.as_str());
    let (tx, mut events) = open_stream(&api, &caller, assigned).await?;
    let session = Arc::new(Session {
        login,
        input: tx,
        log: Mutex::new(Log {
            polled: Some(Instant::now()),
            ..Log::default()
        }),
        changed: Notify::new(),
    });
    let id = hex::encode(rand::random::<[u8; 16]>());
    api.chat
        .by_id
        .lock()
        .expect("chat sessions lock poisoned")
        .insert(id.clone(), session.clone());
    let weak = Arc::downgrade(&session);
    drop(session);
    // Events flow into the buffer until the stream ends or the session goes.
    tokio::spawn(async move {
        loop {
            let next = events.next().await;
            let Some(session) = weak.upgrade() else {
                return;
            };
            let mut log = session.log.lock().expect("chat log lock poisoned");
            match next {
                Some(Ok(event)) => {
                    log.events.push_back(event.into());
                    if log.events.len() > CHAT_BUFFER_EVENTS {
                        log.events.pop_front();
                        log.first += 1;
                    }
                }
                Some(Err(status)) => log.closed = Some(status.message().to_string()),
                None => log.closed = Some("the chat ended".into()),
            }
            let done = log.closed.is_some();
            drop(log);
            session.changed.notify_waiters();
            if done {
                return;
            }
        }
    });
    Ok(Json(ChatOpened { id }))
}

#[utoipa::path(post, path = "/api/chat/{id}/lines", tag = "chat", request_body = ChatLine,
    params(("id" = String, Path, description = "Chat session")),
    responses((status = 204, description = "Sent"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// Say a line in the current room, or run a `#` command.
pub async fn say(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(line): ApiJson<ChatLine>,
) -> ApiResult<StatusCode> {
    let session = api.chat.get(&id, &login_of(&api, &caller)?)?;
    session
        .input
        .send(pb::ChatInput { line: line.line })
        .await
        .map_err(|_| Error::Aborted("this chat session has ended; open another".into()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/chat/{id}/events", tag = "chat",
    params(("id" = String, Path, description = "Chat session"), After),
    responses((status = 200, description = "Events after `after` (waits up to 20 s for one)", body = ChatEvents),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// Wait for the events after `after`.
pub async fn events(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<After>,
) -> ApiResult<Json<ChatEvents>> {
    let session = api.chat.get(&id, &login_of(&api, &caller)?)?;
    let deadline = tokio::time::Instant::now() + CHAT_POLL_WAIT;
    loop {
        // Registered before looking, so no event slips in between.
        let changed = session.changed.notified();
        {
            let mut log = session.log.lock().expect("chat log lock poisoned");
            log.polled = Some(Instant::now());
            let end = log.first + log.events.len() as u64;
            if end > q.after || log.closed.is_some() {
                let skip = q.after.saturating_sub(log.first) as usize;
                let events = log.events.iter().skip(skip).cloned().collect();
                return Ok(Json(ChatEvents {
                    last: end,
                    events,
                    closed: log.closed.clone(),
                }));
            }
        }
        let mut shutdown = api.shutdown.clone();
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Json(ChatEvents { last: q.after, events: Vec::new(), closed: None }));
            }
            _ = shutdown.wait() => {
                return Ok(Json(ChatEvents { last: q.after, events: Vec::new(), closed: Some("the manager is stopping".into()) }));
            }
        }
    }
}

#[utoipa::path(delete, path = "/api/chat/{id}", tag = "chat",
    params(("id" = String, Path, description = "Chat session")),
    responses((status = 204, description = "Left the chat"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
/// Leave the chat.
pub async fn close(
    State(api): State<Api>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let login = login_of(&api, &caller)?;
    api.chat.get(&id, &login)?;
    api.chat
        .by_id
        .lock()
        .expect("chat sessions lock poisoned")
        .remove(&id);
    Ok(StatusCode::NO_CONTENT)
}
