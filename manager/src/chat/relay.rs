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
//!
//! A server that dies cannot say its connections are gone. Each call first
//! forgets the connections of servers the membership counts as down (at
//! most once a second), and the calling server carries out what follows
//! from it (the "left" notices) with its own effects.

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
use std::time::{Duration, Instant};
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
    /// When the connections of dead servers were last looked for.
    last_sweep: Option<Instant>,
    /// Effects of forgetting a dead server's connections, for the next
    /// reply (any live server can publish them).
    orphaned: Vec<pb::RelayEffect>,
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

    /// Forget the connections of servers `is_down` names, other than
    /// `caller` (which is evidently alive), looked for at most once per
    /// `every`; their effects wait in `orphaned`.
    fn sweep(&mut self, is_down: &ServerDown, caller: Option<&str>, every: Duration) {
        let now = Instant::now();
        if self
            .last_sweep
            .is_some_and(|last| now.duration_since(last) < every)
        {
            return;
        }
        self.last_sweep = Some(now);
        let mut servers: Vec<String> = self.owners.values().map(|o| o.server_id.clone()).collect();
        servers.sort();
        servers.dedup();
        let dead = servers
            .into_iter()
            .filter(|s| Some(s.as_str()) != caller && is_down(s));
        for server in dead {
            let mine: Vec<ClientId> = self.clients_of(&server);
            tracing::info!(%server, connections = mine.len(), "chat connections of a down server forgotten");
            for id in mine {
                let effects = self.forget(id);
                self.orphaned.extend(effects);
            }
        }
    }

    /// The connections `server_id` holds.
    fn clients_of(&self, server_id: &str) -> Vec<ClientId> {
        self.owners
            .iter()
            .filter(|(_, o)| o.server_id == server_id)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `effects` after those waiting from dead servers' connections (which
    /// happened before this call): all for the calling server to carry out.
    fn after_orphaned(&mut self, mut effects: Vec<pb::RelayEffect>) -> Vec<pb::RelayEffect> {
        let mut all = std::mem::take(&mut self.orphaned);
        all.append(&mut effects);
        all
    }

    /// The answer to `id`'s call, with the waiting effects first. Their
    /// room events name `id` as their origin: its server then waits for
    /// them to come back through the broker before handing over the answer,
    /// as for the call's own events, so the answer comes after them.
    fn answer(&mut self, id: ClientId, effects: Vec<rooms::Effect>) -> Reply {
        let mut reply = self.reply(id, effects);
        if let Some(origin) = self.client_ref(id) {
            for effect in &mut self.orphaned {
                if let Some(pb::relay_effect::Effect::Room(envelope)) = &mut effect.effect {
                    envelope.origin = Some(origin.clone());
                }
            }
        }
        reply.effects = self.after_orphaned(reply.effects);
        Ok(Response::new(reply))
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

/// Whether a server (by id) is down, or no longer a member: its chat
/// connections are gone with it.
pub type ServerDown = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How often calls look for connections of dead servers: often enough that
/// `#lR` and presence soon stop counting them, rarely enough that a busy
/// relay does not ask the membership on every call.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The RoomRelay service.
#[derive(Clone)]
pub struct RelayService {
    state: Arc<Mutex<State>>,
    accounts: Arc<Accounts>,
    auth: Authenticator,
    max_clients: usize,
    is_down: ServerDown,
    sweep_every: Duration,
}

impl RelayService {
    /// Rooms for the servers' chats; `accounts` answers `#show users` and
    /// private-message lookups; at most `max_clients` connections; the
    /// connections of servers `is_down` names are forgotten.
    pub fn new(
        accounts: Arc<Accounts>,
        auth: Authenticator,
        max_clients: usize,
        is_down: ServerDown,
    ) -> Self {
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
                last_sweep: None,
                orphaned: Vec::new(),
            })),
            accounts,
            auth,
            max_clients: max_clients.max(1),
            is_down,
            sweep_every: SWEEP_EVERY,
        }
    }

    /// The state, locked, with dead servers' connections forgotten; the
    /// call comes from server `caller`, if any.
    fn lock(&self, caller: Option<&str>) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().expect("room relay lock poisoned");
        state.sweep(&self.is_down, caller, self.sweep_every);
        state
    }

    /// Whether `login` has a chat connection on some server.
    pub fn is_online(&self, login: &str) -> bool {
        self.lock(None).rooms.is_online(login)
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
        let mut state = self.lock(Some(&server_id));
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
        state.answer(id, effects)
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
        let mut state = self.lock(Some(&req.server_id));
        let id = req.client_id;
        let valid = match state.owners.get(&id) {
            Some(owner) if owner.server_id == req.server_id => {
                self.auth.still_valid(&owner.session)
            }
            _ => return gone(id, state.after_orphaned(Vec::new()), UNKNOWN),
        };
        if !valid {
            // The token was revoked or expired: the connection ends, and
            // the others hear it leave.
            let effects = state.forget(id);
            return gone(id, state.after_orphaned(effects), TOKEN_GONE);
        }
        let effects = state.rooms.handle(id, command, &dir, clock::unix_ms());
        state.answer(id, effects)
    }

    async fn close(&self, request: Request<pb::RelayCloseRequest>) -> Reply {
        let req = request.into_inner();
        let mut state = self.lock(Some(&req.server_id));
        let id = req.client_id;
        let effects = match state.owners.get(&id) {
            Some(owner) if owner.server_id == req.server_id => state.forget(id),
            _ => Vec::new(),
        };
        gone(id, state.after_orphaned(effects), "closed")
    }

    async fn reset_rooms(&self, request: Request<pb::RelayResetRequest>) -> Reply {
        let server_id = request.into_inner().server_id;
        let mut state = self.lock(Some(&server_id));
        let mut effects = Vec::new();
        for id in state.clients_of(&server_id) {
            effects.extend(state.forget(id));
        }
        gone(0, state.after_orphaned(effects), "reset")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tokens::Tokens;
    use dupla::kv::MemoryKv;
    use dupla::rpc::AUTHORIZATION_METADATA;
    use std::collections::HashSet;

    /// A relay whose dead servers are those in the returned set, swept at
    /// every call; tokens for `logins`, in order.
    fn relay(logins: &[&str]) -> (RelayService, Arc<Mutex<HashSet<String>>>, Vec<String>) {
        let kv = Arc::new(MemoryKv::new());
        let mut tokens = Tokens::load(kv.clone(), clock::unix_ms()).unwrap();
        let issued = logins
            .iter()
            .map(|login| {
                tokens
                    .issue(login, None, Duration::from_secs(60), clock::unix_ms())
                    .unwrap()
                    .0
            })
            .collect();
        let dead = Arc::new(Mutex::new(HashSet::new()));
        let probe = dead.clone();
        let mut relay = RelayService::new(
            Arc::new(Accounts::new(kv)),
            Authenticator::new(Arc::new(Mutex::new(tokens))),
            100,
            Arc::new(move |server: &str| probe.lock().unwrap().contains(server)),
        );
        relay.sweep_every = Duration::ZERO;
        (relay, dead, issued)
    }

    async fn open(relay: &RelayService, token: &str, server: &str) -> ClientId {
        let mut request = Request::new(pb::RelayOpenRequest {
            server_id: server.into(),
        });
        request.metadata_mut().insert(
            AUTHORIZATION_METADATA,
            format!("Bearer {token}").parse().unwrap(),
        );
        relay.open(request).await.unwrap().into_inner().client_id
    }

    /// The texts of the room events and answers of a reply, in order; each
    /// room event's text is followed by its origin's client id.
    async fn command(relay: &RelayService, server: &str, id: ClientId, line: &str) -> Vec<String> {
        let request = Request::new(pb::RelayCommandRequest {
            server_id: server.into(),
            client_id: id,
            line: line.into(),
        });
        let reply = relay.command(request).await.unwrap().into_inner();
        reply
            .effects
            .into_iter()
            .filter_map(|e| match e.effect {
                Some(pb::relay_effect::Effect::Room(envelope)) => {
                    let origin = envelope.origin.map_or(0, |o| o.client_id);
                    envelope
                        .event
                        .map(|e| format!("{} (from {origin})", e.text))
                }
                Some(pb::relay_effect::Effect::Tell(tell)) => tell.event.map(|e| e.text),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_dead_servers_connections_leave_at_the_next_call() {
        let (relay, dead, tokens) = relay(&["ada", "bob"]);
        let ada = open(&relay, &tokens[0], "s1").await;
        let _bob = open(&relay, &tokens[1], "s2").await;
        assert!(relay.is_online("bob"));
        let texts = command(&relay, "s1", ada, "#lR").await;
        assert_eq!(texts, ["rooms: lobby (2)"]);

        // s2 dies without a word: at ada's next command bob leaves the
        // room, before the answer, which no longer counts him. The notice
        // names ada's connection as its origin, so that her server hands
        // her the answer only after the notice came back from the broker.
        dead.lock().unwrap().insert("s2".to_string());
        let texts = command(&relay, "s1", ada, "#lR").await;
        assert_eq!(
            texts,
            [
                format!("bob left lobby (from {ada})"),
                "rooms: lobby (1)".into()
            ]
        );
        assert!(!relay.is_online("bob"));
    }

    #[tokio::test]
    async fn the_calling_server_is_never_counted_dead() {
        // Right after a manager restart a live server may not have
        // heartbeated yet; its own calls prove it alive.
        let (relay, dead, tokens) = relay(&["ada"]);
        dead.lock().unwrap().insert("s1".to_string());
        let ada = open(&relay, &tokens[0], "s1").await;
        let texts = command(&relay, "s1", ada, "#lR").await;
        assert_eq!(texts, ["rooms: lobby (1)"]);
    }
}
