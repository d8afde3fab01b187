//! The chunk store: chunks on disk, content-addressed by blake3.
//!
//! `data/chunks/ab/abcdef…` holds the chunk whose hash starts `abcdef…`.
//! A chunk is written to `data/tmp/` (staged, with O_DIRECT where the
//! filesystem allows, so chunks do not crowd the page cache); when the whole transfer has
//! arrived the batch is flushed to disk, renamed into place, and the renames
//! flushed (commit), so a crash never leaves a partly written file under a
//! chunk's final name, and nothing is acknowledged before it is durable. Every read
//! re-hashes the bytes, so a chunk that rotted on disk is reported as
//! corrupt instead of being served. Content addressing gives dedup (the same
//! bytes are stored once) and makes resume a question of "which hashes do
//! you have".

use bytes::Bytes;
use dupla::{Error, Hash, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// A chunk written to `tmp/`, not yet durable nor visible.
#[derive(Debug)]
pub struct Staged {
    hash: Hash,
    len: u64,
    /// `None` when the chunk was already stored (nothing to commit), or
    /// once committed.
    tmp: Option<PathBuf>,
    /// The store whose reservation this chunk holds.
    inner: Arc<Inner>,
}

impl Drop for Staged {
    /// A staged chunk dropped without being committed — the transfer failed
    /// or was cancelled, even before its write finished — removes its temp
    /// file and gives its reserved bytes back.
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
            self.inner.reserved.fetch_sub(self.len, Ordering::Relaxed);
        }
    }
}

/// Chunks staged by one transfer. Dropped before [`Batch::take`] hands them
/// to a commit (an error, a cancelled call), their temp files are removed.
pub struct Batch {
    store: ChunkStore,
    chunks: Vec<Staged>,
}

impl Batch {
    /// An empty batch on `store`.
    pub fn new(store: ChunkStore) -> Self {
        Batch {
            store,
            chunks: Vec::new(),
        }
    }

    /// The store the batch stages into.
    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    /// Add a staged chunk.
    pub fn push(&mut self, chunk: Staged) {
        self.chunks.push(chunk);
    }

    /// Staged chunks waiting for their commit.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Hand the staged chunks over (to [`ChunkStore::commit`]).
    pub fn take(&mut self) -> Vec<Staged> {
        std::mem::take(&mut self.chunks)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let chunks = self.take();
        self.store.discard(chunks);
    }
}

/// Mode of a chunk file: users' data, readable by the server's user only.
pub const CHUNK_FILE_MODE: u32 = 0o600;

/// Mode of the data directory and its folders: nobody else lists or enters.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Create `dir` (and its parents) if missing and make it private.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DATA_DIR_MODE))
}

/// Alignment O_DIRECT needs for buffer addresses, offsets and lengths.
const DIRECT_IO_ALIGN: usize = 4096;

/// Write `data` to a new file at `path`, bypassing the page cache where the
/// filesystem allows it (O_DIRECT), else through it with early writeback.
///
/// Why: on a busy machine, filling the page cache with freshly written
/// chunks costs more CPU (page allocation and copying, then writeback) than
/// the rest of the write path; the chunks are read back rarely (restores,
/// scrubs), and each read re-hashes them anyway.
/// Room the store leaves free on its disk: the server's catalog, logs and
/// temporary files share the disk and must still be writable when the store
/// counts itself full.
pub const DISK_HEADROOM: u64 = 256 << 20;

/// What the store may hold: `configured`, or what it holds plus the disk's
/// free room above [`DISK_HEADROOM`] when that is less.
fn effective_capacity(configured: u64, used: u64, disk_room: Option<u64>) -> u64 {
    match disk_room {
        Some(room) => configured.min(used.saturating_add(room.saturating_sub(DISK_HEADROOM))),
        None => configured,
    }
}

/// Bytes an unprivileged process may still write on the filesystem of
/// `path`, or `None` when the system cannot say.
fn disk_room(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated string and `stat` is writable
        // memory of the right type; it is read only after success.
        let stat = unsafe {
            if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return None;
            }
            stat.assume_init()
        };
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A failed chunk write as the caller should see it: a full disk is
/// `Exhausted` (retrying on the same server will not help; placement
/// chooses another) rather than a retryable I/O error.
fn write_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        Error::Exhausted(format!("server disk full: {e}"))
    } else {
        Error::Io(e)
    }
}

