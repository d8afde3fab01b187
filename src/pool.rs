//! Reused byte buffers for the data path. A chunk read from a file or a
//! disk is handed out as a [`Bytes`] slice of a pooled buffer, and the
//! buffer goes back to its pool when the last slice is dropped: no fresh
//! allocation, and no page faults, per chunk.

use bytes::Bytes;
use std::ops::Range;
use std::sync::Mutex;

/// Buffers of one size, at most `keep` of them kept for reuse.
pub struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `keep` idle ones
    /// (`const`, so a pool can be a `static`).
    pub const fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of the pool's size (zeroed when new, stale bytes when reused).
    pub fn take(&'static self) -> Pooled {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        Pooled {
            buffer: reused.unwrap_or_else(|| vec![0u8; self.size]),
            range: 0..0,
            pool: self,
        }
    }
}

/// A buffer out of a [`BufferPool`], back in it when dropped.
pub struct Pooled {
    buffer: Vec<u8>,
    range: Range<usize>,
    pool: &'static BufferPool,
}

impl Pooled {
    /// The whole buffer, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buffer
    }

    /// The bytes at `range` of the buffer, sharing it: the buffer returns
    /// to its pool when the last slice of them is dropped.
    pub fn into_bytes(mut self, range: Range<usize>) -> Bytes {
        assert!(range.end <= self.buffer.len(), "range past the buffer");
        self.range = range;
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        if let Ok(mut free) = self.pool.free.lock() {
            if free.len() < self.pool.keep {
                free.push(buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static POOL: BufferPool = BufferPool::new(16, 1);

    #[test]
    fn a_buffer_returns_when_its_last_slice_goes_and_the_pool_stays_bounded() {
        let mut a = POOL.take();
        a.as_mut_slice()[..3].copy_from_slice(b"abc");
        let bytes = a.into_bytes(0..3);
        let slice = bytes.slice(1..);
        drop(bytes);
        assert_eq!(POOL.free.lock().unwrap().len(), 0, "a slice still uses it");
        assert_eq!(slice.as_ref(), b"bc");
        drop(slice);
        assert_eq!(POOL.free.lock().unwrap().len(), 1);
        let (b, c) = (POOL.take(), POOL.take());
        assert_eq!(POOL.free.lock().unwrap().len(), 0);
        drop((b, c));
        assert_eq!(POOL.free.lock().unwrap().len(), 1, "keeps at most `keep`");
    }
}
