//! Sending one file to the cluster: `Storage/Upload` from any source of
//! bytes. Backups read a file, the benchmark generates data; both come
//! through here.
//!
//! A reader task pulls the source one chunk at a time, hashes the chunk and
//! the running whole-file blake3 on a blocking thread, and queues the chunk
//! on a bounded channel that feeds the gRPC request stream:
//! `begin{name, size}`, every chunk in order, then `end{blake3}`. The file is
//! read once, and never more than [`UPLOAD_CHANNEL_CAPACITY`] chunks wait in
//! memory. The receipt is checked against what was sent.
//!
//! A resumed upload ([`Resume`]) starts at the first chunk the cluster does
//! not hold: its source is positioned there, every chunk sent is checked
//! against the hash the file had when it was hashed before the resume, and
//! the whole-file hash of that pass ends the stream.

use crate::progress::Progress;
use crate::session::{rpc_error, Client, Role};
use bytes::{Bytes, BytesMut};
use dupla::chunk::{self, Chunker};
use dupla::v1::{upload_request::Msg, UploadBegin, UploadEnd, UploadReceipt, UploadRequest};
use dupla::{Error, Hash, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks queued between the reader and the network (about 1 MiB each, 2
/// at most): enough to keep the stream busy while the next chunk is read
/// and hashed, small enough that an upload holds about 8 MiB (16 at most).
pub const UPLOAD_CHANNEL_CAPACITY: usize = 8;

/// Where upload bytes come from. Called on a blocking thread, so an
/// implementation may do plain blocking I/O.
pub trait ChunkSource: Send + 'static {
    /// Read some bytes into `buf`, as [`std::io::Read::read`]; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;

    /// Continue reading at byte `offset` (an upload that skips chunks the
    /// cluster holds). Sources that cannot seek refuse.
    fn seek_to(&mut self, _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this source cannot skip chunks",
        ))
    }

    /// Called after the last chunk, when all promised bytes were read: a
    /// source may check, or say, that it holds more (a file that grew while
    /// it was read). An error fails the upload.
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A [`ChunkSource`] as a reader, for the [`Chunker`].
struct SourceReader<'a, S>(&'a mut S);

impl<S: ChunkSource> std::io::Read for SourceReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// An upload whose chunks were cut and hashed in a pass over the file just
/// before: to continue an interrupted upload whose first `held` chunks
/// (maybe none) the cluster already has, and to send the chunks of
/// `by_reference` as references (an incremental backup). Every chunk read
/// again is checked against its hash from that pass.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// blake3 of every chunk of the file, from a pass over it just before.
    pub chunks: Vec<Hash>,
    /// The length of each of those chunks.
    pub lengths: Vec<u32>,
    /// Leading chunks the cluster holds: not sent.
    pub held: u64,
    /// blake3 of the whole file, from the same pass.
    pub whole: Hash,
    /// Chunks sent by reference (the holders have them), wherever they are.
    pub by_reference: HashSet<Hash>,
    /// Replace an interrupted upload of the same name at the manager.
    pub takeover: bool,
}

impl Resume {
    /// Bytes of the first `held` chunks.
    pub fn held_bytes(&self) -> u64 {
        self.lengths[..self.held as usize]
            .iter()
            .map(|&l| l as u64)
            .sum()
    }
}

/// What one successful upload produced.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The receipt: catalog entry with holders, copies, entry server.
    pub receipt: UploadReceipt,
    /// Whole-file blake3 as the client computed it (and the catalog confirmed).
    pub blake3: Hash,
    /// Bytes of chunk data put on the wire.
    pub sent_bytes: u64,
    /// Bytes of the chunks sent by reference.
    pub reused_bytes: u64,
    /// The server the upload entered through.
    pub entry: String,
    /// Wall time from connecting to the receipt.
    pub seconds: f64,
}

