//! `dupla backup FILE...`: check that each file lies inside the client root,
//! derive its catalog name, and upload it.
//!
//! A file is accepted only if its canonical path (symlinks resolved) is
//! inside the canonical root and is a regular file. Directories are refused
//! with a hint rather than walked, so a backup never sends more than the user
//! named. The catalog name is the canonical path relative to the root with
//! '/' separators: a symlink inside the root is backed up under its target's
//! name, so one file never has two names. Every FILE is checked before
//! anything is sent.

use crate::output::{format_rate, mb_per_s, Output};
use crate::progress::Progress;
use crate::session::Client;
use crate::upload::{upload, ChunkSource};
use bytes::{Bytes, BytesMut};
use dupla::size::format_size;
use dupla::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// A file that passed every check and is ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Canonical path on this machine.
    pub path: PathBuf,
    /// Catalog name: the path relative to the root, '/'-separated.
    pub name: String,
}

/// The outcome of backing up one file (also its `--json` line).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Catalog name.
    pub name: String,
    /// Bytes in the file.
    pub size: u64,
    /// Whole-file blake3, hex.
    pub blake3: String,
    /// Address of the server holding the primary copy.
    pub primary: String,
    /// Address of the server holding the replica ("" if none yet).
    pub replica: String,
    /// Durable copies when the receipt was written.
    pub copies: u32,
    /// Bytes of file data sent.
    pub sent_bytes: u64,
    /// Wall time of the upload.
    pub seconds: f64,
    /// Throughput, 10^6 bytes per second.
    pub mb_per_s: f64,
}

impl Client {
    /// Back up `file` (relative to `root` unless absolute), showing a
    /// progress bar on a terminal if `progress`.
    pub async fn backup(&self, root: &Path, file: &Path, progress: bool) -> Result<BackupReport> {
        let resolved = resolve(root, file)?;
        self.backup_resolved(&resolved, progress).await
    }

    /// Upload a file that [`resolve`] accepted.
    pub async fn backup_resolved(&self, file: &Resolved, progress: bool) -> Result<BackupReport> {
        let handle = File::open(&file.path).map_err(|e| open_error(&file.name, e))?;
        let meta = handle.metadata()?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{}: not a regular file",
                file.name
            )));
        }
        let size = meta.len();
        let candidates = self.entry_servers().await?;
        let bar = Progress::new(progress, size, &file.name);
        let result = upload(
            self,
            &candidates,
            &file.name,
            size,
            FileSource(handle),
            &bar,
        )
        .await;
        bar.finish();
        let done = result?;
        let entry = done.receipt.entry.unwrap_or_default();
        let holder = |i: usize| {
            entry
                .holders
                .get(i)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        Ok(BackupReport {
            name: entry.name.clone(),
            size: entry.size,
            blake3: done.blake3.to_hex(),
            primary: holder(0),
            replica: holder(1),
            copies: done.receipt.copies,
            sent_bytes: done.sent_bytes,
            seconds: done.seconds,
            mb_per_s: mb_per_s(entry.size, done.seconds),
        })
    }
}

/// `dupla backup`: check every file first, then upload them one by one.
pub async fn command(
    client: &Client,
    root: &Path,
    files: &[PathBuf],
    out: Output,
) -> anyhow::Result<()> {
    let resolved = files
        .iter()
        .map(|f| resolve(root, f))
        .collect::<Result<Vec<_>>>()?;
    for file in &resolved {
        let report = client.backup_resolved(file, !out.json).await?;
        out.emit(human(&report), &report)?;
    }
    Ok(())
}

/// The text line for one backed-up file.
fn human(r: &BackupReport) -> String {
    let replica = if r.replica.is_empty() {
        "no replica yet".to_string()
    } else {
        format!("replica {}", r.replica)
    };
    format!(
        "backed up {} ({}, blake3 {}) -> primary {}, {replica} at {}",
        r.name,
        format_size(r.size),
        r.blake3,
        r.primary,
        format_rate(r.mb_per_s)
    )
}

