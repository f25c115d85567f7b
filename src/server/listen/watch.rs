//! One connection's clocks: the head of a request must arrive within `header_read_timeout`,
//! and a connection with nothing in flight and nothing arriving lives `keep_alive_idle`.
//!
//! Hyper's own HTTP/1 `header_read_timeout` cannot say this: it starts whenever the connection
//! is ready for a head, idle keep-alive included (hyper 1.x `Conn::poll_read_head`), so it
//! would cut idle keep-alive connections at the header timeout. This watchdog knows whether a
//! request is in flight (the service marks it) and whether bytes arrived (the socket wrapper
//! marks them), and hyper's header timer stays off.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Version;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::admit::Slot;

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head (or the TLS handshake and first head) took longer than its timeout.
    Head,
    /// Nothing in flight and nothing arriving for `keep_alive_idle`.
    Idle,
}

/// The two timeouts the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// `[server] header_read_timeout_ms`.
    pub header_read: Duration,
    /// `[server] keep_alive_idle_ms`.
    pub keep_alive_idle: Duration,
}

/// What the watchdog knows of one connection.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests whose response has not finished (HTTP/2 has several).
    in_flight: usize,
    /// When the head now arriving began (the connection's opening for the first one);
    /// None while requests are in flight or nothing arrived since the last one.
    head_since: Option<Instant>,
    /// When the last request in flight finished.
    quiet_since: Instant,
    /// HTTP/2 carries pings and window updates between requests, which are no request head:
    /// only the idle clock runs between its requests.
    http2: bool,
}

impl Activity {
    /// A connection opened at `opened`: its first head is due `header_read` after it.
    pub fn new(opened: Instant) -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                head_since: Some(opened),
                quiet_since: opened,
                http2: false,
            }),
            changed: Notify::new(),
        })
    }

    /// Bytes came from the client.
    fn arrived(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request's head arrived: the clocks stop until its response is done (dropping the
    /// guard, which the response body holds).
    pub fn request(self: &Arc<Self>, version: Version) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_since = None;
        state.http2 |= version == Version::HTTP_2;
        drop(state);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// Whether a request is in flight (else the connection is between requests, and closing
    /// it loses nothing the client was promised).
    pub fn busy(&self) -> bool {
        self.lock().in_flight > 0
    }

    /// When the connection expires as things stand, and why (None while requests are in
    /// flight).
    fn deadline(&self, clocks: Clocks) -> Option<(Instant, Expiry)> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_since {
            Some(since) if !state.http2 => (since + clocks.header_read, Expiry::Head),
            _ => (state.quiet_since + clocks.keep_alive_idle, Expiry::Idle),
        })
    }

    /// Resolves when the connection has expired.
    pub async fn expired(&self, clocks: Clocks) -> Expiry {
        loop {
            let changed = self.changed.notified();
            match self.deadline(clocks) {
                None => changed.await,
                Some((at, why)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            if self.deadline(clocks) == Some((at, why)) {
                                return why;
                            }
                        }
                        () = changed => {}
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change is one statement: the state is whole after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.quiet_since = Instant::now();
            state.head_since = None;
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A client socket that tells its [`Activity`] when bytes arrive, and holds the connection's
/// [`Slot`] for as long as the socket lives (past a WebSocket upgrade too).
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<I> Watched<I> {
    /// `io`, reporting to `activity`, counted in `slot`.
    pub fn new(io: I, activity: Arc<Activity>, slot: Slot) -> Self {
        Watched {
            io,
            activity,
            _slot: slot,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.arrived();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCKS: Clocks = Clocks {
        header_read: Duration::from_secs(2),
        keep_alive_idle: Duration::from_secs(7),
    };

    #[tokio::test(start_paused = true)]
    async fn a_first_head_is_due_after_the_header_timeout() {
        let opened = Instant::now();
        let activity = Activity::new(opened);
        assert_eq!(
            activity.deadline(CLOCKS),
            Some((opened + CLOCKS.header_read, Expiry::Head))
        );
    }

    // Seeded walks over arrivals, requests and responses: the deadline is always the one
    // the documented rule gives, computed here independently from the event history.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_rule() {
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let activity = Activity::new(Instant::now());
            let mut guards = Vec::new();
            let mut head_since = Some(Instant::now());
            let mut quiet_since = Instant::now();
            let mut http2 = false;
            for _ in 0..40 {
                tokio::time::advance(Duration::from_millis(rng.u64(0..3000))).await;
                match rng.u8(0..3) {
                    0 => {
                        activity.arrived();
                        if guards.is_empty() && head_since.is_none() {
                            head_since = Some(Instant::now());
                        }
                    }
                    1 => {
                        let version = if rng.bool() {
                            Version::HTTP_11
                        } else {
                            Version::HTTP_2
                        };
                        http2 |= version == Version::HTTP_2;
                        guards.push(activity.request(version));
                        head_since = None;
                    }
                    _ => {
                        if !guards.is_empty() {
                            guards.swap_remove(rng.usize(..guards.len()));
                            if guards.is_empty() {
                                quiet_since = Instant::now();
                                head_since = None;
                            }
                        }
                    }
                }
                let want = if !guards.is_empty() {
                    None
                } else if let (Some(since), false) = (head_since, http2) {
                    Some((since + CLOCKS.header_read, Expiry::Head))
                } else {
                    Some((quiet_since + CLOCKS.keep_alive_idle, Expiry::Idle))
                };
                assert_eq!(activity.deadline(CLOCKS), want, "seed {seed}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_expired_and_idle_follows_it() {
        let activity = Activity::new(Instant::now());
        let guard = activity.request(Version::HTTP_11);
        let watch = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { activity.expired(CLOCKS).await }
        });
        // Far past both timeouts: the response is still being written.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!watch.is_finished());
        let done = Instant::now();
        drop(guard);
        assert_eq!(watch.await.unwrap(), Expiry::Idle);
        assert_eq!(Instant::now(), done + CLOCKS.keep_alive_idle);
    }
}
