//! Resuming an interrupted upload without sending acknowledged bytes again.
//!
//! Chunks are content-addressed and made durable in batches while a stream
//! goes on, so an upload cut off midway leaves its first chunks on its
//! holders. A client that resumes hashes its file, asks
//! [`status`] how many leading chunks some live server holds, and streams
//! only the rest, naming the skipped chunks in `UploadBegin.resume_chunks`.
//! Both [`status`] (before the client sends anything) and the upload itself
//! (before its stream goes on) have the two holders of the current
//! placement copy any of those chunks they lack from a server that has
//! them (placement may have moved: the old primary may be dead). Doing it
//! in `status` first means a holder that cannot be reached fails the status
//! call, and the client waits and asks again without having sent a byte.

use crate::download::HolderReader;
use crate::node::StorageNode;
use dupla::chunk::{ChunkLayout, REPLICATE_WINDOW_CHUNKS};
use dupla::rpc::UserCredentials;
use dupla::v1::{
    HasChunksRequest, Node as WireNode, PlaceReply, PlaceRequest, ReplicateRequest,
    UploadStatusReply, UploadStatusRequest,
};
use dupla::{name, Error, Hash, Result};
use futures::future::join_all;
use std::sync::Arc;

/// Most chunk hashes an `UploadStatus` may carry (about 29 GiB of file);
/// 30,000 hashes of 32 bytes stay under the 1 MiB request limit.
pub const MAX_RESUME_CHUNKS: usize = 30_000;

/// Servers of the placement order asked what they hold: the new holders
/// and the few after them (where an earlier placement may have put chunks).
const SERVERS_ASKED: usize = 4;

/// `Storage/UploadStatus`: how much of the file the cluster holds.
pub async fn status(
    node: &Arc<StorageNode>,
    user: &UserCredentials,
    request: UploadStatusRequest,
) -> Result<UploadStatusReply> {
    name::validate(&request.name)?;
    let hashes = parse_hashes(&request.chunks, MAX_RESUME_CHUNKS)?;
    if hashes.is_empty() {
        // Only the placement is asked (a client choosing its entry).
        let (placement, _) = preview(node, user, &request, &hashes).await?;
        return Ok(UploadStatusReply {
            placement,
            ..Default::default()
        });
    }
    // Content-defined chunks come with their lengths; none: the fixed layout.
    let layout = if request.chunk_lengths.is_empty() {
        ChunkLayout::fixed(request.size)
    } else {
        ChunkLayout::from_lengths(request.size, &request.chunk_lengths)?
    };
    if hashes.len() as u64 != layout.count() {
        return Err(Error::InvalidInput(format!(
            "{} chunk hashes for a {}-byte file (expected {})",
            hashes.len(),
            request.size,
            layout.count()
        )));
    }
    let (order, claimable) = preview(node, user, &request, &hashes).await?;
    let asked: Vec<&WireNode> = order.iter().take(SERVERS_ASKED).collect();
    let counts = join_all(asked.iter().map(|server| leading_on(node, server, &hashes))).await;
    // Only what the caller may claim counts (a chunk hash is not proof of
    // holding another user's bytes).
    let best = counts.iter().copied().max().unwrap_or(0).min(claimable);
    let holders = asked
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n >= best && best > 0)
        .map(|(server, _)| (*server).clone())
        .collect();
    let targets: Vec<WireNode> = order.iter().take(2).cloned().collect();
    let prefix = &hashes[..best as usize];
    copy_prefix_to(node, &targets, &order, &request.name, request.size, prefix).await?;
    Ok(UploadStatusReply {
        held_chunks: best,
        held_bytes: layout.prefix_bytes(best),
        holders,
        placement: order,
    })
}

/// `Storage/HasChunks` on this server: how many leading `hashes` are stored.
pub fn leading_here(node: &StorageNode, hashes: &[Hash]) -> u64 {
    hashes.iter().take_while(|h| node.store.contains(h)).count() as u64
}

/// Make sure every node the upload will store on (primary and replica)
/// holds the resumed `prefix`, copying from the other live servers.
/// `Stale` when no server has some chunk any more: the client starts over.
pub async fn ensure_prefix(
    node: &StorageNode,
    place: &PlaceReply,
    name: &str,
    size: u64,
    prefix: &[Hash],
) -> Result<()> {
    let targets: Vec<WireNode> = place
        .primary
        .iter()
        .chain(place.replica.iter())
        .cloned()
        .collect();
    copy_prefix_to(node, &targets, &place.candidates, name, size, prefix).await
}

/// Have each of `targets` hold `prefix`, copying what it lacks from the
/// other `servers`.
async fn copy_prefix_to(
    node: &StorageNode,
    targets: &[WireNode],
    servers: &[WireNode],
    name: &str,
    size: u64,
    prefix: &[Hash],
) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let copies = targets.iter().map(|target| {
        let sources: Vec<WireNode> = servers
            .iter()
            .filter(|c| c.id != target.id)
            .cloned()
            .collect();
        copy_prefix(node, target, sources, name, size, prefix)
    });
    for result in join_all(copies).await {
        result?;
    }
    Ok(())
}