fn write_new_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CHUNK_FILE_MODE)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => return write_direct(file, data),
            // tmpfs and some others refuse O_DIRECT: fall through.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CHUNK_FILE_MODE)
            .open(path)?
    };
    file.write_all(data)?;
    start_writeback(&file);
    Ok(())
}

#[cfg(target_os = "linux")]
fn write_direct(mut file: File, data: &[u8]) -> std::io::Result<()> {
    thread_local! {
        /// One aligned staging buffer per blocking-pool thread, reused so
        /// each chunk costs a memcpy, not an allocation and page faults.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let padded = data.len().next_multiple_of(DIRECT_IO_ALIGN);
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < padded + DIRECT_IO_ALIGN {
            *buffer = vec![0u8; padded.max(dupla::chunk::MAX_CHUNK_SIZE) + DIRECT_IO_ALIGN];
        }
        let start = buffer.as_ptr().align_offset(DIRECT_IO_ALIGN);
        let aligned = &mut buffer[start..start + padded];
        aligned[..data.len()].copy_from_slice(data);
        aligned[data.len()..].fill(0);
        file.write_all(aligned)
    })?;
    if padded != data.len() {
        file.set_len(data.len() as u64)?;
    }
    Ok(())
}

/// Read a whole chunk file. Where the filesystem allows it the read
/// bypasses the page cache (O_DIRECT) into a pooled, aligned buffer: a
/// restore streams each chunk once, so caching it costs page allocation and
/// a copy for nothing, and a fresh buffer per chunk costs page faults.
fn read_chunk_file(path: &Path) -> std::io::Result<Bytes> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => {
                if let Some(data) = read_direct(file)? {
                    return Ok(data);
                }
            }
            // tmpfs and some others refuse O_DIRECT: read through the cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    fs::read(path).map(Bytes::from)
}

/// The file read in one aligned read, or `None` when that is not possible
/// (larger than a chunk, or the filesystem answered in pieces): the caller
/// then reads it the ordinary way.
#[cfg(target_os = "linux")]
fn read_direct(mut file: File) -> std::io::Result<Option<Bytes>> {
    use std::io::Read;
    let len = file.metadata()?.len() as usize;
    if len > dupla::chunk::MAX_CHUNK_SIZE {
        return Ok(None);
    }
    let mut buffer = READ_BUFFERS.take();
    let space = buffer.as_mut_slice();
    let start = space.as_ptr().align_offset(DIRECT_IO_ALIGN);
    let padded = len.next_multiple_of(DIRECT_IO_ALIGN).max(DIRECT_IO_ALIGN);
    let read = match file.read(&mut space[start..start + padded]) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    if read != len {
        return Ok(None);
    }
    Ok(Some(buffer.into_bytes(start..start + len)))
}

/// Buffers for chunks read with O_DIRECT (room for the largest chunk at an
/// aligned start); enough kept for a few downloads' read-ahead.
#[cfg(target_os = "linux")]
static READ_BUFFERS: dupla::pool::BufferPool =
    dupla::pool::BufferPool::new(dupla::chunk::MAX_CHUNK_SIZE + 2 * DIRECT_IO_ALIGN, 16);

/// Ask the kernel to start writing `file` back now, so the commit's sync
/// finds little left to do (Linux; elsewhere the commit does it all).
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open fd; the call only schedules writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// The result of a commit started by [`ChunkStore::start_commit`].
pub fn joined(commit: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    commit.map_err(|e| Error::Internal(format!("chunk commit: {e}")))?
}

/// Flush everything dirty on the filesystem holding `dir` (data and
/// metadata), and wait for it.
fn sync_filesystem(dir: &Path) -> Result<()> {
    let handle = File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open fd.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        handle.sync_all()?;
        Ok(())
    }
}

/// Durable, verified chunk files under one directory.
#[derive(Clone, Debug)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    chunks: PathBuf,
    tmp: PathBuf,
    capacity: u64,
    used: AtomicU64,
    /// Bytes staged but not yet committed or discarded: counted against
    /// capacity so concurrent uploads cannot overfill the disk together.
    reserved: AtomicU64,
    /// Garbage collection deletes under the write side; transfers that rely
    /// on a chunk being there (dedup, resume, repair skips) or install one
    /// take the read side, so a chunk is never deleted between "it is here"
    /// and its use. Held only around single file operations.
    gc: std::sync::RwLock<()>,
}

