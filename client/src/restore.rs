//! `dupla restore NAME [-o PATH]`: download a file and put it in place only
//! once every byte checked out.
//!
//! The bytes go to a hidden temporary file beside the destination
//! (`.NAME.dupla-part`); after the whole-file blake3 matches, it is fsynced,
//! renamed over the destination, and the directory is fsynced. Any failure
//! removes the temporary file, so a restore leaves either the complete file
//! or nothing at the destination.
//!
//! Interrupted restores continue: a failure that may pass (a server died, a
//! connection broke) keeps the temporary file, and the next attempt (at once,
//! through another server, a few times; or the next `dupla restore` of the
//! same name) re-hashes the part already on disk against the catalog's chunk
//! list and asks only for the chunks after the last good one.

use crate::backup::{retry_pause, MAX_ATTEMPTS};
use crate::download::{download, ChunkSink, StartAt};
use crate::output::{format_rate, mb_per_s, Output};
use crate::progress::Progress;
use crate::session::{holders_first, Client};
use dupla::chunk::{ChunkLayout, MAX_CHUNK_SIZE};
use dupla::size::format_size;
use dupla::v1::{FileEntry, LookupRequest};
use dupla::{Error, Hash, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file a restore writes before renaming.
pub const PART_SUFFIX: &str = ".dupla-part";

/// The outcome of one restore (also its `--json` line).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Catalog name.
    pub name: String,
    /// Bytes in the file.
    pub size: u64,
    /// Whole-file blake3, hex (checked against the catalog).
    pub blake3: String,
    /// Where the file now is.
    pub path: String,
    /// Bytes already on disk from an interrupted restore, checked and kept.
    pub resumed_bytes: u64,
    /// Download attempts (1 unless something failed midway).
    pub attempts: u32,
    /// Wall time of the download.
    pub seconds: f64,
    /// Throughput, 10^6 bytes per second.
    pub mb_per_s: f64,
}

impl Client {
    /// Restore catalog file `name` to `dest` (an existing directory receives
    /// it under the name's last component). Parent directories are created.
    /// An interrupted earlier restore to the same place is continued.
    pub async fn restore(&self, name: &str, dest: &Path, progress: bool) -> Result<RestoreReport> {
        self.restore_version(name, 0, dest, progress).await
    }

    /// [`Client::restore`] of one version of `name` (its catalog
    /// `version`; 0 for the latest). The part file of an interrupted
    /// restore is per version, so two versions never mix.
    pub async fn restore_version(
        &self,
        name: &str,
        version: u64,
        dest: &Path,
        progress: bool,
    ) -> Result<RestoreReport> {
        dupla::name::validate(name)?;
        let dest = destination(name, dest)?;
        self.restore_at(name, version, dest, progress).await
    }

    /// [`Client::restore_version`] to exactly `dest` (a file's own place in
    /// the client root or a restored tree): never into a directory that is
    /// there, and never through a link there, which the restored file
    /// replaces instead (a rename replaces the link itself).
    pub async fn restore_exact(
        &self,
        name: &str,
        version: u64,
        dest: &Path,
        progress: bool,
    ) -> Result<RestoreReport> {
        dupla::name::validate(name)?;
        let dest = exact_destination(dest)?;
        self.restore_at(name, version, dest, progress).await
    }

