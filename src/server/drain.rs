//! Graceful shutdown that ends: once the shutdown signal comes, running streams get
//! `[server] shutdown_grace_ms` to finish, then what remains is ended (the OpenAI, Responses
//! and Anthropic doors with an error in their dialect, the native doors' connections closed
//! with their streams left resumable in the journal), and the connections still open after
//! [`END_WRITE`] are dropped. Nothing the drain waits for can hold the process past
//! grace + [`END_WRITE`] (+ the WebSocket close's own bound).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::hub::Hub;

/// After the grace, how long the ends (error frames, 503s) may take to be written before the
/// connections still open are dropped: a client that stopped reading does not hold the exit.
pub const END_WRITE: Duration = Duration::from_secs(2);

/// How often the drain looks whether everything it waits for has ended.
const POLL: Duration = Duration::from_millis(50);

/// The shutdown's shared state: the count of HTTP responses in flight and the two moments
/// handlers and listeners watch.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// HTTP responses not yet written to their end, over every listener (a streaming answer
    /// counts until its last frame; a WebSocket upgrade only until its `101`).
    requests: Arc<AtomicUsize>,
    /// The grace is over: streams still running end now.
    over: CancellationToken,
    /// The ends had their time: listeners drop the connections still open.
    kill: CancellationToken,
}

/// One response in flight, counted in [`Drain`] until dropped.
#[derive(Debug)]
pub struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the drain waits for at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// HTTP responses in flight (every door, native SSE included).
    pub requests: usize,
    /// Open WebSocket connections.
    pub websockets: usize,
    /// Hub streams still generating with no client following them (a stream followed by a
    /// client is counted with that client's connection).
    pub detached: usize,
    /// Hub streams still generating, followed or not.
    pub live: usize,
}

impl Running {
    /// The "N" of "draining N streams": the client connections with an answer in flight plus
    /// the hub streams nobody follows, each stream counted once when it has one follower.
    pub fn streams(&self) -> usize {
        self.requests + self.websockets + self.detached
    }

    /// Whether nothing is left to wait for.
    pub fn idle(&self) -> bool {
        self.requests == 0 && self.websockets == 0 && self.live == 0
    }
}

impl Drain {
    /// Counts a response until the returned guard is dropped.
    pub fn count(&self) -> Counted {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(&self.requests))
    }

    /// HTTP responses in flight now.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Cancelled when the grace is over.
    pub fn over(&self) -> &CancellationToken {
        &self.over
    }

    /// Cancelled when the connections still open are to be dropped.
    pub fn kill(&self) -> &CancellationToken {
        &self.kill
    }

    /// Runs the drain from the shutdown signal: counts what runs, calls `stop_accepting`
    /// (counted first, so that a WebSocket connection closing is not also counted as its
    /// detached stream), waits up to `grace` for `running` to be idle, then ends what remains
    /// and, [`END_WRITE`] later, kills the connections still open. Returns once the
    /// connections are told to go (the listeners then end at once).
    pub async fn run(
        &self,
        grace: Duration,
        running: impl Fn() -> Running,
        stop_accepting: impl FnOnce(),
    ) {
        let start = running();
        stop_accepting();
        tracing::info!(
            requests = start.requests,
            websockets = start.websockets,
            detached = start.detached,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "draining {} streams",
            start.streams()
        );
        if wait_idle(grace, &running).await {
            tracing::info!("drained: every stream finished within the grace");
        } else {
            let left = running();
            tracing::warn!(
                requests = left.requests,
                websockets = left.websockets,
                live = left.live,
                "shutdown grace over: ending {} streams (native streams stay resumable in \
                 the journal)",
                left.streams()
            );
            self.over.cancel();
            // Nothing but the ends is written now; hub streams stay as they are.
            let writing = || Running {
                live: 0,
                detached: 0,
                ..running()
            };
            wait_idle(END_WRITE, &writing).await;
        }
        self.over.cancel();
        self.kill.cancel();
    }
}

/// Whether `running` became idle within `limit`.
async fn wait_idle(limit: Duration, running: &impl Fn() -> Running) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if running().idle() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// What the drain counts in `hub` and the WebSocket connections of `websockets`.
pub fn running(drain: &Drain, hub: &Hub, websockets: usize) -> Running {
    let (live, detached) = hub.running();
    Running {
        requests: drain.requests(),
        websockets,
        detached,
        live,
    }
}

/// Events an always-ready answer may pass between two looks at the end of the grace.
const CHECK_EVERY: u32 = 32;