impl ChunkStore {
    /// Open the store under `data`, removing leftovers of interrupted writes
    /// and counting the bytes in use.
    pub fn open(data: &Path, capacity: u64) -> Result<Self> {
        let chunks = data.join("chunks");
        let tmp = data.join("tmp");
        create_private_dir(data)?;
        create_private_dir(&chunks)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        create_private_dir(&tmp)?;
        let mut used = 0;
        for dir in fs::read_dir(&chunks)? {
            let dir = dir?;
            if dir.file_type()?.is_dir() {
                for file in fs::read_dir(dir.path())? {
                    used += file?.metadata()?.len();
                }
            }
        }
        Ok(ChunkStore {
            inner: Arc::new(Inner {
                chunks,
                tmp,
                capacity,
                used: AtomicU64::new(used),
                reserved: AtomicU64::new(0),
                gc: std::sync::RwLock::new(()),
            }),
        })
    }

    /// Bytes this store may hold: the configured capacity, or less when
    /// the disk under it has less room left (other files share it). The
    /// heartbeat reports this, so placement stops choosing a server whose
    /// disk is filling up for any reason.
    pub fn capacity(&self) -> u64 {
        effective_capacity(
            self.inner.capacity,
            self.used(),
            disk_room(&self.inner.chunks),
        )
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Where the chunk with `hash` lives.
    pub fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.inner.chunks.join(&hex[..2]).join(hex)
    }

    /// Write a chunk to `tmp/` and start its writeback, without waiting
    /// for the disk. The caller has verified `data` against `hash`. Nothing
    /// is visible under the chunk's name until [`ChunkStore::commit`]. A chunk
    /// already present with the right length is not written again (dedup).
    ///
    /// The write starts at once on the blocking pool, before the returned
    /// future is polled, so a caller can queue several and keep receiving.
    pub fn stage(
        &self,
        hash: Hash,
        data: Bytes,
    ) -> impl std::future::Future<Output = Result<Staged>> {
        let store = self.clone();
        let write = tokio::task::spawn_blocking(move || store.stage_blocking(hash, &data));
        async move {
            write
                .await
                .map_err(|e| Error::Internal(format!("chunk writer: {e}")))?
        }
    }

