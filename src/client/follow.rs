//! [`Follow`]: one stream's envelopes across as many connections as it takes. Any break (a
//! failed connect, a body error, a body that ends before `stream.end`, a 408/429/5xx) is
//! followed by a reconnect from the last seq received, after a jittered backoff; after
//! `max_attempts` reconnects in a row without a new event, the follower gives up.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use providers::Envelope;

use super::decode::Sequencer;
use super::{ClientError, StreamClient};
use crate::config::ReconnectConfig;
use crate::resilience::{Backoff, RetryPolicy};

/// A reconnect about to happen, as told to [`StreamClient::on_reconnect`].
#[derive(Debug)]
pub struct Reconnect<'a> {
    /// The stream followed.
    pub stream: &'a str,
    /// Reconnects in a row without a new event, this one included (1-based).
    pub attempt: u32,
    /// `max_attempts` of the reconnect settings.
    pub max_attempts: u32,
    /// The seq it resumes after (`Last-Event-ID`); None to start from the first event.
    pub after: Option<u64>,
    /// The wait before it.
    pub delay: Duration,
    /// Why the previous connection ended.
    pub cause: &'a ClientError,
}

/// One stream's envelopes, in seq order, each once, followed across reconnects.
///
/// It yields `Ok` envelopes up to and including `stream.end`, then ends; it also ends when
/// the gateway answers 204 (the stream is finished and everything after the seq resumed
/// from was already received). A failure that reconnecting cannot fix, or running out of
/// reconnects, is yielded as one `Err`, after which the stream ends.
pub struct Follow {
    id: String,
    inner: Pin<Box<dyn Stream<Item = Result<Envelope, ClientError>> + Send>>,
    reconnects: Arc<AtomicU32>,
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("id", &self.id)
            .field("reconnects", &self.reconnects())
            .finish_non_exhaustive()
    }
}

impl Follow {
    /// Follows `id` after seq `after` with `client`; `first` is an answer already open on
    /// it (the `POST /v1/streams` answer), read before any `GET`.
    pub(super) fn new(
        client: StreamClient,
        id: String,
        after: Option<u64>,
        first: Option<reqwest::Response>,
    ) -> Self {
        let reconnects = Arc::new(AtomicU32::new(0));
        let follower = Follower {
            backoff: Backoff::new(&policy(client.reconnect())),
            failures: 0,
            sequencer: Sequencer::new(id.clone(), after),
            body: first,
            ready: VecDeque::new(),
            failed: None,
            done: false,
            reconnects: Arc::clone(&reconnects),
            client,
            id: id.clone(),
        };
        let inner = futures_util::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        });
        Follow {
            id,
            inner: Box::pin(inner),
            reconnects,
        }
    }

    /// The stream followed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reconnects made so far (every one, not only the current run without progress).
    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

impl Stream for Follow {
    type Item = Result<Envelope, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The reconnect settings as the gateway's backoff policy: `max_attempts` waits, so
/// `max_attempts` reconnects after a break.
fn policy(reconnect: &ReconnectConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: reconnect.max_attempts.saturating_add(1),
        initial_backoff: Duration::from_millis(reconnect.initial_backoff),
        max_backoff: Duration::from_millis(reconnect.max_backoff),
        jitter: reconnect.jitter,
        ..RetryPolicy::default()
    }
}

/// The state behind a [`Follow`].
struct Follower {
    client: StreamClient,
    id: String,
    /// Seq continuity and the current connection's SSE parser.
    sequencer: Sequencer,
    /// The answer being read, if connected.
    body: Option<reqwest::Response>,
    /// Events decoded and not yet handed out.
    ready: VecDeque<Envelope>,
    /// A failure to hand out once `ready` is drained; then the follower is done.
    failed: Option<ClientError>,
    /// Nothing more to hand out.
    done: bool,
    /// Waits before the reconnects of the current run without progress; renewed on progress.
    backoff: Backoff,
    /// Reconnects in the current run without progress.
    failures: u32,
    /// Shared with [`Follow::reconnects`].
    reconnects: Arc<AtomicU32>,
}

impl Follower {
    /// The next envelope, the final error, or None at the end.
    async fn next(&mut self) -> Option<Result<Envelope, ClientError>> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                if self.sequencer.ended() && self.ready.is_empty() {
                    self.done = true;
                    self.body = None;
                }
                return Some(Ok(envelope));
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let broke = match &mut self.body {
                None => match self
                    .client
                    .get_stream(&self.id, self.sequencer.last())
                    .await
                {
                    Ok(Some(answer)) => {
                        self.sequencer.reconnected();
                        self.body = Some(answer);
                        continue;
                    }
                    Ok(None) => {
                        // 204: finished, and the client has its last event.
                        self.done = true;
                        continue;
                    }
                    Err(e) => e,
                },
                Some(answer) => match answer.chunk().await {
                    Ok(Some(bytes)) => {
                        let before = self.sequencer.last();
                        if let Err(e) = self.sequencer.feed(&bytes, &mut self.ready) {
                            self.fail(e);
                        } else if self.sequencer.last() != before {
                            self.progress();
                        }
                        continue;
                    }
                    Ok(None) => ClientError::Cut {
                        after: self.sequencer.last(),
                    },
                    Err(e) => ClientError::Transport(e),
                },
            };
            self.body = None;
            if !broke.is_retryable() {
                self.fail(broke);
                continue;
            }
            self.reconnect_after(broke).await;
        }
    }

    /// New events arrived: the next break gets the full count of reconnects again.
    fn progress(&mut self) {
        if self.failures > 0 {
            self.failures = 0;
            self.backoff = Backoff::new(&policy(self.client.reconnect()));
        }
    }

    /// Ends the follow with `e` once the events before it are handed out.
    fn fail(&mut self, e: ClientError) {
        self.body = None;
        self.failed = Some(e);
    }

    /// Waits the next backoff before the loop reconnects, or gives up.
    async fn reconnect_after(&mut self, cause: ClientError) {
        let Some(delay) = self.backoff.next_delay(None) else {
            self.fail(ClientError::GaveUp {
                attempts: self.failures,
                last: Box::new(cause),
            });
            return;
        };
        self.failures += 1;
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        let after = self.sequencer.last();
        tracing::debug!(stream = %self.id, ?after, attempt = self.failures, ?delay, error = %cause.chain(), "reconnecting");
        self.client.notify(&Reconnect {
            stream: &self.id,
            attempt: self.failures,
            max_attempts: self.client.reconnect().max_attempts,
            after,
            delay,
            cause: &cause,
        });
        tokio::time::sleep(delay).await;
    }
}
