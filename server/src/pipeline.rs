//! The write pipeline: one node's part of storing a stream of chunks.
//!
//! A node receives chunks from upstream (the client, or the previous node),
//! verifies each one's blake3, passes it on to the next node of the chain
//! while writing its own copy, and answers only when its copy is durable
//! and every node after it has answered the same. Chunks are `Bytes`, so
//! forwarding and writing share one buffer; bounded queues on both sides
//! hold memory to a few chunks per upload whatever the file size.
//!
//! ```text
//! client ──▶ entry ──▶ primary ──▶ replica
//!            (forwards  (writes +   (writes)
//!             only)      forwards)
//! ```

use crate::chunk_store::{Batch, Staged};
use crate::faults::{FaultPlan, Step, Tap};
use crate::node::StorageNode;
use dupla::chunk::verify_streamed;
use dupla::v1::manager_client::ManagerClient;
use dupla::v1::{store_request, Chunk, Node as WireNode, StoreBegin, StoreEnd, StoreRequest};
use dupla::{Error, Hash, Result};
use futures::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Chunks queued towards the next node: enough to keep the link busy while
/// this node verifies the next chunk, few enough to bound memory (8 MiB).
pub const PIPELINE_DEPTH_CHUNKS: usize = 8;

/// Local chunk writes in flight: overlaps disk writes with receiving.
pub const WRITE_DEPTH_CHUNKS: usize = 4;

/// Received chunks are made durable in batches of this many while the
/// stream goes on (not only at its end), so an interrupted upload leaves
/// most of what was sent on disk for a resume to build on: at most this
/// many chunks (plus those in flight) are sent again.
pub const DURABLE_BATCH_CHUNKS: usize = 16;

/// A sender silent this long is presumed gone and the transfer abandoned,
/// unless the server's `idle_timeout_secs` says otherwise.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest chain a Store may ask to pass on (entry → primary → replica).
pub const MAX_CHAIN: usize = 3;

/// Most substitutes a Store may carry (a bound on a peer's request).
pub const MAX_FALLBACKS: usize = 64;

/// Where a pipeline node gets its chunks from.
#[tonic::async_trait]
pub trait ChunkSource: Send {
    /// The next chunk; `None` after the stream's end marker. A stream that
    /// stops without its end marker is an error, never a short file.
    async fn next_chunk(&mut self) -> Result<Option<Chunk>>;

    /// Whether the stream comes from another server (a `Store` call, which
    /// this node answers with a receipt) rather than from a client.
    fn is_from_peer(&self) -> bool {
        false
    }
}

/// What this node is asked to do with a stream.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Upload id, for logs.
    pub upload_id: String,
    /// File name, for logs.
    pub name: String,
    /// Declared size: the stream must carry exactly this many bytes.
    pub size: u64,
    /// Keep a copy here.
    pub store_locally: bool,
    /// The nodes after this one.
    pub chain: Vec<WireNode>,
    /// Substitutes for the chain's last node (the rest of the placement order).
    pub fallbacks: Vec<WireNode>,
    /// A resumed upload: the file's first chunks, already stored on every
    /// node of the chain; the stream starts after them.
    pub prefix: Vec<Hash>,
    /// The lengths of the `prefix` chunks (read from this node's store, or
    /// by the entry from the holders).
    pub prefix_lengths: Vec<u32>,
}

impl Plan {
    /// Whether this hop can replace its downstream node if it fails: it
    /// keeps every chunk itself, and that node is the last of the chain
    /// (the replica). A primary that fails takes its copy of the stream
    /// with it; that is the client's to retry.
    fn can_substitute(&self) -> bool {
        self.store_locally && self.chain.len() == 1
    }
}

/// Run this node's part of the pipeline. Returns the nodes that now hold
/// every chunk durably: this one (if it stores) followed by the rest of the
/// chain.
pub async fn run(
    node: &StorageNode,
    plan: Plan,
    source: &mut dyn ChunkSource,
) -> Result<Vec<WireNode>> {
    let mut downstream = match plan.chain.split_first() {
        Some((next, rest)) => Some(Downstream::open(node, next, &plan, rest, &plan.fallbacks)?),
        None => None,
    };
    let mut staged = Batch::new(node.store.clone());
    let mut committing = None;
    let mut writes: Writes = FuturesOrdered::new();
    let mut report = StoredReport {
        node: ReportTo::of(node),
        upload_id: plan.upload_id.clone(),
        hashes: plan.prefix.clone(),
        prefix: plan.prefix.len(),
        settled: false,
    };
    let mut lengths = plan.prefix_lengths.clone();
    let reporter = report.node.clone();
    let received = receive(
        &node.faults,
        &reporter,
        &plan,
        source,
        &mut downstream,
        &mut writes,
        &mut staged,
        &mut committing,
        &mut report.hashes,
        &mut lengths,
    )
    .await;
    let from_peer = source.is_from_peer();
    let finished = finish(
        node,
        &plan,
        received,
        downstream,
        writes,
        staged,
        committing,
        &report.hashes,
        from_peer,
    )
    .await;
    if finished.is_err() {
        report.send().await;
    }
    report.settled = true;
    finished
}

