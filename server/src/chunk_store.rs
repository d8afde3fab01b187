//! The chunk store: chunks on disk, content-addressed by blake3.
//!
//! `data/chunks/ab/abcdef…` holds the chunk whose hash starts `abcdef…`.
//! A chunk is written to `data/tmp/`, fsynced, then renamed into place, so a
//! crash never leaves a partly written file under its final name; the
//! directories are fsynced before an upload is acknowledged. Every read
//! re-hashes the bytes, so a chunk that rotted on disk is reported as
//! corrupt instead of being served. Content addressing gives dedup (the same
//! bytes are stored once) and makes resume a question of "which hashes do
//! you have".

use bytes::Bytes;
use dupla::{Error, Hash, Result};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

impl ChunkStore {
    /// Open the store under `data`, removing leftovers of interrupted writes
    /// and counting the bytes in use.
    pub fn open(data: &Path, capacity: u64) -> Result<Self> {
        let chunks = data.join("chunks");
        let tmp = data.join("tmp");
        fs::create_dir_all(&chunks)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
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
            }),
        })
    }

    /// Bytes this store may hold.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
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

    /// Store a chunk durably (temp file, fsync, rename). The caller has
    /// verified `data` against `hash`. A chunk already present with the right
    /// length is kept as is (dedup). The new directory entry becomes durable
    /// with [`ChunkStore::sync_dirs`].
    ///
    /// The write starts at once on the blocking pool, before the returned
    /// future is polled, so a caller can queue several and keep receiving.
    pub fn put(&self, hash: Hash, data: Bytes) -> impl std::future::Future<Output = Result<()>> {
        let store = self.clone();
        let write = tokio::task::spawn_blocking(move || store.put_blocking(&hash, &data));
        async move {
            write
                .await
                .map_err(|e| Error::Internal(format!("chunk writer: {e}")))?
        }
    }

    fn put_blocking(&self, hash: &Hash, data: &[u8]) -> Result<()> {
        let path = self.path(hash);
        if fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64) {
            return Ok(());
        }
        let len = data.len() as u64;
        if self.used() + len > self.capacity() {
            return Err(Error::Exhausted(format!(
                "server full: {} of {} bytes used",
                self.used(),
                self.capacity()
            )));
        }
        let tmp = self
            .inner
            .tmp
            .join(format!("{}.{:016x}", hash.to_hex(), rand::random::<u64>()));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(data)?;
            file.sync_data()?;
            let parent = path.parent().expect("invariant: chunk paths have a parent");
            fs::create_dir_all(parent)?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io(e));
        }
        self.inner.used.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// fsync the directories holding `hashes`, making their renames durable.
    pub async fn sync_dirs(&self, hashes: impl IntoIterator<Item = Hash>) -> Result<()> {
        let dirs: BTreeSet<PathBuf> = hashes
            .into_iter()
            .filter_map(|h| self.path(&h).parent().map(Path::to_path_buf))
            .collect();
        let root = self.inner.chunks.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for dir in dirs.iter().chain(std::iter::once(&root)) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("directory sync: {e}")))?
    }

    /// Read a chunk and check it against its hash.
    pub async fn get(&self, hash: Hash) -> Result<Bytes> {
        let path = self.path(&hash);
        tokio::task::spawn_blocking(move || {
            let data = match fs::read(&path) {
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
            Ok(Bytes::from(data))
        })
        .await
        .map_err(|e| Error::Internal(format!("chunk reader: {e}")))?
    }

    /// Whether a chunk file exists (without verifying it).
    pub fn contains(&self, hash: &Hash) -> bool {
        self.path(hash).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_round_trip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let data = Bytes::from_static(b"hello chunk");
        let hash = Hash::of(&data);
        store.put(hash, data.clone()).await.unwrap();
        store.put(hash, data.clone()).await.unwrap();
        store.sync_dirs([hash]).await.unwrap();
        assert_eq!(store.used(), data.len() as u64);
        assert_eq!(store.get(hash).await.unwrap(), data);
        let reopened = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.used(), data.len() as u64);
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
