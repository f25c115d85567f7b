//! The gateway's own HTTP/1.1 client for streamed answers, driven by whoever reads the answer.
//!
//! With reqwest, each connection runs in a task of its own: it reads the socket and hands
//! every body chunk to the answering task through a channel, two task wake-ups per upstream
//! frame. Here the connection ([`hyper::client::conn::http1`]) is a future the answer's
//! [`Body`] polls itself, beside the response body: a burst of frames costs the answering
//! task one wake-up and no other task any. Connections come from the connector stack reqwest
//! uses ([`connect`]) and go back to a pool of the provider's own ([`idle`]) once an answer
//! ended cleanly.
//!
//! Used for a provider's streamed answers only, and only when no HTTP proxy from the
//! environment applies to its URL (reqwest honours `HTTP(S)_PROXY`/`ALL_PROXY`/`NO_PROXY`;
//! this client does not, so such a provider keeps reqwest: [`Client::for_provider`]).
//! Streamed answers over this client use HTTP/1.1 only, one connection per concurrent
//! stream, as nginx does with its upstreams.

mod body;
mod connect;
mod idle;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::client::conn::http1;

pub(super) use body::Body;
pub(super) use connect::tls_config;

use super::pool::{InFlight, PoolCounters};
use crate::error::{ConnectionFault, GatewayError};

/// The read buffer of one upstream connection, which also caps a response head. hyper's
/// default grows it while reads fill it (to 24 KiB and more per pooled connection when an
/// upstream answers fast), and a pooled connection keeps it; 8 KiB holds a provider's head
/// with room to spare (nginx's default `proxy_buffer_size` is 4 KiB), and body data streams
/// through it whatever its size.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A request body sent whole: the provider-dialect JSON of one streamed answer.
#[derive(Debug)]
pub(super) struct Payload(Option<Bytes>);

impl http_body::Body for Payload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// One connection: the handle requests are sent through, and the connection itself (the
/// future that reads and writes the socket; whoever uses the connection polls it).
pub(super) struct Conn {
    sender: http1::SendRequest<Payload>,
    connection: Pin<Box<http1::Connection<connect::Io, Payload>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("ready", &self.sender.is_ready())
            .finish_non_exhaustive()
    }
}

/// Where a provider's streamed answers are asked for, parsed once.
#[derive(Debug)]
struct Target {
    /// Scheme and authority: what is connected to.
    origin: http::Uri,
    /// Path and query: what goes on the request line.
    path: http::Uri,
    /// The `Host` header.
    host: http::HeaderValue,
}

impl Target {
    /// `url`'s parts, or None when this client should not serve it: not `http`/`https`, no
    /// host, credentials in the URL (reqwest turns those into basic auth), or anything
    /// `http::Uri` does not take as it is (reqwest's URL parser would normalise it).
    fn parse(url: &str) -> Option<Target> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = uri.scheme()?.clone();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?.clone();
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return None;
        }
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str().to_owned(),
            _ => authority.host().to_owned(),
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        Some(Target {
            origin: http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query("/")
                .build()
                .ok()?,
            path: http::Uri::from(path),
            host: http::HeaderValue::try_from(host).ok()?,
        })
    }
}

/// One provider's client for streamed answers.
#[derive(Debug, Clone)]
pub(super) struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    connector: connect::Connector,
    idle: Arc<idle::Idle>,
    counters: Arc<PoolCounters>,
}

impl Client {
    /// The client of a provider whose streaming endpoint is `url`, or None when reqwest
    /// must keep serving it: a proxy from the environment applies to `url` (decided now,
    /// as reqwest reads the environment once when a client is built), or `url` is one this
    /// client does not take ([`Target::parse`]).
    pub(super) fn for_provider(
        url: &str,
        connect_timeout: Duration,
        tls: &Arc<rustls::ClientConfig>,
        counters: Arc<PoolCounters>,
    ) -> Option<Client> {
        let target = Target::parse(url)?;
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_system();
        if proxies.intercept(&target.origin).is_some() {
            return None;
        }
        Some(Client::new(
            target,
            connect_timeout,
            tls,
            counters,
            idle::MAX_IDLE,
        ))
    }

