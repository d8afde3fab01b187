//! `Storage/Upload`: this server is the entry for a client's upload and
//! coordinates it. It asks the manager for a placement, runs the pipeline
//! (storing here only if it is one of the two holders), checks the whole
//! file's blake3 against the client's, and commits the file in the catalog
//! only after every holder has answered that its copy is durable.

use crate::faults::{Step, Tap};
use crate::node::StorageNode;
use crate::pipeline::{self, next_message, ChunkSource, Plan, MAX_FALLBACKS};
use crate::resume;
use dupla::chunk::MAX_HELD_CHUNKS;
use dupla::rpc::UserCredentials;
use dupla::v1::{
    upload_request, AbortRequest, Chunk, CommitRequest, FileEntry, Node as WireNode, PlaceRequest,
    UploadBegin, UploadReceipt, UploadRequest,
};
use dupla::{name, Error, Hash, Result};
use std::pin::Pin;
use std::sync::Arc;

/// An upload's messages: a gRPC request stream, or the HTTP API's staged
/// file read in this process (no TLS round trip to ourselves).
pub type UploadStream =
    Pin<Box<dyn futures::Stream<Item = std::result::Result<UploadRequest, tonic::Status>> + Send>>;

/// Handle one upload from first message to receipt, for the user whose
/// credentials the manager will check (the file becomes theirs).
pub async fn handle(
    node: Arc<StorageNode>,
    user: UserCredentials,
    mut stream: UploadStream,
) -> Result<UploadReceipt> {
    let _transfer = node.active.enter();
    let begin = match next_message(&mut stream, node.idle_timeout).await? {
        Some(UploadRequest {
            msg: Some(upload_request::Msg::Begin(begin)),
        }) => begin,
        _ => {
            return Err(Error::InvalidInput(
                "an upload starts with UploadBegin".into(),
            ))
        }
    };
    name::validate(&begin.name)?;
    let prefix = resume::parse_hashes(&begin.resume_chunks, resume::MAX_RESUME_CHUNKS)?;
    resume::parse_hashes(&begin.held_chunks, MAX_HELD_CHUNKS)?;
    if prefix.len() as u64 > begin.size {
        return Err(Error::InvalidInput(format!(
            "{} resumed chunks for a {}-byte file",
            prefix.len(),
            begin.size
        )));
    }
    let mut place_request = node.secret.request(PlaceRequest {
        name: begin.name.clone(),
        size: begin.size,
        entry_id: node.id.clone(),
        preview: false,
        takeover: begin.resume,
        resume_chunks: begin.resume_chunks.clone(),
        held_chunks: begin.held_chunks.clone(),
    });
    user.attach(&mut place_request);
    // The manager refuses (FAILED_PRECONDITION) a resume, or chunks sent by
    // reference, claiming chunks the caller may not claim, before it opens
    // anything.
    let place = node.manager().place(place_request).await?.into_inner();
    let mut guard = AbortGuard {
        node: node.clone(),
        upload_id: Some(place.upload_id.clone()),
    };
    let result = async {
        resume::ensure_prefix(&node, &place, &begin.name, begin.size, &prefix).await?;
        // The skipped chunks never come through here: read them back from a
        // holder so the whole-file hash still covers every byte.
        let (whole, prefix_lengths) =
            resume::hash_prefix(&node, &place, &begin.name, &prefix).await?;
        store_and_commit(&node, &begin, place, prefix, prefix_lengths, whole, stream).await
    }
    .await;
    match &result {
        Ok(_) => guard.upload_id = None,
        Err(e) => guard.abort(&e.to_string()).await,
    }
    result
}

