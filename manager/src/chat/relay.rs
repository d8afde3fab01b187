//! `dupla.v1.RoomRelay`: the manager as the authority for the rooms of the
//! chats that storage servers serve. A server asks it to open a user's connection,
//! run a `#` command, or forget a connection; the manager runs the [`Rooms`]
//! core and answers with the effects (translated by `relay_effects`), which
//! the calling server publishes on the broker. Room messages never come
//! here: servers publish those themselves.
//!
//! These rooms are not the ones of the manager's own `Rooms` service
//! (`room_hub`): that service carries its events on in-process channels,
//! these through the broker, and mixing the two would put the manager back
//! on the message path. Clients use their servers; the manager's own chat
//! remains for clients of clusters with no server up.
//!
//! Every call needs the cluster secret (the gate checks it before the body
//! is read); `Open` also needs the user's token, and a connection whose
//! token stopped working is reported `gone` at its next command.

use crate::chat::relay_effects::translate;
use crate::chat::room_service::{Snapshot, CONNECTS_PER_SEC, CONNECT_BURST};
use crate::chat::rooms::{self, ClientId, Command, Rooms};
use crate::identity::accounts::Accounts;
use crate::identity::auth::{Authenticator, Session};
use crate::identity::throttle::RateLimits;
use dupla::v1::room_relay_server::RoomRelay;
use dupla::v1::{self as pb};
use dupla::{clock, Error};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Request, Response, Status};

type Reply = std::result::Result<Response<pb::RelayReply>, Status>;

/// A connection served by a storage server.
struct Owner {
    server_id: String,
    session: Session,
}

/// The rooms and who holds each connection, under one lock.
struct State {
    rooms: Rooms,
    owners: HashMap<ClientId, Owner>,
    next_id: ClientId,
    /// Connections (each a join notice) per user.
    connects: RateLimits,
}

impl State {
    fn client_ref(&self, id: ClientId) -> Option<pb::ClientRef> {
        self.owners.get(&id).map(|o| pb::ClientRef {
            server_id: o.server_id.clone(),
            client_id: id,
        })
    }

    /// The reply for `id` after `effects`.
    fn reply(&self, id: ClientId, effects: Vec<rooms::Effect>) -> pb::RelayReply {
        let origin = self.client_ref(id);
        pb::RelayReply {
            client_id: id,
            effects: translate(effects, |c| self.client_ref(c), origin),
            room: self.rooms.room_of(id).unwrap_or_default().to_string(),
            gone: false,
            reason: String::new(),
            login: self
                .owners
                .get(&id)
                .map(|o| o.session.login.clone())
                .unwrap_or_default(),
        }
    }

    /// Forget `id`; its departure's effects (the notices of its leaving,
    /// rooms removed with its user's last connection).
    fn forget(&mut self, id: ClientId) -> Vec<pb::RelayEffect> {
        let origin = self.client_ref(id);
        let effects = self.rooms.disconnect(id, clock::unix_ms());
        self.owners.remove(&id);
        translate(effects, |c| self.client_ref(c), origin)
    }
}

/// The RoomRelay service.
#[derive(Clone)]
pub struct RelayService {
    state: Arc<Mutex<State>>,
    accounts: Arc<Accounts>,
    auth: Authenticator,
    max_clients: usize,
}

