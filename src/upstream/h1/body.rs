//! A response body read by polling its connection in the reader's own task.
//!
//! hyper's HTTP/1.1 connection hands body chunks to the body through a one-slot channel.
//! Polled here, in turn with the body, the connection reads the socket and fills the slot,
//! and the body empties it in the same poll: no other task runs, none is woken.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::Body as _;

use super::Conn;
use super::idle::Idle;
use crate::upstream::pool::InFlight;

/// A response body that drives its own connection, and gives the connection back to the
/// provider's pool when the body ended cleanly (else closes it).
pub(in crate::upstream) struct Body {
    incoming: hyper::body::Incoming,
    /// The connection while the body is read; None once it finished or went to the pool.
    conn: Option<Conn>,
    idle: Arc<Idle>,
    ended: bool,
    /// Counts the request in flight until the body is dropped.
    _in_flight: Option<InFlight>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Body {
    pub(super) fn new(
        incoming: hyper::body::Incoming,
        conn: Option<Conn>,
        idle: &Arc<Idle>,
        in_flight: Option<InFlight>,
    ) -> Body {
        Body {
            incoming,
            conn,
            idle: Arc::clone(idle),
            ended: false,
            _in_flight: in_flight,
        }
    }

    /// The body's next data, without polling the connection.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        loop {
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Empty data or trailers: nothing for the reader.
                    _ => {}
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Polls the connection once; drops it if it finished (closed, or broke).
    fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && conn.connection.as_mut().poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// The body ended cleanly: the connection goes back to the pool if hyper settled it into
    /// idle (it wants the next request), else it is closed.
    fn release(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Polled once more with a waker that wakes nothing: the socket is not this task's
        // business any more (the next user polls it with its own).
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        if conn.connection.as_mut().poll(&mut cx).is_pending() && conn.sender.is_ready() {
            self.idle.put(conn);
        }
    }
}

impl Stream for Body {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        // The body first (a chunk may be waiting in its slot), then the connection (which
        // reads the socket and fills the slot), then the body again.
        let mut item = this.poll_data(cx);
        if item.is_pending() && this.conn.is_some() {
            this.poll_connection(cx);
            item = this.poll_data(cx);
        }
        match &item {
            Poll::Ready(None) => {
                this.ended = true;
                this.release();
            }
            Poll::Ready(Some(Err(_))) => {
                // A broken body leaves the connection unusable: closed.
                this.ended = true;
                this.conn = None;
            }
            _ => {}
        }
        item
    }
}
