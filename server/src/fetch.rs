//! `Storage/FetchChunks`: hand stored chunks to a peer (a server serving a
//! download). Every chunk is verified before it leaves; a missing or
//! corrupt one ends the stream with NOT_FOUND or DATA_LOSS so the peer can
//! switch to the other holder.

use crate::node::StorageNode;
use dupla::v1::{Chunk, FetchChunksRequest};
use dupla::{Error, Hash, Result};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Most chunks one request may ask for (64 GiB of data).
pub const MAX_FETCH_CHUNKS: usize = 65_536;

/// Chunks read ahead of the peer.
const FETCH_DEPTH_CHUNKS: usize = 4;

/// The response stream of FetchChunks.
pub type FetchStream = ReceiverStream<Result<Chunk, Status>>;

/// Start streaming the requested chunks.
pub fn open(node: Arc<StorageNode>, request: FetchChunksRequest) -> Result<FetchStream> {
    if request.hashes.len() > MAX_FETCH_CHUNKS {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_FETCH_CHUNKS} chunks per request"
        )));
    }
    let hashes = request
        .hashes
        .iter()
        .map(|h| Hash::from_slice(h, "chunk hash"))
        .collect::<Result<Vec<_>>>()?;
    let (tx, rx) = mpsc::channel(FETCH_DEPTH_CHUNKS);
    tokio::spawn(async move {
        let _transfer = node.active.enter();
        for (index, hash) in hashes.into_iter().enumerate() {
            let read = node.store.get(hash).await;
            // Missing is as bad as corrupt when this server is a listed
            // holder: the manager drops it from those files and repairs.
            if matches!(read, Err(Error::Corrupt(_) | Error::NotFound(_))) {
                node.on_corrupt(hash);
            }
            let message = read.map(|data| Chunk {
                index: index as u64,
                data,
                hash: hash.to_bytes(),
                held_length: 0,
            });
            let failed = message.is_err();
            if tx.send(message.map_err(Status::from)).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
