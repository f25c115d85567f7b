//! One upstream connection's I/O: a request written in one go, its response read into a
//! [`Buffer`] and its head parsed from it, and whether an idle connection is still open.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read as _, Write as _};

use super::buffer::Buffer;
use super::connect::Io;
use super::wire::{self, Head, ResponseHead, WireError};

/// What failed on an upstream connection, and where (the I/O error is the source: shown by
/// [`super::chain`]).
#[derive(Debug, thiserror::Error)]
pub(in crate::upstream) enum TransportError {
    /// Writing the request failed after `written` of its bytes.
    #[error("writing the request failed after {written} bytes")]
    Write {
        /// The socket's (or TLS's) error.
        source: std::io::Error,
        /// Bytes of the request accepted before it.
        written: usize,
    },
    /// Reading the response failed.
    #[error("reading the response failed")]
    Read(#[source] std::io::Error),
    /// The connection closed before a whole response head came.
    #[error("the connection closed before the response head")]
    ClosedBeforeHead,
    /// What came was not HTTP/1.1 as it must be.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl TransportError {
    /// Whether none of the request reached the connection (it may be sent elsewhere).
    pub(super) fn nothing_written(&self) -> bool {
        matches!(self, TransportError::Write { written: 0, .. })
    }
}

/// One open connection to a provider. Its stream is boxed: with TLS it holds rustls's
/// connection state (over 1 KB), which inline would size every waiting request's future and
/// every pooled entry.
pub(super) struct Conn {
    io: Box<Io>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    pub(super) fn new(io: Io) -> Conn {
        Conn { io: Box::new(io) }
    }

    /// Writes `head` and `body` (one vectored write when the socket takes it all) and
    /// flushes them (TLS holds written bytes until then).
    pub(super) async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), TransportError> {
        let total = head.len() + body.len();
        let mut written = 0;
        while written < total {
            let slices = if written < head.len() {
                [IoSlice::new(&head[written..]), IoSlice::new(body)]
            } else {
                [
                    IoSlice::new(&body[written - head.len()..]),
                    IoSlice::new(&[]),
                ]
            };
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_write_vectored(cx, &slices))
                    .await
                    .map_err(|source| TransportError::Write { source, written })?;
            if n == 0 {
                return Err(TransportError::Write {
                    source: std::io::ErrorKind::WriteZero.into(),
                    written,
                });
            }
            written += n;
        }
        std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx))
            .await
            .map_err(|source| TransportError::Write { source, written })
    }

    /// Reads up to the final response head (informational ones skipped, at most
    /// [`wire::MAX_INFORMATIONAL`]); the bytes after it stay in `buf`.
    pub(super) async fn read_head(
        &mut self,
        buf: &mut Buffer,
    ) -> Result<ResponseHead, TransportError> {
        let mut informational = 0;
        loop {
            match wire::parse_head(buf.filled(), buf.capacity())? {
                Head::Final { head, len } => {
                    buf.consume(len);
                    return Ok(*head);
                }
                Head::Informational { len } => {
                    buf.consume(len);
                    informational += 1;
                    if informational > wire::MAX_INFORMATIONAL {
                        return Err(WireError::TooManyInformational.into());
                    }
                }
                Head::Partial => {
                    let n = std::future::poll_fn(|cx| self.poll_fill(buf, cx))
                        .await
                        .map_err(TransportError::Read)?;
                    if n == 0 {
                        return Err(TransportError::ClosedBeforeHead);
                    }
                }
            }
        }
    }

    /// Reads into `buf` (see [`Buffer::poll_fill`]).
    pub(super) fn poll_fill(
        &mut self,
        buf: &mut Buffer,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        buf.poll_fill(&mut self.io, cx)
    }

    /// Whether this idle connection can take a request: read once without waiting, one the
    /// provider closed ends, and one the provider wrote to out of turn has bytes; either is
    /// not used again.
    pub(super) fn still_open(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut read = hyper::rt::ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, read.unfilled())
            .is_pending()
    }
}
