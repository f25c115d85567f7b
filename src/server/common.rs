//! What every door shares: reading a body within the limits, authenticating the caller,
//! the client's own provider key, the dialect of a shared route, and an error answered in
//! the door's dialect.

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use providers::Dialect;

use crate::error::GatewayError;
use crate::keys::{Caller, Keyring};
use crate::respond::json_response;
use crate::secret::Secret;
use crate::telemetry::request::Observed;
use crate::upstream::ClientKey;

/// The body, up to `limit` bytes (413 beyond), within the listener's body read timeout (408
/// after it).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    // A `Content-Length` over the limit is refused before a byte of the body is read (a
    // chunked body is cut off by `to_bytes` as soon as it passes the limit).
    if usize::try_from(axum::body::HttpBody::size_hint(&body).lower()).map_or(true, |n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes reports the limit, and the listener its deadline, through the error's
        // source chain.
        let mut chain =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        if let Some(timed_out) = chain
            .clone()
            .find_map(|e| e.downcast_ref::<super::listen::BodyTimedOut>())
        {
            GatewayError::BodyTimeout {
                timeout_ms: timed_out.timeout_ms,
            }
        } else if chain.any(|e| e.to_string().contains("length limit")) {
            GatewayError::BodyTooLarge { limit }
        } else {
            // The transport's words (hyper's) stay in the log.
            tracing::debug!(error = %e, "reading a request body failed");
            GatewayError::MalformedJson("it could not be read to its end".into())
        }
    })
}

/// The request's record, put in its extensions by the telemetry layer (a detached one with a
/// fresh id if it is missing, which only a router built without that layer would do).
pub(super) fn observed(extensions: &http::Extensions) -> Observed {
    extensions
        .get::<Observed>()
        .cloned()
        .unwrap_or_else(|| Observed::detached(crate::telemetry::request_id::fresh()))
}

/// The caller a request's headers authenticate at `door`: its gateway key (401 in the door's
/// dialect when keys are configured and none matches), or anyone on an open gateway.
pub(super) fn authenticate(
    keyring: &Keyring,
    door: Dialect,
    headers: &HeaderMap,
) -> Result<Caller, GatewayError> {
    keyring
        .authenticate(crate::keys::presented(door, headers))
        .map_err(GatewayError::Unauthenticated)
}

/// The client's own provider key, for providers with `pass_through_client_key`. On an open
/// gateway it is the credential the client's SDK sent: `Authorization: Bearer` (both SDKs
/// can) or Anthropic's `x-api-key`. With gateway keys those carry the gateway key, and a
/// provider key comes in its own header, [`crate::keys::PROVIDER_KEY_HEADER`].
pub(super) fn client_key(door: Dialect, headers: &HeaderMap, keyring: &Keyring) -> ClientKey {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = if keyring.is_open() {
        let bearer = crate::keys::bearer(headers);
        match door.wire().key_header() {
            Some(name) => text(name).or(bearer),
            None => bearer,
        }
    } else {
        text(crate::keys::PROVIDER_KEY_HEADER)
    };
    ClientKey {
        door,
        key: key.filter(|k| !k.is_empty()).map(Secret::new),
    }
}

/// An error before the response started: the right status, the door's error shape.
pub(super) fn error_response(door: Dialect, error: &GatewayError) -> Response {
    if error.status().is_server_error() {
        tracing::warn!(error = %error, "request failed");
    }
    let mut response = json_response(error.status(), &error.body(door));
    let retry_after = match error {
        GatewayError::UpstreamStatus {
            retry_after: Some(after),
            ..
        }
        | GatewayError::Unavailable {
            retry_after: Some(after),
            ..
        } => Some(crate::error::retry_after_secs(*after)),
        GatewayError::RateLimited(l) => Some(l.retry_after_secs()),
        GatewayError::Hub(
            crate::hub::HubError::TooManyLive { .. } | crate::hub::HubError::StoreUnavailable,
        ) => Some(crate::error::retry_after_secs(crate::hub::LIVE_RETRY_AFTER)),
        _ => None,
    };
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The dialect a client speaks on a route every door shares (`/v1/models`, 404s): the first
/// whose marker headers it sent (`anthropic-version`), else the default door.
pub(crate) fn door_dialect(headers: &http::HeaderMap) -> Dialect {
    providers::dialects::all()
        .find(|w| w.marker_headers().iter().any(|h| headers.contains_key(*h)))
        .map_or(providers::dialects::DEFAULT_DOOR, |w| w.dialect())
}
