//! `dupla backup PATH...`: one backup run, recorded as a snapshot.
//!
//! A run walks the given files and directories ([`crate::walk`]), compares
//! every file with the latest snapshot of the same paths, and uploads only
//! what is new or changed:
//! - a file whose size, modification time and inode match its entry in that
//!   snapshot is **unchanged**: it is not read, and the new snapshot points
//!   at the same catalog version;
//! - a **changed** file is uploaded with the chunks of its previous version
//!   offered for reuse, so only the chunks the holders lack travel
//!   ([`crate::backup::BackupOptions::reuse`]);
//! - a **new** file is uploaded whole.
//!
//! The snapshot is recorded only after every file in it is committed, so a
//! run cut off midway leaves no snapshot. Each file committed by a run that
//! has not recorded its snapshot yet is noted in `ROOT/.dupla/run.jsonl`;
//! the next run treats those as unchanged when they still match, so running
//! the same backup again finishes the job without sending them again (and a
//! file cut off midway resumes as a single backup does). A file is noted as
//! soon as it is committed, so a run stopped by Ctrl-C keeps that too.
//!
//! Once a file fails for a reason that is not the file's own (the cluster
//! is unreachable after every retry, a refusal), the run records nothing,
//! so it starts no further file: the uploads in flight finish, and the files
//! not started are listed once as not attempted.
//!
//! Exit status: 0 when every file is in the snapshot, 3 ("partial") when
//! some were skipped (unreadable, special, vanished), 1 when the run failed
//! and recorded nothing.

