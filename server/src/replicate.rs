//! `Storage/Replicate`: this server receives a new copy of a file that lost
//! one (called by the manager's repair worker). It reads every chunk from
//! the surviving holders — verified, with holder failover, as a download
//! does — stages them, makes them durable, and only then answers, so the
//! manager records this server as a holder of bytes that are really here.
//! The copy is paced to the server's repair budget.

use crate::chunk_store::Batch;
use crate::download::HolderReader;
use crate::node::StorageNode;
use crate::pacer::Pacer;
use dupla::chunk::REPLICATE_WINDOW_CHUNKS;
use dupla::v1::{ReplicateReply, ReplicateRequest};
use dupla::{name, Error, Hash, Result};
use std::sync::Arc;

/// Copy the file described by `request` here.
pub async fn handle(node: Arc<StorageNode>, request: ReplicateRequest) -> Result<ReplicateReply> {
    let _transfer = node.active.enter();
    name::validate(&request.name)?;
    let hashes = request
        .chunks
        .iter()
        .map(|h| Hash::from_slice(h, "chunk hash"))
        .collect::<Result<Vec<_>>>()?;
    let first = request.first_chunk;
    let listed_end = first.checked_add(hashes.len() as u64);
    if hashes.len() > REPLICATE_WINDOW_CHUNKS || listed_end.is_none_or(|end| end > request.size) {
        return Err(Error::InvalidInput(format!(
            "chunks {first}.. ({} listed, at most {REPLICATE_WINDOW_CHUNKS}) do not fit a {}-byte file",
            hashes.len(),
            request.size
        )));
    }
    if request.sources.is_empty() {
        return Err(Error::InvalidInput(
            "a repair needs at least one source".into(),
        ));
    }
    let mut reader = HolderReader::new(
        node.clone(),
        request.name.clone(),
        request.sources,
        hashes.clone(),
    );
    let mut batch = Batch::new(node.store.clone());
    let mut pacer = Pacer::new(node.repair_rate);
    let mut copied = 0u64;
    // Chunks are verified by their hash only: with content-defined chunks
    // their lengths do not follow from the file's size (and a hash fixes
    // the bytes, so it fixes the length too).
    for (index, hash) in hashes.iter().enumerate() {
        if node.store.claim(hash, None) {
            continue;
        }
        let chunk = reader.read(index as u64).await?;
        let len = chunk.data.len() as u64;
        batch.push(node.store.stage(*hash, chunk.data).await?);
        copied += len;
        pacer.pace(len).await;
    }
    node.store.commit(batch.take()).await?;
    tracing::info!(name = %request.name, copied, "repair copy stored");
    Ok(ReplicateReply {
        copied_bytes: copied,
    })
}
