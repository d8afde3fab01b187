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
use dupla::chunk::Chunker;
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

/// The file's chunks as an upload cuts them: blake3 and length of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChunks {
    /// blake3 of each chunk, in order.
    pub chunks: Vec<Hash>,
    /// Length of each chunk.
    pub lengths: Vec<u32>,
    /// blake3 of the whole file.
    pub whole: Hash,
}

/// Cut the file at `path` (`size` bytes) with the [`Chunker`], as an upload
/// does, and hash each chunk and the whole file, in one pass on a blocking
/// thread.
pub async fn hash_file(path: &Path, size: u64) -> Result<FileChunks> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut whole = blake3::Hasher::new();
        let mut out = FileChunks::default();
        let mut total = 0u64;
        // The first `size` bytes: what the upload will send. Bytes added
        // since are the next backup's (the upload says so).
        for piece in Chunker::new(file.take(size)) {
            let data = piece?;
            total += data.len() as u64;
            whole.update(&data);
            out.chunks.push(Hash::of(&data));
            out.lengths.push(data.len() as u32);
        }
        if total != size {
            return Err(crate::upload::file_changed(format!(
                "the file shrank while it was hashed ({total} of {size} bytes)"
            )));
        }
        out.whole = Hash::from(whole.finalize());
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing thread failed: {e}")))?
}

impl Client {
    /// Ask the cluster, through the first reachable of `candidates`, how
    /// many leading `chunks` (of `lengths`) of `name` it holds.
    pub async fn upload_status(
        &self,
        candidates: &[String],
        name: &str,
        size: u64,
        chunks: &[Hash],
        lengths: &[u32],
    ) -> Result<UploadStatusReply> {
        let (entry, mut storage) = self.connect_storage(candidates).await?;
        let request = self.request(UploadStatusRequest {
            name: name.to_string(),
            size,
            chunks: chunks.iter().map(Hash::to_bytes).collect(),
            chunk_lengths: lengths.to_vec(),
        });
        let reply = storage
            .upload_status(request)
            .await
            .map_err(|status| rpc_error(Role::Server, &entry, status))?;
        Ok(reply.into_inner())
    }
}

impl Client {
    /// Where the manager would place `name` (`size` bytes) now, primary
    /// first, asked through the first reachable of `candidates`: the
    /// addresses to enter an upload at. Nothing is opened or logged.
    pub async fn placement_preview(
        &self,
        candidates: &[String],
        name: &str,
        size: u64,
    ) -> Result<Vec<String>> {
        let reply = self.upload_status(candidates, name, size, &[], &[]).await?;
        Ok(placement_addrs(&reply))
    }
}

/// The addresses of an `UploadStatus` placement, primary first.
pub fn placement_addrs(reply: &UploadStatusReply) -> Vec<String> {
    reply.placement.iter().map(|n| n.addr.clone()).collect()
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
            .map(|i| ((i * 7919) % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let hashed = hash_file(&path, data.len() as u64).await.unwrap();
        assert_eq!(hashed.whole, Hash::of(&data));
        let pieces = dupla::chunk::cut(&data);
        assert_eq!(
            hashed.chunks,
            pieces.iter().map(|p| Hash::of(p)).collect::<Vec<_>>()
        );
        assert_eq!(
            hashed.lengths,
            pieces.iter().map(|p| p.len() as u32).collect::<Vec<_>>()
        );
        assert!(hash_file(&path, data.len() as u64 + 1).await.is_err());
    }
}
