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

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Decoded events of one upstream response, as they arrive.
///
/// Yields `Err` once, at the first failure (malformed frame, provider error event, cut body,
/// idle timeout), and nothing after it.
pub struct EventStream {
    provider: String,
    body: ByteStream,
    decoder: StreamDecoder,
    pending: VecDeque<AgentEvent>,
    scratch: Vec<AgentEvent>,
    failed: Option<GatewayError>,
    done: bool,
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
    /// Wraps a successful response of a `dialect` provider.
    pub(super) fn new(
        provider: String,
        dialect: Dialect,
        response: reqwest::Response,
        idle: Duration,
        key_vars: std::sync::Arc<[String]>,
        in_flight: Option<super::pool::InFlight>,
    ) -> Self {
        let body = super::pool::held_by(response.bytes_stream(), in_flight);
        EventStream {
            provider,
            body: Box::pin(body),
            decoder: StreamDecoder::new(dialect),
            pending: VecDeque::new(),
            scratch: Vec::new(),
            failed: None,
            done: false,
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
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    this.last_data = Instant::now();
                    let result = this.decoder.feed(&bytes, &mut this.scratch);
                    this.decoded();
                    if let Err(e) = result {
                        this.fail(e);
                    }
                }
                Poll::Ready(item @ (Some(Err(_)) | None)) => {
                    // A read error is a cut body (reset, truncated chunked encoding): the
                    // decoder says whether the answer was whole anyway and where it broke.
                    // The transport's words go to the log only.
                    if let Some(Err(e)) = &item {
                        tracing::debug!(provider = %this.provider, error = %super::source_chain(e), "upstream body broke");
                    }
                    let result = this.decoder.finish(&mut this.scratch);
                    this.decoded();
                    match result {
                        Ok(()) => this.done = true,
                        Err(e) => this.fail(e),
                    }
                }
                Poll::Pending => {
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
    let status = response.status().as_u16();
    let retry_after = crate::limit::retry_after(response.headers(), std::time::SystemTime::now());
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let (error_type, message) = parse_error_body(dialect, &body).unwrap_or_else(|| {
        (
            crate::error::anthropic_type_for(status).to_owned(),
            lossy_snippet(&body),
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
