//! `dupla restore NAME [-o PATH]`: download a file and put it in place only
//! once every byte checked out.
//!
//! The bytes go to a hidden temporary file beside the destination
//! (`.NAME.dupla-part`); after the whole-file blake3 matches, it is fsynced,
//! renamed over the destination, and the directory is fsynced. Any failure
//! removes the temporary file, so a restore leaves either the complete file
//! or nothing.

use crate::download::{download, ChunkSink};
use crate::output::{format_rate, mb_per_s, Output};
use crate::progress::Progress;
use crate::session::Client;
use dupla::size::format_size;
use dupla::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
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
    /// Wall time of the download.
    pub seconds: f64,
    /// Throughput, 10^6 bytes per second.
    pub mb_per_s: f64,
}

impl Client {
    /// Restore catalog file `name` to `dest` (an existing directory receives
    /// it under the name's last component). Parent directories are created.
    pub async fn restore(&self, name: &str, dest: &Path, progress: bool) -> Result<RestoreReport> {
        dupla::name::validate(name)?;
        let dest = destination(name, dest)?;
        let part = PartFile::new(&dest)?;
        let candidates = self.entry_servers().await?;
        let bar = Progress::new(progress, 0, name);
        let result = download(self, &candidates, name, part, &bar).await;
        bar.finish();
        let done = result?;
        done.sink.commit()?;
        Ok(RestoreReport {
            name: done.entry.name,
            size: done.entry.size,
            blake3: done.blake3.to_hex(),
            path: dest.display().to_string(),
            seconds: done.seconds,
            mb_per_s: mb_per_s(done.entry.size, done.seconds),
        })
    }
}

/// `dupla restore`: to `-o PATH`, or to ROOT/NAME by default.
pub async fn command(
    client: &Client,
    root: &Path,
    name: &str,
    output: Option<&Path>,
    out: Output,
) -> anyhow::Result<()> {
    dupla::name::validate(name)?;
    let dest = match output {
        Some(path) => path.to_path_buf(),
        None => root.join(name),
    };
    let report = client.restore(name, &dest, !out.json).await?;
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
}

impl PartFile {
    /// A part file for `dest`; nothing touches the disk yet.
    pub fn new(dest: &Path) -> Result<PartFile> {
        let file_name = dest.file_name().ok_or_else(|| {
            Error::InvalidInput(format!("{} does not name a file", dest.display()))
        })?;
        let mut part_name = std::ffi::OsString::from(".");
        part_name.push(file_name);
        part_name.push(PART_SUFFIX);
        Ok(PartFile {
            file: None,
            part: dest.with_file_name(part_name),
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The open part file, creating it (and missing parents) on first use.
    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.part.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            self.file = Some(File::create(&self.part)?);
        }
        Ok(self
            .file
            .as_mut()
            .expect("invariant: the part file was opened just above"))
    }

    /// Make the verified bytes durable and move them onto the destination.
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dest.display().to_string();
        let cannot = |e: std::io::Error| Error::InvalidInput(format!("cannot write {dest}: {e}"));
        self.open().map_err(cannot)?.sync_all().map_err(cannot)?;
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
        self.open()
            .and_then(|file| file.write_all(data))
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {part}: {e}")))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
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
    fn destinations() {
        let dir = tempfile::tempdir().unwrap();
        let nested = destination("x/y/z.txt", &dir.path().join("x/y/z.txt")).unwrap();
        assert_eq!(nested, dir.path().join("x/y/z.txt"));
        let into_dir = destination("x/y/z.txt", dir.path()).unwrap();
        assert_eq!(into_dir, dir.path().join("z.txt"));
    }
}
