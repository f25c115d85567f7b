//! The layers every listener's router runs a request through: a sane client `x-request-id`
//! kept or a fresh one made (tower-http's `SetRequestId` with [`MakeUuidV7`]), then
//! [`observe`]: the request's span and [`Observed`] record, a handler's panic answered, the id
//! on the response, and the body wrapped so that the record finishes when the body ends or is
//! dropped.
//!
//! tower-http's `PropagateRequestId` is not used: it keeps a response's own `x-request-id`,
//! and a pass-through response carries the provider's. The gateway's id replaces it, and the
//! provider's moves to [`UPSTREAM_HEADER`].

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::FutureExt as _;
use http::HeaderValue;
use tower_http::request_id::{RequestId, SetRequestIdLayer};
use tracing::Instrument;

use super::Telemetry;
use super::request::{Door, Finisher, Observed};
use super::request_id::{self, MakeUuidV7};

/// What a handler's panic is answered with (the panic's payload in, a response out).
pub type PanicAnswer = fn(Box<dyn Any + Send + 'static>) -> Response;

/// `router` with the request-id and observation layers (outermost: they see every answer,
/// a panic's included, which `on_panic` answers).
///
/// The panic is caught here rather than by a layer of its own (tower-http's `CatchPanic`):
/// each router layer wraps every route once more, and that one also boxed every response
/// body twice more, which each chunk of a streamed answer then went through.
pub fn wrap<S>(router: Router<S>, telemetry: Telemetry, on_panic: PanicAnswer) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // One router layer of the three, outermost first: each `Router::layer` wraps every route
    // in a box of its own, which every request then went through.
    router.layer((
        axum::middleware::map_request(drop_insane),
        SetRequestIdLayer::new(
            http::HeaderName::from_static(request_id::HEADER),
            MakeUuidV7,
        ),
        axum::middleware::from_fn_with_state(
            Observing {
                telemetry,
                on_panic,
            },
            observe,
        ),
    ))
}

async fn drop_insane(request: Request) -> Request {
    request_id::drop_insane(request)
}

/// The door a route template belongs to; None is the fallback (pass-through or 404).
fn door_of(template: Option<&str>) -> Door {
    let Some(path) = template else {
        return Door::Passthrough;
    };
    for wire in providers::dialects::all() {
        if wire.door_paths().contains(&path) {
            return Door::Dialect(wire.dialect());
        }
    }
    if path.starts_with("/admin/") {
        Door::Admin
    } else if path.starts_with("/v1/streams") {
        Door::Native
    } else if path == "/v1/ws" {
        Door::WebSocket
    } else if path == "/metrics" {
        Door::Metrics
    } else {
        Door::Gateway
    }
}

/// What [`observe`] needs besides the request.
#[derive(Clone)]
struct Observing {
    telemetry: Telemetry,
    on_panic: PanicAnswer,
}

/// See the module doc.
async fn observe(
    State(Observing {
        telemetry,
        on_panic,
    }): State<Observing>,
    mut request: Request,
    next: Next,
) -> Response {
    // A copy, not a clone: a client's id is a slice of the connection's read buffer, which it
    // would keep from being reused for as long as the answer streams.
    let id_header = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.header_value())
        .or_else(|| request.headers().get(request_id::HEADER))
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or_else(|| HeaderValue::from_static(""));
    // Sane (checked before SetRequestId) or a UUID: always ASCII.
    let id = id_header.to_str().unwrap_or_default().to_owned();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let door = door_of(template.as_deref());
    let path = template.unwrap_or_else(|| "*".to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        door = door.as_str(),
        method = %method,
        path = %path,
    );
    let observed = Observed::new(
        id,
        door,
        method,
        path,
        span.clone(),
        telemetry.metrics.clone(),
        telemetry.access,
    );
    request.extensions_mut().insert(observed.clone());
    // Answered in the span, so that the panic's log line carries the request id.
    let response = async move {
        AssertUnwindSafe(next.run(request))
            .catch_unwind()
            .await
            .unwrap_or_else(on_panic)
    }
    .instrument(span)
    .await;
    let (mut parts, body) = response.into_parts();
    if let Some(theirs) = parts.headers.insert(request_id::HEADER, id_header.clone())
        && theirs != id_header
    {
        // A pass-through response carries the provider's id: kept, under another name.
        parts.headers.insert(UPSTREAM_HEADER, theirs);
    }
    let status = parts.status.as_u16();
    if parts.extensions.get::<Upgraded>().is_some() {
        // The WebSocket connection finishes its own record when it closes.
        return Response::from_parts(parts, body);
    }
    let body = Body::new(Finishing {
        inner: body,
        finisher: Some(observed.finisher(status)),
    });
    Response::from_parts(parts, body)
}

/// Where a provider's own `x-request-id` goes on a pass-through response.
pub const UPSTREAM_HEADER: &str = "x-upstream-request-id";

/// Put in a response's extensions by a handler whose request goes on after the response
/// (a WebSocket upgrade): the handler finishes the record itself.
#[derive(Debug, Clone, Copy)]
pub struct Upgraded;

/// A response body that finishes its request's record when it ends or is dropped.
struct Finishing {
    inner: Body,
    /// Taken when the body ends; dropped with the body, it finishes the record as left
    /// early, unless hyper took the whole body without polling its end.
    finisher: Option<Finisher>,
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(finisher) = self.finisher.take()
        {
            finisher.ended();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        // A whole body hyper took in one frame is not polled to its end.
        if http_body::Body::is_end_stream(&self.inner)
            && let Some(finisher) = self.finisher.take()
        {
            finisher.ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_door_path_has_its_door() {
        for wire in providers::dialects::all() {
            for path in wire.door_paths() {
                assert_eq!(door_of(Some(path)), Door::Dialect(wire.dialect()));
            }
        }
        assert_eq!(door_of(None), Door::Passthrough);
        assert_eq!(door_of(Some("/v1/streams/{id}")), Door::Native);
        assert_eq!(door_of(Some("/admin/routes")), Door::Admin);
        assert_eq!(door_of(Some("/v1/ws")), Door::WebSocket);
        assert_eq!(door_of(Some("/metrics")), Door::Metrics);
        assert_eq!(door_of(Some("/healthz")), Door::Gateway);
    }
}
