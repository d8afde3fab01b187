//! `dupla find PATTERN` and `dupla versions PATH`: search the paths of every
//! snapshot, and list one file's versions across snapshots. Both print one
//! line (or one JSON object) per (snapshot, entry).

use crate::output::{format_unix_ms, table, Output};
use crate::session::Client;
use dupla::size::format_size;
use dupla::v1::{EntryKind, FindRequest, SnapshotMatch};
use serde::Serialize;

/// One match as `find --json` and `versions --json` print it.
#[derive(Debug, Clone, Serialize)]
pub struct MatchJson {
    /// Path relative to the client root.
    pub path: String,
    /// Bytes (0 for directories and links).
    pub size: u64,
    /// Modification time, `YYYY-MM-DD HH:MM:SS` UTC.
    pub mtime: String,
    /// The snapshot it was found in.
    pub snapshot: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Whole-file blake3, hex (files only).
    pub blake3: String,
    /// Catalog version of the content (files only).
    pub version: u64,
}

impl From<&SnapshotMatch> for MatchJson {
    fn from(m: &SnapshotMatch) -> Self {
        let entry = m.entry.clone().unwrap_or_default();
        MatchJson {
            path: entry.path,
            size: entry.size,
            mtime: format_unix_ms(entry.mtime_ns.div_euclid(1_000_000)),
            snapshot: m.snapshot.clone(),
            kind: kind_name(entry.kind),
            blake3: hex::encode(&entry.blake3),
            version: entry.version,
        }
    }
}

/// The word for an entry kind.
pub fn kind_name(kind: i32) -> &'static str {
    match EntryKind::try_from(kind) {
        Ok(EntryKind::File) => "file",
        Ok(EntryKind::Dir) => "dir",
        Ok(EntryKind::Symlink) => "symlink",
        _ => "unknown",
    }
}

/// Filters of `dupla find`.
#[derive(Debug, Clone, Default)]
pub struct FindFilters {
    /// Only larger than this many bytes.
    pub larger: Option<u64>,
    /// Only smaller than this many bytes.
    pub smaller: Option<u64>,
    /// Only modified after this time (ns since the epoch).
    pub newer_ns: Option<i64>,
    /// Only modified before this time (ns since the epoch).
    pub older_ns: Option<i64>,
}

/// `dupla find`.
pub async fn find_command(
    client: &Client,
    pattern: &str,
    filters: &FindFilters,
    out: Output,
) -> anyhow::Result<()> {
    // On the wire 0 means "no limit", so the two filters a 0 makes
    // meaningful are applied here: `--larger 0` keeps what has bytes, and
    // nothing is smaller than 0 bytes.
    let matches = if filters.smaller == Some(0) {
        Vec::new()
    } else {
        let mut matches: Vec<SnapshotMatch> = client
            .find(FindRequest {
                pattern: pattern.to_string(),
                larger: filters.larger.unwrap_or(0),
                smaller: filters.smaller.unwrap_or(0),
                newer_ns: filters.newer_ns.unwrap_or(0),
                older_ns: filters.older_ns.unwrap_or(0),
            })
            .await?;
        if filters.larger == Some(0) {
            matches.retain(has_bytes);
        }
        matches
    };
    print_matches(
        &matches,
        out,
        &format!("nothing in your snapshots matches {pattern:?}"),
    )
}

/// Whether a match has any bytes (`--larger 0`).
fn has_bytes(m: &SnapshotMatch) -> bool {
    m.entry.as_ref().is_some_and(|e| e.size > 0)
}

/// `dupla versions`.
pub async fn versions_command(client: &Client, path: &str, out: Output) -> anyhow::Result<()> {
    let matches = client.versions(path.trim_end_matches('/')).await?;
    print_matches(
        &matches,
        out,
        &format!("{path} is in none of your snapshots"),
    )
}

fn print_matches(matches: &[SnapshotMatch], out: Output, none: &str) -> anyhow::Result<()> {
    let rows: Vec<MatchJson> = matches.iter().map(MatchJson::from).collect();
    if out.json {
        for row in &rows {
            out.emit("", row)?;
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("{none}");
        return Ok(());
    }
    let text: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.snapshot.clone(),
                r.path.clone(),
                r.kind.to_string(),
                format_size(r.size),
                r.mtime.clone(),
                crate::output::short_hex(&r.blake3).to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["SNAPSHOT", "PATH", "KIND", "SIZE", "MODIFIED", "BLAKE3"],
            &text
        )
    );
    Ok(())
}

/// Parse a `--newer`/`--older` time: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or
/// `YYYY-MM-DDTHH:MM:SS` (UTC; a space works for the T), or an age before
/// now: `30m`, `12h`, `7d`. Returns ns since the epoch.
pub fn parse_time_arg(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Some(age) = parse_age(text) {
        let now = dupla::clock::unix_ms() as i128 * 1_000_000;
        return Ok((now - age as i128 * 1_000_000_000) as i64);
    }
    parse_date(text).ok_or_else(|| {
        format!(
            "{text:?} is not a time: use YYYY-MM-DD[THH:MM[:SS]] (UTC) or an age like 7d, 12h, 30m"
        )
    })
}

/// An age like `7d` in seconds.
fn parse_age(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let count: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    count.checked_mul(seconds).filter(|s| *s >= 0)
}

/// `YYYY-MM-DD[THH:MM[:SS]]` UTC in ns since the epoch.
fn parse_date(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, t),
        None => (text, "00:00:00"),
    };
    let mut ymd = date.split('-');
    let y: i64 = ymd.next()?.parse().ok()?;
    let m: u32 = ymd.next()?.parse().ok()?;
    let d: u32 = ymd.next()?.parse().ok()?;
    if ymd.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let min: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
    if hms.next().is_some() || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let seconds = dupla::retention::days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + s;
    seconds.checked_mul(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_than_zero_keeps_what_has_bytes() {
        let of = |size| SnapshotMatch {
            entry: Some(dupla::v1::SnapshotEntry {
                size,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(has_bytes(&of(1)));
        assert!(!has_bytes(&of(0)));
        assert!(!has_bytes(&SnapshotMatch::default()));
    }

    #[test]
    fn dates_and_ages_parse() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("1970-01-02T00:00"), Some(86_400_000_000_000));
        assert_eq!(
            parse_date("2026-12-03 14:19:54"),
            Some(1_796_307_594 * 1_000_000_000)
        );
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_age("7d"), Some(7 * 86_400));
        assert_eq!(parse_age("30m"), Some(1800));
        assert_eq!(parse_age("5x"), None);
        assert!(parse_time_arg("12h").is_ok());
        assert!(parse_time_arg("nope").is_err());
    }

    #[test]
    fn round_trips_with_the_table_format() {
        let ns = parse_date("2024-02-29T23:59:59").unwrap();
        assert_eq!(format_unix_ms(ns / 1_000_000), "2024-02-29 23:59:59");
    }
}
