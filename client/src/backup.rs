//! One file's backup: check that it lies inside the client root, derive its
//! catalog name, and upload it, resuming after failures that may pass.
//! `dupla backup PATH...` runs it for every new or changed file of a
//! snapshot ([`crate::snapshot_backup`]); [`Client::backup`] is the same
//! for one file named directly.
//!
//! A file named directly is accepted only if its canonical path (symlinks
//! resolved) is inside the canonical root and is a regular file. The catalog
//! name is the canonical path relative to the root with '/' separators: a
//! symlink inside the root is backed up under its target's name, so one file
//! never has two names.
//!
//! An upload that fails midway for a reason that may pass (a server died,
//! a connection broke) is resumed at once through another entry, a few
//! times with growing pauses: the cluster is asked what it already holds
//! and only the rest is sent. When the attempts run out, or the user
//! presses Ctrl-C, the message says how to continue; running the same
//! backup again resumes by itself (see [`crate::resume`]).

use crate::output::mb_per_s;
use crate::progress::Progress;
use crate::resume::{hash_file, placement_addrs, Unfinished};
use crate::session::{holders_first, Client};
use crate::upload::{is_file_change, upload, ChunkSource, Resume, Uploaded};
use dupla::chunk::MAX_HELD_CHUNKS;
use dupla::size::format_size;
use dupla::{Error, Hash, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upload attempts per file: the first, then resumes after failures that
/// may pass. With the pauses of [`retry_pause`] they span about 11.5 s, past
/// the 3 s after which the manager stops placing on a silent server.
pub const MAX_ATTEMPTS: u32 = 6;

/// Times a file may be found changing under the reader (shrunk, or its
/// bytes no longer what was hashed) before a backup leaves it out: once
/// more may find it settled; more would re-read a file something is busy
/// writing, for nothing.
pub const MAX_FILE_CHANGES: u32 = 1;

/// Files above this many chunks (about 29 GiB) are not resumed: their chunk
/// list would not fit in one request. They are sent again whole.
pub const MAX_RESUME_CHUNKS: u64 = 30_000;

/// Files at least this large ask where they will be placed before they are
/// sent, and enter at the primary: the preview costs one round trip to the
/// manager, a hop through a forwarding server costs every byte a copy more.
pub const ENTRY_PREVIEW_MIN_BYTES: u64 = 1 << 20;

/// The pause before retry `n` (1-based): 0.5 s, 1 s, 2 s, 4 s, 4 s...
pub fn retry_pause(n: u32) -> Duration {
    Duration::from_millis(500 << (n - 1).min(3))
}

/// How one backup behaves.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Ask the cluster what it holds even without a note of an unfinished
    /// upload (`--resume`).
    pub resume: bool,
    /// Chunk hashes the cluster is believed to hold for a previous version
    /// of this file: the file is cut and hashed first, and its chunks found
    /// here are sent by reference instead of read and sent. If the cluster
    /// refuses that (FAILED_PRECONDITION), the upload is retried once
    /// sending everything.
    pub reuse: Option<Arc<HashSet<Hash>>>,
    /// A bar shared by the files of a whole run, which this upload adds its
    /// bytes to instead of showing a bar of its own.
    pub bar: Option<Progress>,
    /// Part of a directory run ([`crate::snapshot_backup`]): an interrupted
    /// upload's error does not suggest `dupla backup NAME --resume`, since
    /// the run says to run the same backup again, which resumes it.
    pub in_run: bool,
}

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
    /// The server the last upload attempt entered through: the primary
    /// when it was up (two hops: client → primary → replica).
    pub entry: String,
    /// Durable copies when the receipt was written.
    pub copies: u32,
    /// Bytes of file data this run read and sent, over every attempt.
    pub sent_bytes: u64,
    /// Bytes the cluster already held when the last attempt started (a
    /// resumed upload): not sent again.
    pub resumed_bytes: u64,
    /// Bytes of chunks sent by reference (held for a previous version).
    pub reused_bytes: u64,
    /// The catalog version this backup committed.
    pub version: u64,
    /// Upload attempts this run made (1 unless something failed midway).
    pub attempts: u32,
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
        let options = BackupOptions {
            progress,
            ..Default::default()
        };
        self.backup_resolved(root, &resolved, options).await
    }

    /// Upload a file that [`resolve`] accepted under `root`, resuming after
    /// failures that may pass.
    pub async fn backup_resolved(
        &self,
        root: &Path,
        file: &Resolved,
        options: BackupOptions,
    ) -> Result<BackupReport> {
        let mut size = regular_file_size(file)?;
        let note = Unfinished::for_name(root, &file.name);
        let mut resume = options.resume || note.exists();
        let mut reuse = options.reuse.clone();
        note.start(&file.name, size)?;
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut attempts = 0;
        let mut changes = 0;
        loop {
            attempts += 1;
            let error = match self
                .upload_attempt(
                    file,
                    size,
                    resume,
                    reuse.as_deref(),
                    (options.progress, options.bar.as_ref()),
                    &sent,
                )
                .await
            {
                Ok((done, resumed_bytes)) => {
                    note.finish();
                    let seconds = started.elapsed().as_secs_f64();
                    return Ok(report(done, resumed_bytes, &sent, attempts, seconds));
                }
                Err(e) => e,
            };
            match error {
                // Something is writing the file: read it once more as it is
                // now (a file written once may have settled), then leave it
                // to the next backup rather than fail the whole run.
                Error::Io(changed) if is_file_change(&changed) => {
                    changes += 1;
                    if changes > MAX_FILE_CHANGES || attempts >= MAX_ATTEMPTS {
                        note.finish();
                        return Err(Error::InvalidInput(format!(
                            "{changed}, the second time: something is writing it (the next backup tries again)"
                        )));
                    }
                    eprintln!("note: {}: {changed}; reading it again", file.name);
                    size = regular_file_size(file)?;
                    note.start(&file.name, size)?;
                    resume = true;
                }
                Error::Stale(reason) if resume || reuse.is_some() => {
                    eprintln!("note: {reason}; sending the whole file");
                    resume = false;
                    reuse = None;
                }
                e if e.is_retryable() && attempts < MAX_ATTEMPTS => {
                    let pause = retry_pause(attempts);
                    eprintln!(
                        "note: {}: {e}; resuming in {:.1} s (attempt {} of {MAX_ATTEMPTS})",
                        file.name,
                        pause.as_secs_f64(),
                        attempts + 1
                    );
                    tokio::time::sleep(pause).await;
                    resume = true;
                }
                e => {
                    // Only an interruption leaves something to resume; a
                    // refusal (not logged in, no room, a bad name) does not.
                    if !e.is_retryable() {
                        note.finish();
                    }
                    let sent = sent.load(Ordering::Relaxed);
                    return Err(interrupted(e, &file.name, sent, options.in_run));
                }
            }
        }
    }

    /// One upload attempt; with `resume`, only what the cluster lacks is
    /// sent, and with `reuse` the chunks found there go by reference.
    /// Returns the upload and the bytes that were already held.
    async fn upload_attempt(
        &self,
        file: &Resolved,
        size: u64,
        resume: bool,
        reuse: Option<&HashSet<Hash>>,
        (progress, shared_bar): (bool, Option<&Progress>),
        sent: &Arc<AtomicU64>,
    ) -> Result<(Uploaded, u64)> {
        let mut candidates = self.entry_servers().await?;
        let mut placement = None;
        let plan = if resume || reuse.is_some() {
            let hashed = hash_file(&file.path, size).await?;
            let held = if resume && hashed.chunks.len() as u64 <= MAX_RESUME_CHUNKS {
                let status = self
                    .upload_status(
                        &candidates,
                        &file.name,
                        size,
                        &hashed.chunks,
                        &hashed.lengths,
                    )
                    .await?;
                placement = Some(placement_addrs(&status));
                status.held_chunks.min(hashed.chunks.len() as u64)
            } else {
                0
            };
            let mut by_reference = HashSet::new();
            if let Some(reuse) = reuse {
                for hash in &hashed.chunks[held as usize..] {
                    if by_reference.len() < MAX_HELD_CHUNKS && reuse.contains(hash) {
                        by_reference.insert(*hash);
                    }
                }
            }
            Some(Resume {
                chunks: hashed.chunks,
                lengths: hashed.lengths,
                held,
                whole: hashed.whole,
                by_reference,
                takeover: resume,
            })
        } else {
            None
        };
        if placement.is_none() && size >= ENTRY_PREVIEW_MIN_BYTES {
            // Ask where the file goes, to enter at its primary: a server
            // that cannot say (an older one) leaves the order as it is.
            match self.placement_preview(&candidates, &file.name, size).await {
                Ok(addrs) => placement = Some(addrs),
                Err(e) => tracing::debug!(error = %e, "no placement preview"),
            }
        }
        if let Some(placement) = placement {
            candidates = holders_first(&candidates, &placement);
        }
        let held_bytes = plan.as_ref().map_or(0, Resume::held_bytes);
        let handle = File::open(&file.path).map_err(|e| open_error(&file.name, e))?;
        let source = FileSource {
            file: handle,
            name: file.name.clone(),
            size,
        };
        let bar = match shared_bar {
            Some(shared) => shared.clone(),
            None => Progress::new(progress, size, &file.name),
        };
        let result = upload(
            self,
            &candidates,
            &file.name,
            size,
            source,
            plan,
            &bar,
            Some(sent.clone()),
        )
        .await;
        if shared_bar.is_none() {
            bar.finish();
        }
        Ok((result?, held_bytes))
    }
}