    fn stage_blocking(&self, hash: Hash, data: &[u8]) -> Result<Staged> {
        let len = data.len() as u64;
        if self.claim(&hash, Some(len)) {
            return Ok(Staged {
                hash,
                len,
                tmp: None,
                inner: self.inner.clone(),
            });
        }
        self.reserve(len)?;
        let tmp = self
            .inner
            .tmp
            .join(format!("{}.{:016x}", hash.to_hex(), rand::random::<u64>()));
        let written = write_new_file(&tmp, data);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            self.release(len);
            return Err(write_error(e));
        }
        Ok(Staged {
            hash,
            len,
            tmp: Some(tmp),
            inner: self.inner.clone(),
        })
    }

    /// Make staged chunks durable and visible: flush their data to disk,
    /// rename each into place, then flush the renames. Two filesystem-wide
    /// syncs per batch instead of one fsync per chunk: measured on the
    /// project's VM (ext4, virtio), per-file `fdatasync` cost a device
    /// flush and two VM exits per chunk, 7 % of an upload's CPU. The price:
    /// `syncfs` also writes out other processes' dirty data on the same
    /// filesystem, so a data directory on a disk of its own commits fastest
    /// (docs/operations.md). Long uploads commit their batches in the
    /// background ([`start_commit`](Self::start_commit)), so that wait does
    /// not stall the stream.
    pub async fn commit(&self, staged: Vec<Staged>) -> Result<()> {
        joined(self.start_commit(staged).await)
    }

    /// [`commit`](Self::commit), started now on a blocking thread: the
    /// caller goes on (receiving the next batch) and awaits the handle
    /// before it relies on these chunks being durable.
    pub fn start_commit(&self, staged: Vec<Staged>) -> tokio::task::JoinHandle<Result<()>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.commit_blocking(staged))
    }

    fn commit_blocking(&self, mut staged: Vec<Staged>) -> Result<()> {
        if staged.iter().all(|s| s.tmp.is_none()) {
            return Ok(());
        }
        if let Err(e) = sync_filesystem(&self.inner.tmp) {
            self.discard(staged);
            return Err(e);
        }
        let mut failure = None;
        for chunk in staged.iter_mut() {
            let Some(tmp) = chunk.tmp.take() else {
                continue;
            };
            self.release(chunk.len);
            if failure.is_some() {
                let _ = fs::remove_file(&tmp);
                continue;
            }
            if let Err(e) = self.install(&tmp, &chunk.hash, chunk.len) {
                let _ = fs::remove_file(&tmp);
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            return Err(Error::Io(e));
        }
        sync_filesystem(&self.inner.chunks)
    }

    /// Move a durable temp file to its chunk's name, keeping `used` exact
    /// when another transfer installed the same chunk meanwhile.
    fn install(&self, tmp: &Path, hash: &Hash, len: u64) -> std::io::Result<()> {
        let path = self.path(hash);
        let parent = path.parent().expect("invariant: chunk paths have a parent");
        fs::create_dir_all(parent)?;
        let _no_gc = self.inner.gc.read().expect("gc lock poisoned");
        let previous = fs::metadata(&path).map(|m| m.len()).ok();
        if previous == Some(len) && touch(&path).is_ok() {
            return fs::remove_file(tmp);
        }
        fs::rename(tmp, &path)?;
        self.inner.used.fetch_add(len, Ordering::Relaxed);
        if let Some(old) = previous {
            self.inner.used.fetch_sub(old, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Count `len` staged bytes against capacity, or refuse them.
    fn reserve(&self, len: u64) -> Result<()> {
        let reserved = self.inner.reserved.fetch_add(len, Ordering::Relaxed) + len;
        let capacity = self.capacity();
        if self.used() + reserved > capacity {
            self.release(len);
            let why = if capacity < self.inner.capacity {
                " (its disk is nearly full)"
            } else {
                ""
            };
            return Err(Error::Exhausted(format!(
                "server full: {} of {capacity} bytes used{why}",
                self.used(),
            )));
        }
        Ok(())
    }

    fn release(&self, len: u64) {
        self.inner.reserved.fetch_sub(len, Ordering::Relaxed);
    }

    /// Forget staged chunks of a failed transfer: their temp files go.
    pub fn discard(&self, staged: Vec<Staged>) {
        // Each chunk's Drop removes its temp file and releases its bytes.
        drop(staged);
    }

    /// Store one chunk durably right away (stage + commit), for callers that
    /// hold a single chunk.
    pub async fn put(&self, hash: Hash, data: Bytes) -> Result<()> {
        let staged = self.stage(hash, data).await?;
        self.commit(vec![staged]).await
    }

    /// Read a chunk and check it against its hash.
    pub async fn get(&self, hash: Hash) -> Result<Bytes> {
        let path = self.path(&hash);
        tokio::task::spawn_blocking(move || {
            let data = match read_chunk_file(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(format!("chunk {hash} is not stored here")))
                }
                Err(e) => return Err(Error::Io(e)),
            };
            let actual = Hash::of(&data);
            if actual != hash {
                tracing::error!(chunk = %hash, actual = %actual, path = %path.display(), "corrupt chunk on disk");
                return Err(Error::Corrupt(format!(
                    "chunk {hash} on disk hashes to {actual}"
                )));
            }
            Ok(data)
        })
        .await
        .map_err(|e| Error::Internal(format!("chunk reader: {e}")))?
    }

    /// Move a chunk that failed verification out of the store, into
    /// `data/quarantine/`, so it is neither served nor taken for a good copy
    /// by dedup; an operator can still inspect it. Returns whether it was there.
    pub fn quarantine(&self, hash: &Hash) -> Result<bool> {
        let path = self.path(hash);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(false);
        };
        let dir = self.inner.chunks.with_file_name("quarantine");
        create_private_dir(&dir)?;
        let dest = dir.join(format!("{}.{}", hash.to_hex(), dupla::clock::unix_ms()));
        fs::rename(&path, &dest)?;
        self.inner.used.fetch_sub(meta.len(), Ordering::Relaxed);
        // Kept a grace period from now (the rename keeps the old time), so
        // an operator has time to look before collection deletes it.
        if let Err(e) = touch(&dest) {
            tracing::warn!(path = %dest.display(), error = %e, "cannot date a quarantined chunk");
        }
        Ok(true)
    }

    /// Every stored chunk's hash in one fan-out directory (`00`..`ff`), for
    /// scrubbing in bounded pieces. Names that are not hashes are skipped.
    pub fn list_prefix(&self, prefix: u8) -> Result<Vec<Hash>> {
        let dir = self.inner.chunks.join(format!("{prefix:02x}"));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io(e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| Hash::from_hex(&e.file_name().to_string_lossy()).ok())
            .collect())
    }

    /// Length of a stored chunk, if present.
    pub fn stored_len(&self, hash: &Hash) -> Option<u64> {
        fs::metadata(self.path(hash)).ok().map(|m| m.len())
    }

    /// Whether a chunk file exists (without verifying it).
    pub fn contains(&self, hash: &Hash) -> bool {
        self.path(hash).exists()
    }

    /// Whether the chunk is here (with length `len`, if given), marking it
    /// as just used when it is: garbage collection then leaves it alone for
    /// a whole grace period. Call it wherever "it is here" leads to relying
    /// on the chunk later (dedup, a resumed prefix, a repair skip).
    pub fn claim(&self, hash: &Hash, len: Option<u64>) -> bool {
        let path = self.path(hash);
        let _no_gc = self.inner.gc.read().expect("gc lock poisoned");
        let fits = fs::metadata(&path).is_ok_and(|m| len.is_none_or(|len| m.len() == len));
        fits && touch(&path).is_ok()
    }

    /// [`ChunkStore::claim`] a chunk of unknown length: its length when it
    /// is here (and now marked as just used), `None` otherwise.
    pub fn claim_len(&self, hash: &Hash) -> Option<u64> {
        let path = self.path(hash);
        let _no_gc = self.inner.gc.read().expect("gc lock poisoned");
        let len = fs::metadata(&path).ok()?.len();
        touch(&path).ok().map(|_| len)
    }

    /// [`ChunkStore::claim`] every chunk of a file about to be reported
    /// durable; `Stale` if one is gone (collected as unused meanwhile).
    pub async fn claim_all(&self, hashes: &[Hash]) -> Result<()> {
        let store = self.clone();
        let hashes = hashes.to_vec();
        tokio::task::spawn_blocking(move || {
            match hashes.iter().find(|h| !store.claim(h, None)) {
                None => Ok(()),
                Some(gone) => Err(Error::Stale(format!(
                    "chunk {gone} was collected as unused before the upload finished; back the file up again"
                ))),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("chunk claims: {e}")))?
    }

    /// Delete the chunk if it was last written or claimed before `cutoff`,
    /// under the lock that keeps claims out; returns the bytes freed.
    pub fn remove_if_unused_since(&self, hash: &Hash, cutoff: SystemTime) -> Result<u64> {
        let path = self.path(hash);
        let _gc = self.inner.gc.write().expect("gc lock poisoned");
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::Io(e)),
        };
        if meta.modified()? >= cutoff {
            return Ok(0);
        }
        fs::remove_file(&path)?;
        self.inner.used.fetch_sub(meta.len(), Ordering::Relaxed);
        Ok(meta.len())
    }

    /// Chunks in one fan-out directory last written or claimed before
    /// `cutoff`: the candidates of a garbage-collection pass.
    pub fn unused_since(&self, prefix: u8, cutoff: SystemTime) -> Result<Vec<Hash>> {
        Ok(self
            .list_prefix(prefix)?
            .into_iter()
            .filter(|h| {
                fs::metadata(self.path(h))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff)
            })
            .collect())
    }

    /// Delete quarantined chunks older than `cutoff`; returns how many.
    pub fn purge_quarantine(&self, cutoff: SystemTime) -> Result<u64> {
        let dir = self.inner.chunks.with_file_name("quarantine");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::Io(e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Set a file's modification time to now (the "last used" mark of a chunk).
fn touch(path: &Path) -> std::io::Result<()> {
    fs::File::open(path)?.set_modified(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collection_spares_what_was_claimed_since_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let data = Bytes::from_static(b"old chunk");
        let hash = Hash::of(&data);
        store.put(hash, data.clone()).await.unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(store.path(&hash))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let cutoff = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(store.unused_since(hash.0[0], cutoff).unwrap(), vec![hash]);
        // A transfer relies on it (dedup, resume, repair): it stays.
        assert!(store.claim(&hash, Some(data.len() as u64)));
        assert_eq!(store.remove_if_unused_since(&hash, cutoff).unwrap(), 0);
        assert!(store.contains(&hash));
        // Unclaimed and old: it goes, and `used` follows.
        fs::File::open(store.path(&hash))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            store.remove_if_unused_since(&hash, cutoff).unwrap(),
            data.len() as u64
        );
        assert_eq!(store.used(), 0);
        assert!(!store.claim(&hash, None), "gone: the caller must write it");
    }

    #[tokio::test]
    async fn put_get_round_trip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let data = Bytes::from_static(b"hello chunk");
        let hash = Hash::of(&data);
        store.put(hash, data.clone()).await.unwrap();
        store.put(hash, data.clone()).await.unwrap();
        assert_eq!(store.used(), data.len() as u64);
        assert_eq!(store.get(hash).await.unwrap(), data);
        let reopened = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.used(), data.len() as u64);
    }

    #[tokio::test]
    async fn chunks_and_their_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let store = ChunkStore::open(&data_dir, 1 << 20).unwrap();
        let data = Bytes::from_static(b"someone's tax return");
        let hash = Hash::of(&data);
        store.put(hash, data).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let chunk = store.path(&hash);
        assert_eq!(mode(&chunk), CHUNK_FILE_MODE, "{}", chunk.display());
        for d in [
            data_dir.clone(),
            data_dir.join("chunks"),
            data_dir.join("tmp"),
        ] {
            assert_eq!(mode(&d), DATA_DIR_MODE, "{}", d.display());
        }
    }

    #[tokio::test]
    async fn a_flipped_byte_reads_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let data = Bytes::from_static(b"precious bytes");
        let hash = Hash::of(&data);
        store.put(hash, data).await.unwrap();
        let path = store.path(&hash);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(store.get(hash).await, Err(Error::Corrupt(_))));
        let missing = Hash::of(b"never stored");
        assert!(matches!(store.get(missing).await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn a_full_store_refuses_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 4).unwrap();
        let data = Bytes::from_static(b"too big");
        let hash = Hash::of(&data);
        assert!(matches!(
            store.put(hash, data).await,
            Err(Error::Exhausted(_))
        ));
        assert!(!store.contains(&hash));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn leftover_temp_files_are_cleared_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/half-written"), b"xx").unwrap();
        ChunkStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}