/// `events`, ended with [`GatewayError::ShuttingDown`] when `over` fires first: an answer
/// of the OpenAI, Responses or Anthropic door ends with the door's error, never a clean finish.
///
/// The token is looked at whenever the answer waits for its upstream, and every
/// [`CHECK_EVERY`] events while it does not: looking costs a lock (tokio-util's token), which
/// once per event was 2.5% of the gateway's CPU under load, and an always-ready upstream must
/// still not outrun the end.
pub fn cut<S, T>(
    events: S,
    over: CancellationToken,
    grace_ms: u64,
) -> impl Stream<Item = Result<T, GatewayError>> + Send + 'static
where
    S: Stream<Item = Result<T, GatewayError>> + Send + 'static,
    T: Send + 'static,
{
    let mut events = Box::pin(events);
    let mut over = Box::pin(over.cancelled_owned());
    let mut unchecked = 0u32;
    let mut ended = false;
    futures_util::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        if unchecked >= CHECK_EVERY {
            unchecked = 0;
            if over.as_mut().poll(cx).is_ready() {
                ended = true;
                return Poll::Ready(Some(Err(GatewayError::ShuttingDown { grace_ms })));
            }
        }
        match events.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                unchecked += 1;
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                unchecked = 0;
                if over.as_mut().poll(cx).is_ready() {
                    ended = true;
                    return Poll::Ready(Some(Err(GatewayError::ShuttingDown { grace_ms })));
                }
                Poll::Pending
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn an_answer_cut_by_the_end_of_the_grace_ends_with_the_shutdown_error() {
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..50 {
            let before = rng.usize(0..20);
            let over = CancellationToken::new();
            // `before` items come at once, then the stream stalls like a slow upstream.
            let events = futures_util::stream::iter((0..before).map(Ok::<usize, GatewayError>))
                .chain(futures_util::stream::pending());
            let mut cut = Box::pin(cut(events, over.clone(), 7));
            for i in 0..before {
                assert_eq!(cut.next().await.map(Result::ok), Some(Some(i)));
            }
            let fire = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                over.cancel();
            });
            match cut.next().await {
                Some(Err(GatewayError::ShuttingDown { grace_ms: 7 })) => {}
                other => panic!("expected the shutdown error, got {other:?}"),
            }
            assert!(cut.next().await.is_none(), "nothing after the end");
            fire.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_always_ready_answer_does_not_outrun_the_end() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20 {
            let before = rng.usize(0..100);
            let over = CancellationToken::new();
            let events = futures_util::stream::iter((0..).map(Ok::<usize, GatewayError>));
            let mut cut = Box::pin(cut(events, over.clone(), 2));
            for i in 0..before {
                assert_eq!(cut.next().await.map(Result::ok), Some(Some(i)));
            }
            over.cancel();
            let mut after = 0;
            loop {
                match cut.next().await {
                    Some(Ok(_)) => after += 1,
                    Some(Err(GatewayError::ShuttingDown { grace_ms: 2 })) => break,
                    other => panic!("expected events then the shutdown error, got {other:?}"),
                }
                assert!(
                    after <= CHECK_EVERY as usize,
                    "{after} events after the end"
                );
            }
            assert!(cut.next().await.is_none(), "nothing after the end");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_ends_within_the_grace_is_whole() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let n = rng.usize(0..30);
            let over = CancellationToken::new();
            let events = futures_util::stream::iter((0..n).map(Ok::<usize, GatewayError>));
            let got: Vec<_> = cut(events, over.clone(), 1).map(|r| r.ok()).collect().await;
            assert_eq!(got, (0..n).map(Some).collect::<Vec<_>>());
            // Cancelled after the end: nothing changes (and no extra item is waited for).
            over.cancel();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_at_once_when_idle_and_at_the_grace_otherwise() {
        let drain = Drain::default();
        let started = tokio::time::Instant::now();
        drain
            .run(
                Duration::from_secs(30),
                || Running {
                    requests: 0,
                    websockets: 0,
                    detached: 0,
                    live: 0,
                },
                || {},
            )
            .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(drain.over().is_cancelled() && drain.kill().is_cancelled());

        let drain = Drain::default();
        let held = drain.count();
        let started = tokio::time::Instant::now();
        let watched = drain.clone();
        drain
            .run(
                Duration::from_secs(30),
                move || Running {
                    requests: watched.requests(),
                    websockets: 0,
                    detached: 0,
                    live: 1,
                },
                || {},
            )
            .await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(30) + END_WRITE && took < Duration::from_secs(33),
            "{took:?}"
        );
        assert!(drain.over().is_cancelled() && drain.kill().is_cancelled());
        drop(held);
        assert_eq!(drain.requests(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ends_get_their_time_but_a_finished_end_does_not_wait() {
        let drain = Drain::default();
        let held = drain.count();
        let over = drain.over().clone();
        // The response in flight ends as soon as the grace is over (its error frame written).
        let writer = tokio::spawn(async move {
            over.cancelled().await;
            drop(held);
        });
        let started = tokio::time::Instant::now();
        let watched = drain.clone();
        drain
            .run(
                Duration::from_secs(10),
                move || Running {
                    requests: watched.requests(),
                    websockets: 0,
                    detached: 0,
                    live: 3,
                },
                || {},
            )
            .await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(10) + END_WRITE,
            "{took:?}"
        );
        writer.await.unwrap();
    }
}
