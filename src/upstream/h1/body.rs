//! A response body read straight from its connection by the task that reads the answer.
//!
//! The body's data is handed out as slices of the connection's read buffer, de-chunked in
//! place ([`Framing`]): no copy, no allocation, no channel and no other task per upstream
//! frame. The task is woken by the socket alone. A burst of frames read at once comes out
//! one chunk after another without reading again.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::buffer::{Buffer, Spare};
use super::conn::{Conn, TransportError};
use super::idle::Idle;
use super::wire::{Framing, Step};
use crate::upstream::pool::InFlight;

/// A response body that reads its own connection, and gives the connection back to the
/// provider's pool when the body ended cleanly and the connection may carry another request
/// (else closes it).
pub(in crate::upstream) struct Body {
    /// The connection while the body is read; None once it ended, broke or went to the pool.
    conn: Option<Conn>,
    buf: Buffer,
    framing: Framing,
    keep_alive: bool,
    /// Bytes of data handed out by the last poll: consumed at the next.
    lent: usize,
    idle: Arc<Idle>,
    /// Where `buf` goes when the body is dropped.
    spare: Arc<Spare>,
    /// Counts the request in flight until the body is dropped.
    _in_flight: Option<InFlight>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("ended", &self.conn.is_none())
            .finish_non_exhaustive()
    }
}

impl Body {
    /// The body framed by `framing`, whose first bytes may already be in `buf`.
    pub(super) fn new(
        conn: Conn,
        buf: Buffer,
        framing: Framing,
        keep_alive: bool,
        idle: &Arc<Idle>,
        spare: &Arc<Spare>,
        in_flight: Option<InFlight>,
    ) -> Body {
        Body {
            conn: Some(conn),
            buf,
            framing,
            keep_alive,
            lent: 0,
            idle: Arc::clone(idle),
            spare: Arc::clone(spare),
            _in_flight: in_flight,
        }
    }

    /// The next data of the body (valid until the next poll), None at its end; an error
    /// once, when the connection broke or framed the body wrongly, and None after it.
    pub(in crate::upstream) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<&[u8], TransportError>>> {
        self.buf.consume(std::mem::take(&mut self.lent));
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let step = match self.framing.step(self.buf.filled()) {
                Ok(step) => step,
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            match step {
                Step::Data(n) => {
                    self.lent = n;
                    return Poll::Ready(Some(Ok(&self.buf.filled()[..n])));
                }
                Step::Skip(n) => self.buf.consume(n),
                Step::Done(n) => {
                    self.buf.consume(n);
                    self.release();
                    return Poll::Ready(None);
                }
                Step::More => match conn.poll_fill(&mut self.buf, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        self.conn = None;
                        return Poll::Ready(self.framing.at_eof().err().map(|e| Err(e.into())));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(TransportError::Read(e))));
                    }
                },
            }
        }
    }

    /// The body ended cleanly: its connection goes back to the pool if it may carry another
    /// request and the provider sent nothing past the body, else it is closed.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.keep_alive && self.buf.filled().is_empty() {
            self.idle.put(conn);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.spare.put(std::mem::take(&mut self.buf));
    }
}