use crate::backup::{BackupOptions, BackupReport, Resolved};
use crate::output::{first_few, format_rate, mb_per_s, shown_path, Output};
use crate::progress::Progress;
use crate::session::Client;
use crate::walk::{self, EntryKind, WalkEntry, WalkOptions};
use dupla::size::format_size;
use dupla::v1::{EntryKind as WireKind, LookupRequest, SnapshotEntry, SnapshotInfo};
use dupla::{Error, Hash, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Files uploaded at the same time in one run: enough to keep the cluster
/// busy with small files, few enough to bound memory (each upload holds at
/// most 8 chunks in flight).
pub const RUN_CONCURRENCY: usize = 8;

/// What one run was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Files and directories, relative to the root (or absolute inside it).
    pub paths: Vec<PathBuf>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--exclude-file` files.
    pub exclude_files: Vec<PathBuf>,
    /// `--tag` labels.
    pub tags: Vec<String>,
    /// Only say what would be sent.
    pub dry_run: bool,
    /// Ask the cluster what it holds of every file (`--resume`).
    pub resume: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// The last line of `backup --json`: what the run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// The snapshot recorded ("" for a dry run).
    pub snapshot: String,
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in it whose size, mtime or inode changed.
    pub files_changed: u64,
    /// Files not read again.
    pub files_unchanged: u64,
    /// Files skipped (unreadable, special, vanished) or that failed.
    pub files_failed: u64,
    /// Directories and links recorded.
    pub dirs: u64,
    /// Symbolic links recorded.
    pub links: u64,
    /// Bytes of every file in the snapshot.
    pub bytes_total: u64,
    /// File data sent over the network by this run.
    pub sent_bytes: u64,
    /// Bytes of changed files sent by reference (already held).
    pub reused_bytes: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// The snapshot(s) compared with, comma-separated ("" when none): the
    /// latest of the same paths, or else the latest covering each path.
    pub parent: String,
}

/// A file's line in `backup --json`: the single-file report plus whether
/// it was new or changed.
#[derive(Debug, Clone, Serialize)]
pub struct FileLine {
    /// The upload's report.
    #[serde(flatten)]
    pub report: BackupReport,
    /// `new` or `changed`.
    pub status: &'static str,
}

/// A run that recorded its snapshot but skipped some files: exit status 3.
#[derive(Debug)]
pub struct Partial(pub String);

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Partial {}

/// What the next run needs to know of a file to call it unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    path: String,
    size: u64,
    mtime_ns: i64,
    inode: u64,
    version: u64,
}

impl Seen {
    fn matches(&self, file: &WalkEntry) -> bool {
        self.size == file.size && self.mtime_ns == file.mtime_ns && self.inode == file.inode
    }
}

/// The note of files a run committed before its snapshot was recorded.
struct Journal {
    path: PathBuf,
}

impl Journal {
    fn new(root: &Path) -> Journal {
        Journal {
            path: root.join(".dupla").join("run.jsonl"),
        }
    }

    /// The files an unfinished run committed (a torn last line is ignored).
    fn load(&self) -> HashMap<String, Seen> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return HashMap::new();
        };
        text.lines()
            .filter_map(|line| serde_json::from_str::<Seen>(line).ok())
            .map(|seen| (seen.path.clone(), seen))
            .collect()
    }

    /// Note one committed file (appended and flushed: a crash loses at most
    /// this line, and then the file is only sent again).
    fn note(&self, seen: &Seen) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_string(seen)
            .map_err(|e| Error::Internal(format!("encoding the run journal: {e}")))?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        Ok(())
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How a file of this run is handled.
enum Plan {
    /// Same as in the parent snapshot (or the journal): reuse its version.
    Unchanged(Seen),
    /// Upload; `previous` is the parent's version to take chunks from.
    Upload { previous: Option<Seen> },
}

/// This machine's name, for the snapshot header.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The snapshot's `paths`: each given path relative to the root, `.` for
/// the root itself.
fn snapshot_paths(root: &Path, given: &[PathBuf]) -> Result<Vec<String>> {
    let root = std::fs::canonicalize(root)?;
    let mut paths = Vec::new();
    for path in given {
        let joined = if path.is_absolute() {
            path.clone()
        } else {
            root.join(path)
        };
        if std::fs::canonicalize(&joined).ok().as_deref() == Some(root.as_path()) {
            paths.push(".".to_string());
            continue;
        }
        // A missing directory on the way is named, as the walk names a
        // missing path ("nodir/file: no such file or directory").
        let unusable = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::InvalidInput(format!("{}: no such file or directory", path.display()))
            }
            _ => Error::InvalidInput(format!("{}: {e}", path.display())),
        };
        // The parent resolved, the last component kept: a given link is
        // backed up as a link.
        let canonical = match (joined.parent(), joined.file_name()) {
            (Some(parent), Some(name)) => {
                std::fs::canonicalize(parent).map_err(unusable)?.join(name)
            }
            _ => std::fs::canonicalize(&joined).map_err(unusable)?,
        };
        let relative = canonical.strip_prefix(&root).map_err(|_| {
            Error::InvalidInput(format!(
                "{} is outside the client root {}",
                path.display(),
                root.display()
            ))
        })?;
        let text = relative.to_string_lossy().replace('\\', "/");
        paths.push(if text.is_empty() { ".".into() } else { text });
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

impl Client {
    /// The catalog's entry for `name` at `version` (0: latest).
    async fn catalog_entry(&self, name: &str, version: u64) -> Result<dupla::v1::FileEntry> {
        let request = self.request(LookupRequest {
            name: name.to_string(),
            version,
        });
        Ok(self
            .manager()
            .await?
            .lookup(request)
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    /// The chunks of `name`'s version `version`, offered for reuse by its
    /// next version; none if it cannot be looked up (it is then sent whole).
    async fn reusable_chunks(&self, name: &str, version: u64) -> Option<Arc<HashSet<Hash>>> {
        let entry = self.catalog_entry(name, version).await.ok()?;
        let chunks = entry
            .chunks
            .iter()
            .filter_map(|c| Hash::from_slice(c, "chunk hash").ok())
            .collect();
        Some(Arc::new(chunks))
    }

    /// The files the run compares with, by path, and the parent snapshot
    /// ids. The parent is the latest snapshot of exactly `paths`; without
    /// one, each path is compared with the latest snapshot that covers it
    /// (its own, or a directory above it, or the root), so backing up
    /// `docs photos` after separate runs of each reads nothing unchanged.
    async fn parent_files(&self, paths: &[String]) -> Result<(String, HashMap<String, Seen>)> {
        let all = self.snapshots(&[]).await?;
        let mut wanted: Vec<&str> = paths.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        let same_paths = |s: &&SnapshotInfo| {
            let mut theirs: Vec<&str> = s.paths.iter().map(String::as_str).collect();
            theirs.sort_unstable();
            theirs.dedup();
            theirs == wanted
        };
        // (snapshot, prefix of its entries to compare with)
        let parents: Vec<(String, String)> = match all.iter().rev().find(same_paths) {
            Some(exact) => vec![(exact.id.clone(), String::new())],
            None => paths
                .iter()
                .filter_map(|path| {
                    all.iter()
                        .rev()
                        .find(|s| s.paths.iter().any(|theirs| covers(theirs, path)))
                        .map(|s| {
                            (
                                s.id.clone(),
                                if path == "." {
                                    String::new()
                                } else {
                                    path.clone()
                                },
                            )
                        })
                })
                .collect(),
        };
        let mut files = HashMap::new();
        for (id, prefix) in &parents {
            self.snapshot_entries(id, prefix, |e| {
                // A lost version is no base: the file goes again, whole.
                if e.kind == WireKind::File as i32 && !e.lost {
                    let seen = Seen {
                        path: e.path,
                        size: e.size,
                        mtime_ns: e.mtime_ns,
                        inode: e.inode,
                        version: e.version,
                    };
                    files.insert(seen.path.clone(), seen);
                }
                Ok(())
            })
            .await?;
        }
        let mut ids: Vec<String> = parents.into_iter().map(|(id, _)| id).collect();
        ids.dedup();
        Ok((ids.join(","), files))
    }
}

/// Whether a snapshot of `theirs` holds everything of `path`: the same
/// path, a directory above it, or the root.
fn covers(theirs: &str, path: &str) -> bool {
    theirs == "."
        || theirs == path
        || (path.starts_with(theirs) && path.as_bytes().get(theirs.len()) == Some(&b'/'))
}

/// One file uploaded (or failed, or not attempted) by the run.
struct Outcome {
    file: WalkEntry,
    /// `None`: not attempted, the run having stopped after a failure.
    result: Option<Result<BackupReport>>,
    changed: bool,
}

/// Run a backup of `options.paths` under `root`, printing one line per new
/// or changed file and a summary; returns the summary.
pub async fn run(
    client: &Client,
    root: &Path,
    options: &RunOptions,
    out: Output,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let time_unix_ms = dupla::clock::unix_ms();
    let paths = snapshot_paths(root, &options.paths)?;
    let walk_options = WalkOptions {
        excludes: options.excludes.clone(),
        exclude_files: options.exclude_files.clone(),
    };
    let (root_owned, given) = (root.to_path_buf(), options.paths.clone());
    let walked =
        tokio::task::spawn_blocking(move || walk::walk(&root_owned, &given, &walk_options))
            .await
            .map_err(|e| Error::Internal(format!("the directory walk panicked: {e}")))??;
    let mut summary = RunSummary::default();
    for skipped in &walked.skipped {
        eprintln!("skipped {}: {}", shown_path(&skipped.path), skipped.reason);
    }
    summary.files_failed = walked.skipped.len() as u64;

    let (parent, parent_files) = client.parent_files(&paths).await?;
    summary.parent = parent;
    let journal = Journal::new(root);
    let journaled = journal.load();
    let mut plans: HashMap<String, Plan> = HashMap::new();
    let mut to_send = 0u64;
    for file in walked
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File))
    {
        let previous = parent_files.get(&file.path);
        let done = journaled.get(&file.path).filter(|s| s.matches(file));
        let plan = match (previous.filter(|p| p.matches(file)), done) {
            (Some(same), _) | (None, Some(same)) => Plan::Unchanged(same.clone()),
            (None, None) => {
                to_send += file.size;
                Plan::Upload {
                    previous: previous.cloned(),
                }
            }
        };
        plans.insert(file.path.clone(), plan);
    }
    if options.dry_run {
        return Ok(dry_run(&walked.entries, &plans, summary, started, out)?);
    }

    // One bar for the run: bytes of the files to send, and in its message
    // the files done and the file started last.
    let bar = Progress::new(options.progress, to_send, "backup");
    // Owned, not borrowed: the stream's futures must not hold references
    // into `walked` (they may run on any worker).
    let uploads: Vec<(WalkEntry, Option<Seen>)> = walked
        .entries
        .iter()
        .filter_map(|e| match plans.get(&e.path) {
            Some(Plan::Upload { previous }) => Some((e.clone(), previous.clone())),
            _ => None,
        })
        .collect();
    let total_files = uploads.len();
    let files_done = AtomicUsize::new(0);
    // Set once a file failed for a reason that is not the file's own: the
    // run records no snapshot then, so files not started yet are not
    // started (each would only fail the same way, retries and all).
    let stopped = AtomicBool::new(false);
    let mut stream = futures::stream::iter(uploads)
        .map(|(file, previous)| {
            let (bar, files_done, stopped) = (bar.clone(), &files_done, &stopped);
            async move {
                let changed = previous.is_some();
                if stopped.load(Ordering::Relaxed) {
                    return Outcome {
                        file,
                        result: None,
                        changed,
                    };
                }
                bar.set_message(format!(
                    "{}/{total_files} files, {}",
                    files_done.load(Ordering::Relaxed),
                    file.path
                ));
                let reuse = match &previous {
                    Some(p) => client.reusable_chunks(&file.path, p.version).await,
                    None => None,
                };
                let resolved = Resolved {
                    path: file.abs.clone(),
                    name: file.path.clone(),
                };
                let backup_options = BackupOptions {
                    progress: false,
                    resume: options.resume,
                    reuse,
                    bar: Some(bar),
                    in_run: true,
                };
                let result = client
                    .backup_resolved(root, &resolved, backup_options)
                    .await;
                files_done.fetch_add(1, Ordering::Relaxed);
                Outcome {
                    file,
                    result: Some(result),
                    changed,
                }
            }
        })
        .buffer_unordered(RUN_CONCURRENCY);

    // Each file is noted in the journal as soon as it is committed, not
    // when the run ends: a run cut off (Ctrl-C drops it, a failure stops
    // it) leaves the journal of everything committed so far, and the next
    // run does not send those files again.
    let mut outcomes = Vec::with_capacity(total_files);
    while let Some(outcome) = stream.next().await {
        match &outcome.result {
            Some(Ok(report)) => {
                let file = &outcome.file;
                journal.note(&Seen {
                    path: file.path.clone(),
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                    version: report.version,
                })?;
            }
            Some(Err(e)) if !is_local(e) => stopped.store(true, Ordering::Relaxed),
            _ => {}
        }
        outcomes.push(outcome);
    }
    drop(stream);
    bar.finish();

    // Report in path order, whatever order the uploads finished in.
    outcomes.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    let mut versions: HashMap<String, (u64, u64)> = HashMap::new();
    let mut not_attempted: Vec<String> = Vec::new();
    let mut fatal: Option<Error> = None;
    for outcome in outcomes {
        let Some(result) = outcome.result else {
            not_attempted.push(outcome.file.path);
            continue;
        };
        match result {
            Ok(report) => {
                summary.sent_bytes += report.sent_bytes;
                summary.reused_bytes += report.reused_bytes;
                if outcome.changed {
                    summary.files_changed += 1;
                } else {
                    summary.files_new += 1;
                }
                versions.insert(outcome.file.path.clone(), (report.version, report.size));
                let status = if outcome.changed { "changed" } else { "new" };
                let line = FileLine { report, status };
                out.emit(human(&line), &line)?;
            }
            // The file went away or cannot be read: the run goes on without it.
            Err(e) if is_local(&e) => {
                eprintln!("skipped {}: {e}", shown_path(&outcome.file.path));
                summary.files_failed += 1;
            }
            Err(e) => {
                eprintln!("failed {}: {e}", shown_path(&outcome.file.path));
                fatal.get_or_insert(e);
            }
        }
    }
    if !not_attempted.is_empty() {
        eprintln!("{}", not_attempted_line(&not_attempted));
    }
    if let Some(e) = fatal {
        let skipped = match not_attempted.len() {
            0 => String::new(),
            1 => ", 1 file was not attempted".to_string(),
            n => format!(", {n} files were not attempted"),
        };
        return Err(e
            .map_message(|m| {
                format!(
                    "{m}; no snapshot was recorded{skipped}. Run the same backup again: \
                     the files already stored are not sent again"
                )
            })
            .into());
    }

    let mut entries = Vec::with_capacity(walked.entries.len());
    for entry in &walked.entries {
        let version = match plans.get(&entry.path) {
            Some(Plan::Unchanged(seen)) => {
                summary.files_unchanged += 1;
                Some((seen.version, seen.size))
            }
            Some(Plan::Upload { .. }) => match versions.get(&entry.path) {
                Some(v) => Some(*v),
                None => continue, // skipped above
            },
            None => None,
        };
        if let Some((_, size)) = version {
            summary.bytes_total += size;
        }
        match entry.kind {
            EntryKind::Dir => summary.dirs += 1,
            EntryKind::Symlink { .. } => summary.links += 1,
            EntryKind::File => {}
        }
        entries.push(wire_entry(entry, version.map_or(0, |v| v.0)));
    }
    // The manager takes entries in byte order of their paths (the walk
    // lists each directory's subtree right after it, where `a/b` comes
    // before `a-b`).
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let header = SnapshotInfo {
        time_unix_ms,
        host: host_name(),
        paths,
        tags: options.tags.clone(),
        ..Default::default()
    };
    let info = match client.create_snapshot(header, entries).await {
        Ok(info) => info,
        Err(e) => {
            // A version the journal promised is gone: the next run must
            // not trust the journal again.
            if matches!(e, Error::Stale(_)) {
                journal.clear();
            }
            return Err(e.into());
        }
    };
    journal.clear();
    summary.snapshot = info.id;
    summary.seconds = started.elapsed().as_secs_f64();
    out.emit(summary_line(&summary), &summary)?;
    if summary.files_failed > 0 {
        return Err(Partial(format!(
            "snapshot {} saved without {} file(s) that could not be read (listed above)",
            summary.snapshot, summary.files_failed
        ))
        .into());
    }
    Ok(summary)
}

/// The one line for the files a failed run did not start: how many, the
/// first few by name.
fn not_attempted_line(paths: &[String]) -> String {
    let files = if paths.len() == 1 { "file" } else { "files" };
    format!(
        "{} {files} not attempted after the failure above: {}",
        paths.len(),
        first_few(paths, 3)
    )
}

/// Whether a file's failure is about the file here (gone, unreadable, not
/// regular any more) rather than the cluster.
fn is_local(error: &Error) -> bool {
    matches!(error, Error::InvalidInput(_) | Error::PermissionDenied(_))
        || matches!(error, Error::Io(e) if e.kind() != std::io::ErrorKind::Other)
}

/// A walked entry as a snapshot entry (`version` for files).
fn wire_entry(entry: &WalkEntry, version: u64) -> SnapshotEntry {
    let (kind, link_target) = match &entry.kind {
        EntryKind::File => (WireKind::File, String::new()),
        EntryKind::Dir => (WireKind::Dir, String::new()),
        EntryKind::Symlink { target } => (WireKind::Symlink, target.clone()),
    };
    SnapshotEntry {
        path: entry.path.clone(),
        kind: kind as i32,
        size: if matches!(entry.kind, EntryKind::File) {
            entry.size
        } else {
            0
        },
        mode: entry.mode,
        mtime_ns: entry.mtime_ns,
        inode: entry.inode,
        dev: entry.dev,
        version,
        blake3: Default::default(),
        link_target,
        lost: false,
    }
}

/// `--dry-run`: what would be sent, and nothing more.
fn dry_run(
    entries: &[WalkEntry],
    plans: &HashMap<String, Plan>,
    mut summary: RunSummary,
    started: Instant,
    out: Output,
) -> Result<RunSummary> {
    for entry in entries {
        match plans.get(&entry.path) {
            Some(Plan::Unchanged(_)) => summary.files_unchanged += 1,
            Some(Plan::Upload { previous }) => {
                let status = if previous.is_some() {
                    summary.files_changed += 1;
                    "changed"
                } else {
                    summary.files_new += 1;
                    "new"
                };
                if !out.json {
                    println!(
                        "would back up {} ({}, {status})",
                        entry.path,
                        format_size(entry.size)
                    );
                }
            }
            None => {}
        }
        if matches!(entry.kind, EntryKind::File) {
            summary.bytes_total += entry.size;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let text = format!(
        "dry run: {} new, {} changed, {} unchanged files ({} in all); nothing was sent",
        summary.files_new,
        summary.files_changed,
        summary.files_unchanged,
        format_size(summary.bytes_total)
    );
    let _ = out.emit(text, &summary);
    Ok(summary)
}

/// The text line for one uploaded file.
fn human(line: &FileLine) -> String {
    let r = &line.report;
    let replica = if r.replica.is_empty() {
        "no replica yet".to_string()
    } else {
        format!("replica {}", r.replica)
    };
    let reused = if r.reused_bytes > 0 || line.status == "changed" {
        format!(
            "; {} sent, {} already stored",
            format_size(r.sent_bytes),
            format_size(r.reused_bytes + r.resumed_bytes)
        )
    } else {
        String::new()
    };
    format!(
        "backed up {} ({}, {}, blake3 {}) -> primary {}, {replica} at {}{reused}",
        r.name,
        line.status,
        format_size(r.size),
        crate::output::short_hex(&r.blake3),
        r.primary,
        format_rate(r.mb_per_s)
    )
}

/// The text summary of a run.
fn summary_line(s: &RunSummary) -> String {
    format!(
        "snapshot {} saved: {} new, {} changed, {} unchanged files, {} skipped; \
         {} in the snapshot, {} sent in {:.1} s ({})",
        s.snapshot,
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.files_failed,
        format_size(s.bytes_total),
        format_size(s.sent_bytes),
        s.seconds,
        format_rate(mb_per_s(s.sent_bytes, s.seconds))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(path: &str, size: u64, mtime_ns: i64, inode: u64) -> WalkEntry {
        WalkEntry {
            path: path.into(),
            abs: PathBuf::from("/x").join(path),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            mtime_ns,
            inode,
            dev: 1,
        }
    }

    #[test]
    fn a_snapshot_covers_its_paths_and_what_lies_below() {
        assert!(covers(".", "docs"));
        assert!(covers("docs", "docs"));
        assert!(covers("docs", "docs/a/b"));
        assert!(!covers("docs", "docs2"));
        assert!(!covers("docs/a", "docs"));
    }

    #[test]
    fn files_not_attempted_are_one_line() {
        let paths: Vec<String> = (0..5).map(|i| format!("d/f{i}")).collect();
        assert_eq!(
            not_attempted_line(&paths),
            "5 files not attempted after the failure above: d/f0, d/f1, d/f2, and 2 more"
        );
        assert_eq!(
            not_attempted_line(&paths[..1]),
            "1 file not attempted after the failure above: d/f0"
        );
    }

    #[test]
    fn unchanged_means_same_size_mtime_and_inode() {
        let seen = Seen {
            path: "a".into(),
            size: 3,
            mtime_ns: 10,
            inode: 7,
            version: 1,
        };
        assert!(seen.matches(&walked("a", 3, 10, 7)));
        assert!(!seen.matches(&walked("a", 4, 10, 7)));
        assert!(!seen.matches(&walked("a", 3, 11, 7)));
        assert!(!seen.matches(&walked("a", 3, 10, 8)));
    }

    #[test]
    fn the_journal_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let seen = Seen {
            path: "a b".into(),
            size: 1,
            mtime_ns: 2,
            inode: 3,
            version: 4,
        };
        journal.note(&seen).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal.path)
            .unwrap()
            .write_all(b"{\"path\":\"b\",\"si")
            .unwrap();
        let loaded = journal.load();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["a b"], seen);
        journal.clear();
        assert!(journal.load().is_empty());
    }

    #[test]
    fn snapshot_paths_are_relative_and_refuse_the_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        let paths = snapshot_paths(&root, &[PathBuf::from("docs"), PathBuf::from(".")]).unwrap();
        assert_eq!(paths, vec![".".to_string(), "docs".to_string()]);
        assert!(snapshot_paths(&root, &[PathBuf::from("..")]).is_err());
        let missing = snapshot_paths(&root, &[PathBuf::from("nodir/file")]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "nodir/file: no such file or directory",
            "the path is named"
        );
        assert!(snapshot_paths(&root, &[dir.path().to_path_buf()]).is_err());
    }
}