/// The size of a file that must still be a regular file.
fn regular_file_size(file: &Resolved) -> Result<u64> {
    let handle = File::open(&file.path).map_err(|e| open_error(&file.name, e))?;
    let meta = handle.metadata()?;
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{}: not a regular file",
            file.name
        )));
    }
    Ok(meta.len())
}

/// The report of a finished backup.
fn report(
    done: Uploaded,
    resumed_bytes: u64,
    sent: &AtomicU64,
    attempts: u32,
    seconds: f64,
) -> BackupReport {
    let entry = done.receipt.entry.unwrap_or_default();
    let version = entry.version;
    let holder = |i: usize| {
        entry
            .holders
            .get(i)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    };
    BackupReport {
        name: entry.name.clone(),
        size: entry.size,
        blake3: done.blake3.to_hex(),
        primary: holder(0),
        replica: holder(1),
        entry: done.entry.clone(),
        copies: done.receipt.copies,
        sent_bytes: sent.load(Ordering::Relaxed),
        resumed_bytes,
        reused_bytes: done.reused_bytes,
        version,
        attempts,
        seconds,
        mb_per_s: mb_per_s(entry.size, seconds),
    }
}

/// The error that ends a backup, saying what is kept and how to go on
/// (inside a directory run, the run says how: see [`BackupOptions::in_run`]).
fn interrupted(error: Error, name: &str, sent: u64, in_run: bool) -> Error {
    if !error.is_retryable() {
        return error;
    }
    error.map_message(|m| {
        let stop = if m.ends_with(['.', '?', '!']) {
            ""
        } else {
            "."
        };
        let kept = format!(
            "{name} was interrupted after {} sent: {m}{stop} The cluster keeps what it stored",
            format_size(sent)
        );
        if in_run {
            kept
        } else {
            format!("{kept}; run `dupla backup {name} --resume` to send only the rest")
        }
    })
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
pub(crate) fn catalog_name(relative: &Path) -> Option<String> {
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

/// A file as an upload source: its first `size` bytes.
struct FileSource {
    file: File,
    /// Catalog name, for the note below.
    name: String,
    /// The bytes the upload promised.
    size: u64,
}

impl FileSource {
    /// Whether the file holds bytes past the promised ones.
    fn grew(&mut self) -> std::io::Result<bool> {
        let mut probe = [0u8; 1];
        Ok(self.file.read(&mut probe)? > 0)
    }
}

impl ChunkSource for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    fn seek_to(&mut self, offset: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset)).map(|_| ())
    }

    /// A file that grew while it was read (a log being appended to) is
    /// backed up as it was when the backup looked at it: its first `size`
    /// bytes, every one verified; the next backup sees the new size and
    /// sends the rest. Failing instead would leave a live log never backed up.
    fn finish(&mut self) -> std::io::Result<()> {
        if self.grew()? {
            eprintln!(
                "note: {} grew while it was read; its first {} were backed up (the next backup sends the rest)",
                self.name,
                format_size(self.size)
            );
        }
        Ok(())
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
    fn only_a_file_backed_up_alone_is_told_to_resume_with_its_own_command() {
        let alone = interrupted(Error::Unavailable("gone".into()), "a.bin", 0, false);
        assert!(
            alone
                .to_string()
                .contains("run `dupla backup a.bin --resume`"),
            "{alone}"
        );
        let in_run = interrupted(Error::Unavailable("is it up?".into()), "a.bin", 0, true);
        assert!(in_run.is_retryable(), "the status is kept");
        assert_eq!(
            in_run.to_string(),
            "a.bin was interrupted after 0 B sent: is it up? The cluster keeps what it stored"
        );
        let refused = interrupted(Error::InvalidInput("bad".into()), "a.bin", 0, true);
        assert_eq!(refused.to_string(), "bad", "a refusal gets no advice");
    }

    #[test]
    fn names_come_from_normal_components() {
        assert_eq!(catalog_name(Path::new("a/b/c")).unwrap(), "a/b/c");
        assert_eq!(catalog_name(Path::new("")).unwrap(), "");
        assert!(catalog_name(Path::new("../a")).is_none());
    }

    #[test]
    fn file_source_notices_a_file_that_grew_and_takes_it_as_it_was() {
        let (_dir, root) = setup();
        let mut src = FileSource {
            file: File::open(root.join("notes.txt")).unwrap(),
            name: "notes.txt".into(),
            size: 1,
        };
        let mut one = [0u8; 1];
        assert_eq!(src.read(&mut one).unwrap(), 1);
        assert!(src.grew().unwrap());
        assert!(src.finish().is_ok(), "a grown file is backed up as it was");
        src.seek_to(2).unwrap();
        assert!(!src.grew().unwrap());
    }
}
