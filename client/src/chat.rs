//! `dupla chat`: one bidirectional `Rooms/Chat` stream, on the user's
//! assigned storage server (`chat_link`), carrying the saved bearer token. Each line read goes up as typed; each
//! event coming down is printed as one line.
//!
//! On start the client synchronises with the manager's clock (Cristian's
//! algorithm, [`crate::time`]): every event carries the manager's time, and
//! lines the client makes itself are stamped with local time plus the
//! measured offset, so everything shows in server time.
//!
//! When standard input is not a terminal the output is the contract scripts
//! rely on: one line per event, flushed at once, with no timestamp — a room
//! message as `alice: text`, a private one as `[private] alice: text`,
//! notices and answers as `* text`. On a terminal each line gets the
//! server time in front: `[14:03:27] alice: text`.

use crate::output::format_unix_ms;
use crate::session::Client;
use crate::time::{LocalClock, SystemClock, TimeReport};
use anyhow::bail;
use dupla::v1::{chat_event, ChatEvent, ChatInput};
use dupla::Result;
use std::io::{IsTerminal, Write};
use std::string::FromUtf8Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Lines};

/// Clock samples taken when the chat starts: a few round trips are enough
/// for one of them to see a quiet network, and cost milliseconds.
pub const CHAT_CLOCK_SAMPLES: usize = 5;

/// Longest line sent, in bytes (the manager's limit): longer ones are
/// refused here, with the same words the manager would use.
pub const MAX_LINE_BYTES: usize = 4096;

/// Lines typed ahead of the network before reading stdin pauses.
const INPUT_QUEUE: usize = 64;

/// An event as one line of the stdin/stdout contract.
pub fn line(event: &ChatEvent) -> String {
    match chat_event::Kind::try_from(event.kind) {
        Ok(chat_event::Kind::Message) => format!("{}: {}", event.from, event.text),
        Ok(chat_event::Kind::Private) => format!("[private] {}: {}", event.from, event.text),
        _ => format!("* {}", event.text),
    }
}

/// `HH:MM:SS` of a Unix time in ms (UTC).
fn clock_time(unix_ms: i64) -> String {
    let full = format_unix_ms(unix_ms);
    full.get(11..).unwrap_or(&full).to_string()
}

/// Synchronise `clock` with the manager's over `samples` round trips.
pub async fn sync_clock<C: LocalClock>(
    client: &Client,
    clock: &C,
    samples: usize,
) -> Result<TimeReport> {
    client.time_with(clock, samples).await
}

/// Where chat lines go: stdout, timestamped on a terminal.
struct Screen {
    terminal: bool,
    clock: SystemClock,
    /// Manager minus local time, ns.
    offset_ns: i128,
}

impl Screen {
    /// The manager's time now, by the local clock and the measured offset.
    fn server_now_ms(&self) -> i64 {
        ((self.clock.unix_nanos() + self.offset_ns) / 1_000_000) as i64
    }

    /// Print a notice made here (`* text`, stamped with the manager's time
    /// on a terminal).
    fn local(&self, text: &str) -> std::io::Result<()> {
        self.print(self.server_now_ms(), &format!("* {text}"))
    }

    /// Print one event.
    fn event(&self, event: &ChatEvent) -> std::io::Result<()> {
        self.print(event.server_unix_ms, &line(event))
    }

    fn print(&self, server_ms: i64, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.terminal {
            writeln!(out, "[{}] {text}", clock_time(server_ms))?;
        } else {
            writeln!(out, "{text}")?;
        }
        out.flush()
    }
}

/// One line of input, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLine {
    /// The line, decoded as UTF-8.
    pub text: String,
    /// Whether the line was not valid UTF-8, so each invalid byte sequence
    /// in `text` stands as U+FFFD.
    pub lossy: bool,
}

/// The next line of `input` (`None` at the end), decoded lossily: a line
/// that is not valid UTF-8 (a Latin-1 `café`, stray binary) comes back with
/// U+FFFD for its bad bytes instead of ending the input. [`Lines`] hands
/// such a line's bytes back inside its `InvalidData` error and goes on with
/// the next line, so nothing else is lost. Cancel safe, like
/// [`Lines::next_line`].
pub async fn next_line_lossy<R>(input: &mut Lines<R>) -> std::io::Result<Option<InputLine>>
where
    R: AsyncBufRead + Unpin,
{
    match input.next_line().await {
        Ok(line) => Ok(line.map(|text| InputLine { text, lossy: false })),
        Err(err) => {
            let bytes = not_utf8(err)?;
            Ok(Some(InputLine {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                lossy: true,
            }))
        }
    }
}