    /// Restore into the final path `dest`, retrying what may pass.
    async fn restore_at(
        &self,
        name: &str,
        version: u64,
        dest: PathBuf,
        progress: bool,
    ) -> Result<RestoreReport> {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let part = PartFile::for_version(&dest, version)?;
            let part_path = part.part.clone();
            let error = match self.restore_attempt(name, version, part, progress).await {
                Ok((done, resumed_bytes)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    return Ok(RestoreReport {
                        name: done.name,
                        size: done.size,
                        blake3: done.blake3,
                        path: dest.display().to_string(),
                        resumed_bytes,
                        attempts,
                        seconds,
                        mb_per_s: mb_per_s(done.size, seconds),
                    });
                }
                Err(e) => e,
            };
            match error {
                e if e.is_retryable() && attempts < MAX_ATTEMPTS => {
                    let pause = retry_pause(attempts);
                    eprintln!(
                        "note: {name}: {e}; continuing in {:.1} s (attempt {} of {MAX_ATTEMPTS})",
                        pause.as_secs_f64(),
                        attempts + 1
                    );
                    tokio::time::sleep(pause).await;
                }
                Error::Stale(reason) => {
                    eprintln!("note: {reason}");
                    let _ = std::fs::remove_file(&part_path);
                }
                e if e.is_retryable() => {
                    let kept = std::fs::metadata(&part_path).map_or(0, |m| m.len());
                    // "The same command": it may have named a destination.
                    return Err(e.map_message(|m| {
                        if kept == 0 {
                            format!("{m}. Run the same command again once a holder is reachable")
                        } else {
                            format!(
                                "{m}. The {} already here are kept in {}: run the same command again to continue",
                                format_size(kept),
                                part_path.display()
                            )
                        }
                    }));
                }
                e => {
                    // Nothing to continue from: wrong name, corrupt data...
                    let _ = std::fs::remove_file(&part_path);
                    return Err(e);
                }
            }
        }
    }

    /// One download into `part`, after the chunks it already holds.
    async fn restore_attempt(
        &self,
        name: &str,
        version: u64,
        mut part: PartFile,
        progress: bool,
    ) -> Result<(Restored, u64)> {
        // Kept on failure: the next attempt continues from it.
        part.keep_on_failure = true;
        let mut looked_up = None;
        let start = match part.existing_len() {
            0 => None,
            _ => {
                let entry = self.lookup(name, version).await?;
                let start = verified_prefix(&part.part, &entry).await?;
                looked_up = Some(entry.holders.clone());
                part.resume_at(start.offset);
                if start.chunk == ChunkLayout::of(&entry)?.count() {
                    // Every chunk is already here: nothing to download.
                    return finish_locally(part, entry, start);
                }
                Some(start)
            }
        };
        let resumed_bytes = part.resume_at;
        let mut candidates = self.entry_servers().await?;
        if self.server_addr().is_none() {
            // Read from a holder directly: a server that holds no copy
            // would fetch every chunk from one and pass it on.
            let holders = match looked_up {
                Some(holders) => Some(holders),
                None => self.lookup(name, version).await.ok().map(|e| e.holders),
            };
            if let Some(holders) = holders {
                let addrs: Vec<String> = holders.into_iter().map(|h| h.addr).collect();
                candidates = holders_first(&candidates, &addrs);
            }
        }
        let bar = Progress::new(progress, 0, name);
        let result = download(self, &candidates, name, version, part, start, &bar).await;
        bar.finish();
        let done = result?;
        done.sink.commit()?;
        let restored = Restored {
            name: done.entry.name,
            size: done.entry.size,
            blake3: done.blake3.to_hex(),
        };
        Ok((restored, resumed_bytes))
    }

    /// The caller's catalog entry of `name` (`version`, or the latest when
    /// 0), with its chunk list.
    async fn lookup(&self, name: &str, version: u64) -> Result<FileEntry> {
        let request = self.request(LookupRequest {
            name: name.to_string(),
            version,
        });
        let reply = self
            .manager()
            .await?
            .lookup(request)
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(reply.into_inner())
    }
}

/// A part file that already holds every chunk: check the whole-file hash
/// and put it in place.
fn finish_locally(part: PartFile, entry: FileEntry, start: StartAt) -> Result<(Restored, u64)> {
    let got = Hash::from(start.hasher.finalize());
    if got.0.as_slice() != entry.blake3.as_ref() {
        return Err(Error::Stale(format!(
            "{}: the part already here does not hash to the file; starting over",
            entry.name
        )));
    }
    let resumed = part.resume_at;
    part.commit()?;
    let restored = Restored {
        name: entry.name,
        size: entry.size,
        blake3: got.to_hex(),
    };
    Ok((restored, resumed))
}

/// What a finished restore attempt produced.
struct Restored {
    name: String,
    size: u64,
    blake3: String,
}