#[cfg(test)]
mod staging_tests {
    use super::*;

    #[test]
    fn capacity_shrinks_to_the_room_left_on_the_disk() {
        let gib = 1u64 << 30;
        // Plenty of disk: the configured capacity.
        assert_eq!(effective_capacity(10 * gib, gib, Some(100 * gib)), 10 * gib);
        // 2 GiB free on the disk: what is held plus that, less the headroom.
        assert_eq!(
            effective_capacity(10 * gib, gib, Some(2 * gib)),
            3 * gib - DISK_HEADROOM
        );
        // A disk within the headroom takes nothing more.
        assert_eq!(
            effective_capacity(10 * gib, gib, Some(DISK_HEADROOM / 2)),
            gib
        );
        // Unknown room: the configured capacity.
        assert_eq!(effective_capacity(10 * gib, gib, None), 10 * gib);
        // The real disk under a temporary directory answers.
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_room(dir.path()).is_some_and(|room| room > 0));
    }

    #[test]
    fn a_full_disk_is_exhausted_not_a_retryable_io_error() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(write_error(full), Error::Exhausted(_)));
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(write_error(other), Error::Io(_)));
    }

    #[tokio::test]
    async fn staged_chunks_are_invisible_until_committed_and_discard_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let a = Bytes::from_static(b"chunk a");
        let b = Bytes::from_static(b"chunk b");
        let (ha, hb) = (Hash::of(&a), Hash::of(&b));
        let sa = store.stage(ha, a.clone()).await.unwrap();
        let sb = store.stage(hb, b).await.unwrap();
        assert!(!store.contains(&ha));
        store.commit(vec![sa]).await.unwrap();
        assert_eq!(store.get(ha).await.unwrap(), a);
        store.discard(vec![sb]);
        assert!(!store.contains(&hb));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.used(), 7);
    }
}
