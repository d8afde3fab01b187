//! `dupla restore --snapshot ID ...`: a file as a snapshot saw it, or a
//! whole snapshot (or subtrees of it) into a directory inside the root.
//!
//! A tree restore recreates directories first, then links, then files
//! (several at once, each verified chunk by chunk and as a whole, written to
//! a hidden part file and renamed into place, as a single restore does),
//! sets each file's mode and modification time, and finally the
//! directories' own modes and times, deepest first, so writing their
//! contents does not disturb them. Nothing is written outside the target:
//! entry paths are checked, and a link restored earlier is never followed.
//!
//! A file or link that cannot be restored (its version lost, a link in the
//! way, its holders unreachable) does not stop the others: each is named on
//! stderr as `failed PATH: reason`, as a backup names what it skipped, the
//! directories still get their modes and times, the summary counts the
//! failures (`files_failed`), and the command exits with status 3
//! ("partial", [`Partial`]). A failed file leaves nothing under its name: it
//! is written to its part file and renamed only once verified, and the part
//! file goes too, unless the transfer was cut off (holders unreachable
//! after the retries): then it stays, named in the reason, for the same
//! command to continue, as a single restore does. Only what makes the whole
//! run pointless fails it with status 1: no cluster, no session, no such
//! snapshot, a target refused, a directory that cannot be made.

use crate::output::{first_few, format_rate, mb_per_s, shown_path, Output};
use crate::session::Client;
use crate::snapshot_backup::{Partial, RUN_CONCURRENCY};
use crate::tree_restore;
use dupla::size::format_size;
use dupla::v1::{EntryKind, SnapshotEntry};
use dupla::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a tree restore did (its `--json` line).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeRestoreReport {
    /// The snapshot restored from.
    pub snapshot: String,
    /// The directory written into.
    pub target: String,
    /// Files recreated.
    pub files: u64,
    /// Files and links that could not be restored (each named on stderr as
    /// `failed PATH: reason`); more than 0 makes the exit status 3.
    pub files_failed: u64,
    /// Directories recreated.
    pub dirs: u64,
    /// Links recreated.
    pub links: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Failed paths named again in the closing warning: enough to see which
/// when a few failed, not a screenful when a holder is gone for good (every
/// one is listed above it, with its reason).
const FAILED_NAMED_IN_WARNING: usize = 5;

/// The target directory, created if missing, which must lie inside the root.
fn target_dir(root: &Path, target: &Path) -> Result<PathBuf> {
    let root = std::fs::canonicalize(root)?;
    let joined = if target.is_absolute() {
        target.to_path_buf()
    } else {
        root.join(target)
    };
    let outside = || {
        Error::InvalidInput(format!(
            "{} is outside the client root {}",
            target.display(),
            root.display()
        ))
    };
    if joined
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(outside());
    }
    check_nearest_existing(&root, target, &joined)?;
    std::fs::create_dir_all(&joined)?;
    let canonical = std::fs::canonicalize(&joined)?;
    if !canonical.starts_with(&root) {
        return Err(outside());
    }
    Ok(canonical)
}

