//! An upstream response body as a stream of Agent Events, with the idle timer, and the
//! reading of non-2xx answers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use providers::{AgentEvent, Dialect, StreamDecoder};
use tokio::time::{Instant, Sleep};

use providers::untrusted::untrusted;

use crate::error::{GatewayError, TimeoutPhase};

/// Largest error body read from a provider; the rest is not worth holding.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Events decoded from one poll at most: a body that never stops being ready (a fast
/// provider, a large buffer) still hands its reader a bounded batch.
const MAX_BATCH: usize = 256;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Where a streamed answer's bytes come from.
pub(super) enum Source {
    /// A reqwest response's body (a provider reached through a proxy), and its last chunk.
    Reqwest(ByteStream, Bytes),
    /// The gateway's own client: the body reads its connection in the reader's task.
    Own(super::h1::Body),
}

impl Source {
    /// A reqwest response's body, keeping `in_flight` counted until it is dropped.
    pub(super) fn reqwest(
        response: reqwest::Response,
        in_flight: Option<super::pool::InFlight>,
    ) -> Source {
        Source::Reqwest(
            Box::pin(super::pool::held_by(response.bytes_stream(), in_flight)),
            Bytes::new(),
        )
    }

    /// The next bytes (valid until the next poll); a read error in the transport's words
    /// (for the log only).
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<&[u8], String>>> {
        match self {
            Source::Reqwest(body, last) => match body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    *last = bytes;
                    Poll::Ready(Some(Ok(&last[..])))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(super::source_chain(&e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Source::Own(body) => body
                .poll_data(cx)
                .map(|item| item.map(|r| r.map_err(|e| super::h1::chain(&e)))),
        }
    }
}

/// Decoded events of one upstream response, as they arrive.
///
/// Yields `Err` once, at the first failure (malformed frame, provider error event, cut body,
/// idle timeout), and nothing after it.
pub struct EventStream {
    provider: String,
    body: Source,
    decoder: StreamDecoder,
    pending: VecDeque<AgentEvent>,
    scratch: Vec<AgentEvent>,
    failed: Option<GatewayError>,
    done: bool,
    /// Whether a poll decodes everything the body has ready. Not before the first events
    /// were handed over: the caller wants those as soon as one chunk gave some, and expects
    /// the rest of the answer from the stream.
    batch: bool,
    idle: Duration,
    /// Armed once the first event arrived: before that the caller's first-byte timer rules.
    /// It is not moved on every chunk (that costs a timer-wheel update per chunk): when it
    /// fires, it is re-armed from `last_data` if data came since.
    idle_timer: Option<Pin<Box<Sleep>>>,
    last_data: Instant,
    /// The variables of the gateway's own provider keys, scrubbed from a provider's words.
    key_vars: std::sync::Arc<[String]>,
    /// The HTTP call's `upstream` span: ends when the stream is dropped, and records the
    /// error that ends the body.
    span: tracing::Span,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("provider", &self.provider)
            .field("pending", &self.pending.len())
            .field("done", &self.done)
            .finish()
    }
}

impl EventStream {
    /// Wraps the body of a successful response of a `dialect` provider.
    pub(super) fn new(
        provider: String,
        dialect: Dialect,
        body: Source,
        idle: Duration,
        key_vars: std::sync::Arc<[String]>,
    ) -> Self {
        EventStream {
            provider,
            body,
            decoder: StreamDecoder::new(dialect),
            pending: VecDeque::new(),
            scratch: Vec::new(),
            failed: None,
            done: false,
            batch: false,
            idle,
            idle_timer: None,
            last_data: Instant::now(),
            key_vars,
            span: tracing::Span::none(),
        }
    }

    /// Makes `span` the call's: kept until the stream is dropped.
    pub(super) fn set_span(&mut self, span: tracing::Span) {
        self.span = span;
    }

    /// Reads until at least one event is decoded; returns those decoded so far.
    pub(super) async fn first_events(&mut self) -> Result<Vec<AgentEvent>, GatewayError> {
        let mut first = Vec::new();
        while let Some(item) = self.next().await {
            first.push(item?);
            if self.pending.is_empty() {
                break;
            }
        }
        self.batch = true;
        if first.is_empty() {
            // The body ended cleanly without one event: nothing a client could use.
            return Err(GatewayError::Stream {
                provider: self.provider.clone(),
                source: providers::DecodeError::Incomplete {
                    dialect: self.decoder.dialect(),
                    cut: providers::CutPoint::BeforeStart,
                },
            });
        }
        Ok(first)
    }

    fn fail(&mut self, mut source: providers::DecodeError) {
        let own = super::own_keys(&self.key_vars);
        match &mut source {
            providers::DecodeError::Upstream { error, .. } => {
                error.message = crate::secret::scrub(&error.message, &own);
                error.code = crate::secret::scrub(&error.code, &own);
            }
            providers::DecodeError::Malformed { reason, .. } => {
                *reason = crate::secret::scrub(reason, &own);
            }
            _ => {}
        }
        self.failed = Some(GatewayError::Stream {
            provider: self.provider.clone(),
            source,
        });
    }

