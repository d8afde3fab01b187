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
use bytes::Bytes;
use dupla::chunk::{self, chunk_count, chunk_len};
use dupla::v1::{upload_request::Msg, UploadBegin, UploadEnd, UploadReceipt, UploadRequest};
use dupla::{Error, Hash, Result};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks queued between the reader and the network (1 MiB each): enough to
/// keep the stream busy while the next chunk is read and hashed, small
/// enough that an upload holds at most ~8 MiB.
pub const UPLOAD_CHANNEL_CAPACITY: usize = 8;

/// Where upload bytes come from. Called on a blocking thread, one chunk at
/// a time, so an implementation may do plain blocking I/O.
pub trait ChunkSource: Send + 'static {
    /// The next `len` bytes (exactly `len`: the size was promised up front).
    fn read_chunk(&mut self, len: usize) -> std::io::Result<Bytes>;

    /// Called after the last chunk: fail if the source holds more bytes
    /// than were promised (a file that grew while it was read).
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Continue an interrupted upload whose first `held` chunks (maybe none)
/// the cluster already has; it replaces the interrupted one at the manager.
#[derive(Debug, Clone)]
pub struct Resume {
    /// blake3 of every chunk of the file, from a pass over it just before.
    pub chunks: Vec<Hash>,
    /// Leading chunks the cluster holds: not sent.
    pub held: u64,
    /// blake3 of the whole file, from the same pass.
    pub whole: Hash,
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
    /// The server the upload entered through.
    pub entry: String,
    /// Wall time from connecting to the receipt.
    pub seconds: f64,
}

/// Upload `size` bytes from `source` as `name`, entering through the first
/// reachable server of `candidates`. With `resume`, `source` must be
/// positioned at the first chunk not held.
pub async fn upload<S: ChunkSource>(
    client: &Client,
    candidates: &[String],
    name: &str,
    size: u64,
    source: S,
    resume: Option<Resume>,
    progress: &Progress,
) -> Result<Uploaded> {
    let started = Instant::now();
    let (entry, mut storage) = client.connect_storage(candidates).await?;
    let (tx, rx) = mpsc::channel(UPLOAD_CHANNEL_CAPACITY);
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
        resume: resume.is_some(),
    };
    let mut reader = AbortOnDrop(tokio::spawn(read_chunks(
        source,
        begin,
        resume,
        tx,
        progress.clone(),
    )));
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
    let ReadEnd::Done(blake3, sent_bytes) = read else {
        return Err(Error::Internal(format!(
            "server {entry} answered before the upload of {name} was complete"
        )));
    };
    check_receipt(&receipt, name, size, &blake3)?;
    Ok(Uploaded {
        receipt,
        blake3,
        sent_bytes,
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
    /// Everything was queued: whole-file hash and chunk bytes sent.
    Done(Hash, u64),
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

/// The reader task: queue begin, every chunk (from the first not held when
/// resuming), and end with the whole-file hash. Stops quietly if the call
/// has ended (its status is what to report).
async fn read_chunks<S: ChunkSource>(
    source: S,
    begin: UploadBegin,
    resume: Option<Resume>,
    tx: mpsc::Sender<UploadRequest>,
    progress: Progress,
) -> Result<ReadEnd> {
    let size = begin.size;
    let send = |msg| UploadRequest { msg: Some(msg) };
    if tx.send(send(Msg::Begin(begin))).await.is_err() {
        return Ok(ReadEnd::CallEnded);
    }
    let first = resume.as_ref().map_or(0, |r| r.held);
    progress.add((dupla::chunk::CHUNK_SIZE as u64 * first).min(size));
    let mut source = source;
    // A resume already has the whole-file hash from its pass over the file.
    let mut hasher = resume.is_none().then(blake3::Hasher::new);
    let mut sent = 0u64;
    for index in first..chunk_count(size) {
        let len = chunk_len(size, index)?;
        let chunk;
        (source, hasher, chunk) = read_and_hash(source, hasher, index, len).await?;
        if let Some(resume) = &resume {
            if chunk.hash != resume.chunks[index as usize].to_bytes() {
                return Err(Error::Aborted(format!(
                    "the file changed since it was hashed for the resume (chunk {index}); back it up again"
                )));
            }
        }
        if tx.send(send(Msg::Chunk(chunk))).await.is_err() {
            return Ok(ReadEnd::CallEnded);
        }
        sent += len as u64;
        progress.add(len as u64);
    }
    let source_end = tokio::task::spawn_blocking(move || source.finish())
        .await
        .map_err(|e| Error::Internal(format!("reader thread failed: {e}")))?;
    source_end.map_err(|e| read_error(chunk_count(size), e))?;
    let blake3 = match (&resume, hasher) {
        (Some(resume), _) => resume.whole,
        (None, hasher) => Hash::from(hasher.expect("invariant: no resume, so hashed").finalize()),
    };
    let end = UploadEnd {
        blake3: blake3.to_bytes(),
    };
    if tx.send(send(Msg::End(end))).await.is_err() {
        return Ok(ReadEnd::CallEnded);
    }
    Ok(ReadEnd::Done(blake3, sent))
}

/// Read chunk `index` (`len` bytes), fold it into the whole-file hash (if
/// one is being computed) and build the wire chunk with its own hash, all
/// on a blocking thread.
async fn read_and_hash<S: ChunkSource>(
    mut source: S,
    mut hasher: Option<blake3::Hasher>,
    index: u64,
    len: usize,
) -> Result<(S, Option<blake3::Hasher>, dupla::v1::Chunk)> {
    let (source, hasher, chunk) = tokio::task::spawn_blocking(move || {
        let chunk = source.read_chunk(len).map(|data| {
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&data);
            }
            chunk::make(index, data)
        });
        (source, hasher, chunk)
    })
    .await
    .map_err(|e| Error::Internal(format!("reader thread failed: {e}")))?;
    let chunk = chunk.map_err(|e| read_error(index, e))?;
    if chunk.data.len() != len {
        return Err(Error::Internal(format!(
            "chunk {index}: the source gave {} bytes instead of {len}",
            chunk.data.len()
        )));
    }
    Ok((source, hasher, chunk))
}

