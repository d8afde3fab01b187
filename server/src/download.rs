//! `Storage/Download`: any server serves any file. It looks the file up in
//! the catalog, then reads each chunk from a holder — itself first when it
//! is one, then the others, live ones first — verifying every chunk's blake3.
//! A holder that is unreachable, stops mid-stream or returns a bad chunk is
//! left for the next one, from the same chunk on: the client sees one
//! uninterrupted, correct stream.

use crate::node::StorageNode;
use bytes::Bytes;
use dupla::chunk::ChunkLayout;
use dupla::rpc::UserCredentials;
use dupla::v1::{
    download_response, Chunk, DownloadRequest, DownloadResponse, FetchChunksRequest, LookupRequest,
    Node as WireNode,
};
use dupla::{name, Error, Hash, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Chunks read ahead of the client: overlaps disk or peer reads with sending.
pub const DOWNLOAD_DEPTH_CHUNKS: usize = 4;

/// Chunks read from this server's own disk ahead of the one being sent
/// (about 8 MiB, 16 at most, per download): enough to keep a cold disk's
/// queue busy; 8 restored 3-5 % faster than 4 on the benchmark VM.
pub const LOCAL_READ_AHEAD_CHUNKS: usize = 8;

/// A remote holder that takes longer than this to open a fetch or to send
/// the next chunk (about 1 MiB, milliseconds on a healthy link) is skipped for the
/// next one. Without it a holder cut off mid-read holds the reader until
/// HTTP/2 keepalive gives up (30 s).
pub const HOLDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Chunks asked of a remote holder per FetchChunks call.
pub const FETCH_WINDOW_CHUNKS: usize = 1024;

/// The response stream of a download.
pub type DownloadStream = ReceiverStream<Result<DownloadResponse, Status>>;

/// Look the user's file up and start streaming it from `offset`'s chunk.
pub async fn open(
    node: Arc<StorageNode>,
    user: UserCredentials,
    request: DownloadRequest,
) -> Result<DownloadStream> {
    name::validate(&request.name)?;
    let mut lookup = node.secret.request(LookupRequest {
        name: request.name.clone(),
        version: request.version,
    });
    user.attach(&mut lookup);
    let entry = node.manager().lookup(lookup).await?.into_inner();
    if entry.lost {
        return Err(Error::NotFound(format!(
            "{}: version {} is lost: every stored copy was found corrupt; back it up again \
             from the original (`dupla backup` sends it whole)",
            entry.name, entry.version
        )));
    }
    if request.offset > entry.size {
        return Err(Error::InvalidInput(format!(
            "offset {} is past the end of {} ({} bytes)",
            request.offset, entry.name, entry.size
        )));
    }
    let hashes = entry
        .chunks
        .iter()
        .map(|h| Hash::from_slice(h, "chunk hash"))
        .collect::<Result<Vec<_>>>()?;
    let layout = ChunkLayout::of(&entry).map_err(|e| {
        Error::Internal(format!(
            "catalog entry of {} is inconsistent: {e}",
            entry.name
        ))
    })?;
    let start = layout.index_at(request.offset);
    let mut reader = HolderReader::new(
        node.clone(),
        entry.name.clone(),
        entry.holders.clone(),
        hashes,
    );
    let (tx, rx) = mpsc::channel(DOWNLOAD_DEPTH_CHUNKS);
    tokio::spawn(async move {
        let _transfer = node.active.enter();
        crate::metrics::Traffic::add(&node.traffic.downloads, 1);
        let header = DownloadResponse {
            msg: Some(download_response::Msg::Header(entry)),
        };
        if tx.send(Ok(header)).await.is_err() {
            return;
        }
        for index in start..reader.hashes.len() as u64 {
            let message = reader.read(index).await.map(|chunk| DownloadResponse {
                msg: Some(download_response::Msg::Chunk(chunk)),
            });
            let failed = message.is_err();
            if let Ok(DownloadResponse {
                msg: Some(download_response::Msg::Chunk(chunk)),
            }) = &message
            {
                crate::metrics::Traffic::add(&node.traffic.bytes_out, chunk.data.len() as u64);
            }
            if tx.send(message.map_err(Status::from)).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Reads a file's chunks in order from whichever holder can serve them
/// (downloads, and repairs copying a file from its surviving holders).
pub(crate) struct HolderReader {
    node: Arc<StorageNode>,
    name: String,
    holders: Vec<WireNode>,
    hashes: Vec<Hash>,
    /// Holder that served the last chunk: tried first for the next one.
    current: usize,
    remote: Option<RemoteFetch>,
    /// Local reads started ahead, by chunk index, in order.
    ahead: VecDeque<(u64, JoinHandle<Result<Bytes>>)>,
}

/// An open FetchChunks stream from one remote holder.
struct RemoteFetch {
    holder: usize,
    next_index: u64,
    window_end: u64,
    stream: Streaming<Chunk>,
}

impl HolderReader {
    pub(crate) fn new(
        node: Arc<StorageNode>,
        name: String,
        mut holders: Vec<WireNode>,
        hashes: Vec<Hash>,
    ) -> Self {
        // This server first when it holds a copy: a disk read beats a hop.
        if let Some(local) = holders.iter().position(|h| h.id == node.id) {
            let me = holders.remove(local);
            holders.insert(0, me);
        }
        HolderReader {
            node,
            name,
            holders,
            hashes,
            current: 0,
            remote: None,
            ahead: VecDeque::new(),
        }
    }

    /// Chunk `index`, verified, from the first holder that serves it.
    pub(crate) async fn read(&mut self, index: u64) -> Result<Chunk> {
        let expected = self.hashes[index as usize];
        let mut failures = Vec::new();
        let mut all_missing = true;
        for attempt in 0..self.holders.len() {
            let h = (self.current + attempt) % self.holders.len();
            match self.read_from(h, index, expected).await {
                Ok(data) => {
                    if h != self.current {
                        tracing::info!(name = %self.name, chunk = index, holder = %self.holders[h].addr,
                            "switched holder");
                        self.current = h;
                    }
                    return Ok(Chunk {
                        index,
                        data,
                        hash: expected.to_bytes(),
                        held_length: 0,
                    });
                }
                Err(e) => {
                    tracing::warn!(name = %self.name, chunk = index, holder = %self.holders[h].addr,
                        error = %e, "holder failed; trying the next");
                    if self.remote.as_ref().is_some_and(|r| r.holder == h) {
                        self.remote = None;
                    }
                    all_missing &= matches!(e, Error::NotFound(_));
                    failures.push(format!("{}: {e}", display_addr(&self.holders[h])));
                }
            }
        }
        let message = format!(
            "chunk {index} of {}: no holder could serve it ({})",
            self.name,
            failures.join("; ")
        );
        // Every holder answered that it lacks the chunk: it is gone, not
        // merely out of reach.
        if all_missing && !failures.is_empty() {
            Err(Error::NotFound(message))
        } else {
            Err(Error::Unavailable(message))
        }
    }

    async fn read_from(&mut self, h: usize, index: u64, expected: Hash) -> Result<Bytes> {
        let holder = &self.holders[h];
        if holder.id == self.node.id {
            let read = self.read_local(index, expected).await;
            if matches!(read, Err(Error::Corrupt(_) | Error::NotFound(_))) {
                self.node.on_corrupt(expected);
            }
            return read;
        }
        if holder.addr.is_empty() {
            return Err(Error::Unavailable("address unknown".into()));
        }
        let reusable = self
            .remote
            .as_ref()
            .is_some_and(|r| r.holder == h && r.next_index == index);
        if !reusable {
            self.remote = Some(self.open_remote(h, index).await?);
        }
        let remote = self.remote.as_mut().expect("invariant: opened above");
        let chunk = match tokio::time::timeout(HOLDER_TIMEOUT, remote.stream.message()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Err(Error::Unavailable("stream ended early".into())),
            Ok(Err(status)) => return Err(Error::from(status)),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "no chunk within {} s",
                    HOLDER_TIMEOUT.as_secs()
                )))
            }
        };
        let actual = Hash::of(&chunk.data);
        if actual != expected {
            return Err(Error::Corrupt(format!(
                "chunk {index} hashes to {actual}, expected {expected}"
            )));
        }
        remote.next_index += 1;
        if remote.next_index == remote.window_end {
            self.remote = None;
        }
        Ok(chunk.data)
    }

    /// Chunk `index` from this server's disk, with the next
    /// [`LOCAL_READ_AHEAD_CHUNKS`] read (and verified) in the background
    /// meanwhile: several reads in flight keep a cold disk busy, and
    /// hashing one chunk overlaps with reading the next.
    async fn read_local(&mut self, index: u64, expected: Hash) -> Result<Bytes> {
        if self.ahead.front().is_some_and(|(i, _)| *i != index) {
            self.stop_read_ahead();
        }
        let mut next = self.ahead.back().map_or(index, |(i, _)| i + 1);
        while self.ahead.len() < LOCAL_READ_AHEAD_CHUNKS && (next as usize) < self.hashes.len() {
            let (store, hash) = (self.node.store.clone(), self.hashes[next as usize]);
            self.ahead
                .push_back((next, tokio::spawn(async move { store.get(hash).await })));
            next += 1;
        }
        match self.ahead.pop_front() {
            Some((_, read)) => read
                .await
                .map_err(|e| Error::Internal(format!("chunk read-ahead: {e}")))?,
            None => self.node.store.get(expected).await,
        }
    }

    /// Drop the reads started ahead (the reader moved elsewhere).
    fn stop_read_ahead(&mut self) {
        for (_, read) in self.ahead.drain(..) {
            read.abort();
        }
    }

    async fn open_remote(&self, h: usize, index: u64) -> Result<RemoteFetch> {
        let end = (index as usize + FETCH_WINDOW_CHUNKS).min(self.hashes.len());
        let request = FetchChunksRequest {
            hashes: self.hashes[index as usize..end]
                .iter()
                .map(Hash::to_bytes)
                .collect(),
        };
        let mut client = self.node.peer(&self.holders[h].addr)?;
        let call = client.fetch_chunks(self.node.secret.request(request));
        let stream = tokio::time::timeout(HOLDER_TIMEOUT, call)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "no answer to a fetch within {} s",
                    HOLDER_TIMEOUT.as_secs()
                ))
            })??
            .into_inner();
        Ok(RemoteFetch {
            holder: h,
            next_index: index,
            window_end: end as u64,
            stream,
        })
    }
}

impl Drop for HolderReader {
    fn drop(&mut self) {
        self.stop_read_ahead();
    }
}

fn display_addr(node: &WireNode) -> &str {
    if node.addr.is_empty() {
        &node.id
    } else {
        &node.addr
    }
}
