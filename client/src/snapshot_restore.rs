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

use crate::output::{format_rate, mb_per_s, Output};
use crate::session::Client;
use crate::snapshot_backup::RUN_CONCURRENCY;
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
    /// Files, directories and links recreated.
    pub files: u64,
    /// Directories recreated.
    pub dirs: u64,
    /// Links recreated.
    pub links: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The target directory, created if missing, which must lie inside the root.
fn target_dir(root: &Path, target: &Path) -> Result<PathBuf> {
    let root = std::fs::canonicalize(root)?;
    let joined = if target.is_absolute() {
        target.to_path_buf()
    } else {
        root.join(target)
    };
    // Refuse before creating anything: the nearest existing ancestor must
    // already be inside the root.
    let mut existing = joined.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let inside = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| c.starts_with(&root));
    if !inside(existing)
        || joined
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Error::InvalidInput(format!(
            "{} is outside the client root {}",
            target.display(),
            root.display()
        )));
    }
    std::fs::create_dir_all(&joined)?;
    let canonical = std::fs::canonicalize(&joined)?;
    if !canonical.starts_with(&root) {
        return Err(Error::InvalidInput(format!(
            "{} is outside the client root {}",
            target.display(),
            root.display()
        )));
    }
    Ok(canonical)
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
    // Directories first (a snapshot lists them before what they hold; the
    // parents of a path without its own directory entry, as in an adopted
    // snapshot, are made once each).
    let mut dirs = Vec::new();
    let mut made = std::collections::HashSet::new();
    let mut make_parent = |path: &str| -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            if made.insert(parent.to_string()) {
                tree_restore::make_dir(&target, parent)?;
            }
        }
        Ok(())
    };
    for entry in &entries {
        match EntryKind::try_from(entry.kind) {
            Ok(EntryKind::Dir) => {
                tree_restore::make_dir(&target, &entry.path)?;
                dirs.push((entry.path.clone(), entry.mode, entry.mtime_ns));
                report.dirs += 1;
            }
            Ok(EntryKind::File | EntryKind::Symlink) => make_parent(&entry.path)?,
            _ => {}
        }
    }
    for entry in &entries {
        if EntryKind::try_from(entry.kind) == Ok(EntryKind::Symlink) {
            tree_restore::make_symlink(&target, &entry.path, &entry.link_target)?;
            let path = tree_restore::target_path(&target, &entry.path)?;
            tree_restore::set_metadata(&path, entry.mode, entry.mtime_ns, true)?;
            report.links += 1;
        }
    }
    let files: Vec<SnapshotEntry> = entries
        .iter()
        .filter(|e| EntryKind::try_from(e.kind) == Ok(EntryKind::File))
        .cloned()
        .collect();
    let results: Vec<Result<u64>> = futures::stream::iter(files)
        .map(|entry| {
            let target = target.clone();
            async move {
                let dest = tree_restore::target_path(&target, &entry.path)?;
                let done = client
                    .restore_version(&entry.path, entry.version, &dest, false)
                    .await?;
                tree_restore::set_metadata(&dest, entry.mode, entry.mtime_ns, false)?;
                Ok(done.size)
            }
        })
        .buffer_unordered(RUN_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        report.bytes += result?;
        report.files += 1;
    }
    tree_restore::finish_dirs(&target, &dirs)?;
    report.seconds = started.elapsed().as_secs_f64();
    let human = format!(
        "restored snapshot {} into {}: {} files ({}), {} directories, {} links in {:.1} s ({})",
        report.snapshot,
        report.target,
        report.files,
        format_size(report.bytes),
        report.dirs,
        report.links,
        report.seconds,
        format_rate(mb_per_s(report.bytes, report.seconds))
    );
    out.emit(human, &report)?;
    Ok(report)
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
    let dest = match output {
        Some(path) => path.to_path_buf(),
        None => root.join(name),
    };
    let report = client
        .restore_version(name, entry.version, &dest, !out.json)
        .await?;
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
}
