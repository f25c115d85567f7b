//! The read buffer of an answer, and the spare ones a provider's client keeps for the next.
//!
//! A buffer is zeroed once, when it is first made (the gateway has no `unsafe` to read into
//! uninitialised memory), and then reused: zeroing a fresh 8 KiB buffer for every answer was
//! 5k instructions of calloc's memset per request (issue #14).

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use hyper::rt::Read as _;

use super::connect::Io;

/// The bytes read from a connection and not yet consumed: a fixed buffer, which also caps a
/// response head.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// The bytes read and not yet consumed.
    pub(super) fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// The first `n` of [`Self::filled`] are used.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    pub(super) fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Reads what `io` has into the room left (made by moving the unconsumed bytes to the
    /// front when they reach the end); the count read, 0 at the end of the connection.
    pub(super) fn poll_fill(
        &mut self,
        io: &mut Io,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.bytes.len() {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.bytes.len() {
            // The callers' caps (a head, a line) are below the buffer's size.
            return Poll::Ready(Err(std::io::Error::other("read buffer full")));
        }
        let mut read = hyper::rt::ReadBuf::new(&mut self.bytes[self.end..]);
        ready!(Pin::new(io).poll_read(cx, read.unfilled()))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

/// Buffers of answers that ended, kept for the next ones (at most `cap`, so a burst's worth
/// is not kept forever).
#[derive(Debug)]
pub(super) struct Spare {
    stack: Mutex<Vec<Box<[u8]>>>,
    size: usize,
    cap: usize,
}

impl Spare {
    /// Keeps at most `cap` buffers of `size` bytes.
    pub(super) fn new(size: usize, cap: usize) -> Spare {
        Spare {
            stack: Mutex::new(Vec::new()),
            size,
            cap,
        }
    }

    /// An empty buffer: a kept one, or a new one.
    pub(super) fn take(&self) -> Buffer {
        let bytes = self
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice());
        Buffer {
            bytes,
            start: 0,
            end: 0,
        }
    }

    /// Keeps `buf` for the next answer, unless enough are kept.
    pub(super) fn put(&self, buf: Buffer) {
        if buf.bytes.len() != self.size {
            return;
        }
        let mut stack = self.lock();
        if stack.len() < self.cap {
            stack.push(buf.bytes);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<[u8]>>> {
        // A push or a pop cannot leave the stack half-changed: the data is good after a panic.
        self.stack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers come back empty whatever they held, no more than the cap are kept, and one
    /// of another size (the default, empty one a dropped answer may hold) is not kept.
    #[test]
    fn spare_buffers_come_back_empty_and_are_capped() {
        let spare = Spare::new(64, 2);
        let mut bufs: Vec<Buffer> = (0..3).map(|_| spare.take()).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            b.bytes[..5].copy_from_slice(b"stale");
            b.end = 5;
            b.start = i;
        }
        for b in bufs {
            spare.put(b);
        }
        spare.put(Buffer::default());
        assert_eq!(spare.len(), 2);
        let again = spare.take();
        assert!(again.filled().is_empty());
        assert_eq!(again.capacity(), 64);
        assert_eq!(spare.len(), 1);
    }
}