impl RelayService {
    /// Rooms for the servers' chats; `accounts` answers `#show users` and
    /// private-message lookups; at most `max_clients` connections.
    pub fn new(accounts: Arc<Accounts>, auth: Authenticator, max_clients: usize) -> Self {
        RelayService {
            state: Arc::new(Mutex::new(State {
                rooms: Rooms::new(),
                owners: HashMap::new(),
                // Rooms live in memory: after a restart, servers may still
                // hold connections numbered by the previous run, so ids
                // start from a random base rather than 1 (never 0, which
                // servers read as "no connection").
                next_id: (u64::from(rand::random::<u32>()) << 32) | 1,
                connects: RateLimits::new(CONNECTS_PER_SEC, CONNECT_BURST),
            })),
            accounts,
            auth,
            max_clients: max_clients.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("room relay lock poisoned")
    }

    /// Whether `login` has a chat connection on some server.
    pub fn is_online(&self, login: &str) -> bool {
        self.lock().rooms.is_online(login)
    }
}

/// Why a connection the manager does not know is gone: it was closed or
/// reset, or the manager restarted (rooms live in its memory).
const UNKNOWN: &str =
    "the manager no longer knows this chat (it restarted, or the connection was reset); reconnect with `dupla chat`";
/// Why a connection whose token stopped working is gone.
const TOKEN_GONE: &str = "your token expired or was revoked; log in again with `dupla login`";

/// A reply telling the caller its connection is no more, and why.
fn gone(id: ClientId, effects: Vec<pb::RelayEffect>, reason: &str) -> Reply {
    Ok(Response::new(pb::RelayReply {
        client_id: id,
        effects,
        room: String::new(),
        gone: true,
        login: String::new(),
        reason: reason.to_string(),
    }))
}

#[tonic::async_trait]
impl RoomRelay for RelayService {
    async fn open(&self, request: Request<pb::RelayOpenRequest>) -> Reply {
        let session = self.auth.check(request.metadata())?;
        let server_id = request.into_inner().server_id;
        let mut state = self.lock();
        if let Err(wait) = state.connects.take(&session.login, Instant::now()) {
            return Err(Error::Exhausted(format!(
                "{} joined the chat too often; try again in {} s",
                session.login,
                wait.as_secs().max(1)
            ))
            .into());
        }
        if state.owners.len() >= self.max_clients {
            return Err(Error::Exhausted(format!(
                "the chat is full ({} connections); try again later",
                self.max_clients
            ))
            .into());
        }
        let id = state.next_id;
        state.next_id += 1;
        let login = session.login.clone();
        state.owners.insert(id, Owner { server_id, session });
        let effects = state.rooms.connect(id, &login, clock::unix_ms());
        tracing::info!(%login, client = id, "chat connected on a server");
        Ok(Response::new(state.reply(id, effects)))
    }

    async fn command(&self, request: Request<pb::RelayCommandRequest>) -> Reply {
        let req = request.into_inner();
        let command = match rooms::parse(&req.line) {
            Ok(Some(Command::Say(_))) => {
                return Err(Status::invalid_argument(
                    "room messages go through the broker, not the manager",
                ))
            }
            Ok(Some(command)) => command,
            // Servers parse first and send only commands; answer anyway.
            Ok(None) | Err(_) => {
                return Err(Status::invalid_argument("not a chat command"));
            }
        };
        let dir = Snapshot::for_command(&self.accounts, &command);
        let mut state = self.lock();
        let id = req.client_id;
        let valid = match state.owners.get(&id) {
            Some(owner) if owner.server_id == req.server_id => {
                self.auth.still_valid(&owner.session)
            }
            _ => return gone(id, Vec::new(), UNKNOWN),
        };
        if !valid {
            // The token was revoked or expired: the connection ends, and
            // the others hear it leave.
            let effects = state.forget(id);
            return gone(id, effects, TOKEN_GONE);
        }
        let effects = state.rooms.handle(id, command, &dir, clock::unix_ms());
        Ok(Response::new(state.reply(id, effects)))
    }

    async fn close(&self, request: Request<pb::RelayCloseRequest>) -> Reply {
        let req = request.into_inner();
        let mut state = self.lock();
        let id = req.client_id;
        let effects = match state.owners.get(&id) {
            Some(owner) if owner.server_id == req.server_id => state.forget(id),
            _ => Vec::new(),
        };
        gone(id, effects, "closed")
    }

    async fn reset_rooms(&self, request: Request<pb::RelayResetRequest>) -> Reply {
        let server_id = request.into_inner().server_id;
        let mut state = self.lock();
        let mine: Vec<ClientId> = state
            .owners
            .iter()
            .filter(|(_, o)| o.server_id == server_id)
            .map(|(id, _)| *id)
            .collect();
        let mut effects = Vec::new();
        for id in mine {
            effects.extend(state.forget(id));
        }
        gone(0, effects, "reset")
    }
}