    fn decoded(&mut self) {
        self.pending.extend(self.scratch.drain(..));
        if !self.pending.is_empty() && self.idle_timer.is_none() {
            self.idle_timer = Some(Box::pin(tokio::time::sleep(self.idle)));
        }
    }
}

impl Stream for EventStream {
    type Item = Result<AgentEvent, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(e) = this.failed.take() {
                this.done = true;
                super::span::record_error(&this.span, &e);
                return Poll::Ready(Some(Err(e)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            // Everything the body has ready is decoded now, so a burst of frames comes out
            // as one batch (up to MAX_BATCH events; the first events alone, see `batch`).
            let mut got = false;
            loop {
                match this.body.poll_chunk(cx) {
                    Poll::Ready(Some(Ok(bytes))) => {
                        got = true;
                        let result = this.decoder.feed(bytes, &mut this.scratch);
                        this.decoded();
                        if let Err(e) = result {
                            this.fail(e);
                            break;
                        }
                        if this.pending.len() >= MAX_BATCH
                            || (!this.batch && !this.pending.is_empty())
                        {
                            break;
                        }
                    }
                    Poll::Ready(item @ (Some(Err(_)) | None)) => {
                        // A read error is a cut body (reset, truncated chunked encoding): the
                        // decoder says whether the answer was whole anyway and where it broke.
                        // The transport's words go to the log only.
                        if let Some(Err(e)) = &item {
                            tracing::debug!(provider = %this.provider, error = %e, "upstream body broke");
                        }
                        let result = this.decoder.finish(&mut this.scratch);
                        this.decoded();
                        match result {
                            Ok(()) => this.done = true,
                            Err(e) => this.fail(e),
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if got {
                this.last_data = Instant::now();
            }
            if !this.pending.is_empty() || this.failed.is_some() || this.done {
                continue;
            }
            if let Some(timer) = &mut this.idle_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                let deadline = this.last_data + this.idle;
                if deadline > Instant::now() {
                    // Data came since the timer was set: wait the rest of the idle
                    // period from the last chunk.
                    timer.as_mut().reset(deadline);
                    continue;
                }
                this.failed = Some(GatewayError::Timeout {
                    provider: this.provider.clone(),
                    phase: TimeoutPhase::Idle,
                });
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Reads a provider's non-2xx answer into the error a client of either door can be shown.
pub(super) async fn status_error(
    provider: &str,
    dialect: Dialect,
    response: reqwest::Response,
    own_keys: &[crate::secret::Secret],
    gateway_key: bool,
) -> GatewayError {
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_capped(Source::reqwest(response, None)).await;
    status_error_of(
        provider,
        dialect,
        status,
        &headers,
        &body,
        own_keys,
        gateway_key,
    )
}

/// The first [`MAX_ERROR_BODY`] bytes of an error answer's `body` (up to a read error).
pub(super) async fn read_capped(mut body: Source) -> Vec<u8> {
    let mut out = Vec::new();
    std::future::poll_fn(|cx| {
        while let Some(Ok(chunk)) = std::task::ready!(body.poll_chunk(cx)) {
            let room = MAX_ERROR_BODY - out.len();
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() == MAX_ERROR_BODY {
                break;
            }
        }
        Poll::Ready(())
    })
    .await;
    out
}

/// The error a client of either door is shown for a provider's non-2xx answer: `status`,
/// `headers` and (the start of) `body`.
pub(super) fn status_error_of(
    provider: &str,
    dialect: Dialect,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
    own_keys: &[crate::secret::Secret],
    gateway_key: bool,
) -> GatewayError {
    let status = status.as_u16();
    let retry_after = crate::limit::retry_after(headers, std::time::SystemTime::now());
    let (error_type, message) = parse_error_body(dialect, body).unwrap_or_else(|| {
        (
            crate::error::anthropic_type_for(status).to_owned(),
            lossy_snippet(body),
        )
    });
    let error_type = crate::secret::scrub(&error_type, own_keys);
    let message = crate::secret::scrub(&message, own_keys);
    if gateway_key && matches!(status, 401 | 403) {
        tracing::warn!(
            provider,
            status,
            error_type = %untrusted(&error_type),
            message = %untrusted(&message),
            "the provider refused the gateway's credentials"
        );
        return GatewayError::CredentialsRefused {
            provider: provider.to_owned(),
            status,
        };
    }
    GatewayError::UpstreamStatus {
        provider: provider.to_owned(),
        status,
        error_type,
        message,
        retry_after,
    }
}

/// The provider's `(type, message)`, read from its error body in `dialect`'s shape.
fn parse_error_body(dialect: Dialect, body: &[u8]) -> Option<(String, String)> {
    dialect.wire().parse_error_body(body)
}

fn lossy_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let text = text.trim();
    if text.is_empty() {
        "no error body".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_bodies_are_read_in_their_dialect() {
        let oa = br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#;
        assert_eq!(
            parse_error_body(Dialect::OpenAi, oa),
            Some(("invalid_request_error".into(), "bad".into()))
        );
        let an = br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
        assert_eq!(
            parse_error_body(Dialect::Anthropic, an),
            Some(("overloaded_error".into(), "busy".into()))
        );
        assert_eq!(parse_error_body(Dialect::OpenAi, b"<html>"), None);
    }
}
