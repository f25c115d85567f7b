//! A response body read by polling its connection in the reader's own task.
//!
//! hyper's HTTP/1.1 connection hands body chunks to the body through a one-slot channel.
//! Polled here, in turn with the body, the connection reads the socket and fills the slot,
//! and the body empties it in the same poll: no other task runs.
//!
//! Both ends of that channel wake the other's waker (a chunk sent, a slot freed): here both
//! are the reader's own task, in the middle of this very poll. Such a wake would only make
//! the runtime poll the whole answer again for nothing, so the body and the connection are
//! polled with a [`Relay`]: a waker that drops wakes made on this thread while this body is
//! being polled, and passes on every other (the socket's readiness, from the I/O driver).

use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

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
    /// The waker the body and the connection are polled with.
    relay: Arc<Relay>,
    relay_waker: Waker,
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
        let relay = Arc::new(Relay::default());
        Body {
            incoming,
            conn,
            idle: Arc::clone(idle),
            ended: false,
            relay_waker: Waker::from(Arc::clone(&relay)),
            relay,
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
        this.relay.follow(cx.waker());
        let relay_waker = this.relay_waker.clone();
        let mut relayed = Context::from_waker(&relay_waker);
        let polling = Polling::start(&this.relay);
        // The body first (a chunk may be waiting in its slot), then the connection (which
        // reads the socket and fills the slot), then the body again.
        let mut item = this.poll_data(&mut relayed);
        if item.is_pending() && this.conn.is_some() {
            this.poll_connection(&mut relayed);
            item = this.poll_data(&mut relayed);
        }
        if polling.end() && item.is_pending() {
            // Something asked to be polled again (hyper yielding after a long read loop):
            // nothing here will, so the runtime must.
            cx.waker().wake_by_ref();
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

/// The waker a body and its connection are polled with (see the module doc).
#[derive(Debug, Default)]
struct Relay {
    /// The reading task's waker.
    task: Mutex<Option<Waker>>,
}

thread_local! {
    /// The relay of the body being polled on this thread (its address), 0 when none.
    static POLLING: Cell<usize> = const { Cell::new(0) };
    /// Whether a wake was dropped during that poll.
    static DROPPED: Cell<bool> = const { Cell::new(false) };
}

impl Relay {
    /// Makes `waker` the one woken from now on.
    fn follow(&self, waker: &Waker) {
        let mut task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*task {
            Some(current) if current.will_wake(waker) => {}
            _ => *task = Some(waker.clone()),
        }
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let own = Arc::as_ptr(self) as usize;
        if POLLING.with(Cell::get) == own {
            DROPPED.with(|d| d.set(true));
            return;
        }
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(waker) = &*task {
            waker.wake_by_ref();
        }
    }
}

/// A body's poll in progress on this thread.
struct Polling {
    previous: usize,
}

impl Polling {
    fn start(relay: &Arc<Relay>) -> Polling {
        let previous = POLLING.with(|p| p.replace(Arc::as_ptr(relay) as usize));
        DROPPED.with(|d| d.set(false));
        Polling { previous }
    }

    /// Ends the poll; whether a wake was dropped during it.
    fn end(self) -> bool {
        let dropped = DROPPED.with(Cell::get);
        POLLING.with(|p| p.set(self.previous));
        DROPPED.with(|d| d.set(false));
        std::mem::forget(self);
        dropped
    }
}

impl Drop for Polling {
    /// A poll that unwound: this thread is no longer polling the body.
    fn drop(&mut self) {
        POLLING.with(|p| p.set(self.previous));
    }
}