/// A source read failure, in words: a short read means the file shrank.
fn read_error(at: u64, err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Aborted(format!(
            "the file shrank while it was read (at chunk {at}); back it up again"
        )),
        std::io::ErrorKind::InvalidData => Error::Aborted(err.to_string()),
        _ => Error::Io(err),
    }
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
    use dupla::chunk::CHUNK_SIZE;

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
            resume_chunks: Vec::new(),
            resume: false,
        };
        (
            tokio::spawn(read_chunks(source, begin, None, tx, Progress::hidden())),
            rx,
        )
    }

    /// A source over a byte vector, optionally holding extra bytes.
    struct VecSource {
        data: Vec<u8>,
        at: usize,
    }

    impl ChunkSource for VecSource {
        fn read_chunk(&mut self, len: usize) -> std::io::Result<Bytes> {
            let end = self.at + len;
            let piece = self
                .data
                .get(self.at..end)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short"))?;
            self.at = end;
            Ok(Bytes::copy_from_slice(piece))
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
        let data: Vec<u8> = (0..CHUNK_SIZE * 2 + 5).map(|i| (i % 253) as u8).collect();
        let (res, msgs) = collect(data.clone(), data.len() as u64).await;
        let ReadEnd::Done(hash, sent) = res.unwrap() else {
            panic!("reader did not finish")
        };
        assert_eq!(hash, Hash::of(&data));
        assert_eq!(sent, data.len() as u64);
        assert_eq!(msgs.len(), 5);
        assert!(matches!(msgs[0].msg, Some(Msg::Begin(ref b)) if b.size == data.len() as u64));
        for (i, m) in msgs[1..4].iter().enumerate() {
            match &m.msg {
                Some(Msg::Chunk(c)) => {
                    assert_eq!(c.index, i as u64);
                    dupla::chunk::verify_in_file(c, i as u64, data.len() as u64).unwrap();
                }
                other => panic!("expected chunk, got {other:?}"),
            }
        }
        assert!(matches!(msgs[4].msg, Some(Msg::End(ref e)) if e.blake3 == hash.to_bytes()));
    }

    #[tokio::test]
    async fn empty_file_has_no_chunks() {
        let (res, msgs) = collect(Vec::new(), 0).await;
        assert!(matches!(res, Ok(ReadEnd::Done(h, 0)) if h == Hash::of(b"")));
        assert_eq!(msgs.len(), 2);
    }

    #[tokio::test]
    async fn a_file_that_changes_size_sends_no_end() {
        let (res, msgs) = collect(vec![1; 10], 20).await;
        assert!(matches!(res, Err(Error::Aborted(_))));
        assert!(!msgs.iter().any(|m| matches!(m.msg, Some(Msg::End(_)))));

        let (res, msgs) = collect(vec![1; 30], 20).await;
        assert!(matches!(res, Err(Error::Aborted(_))));
        assert!(!msgs.iter().any(|m| matches!(m.msg, Some(Msg::End(_)))));
    }
}
