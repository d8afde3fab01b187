//! Chat rooms, the pure core: who is connected, who is in which room, who
//! created what, which commands parse and who may run them. No tokio, no
//! sockets, no clock: each call takes the time and returns [`Effect`]s —
//! "broadcast this in room X", "tell client 3 that", "client 3 now listens
//! to room Y" — that the hub (`room_hub.rs`) carries out on channels.
//!
//! Rules, as in docs/chat.md: a client lands in [`LOBBY`]; lines not
//! starting with `#` go to everyone in its room (the sender included),
//! shown under the user's login; membership changes are announced in the
//! room; a room lives until its creator deletes it or the creator's last
//! connection closes, and its members then return to the lobby with a
//! notice. Room events carry a per-room sequence number.

use std::collections::{BTreeMap, BTreeSet};

/// Identifies one chat connection (a user may have several).
pub type ClientId = u64;

/// The default room: every client lands here; it is never deleted.
pub const LOBBY: &str = "lobby";
/// Longest line a client may send, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest room name, in characters.
pub const MAX_ROOM_NAME: usize = 32;
/// Rooms at once, so room creation cannot exhaust the manager's memory.
pub const MAX_ROOMS: usize = 1000;
/// Rooms one user may have created at once.
pub const MAX_ROOMS_PER_USER: usize = 16;

/// What a client asked for, from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Say this in the current room.
    Say(String),
    /// `#cR <room>`: create the room and enter it.
    Create(String),
    /// `#gR <room>`: enter the room.
    Go(String),
    /// `#eR`: back to the lobby.
    Lobby,
    /// `#exit`: disconnect.
    Exit,
    /// `#lR`: rooms and their participant counts.
    List,
    /// `#dR <room>`: delete the room (creator only).
    Delete(String),
    /// `#show users`: every registered user, online or offline.
    ShowUsers,
    /// `#\private <user> <message>`: to that user, wherever they are.
    Private {
        /// Recipient login.
        to: String,
        /// The message.
        text: String,
    },
    /// `#help`: the command list.
    Help,
}

/// The command list, as `#help` and unknown commands answer.
pub const HELP: &str =
    "commands: #cR <room> create and enter · #gR <room> enter · #eR back to lobby · \
     #lR list rooms · #dR <room> delete your room · #show users · \
     #\\private <user> <message> · #exit · ##text sends \"#text\"";

/// Parse one line. `Ok(None)` for a blank line (nothing to do); `Err` holds
/// the answer for a malformed one.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "message too long ({} bytes; the limit is {MAX_LINE_BYTES}); nothing was sent",
            line.len()
        ));
    }
    if line.trim().is_empty() {
        return Ok(None);
    }
    if let Some(literal) = line.strip_prefix("##") {
        return Ok(Some(Command::Say(format!("#{literal}"))));
    }
    if !line.starts_with('#') {
        return Ok(Some(Command::Say(line.to_string())));
    }
    let (word, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(w, r)| (w, r.trim()));
    // Commands match whatever the case, so `#cr` works like `#cR`.
    let command = match word.to_ascii_lowercase().as_str() {
        "#cr" => Command::Create(room_arg("#cR <room>", rest)?),
        "#gr" => Command::Go(room_arg("#gR <room>", rest)?),
        "#dr" => Command::Delete(room_arg("#dR <room>", rest)?),
        "#er" => no_arg("#eR", rest, Command::Lobby)?,
        "#lr" => no_arg("#lR", rest, Command::List)?,
        "#exit" => no_arg("#exit", rest, Command::Exit)?,
        "#help" => Command::Help,
        "#show" if rest == "users" => Command::ShowUsers,
        "#show" => return Err("usage: #show users".into()),
        "#\\private" => match rest.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Command::Private {
                to: to.to_string(),
                text: text.trim_start().to_string(),
            },
            _ => return Err("usage: #\\private <user> <message>".into()),
        },
        _ => return Err(format!("unknown command {word}; {HELP}")),
    };
    Ok(Some(command))
}

/// The single room-name argument of a command.
fn room_arg(usage: &str, rest: &str) -> Result<String, String> {
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("usage: {usage}"));
    }
    validate_room(rest)?;
    Ok(rest.to_string())
}