/// The leading chunks of the part file at `path` that match `entry`'s chunk
/// list, and the whole-file hash over them (on a blocking thread).
async fn verified_prefix(path: &Path, entry: &FileEntry) -> Result<StartAt> {
    let path = path.to_path_buf();
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || {
        let layout = ChunkLayout::of(&entry)?;
        let mut file = File::open(&path)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; MAX_CHUNK_SIZE];
        let mut chunk = 0;
        while chunk < layout.count() {
            let len = layout.len(chunk)?;
            if file.read_exact(&mut buf[..len]).is_err() {
                break;
            }
            let listed = entry.chunks.get(chunk as usize);
            if listed.map(|h| h.as_ref()) != Some(Hash::of(&buf[..len]).0.as_slice()) {
                break;
            }
            hasher.update(&buf[..len]);
            chunk += 1;
        }
        Ok(StartAt {
            chunk,
            offset: layout.offset(chunk),
            hasher,
            blake3: entry.blake3.clone(),
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing thread failed: {e}")))?
}

/// `dupla restore`: to `-o PATH` (into it if it is a directory), or to
/// exactly ROOT/NAME by default.
pub async fn command(
    client: &Client,
    root: &Path,
    name: &str,
    output: Option<&Path>,
    out: Output,
) -> anyhow::Result<()> {
    dupla::name::validate(name)?;
    let report = match output {
        Some(path) => client.restore(name, path, !out.json).await?,
        None => {
            client
                .restore_exact(name, 0, &root.join(name), !out.json)
                .await?
        }
    };
    let human = format!(
        "restored {} ({}) to {} at {}",
        report.name,
        format_size(report.size),
        report.path,
        format_rate(report.mb_per_s)
    );
    out.emit(human, &report)?;
    Ok(())
}

/// The final path: `dest`, or `dest/<last part of name>` if `dest` is an
/// existing directory.
fn destination(name: &str, dest: &Path) -> Result<PathBuf> {
    let file_name = name.rsplit('/').next().unwrap_or(name);
    let dest = if dest.is_dir() {
        dest.join(file_name)
    } else {
        dest.to_path_buf()
    };
    if dest.file_name().is_none() {
        return Err(Error::InvalidInput(format!(
            "{} does not name a file",
            dest.display()
        )));
    }
    Ok(dest)
}

/// `dest` itself, unless a directory (a real one, not a link) is in the
/// way. A link there is not followed: the restored file replaces it.
fn exact_destination(dest: &Path) -> Result<PathBuf> {
    if dest.file_name().is_none() {
        return Err(Error::InvalidInput(format!(
            "{} does not name a file",
            dest.display()
        )));
    }
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => Err(Error::InvalidInput(format!(
            "{}: a directory is in the way; move it, or restore elsewhere with -o",
            dest.display()
        ))),
        _ => Ok(dest.to_path_buf()),
    }
}

/// The temporary file of a restore in progress, created (with its parent
/// directories) when the first byte arrives, so a restore that fails before
/// that leaves nothing at all. Removed on drop unless committed, so an error
/// or a cancelled restore leaves no partial file behind.
#[derive(Debug)]
pub struct PartFile {
    /// Open once the first chunk (or the commit of an empty file) needs it.
    file: Option<File>,
    /// `.NAME.dupla-part` beside the destination.
    part: PathBuf,
    /// Where the file goes once verified.
    dest: PathBuf,
    /// Set by a successful commit; until then drop removes `part`.
    committed: bool,
    /// Bytes of an earlier attempt kept at the start of `part`.
    resume_at: u64,
    /// Keep `part` on drop (a failure the next attempt continues from).
    keep_on_failure: bool,
    /// Permission bits for the restored file, when the original's are known.
    mode: Option<u32>,
    /// Bytes in the part file so far (for the writeback hint).
    written: u64,
}

/// Mode of a part file, and of a restored file whose original mode is not
/// known and that replaces nothing: only its owner may read it (a backup
/// may hold anything).
pub const PART_FILE_MODE: u32 = 0o600;

impl PartFile {
    /// A part file for `dest`; nothing touches the disk yet.
    pub fn new(dest: &Path) -> Result<PartFile> {
        PartFile::for_version(dest, 0)
    }

    /// A part file for `dest` restoring `version` (0: the latest):
    /// `.NAME.dupla-part`, or `.NAME.vN.dupla-part` for a given version.
    pub fn for_version(dest: &Path, version: u64) -> Result<PartFile> {
        let file_name = dest.file_name().ok_or_else(|| {
            Error::InvalidInput(format!("{} does not name a file", dest.display()))
        })?;
        let mut part_name = std::ffi::OsString::from(".");
        part_name.push(file_name);
        if version != 0 {
            part_name.push(format!(".v{version}"));
        }
        part_name.push(PART_SUFFIX);
        Ok(PartFile {
            file: None,
            part: dest.with_file_name(part_name),
            dest: dest.to_path_buf(),
            committed: false,
            resume_at: 0,
            keep_on_failure: false,
            mode: None,
            written: 0,
        })
    }

    /// Bytes an interrupted earlier restore left in the part file.
    pub fn existing_len(&self) -> u64 {
        std::fs::metadata(&self.part).map_or(0, |m| m.len())
    }

    /// Keep the first `len` bytes of the part file and write after them.
    pub fn resume_at(&mut self, len: u64) {
        self.resume_at = len;
    }

    /// The open part file, creating it (and missing parents) on first use.
    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.part.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = if self.resume_at > 0 {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.part)?;
                file.set_len(self.resume_at)?;
                file.seek(SeekFrom::End(0))?;
                file
            } else {
                // A fresh file, never one already there: whatever sits at
                // this name (a leftover, or a link planted to make the
                // restore write elsewhere) is removed, not followed, and
                // the file is created private (O_EXCL never follows a link).
                match std::fs::remove_file(&self.part) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(PART_FILE_MODE)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.part)?
            };
            self.file = Some(file);
        }
        Ok(self
            .file
            .as_mut()
            .expect("invariant: the part file was opened just above"))
    }

    /// Give the restored file these permission bits (the original's, from
    /// a snapshot) instead of [`PartFile`]'s default.
    pub fn with_mode(mut self, mode: Option<u32>) -> PartFile {
        self.mode = mode.map(|m| m & 0o7777);
        self
    }

    /// Make the verified bytes durable and move them onto the destination,
    /// with its mode: the original's when known, else that of the file it
    /// replaces, else private ([`PART_FILE_MODE`]).
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dest.display().to_string();
        let cannot = |e: std::io::Error| Error::InvalidInput(format!("cannot write {dest}: {e}"));
        let mode = self.mode.or_else(|| {
            std::fs::symlink_metadata(&self.dest)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.permissions().mode() & 0o7777)
        });
        let file = self.open().map_err(cannot)?;
        if let Some(mode) = mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(cannot)?;
        }
        file.sync_all().map_err(cannot)?;
        self.file = None;
        std::fs::rename(&self.part, &self.dest).map_err(cannot)?;
        self.committed = true;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename itself durable; some filesystems refuse, harmlessly.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl ChunkSink for PartFile {
    fn write_chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        let part = self.part.display().to_string();
        let written = self.written.max(self.resume_at);
        self.open()
            .and_then(|file| {
                file.write_all(data)?;
                start_writeback(file, written, data.len() as u64);
                Ok(())
            })
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {part}: {e}")))?;
        self.written = written + data.len() as u64;
        Ok(())
    }
}

