//! Files travel and rest as chunks: pieces of at most 2 MiB (about 1 MiB
//! on average), each named by its blake3.
//!
//! New uploads are cut by content ([`Chunker`], FastCDC 2020): a boundary
//! depends only on the bytes around it, so inserting or deleting bytes in a
//! file changes the chunks near the edit and leaves the others (and their
//! hashes) as they were; an incremental backup sends only the changed ones.
//! Each file's catalog entry lists its chunks' lengths; files stored before
//! keep the fixed layout (every chunk but the last exactly [`CHUNK_SIZE`]).
//! [`ChunkLayout`] hides the difference: a chunk's offset and length come
//! from it, never from `index * CHUNK_SIZE`. About 1 MiB keeps a gRPC
//! message large enough that per-message costs vanish, and small enough that
//! a handful in flight per hop bounds memory; on a disk, every chunk is a
//! file, and each file costs an inode, a creation and a sync.

use crate::{v1, Error, Hash, Result};
use bytes::{Bytes, BytesMut};
use std::io::Read;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of every chunk but a file's last in the fixed layout of files
/// stored before content-defined chunking, and the largest chunk of any file.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Smallest chunk the chunker cuts (but a file's last): keeps the chunk
/// list, and per-chunk costs, at most twice what 1 MiB chunks have.
pub const MIN_CHUNK_SIZE: usize = 512 << 10;

/// Average chunk the chunker aims for (restic's too): an edit re-sends about
/// 1 MiB, and per-chunk costs (a file, a hash check, a message on every hop)
/// stay small beside the bytes. 512 KiB chunks cost 8 % more CPU per GiB
/// backed up on the 2-core benchmark machine (docs/performance.md).
pub const AVG_CHUNK_SIZE: usize = 1 << 20;

/// Largest chunk of any file. With normalized chunking at level 2 (cuts
/// made harder before the average and easier after) fewer than 2 % of the
/// chunks reach it, so a cut forced here, which does not follow the
/// content, is rare.
pub const MAX_CHUNK_SIZE: usize = 2 << 20;

/// How strongly cuts are pulled towards [`AVG_CHUNK_SIZE`].
const NORMALIZATION: fastcdc::v2020::Normalization = fastcdc::v2020::Normalization::Level2;

/// Most chunks one upload may send by reference (`UploadBegin.held_chunks`):
/// 30,000 hashes of 32 bytes stay under the 1 MiB request limit.
pub const MAX_HELD_CHUNKS: usize = 30_000;

/// Cuts a byte stream into content-defined chunks (FastCDC 2020, with
/// [`MIN_CHUNK_SIZE`], [`AVG_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`]), reading
/// it once. The same bytes always give the same chunks, and the same ones
/// `fastcdc`'s own `StreamCDC` gives: each cut is searched in a window of
/// [`MAX_CHUNK_SIZE`] bytes (fewer only at the end).
///
/// Unlike `StreamCDC`, which copies every chunk out of its buffer into a
/// fresh allocation and shifts the rest of the buffer down, the chunks are
/// slices of large pooled blocks: the file is read once into a block and
/// only the unfinished chunk at a block's end is copied (into the next).
/// On a machine whose cores are the limit of a backup, the copies and the
/// page faults of fresh buffers were a tenth of the client's work.
pub struct Chunker<R: Read> {
    reader: R,
    /// Bytes read and not cut yet: the tail of the current block.
    pending: Bytes,
    eof: bool,
    mask_s: u64,
    mask_l: u64,
}

/// Bytes read from a source at a time: chunks are sliced out of blocks of
/// this size, and all but an eighth or so of a file is never copied (a
/// block is refilled when less than [`MAX_CHUNK_SIZE`] is left in it).
const BLOCK_SIZE: usize = 8 << 20;

