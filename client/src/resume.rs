//! What a resumed backup needs on the client's side: a note that an upload
//! was started and not finished (so running the same backup again resumes
//! it without being asked), the file's chunk hashes, and the question to
//! the cluster of how much of them it already holds.
//!
//! The note is `ROOT/.dupla/unfinished/<blake3 of the name>.json`, written
//! before the first byte is sent and removed with the receipt. The cluster's
//! answer, not the note, decides what is sent: the note only says a resume
//! is worth the extra pass over the file.

use crate::session::{rpc_error, Client, Role};
use crate::session_store::{create_private_dir, STATE_DIR};
use bytes::BytesMut;
use dupla::chunk::{chunk_count, chunk_len};
use dupla::v1::{UploadStatusReply, UploadStatusRequest};
use dupla::{Error, Hash, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Folder under [`STATE_DIR`] with one note per unfinished upload.
pub const UNFINISHED_DIR: &str = "unfinished";

/// The note of an unfinished upload of one catalog name.
#[derive(Debug, Clone)]
pub struct Unfinished {
    path: PathBuf,
}

impl Unfinished {
    /// The note for `name` under the client root `root`.
    pub fn for_name(root: &Path, name: &str) -> Unfinished {
        let file = format!("{}.json", blake3::hash(name.as_bytes()).to_hex());
        Unfinished {
            path: root.join(STATE_DIR).join(UNFINISHED_DIR).join(file),
        }
    }

    /// Whether an earlier run left this upload unfinished.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Record that an upload of `name` (`size` bytes) is starting.
    pub fn start(&self, name: &str, size: u64) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir)?;
        }
        let note = serde_json::json!({ "name": name, "size": size });
        std::fs::write(&self.path, note.to_string())?;
        Ok(())
    }

    /// The upload finished: forget it.
    pub fn finish(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the resume note");
            }
        }
    }
}

/// blake3 of each chunk of the file at `path` (`size` bytes) and of the
/// whole file, in one pass on a blocking thread.
pub async fn hash_file(path: &Path, size: u64) -> Result<(Vec<Hash>, Hash)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::with_capacity(chunk_count(size) as usize);
        let mut buf = BytesMut::zeroed(dupla::chunk::CHUNK_SIZE);
        for index in 0..chunk_count(size) {
            let len = chunk_len(size, index)?;
            file.read_exact(&mut buf[..len]).map_err(|e| {
                Error::Aborted(format!("the file changed while it was hashed: {e}"))
            })?;
            whole.update(&buf[..len]);
            chunks.push(Hash::of(&buf[..len]));
        }
        Ok((chunks, Hash::from(whole.finalize())))
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing thread failed: {e}")))?
}

impl Client {
    /// Ask the cluster, through the first reachable of `candidates`, how
    /// many leading `chunks` of `name` it holds.
    pub async fn upload_status(
        &self,
        candidates: &[String],
        name: &str,
        size: u64,
        chunks: &[Hash],
    ) -> Result<UploadStatusReply> {
        let (entry, mut storage) = self.connect_storage(candidates).await?;
        let request = self.request(UploadStatusRequest {
            name: name.to_string(),
            size,
            chunks: chunks.iter().map(Hash::to_bytes).collect(),
        });
        let reply = storage
            .upload_status(request)
            .await
            .map_err(|status| rpc_error(Role::Server, &entry, status))?;
        Ok(reply.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_lives_from_start_to_finish() {
        let root = tempfile::tempdir().unwrap();
        let note = Unfinished::for_name(root.path(), "docs/a.bin");
        assert!(!note.exists());
        note.start("docs/a.bin", 10).unwrap();
        assert!(note.exists());
        assert!(!Unfinished::for_name(root.path(), "docs/b.bin").exists());
        note.finish();
        assert!(!note.exists());
        note.finish();
    }

    #[tokio::test]
    async fn hashing_gives_every_chunk_and_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..dupla::chunk::CHUNK_SIZE * 2 + 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let (chunks, whole) = hash_file(&path, data.len() as u64).await.unwrap();
        assert_eq!(whole, Hash::of(&data));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2], Hash::of(&data[2 * dupla::chunk::CHUNK_SIZE..]));
        assert!(hash_file(&path, data.len() as u64 + 1).await.is_err());
    }
}