/// What a report of stored chunks needs of the node, owned, so that it can
/// be sent from a task of its own.
#[derive(Clone)]
struct ReportTo {
    manager: ManagerClient<Channel>,
    secret: dupla::rpc::Secret,
    faults: FaultPlan,
}

impl ReportTo {
    fn of(node: &StorageNode) -> ReportTo {
        ReportTo {
            manager: node.manager(),
            secret: node.secret.clone(),
            faults: node.faults.clone(),
        }
    }
}

/// The chunks this hop received for an upload, reported to the manager if
/// the upload fails here: inline when this hop answers with the error, or
/// from a task of its own when the call is cancelled (its peer vanished, so
/// the handler is dropped mid-await and could not send it itself).
struct StoredReport {
    node: ReportTo,
    upload_id: String,
    hashes: Vec<Hash>,
    /// Leading `hashes` of a resumed prefix: claimed already, not reported.
    prefix: usize,
    settled: bool,
}

impl StoredReport {
    async fn send(&mut self) {
        self.settled = true;
        if self.hashes.len() > self.prefix {
            report_stored(&self.node, &self.upload_id, &self.hashes[self.prefix..]).await;
        }
    }
}

impl Drop for StoredReport {
    fn drop(&mut self) {
        if self.settled || self.hashes.len() <= self.prefix {
            return;
        }
        let (node, upload_id) = (self.node.clone(), std::mem::take(&mut self.upload_id));
        let chunks = self.hashes.split_off(self.prefix);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { report_stored(&node, &upload_id, &chunks).await });
        }
    }
}

/// Tell the manager which chunks this failed upload brought here, each
/// verified against its hash: its owner sent them, so they may claim them
/// when they resume (and nobody else may). Waited for, so the entry's own
/// report lands before the client hears of the failure; best effort (a
/// lost report only means those chunks are sent again).
async fn report_stored(node: &ReportTo, upload_id: &str, chunks: &[Hash]) {
    if node.faults.is_killed() {
        return;
    }
    let request = node.secret.request(dupla::v1::ReportStoredRequest {
        upload_id: upload_id.to_string(),
        chunks: chunks
            .iter()
            .take(MAX_REPORTED_CHUNKS)
            .map(Hash::to_bytes)
            .collect(),
    });
    let mut manager = node.manager.clone();
    match tokio::time::timeout(REPORT_TIMEOUT, manager.report_stored(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(upload = %upload_id, error = %e, "could not report the chunks of a failed upload")
        }
        Err(_) => {
            tracing::warn!(upload = %upload_id, "the manager did not take the report of a failed upload in time")
        }
    }
}

/// Most chunks one report names (the manager's limit): a resume past them
/// sends the rest again.
const MAX_REPORTED_CHUNKS: usize = 65_536;