/// Upload `size` bytes from `source` as `name`, entering through the first
/// reachable server of `candidates`, cutting it with the [`Chunker`] as it
/// is read. With `resume`, the chunks are those of the plan: the held ones
/// are skipped, those of `by_reference` sent as references, and only the
/// others read (`source` must be able to seek). `counter`, if given, counts
/// the chunk bytes queued for sending.
#[allow(clippy::too_many_arguments)]
pub async fn upload<S: ChunkSource>(
    client: &Client,
    candidates: &[String],
    name: &str,
    size: u64,
    source: S,
    resume: Option<Resume>,
    progress: &Progress,
    counter: Option<Arc<AtomicU64>>,
) -> Result<Uploaded> {
    let started = Instant::now();
    let (entry, mut storage) = client.connect_storage(candidates).await?;
    let (tx, rx) = mpsc::channel(UPLOAD_CHANNEL_CAPACITY);
    let mut held_chunks: Vec<Hash> = resume
        .as_ref()
        .map(|r| r.by_reference.iter().copied().collect())
        .unwrap_or_default();
    held_chunks.sort_unstable_by_key(|h| h.0);
    let begin = UploadBegin {
        name: name.to_string(),
        size,
        resume_chunks: resume
            .as_ref()
            .map(|r| {
                r.chunks[..r.held as usize]
                    .iter()
                    .map(Hash::to_bytes)
                    .collect()
            })
            .unwrap_or_default(),
        resume: resume.as_ref().is_some_and(|r| r.takeover),
        held_chunks: held_chunks.iter().map(Hash::to_bytes).collect(),
    };
    let progress_reader = progress.clone();
    let mut reader = AbortOnDrop(tokio::task::spawn_blocking(move || {
        read_chunks(source, begin, resume, tx, progress_reader, counter)
    }));
    let call = storage.upload(client.request(ReceiverStream::new(rx)));
    tokio::pin!(call);

    // Whichever ends first decides: a failed reader cancels the call (so the
    // server sees a reset, not a clean end), a failed call stops the reader.
    let (reply, read) = tokio::select! {
        read = &mut reader.0 => match joined(read) {
            Err(err) => return Err(err),
            Ok(read) => ((&mut call).await, read),
        },
        reply = &mut call => {
            if reply.is_err() {
                reader.0.abort();
                (reply, ReadEnd::CallEnded)
            } else {
                (reply, joined((&mut reader.0).await)?)
            }
        }
    };
    let receipt = reply
        .map_err(|status| rpc_error(Role::Server, &entry, status))?
        .into_inner();
    let ReadEnd::Done(blake3, sent_bytes, reused_bytes) = read else {
        return Err(Error::Internal(format!(
            "server {entry} answered before the upload of {name} was complete"
        )));
    };
    check_receipt(&receipt, name, size, &blake3)?;
    Ok(Uploaded {
        receipt,
        blake3,
        sent_bytes,
        reused_bytes,
        entry,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Stops the reader task when an upload is dropped midway (cancelled by
/// the user or by a failed sibling in the benchmark).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the reader task ended without a source error.
#[derive(Debug)]
enum ReadEnd {
    /// Everything was queued: whole-file hash, chunk bytes sent, and bytes
    /// sent by reference.
    Done(Hash, u64, u64),
    /// The call ended first; its status says why.
    CallEnded,
}

/// Flatten a reader task's join result.
fn joined(res: std::result::Result<Result<ReadEnd>, tokio::task::JoinError>) -> Result<ReadEnd> {
    match res {
        Ok(inner) => inner,
        Err(e) if e.is_cancelled() => Ok(ReadEnd::CallEnded),
        Err(e) => Err(Error::Internal(format!("upload reader failed: {e}"))),
    }
}

/// The reader (on a blocking thread): queue begin, every chunk, and end
/// with the whole-file hash. Stops quietly if the call has ended (its
/// status is what to report).
fn read_chunks<S: ChunkSource>(
    mut source: S,
    begin: UploadBegin,
    resume: Option<Resume>,
    tx: mpsc::Sender<UploadRequest>,
    progress: Progress,
    counter: Option<Arc<AtomicU64>>,
) -> Result<ReadEnd> {
    let size = begin.size;
    let send = |msg| tx.blocking_send(UploadRequest { msg: Some(msg) }).is_ok();
    if !send(Msg::Begin(begin)) {
        return Ok(ReadEnd::CallEnded);
    }
    let count = |n: u64| {
        if let Some(counter) = &counter {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    };
    let (mut sent, mut reused) = (0u64, 0u64);
    let blake3 = match &resume {
        None => {
            // One pass: cut, hash and send as the bytes come.
            let mut hasher = blake3::Hasher::new();
            let mut total = 0u64;
            let reader = std::io::Read::take(SourceReader(&mut source), size);
            for (index, piece) in Chunker::new(reader).enumerate() {
                let data = piece.map_err(|e| read_error(index as u64, e))?;
                total += data.len() as u64;
                hasher.update(&data);
                let len = data.len() as u64;
                if !send(Msg::Chunk(chunk::make(index as u64, data))) {
                    return Ok(ReadEnd::CallEnded);
                }
                sent += len;
                count(len);
                progress.add(len);
            }
            if total != size {
                return Err(file_changed(format!(
                    "the file shrank while it was read ({total} of {size} bytes)"
                )));
            }
            Hash::from(hasher.finalize())
        }
        Some(plan) => {
            progress.add(plan.held_bytes());
            let mut at = u64::MAX;
            let mut offset = plan.held_bytes();
            for index in plan.held..plan.chunks.len() as u64 {
                let hash = plan.chunks[index as usize];
                let len = plan.lengths[index as usize];
                let chunk = if plan.by_reference.contains(&hash) {
                    reused += len as u64;
                    chunk::held(index, hash, len)
                } else {
                    if at != offset {
                        source.seek_to(offset).map_err(|e| read_error(index, e))?;
                    }
                    let data =
                        read_exact(&mut source, len as usize).map_err(|e| read_error(index, e))?;
                    at = offset + len as u64;
                    let chunk = chunk::make(index, data);
                    if chunk.hash != hash.to_bytes() {
                        return Err(file_changed(format!(
                            "the file changed since it was hashed (chunk {index})"
                        )));
                    }
                    sent += len as u64;
                    count(len as u64);
                    chunk
                };
                if !send(Msg::Chunk(chunk)) {
                    return Ok(ReadEnd::CallEnded);
                }
                offset += len as u64;
                progress.add(len as u64);
            }
            if offset != size {
                return Err(Error::Internal(format!(
                    "the chunks of the plan cover {offset} of {size} bytes"
                )));
            }
            if at != size {
                source
                    .seek_to(size)
                    .map_err(|e| read_error(index_end(plan), e))?;
            }
            plan.whole
        }
    };
    source
        .finish()
        .map_err(|e| read_error(resume.as_ref().map_or(0, index_end), e))?;
    let end = UploadEnd {
        blake3: blake3.to_bytes(),
    };
    if !send(Msg::End(end)) {
        return Ok(ReadEnd::CallEnded);
    }
    Ok(ReadEnd::Done(blake3, sent, reused))
}

fn index_end(plan: &Resume) -> u64 {
    plan.chunks.len() as u64
}

/// Exactly `len` bytes from `source` (`UnexpectedEof` if it ends first).
fn read_exact<S: ChunkSource>(source: &mut S, len: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match source.read(&mut buf[filled..])? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "short read",
                ))
            }
            n => filled += n,
        }
    }
    Ok(buf.freeze())
}

