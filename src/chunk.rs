//! Files travel and rest as chunks: fixed-size pieces, each named by its blake3.
//!
//! Every chunk but a file's last is exactly [`CHUNK_SIZE`] bytes, so a chunk's
//! index alone gives its offset, and a resumed transfer can restart at any
//! chunk boundary. 1 MiB keeps a gRPC message large enough that per-message
//! costs vanish, and small enough that a handful in flight per hop bounds
//! memory.

use crate::{v1, Error, Hash, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of every chunk but a file's last, in bytes.
pub const CHUNK_SIZE: usize = 1 << 20;

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
    }
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

/// Check a received chunk: its hash, its position and its length within a
/// file of `size` bytes. `expected_index` is the chunk that must come next.
pub fn verify_in_file(chunk: &v1::Chunk, expected_index: u64, size: u64) -> Result<Hash> {
    if chunk.index != expected_index {
        return Err(Error::InvalidInput(format!(
            "chunk {} arrived where chunk {expected_index} was expected",
            chunk.index
        )));
    }
    let want = chunk_len(size, chunk.index)?;
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
        assert!(verify_in_file(&chunk, 0, CHUNK_SIZE as u64 + 5).is_err());
        assert!(verify_in_file(&chunk, 1, CHUNK_SIZE as u64 + 5).is_ok());
        assert!(verify_in_file(&chunk, 1, CHUNK_SIZE as u64 + 6).is_err());
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