/// How long a failed upload waits for the manager to take its report.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The part of [`run`] after the stream: wait for the writes, commit this
/// copy, and collect the rest of the chain's answer.
#[allow(clippy::too_many_arguments)]
async fn finish(
    node: &StorageNode,
    plan: &Plan,
    received: Result<()>,
    downstream: Option<Downstream>,
    mut writes: Writes,
    mut staged: Batch,
    committing: Option<EarlyBatch>,
    hashes: &[Hash],
    from_peer: bool,
) -> Result<Vec<WireNode>> {
    // Whatever happened, wait for the writes already started, so the guard
    // removes their temp files if this transfer failed, and for the batch
    // still being made durable, so the final commit comes after it.
    while let Some(write) = writes.next().await {
        match write {
            Ok(chunk) => staged.push(chunk),
            Err(e) if received.is_ok() => return Err(e),
            Err(_) => {}
        }
    }
    if let Some(batch) = committing {
        let settled = batch
            .settle(&node.faults, &ReportTo::of(node), &plan.upload_id)
            .await;
        if received.is_ok() {
            settled?;
        }
    }
    received?;
    let mut holders = Vec::new();
    if plan.store_locally {
        node.store.commit(staged.take()).await?;
        // Batches made durable early in a long upload (or a resumed prefix)
        // are unused by any file until the commit: mark every chunk used now,
        // and fail rather than answer if garbage collection took one.
        node.store.claim_all(hashes).await?;
        holders.push(node.wire_node());
        let last = (hashes.len() as u64).saturating_sub(1);
        node.faults.hit(Step::AfterWrite { chunk: last }).await?;
    }
    let downstream_holders = match downstream {
        Some(next) => match next.finish().await {
            Ok(h) => Some(h),
            Err(e) if plan.can_substitute() => {
                tracing::warn!(upload = %plan.upload_id, error = %e, "replica failed at the end");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    match downstream_holders {
        Some(h) => holders.extend(h),
        None if !plan.chain.is_empty() => {
            holders.extend(substitute(node, plan, hashes).await);
        }
        None => {}
    }
    if from_peer {
        node.faults.hit(Step::BeforeStoreReceipt).await?;
    }
    tracing::debug!(upload = %plan.upload_id, name = %plan.name, "pipeline hop done");
    Ok(holders)
}

/// The replica failed: copy the file, from this node's durable copy, to the
/// first fallback that takes it. Returns its holders, or none when every
/// fallback failed: the upload then completes with one copy, and the
/// manager's repair worker adds the second later.
async fn substitute(node: &StorageNode, plan: &Plan, hashes: &[Hash]) -> Vec<WireNode> {
    for (i, fallback) in plan.fallbacks.iter().enumerate() {
        match copy_to(node, plan, hashes, fallback, &plan.fallbacks[i + 1..]).await {
            Ok(holders) => {
                tracing::info!(upload = %plan.upload_id, substitute = %fallback.addr, "replica replaced");
                return holders;
            }
            Err(e) => {
                tracing::warn!(upload = %plan.upload_id, substitute = %fallback.addr, error = %e,
                    "substitute failed; trying the next");
            }
        }
    }
    tracing::warn!(upload = %plan.upload_id, "no substitute took the file: one copy for now");
    Vec::new()
}

/// Send every chunk of the file (a resumed upload's prefix included), read
/// back (and verified) from this node's store, to `target` as a fresh
/// single-node Store.
async fn copy_to(
    node: &StorageNode,
    plan: &Plan,
    hashes: &[Hash],
    target: &WireNode,
    fallbacks: &[WireNode],
) -> Result<Vec<WireNode>> {
    let whole_file = Plan {
        prefix: Vec::new(),
        prefix_lengths: Vec::new(),
        ..plan.clone()
    };
    let mut next = Downstream::open(node, target, &whole_file, &[], fallbacks)?;
    for (index, hash) in hashes.iter().enumerate() {
        let data = node.store.get(*hash).await?;
        next.send(Chunk {
            index: index as u64,
            data,
            hash: hash.to_bytes(),
            held_length: 0,
        })
        .await?;
    }
    next.finish().await
}

/// A batch of chunks being made durable while the stream goes on.
struct EarlyBatch {
    commit: JoinHandle<Result<()>>,
    /// The batch's chunks (and any claimed since the last report).
    chunks: Vec<Hash>,
    /// Every chunk up to this index is durable once the commit is done.
    durable_through: u64,
}

impl EarlyBatch {
    /// Wait for the commit, then say so: the uploader proved these chunks
    /// by sending them, so a resume right after a crash of any hop (this
    /// one included) may claim what is durable.
    async fn settle(self, faults: &FaultPlan, reporter: &ReportTo, upload_id: &str) -> Result<()> {
        crate::chunk_store::joined(self.commit.await)?;
        let (reporter, upload_id, chunks) = (reporter.clone(), upload_id.to_string(), self.chunks);
        tokio::spawn(async move { report_stored(&reporter, &upload_id, &chunks).await });
        faults
            .hit(Step::AfterWrite {
                chunk: self.durable_through,
            })
            .await
    }
}

/// Local writes started but not yet finished, in chunk order.
type Writes = FuturesOrdered<Pin<Box<dyn Future<Output = Result<Staged>> + Send>>>;

/// Take every chunk from `source`: verify it, start its local write (at
/// most [`WRITE_DEPTH_CHUNKS`] in flight) and pass it downstream. A chunk
/// sent by reference is claimed here instead (this node must hold it) and
/// passed on as a reference. The chunks' lengths are not known in advance:
/// each is checked against what is left of the declared size, and the
/// stream must carry exactly that size.
#[allow(clippy::too_many_arguments)]
async fn receive(
    faults: &FaultPlan,
    reporter: &ReportTo,
    plan: &Plan,
    source: &mut dyn ChunkSource,
    downstream: &mut Option<Downstream>,
    writes: &mut Writes,
    staged: &mut Batch,
    committing: &mut Option<EarlyBatch>,
    hashes: &mut Vec<Hash>,
    lengths: &mut Vec<u32>,
) -> Result<()> {
    let mut index = plan.prefix.len() as u64;
    let mut reported = plan.prefix.len();
    let mut received: u64 = lengths.iter().map(|&l| l as u64).sum();
    while let Some(chunk) = source.next_chunk().await? {
        let (hash, len) = verify_streamed(&chunk, index, received, plan.size)?;
        hashes.push(hash);
        lengths.push(len);
        received += len as u64;
        if chunk.held_length != 0 {
            if plan.store_locally && !staged.store().claim(&hash, Some(len as u64)) {
                return Err(Error::Stale(format!(
                    "{}: chunk {index} ({hash}, {len} bytes) was sent by reference but this server does not hold it; send it with its data",
                    plan.name
                )));
            }
        } else if plan.store_locally {
            writes.push_back(Box::pin(staged.store().stage(hash, chunk.data.clone())));
            if writes.len() >= WRITE_DEPTH_CHUNKS {
                let write = writes
                    .next()
                    .await
                    .expect("invariant: the queue is not empty");
                staged.push(write?);
                if staged.len() >= DURABLE_BATCH_CHUNKS {
                    // The batch is made durable while the stream goes on: a
                    // commit waits on the disk, and waiting in this loop
                    // would stall the sender and the next hop with it.
                    let chunks = staged.take();
                    let batch = EarlyBatch {
                        commit: staged.store().start_commit(chunks),
                        chunks: hashes[reported..].to_vec(),
                        // Every chunk before those still being written.
                        durable_through: index - writes.len() as u64,
                    };
                    reported = hashes.len();
                    if let Some(previous) = committing.replace(batch) {
                        previous.settle(faults, reporter, &plan.upload_id).await?;
                    }
                }
            }
        }
        if let Some(next) = downstream.as_mut() {
            if let Err(e) = next.send(chunk).await {
                if !plan.can_substitute() {
                    return Err(e);
                }
                // Keep receiving and storing: the replica is replaced from
                // this node's copy once the stream is complete.
                tracing::warn!(upload = %plan.upload_id, error = %e,
                    "replica failed mid-stream; a substitute gets the file after the stream");
                *downstream = None;
            }
        }
        index += 1;
    }
    if received != plan.size {
        return Err(Error::InvalidInput(format!(
            "the stream ended after {received} of {} bytes ({index} chunks)",
            plan.size
        )));
    }
    Ok(())
}

/// The Store call to the next node, fed through a bounded queue.
struct Downstream {
    addr: String,
    queue: mpsc::Sender<StoreRequest>,
    call: JoinHandle<Result<Vec<WireNode>, Status>>,
    tap: Tap,
}

impl Downstream {
    fn open(
        node: &StorageNode,
        next: &WireNode,
        plan: &Plan,
        rest: &[WireNode],
        fallbacks: &[WireNode],
    ) -> Result<Self> {
        let (queue, rx) = mpsc::channel(PIPELINE_DEPTH_CHUNKS);
        let begin = StoreRequest {
            msg: Some(store_request::Msg::Begin(StoreBegin {
                upload_id: plan.upload_id.clone(),
                name: plan.name.clone(),
                size: plan.size,
                store_locally: true,
                chain: rest.to_vec(),
                fallbacks: fallbacks.to_vec(),
                prefix: plan.prefix.iter().map(Hash::to_bytes).collect(),
            })),
        };
        queue
            .try_send(begin)
            .expect("invariant: a new queue has room for the first message");
        let mut client = node.peer(&next.addr)?;
        let request = node.secret.request(ReceiverStream::new(rx));
        let call = tokio::spawn(async move {
            client
                .store(request)
                .await
                .map(|reply| reply.into_inner().holders)
        });
        Ok(Downstream {
            addr: next.addr.clone(),
            queue,
            call,
            tap: node.faults.tap(Step::Forward),
        })
    }

    async fn send(&mut self, chunk: Chunk) -> Result<()> {
        if let Err(e) = self.tap.pass(chunk.data.len()).await {
            // An injected fault: the connection to the next node is gone.
            self.call.abort();
            return Err(Error::Unavailable(format!("server {}: {e}", self.addr)));
        }
        let message = StoreRequest {
            msg: Some(store_request::Msg::Chunk(chunk)),
        };
        if self.queue.send(message).await.is_err() {
            // The call ended early: its status says why.
            return Err(outcome(&self.addr, &mut self.call)
                .await
                .err()
                .unwrap_or_else(|| {
                    Error::Internal(format!("server {} answered before the end", self.addr))
                }));
        }
        Ok(())
    }

    /// Send the end marker, close the queue and wait for the node's answer.
    async fn finish(self) -> Result<Vec<WireNode>> {
        let end = StoreRequest {
            msg: Some(store_request::Msg::End(StoreEnd {})),
        };
        let _ = self.queue.send(end).await;
        let Downstream {
            addr,
            queue,
            mut call,
            ..
        } = self;
        drop(queue);
        outcome(&addr, &mut call).await
    }
}

/// How the Store call to `addr` ended.
async fn outcome(
    addr: &str,
    call: &mut JoinHandle<Result<Vec<WireNode>, Status>>,
) -> Result<Vec<WireNode>> {
    match call.await {
        Ok(Ok(holders)) => Ok(holders),
        Ok(Err(status)) => Err(hop_error(addr, status)),
        Err(e) => Err(Error::Internal(format!("pipeline task: {e}"))),
    }
}

/// A downstream failure, keeping its kind (and so its retry class) and
/// naming the node; what the client cannot act on (the node's own
/// credentials, a bug there) is that node being unusable.
fn hop_error(addr: &str, status: Status) -> Error {
    let error = match Error::from_status(status) {
        e @ (Error::InvalidInput(_)
        | Error::Corrupt(_)
        | Error::Exhausted(_)
        | Error::NotFound(_)
        | Error::Stale(_)
        | Error::Aborted(_)
        | Error::Io(_)
        | Error::Unavailable(_)) => e,
        other => Error::Unavailable(other.to_string()),
    };
    error.map_message(|m| format!("server {addr}: {m}"))
}

/// Await the next message of an inbound stream, giving up after `idle` of
/// silence.
pub async fn next_message<T, S>(stream: &mut S, idle: Duration) -> Result<Option<T>>
where
    S: futures::Stream<Item = std::result::Result<T, Status>> + Unpin,
{
    match tokio::time::timeout(idle, futures::StreamExt::next(stream)).await {
        Ok(result) => Ok(result.transpose()?),
        Err(_) => Err(Error::Aborted(format!(
            "no data for {} s: the sender seems gone",
            idle.as_secs_f64()
        ))),
    }
}

/// The inbound side of a Store call: chunks until `StoreEnd`, each within
/// the idle timeout.
pub struct StoreSource(pub Streaming<StoreRequest>, pub Duration);

#[tonic::async_trait]
impl ChunkSource for StoreSource {
    fn is_from_peer(&self) -> bool {
        true
    }

    async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        match next_message(&mut self.0, self.1).await? {
            Some(StoreRequest {
                msg: Some(store_request::Msg::Chunk(chunk)),
            }) => Ok(Some(chunk)),
            Some(StoreRequest {
                msg: Some(store_request::Msg::End(_)),
            }) => Ok(None),
            Some(_) => Err(Error::InvalidInput(
                "expected a chunk or the end of the stream".into(),
            )),
            None => Err(Error::Aborted(
                "the upstream node stopped before the end of the stream".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_names_the_node_once_and_keeps_the_retry_class() {
        let corrupt = Status::from(Error::Corrupt("chunk 3 differs".into()));
        let err = hop_error("r:1", corrupt);
        assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
        assert_eq!(err.to_string(), "corrupt data: server r:1: chunk 3 differs");
        // Forwarded upstream again: still one "corrupt data" prefix.
        let twice = hop_error("p:1", Status::from(err));
        assert_eq!(
            twice.to_string(),
            "corrupt data: server p:1: server r:1: chunk 3 differs"
        );
        let io = hop_error(
            "r:1",
            Status::from(Error::Io(std::io::Error::other("full disk"))),
        );
        assert!(matches!(io, Error::Io(_)), "{io:?}");
        assert!(io.is_retryable());
        let internal = hop_error("r:1", Status::from(Error::Internal("bug".into())));
        assert!(matches!(internal, Error::Unavailable(_)), "{internal:?}");
    }
}