/// Refuse before creating anything: the nearest existing ancestor of
/// `joined` (or itself; a link counts, even one that leads nowhere) must
/// already be a directory inside `root`. A link is named with where it
/// leads, so the user sees why (a dangling one would otherwise end in
/// "File exists" from `create_dir_all`).
fn check_nearest_existing(root: &Path, target: &Path, joined: &Path) -> Result<()> {
    let mut existing = joined;
    while std::fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let is_link = std::fs::symlink_metadata(existing).is_ok_and(|m| m.file_type().is_symlink());
    let link = || {
        let to =
            std::fs::read_link(existing).map_or_else(|_| "?".into(), |t| t.display().to_string());
        format!("{} is a link to {to}", existing.display())
    };
    match std::fs::canonicalize(existing) {
        Ok(resolved) if !resolved.starts_with(root) => Err(Error::InvalidInput(format!(
            "{} is outside the client root {}{}",
            target.display(),
            root.display(),
            if is_link {
                format!(": {}", link())
            } else {
                String::new()
            }
        ))),
        Ok(resolved) if !resolved.is_dir() => Err(Error::InvalidInput(format!(
            "{}: {} is not a directory",
            target.display(),
            existing.display()
        ))),
        Ok(_) => Ok(()),
        Err(_) if is_link => Err(Error::InvalidInput(format!(
            "{}: {}, which leads nowhere (nothing is there); restore into a directory \
             inside the client root {}",
            target.display(),
            link(),
            root.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Restore snapshot `id` (or `latest`), or the entries at or below `paths`
/// in it, into `target` (inside `root`).
pub async fn restore_tree(
    client: &Client,
    root: &Path,
    id: &str,
    target: &Path,
    paths: &[String],
    out: Output,
) -> anyhow::Result<TreeRestoreReport> {
    let started = Instant::now();
    let snapshot = client.snapshot(id).await?;
    let target = target_dir(root, target)?;
    let mut entries: Vec<SnapshotEntry> = Vec::new();
    let prefixes: Vec<String> = if paths.is_empty() {
        vec![String::new()]
    } else {
        paths
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect()
    };
    for prefix in &prefixes {
        let before = entries.len();
        client
            .snapshot_entries(&snapshot.id, prefix, |e| {
                entries.push(e);
                Ok(())
            })
            .await?;
        if entries.len() == before && !prefix.is_empty() {
            return Err(
                Error::NotFound(format!("{prefix} is not in snapshot {}", snapshot.id)).into(),
            );
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);

    let mut report = TreeRestoreReport {
        snapshot: snapshot.id.clone(),
        target: target.display().to_string(),
        ..Default::default()
    };
    let dirs = make_dirs(&target, &entries, &mut report)?;
    let mut failed = restore_links(&target, &entries, &mut report);
    failed.extend(restore_files(client, &target, &entries, &mut report).await);
    // Named in path order, whatever order the restores finished in.
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, error) in &failed {
        eprintln!("failed {}: {}", shown_path(path), reason(path, error));
    }
    report.files_failed = failed.len() as u64;
    // Even after failures: what was restored gets its directories' modes.
    tree_restore::finish_dirs(&target, &dirs)?;
    report.seconds = started.elapsed().as_secs_f64();
    out.emit(summary_line(&report), &report)?;
    if !failed.is_empty() {
        let paths: Vec<&str> = failed.iter().map(|(path, _)| path.as_str()).collect();
        return Err(Partial(partial_message(&report, &paths)).into());
    }
    Ok(report)
}

/// Make the directories of `entries` under `target` (a snapshot lists them
/// before what they hold; the parents of a path without its own directory
/// entry, as in an adopted snapshot, are made once each). Returns the
/// directories' `(path, mode, mtime_ns)` for [`tree_restore::finish_dirs`].
/// A directory that cannot be made fails the restore.
fn make_dirs(
    target: &Path,
    entries: &[SnapshotEntry],
    report: &mut TreeRestoreReport,
) -> Result<Vec<(String, u32, i64)>> {
    let mut dirs = Vec::new();
    let mut made = std::collections::HashSet::new();
    for entry in entries {
        match EntryKind::try_from(entry.kind) {
            Ok(EntryKind::Dir) => {
                tree_restore::make_dir(target, &entry.path)?;
                dirs.push((entry.path.clone(), entry.mode, entry.mtime_ns));
                report.dirs += 1;
            }
            Ok(EntryKind::File | EntryKind::Symlink) => {
                if let Some((parent, _)) = entry.path.rsplit_once('/') {
                    if made.insert(parent.to_string()) {
                        tree_restore::make_dir(target, parent)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(dirs)
}

/// Recreate the links of `entries` under `target`; returns those that
/// failed, with why.
fn restore_links(
    target: &Path,
    entries: &[SnapshotEntry],
    report: &mut TreeRestoreReport,
) -> Vec<(String, Error)> {
    let mut failed = Vec::new();
    let links = entries
        .iter()
        .filter(|e| EntryKind::try_from(e.kind) == Ok(EntryKind::Symlink));
    for entry in links {
        let made = tree_restore::make_symlink(target, &entry.path, &entry.link_target)
            .and_then(|()| tree_restore::target_path(target, &entry.path))
            .and_then(|path| tree_restore::set_metadata(&path, entry.mode, entry.mtime_ns, true));
        match made {
            Ok(()) => report.links += 1,
            Err(e) => failed.push((entry.path.clone(), e)),
        }
    }
    failed
}

/// Restore the files of `entries` under `target`, [`RUN_CONCURRENCY`] at a
/// time, each with its mode and mtime; returns those that failed, with why.
async fn restore_files(
    client: &Client,
    target: &Path,
    entries: &[SnapshotEntry],
    report: &mut TreeRestoreReport,
) -> Vec<(String, Error)> {
    let files = entries
        .iter()
        .filter(|e| EntryKind::try_from(e.kind) == Ok(EntryKind::File));
    let outcomes: Vec<(&SnapshotEntry, Result<u64>)> = futures::stream::iter(files)
        .map(|entry| async move {
            let result = async {
                let dest = tree_restore::target_path(target, &entry.path)?;
                let done = client
                    .restore_exact(&entry.path, entry.version, &dest, false)
                    .await?;
                tree_restore::set_metadata(&dest, entry.mode, entry.mtime_ns, false)?;
                Ok(done.size)
            }
            .await;
            (entry, result)
        })
        .buffer_unordered(RUN_CONCURRENCY)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (entry, result) in outcomes {
        match result {
            Ok(bytes) => {
                report.bytes += bytes;
                report.files += 1;
            }
            Err(e) => failed.push((entry.path.clone(), e)),
        }
    }
    failed
}

/// Why `path` failed, without the path again when the message starts
/// with it (the server's "NAME: version 1 is lost: ...").
fn reason(path: &str, error: &Error) -> String {
    let text = error.to_string();
    match text.strip_prefix(path).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// The text summary of a tree restore.
fn summary_line(r: &TreeRestoreReport) -> String {
    format!(
        "restored snapshot {} into {}: {} files ({}), {} directories, {} links, {} failed \
         in {:.1} s ({})",
        r.snapshot,
        r.target,
        r.files,
        format_size(r.bytes),
        r.dirs,
        r.links,
        r.files_failed,
        r.seconds,
        format_rate(mb_per_s(r.bytes, r.seconds))
    )
}

/// The closing warning of a restore that left `failed` out (exit status 3):
/// how many, and the first few of them by name.
fn partial_message(r: &TreeRestoreReport, failed: &[&str]) -> String {
    format!(
        "snapshot {} restored into {} without {} file(s) that could not be restored \
         (listed above with the reasons): {}",
        r.snapshot,
        r.target,
        failed.len(),
        first_few(failed, FAILED_NAMED_IN_WARNING)
    )
}

/// `dupla restore NAME --snapshot ID [-o PATH]`: the version of one file
/// that snapshot holds.
pub async fn restore_file(
    client: &Client,
    root: &Path,
    id: &str,
    name: &str,
    output: Option<&Path>,
    out: Output,
) -> anyhow::Result<()> {
    dupla::name::validate(name)?;
    let snapshot = client.snapshot(id).await?;
    let mut found = None;
    client
        .snapshot_entries(&snapshot.id, name, |e| {
            if e.path == name {
                found = Some(e);
            }
            Ok(())
        })
        .await?;
    let entry = found
        .ok_or_else(|| Error::NotFound(format!("{name} is not in snapshot {}", snapshot.id)))?;
    if EntryKind::try_from(entry.kind) != Ok(EntryKind::File) {
        return Err(Error::InvalidInput(format!(
            "{name} is a {} in snapshot {}; restore it with --target DIR",
            crate::find::kind_name(entry.kind),
            snapshot.id
        ))
        .into());
    }
    let report = match output {
        Some(path) => {
            client
                .restore_version(name, entry.version, path, !out.json)
                .await?
        }
        None => {
            client
                .restore_exact(name, entry.version, &root.join(name), !out.json)
                .await?
        }
    };
    if output.is_none() {
        tree_restore::set_metadata(Path::new(&report.path), entry.mode, entry.mtime_ns, false)?;
    }
    let human = format!(
        "restored {} ({}) from snapshot {} to {} at {}",
        report.name,
        format_size(report.size),
        snapshot.id,
        report.path,
        format_rate(report.mb_per_s)
    );
    out.emit(human, &report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_must_lie_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        assert!(target_dir(&root, Path::new("restored/a")).is_ok());
        assert!(root.join("restored/a").is_dir());
        assert!(target_dir(&root, Path::new("../elsewhere")).is_err());
        assert!(!dir.path().join("elsewhere").exists());
        assert!(target_dir(&root, dir.path()).is_err());
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        assert!(target_dir(&root, Path::new("out/x")).is_err());
        assert!(!dir.path().join("x").exists());
    }

    fn refused(root: &Path, target: &str) -> String {
        match target_dir(root, Path::new(target)) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{target}: expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn a_target_through_a_link_says_where_the_link_leads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let nowhere = dir.path().join("evil");
        std::os::unix::fs::symlink(&nowhere, root.join("evillink")).unwrap();
        std::os::unix::fs::symlink("missing", root.join("inner")).unwrap();
        // A link that leads nowhere, as the target or on the way to it (it
        // was "I/O error: File exists"), wherever it points.
        for target in ["evillink", "evillink/sub", "inner", "inner/sub"] {
            let message = refused(&root, target);
            assert!(message.contains("is a link to"), "{message}");
            assert!(message.contains("leads nowhere"), "{message}");
        }
        assert!(refused(&root, "evillink").contains(&nowhere.display().to_string()));
        assert!(!nowhere.exists());
        assert!(!root.join("missing").exists());

        // A link that leads outside the root says so.
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("away")).unwrap();
        let message = refused(&root, "away/sub");
        assert!(message.contains("outside the client root"), "{message}");
        assert!(message.contains("is a link to"), "{message}");
        assert!(!dir.path().join("elsewhere/sub").exists());

        // A file in the way.
        std::fs::write(root.join("file"), "x").unwrap();
        assert!(refused(&root, "file").contains("not a directory"));
        assert!(refused(&root, "file/sub").contains("not a directory"));

        // A link to a directory inside the root is fine.
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("alias")).unwrap();
        let made = target_dir(&root, Path::new("alias/sub")).unwrap();
        assert_eq!(made, std::fs::canonicalize(root.join("real/sub")).unwrap());
    }

    #[test]
    fn a_failure_is_named_once_and_the_warning_names_the_first_few() {
        let lost = Error::NotFound("docs/a.txt: version 1 is lost: back it up again".into());
        assert_eq!(
            reason("docs/a.txt", &lost),
            "version 1 is lost: back it up again"
        );
        assert_eq!(reason("docs/a", &lost), lost.to_string());
        let report = TreeRestoreReport {
            snapshot: "1a2b".into(),
            target: "/r/out".into(),
            ..Default::default()
        };
        let two = partial_message(&report, &["a", "b"]);
        assert!(two.contains("without 2 file(s)"), "{two}");
        assert!(two.ends_with(": a, b"), "{two}");
        let many: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = partial_message(&report, &many);
        assert!(text.ends_with(": f0, f1, f2, f3, f4, and 3 more"), "{text}");
    }
}