/// A command that takes no argument.
fn no_arg(usage: &str, rest: &str, command: Command) -> Result<Command, String> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(format!("usage: {usage} (no argument)"))
    }
}

/// A room name: 1–32 of letters, digits, `_`, `.` and `-`.
pub fn validate_room(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_ROOM_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad room name {name:?}: 1 to {MAX_ROOM_NAME} letters, digits, _ . or -"
        ))
    }
}

/// How a client shows an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Said in a room: `from: text`.
    Message,
    /// To one user: `[private] from: text`.
    Private,
    /// Something happened in the room: `* text`.
    Notice,
    /// The answer to the client's own command: `* text`.
    Answer,
}

/// One event for one client or a whole room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// How to show it.
    pub kind: Kind,
    /// The room it belongs to (or the receiver's room, for one-client events).
    pub room: String,
    /// Per-room sequence number of room events; 0 for one-client events.
    pub seq: u64,
    /// Server time, ms since the Unix epoch.
    pub unix_ms: i64,
    /// Sender login (messages); empty otherwise.
    pub from: String,
    /// The text.
    pub text: String,
}

/// What the hub must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send to everyone listening to `event.room`.
    Broadcast(Event),
    /// Send to one client only.
    Tell(ClientId, Event),
    /// The client now listens to this room (and no longer to its old one).
    Move(ClientId, String),
    /// A room was created: open its channel.
    Open(String),
    /// A room was removed: close its channel (after the moves before it).
    Close(String),
    /// End this client's session.
    Disconnect(ClientId),
}

/// Where the registered users come from (the accounts database).
pub trait Directory {
    /// Whether `login` has an account.
    fn exists(&self, login: &str) -> bool;
    /// Every login, in order.
    fn logins(&self) -> Vec<String>;
}

/// One connection.
#[derive(Debug, Clone)]
struct Client {
    login: String,
    room: String,
}

/// One room.
#[derive(Debug, Clone, Default)]
struct Room {
    /// Login of the creator; `None` for the lobby.
    creator: Option<String>,
    members: BTreeSet<ClientId>,
    /// Sequence number of the last room event.
    seq: u64,
}

/// Every room and connection.
#[derive(Debug, Clone)]
pub struct Rooms {
    clients: BTreeMap<ClientId, Client>,
    rooms: BTreeMap<String, Room>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    /// Just the lobby, empty.
    pub fn new() -> Self {
        let mut rooms = BTreeMap::new();
        rooms.insert(LOBBY.to_string(), Room::default());
        Rooms {
            clients: BTreeMap::new(),
            rooms,
        }
    }

    /// A new connection of `login`: it lands in the lobby.
    pub fn connect(&mut self, id: ClientId, login: &str, now: i64) -> Vec<Effect> {
        self.clients.insert(
            id,
            Client {
                login: login.to_string(),
                room: LOBBY.to_string(),
            },
        );
        let mut fx = Vec::new();
        let lobby = self
            .rooms
            .get_mut(LOBBY)
            .expect("invariant: the lobby exists");
        lobby.members.insert(id);
        let here = lobby.members.len();
        fx.push(Effect::Move(id, LOBBY.into()));
        fx.push(self.answer(
            id,
            now,
            format!("welcome {login}; you are in {LOBBY} ({here} here); #help lists the commands"),
        ));
        fx.push(self.notice(LOBBY, now, format!("{login} joined {LOBBY}")));
        fx
    }

    /// A connection closed: it leaves its room, and when it was its user's
    /// last one, the rooms the user created are removed.
    pub fn disconnect(&mut self, id: ClientId, now: i64) -> Vec<Effect> {
        let Some(client) = self.clients.remove(&id) else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        if let Some(room) = self.rooms.get_mut(&client.room) {
            room.members.remove(&id);
        }
        fx.push(self.notice(
            &client.room,
            now,
            format!("{} left {}", client.login, client.room),
        ));
        if !self.clients.values().any(|c| c.login == client.login) {
            let created: Vec<String> = self
                .rooms
                .iter()
                .filter(|(_, r)| r.creator.as_deref() == Some(client.login.as_str()))
                .map(|(name, _)| name.clone())
                .collect();
            for name in created {
                let why = format!("its creator {} disconnected", client.login);
                fx.extend(self.remove_room(&name, &why, now));
            }
        }
        fx
    }

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

