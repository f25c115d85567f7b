//! Forwarding a request the gateway does not answer itself (`/v1/embeddings`, `/v1/files`,
//! ...) to a provider: the client's method, path, query, headers and body go out as they came
//! (the body streamed, never held whole), with the provider's own credentials, and the answer
//! comes back as a stream of bytes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tracing::Instrument as _;

use super::request::{self, ClientKey, ForwardHeaders};
use super::{Upstream, own_keys, send_error};
use crate::config::ProviderConfig;
use crate::error::{GatewayError, TimeoutPhase};

/// A client's request, ready to forward.
#[derive(Debug)]
pub struct Forward {
    /// The client's method.
    pub method: http::Method,
    /// The client's path (`/v1/...`), without the query.
    pub path: String,
    /// The client's query string, if any (without `?`).
    pub query: Option<String>,
    /// The client's end-to-end headers, without its credentials (the caller filters them).
    pub headers: http::HeaderMap,
    /// The body, None for a request without one.
    pub body: Option<reqwest::Body>,
}

/// Bytes of a provider's answer as they arrive; an `Err` ends it (the connection broke, or
/// the provider went silent past its idle timeout).
pub type ForwardedBody = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A provider's successful (2xx or 3xx) answer, its body not yet read.
pub struct Forwarded {
    /// The provider's status.
    pub status: http::StatusCode,
    /// The provider's headers (the caller drops what is not the client's).
    pub headers: http::HeaderMap,
    /// The body, streamed.
    pub body: ForwardedBody,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Sends `forward` to provider `name` and waits for its answer's headers: at most the
    /// provider's `first_byte_timeout_ms` once `body_sent` resolves (the time a slow client
    /// takes to upload is the request body timeout's business, not this one's). A non-2xx/3xx
    /// answer is read (bounded) into the error a client of its dialect is shown; a 401/403
    /// to the gateway's own key is [`GatewayError::CredentialsRefused`].
    pub async fn forward(
        &self,
        name: &str,
        provider: &ProviderConfig,
        forward: Forward,
        key: &ClientKey,
        headers: &ForwardHeaders,
        body_sent: impl Future<Output = ()>,
    ) -> Result<Forwarded, GatewayError> {
        let client = self
            .clients
            .get(name)
            .ok_or_else(|| GatewayError::Internal(format!("no client for {name}")))?;
        let mut url = request::forward_url(provider, &forward.path);
        // Before the query is added: a span never records it.
        let call = super::span::http_call(
            name,
            provider.dialect,
            forward.method.as_str(),
            &url,
            None,
            None,
        );
        if let Some(query) = &forward.query {
            url.push('?');
            url.push_str(query);
        }
        let mut builder = client
            .request(forward.method, &url)
            .headers(forward.headers);
        if let Some(body) = forward.body {
            builder = builder.body(body);
        }
        let builder = request::authorize(builder, name, provider, key, headers)?;
        let first_byte = Duration::from_millis(provider.first_byte_timeout_ms);
        let in_flight = self.in_flight(name);
        let sent = async {
            tokio::select! {
                response = builder.send() => response.map_err(|e| send_error(name, &e)),
                () = async {
                    body_sent.await;
                    tokio::time::sleep(first_byte).await;
                } => {
                    Err(GatewayError::Timeout {
                        provider: name.to_owned(),
                        phase: TimeoutPhase::FirstByte,
                    })
                }
            }
        };
        let response = match sent.instrument(call.clone()).await {
            Ok(response) => response,
            Err(e) => {
                super::span::record_error(&call, &e);
                return Err(e);
            }
        };
        let status = response.status();
        call.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            let error = super::body::status_error(
                name,
                provider.dialect,
                response,
                &own_keys(&self.key_vars),
                !request::uses_client_key(provider, key),
            )
            .await;
            super::span::record_error(&call, &error);
            return Err(error);
        }
        let headers = response.headers().clone();
        let idle = Duration::from_millis(provider.idle_timeout_ms);
        Ok(Forwarded {
            status,
            headers,
            body: idle_bounded(
                name.to_owned(),
                super::pool::held_by(response.bytes_stream(), in_flight),
                idle,
                call,
            ),
        })
    }
}

/// `body` ending with an error when no chunk comes for `idle`: a provider that goes silent
/// mid-answer must not hold the client (and the gateway's connection) forever.
fn idle_bounded(
    provider: String,
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    call: tracing::Span,
) -> ForwardedBody {
    // The call's span lasts as long as the body is read.
    let state = Some((Box::pin(body), provider, call));
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut body, provider, call) = state?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((body, provider, call)))),
                Ok(Some(Err(e))) => {
                    // Logged (in the transport's words) by send_error; the client sees its
                    // answer cut, as the provider cut it.
                    super::span::record_error(&call, &send_error(&provider, &e));
                    Some((
                        Err(std::io::Error::other("the provider's answer broke off")),
                        None,
                    ))
                }
                Err(_) => {
                    let error = GatewayError::Timeout {
                        provider: provider.clone(),
                        phase: TimeoutPhase::Idle,
                    };
                    super::span::record_error(&call, &error);
                    tracing::warn!(
                        provider,
                        "a forwarded answer went silent past its idle timeout"
                    );
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the provider went silent",
                        )),
                        None,
                    ))
                }
            }
        },
    ))
}
