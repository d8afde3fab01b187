//! What the user sees: text or `--json` on stdout, aligned tables, dates,
//! rates, and the one-line error (plus a hint of what to do next) on stderr.

use serde::Serialize;
use std::fmt::Display;

/// Bytes in the "MB" of MB/s: rates use decimal megabytes, as disks and
/// networks do.
pub const MB: f64 = 1_000_000.0;

/// Chooses between human text and JSON for everything a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
}

impl Output {
    /// Print a result: `human` in text mode, `value` as one line of JSON in
    /// JSON mode.
    pub fn emit<T: Serialize>(&self, human: impl Display, value: &T) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        } else {
            println!("{human}");
        }
        Ok(())
    }

    /// Print `human`, or with `--json` one object per item and line (as
    /// DESIGN §7 asks of every list), never one JSON array.
    pub fn emit_each<T: Serialize>(&self, human: impl Display, items: &[T]) -> anyhow::Result<()> {
        if self.json {
            for item in items {
                println!("{}", serde_json::to_string(item)?);
            }
        } else {
            println!("{human}");
        }
        Ok(())
    }
}

/// Throughput in MB/s (10^6 bytes per second); 0 for an instant transfer.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / MB / seconds
    } else {
        0.0
    }
}

/// A rate for people: `412 MB/s`, `48.1 MB/s`, `0.012 MB/s`.
pub fn format_rate(mb_per_s: f64) -> String {
    if mb_per_s >= 100.0 {
        format!("{mb_per_s:.0} MB/s")
    } else if mb_per_s >= 1.0 {
        format!("{mb_per_s:.1} MB/s")
    } else {
        format!("{mb_per_s:.3} MB/s")
    }
}

/// A plain text table: a header row and left-aligned columns two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    // Columns on a terminal, not chars: `日本語.txt` takes 10.
    let columns = |cell: &str| unicode_width::UnicodeWidthStr::width(cell);
    let mut widths: Vec<usize> = header.iter().map(|h| columns(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(columns(cell));
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(columns(cell));
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(header.to_vec())];
    for row in rows {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines.join("\n")
}

/// A path as a message line shows it: as it is, or quoted with escapes
/// when it holds control characters (a newline in a name must not start a
/// line of its own, nor an escape sequence drive the terminal).
pub fn shown_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.chars().any(char::is_control) {
        format!("{path:?}").into()
    } else {
        path.into()
    }
}

/// The first `n` of `paths` (as [`shown_path`] shows them), comma
/// separated, then "and K more": how a closing line names what a run left
/// out, every one of which was listed above it with its reason.
pub fn first_few<S: AsRef<str>>(paths: &[S], n: usize) -> String {
    let mut named: Vec<String> = paths
        .iter()
        .take(n)
        .map(|p| shown_path(p.as_ref()).into_owned())
        .collect();
    if paths.len() > n {
        named.push(format!("and {} more", paths.len() - n));
    }
    named.join(", ")
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS` UTC, or `-` for 0.
pub fn format_unix_ms(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    dupla::clock::format_utc_time(unix_ms)
}

/// The one-line message for a failed command: the error and its causes,
/// newlines folded, so a script can read one line per failure.
pub fn error_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Print a failed command on stderr: `error: ...`, then `hint: ...` when
/// there is something to suggest.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {}", error_line(err));
    if let Some(hint) = hint(err) {
        eprintln!("hint: {hint}");
    }
}

/// What the user can do about `err`, when there is something useful to say.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let err = err.downcast_ref::<dupla::Error>()?;
    let message = err.to_string();
    // The message already says what to do: a generic hint would only
    // repeat it, or point elsewhere.
    if message.contains("`dupla ") || message.contains("run the same command") {
        return None;
    }
    Some(match err {
        dupla::Error::Unavailable(_) => {
            "start the node, or point the client elsewhere with --manager/--server \
             (or DUPLA_MANAGER/DUPLA_SERVER)"
        }
        dupla::Error::NotFound(_) => "`dupla ls` lists your backed-up files",
        dupla::Error::Corrupt(_) => {
            "nothing was written; run the command again (another copy may be intact)"
        }
        dupla::Error::Exhausted(_) => "`dupla status` shows the space left on each server",
        dupla::Error::AlreadyExists(_) => {
            "another upload of this name is running; wait for it, or take it over with `dupla backup NAME --resume`"
        }
        dupla::Error::Aborted(_) => "the transfer was interrupted; run the same command again",
        _ => return None,
    })
}

/// Shorten a hex hash for tables: the first 12 digits are plenty to tell
/// files apart by eye.
pub fn short_hex(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_generic_hint_when_the_message_says_what_to_do() {
        let own = anyhow::Error::from(dupla::Error::NotFound(
            "no snapshot deadbeef in your backups (`dupla snapshots` lists them)".into(),
        ));
        assert_eq!(hint(&own), None);
        let bare = anyhow::Error::from(dupla::Error::NotFound("x.bin: not found".into()));
        assert_eq!(hint(&bare), Some("`dupla ls` lists your backed-up files"));
    }

    #[test]
    fn an_io_error_is_said_once() {
        // A disk-full error on a server, as the backup reports it: its
        // message must not be repeated as its own cause.
        let err = dupla::Error::Io(std::io::Error::other("No space left on device"))
            .map_message(|m| format!("{m}; no snapshot was recorded"));
        let line = error_line(&anyhow::Error::from(err));
        assert_eq!(
            line,
            "I/O error: No space left on device; no snapshot was recorded"
        );
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(format_unix_ms(0), "-");
        assert_eq!(format_unix_ms(1), "1970-01-01 00:00:00");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_unix_ms(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "SIZE"],
            &[
                vec!["a".into(), "1 B".into()],
                vec!["long-name".into(), "2 B".into()],
            ],
        );
        assert_eq!(t, "NAME       SIZE\na          1 B\nlong-name  2 B");
    }

    #[test]
    fn paths_with_control_characters_stay_on_one_line() {
        assert_eq!(shown_path("a/b c.txt"), "a/b c.txt");
        assert_eq!(shown_path("new\nline\u{1b}[2J"), "\"new\\nline\\u{1b}[2J\"");
    }

    #[test]
    fn the_first_few_are_named_and_the_rest_counted() {
        let paths = ["a", "b", "c\nd", "e"];
        assert_eq!(first_few(&paths, 3), "a, b, \"c\\nd\", and 1 more");
        assert_eq!(first_few(&paths[..2], 3), "a, b");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let t = table(
            &["NAME", "SIZE"],
            &[
                vec!["日本語.txt".into(), "1 B".into()],
                vec!["a".into(), "2 B".into()],
            ],
        );
        assert_eq!(t, "NAME        SIZE\n日本語.txt  1 B\na           2 B");
    }

    #[test]
    fn errors_fit_on_one_line_with_a_hint() {
        let err = anyhow::Error::new(dupla::Error::NotFound("x:\nnot found".into()));
        assert_eq!(error_line(&err), "x: not found");
        assert!(hint(&err).is_some());
        assert!(hint(&anyhow::anyhow!("plain")).is_none());
    }

    #[test]
    fn rates_are_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
        assert_eq!(mb_per_s(5, 0.0), 0.0);
        assert_eq!(format_rate(412.34), "412 MB/s");
        assert_eq!(format_rate(48.12), "48.1 MB/s");
        assert_eq!(format_rate(0.0123), "0.012 MB/s");
        assert_eq!(short_hex("abc"), "abc");
        assert_eq!(short_hex("0123456789abcdef"), "0123456789ab");
    }
}