/// Blocks, and how many are kept for the next chunkers once every chunk of
/// theirs is gone, so that a backup of many files does not allocate (and
/// fault in) a fresh block for each.
static BLOCKS: crate::pool::BufferPool = crate::pool::BufferPool::new(BLOCK_SIZE, 4);

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R) -> Self {
        let (mask_s, mask_l) = fastcdc::v2020::select_masks(AVG_CHUNK_SIZE, NORMALIZATION);
        Chunker {
            reader,
            pending: Bytes::new(),
            eof: false,
            mask_s,
            mask_l,
        }
    }

    /// Start a new block with the uncut bytes, then fill it from the source.
    fn refill(&mut self) -> std::io::Result<()> {
        let mut block = BLOCKS.take();
        let space = block.as_mut_slice();
        let carried = self.pending.len();
        space[..carried].copy_from_slice(&self.pending);
        let mut filled = carried;
        while filled < space.len() {
            match self.reader.read(&mut space[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending = block.into_bytes(0..filled);
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.len() < MAX_CHUNK_SIZE && !self.eof {
            if let Err(e) = self.refill() {
                return Some(Err(e));
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let window = &self.pending[..self.pending.len().min(MAX_CHUNK_SIZE)];
        let (_, cut) = fastcdc::v2020::cut(
            window,
            MIN_CHUNK_SIZE,
            AVG_CHUNK_SIZE,
            MAX_CHUNK_SIZE,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        Some(Ok(self.pending.split_to(cut)))
    }
}

/// Where each chunk of one file lies: from the entry's `chunk_lengths`
/// (content-defined chunks), or the fixed layout of older files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLayout {
    size: u64,
    /// Offset of each chunk, plus `size` at the end; `None` for the fixed
    /// layout.
    offsets: Option<Vec<u64>>,
    /// Chunk size of the fixed layout.
    fixed: u64,
}

impl ChunkLayout {
    /// The fixed layout of a `size`-byte file stored before content-defined
    /// chunking: every chunk but the last is [`CHUNK_SIZE`].
    pub fn fixed(size: u64) -> ChunkLayout {
        ChunkLayout {
            size,
            offsets: None,
            fixed: CHUNK_SIZE as u64,
        }
    }

    /// The layout of a `size`-byte file cut into chunks of `lengths`, which
    /// must each be 1..=[`MAX_CHUNK_SIZE`] and sum to `size`.
    pub fn from_lengths(size: u64, lengths: &[u32]) -> Result<ChunkLayout> {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        let mut at = 0u64;
        for (i, &len) in lengths.iter().enumerate() {
            if len == 0 || len as usize > MAX_CHUNK_SIZE {
                return Err(Error::InvalidInput(format!(
                    "chunk {i} is {len} bytes long; chunks are 1 to {MAX_CHUNK_SIZE} bytes"
                )));
            }
            offsets.push(at);
            at += len as u64;
        }
        if at != size {
            return Err(Error::InvalidInput(format!(
                "the chunk lengths add up to {at} bytes, not the file's {size}"
            )));
        }
        offsets.push(at);
        Ok(ChunkLayout {
            size,
            offsets: Some(offsets),
            fixed: 0,
        })
    }

    /// The layout of a catalog entry: its `chunk_lengths`, or when there are
    /// none the fixed layout of its `chunk_size` (1 MiB when unset). Checks
    /// that the entry lists one hash per chunk.
    pub fn of(entry: &v1::FileEntry) -> Result<ChunkLayout> {
        let layout = if entry.chunk_lengths.is_empty() {
            let fixed = match entry.chunk_size {
                0 => CHUNK_SIZE as u64,
                n if n as usize <= MAX_CHUNK_SIZE => n as u64,
                n => {
                    return Err(Error::InvalidInput(format!(
                        "{}: chunks of {n} bytes are larger than {MAX_CHUNK_SIZE}",
                        entry.name
                    )))
                }
            };
            ChunkLayout {
                size: entry.size,
                offsets: None,
                fixed,
            }
        } else {
            ChunkLayout::from_lengths(entry.size, &entry.chunk_lengths)
                .map_err(|e| e.map_message(|m| format!("{}: {m}", entry.name)))?
        };
        if entry.chunks.len() as u64 != layout.count() {
            return Err(Error::Corrupt(format!(
                "{}: the catalog lists {} chunks for {} bytes (expected {})",
                entry.name,
                entry.chunks.len(),
                entry.size,
                layout.count()
            )));
        }
        Ok(layout)
    }

    /// Whether the lengths come from a list (content-defined chunks).
    pub fn is_variable(&self) -> bool {
        self.offsets.is_some()
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of chunks (0 for an empty file).
    pub fn count(&self) -> u64 {
        match &self.offsets {
            Some(offsets) => offsets.len() as u64 - 1,
            None => self.size.div_ceil(self.fixed),
        }
    }

    /// Offset of chunk `index`; `offset(count())` is the size, and any
    /// larger index gives the size too.
    pub fn offset(&self, index: u64) -> u64 {
        match &self.offsets {
            Some(offsets) => offsets.get(index as usize).copied().unwrap_or(self.size),
            None => index.saturating_mul(self.fixed).min(self.size),
        }
    }

    /// Length of chunk `index`; an error past the last chunk.
    pub fn len(&self, index: u64) -> Result<usize> {
        if index >= self.count() {
            return Err(Error::InvalidInput(format!(
                "chunk {index} lies beyond the {} chunks of a {}-byte file",
                self.count(),
                self.size
            )));
        }
        Ok((self.offset(index + 1) - self.offset(index)) as usize)
    }

    /// Whether the file has no chunks.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The chunk holding byte `offset` (`count()` when `offset` is the size
    /// or beyond).
    pub fn index_at(&self, offset: u64) -> u64 {
        if offset >= self.size {
            return self.count();
        }
        match &self.offsets {
            Some(offsets) => (offsets.partition_point(|&o| o <= offset) - 1) as u64,
            None => offset / self.fixed,
        }
    }

    /// Bytes in the first `chunks` chunks.
    pub fn prefix_bytes(&self, chunks: u64) -> u64 {
        self.offset(chunks)
    }
}

/// Chunks one `Storage/Replicate` request lists (512 KiB of hashes): a file
/// with more is copied window by window.
pub const REPLICATE_WINDOW_CHUNKS: usize = 16_384;

/// Number of chunks of a file of `size` bytes (0 for an empty file).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

/// Expected length of chunk `index` of a file of `size` bytes.
pub fn chunk_len(size: u64, index: u64) -> Result<usize> {
    let start = index
        .checked_mul(CHUNK_SIZE as u64)
        .filter(|start| *start < size)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "chunk {index} lies beyond the declared size of {size} bytes"
            ))
        })?;
    Ok((size - start).min(CHUNK_SIZE as u64) as usize)
}

/// Build a wire chunk, hashing its data.
pub fn make(index: u64, data: Bytes) -> v1::Chunk {
    let hash = Hash::of(&data);
    v1::Chunk {
        index,
        data,
        hash: hash.to_bytes(),
        held_length: 0,
    }
}

/// Build a wire chunk sent by reference: no data, its hash and length.
pub fn held(index: u64, hash: Hash, len: u32) -> v1::Chunk {
    v1::Chunk {
        index,
        data: Bytes::new(),
        hash: hash.to_bytes(),
        held_length: len,
    }
}

/// Cut `data` with the [`Chunker`] (tests and small buffers).
pub fn cut(data: &[u8]) -> Vec<Bytes> {
    Chunker::new(data)
        .collect::<std::io::Result<Vec<_>>>()
        .expect("invariant: reading a slice cannot fail")
}

/// Check a received chunk against its declared hash; returns the hash.
pub fn verify(chunk: &v1::Chunk) -> Result<Hash> {
    let declared = Hash::from_slice(&chunk.hash, "chunk hash")?;
    let actual = Hash::of(&chunk.data);
    if actual != declared {
        return Err(Error::Corrupt(format!(
            "chunk {} hashes to {} but was sent as {}",
            chunk.index, actual, declared
        )));
    }
    Ok(declared)
}

/// Check a chunk of an upload stream, whose chunk lengths the receiver does
/// not know in advance: it must be chunk `expected_index`, 1 to
/// [`MAX_CHUNK_SIZE`] bytes long (its `held_length` for a chunk sent by
/// reference, whose data is then empty), fit in what is left of a
/// `size`-byte file after the `received` bytes before it, and (unless held)
/// hash to its declared blake3. Returns the hash and the length.
pub fn verify_streamed(
    chunk: &v1::Chunk,
    expected_index: u64,
    received: u64,
    size: u64,
) -> Result<(Hash, u32)> {
    if chunk.index != expected_index {
        return Err(Error::InvalidInput(format!(
            "chunk {} arrived where chunk {expected_index} was expected",
            chunk.index
        )));
    }
    let held = chunk.held_length != 0;
    if held && !chunk.data.is_empty() {
        return Err(Error::InvalidInput(format!(
            "chunk {} is sent by reference but carries {} bytes",
            chunk.index,
            chunk.data.len()
        )));
    }
    let len = if held {
        chunk.held_length as usize
    } else {
        chunk.data.len()
    };
    if len == 0 || len > MAX_CHUNK_SIZE {
        return Err(Error::InvalidInput(format!(
            "chunk {} has {len} bytes; chunks are 1 to {MAX_CHUNK_SIZE} bytes",
            chunk.index
        )));
    }
    if received.saturating_add(len as u64) > size {
        return Err(Error::InvalidInput(format!(
            "chunk {} ends at byte {}, beyond the declared size of {size} bytes",
            chunk.index,
            received.saturating_add(len as u64)
        )));
    }
    let hash = if held {
        Hash::from_slice(&chunk.hash, "chunk hash")?
    } else {
        verify(chunk)?
    };
    Ok((hash, len as u32))
}

/// Check a downloaded chunk against a known layout: its position, its
/// length and its hash.
pub fn verify_in_layout(
    chunk: &v1::Chunk,
    expected_index: u64,
    layout: &ChunkLayout,
) -> Result<Hash> {
    if chunk.index != expected_index {
        return Err(Error::InvalidInput(format!(
            "chunk {} arrived where chunk {expected_index} was expected",
            chunk.index
        )));
    }
    let want = layout.len(chunk.index)?;
    if chunk.data.len() != want {
        return Err(Error::InvalidInput(format!(
            "chunk {} has {} bytes, expected {want}",
            chunk.index,
            chunk.data.len()
        )));
    }
    verify(chunk)
}

/// Read the next chunk from `reader`: exactly [`CHUNK_SIZE`] bytes unless
/// the input ends first. Returns an empty buffer at end of input.
pub async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
    while buf.len() < CHUNK_SIZE {
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Chunks cut before must keep their boundaries (and hashes), or an
    /// incremental backup would send everything again: the pooled chunker
    /// cuts exactly where fastcdc's `StreamCDC` does, across block edges.
    #[test]
    fn cuts_exactly_where_streamcdc_cuts() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..(BLOCK_SIZE * 3 + 12_345))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for len in [
            0,
            1,
            MIN_CHUNK_SIZE,
            MAX_CHUNK_SIZE + 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            data.len(),
        ] {
            let input = &data[..len];
            let ours: Vec<Bytes> = Chunker::new(input).map(|c| c.unwrap()).collect();
            let theirs: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level(
                input,
                MIN_CHUNK_SIZE,
                AVG_CHUNK_SIZE,
                MAX_CHUNK_SIZE,
                NORMALIZATION,
            )
            .map(|c| c.unwrap().data)
            .collect();
            assert_eq!(ours.len(), theirs.len(), "{len} bytes");
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(a.as_ref(), b.as_slice(), "{len} bytes");
            }
        }
    }

    /// Chunks average about [`AVG_CHUNK_SIZE`], and a cut forced at
    /// [`MAX_CHUNK_SIZE`] (one that ignores the content, so an insertion
    /// before it shifts it) is rare.
    #[test]
    fn chunks_average_about_one_mib_and_rarely_hit_the_maximum() {
        let data = random(128 << 20, 7);
        let lengths: Vec<usize> = Chunker::new(&data[..]).map(|c| c.unwrap().len()).collect();
        let full = &lengths[..lengths.len() - 1];
        let mean = full.iter().sum::<usize>() / full.len();
        let at_max = full.iter().filter(|&&l| l == MAX_CHUNK_SIZE).count();
        assert!(full.iter().all(|&l| l >= MIN_CHUNK_SIZE));
        assert!(
            (AVG_CHUNK_SIZE * 9 / 10..AVG_CHUNK_SIZE * 3 / 2).contains(&mean),
            "mean {mean} over {} chunks",
            full.len()
        );
        assert!(
            at_max * 20 <= full.len(),
            "{at_max} of {} chunks cut at the maximum",
            full.len()
        );
    }

    #[test]
    fn a_source_that_reads_a_few_bytes_at_a_time_cuts_the_same() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(4093);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..(12 << 20))
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole: Vec<Bytes> = Chunker::new(data.as_slice()).map(|c| c.unwrap()).collect();
        let trickled: Vec<Bytes> = Chunker::new(Trickle(&data)).map(|c| c.unwrap()).collect();
        assert_eq!(whole, trickled);
        assert!(
            whole.len() > 4,
            "the data is cut by content, not only at the maximum"
        );
    }

    #[test]
    fn counts_and_lengths_at_the_edges() {
        let c = CHUNK_SIZE as u64;
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(c), 1);
        assert_eq!(chunk_count(c + 1), 2);
        assert_eq!(chunk_len(c + 1, 0).unwrap(), CHUNK_SIZE);
        assert_eq!(chunk_len(c + 1, 1).unwrap(), 1);
        assert!(chunk_len(c, 1).is_err());
        assert!(chunk_len(0, 0).is_err());
        assert!(chunk_len(10, u64::MAX).is_err());
    }

    #[test]
    fn tampered_chunk_is_corrupt() {
        let mut chunk = make(0, Bytes::from_static(b"hello"));
        assert!(verify(&chunk).is_ok());
        chunk.data = Bytes::from_static(b"hellp");
        assert!(matches!(verify(&chunk), Err(Error::Corrupt(_))));
    }

    #[test]
    fn out_of_order_and_short_chunks_are_refused() {
        let chunk = make(1, Bytes::from(vec![0u8; 5]));
        let fixed = |size| ChunkLayout::fixed(size);
        assert!(verify_in_layout(&chunk, 0, &fixed(CHUNK_SIZE as u64 + 5)).is_err());
        assert!(verify_in_layout(&chunk, 1, &fixed(CHUNK_SIZE as u64 + 5)).is_ok());
        assert!(verify_in_layout(&chunk, 1, &fixed(CHUNK_SIZE as u64 + 6)).is_err());
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn hashes(pieces: &[Bytes]) -> std::collections::HashSet<Hash> {
        pieces.iter().map(|p| Hash::of(p)).collect()
    }

    #[test]
    fn one_byte_inserted_at_the_start_changes_at_most_two_chunks() {
        let data = random(20 << 20, 1);
        let before = cut(&data);
        let mut edited = vec![0x5a];
        edited.extend_from_slice(&data);
        let after = cut(&edited);
        let old = hashes(&before);
        let changed = after.iter().filter(|p| !old.contains(&Hash::of(p))).count();
        assert!(changed <= 2, "{changed} of {} chunks changed", after.len());
        assert_eq!(after.concat(), edited);
    }

    #[test]
    fn appending_changes_only_the_tail() {
        let data = random(20 << 20, 2);
        let before = cut(&data);
        let mut grown = data.clone();
        grown.extend_from_slice(&random(1 << 20, 3));
        let after = cut(&grown);
        // Every chunk but the old last one is kept, in place.
        let kept = before.len() - 1;
        assert_eq!(&after[..kept], &before[..kept]);
        let tail: usize = after[kept..].iter().map(Bytes::len).sum();
        assert!(tail <= before[kept].len() + (1 << 20) + MAX_CHUNK_SIZE);
        assert_eq!(after.concat(), grown);
    }

    #[test]
    fn layouts_give_offsets_lengths_and_positions() {
        let layout = ChunkLayout::from_lengths(10, &[3, 5, 2]).unwrap();
        assert_eq!(layout.count(), 3);
        assert_eq!(
            (0..4).map(|i| layout.offset(i)).collect::<Vec<_>>(),
            [0, 3, 8, 10]
        );
        assert_eq!(layout.len(1).unwrap(), 5);
        assert!(layout.len(3).is_err());
        assert_eq!(layout.index_at(0), 0);
        assert_eq!(layout.index_at(2), 0);
        assert_eq!(layout.index_at(3), 1);
        assert_eq!(layout.index_at(9), 2);
        assert_eq!(layout.index_at(10), 3);
        assert!(ChunkLayout::from_lengths(11, &[3, 5, 2]).is_err());
        assert!(ChunkLayout::from_lengths(3, &[3, 0]).is_err());
        assert!(ChunkLayout::from_lengths(2 << 20, &[1 << 20, 1 << 20]).is_ok());
        let too_long = MAX_CHUNK_SIZE as u32 + 1;
        assert!(ChunkLayout::from_lengths(too_long.into(), &[too_long]).is_err());
        assert!(ChunkLayout::from_lengths(too_long.into(), &[too_long - 1, 1]).is_ok());
        let fixed = ChunkLayout::fixed(2 * CHUNK_SIZE as u64 + 1);
        assert_eq!(fixed.count(), 3);
        assert_eq!(fixed.len(2).unwrap(), 1);
        assert_eq!(fixed.index_at(CHUNK_SIZE as u64), 1);
        assert_eq!(fixed.offset(5), fixed.size());
    }

    #[test]
    fn streamed_chunks_are_checked_without_a_layout() {
        let chunk = make(0, Bytes::from(vec![1u8; 10]));
        assert_eq!(verify_streamed(&chunk, 0, 0, 10).unwrap().1, 10);
        assert!(verify_streamed(&chunk, 1, 0, 10).is_err());
        assert!(verify_streamed(&chunk, 0, 1, 10).is_err());
        let by_ref = held(2, Hash::of(b"x"), 7);
        assert_eq!(
            verify_streamed(&by_ref, 2, 3, 10).unwrap(),
            (Hash::of(b"x"), 7)
        );
        let mut both = by_ref.clone();
        both.data = Bytes::from_static(b"x");
        assert!(verify_streamed(&both, 2, 3, 10).is_err());
        let too_long = held(0, Hash::of(b"x"), MAX_CHUNK_SIZE as u32 + 1);
        assert!(verify_streamed(&too_long, 0, 0, u64::MAX).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn cdc_chunks_tile_the_input(len in 0usize..(5 << 20), seed in any::<u64>()) {
            let data = random(len, seed);
            let pieces = cut(&data);
            prop_assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= MAX_CHUNK_SIZE));
            let n = pieces.len();
            prop_assert!(pieces.iter().take(n.saturating_sub(1)).all(|p| p.len() >= MIN_CHUNK_SIZE));
            let lengths: Vec<u32> = pieces.iter().map(|p| p.len() as u32).collect();
            let layout = ChunkLayout::from_lengths(len as u64, &lengths).unwrap();
            for (i, p) in pieces.iter().enumerate() {
                let at = layout.offset(i as u64) as usize;
                prop_assert_eq!(&data[at..at + p.len()], &p[..]);
                prop_assert_eq!(layout.index_at(at as u64), i as u64);
            }
            prop_assert_eq!(pieces.concat(), data);
        }
    }

    proptest! {
        #[test]
        fn chunks_tile_any_size(size in 0u64..(10 * CHUNK_SIZE as u64)) {
            let n = chunk_count(size);
            let total: u64 = (0..n).map(|i| chunk_len(size, i).unwrap() as u64).sum();
            prop_assert_eq!(total, size);
            prop_assert!(chunk_len(size, n).is_err());
        }

        #[test]
        fn read_chunk_splits_input_exactly(len in 0usize..(3 * CHUNK_SIZE + 7)) {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let pieces = rt.block_on(async {
                let mut reader = &data[..];
                let mut pieces = Vec::new();
                loop {
                    let piece = read_chunk(&mut reader).await.unwrap();
                    if piece.is_empty() { break; }
                    pieces.push(piece);
                }
                pieces
            });
            prop_assert_eq!(pieces.len() as u64, chunk_count(len as u64));
            prop_assert_eq!(pieces.concat(), data);
        }
    }
}