/// Ask the kernel to start writing `len` bytes at `offset` to disk now,
/// without waiting: the disk works while the next chunks arrive, and the
/// fsync at the end has little left to do. Only a hint: a failure shows at
/// the fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the call; the call
        // reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed && !self.keep_on_failure {
            self.file = None;
            // Absent if nothing was written yet; that error is expected.
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_file_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.txt");
        let mut part = PartFile::new(&dest).unwrap();
        let part_path = dir.path().join(".a.txt.dupla-part");
        assert!(!part_path.exists());
        part.write_chunk(b"half").unwrap();
        assert!(part_path.exists());
        drop(part);
        assert!(!part_path.exists());
        assert!(!dest.exists());

        let mut part = PartFile::new(&dest).unwrap();
        part.write_chunk(b"whole").unwrap();
        part.commit().unwrap();
        assert!(!part_path.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");

        // An empty file has no chunks but is still created, with its parents.
        let empty = dir.path().join("new/dir/empty");
        PartFile::new(&empty).unwrap().commit().unwrap();
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
    }

    #[test]
    fn a_planted_link_at_the_part_file_is_replaced_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dest = dir.path().join("a.txt");
        symlink(&victim, dir.path().join(".a.txt.dupla-part")).unwrap();
        let mut part = PartFile::new(&dest).unwrap();
        part.write_chunk(b"restored").unwrap();
        part.commit().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&dest).unwrap(), b"restored");
        assert!(!std::fs::symlink_metadata(&dest).unwrap().is_symlink());
    }

    #[test]
    fn restored_files_are_private_unless_their_mode_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let fresh = dir.path().join("fresh");
        let mut part = PartFile::new(&fresh).unwrap();
        part.write_chunk(b"x").unwrap();
        part.commit().unwrap();
        assert_eq!(mode(&fresh), PART_FILE_MODE);
        // The original's mode, from a snapshot.
        let known = dir.path().join("known");
        let mut part = PartFile::new(&known).unwrap().with_mode(Some(0o640));
        part.write_chunk(b"x").unwrap();
        part.commit().unwrap();
        assert_eq!(mode(&known), 0o640);
        // Replacing a file keeps its mode.
        let replaced = dir.path().join("replaced");
        std::fs::write(&replaced, b"old").unwrap();
        std::fs::set_permissions(&replaced, std::fs::Permissions::from_mode(0o604)).unwrap();
        let mut part = PartFile::new(&replaced).unwrap();
        part.write_chunk(b"new").unwrap();
        part.commit().unwrap();
        assert_eq!(mode(&replaced), 0o604);
    }

    #[test]
    fn a_resumed_part_file_keeps_its_start_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b.bin");
        let mut part = PartFile::new(&dest).unwrap();
        part.keep_on_failure = true;
        part.write_chunk(b"good-bad").unwrap();
        drop(part);
        let mut part = PartFile::new(&dest).unwrap();
        assert_eq!(part.existing_len(), 8);
        part.resume_at(5);
        part.write_chunk(b"rest").unwrap();
        part.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"good-rest");
    }

    #[tokio::test]
    async fn the_verified_prefix_stops_at_the_first_bad_chunk() {
        use dupla::chunk::CHUNK_SIZE;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE * 3).map(|i| (i % 13) as u8).collect();
        let entry = FileEntry {
            name: "f".into(),
            size: data.len() as u64,
            blake3: Hash::of(&data).to_bytes(),
            chunks: data
                .chunks(CHUNK_SIZE)
                .map(|c| Hash::of(c).to_bytes())
                .collect(),
            ..Default::default()
        };
        let path = dir.path().join("part");
        let mut local = data[..2 * CHUNK_SIZE + 10].to_vec();
        std::fs::write(&path, &local).unwrap();
        assert_eq!(verified_prefix(&path, &entry).await.unwrap().chunk, 2);
        local[CHUNK_SIZE + 7] ^= 1;
        std::fs::write(&path, &local).unwrap();
        assert_eq!(verified_prefix(&path, &entry).await.unwrap().chunk, 1);
    }

    #[test]
    fn destinations() {
        let dir = tempfile::tempdir().unwrap();
        let nested = destination("x/y/z.txt", &dir.path().join("x/y/z.txt")).unwrap();
        assert_eq!(nested, dir.path().join("x/y/z.txt"));
        let into_dir = destination("x/y/z.txt", dir.path()).unwrap();
        assert_eq!(into_dir, dir.path().join("z.txt"));

        // A file's own place: a directory there is in the way, a link there
        // is the path itself (replaced, never followed).
        let place = dir.path().join("a.c");
        assert_eq!(exact_destination(&place).unwrap(), place);
        std::os::unix::fs::symlink(dir.path(), &place).unwrap();
        assert_eq!(exact_destination(&place).unwrap(), place);
        std::fs::remove_file(&place).unwrap();
        std::fs::create_dir(&place).unwrap();
        let err = exact_destination(&place).unwrap_err().to_string();
        assert!(err.contains("a directory is in the way"), "{err}");
    }
}