/// The bytes of a line [`Lines`] refused as not UTF-8; any other error as
/// it was.
fn not_utf8(err: std::io::Error) -> std::io::Result<Vec<u8>> {
    let is_utf8_error = err.kind() == std::io::ErrorKind::InvalidData
        && err
            .get_ref()
            .is_some_and(|inner| inner.is::<FromUtf8Error>());
    if !is_utf8_error {
        return Err(err);
    }
    let inner = err
        .into_inner()
        .expect("invariant: checked to hold an error");
    Ok(inner
        .downcast::<FromUtf8Error>()
        .expect("invariant: checked to be a FromUtf8Error")
        .into_bytes())
}

/// `dupla chat`, reading lines from standard input.
pub async fn command(client: &Client) -> anyhow::Result<()> {
    let terminal = std::io::stdin().is_terminal();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    run(client, &mut lines, terminal).await
}

/// Chat with lines from `input` until `#exit`, the end of input, or the
/// manager ends the session. `terminal` picks the timestamped display.
pub async fn run<R>(client: &Client, input: &mut Lines<R>, terminal: bool) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
{
    if !client.has_token() {
        bail!("not logged in: run `dupla login USER` first (the chat needs an account)");
    }
    let clock = SystemClock::new();
    let report = sync_clock(client, &clock, CHAT_CLOCK_SAMPLES).await?;
    let screen = Screen {
        terminal,
        clock,
        offset_ns: (report.offset_ms * 1e6) as i128,
    };
    screen.local(&format!(
        "clock synchronised with the manager: offset {:+.3} ms, round trip {:.3} ms; times are the manager's",
        report.offset_ms, report.rtt_ms
    ))?;
    let (tx, mut chat) = client.open_chat(INPUT_QUEUE).await?;
    let mut tx = Some(tx);
    loop {
        tokio::select! {
            line = next_line_lossy(input), if tx.is_some() => match line? {
                Some(InputLine { text: line, lossy }) => {
                    if lossy {
                        // On stderr: stdout is the event contract.
                        eprintln!(
                            "warning: a line was not valid UTF-8; its invalid bytes became U+FFFD"
                        );
                    }
                    if line.len() > MAX_LINE_BYTES {
                        screen.local(&format!(
                            "message too long ({} bytes; the limit is {MAX_LINE_BYTES}); nothing was sent",
                            line.len()
                        ))?;
                    } else {
                        let sender = tx.as_ref().expect("invariant: polled only while open");
                        if sender.send(ChatInput { line }).await.is_err() {
                            // The stream is over; its last events tell why.
                            tx = None;
                        }
                    }
                }
                // End of input: close our side; the manager ends the session
                // after answering everything sent so far.
                None => tx = None,
            },
            event = chat.events.message() => match event {
                Ok(Some(event)) => screen.event(&event)?,
                Ok(None) => return Ok(()),
                Err(status) => return Err(chat.error(client, status).into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: chat_event::Kind, from: &str, text: &str) -> ChatEvent {
        ChatEvent {
            kind: kind as i32,
            from: from.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_print_as_the_contract_says() {
        use chat_event::Kind::*;
        assert_eq!(line(&event(Message, "alice", "hi")), "alice: hi");
        assert_eq!(line(&event(Private, "bob", "psst")), "[private] bob: psst");
        assert_eq!(
            line(&event(Notice, "", "bob joined lobby")),
            "* bob joined lobby"
        );
        assert_eq!(line(&event(Answer, "", "bye")), "* bye");
        assert_eq!(line(&event(Unspecified, "", "?")), "* ?");
        assert_eq!(clock_time(1_700_000_000_123), "22:13:20");
    }

    /// Every line of `input` through [`next_line_lossy`].
    async fn read_all(input: &[u8]) -> Vec<InputLine> {
        let mut lines = BufReader::new(input).lines();
        let mut out = Vec::new();
        while let Some(line) = next_line_lossy(&mut lines).await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(text: &str, lossy: bool) -> InputLine {
        InputLine {
            text: text.into(),
            lossy,
        }
    }

    #[tokio::test]
    async fn lines_that_are_not_utf8_are_read_lossily_and_reading_goes_on() {
        let input = b"hello\nx\xff\xfey\r\ncaf\xe9\ncaf\xc3\xa9\n\xc3\nlast";
        assert_eq!(
            read_all(input).await,
            [
                text("hello", false),
                text("x\u{FFFD}\u{FFFD}y", true),
                text("caf\u{FFFD}", true),
                text("café", false),
                text("\u{FFFD}", true),
                text("last", false),
            ]
        );
        // A bad last line without a newline, and an empty input.
        assert_eq!(
            read_all(b"a\n\xff").await,
            [text("a", false), text("\u{FFFD}", true)]
        );
        assert!(read_all(b"").await.is_empty());
    }

    #[test]
    fn other_read_errors_stay_errors() {
        let err = std::io::Error::new(std::io::ErrorKind::InvalidData, "something else");
        assert_eq!(not_utf8(err).unwrap_err().to_string(), "something else");
        let err = std::io::Error::other("disk on fire");
        assert_eq!(not_utf8(err).unwrap_err().kind(), std::io::ErrorKind::Other);
    }
}
