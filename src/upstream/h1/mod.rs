//! The gateway's own HTTP/1.1 client for streamed answers, read by whoever reads the answer.
//!
//! A request is written in one vectored write; the response head is parsed by httparse
//! ([`wire`]); the body is de-chunked in place in the connection's read buffer and handed
//! to the SSE decoder as slices of it ([`Body`]). The answering task reads the socket
//! itself: an upstream frame costs one wake-up of that task and nothing else. hyper's client
//! cost 2k instructions per frame on top of this (its connection future, the one-slot
//! channel between it and the body, a `Bytes` per chunk) and 27 KB per connection (its
//! boxed state, an 8 KiB write buffer, its request channel); measured in
//! docs/performance-gateway.md. Connections come from the connector stack reqwest uses
//! ([`connect`]) and go back to a pool of the provider's own ([`idle`]) once an answer
//! ended cleanly.
//!
//! Used for a provider's streamed answers only, and only when no HTTP proxy from the
//! environment applies to its URL (reqwest honours `HTTP(S)_PROXY`/`ALL_PROXY`/`NO_PROXY`;
//! this client does not, so such a provider keeps reqwest: [`Client::for_provider`]).
//! Streamed answers over this client use HTTP/1.1 only, one connection per concurrent
//! stream, as nginx does with its upstreams.

mod body;
mod buffer;
mod conn;
mod connect;
mod idle;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub(super) use body::Body;
pub(super) use conn::TransportError;
pub(super) use connect::tls_config;

use super::pool::{InFlight, PoolCounters};
use crate::error::{ConnectionFault, GatewayError};
use buffer::Spare;
use conn::Conn;

/// The read buffer of one exchange, which also caps a response head: 8 KiB holds a
/// provider's head with room to spare (nginx's default `proxy_buffer_size` is 4 KiB), and
/// body data streams through it whatever its size. Held by an answer while it is read: a
/// pooled connection holds none.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Read buffers a provider's client keeps for its next answers (512 KiB at most).
const SPARE_BUFFERS: usize = 64;

/// Where a provider's streamed answers are asked for, parsed once.
#[derive(Debug)]
struct Target {
    /// Scheme and authority: what is connected to.
    origin: http::Uri,
    /// Path and query: what goes on the request line.
    path: String,
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
            path: path.as_str().to_owned(),
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
    spare: Arc<Spare>,
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
                spare: Arc::new(Spare::new(READ_BUFFER_BYTES, SPARE_BUFFERS)),
                counters,
            }),
        }
    }

    /// POSTs `body` with `headers` (the provider's: content type, accept, credentials...;
    /// `Host` and `Content-Length` are written here) and waits for the response head.
    ///
    /// A pooled connection that takes none of the request (found closed as it is written)
    /// is replaced by a fresh one, once; a request that may have reached the provider is
    /// never sent again.
    pub(super) async fn post(
        &self,
        provider: &str,
        headers: http::HeaderMap,
        body: Vec<u8>,
        in_flight: Option<InFlight>,
    ) -> Result<(http::response::Parts, Body), GatewayError> {
        let inner = &*self.inner;
        let head = wire::request_head(&inner.target.path, &inner.target.host, &headers, body.len());
        let (mut conn, mut reused) = match inner.idle.take() {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect(provider)).await?, false),
        };
        loop {
            match conn.send(&head, &body).await {
                Ok(()) => break,
                Err(e) if reused && e.nothing_written() => {
                    tracing::debug!(provider, error = %chain(&e), "a pooled upstream connection was closed: sending on a new one");
                    conn = Box::pin(self.connect(provider)).await?;
                    reused = false;
                }
                Err(e) => return Err(send_error(provider, &e)),
            }
        }
        let mut buf = inner.spare.take();
        let response = conn
            .read_head(&mut buf)
            .await
            .map_err(|e| send_error(provider, &e))?;
        let body = Body::new(
            conn,
            buf,
            response.framing,
            response.keep_alive,
            &inner.idle,
            &inner.spare,
            in_flight,
        );
        Ok((response.parts, body))
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
        inner.counters.opened();
        Ok(Conn::new(io))
    }

    /// Connections parked in this client's pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.idle.len()
    }
}

/// A failure on the way to a response head: the provider was reached (or the pooled
/// connection was dead and there is no second try), so it closed before answering, as
/// reqwest's error mapped it. The transport's words go to the log.
fn send_error(provider: &str, e: &TransportError) -> GatewayError {
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
