//! Command parsing: one line a client typed becomes a [`Command`], or the
//! answer explaining why it does not parse. Pure text work, kept apart from
//! the room state so the syntax (case-insensitive `#` commands, `##` to send
//! a literal `#`, the line and room-name limits) can be read and tested on
//! its own.

/// Longest line a client may send, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest room name, in characters.
pub const MAX_ROOM_NAME: usize = 32;

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

/// Whether `c` may not appear in a chat line: control characters (newlines
/// would start a forged line, escapes drive terminals; a tab is allowed)
/// and the Unicode marks that reorder text on screen.
pub fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

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
    if let Some(bad) = line.chars().find(|&c| forbidden(c)) {
        return Err(format!(
            "control and bidirectional-override characters (here {bad:?}) are not allowed in chat lines: they could fake other users' lines or drive terminals; nothing was sent"
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for forged in [
            "hi\n<mallory> fake",
            "hi\r<mallory> fake",
            "\x1b[2J\x1b[Hwiped",
            "evil \u{202e}txt.exe",
            "#\\private bob hi\n<alice> fake",
            "nul\0",
        ] {
            let err = parse(forged).unwrap_err();
            assert!(err.contains("not allowed"), "{forged:?}: {err}");
        }
        assert!(parse("tab\tok\r\n").is_ok());
        let err = parse(&"x".repeat(MAX_LINE_BYTES + 1)).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(validate_room(&"r".repeat(33)).is_err());
    }
}