/// Check `file` against `root` and derive its catalog name. Refuses (with a
/// one-line reason) a missing file, anything outside the root after symlinks
/// are resolved, a directory, and anything that is not a regular file.
pub fn resolve(root: &Path, file: &Path) -> Result<Resolved> {
    let shown = file.display();
    let root_canon = std::fs::canonicalize(root).map_err(|e| {
        Error::InvalidInput(format!(
            "the client root {} is unusable: {e}",
            root.display()
        ))
    })?;
    let joined = if file.is_absolute() {
        file.to_path_buf()
    } else {
        root.join(file)
    };
    let path = std::fs::canonicalize(&joined).map_err(|e| match e.kind() {
        // A local file, not a catalog entry: InvalidInput keeps the
        // catalog hint away.
        std::io::ErrorKind::NotFound => Error::InvalidInput(format!("{shown}: no such file")),
        _ => Error::InvalidInput(format!("{shown}: {e}")),
    })?;
    let relative = path.strip_prefix(&root_canon).map_err(|_| {
        Error::InvalidInput(format!(
            "{shown} is outside the client root {}",
            root_canon.display()
        ))
    })?;
    let meta = std::fs::metadata(&path)?;
    if meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{shown} is a directory; name the files inside it (e.g. dupla backup {}/*)",
            file.display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{shown} is not a regular file"
        )));
    }
    let name = catalog_name(relative)
        .ok_or_else(|| Error::InvalidInput(format!("{shown}: the name is not valid UTF-8")))?;
    dupla::name::validate(&name)?;
    Ok(Resolved { path, name })
}

/// Join the normal components of a root-relative path with '/'.
fn catalog_name(relative: &Path) -> Option<String> {
    let parts = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(parts.join("/"))
}

/// Reading a file that was there a moment ago failed.
fn open_error(name: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::InvalidInput(format!("{name}: no such file")),
        std::io::ErrorKind::PermissionDenied => {
            Error::PermissionDenied(format!("{name}: permission denied"))
        }
        _ => Error::Io(e),
    }
}

/// A file as an upload source: read straight into each chunk's buffer.
struct FileSource(File);

impl ChunkSource for FileSource {
    fn read_chunk(&mut self, len: usize) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        self.0.read_exact(&mut buf)?;
        Ok(buf.freeze())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let mut probe = [0u8; 1];
        match self.0.read(&mut probe)? {
            0 => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file grew while it was read; back it up again",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("docs/2024")).unwrap();
        std::fs::write(root.join("notes.txt"), b"hi").unwrap();
        std::fs::write(root.join("docs/2024/report.pdf"), b"pdf").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"no").unwrap();
        (dir, root)
    }

    #[test]
    fn files_inside_get_slash_names() {
        let (_dir, root) = setup();
        assert_eq!(
            resolve(&root, Path::new("notes.txt")).unwrap().name,
            "notes.txt"
        );
        let r = resolve(&root, Path::new("docs/2024/report.pdf")).unwrap();
        assert_eq!(r.name, "docs/2024/report.pdf");
        assert_eq!(
            resolve(&root, Path::new("docs/../notes.txt")).unwrap().name,
            "notes.txt"
        );
        let absolute = root.join("docs/2024/report.pdf");
        assert_eq!(
            resolve(&root, &absolute).unwrap().name,
            "docs/2024/report.pdf"
        );
    }

    #[test]
    fn escaping_the_root_is_refused() {
        let (dir, root) = setup();
        let err = resolve(&root, Path::new("../secret.txt")).unwrap_err();
        assert!(err.to_string().contains("outside the client root"), "{err}");
        let err = resolve(&root, &dir.path().join("secret.txt")).unwrap_err();
        assert!(err.to_string().contains("outside the client root"), "{err}");
        assert!(resolve(&root, Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn symlinks_are_judged_by_their_target() {
        let (dir, root) = setup();
        symlink(dir.path().join("secret.txt"), root.join("escape")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        symlink(root.join("notes.txt"), root.join("alias")).unwrap();
        for bad in ["escape", "up/secret.txt"] {
            let err = resolve(&root, Path::new(bad)).unwrap_err();
            assert!(
                err.to_string().contains("outside the client root"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            resolve(&root, Path::new("alias")).unwrap().name,
            "notes.txt"
        );
    }

    #[test]
    fn directories_missing_and_special_files_are_refused() {
        let (_dir, root) = setup();
        let err = resolve(&root, Path::new("docs")).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(resolve(&root, Path::new(".")).is_err());
        let err = resolve(&root, Path::new("nope.txt")).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        let socket = root.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = resolve(&root, Path::new("sock")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(resolve(Path::new("/nonexistent-root"), Path::new("x")).is_err());
    }

    #[test]
    fn names_come_from_normal_components() {
        assert_eq!(catalog_name(Path::new("a/b/c")).unwrap(), "a/b/c");
        assert_eq!(catalog_name(Path::new("")).unwrap(), "");
        assert!(catalog_name(Path::new("../a")).is_none());
    }

    #[test]
    fn file_source_notices_a_file_that_grew() {
        let (_dir, root) = setup();
        let mut src = FileSource(File::open(root.join("notes.txt")).unwrap());
        assert_eq!(&src.read_chunk(1).unwrap()[..], b"h");
        assert!(src.finish().is_err());
        assert_eq!(&src.read_chunk(0).unwrap()[..], b"");
        let mut src = FileSource(File::open(root.join("notes.txt")).unwrap());
        assert!(src.read_chunk(3).is_err());
    }
}