async fn store_and_commit(
    node: &StorageNode,
    begin: &UploadBegin,
    place: dupla::v1::PlaceReply,
    prefix: Vec<Hash>,
    prefix_lengths: Vec<u32>,
    whole: blake3::Hasher,
    stream: UploadStream,
) -> Result<UploadReceipt> {
    let placed = place
        .primary
        .ok_or_else(|| Error::Internal("placement without a primary".into()))?;
    let (primary, replica) = entry_as_primary(&node.id, placed, place.replica);
    let (store_locally, chain) = pipeline_route(&node.id, primary.clone(), replica);
    let fallbacks = place
        .candidates
        .iter()
        .filter(|c| {
            c.id != primary.id
                && !(store_locally && c.id == node.id)
                && !chain.iter().any(|n| n.id == c.id)
        })
        .take(MAX_FALLBACKS)
        .cloned()
        .collect();
    let plan = Plan {
        upload_id: place.upload_id.clone(),
        name: begin.name.clone(),
        size: begin.size,
        store_locally,
        chain,
        fallbacks,
        prefix: prefix.clone(),
        prefix_lengths: prefix_lengths.clone(),
    };
    let mut source = UploadSource {
        stream,
        whole,
        chunks: prefix,
        lengths: prefix_lengths,
        by_reference: false,
        declared: None,
        tap: node.faults.tap(Step::ClientStream),
        idle: node.idle_timeout,
        received: 0,
    };
    let ran = pipeline::run(node, plan, &mut source).await;
    crate::metrics::Traffic::add(&node.traffic.bytes_in, source.received);
    let mut holders = ran?;
    let declared = source
        .declared
        .ok_or_else(|| Error::Internal("upload finished without its end marker".into()))?;
    // Chunks sent by reference never pass through here: their holders
    // proved them (each claimed its copy by hash and length), and restores
    // check the whole-file hash end to end, so the client's hash is taken.
    let actual = if source.by_reference {
        declared
    } else {
        Hash::from(source.whole.finalize())
    };
    if actual != declared {
        return Err(Error::Corrupt(format!(
            "{}: the file hashes to {actual} but the client declared {declared} (did it change while being read?); nothing was committed",
            begin.name
        )));
    }
    // Primary first: the entry when it holds a copy, else as placed.
    holders.sort_by_key(|h| if h.id == primary.id { 0 } else { 1 });
    let copies = holders.len() as u32;
    let entry = FileEntry {
        name: begin.name.clone(),
        size: begin.size,
        blake3: actual.to_bytes(),
        chunks: source.chunks.iter().map(Hash::to_bytes).collect(),
        chunk_size: 0,
        chunk_lengths: source.lengths,
        holders,
        committed_unix_ms: 0,
        version: 0,
        lost: false,
    };
    node.faults.hit(Step::BeforeCommit).await?;
    let committed = node
        .manager()
        .commit(node.secret.request(CommitRequest {
            upload_id: place.upload_id.clone(),
            entry: Some(entry),
        }))
        .await?
        .into_inner();
    crate::metrics::Traffic::add(&node.traffic.uploads, 1);
    tracing::info!(upload = %place.upload_id, name = %begin.name, size = begin.size, copies, "upload committed");
    Ok(UploadReceipt {
        entry: committed.entry,
        copies,
        entry_addr: node.addr.clone(),
    })
}

/// The placement's two holders as this entry uses them: when the entry is
/// the placed replica, it becomes the primary (and the placed primary its
/// replica). The server that stores the stream first is the one that sends
/// the replica, and the catalog names it primary: same two holders, one hop
/// less than going through the placed primary and back.
fn entry_as_primary(
    me: &str,
    primary: WireNode,
    replica: Option<WireNode>,
) -> (WireNode, Option<WireNode>) {
    match replica {
        Some(replica) if replica.id == me => (replica, Some(primary)),
        replica => (primary, replica),
    }
}

/// Where this entry's pipeline goes: if this server is the primary it
/// stores and passes the stream to the replica; otherwise it only forwards
/// to the primary, which passes it on. Without a replica (a degraded write)
/// the chain is just the primary.
fn pipeline_route(me: &str, primary: WireNode, replica: Option<WireNode>) -> (bool, Vec<WireNode>) {
    if me == primary.id {
        return (true, replica.into_iter().collect());
    }
    (false, std::iter::once(primary).chain(replica).collect())
}

/// The client's side of an upload: chunks until `UploadEnd`, hashing the
/// whole file on the way.
struct UploadSource {
    stream: UploadStream,
    whole: blake3::Hasher,
    chunks: Vec<Hash>,
    /// Each chunk's length (the pipeline checks them).
    lengths: Vec<u32>,
    /// Some chunk came by reference: the whole-file hash cannot be computed.
    by_reference: bool,
    declared: Option<Hash>,
    tap: Tap,
    idle: std::time::Duration,
    /// File bytes that came through the stream (for `/metrics`).
    received: u64,
}

