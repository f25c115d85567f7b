//! A response body read by polling its connection in the reader's own task.
//!
//! hyper's HTTP/1.1 connection hands body chunks to the body through a one-slot channel.
//! Polled here, in turn with the body, the connection reads the socket and fills the slot,
//! and the body empties it in the same poll: no other task runs.
//!
//! Both are polled with a waker of the body's own ([`Nudge`]), not the task's: each side of
//! that channel wakes the other as it fills or empties the slot, and with the task's waker
//! each of those wakes, made while the task runs, had the whole connection task polled once
//! more for nothing (two task polls per upstream frame, each down to the socket). The nudge
//! only notes such a wake; it passes on to the task the wakes that come while the body is not
//! being polled (the socket became readable). A reader that polls again before anything
//! happened gets `Pending` from the slot without the connection being polled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use http_body::Body as _;

use super::Conn;
use super::idle::Idle;
use crate::upstream::pool::InFlight;

/// Most times one poll of the body polls its connection while the connection keeps waking
/// it without a chunk: then the task is woken to come back, and others get their turn.
const MAX_CONNECTION_POLLS: usize = 32;

/// The waker the connection and the body's slot are polled with (see the module doc).
#[derive(Debug, Default)]
struct Nudge {
    /// Something the connection or the slot waits on happened since the last look.
    woken: AtomicBool,
    /// The body is being polled: a wake now is seen by that poll and needs no task poll.
    polling: AtomicBool,
    /// The task reading the body.
    task: AtomicWaker,
}

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// A response body that drives its own connection, and gives the connection back to the
/// provider's pool when the body ended cleanly (else closes it).
pub(in crate::upstream) struct Body {
    incoming: hyper::body::Incoming,
    /// The connection while the body is read; None once it finished or went to the pool.
    conn: Option<Conn>,
    idle: Arc<Idle>,
    ended: bool,
    nudge: Arc<Nudge>,
    /// `nudge` as a waker, made once.
    waker: Waker,
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
        // Woken at first: the connection may hold what came with the response head.
        let nudge = Arc::new(Nudge {
            woken: AtomicBool::new(true),
            ..Nudge::default()
        });
        Body {
            incoming,
            conn,
            idle: Arc::clone(idle),
            ended: false,
            waker: Waker::from(Arc::clone(&nudge)),
            nudge,
            _in_flight: in_flight,
        }
    }

    /// The next data: from the slot, else from the connection as long as the nudge says
    /// something happened. Called with `polling` set.
    fn poll_nudged(&mut self) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        let mut cx = Context::from_waker(&self.waker);
        for _ in 0..MAX_CONNECTION_POLLS {
            let item = poll_data(&mut self.incoming, &mut cx);
            if item.is_ready() || self.conn.is_none() {
                return item;
            }
            if self.nudge.woken.swap(false, Ordering::SeqCst) {
                poll_connection(&mut self.conn, &mut cx);
                continue;
            }
            // A wake from another thread while `polling` was set reached no task: look once
            // more with `polling` cleared, after which every wake reaches the task.
            self.nudge.polling.store(false, Ordering::SeqCst);
            if !self.nudge.woken.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            self.nudge.polling.store(true, Ordering::SeqCst);
        }
        // The connection keeps waking without a chunk: come back after the others' turn.
        self.nudge.task.wake();
        Poll::Pending
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

/// The body's next data, without polling the connection.
fn poll_data(
    incoming: &mut hyper::body::Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, hyper::Error>>> {
    loop {
        match Pin::new(&mut *incoming).poll_frame(cx) {
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
fn poll_connection(conn: &mut Option<Conn>, cx: &mut Context<'_>) {
    if let Some(c) = conn
        && c.connection.as_mut().poll(cx).is_ready()
    {
        *conn = None;
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
        this.nudge.task.register(cx.waker());
        this.nudge.polling.store(true, Ordering::SeqCst);
        let item = this.poll_nudged();
        this.nudge.polling.store(false, Ordering::SeqCst);
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
