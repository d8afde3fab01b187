//! Golden transcripts: whole sessions scripted line by line (`connect 1
//! alice`, `1> #cR games`, `disconnect 1`) and every effect they produce,
//! compared with the expected transcript. They pin down the behaviour across
//! all the parts at once — parsing, membership, lifecycle, the answers and
//! the per-room sequence numbers. The [`USERS`] directory is shared with the
//! submodules' unit tests.

use super::*;

/// A fixed user directory.
pub(super) struct Users(&'static [&'static str]);

impl Directory for Users {
    fn exists(&self, login: &str) -> bool {
        self.0.contains(&login)
    }
    fn logins(&self) -> Vec<String> {
        self.0.iter().map(|s| s.to_string()).collect()
    }
}

/// The registered users: alice and bob connect in the scripts, carol and
/// dave stay offline.
pub(super) const USERS: Users = Users(&["alice", "bob", "carol", "dave"]);

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