#[tonic::async_trait]
impl ChunkSource for UploadSource {
    async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        match next_message(&mut self.stream, self.idle).await? {
            Some(UploadRequest {
                msg: Some(upload_request::Msg::Chunk(chunk)),
            }) => {
                self.tap.pass(chunk.data.len()).await?;
                if chunk.held_length != 0 {
                    self.by_reference = true;
                    self.lengths.push(chunk.held_length);
                } else {
                    self.whole.update(&chunk.data);
                    self.received += chunk.data.len() as u64;
                    self.lengths.push(chunk.data.len() as u32);
                }
                self.chunks.push(Hash::from_slice(&chunk.hash, "chunk hash")?);
                Ok(Some(chunk))
            }
            Some(UploadRequest {
                msg: Some(upload_request::Msg::End(end)),
            }) => {
                self.declared = Some(Hash::from_slice(&end.blake3, "file blake3")?);
                Ok(None)
            }
            Some(_) => Err(Error::InvalidInput(
                "expected a chunk or UploadEnd".into(),
            )),
            None => Err(Error::Aborted(
                "the client stopped sending before the end of the file; nothing was committed, back the file up again".into(),
            )),
        }
    }
}

/// Tells the manager an upload is abandoned, even when the handler is
/// dropped because the client went away (tonic drops the future).
struct AbortGuard {
    node: Arc<StorageNode>,
    upload_id: Option<String>,
}

impl AbortGuard {
    /// Send the Abort from a task of its own and wait for it: the handler
    /// may be cancelled at this await (its client is gone), and an Abort
    /// sent from the handler itself would be lost with it, leaving the name
    /// held until the lease ends. Waiting means the error reaches the client
    /// only once the name is free again.
    async fn abort(&mut self, reason: &str) {
        if let Some(upload_id) = self.upload_id.take() {
            let node = self.node.clone();
            let reason = reason.to_string();
            let sent = tokio::spawn(async move { send_abort(&node, upload_id, reason).await });
            let _ = sent.await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let (Some(upload_id), Ok(runtime)) =
            (self.upload_id.take(), tokio::runtime::Handle::try_current())
        {
            let node = self.node.clone();
            runtime.spawn(async move {
                send_abort(&node, upload_id, "the client went away".into()).await
            });
        }
    }
}

async fn send_abort(node: &StorageNode, upload_id: String, reason: String) {
    if node.faults.is_killed() {
        return; // a crashed entry tells nobody
    }
    let request = node.secret.request(AbortRequest {
        upload_id: upload_id.clone(),
        reason,
    });
    if let Err(status) = node.manager().abort(request).await {
        tracing::warn!(upload = %upload_id, error = %status.message(), "could not abort upload at the manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> WireNode {
        WireNode {
            id: id.into(),
            addr: format!("{id}:1"),
        }
    }

    fn ids(chain: &[WireNode]) -> Vec<&str> {
        chain.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn routes_store_where_the_entry_is_a_holder_and_forward_otherwise() {
        let (local, chain) = pipeline_route("p", node("p"), Some(node("r")));
        assert!(local);
        assert_eq!(ids(&chain), ["r"]);
        let (local, chain) = pipeline_route("e", node("p"), Some(node("r")));
        assert!(!local);
        assert_eq!(ids(&chain), ["p", "r"]);
    }

    #[test]
    fn an_entry_that_holds_a_copy_is_the_primary_and_sends_the_replica() {
        // The entry is the placed replica: it becomes the primary.
        let (primary, replica) = entry_as_primary("r", node("p"), Some(node("r")));
        assert_eq!(primary.id, "r");
        assert_eq!(replica.as_ref().map(|n| n.id.as_str()), Some("p"));
        let (local, chain) = pipeline_route("r", primary, replica);
        assert!(local);
        assert_eq!(ids(&chain), ["p"]);
        // The entry is the placed primary, or holds nothing: as placed.
        for me in ["p", "e"] {
            let (primary, replica) = entry_as_primary(me, node("p"), Some(node("r")));
            assert_eq!(primary.id, "p");
            assert_eq!(replica.map(|n| n.id), Some("r".to_string()));
        }
        let (primary, replica) = entry_as_primary("e", node("p"), None);
        assert_eq!(primary.id, "p");
        assert!(replica.is_none());
    }

    #[test]
    fn a_degraded_write_has_one_holder() {
        let (local, chain) = pipeline_route("p", node("p"), None);
        assert!(local);
        assert!(chain.is_empty());
        let (local, chain) = pipeline_route("e", node("p"), None);
        assert!(!local);
        assert_eq!(ids(&chain), ["p"]);
    }
}
