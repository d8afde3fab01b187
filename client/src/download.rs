//! Fetching one file from the cluster: `Storage/Download` into any sink.
//! Restores write a file, the benchmark discards the bytes; both come
//! through here and get the same checks.
//!
//! The first message is the catalog entry; every chunk after it must be the
//! next one in order, have the right length, hash to its declared blake3,
//! and match the entry's chunk list; at the end the whole-file blake3 must
//! match the entry. Checks and sink writes run on a blocking thread.

use crate::progress::Progress;
use crate::session::{rpc_error, Client, Role};
use dupla::chunk::{verify_in_layout, ChunkLayout, CHUNK_SIZE};
use dupla::v1::{download_response::Msg, Chunk, DownloadRequest, FileEntry};
use dupla::{Error, Hash, Result};
use std::time::Instant;
use tokio::sync::mpsc;

/// Where downloaded bytes go. Called on a blocking thread with chunks that
/// have already passed their checks, in order.
pub trait ChunkSink: Send + 'static {
    /// Take the next verified piece of the file.
    fn write_chunk(&mut self, data: &[u8]) -> std::io::Result<()>;
}

/// A sink that keeps nothing: the benchmark measures transfer and checks.
#[derive(Debug, Default)]
pub struct Discard;

impl ChunkSink for Discard {
    fn write_chunk(&mut self, _data: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a resumed download starts: the chunks already on hand (checked
/// against the catalog) and the whole-file hash over them.
#[derive(Debug, Clone)]
pub struct StartAt {
    /// Chunks already on hand: the stream starts with the next one.
    pub chunk: u64,
    /// Their bytes: where the stream starts in the file.
    pub offset: u64,
    /// blake3 state over those chunks' bytes.
    pub hasher: blake3::Hasher,
    /// The file's blake3 they were checked against: a different version in
    /// the catalog now means starting over.
    pub blake3: bytes::Bytes,
}

/// What one successful download produced.
#[derive(Debug)]
pub struct Downloaded<K> {
    /// The catalog entry the server sent, every byte of which checked out.
    pub entry: FileEntry,
    /// Whole-file blake3 (equal to the entry's).
    pub blake3: Hash,
    /// The sink, for the caller to finish (fsync and rename, say).
    pub sink: K,
    /// The server that served it.
    pub server: String,
    /// Wall time from connecting to the last check.
    pub seconds: f64,
}

/// Download `name` into `sink` through the first reachable server of
/// `candidates` (`version`, or the latest when 0), checking every chunk and
/// the whole file. With `start`, the
/// first chunks are already in the sink and the stream begins after them.
#[allow(clippy::too_many_arguments)]
pub async fn download<K: ChunkSink>(
    client: &Client,
    candidates: &[String],
    name: &str,
    version: u64,
    sink: K,
    start: Option<StartAt>,
    progress: &Progress,
) -> Result<Downloaded<K>> {
    let started = Instant::now();
    let (server, mut storage) = client.connect_storage(candidates).await?;
    let request = DownloadRequest {
        name: name.to_string(),
        offset: start.as_ref().map_or(0, |s| s.offset),
        version,
    };
    // The server's words when it has some ("…: version 3 is lost: …").
    let not_found = |status: tonic::Status| match status.code() {
        tonic::Code::NotFound if status.message().is_empty() => {
            Error::NotFound(format!("{name}: not found in your backups"))
        }
        tonic::Code::NotFound => Error::NotFound(status.message().to_string()),
        _ => rpc_error(Role::Server, &server, status),
    };
    let mut stream = storage
        .download(client.request(request))
        .await
        .map_err(not_found)?
        .into_inner();
    let entry = match stream.message().await.map_err(not_found)? {
        Some(dupla::v1::DownloadResponse {
            msg: Some(Msg::Header(entry)),
        }) => entry,
        Some(_) => {
            return Err(protocol(
                &server,
                "the first message is not the file header",
            ))
        }
        None => return Err(protocol(&server, "the stream ended before the file header")),
    };
    check_header(&entry, name)?;
    progress.set_total(entry.size);
    let check = match start {
        None => Checker::new(entry),
        Some(start) if start.blake3 == entry.blake3 => {
            progress.add(start.offset.min(entry.size));
            Checker::resume(entry, start.chunk, start.hasher)
        }
        Some(_) => {
            return Err(Error::Stale(format!(
                "{name} was backed up again since the partial restore; starting over"
            )))
        }
    };
    // Receiving (here) overlaps with checking and writing (a blocking
    // thread fed through a bounded queue): the network, the hashing and
    // the disk work at the same time, never more than
    // DOWNLOAD_QUEUE_CHUNKS chunks apart.
    let (queue, chunks) = mpsc::channel::<Chunk>(DOWNLOAD_QUEUE_CHUNKS);
    let bar = progress.clone();
    let worker = tokio::task::spawn_blocking(move || check_and_write(check, sink, chunks, bar));
    let received = receive(&mut stream, &server, &queue).await;
    drop(queue);
    let (check, sink, written) = worker
        .await
        .map_err(|e| Error::Internal(format!("download thread failed: {e}")))?;
    // A failed check or write ends the queue early: its error says why.
    written?;
    received?;
    let (entry, blake3) = check.finish()?;
    Ok(Downloaded {
        entry,
        blake3,
        sink,
        server,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Chunks received but not yet checked and written (2 MiB at most each):
/// enough to keep the stream flowing while the disk catches up, few enough
/// to bound a restore's memory.
pub const DOWNLOAD_QUEUE_CHUNKS: usize = 8;

/// Queue every chunk of `stream` until its end; stops early (quietly) when
/// the worker stopped taking them.
async fn receive(
    stream: &mut tonic::Streaming<dupla::v1::DownloadResponse>,
    server: &str,
    queue: &mpsc::Sender<Chunk>,
) -> Result<()> {
    loop {
        let message = stream
            .message()
            .await
            .map_err(|status| rpc_error(Role::Server, server, status))?;
        let chunk = match message {
            None => return Ok(()),
            Some(dupla::v1::DownloadResponse {
                msg: Some(Msg::Chunk(chunk)),
            }) => chunk,
            Some(_) => {
                return Err(protocol(
                    server,
                    "a message after the header is not a chunk",
                ))
            }
        };
        if queue.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

/// The worker (on a blocking thread): check each queued chunk and hand it
/// to the sink, until the queue closes or a chunk fails.
fn check_and_write<K: ChunkSink>(
    mut check: Checker,
    mut sink: K,
    mut chunks: mpsc::Receiver<Chunk>,
    progress: Progress,
) -> (Checker, K, Result<()>) {
    while let Some(chunk) = chunks.blocking_recv() {
        let result = check
            .take(&chunk)
            .and_then(|()| sink.write_chunk(&chunk.data).map_err(Error::Io));
        if let Err(e) = result {
            return (check, sink, Err(e));
        }
        progress.add(chunk.data.len() as u64);
    }
    (check, sink, Ok(()))
}

/// A malformed stream from `server`.
fn protocol(server: &str, what: &str) -> Error {
    Error::Internal(format!(
        "server {server} broke the download protocol: {what}"
    ))
}

/// The header must describe the file asked for, in chunks this client knows.
fn check_header(entry: &FileEntry, name: &str) -> Result<()> {
    if entry.name != name {
        return Err(Error::Internal(format!(
            "asked for {name} but the server sent {}",
            entry.name
        )));
    }
    if entry.chunk_lengths.is_empty()
        && entry.chunk_size != 0
        && entry.chunk_size as usize != CHUNK_SIZE
    {
        return Err(Error::InvalidInput(format!(
            "{name} was stored in chunks of {} bytes; this client reads {CHUNK_SIZE}",
            entry.chunk_size
        )));
    }
    Hash::from_slice(&entry.blake3, "file blake3")?;
    ChunkLayout::of(entry).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(())
}

/// The entry's layout; one that does not add up (refused by the header
/// check before) falls back to the fixed layout, whose checks then fail.
fn layout_of(entry: &FileEntry) -> ChunkLayout {
    ChunkLayout::of(entry).unwrap_or_else(|_| ChunkLayout::fixed(entry.size))
}

/// The per-chunk and whole-file checks of one download, as a small state
/// machine with no I/O.
#[derive(Debug)]
pub struct Checker {
    entry: FileEntry,
    layout: ChunkLayout,
    next: u64,
    hasher: blake3::Hasher,
}

impl Checker {
    /// Start checking a download described by `entry`.
    pub fn new(entry: FileEntry) -> Checker {
        Checker {
            layout: layout_of(&entry),
            entry,
            next: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Continue checking after the first `next` chunks, whose bytes
    /// `hasher` has already taken.
    pub fn resume(entry: FileEntry, next: u64, hasher: blake3::Hasher) -> Checker {
        Checker {
            layout: layout_of(&entry),
            entry,
            next,
            hasher,
        }
    }

    /// Accept the next chunk if it is the one expected, of the right length,
    /// hashes to what it declares, and matches the catalog's chunk list.
    pub fn take(&mut self, chunk: &Chunk) -> Result<()> {
        let hash = verify_in_layout(chunk, self.next, &self.layout)?;
        let listed =
            self.entry.chunks.get(self.next as usize).ok_or_else(|| {
                Error::Corrupt(format!("chunk {} is not in the catalog", self.next))
            })?;
        if hash.0.as_slice() != listed.as_ref() {
            return Err(Error::Corrupt(format!(
                "chunk {} of {} differs from the catalog",
                self.next, self.entry.name
            )));
        }
        self.hasher.update(&chunk.data);
        self.next += 1;
        Ok(())
    }

    /// After the last message: every chunk arrived and the whole file hashes
    /// to the catalog's blake3.
    pub fn finish(self) -> Result<(FileEntry, Hash)> {
        let want = self.layout.count();
        if self.next != want {
            return Err(Error::Aborted(format!(
                "the download of {} stopped after {} of {want} chunks",
                self.entry.name, self.next
            )));
        }
        let got = Hash::from(self.hasher.finalize());
        let expected = Hash::from_slice(&self.entry.blake3, "file blake3")?;
        if got != expected {
            return Err(Error::Corrupt(format!(
                "{} hashes to {got}, the catalog says {expected}",
                self.entry.name
            )));
        }
        Ok((self.entry, got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dupla::chunk::make;

    fn entry_for(data: &[u8]) -> (FileEntry, Vec<Chunk>) {
        let chunks: Vec<Chunk> = data
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, c)| make(i as u64, Bytes::copy_from_slice(c)))
            .collect();
        let entry = FileEntry {
            name: "f".into(),
            size: data.len() as u64,
            blake3: Hash::of(data).to_bytes(),
            chunks: chunks.iter().map(|c| c.hash.clone()).collect(),
            chunk_size: CHUNK_SIZE as u32,
            ..Default::default()
        };
        (entry, chunks)
    }

    #[test]
    fn a_good_stream_passes() {
        let data = vec![7u8; CHUNK_SIZE + 3];
        let (entry, chunks) = entry_for(&data);
        check_header(&entry, "f").unwrap();
        let mut check = Checker::new(entry);
        for c in &chunks {
            check.take(c).unwrap();
        }
        assert_eq!(check.finish().unwrap().1, Hash::of(&data));
    }

    #[test]
    fn reordered_missing_or_foreign_chunks_fail() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 2).map(|i| (i % 7) as u8).collect();
        let (entry, chunks) = entry_for(&data);

        let mut check = Checker::new(entry.clone());
        assert!(check.take(&chunks[1]).is_err());

        let mut check = Checker::new(entry.clone());
        check.take(&chunks[0]).unwrap();
        assert!(matches!(check.finish(), Err(Error::Aborted(_))));

        // A self-consistent chunk that is not the catalog's.
        let mut check = Checker::new(entry.clone());
        let foreign = make(0, Bytes::from(vec![9u8; CHUNK_SIZE]));
        assert!(matches!(check.take(&foreign), Err(Error::Corrupt(_))));

        // Chunks that match the list but not the whole-file hash.
        let mut bad = entry;
        bad.blake3 = Hash::of(b"other").to_bytes();
        let mut check = Checker::new(bad);
        for c in &chunks {
            check.take(c).unwrap();
        }
        assert!(matches!(check.finish(), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_resumed_check_takes_the_rest_and_the_whole_hash() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 3 + 1).map(|i| (i % 11) as u8).collect();
        let (entry, chunks) = entry_for(&data);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&data[..2 * CHUNK_SIZE]);
        let mut check = Checker::resume(entry.clone(), 2, hasher);
        assert!(check.take(&chunks[0]).is_err(), "chunk 0 is not next");
        let mut check = Checker::resume(entry.clone(), 2, {
            let mut h = blake3::Hasher::new();
            h.update(&data[..2 * CHUNK_SIZE]);
            h
        });
        check.take(&chunks[2]).unwrap();
        check.take(&chunks[3]).unwrap();
        assert_eq!(check.finish().unwrap().1, Hash::of(&data));
        // A prefix hashed wrong fails the whole-file check.
        let mut check = Checker::resume(entry, 2, blake3::Hasher::new());
        check.take(&chunks[2]).unwrap();
        check.take(&chunks[3]).unwrap();
        assert!(matches!(check.finish(), Err(Error::Corrupt(_))));
    }

    #[test]
    fn headers_are_checked() {
        let (entry, _) = entry_for(b"abc");
        assert!(check_header(&entry, "g").is_err());
        let mut short = entry.clone();
        short.chunks.clear();
        assert!(check_header(&short, "f").is_err());
        let mut odd = entry;
        odd.chunk_size = 4096;
        assert!(check_header(&odd, "f").is_err());
    }
}