async fn copy_prefix(
    node: &StorageNode,
    target: &WireNode,
    sources: Vec<WireNode>,
    name: &str,
    size: u64,
    prefix: &[Hash],
) -> Result<()> {
    let mut copied = 0;
    for (window, chunks) in prefix.chunks(REPLICATE_WINDOW_CHUNKS).enumerate() {
        let request = node.secret.request(ReplicateRequest {
            name: name.to_string(),
            chunks: chunks.iter().map(Hash::to_bytes).collect(),
            size,
            sources: sources.clone(),
            first_chunk: (window * REPLICATE_WINDOW_CHUNKS) as u64,
        });
        let reply = node
            .peer(&target.addr)?
            .replicate(request)
            .await
            .map_err(|status| match Error::from_status(status) {
                Error::NotFound(m) | Error::Corrupt(m) | Error::InvalidInput(m) => Error::Stale(format!(
                    "{name}: the chunks of the interrupted upload are gone ({m}); back the file up from the start"
                )),
                other => other.map_message(|m| {
                    format!("server {} (a holder of the file now) cannot take its held part: {m}", target.addr)
                }),
            })?
            .into_inner();
        copied += reply.copied_bytes;
    }
    if copied > 0 {
        tracing::info!(%name, target = %target.addr, copied,
            "resumed upload: copied the held part to a new holder");
    }
    Ok(())
}

/// The whole-file hash state over a resumed upload's `prefix`, read back
/// (each chunk verified) from the holders that [`ensure_prefix`] filled,
/// and the prefix chunks' lengths.
pub async fn hash_prefix(
    node: &Arc<StorageNode>,
    place: &PlaceReply,
    name: &str,
    prefix: &[Hash],
) -> Result<(blake3::Hasher, Vec<u32>)> {
    let mut whole = blake3::Hasher::new();
    let mut lengths = Vec::with_capacity(prefix.len());
    if prefix.is_empty() {
        return Ok((whole, lengths));
    }
    let holders: Vec<WireNode> = place
        .primary
        .iter()
        .chain(place.replica.iter())
        .cloned()
        .collect();
    let mut reader = HolderReader::new(node.clone(), name.to_string(), holders, prefix.to_vec());
    for index in 0..prefix.len() as u64 {
        let data = reader.read(index).await?.data;
        whole.update(&data);
        lengths.push(data.len() as u32);
    }
    Ok((whole, lengths))
}

/// Where the manager would place the user's file now (nothing is opened),
/// and how many leading `chunks` the user may claim.
async fn preview(
    node: &StorageNode,
    user: &UserCredentials,
    file: &UploadStatusRequest,
    chunks: &[Hash],
) -> Result<(Vec<WireNode>, u64)> {
    let mut request = node.secret.request(PlaceRequest {
        name: file.name.clone(),
        size: file.size,
        entry_id: node.id.clone(),
        preview: true,
        takeover: false,
        resume_chunks: chunks.iter().map(Hash::to_bytes).collect(),
        held_chunks: Vec::new(),
    });
    user.attach(&mut request);
    let reply = node.manager().place(request).await?.into_inner();
    Ok((reply.candidates, reply.resumable_chunks))
}

/// How many leading `hashes` `server` holds; 0 when it cannot say.
async fn leading_on(node: &Arc<StorageNode>, server: &WireNode, hashes: &[Hash]) -> u64 {
    if server.id == node.id {
        return leading_here(node, hashes);
    }
    let ask = async {
        let request = node.secret.request(HasChunksRequest {
            hashes: hashes.iter().map(Hash::to_bytes).collect(),
        });
        let reply = node.peer(&server.addr)?.has_chunks(request).await?;
        Ok::<_, Error>(reply.into_inner().leading)
    };
    match tokio::time::timeout(crate::download::HOLDER_TIMEOUT, ask).await {
        Ok(Ok(n)) => n.min(hashes.len() as u64),
        Ok(Err(e)) => {
            tracing::info!(server = %server.addr, error = %e, "cannot tell what it holds");
            0
        }
        Err(_) => 0,
    }
}

/// Chunk hashes from the wire, at most `max`.
pub fn parse_hashes(raw: &[bytes::Bytes], max: usize) -> Result<Vec<Hash>> {
    if raw.len() > max {
        return Err(Error::InvalidInput(format!(
            "{} chunk hashes in one request; at most {max}",
            raw.len()
        )));
    }
    raw.iter()
        .map(|h| Hash::from_slice(h, "chunk hash"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_hashes_are_refused() {
        let raw = vec![Hash::of(b"x").to_bytes(); 3];
        assert_eq!(parse_hashes(&raw, 3).unwrap().len(), 3);
        assert!(matches!(parse_hashes(&raw, 2), Err(Error::InvalidInput(_))));
    }
}