    /// Connections of `login`.
    pub fn clients_of(&self, login: &str) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(_, c)| c.login == login)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `login` has a connection.
    pub fn is_online(&self, login: &str) -> bool {
        self.clients.values().any(|c| c.login == login)
    }

    /// The room client `id` is in.
    pub fn room_of(&self, id: ClientId) -> Option<&str> {
        self.clients.get(&id).map(|c| c.room.as_str())
    }

    /// Every room name with its number of participants, lobby first.
    pub fn occupancy(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .rooms
            .iter()
            .map(|(name, r)| (name.clone(), r.members.len()))
            .collect();
        all.sort_by_key(|(name, _)| (name != LOBBY, name.clone()));
        all
    }

    /// `#cR`: refuse an existing name or a user with too many rooms.
    fn create(&mut self, id: ClientId, client: &Client, name: &str, now: i64) -> Vec<Effect> {
        if self.rooms.contains_key(name) {
            let text = format!("room {name} already exists; #gR {name} enters it");
            return vec![self.answer(id, now, text)];
        }
        let mine = self
            .rooms
            .values()
            .filter(|r| r.creator.as_deref() == Some(client.login.as_str()))
            .count();
        if mine >= MAX_ROOMS_PER_USER || self.rooms.len() >= MAX_ROOMS {
            let text = format!(
                "cannot create {name}: too many rooms (at most {MAX_ROOMS_PER_USER} per user, {MAX_ROOMS} in all); #dR one first"
            );
            return vec![self.answer(id, now, text)];
        }
        self.rooms.insert(
            name.to_string(),
            Room {
                creator: Some(client.login.clone()),
                ..Room::default()
            },
        );
        let mut fx = vec![Effect::Open(name.to_string())];
        fx.extend(self.enter(id, client, name, now));
        fx
    }

    /// `#gR`: the room must exist and not be the current one.
    fn go(&mut self, id: ClientId, client: &Client, name: &str, now: i64) -> Vec<Effect> {
        if client.room == name {
            return vec![self.answer(id, now, format!("you are already in {name}"))];
        }
        if !self.rooms.contains_key(name) {
            let text = format!("no room named {name}; #lR lists the rooms, #cR {name} creates it");
            return vec![self.answer(id, now, text)];
        }
        self.enter(id, client, name, now)
    }

    /// Move client `id` into the existing room `to`, announcing it.
    fn enter(&mut self, id: ClientId, client: &Client, to: &str, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(old) = self.rooms.get_mut(&client.room) {
            old.members.remove(&id);
        }
        let room = self
            .rooms
            .get_mut(to)
            .expect("invariant: callers check the room exists");
        room.members.insert(id);
        let here = room.members.len();
        if let Some(c) = self.clients.get_mut(&id) {
            c.room = to.to_string();
        }
        fx.push(self.answer(id, now, format!("you are now in {to} ({here} here)")));
        fx.push(self.notice(
            &client.room,
            now,
            format!("{} left {}", client.login, client.room),
        ));
        fx.push(Effect::Move(id, to.to_string()));
        fx.push(self.notice(to, now, format!("{} joined {to}", client.login)));
        fx
    }

    /// `#dR`: only the creator; the lobby never.
    fn delete(&mut self, id: ClientId, client: &Client, name: &str, now: i64) -> Vec<Effect> {
        let text = match self.rooms.get(name) {
            None => format!("no room named {name}; #lR lists the rooms"),
            Some(room) => match room.creator.as_deref() {
                None => format!("{LOBBY} cannot be deleted"),
                Some(creator) if creator != client.login => {
                    format!("only {creator}, who created {name}, may delete it")
                }
                Some(_) => {
                    let why = format!("{} deleted it", client.login);
                    let mut fx = self.remove_room(name, &why, now);
                    fx.insert(0, self.answer(id, now, format!("deleted room {name}")));
                    return fx;
                }
            },
        };
        vec![self.answer(id, now, text)]
    }

    /// Remove a room: its members go to the lobby, told why.
    fn remove_room(&mut self, name: &str, why: &str, now: i64) -> Vec<Effect> {
        let Some(room) = self.rooms.remove(name) else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        for member in room.members {
            let Some(client) = self.clients.get_mut(&member) else {
                continue;
            };
            client.room = LOBBY.to_string();
            let login = client.login.clone();
            self.rooms
                .get_mut(LOBBY)
                .expect("invariant: the lobby exists")
                .members
                .insert(member);
            fx.push(Effect::Move(member, LOBBY.into()));
            let text = format!("room {name} was removed ({why}); you are back in {LOBBY}");
            fx.push(Effect::Tell(
                member,
                self.event(LOBBY, Kind::Notice, "", text, now),
            ));
            fx.push(self.notice(LOBBY, now, format!("{login} joined {LOBBY}")));
        }
        fx.push(Effect::Close(name.to_string()));
        fx
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

    /// A one-client answer, stamped with the client's room.
    fn answer(&self, id: ClientId, now: i64, text: String) -> Effect {
        let room = self.room_of(id).unwrap_or(LOBBY).to_string();
        Effect::Tell(id, self.event(&room, Kind::Answer, "", text, now))
    }

    /// A room notice with the room's next sequence number.
    fn notice(&mut self, room: &str, now: i64, text: String) -> Effect {
        self.room_event(room, Kind::Notice, "", text, now)
    }

    /// A room event with the room's next sequence number.
    fn room_event(&mut self, room: &str, kind: Kind, from: &str, text: String, now: i64) -> Effect {
        let seq = match self.rooms.get_mut(room) {
            Some(r) => {
                r.seq += 1;
                r.seq
            }
            None => 0,
        };
        Effect::Broadcast(Event {
            seq,
            ..self.event(room, kind, from, text, now)
        })
    }

    /// An event without a sequence number.
    fn event(&self, room: &str, kind: Kind, from: &str, text: String, now: i64) -> Event {
        Event {
            kind,
            room: room.to_string(),
            seq: 0,
            unix_ms: now,
            from: from.to_string(),
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Users(&'static [&'static str]);

    impl Directory for Users {
        fn exists(&self, login: &str) -> bool {
            self.0.contains(&login)
        }
        fn logins(&self) -> Vec<String> {
            self.0.iter().map(|s| s.to_string()).collect()
        }
    }

    const USERS: Users = Users(&["alice", "bob", "carol", "dave"]);

    /// One effect as a line of a transcript.
    fn render(effect: &Effect) -> String {
        let show = |e: &Event| match e.kind {
            Kind::Message => format!("{}: {}", e.from, e.text),
            Kind::Private => format!("[private] {}: {}", e.from, e.text),
            Kind::Notice | Kind::Answer => format!("* {}", e.text),
        };
        match effect {
            Effect::Broadcast(e) => format!("  {}#{} {}", e.room, e.seq, show(e)),
            Effect::Tell(id, e) => format!("  to {id}: {}", show(e)),
            Effect::Move(id, room) => format!("  move {id} -> {room}"),
            Effect::Open(room) => format!("  open {room}"),
            Effect::Close(room) => format!("  close {room}"),
            Effect::Disconnect(id) => format!("  disconnect {id}"),
        }
    }

    /// Run a script and return the transcript. Script lines:
    /// `connect ID LOGIN`, `disconnect ID`, `ID> LINE`.
    fn run(script: &str) -> String {
        let mut rooms = Rooms::new();
        let mut out = String::new();
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push('\n');
            let fx = if let Some(rest) = line.strip_prefix("connect ") {
                let (id, login) = rest.split_once(' ').unwrap();
                rooms.connect(id.parse().unwrap(), login, 0)
            } else if let Some(id) = line.strip_prefix("disconnect ") {
                rooms.disconnect(id.parse().unwrap(), 0)
            } else {
                let (id, text) = line.split_once("> ").unwrap();
                let id = id.parse().unwrap();
                match parse(text) {
                    Ok(Some(cmd)) => rooms.handle(id, cmd, &USERS, 0),
                    Ok(None) => Vec::new(),
                    Err(answer) => vec![Effect::Tell(
                        id,
                        rooms.event("", Kind::Answer, "", answer, 0),
                    )],
                }
            };
            for effect in &fx {
                out.push_str(&render(effect));
                out.push('\n');
            }
        }
        out
    }

    fn golden(script: &str, expected: &str) {
        let got = run(script);
        let lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let base = lines.iter().map(|l| indent(l)).min().unwrap_or(0);
        // Lines indented deeper than the commands are effects: two spaces.
        let want: String = lines
            .iter()
            .map(|l| {
                let pad = if indent(l) > base { "  " } else { "" };
                format!("{pad}{}\n", l.trim_start())
            })
            .collect();
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse("hello"), Ok(Some(Command::Say("hello".into()))));
        assert_eq!(parse("hi\r"), Ok(Some(Command::Say("hi".into()))));
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(parse("##tag"), Ok(Some(Command::Say("#tag".into()))));
        assert_eq!(
            parse("#cR games"),
            Ok(Some(Command::Create("games".into())))
        );
        assert_eq!(
            parse("#cr games"),
            Ok(Some(Command::Create("games".into())))
        );
        assert_eq!(parse("#gR  games "), Ok(Some(Command::Go("games".into()))));
        assert_eq!(parse("#eR"), Ok(Some(Command::Lobby)));
        assert_eq!(parse("#lR"), Ok(Some(Command::List)));
        assert_eq!(
            parse("#dR games"),
            Ok(Some(Command::Delete("games".into())))
        );
        assert_eq!(parse("#show users"), Ok(Some(Command::ShowUsers)));
        assert_eq!(parse("#exit"), Ok(Some(Command::Exit)));
        assert_eq!(
            parse("#\\private bob  hello there"),
            Ok(Some(Command::Private {
                to: "bob".into(),
                text: "hello there".into()
            }))
        );
        for bad in [
            "#cR",
            "#cR a b",
            "#cR a/b",
            "#eR x",
            "#show",
            "#\\private bob",
            "#nope",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&"x".repeat(MAX_LINE_BYTES)).is_ok());
        let err = parse(&"x".repeat(MAX_LINE_BYTES + 1)).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(validate_room(&"r".repeat(33)).is_err());
    }

    #[test]
    fn golden_rooms_messages_and_moves() {
        golden(
            "
            connect 1 alice
            connect 2 bob
            1> hello
            1> #cR games
            2> #cR games
            2> #gR games
            2> #gR games
            2> gg
            1> #lR
            2> #eR
            2> #eR
            2> #gR nowhere
            ",
            "
            connect 1 alice
                move 1 -> lobby
                to 1: * welcome alice; you are in lobby (1 here); #help lists the commands
                lobby#1 * alice joined lobby
            connect 2 bob
                move 2 -> lobby
                to 2: * welcome bob; you are in lobby (2 here); #help lists the commands
                lobby#2 * bob joined lobby
            1> hello
                lobby#3 alice: hello
            1> #cR games
                open games
                to 1: * you are now in games (1 here)
                lobby#4 * alice left lobby
                move 1 -> games
                games#1 * alice joined games
            2> #cR games
                to 2: * room games already exists; #gR games enters it
            2> #gR games
                to 2: * you are now in games (2 here)
                lobby#5 * bob left lobby
                move 2 -> games
                games#2 * bob joined games
            2> #gR games
                to 2: * you are already in games
            2> gg
                games#3 bob: gg
            1> #lR
                to 1: * rooms: lobby (0), games (2)
            2> #eR
                to 2: * you are now in lobby (1 here)
                games#4 * bob left games
                move 2 -> lobby
                lobby#6 * bob joined lobby
            2> #eR
                to 2: * you are already in lobby
            2> #gR nowhere
                to 2: * no room named nowhere; #lR lists the rooms, #cR nowhere creates it
            ",
        );
    }

    #[test]
    fn golden_delete_and_creator_disconnect() {
        golden(
            "
            connect 1 alice
            connect 2 bob
            1> #cR games
            2> #gR games
            2> #dR games
            2> #dR lobby
            1> #eR
            1> #dR games
            1> #cR chess
            2> #gR chess
            disconnect 1
            ",
            "
            connect 1 alice
                move 1 -> lobby
                to 1: * welcome alice; you are in lobby (1 here); #help lists the commands
                lobby#1 * alice joined lobby
            connect 2 bob
                move 2 -> lobby
                to 2: * welcome bob; you are in lobby (2 here); #help lists the commands
                lobby#2 * bob joined lobby
            1> #cR games
                open games
                to 1: * you are now in games (1 here)
                lobby#3 * alice left lobby
                move 1 -> games
                games#1 * alice joined games
            2> #gR games
                to 2: * you are now in games (2 here)
                lobby#4 * bob left lobby
                move 2 -> games
                games#2 * bob joined games
            2> #dR games
                to 2: * only alice, who created games, may delete it
            2> #dR lobby
                to 2: * lobby cannot be deleted
            1> #eR
                to 1: * you are now in lobby (1 here)
                games#3 * alice left games
                move 1 -> lobby
                lobby#5 * alice joined lobby
            1> #dR games
                to 1: * deleted room games
                move 2 -> lobby
                to 2: * room games was removed (alice deleted it); you are back in lobby
                lobby#6 * bob joined lobby
                close games
            1> #cR chess
                open chess
                to 1: * you are now in chess (1 here)
                lobby#7 * alice left lobby
                move 1 -> chess
                chess#1 * alice joined chess
            2> #gR chess
                to 2: * you are now in chess (2 here)
                lobby#8 * bob left lobby
                move 2 -> chess
                chess#2 * bob joined chess
            disconnect 1
                chess#3 * alice left chess
                move 2 -> lobby
                to 2: * room chess was removed (its creator alice disconnected); you are back in lobby
                lobby#9 * bob joined lobby
                close chess
            ",
        );
    }

    #[test]
    fn golden_private_users_and_exit() {
        golden(
            "
            connect 1 alice
            connect 2 bob
            1> #cR games
            2> #\\private alice psst
            2> #\\private carol hi
            2> #\\private zed hi
            2> #show users
            1> #exit
            ",
            "
            connect 1 alice
                move 1 -> lobby
                to 1: * welcome alice; you are in lobby (1 here); #help lists the commands
                lobby#1 * alice joined lobby
            connect 2 bob
                move 2 -> lobby
                to 2: * welcome bob; you are in lobby (2 here); #help lists the commands
                lobby#2 * bob joined lobby
            1> #cR games
                open games
                to 1: * you are now in games (1 here)
                lobby#3 * alice left lobby
                move 1 -> games
                games#1 * alice joined games
            2> #\\private alice psst
                to 2: * private to alice: psst
                to 1: [private] bob: psst
            2> #\\private carol hi
                to 2: * carol is offline; private messages are not kept, try again later
            2> #\\private zed hi
                to 2: * no user named zed; #show users lists them
            2> #show users
                to 2: * users: alice (online), bob (online), carol (offline), dave (offline)
            1> #exit
                to 1: * bye
                disconnect 1
            ",
        );
    }

    #[test]
    fn a_creator_with_another_connection_keeps_the_room() {
        let mut rooms = Rooms::new();
        rooms.connect(1, "alice", 0);
        rooms.connect(2, "alice", 0);
        rooms.handle(1, Command::Create("games".into()), &USERS, 0);
        let fx = rooms.disconnect(1, 0);
        assert!(!fx.contains(&Effect::Close("games".into())));
        let fx = rooms.disconnect(2, 0);
        assert!(fx.contains(&Effect::Close("games".into())));
        assert_eq!(rooms.occupancy(), vec![(LOBBY.to_string(), 0)]);
    }

    #[test]
    fn room_creation_is_bounded_per_user() {
        let mut rooms = Rooms::new();
        rooms.connect(1, "alice", 0);
        for i in 0..MAX_ROOMS_PER_USER {
            let fx = rooms.handle(1, Command::Create(format!("r{i}")), &USERS, 0);
            assert!(matches!(fx[0], Effect::Open(_)));
        }
        let fx = rooms.handle(1, Command::Create("one-more".into()), &USERS, 0);
        assert!(matches!(&fx[0], Effect::Tell(1, e) if e.text.contains("too many rooms")));
    }
}