    fn new(
        target: Target,
        connect_timeout: Duration,
        tls: &Arc<rustls::ClientConfig>,
        counters: Arc<PoolCounters>,
        max_idle: usize,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                target,
                connector: connect::Connector::new(Arc::clone(tls), connect_timeout),
                idle: Arc::new(idle::Idle::new(max_idle, idle::IDLE_TIMEOUT)),
                counters,
            }),
        }
    }

    /// POSTs `body` with `headers` (the provider's: content type, accept, credentials...;
    /// `Host` and `Content-Length` are added here) and waits for the response head.
    ///
    /// A pooled connection found closed when the request is handed to it (nothing of the
    /// request written) is replaced by a fresh one, once; a request that may have reached
    /// the provider is never sent again.
    pub(super) async fn post(
        &self,
        provider: &str,
        mut headers: http::HeaderMap,
        body: Vec<u8>,
        in_flight: Option<InFlight>,
    ) -> Result<(http::response::Parts, Body), GatewayError> {
        let inner = &*self.inner;
        headers.insert(http::header::HOST, inner.target.host.clone());
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        let mut request = http::Request::new(Payload(Some(Bytes::from(body))));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = inner.target.path.clone();
        *request.headers_mut() = headers;
        let (mut conn, mut reused) = match inner.idle.take() {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect(provider)).await?, false),
        };
        loop {
            match exchange(conn, request).await {
                Exchanged::Answered(response, connection) => {
                    let (head, incoming) = response.into_parts();
                    let body = Body::new(incoming, connection, &inner.idle, in_flight);
                    return Ok((head, body));
                }
                Exchanged::Failed(mut e) => match e.take_message() {
                    Some(again) if reused => {
                        tracing::debug!(provider, error = %chain(e.error()), "a pooled upstream connection was closed: sending on a new one");
                        request = again;
                        conn = Box::pin(self.connect(provider)).await?;
                        reused = false;
                    }
                    _ => return Err(send_error(provider, e.error())),
                },
                Exchanged::Vanished => {
                    tracing::warn!(provider, "upstream connection closed without a response");
                    return Err(GatewayError::Connection {
                        provider: provider.to_owned(),
                        fault: ConnectionFault::ClosedBeforeResponse,
                    });
                }
            }
        }
    }

    /// A fresh connection, counted once TCP and TLS are done. Awaited boxed: its future
    /// holds the TLS stream while it handshakes (1.2 KB), and inline it sized every request's
    /// future, though most requests take a pooled connection (issue #14).
    async fn connect(&self, provider: &str) -> Result<Conn, GatewayError> {
        let inner = &*self.inner;
        let io = inner
            .connector
            .connect(provider, &inner.target.origin)
            .await?;
        let (sender, connection) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER_BYTES))
            .handshake(io)
            .await
            .map_err(|e| send_error(provider, &e))?;
        inner.counters.opened();
        Ok(Conn {
            sender,
            connection: Box::pin(connection),
        })
    }

    /// Connections parked in this client's pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.idle.len()
    }
}

/// How sending a request on a connection went.
enum Exchanged {
    /// The response head came; the connection, unless it already finished.
    Answered(hyper::Response<hyper::body::Incoming>, Option<Conn>),
    /// hyper's error, with the request back when none of it was written.
    Failed(hyper::client::conn::TrySendError<http::Request<Payload>>),
    /// The connection finished and the request future had no word of why (hyper answers
    /// the request future before that; this is the backstop).
    Vanished,
}

/// Sends `request` on a connection and waits for the response head, polling the connection
/// meanwhile (nothing else does).
async fn exchange(conn: Conn, request: http::Request<Payload>) -> Exchanged {
    let Conn {
        mut sender,
        connection,
    } = conn;
    let response = sender.try_send_request(request);
    let mut response = std::pin::pin!(response);
    let mut connection = Some(connection);
    let result = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if let Some(c) = connection.as_mut()
            && c.as_mut().poll(cx).is_ready()
        {
            // The connection is gone: dropping it hands the request future its error (and
            // the request, when none of it was written).
            connection = None;
            return match response.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => Poll::Ready(None),
            };
        }
        Poll::Pending
    })
    .await;
    match result {
        Some(Ok(response)) => Exchanged::Answered(
            response,
            connection.map(|connection| Conn { sender, connection }),
        ),
        Some(Err(e)) => Exchanged::Failed(e),
        None => Exchanged::Vanished,
    }
}

/// A hyper error on the way to a response head: the provider was reached (or the pooled
/// connection was dead and there is no second try), so it closed before answering, as
/// reqwest's error mapped it. The transport's words go to the log.
fn send_error(provider: &str, e: &hyper::Error) -> GatewayError {
    tracing::warn!(provider, error = %chain(e), "upstream connection failed");
    GatewayError::Connection {
        provider: provider.to_owned(),
        fault: ConnectionFault::ClosedBeforeResponse,
    }
}

/// `e` and its sources joined with `: ` (hyper's and the connector's texts carry no URL).
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether a timeout is anywhere in `e`'s chain (reqwest's `is_timeout`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests;
