//! Reading a staged upload while its request is still writing it. A PUT
//! that brings the whole rest of a file starts the commit at once and lets
//! it follow the appender, instead of waiting for the last byte and then
//! reading the file again: on a 100 MB upload the staging write and the
//! two-copy pipeline overlap (docs/performance.md, "HTTP API load test").
//! The appender publishes how many bytes the part file holds; the reader
//! never reads past that, and fails if the appender stops (request cut
//! short, refused) before the file is complete, which aborts the commit.

use std::io::{Error, ErrorKind, Read};
use tokio::sync::watch;

/// The appender's side: bytes of the part file written so far. Dropping it
/// says no more will come.
pub type Written = watch::Sender<u64>;

/// A reader of the first `size` bytes of a part file that may still grow.
pub struct Tail {
    file: std::fs::File,
    pos: u64,
    size: u64,
    written: watch::Receiver<u64>,
}

impl Tail {
    /// Read `file` from its start, up to `size` bytes, as fast as `written`
    /// allows. Blocking: use it on a blocking thread.
    pub fn new(file: std::fs::File, size: u64, written: watch::Receiver<u64>) -> Tail {
        Tail {
            file,
            pos: 0,
            size,
            written,
        }
    }
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        loop {
            let written = (*self.written.borrow_and_update()).min(self.size);
            if written > self.pos {
                let want = buf.len().min((written - self.pos) as usize);
                let n = self.file.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "the staged file is shorter than its writer said",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            // Wait for the appender (this is a blocking thread), or for it
            // to go: then what it wrote is all there is.
            if futures::executor::block_on(self.written.changed()).is_err()
                && *self.written.borrow() <= self.pos
            {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the request ended before the file did",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_the_writer_and_fails_when_it_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.part");
        let mut out = std::fs::File::create(&path).unwrap();
        let (written, progress) = watch::channel(0u64);
        let mut tail = Tail::new(std::fs::File::open(&path).unwrap(), 10, progress);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let result = tail.read_to_end(&mut got);
            (got, result.map_err(|e| e.kind()))
        });
        out.write_all(b"hello").unwrap();
        written.send_replace(5);
        out.write_all(b"wor").unwrap(); // not published: never read
        drop(written);
        let (got, result) = reader.join().unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(result, Err(ErrorKind::UnexpectedEof));

        let (written, progress) = watch::channel(8u64);
        let mut tail = Tail::new(std::fs::File::open(&path).unwrap(), 8, progress);
        drop(written);
        let mut got = Vec::new();
        tail.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hellowor");
    }
}
