//! How each provider's connection pool is used, for the metrics: connections opened and
//! requests in flight.
//!
//! Streamed answers' own client (`h1`) counts its connections and requests itself. For the
//! rest, reqwest does not expose its pool, and its connector's `Conn` is sealed (a connector layer
//! cannot wrap the connection's I/O to see it close). So the gateway counts what it can see
//! exactly: each connection the pool opens (a layer on reqwest's connector, counting after the
//! TCP connect and TLS handshake succeeded), and each request from its send until its response
//! body is dropped (the time it holds a connection, or an HTTP/2 stream of one). Connections
//! opened growing as fast as requests means the pool is not reusing them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

/// One provider's counters.
#[derive(Debug, Default)]
pub(super) struct PoolCounters {
    opened: AtomicU64,
    in_flight: AtomicUsize,
}

/// One provider's pool use, read at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The provider's name (a key of `[providers]`).
    pub provider: String,
    /// Connections its client opened since the gateway started.
    pub connections_opened: u64,
    /// Requests sent and not yet finished (response body not yet dropped).
    pub requests_in_flight: usize,
}

impl PoolCounters {
    /// A connection was opened (TCP connected, TLS done).
    pub(super) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self, provider: &str) -> PoolStats {
        PoolStats {
            provider: provider.to_owned(),
            connections_opened: self.opened.load(Ordering::Relaxed),
            requests_in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// A request in flight; counted until dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<PoolCounters>);

impl InFlight {
    pub(super) fn start(counters: &Arc<PoolCounters>) -> InFlight {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counters))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `body`, keeping `in_flight` counted until it is dropped (read to its end or abandoned).
pub(super) fn held_by<S: Stream>(
    body: S,
    in_flight: Option<InFlight>,
) -> impl Stream<Item = S::Item> {
    body.map(move |chunk| {
        let _held = &in_flight;
        chunk
    })
}

/// The connector layer that counts connections opened (`ClientBuilder::connector_layer`).
#[derive(Debug, Clone)]
pub(super) struct CountConnects(pub(super) Arc<PoolCounters>);

impl<S> tower_layer::Layer<S> for CountConnects {
    type Service = CountConnectsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountConnectsService {
            inner,
            counters: Arc::clone(&self.0),
        }
    }
}

/// [`CountConnects`]' service: the connector, counting each connection it returns.
#[derive(Debug, Clone)]
pub(super) struct CountConnectsService<S> {
    inner: S,
    counters: Arc<PoolCounters>,
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, R> tower_service::Service<R> for CountConnectsService<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let connecting = self.inner.call(request);
        let counters = Arc::clone(&self.counters);
        Box::pin(async move {
            let connection = connecting.await?;
            counters.opened();
            Ok(connection)
        })
    }
}