/// A source read failure, in words: a short read means the file shrank.
fn read_error(at: u64, err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            file_changed(format!("the file shrank while it was read (at chunk {at})"))
        }
        _ => Error::Io(err),
    }
}

/// The file being backed up changed under the reader (it shrank, or its
/// bytes no longer hash as they did a moment ago). An I/O error of kind
/// `InvalidData` ([`is_file_change`]): the backup reads the file again
/// once, then leaves it out of the run as the file's own trouble, not the
/// cluster's.
pub fn file_changed(what: String) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

/// Whether the I/O error of an [`Error::Io`] says the file changed while
/// it was read ([`file_changed`]).
pub fn is_file_change(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
}

/// The receipt must describe what was sent: same name, size and blake3.
fn check_receipt(receipt: &UploadReceipt, name: &str, size: u64, blake3: &Hash) -> Result<()> {
    let entry = receipt
        .entry
        .as_ref()
        .ok_or_else(|| Error::Internal("the upload receipt has no catalog entry".into()))?;
    let stored = Hash::from_slice(&entry.blake3, "receipt blake3")?;
    if entry.name != name || entry.size != size || stored != *blake3 {
        return Err(Error::Corrupt(format!(
            "the receipt says {} ({} bytes, blake3 {stored}) but {name} ({size} bytes, blake3 {blake3}) was sent",
            entry.name, entry.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::chunk::MAX_CHUNK_SIZE;

    /// Start a reader on `source`; returns the task and the request stream.
    fn spawn_reader<S: ChunkSource>(
        source: S,
        name: &str,
        size: u64,
    ) -> (
        tokio::task::JoinHandle<Result<ReadEnd>>,
        mpsc::Receiver<UploadRequest>,
    ) {
        let (tx, rx) = mpsc::channel(UPLOAD_CHANNEL_CAPACITY);
        let begin = UploadBegin {
            name: name.into(),
            size,
            ..Default::default()
        };
        (
            tokio::task::spawn_blocking(move || {
                read_chunks(source, begin, None, tx, Progress::hidden(), None)
            }),
            rx,
        )
    }

    /// A source over a byte vector, optionally holding extra bytes.
    struct VecSource {
        data: Vec<u8>,
        at: usize,
    }

    impl ChunkSource for VecSource {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
        fn finish(&mut self) -> std::io::Result<()> {
            if self.at == self.data.len() {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the file grew while it was read",
                ))
            }
        }
    }

    async fn collect(data: Vec<u8>, size: u64) -> (Result<ReadEnd>, Vec<UploadRequest>) {
        let (task, mut rx) = spawn_reader(VecSource { data, at: 0 }, "f", size);
        let mut msgs = Vec::new();
        while let Some(m) = rx.recv().await {
            msgs.push(m);
        }
        (task.await.unwrap(), msgs)
    }

    #[tokio::test]
    async fn stream_is_begin_chunks_end_with_the_file_hash() {
        let data: Vec<u8> = (0..MAX_CHUNK_SIZE * 3 + 5)
            .map(|i| ((i * 7919) % 253) as u8 ^ (i >> 11) as u8)
            .collect();
        let (res, msgs) = collect(data.clone(), data.len() as u64).await;
        let ReadEnd::Done(hash, sent, 0) = res.unwrap() else {
            panic!("reader did not finish")
        };
        assert_eq!(hash, Hash::of(&data));
        assert_eq!(sent, data.len() as u64);
        let expected = chunk::cut(&data);
        assert_eq!(msgs.len(), expected.len() + 2);
        assert!(matches!(msgs[0].msg, Some(Msg::Begin(ref b)) if b.size == data.len() as u64));
        let mut received = 0;
        for (i, m) in msgs[1..=expected.len()].iter().enumerate() {
            match &m.msg {
                Some(Msg::Chunk(c)) => {
                    let (_, len) =
                        chunk::verify_streamed(c, i as u64, received, data.len() as u64).unwrap();
                    assert_eq!(c.data, expected[i]);
                    received += len as u64;
                }
                other => panic!("expected chunk, got {other:?}"),
            }
        }
        assert_eq!(received, data.len() as u64);
        assert!(
            matches!(msgs.last().unwrap().msg, Some(Msg::End(ref e)) if e.blake3 == hash.to_bytes())
        );
    }

    #[tokio::test]
    async fn empty_file_has_no_chunks() {
        let (res, msgs) = collect(Vec::new(), 0).await;
        assert!(matches!(res, Ok(ReadEnd::Done(h, 0, 0)) if h == Hash::of(b"")));
        assert_eq!(msgs.len(), 2);
    }

    #[tokio::test]
    async fn a_file_that_changes_size_sends_no_end() {
        let (res, msgs) = collect(vec![1; 10], 20).await;
        assert!(
            matches!(res, Err(Error::Io(ref e)) if is_file_change(e)),
            "a shrunk file is a file change: {res:?}"
        );
        assert!(!msgs.iter().any(|m| matches!(m.msg, Some(Msg::End(_)))));

        // A source that refuses extra bytes (FileSource instead takes the
        // promised ones and says so).
        let (res, msgs) = collect(vec![1; 30], 20).await;
        assert!(matches!(res, Err(Error::Io(ref e)) if is_file_change(e)));
        assert!(!msgs.iter().any(|m| matches!(m.msg, Some(Msg::End(_)))));
    }
}
