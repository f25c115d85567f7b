//! Pass-through: every path under `/v1/` that the gateway does not answer itself
//! (`/v1/embeddings`, `/v1/files`, `/v1/audio/*`, `/v1/batches`, `/v1/messages/batches`,
//! `/v1/models/{id}`, ...) is forwarded to the provider that serves the door's dialect, with
//! the gateway's authentication, body limits and rate limits, and errors in the door's
//! dialect. Bodies stream both ways; only a JSON body is read whole (it is bounded by the
//! body-size limit), to route the model it names. See docs/configuration.md, "Pass-through".
//!
//! The gateway's own routes are the router's ([`super::router`]): they take precedence, and
//! this handler is its fallback.

mod headers;
mod target;
mod upload;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::header;
use providers::Dialect;
use providers::untrusted::untrusted;

use super::common::{authenticate, client_key, door_dialect, error_response, read_body};
use super::state::AppState;
use crate::error::GatewayError;
use crate::limit::{ClientId, TokenEstimate};
use crate::upstream::{Forward, ForwardHeaders};

use target::forwardable;

/// The name a request that names no model counts against in the per-model rate limits
/// (`[limits.models."(pass-through)"]`).
pub const NO_MODEL: &str = "(pass-through)";

/// Any path no route of the gateway's own matched.
pub async fn forward(State(state): State<AppState>, request: Request) -> Response {
    let door = door_dialect(request.headers());
    match pass(&state, door, request).await {
        Ok(response) => response,
        Err(e) => error_response(door, &e),
    }
}

async fn pass(state: &AppState, door: Dialect, request: Request) -> Result<Response, GatewayError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let not_found = || GatewayError::NotFound {
        path: path.to_owned(),
    };
    if !forwardable(path) {
        return Err(not_found());
    }
    // One configuration for the whole exchange, as for an answer.
    let generation = state.engine.generation();
    let caller = authenticate(generation.keyring(), door, &parts.headers)?;
    let config = generation.config();
    let default = config
        .passthrough
        .provider(&config.providers, door)
        .ok_or_else(not_found)?;
    let mut headers = headers::request_headers(&parts.headers);
    let outgoing = prepare(config, door, default, &mut headers, body).await?;
    let target = &outgoing.target;
    if let Some(model) = &target.model {
        caller.check_model(model)?;
    }
    let key = client_key(door, &parts.headers, generation.keyring());
    let client = caller
        .client_id()
        .unwrap_or_else(|| ClientId::from_secret(key.key.as_ref()));
    // A JSON body's tokens are estimated as the chat doors' are, by size; an upload is not
    // a prompt.
    let estimate = TokenEstimate::new(u64::try_from(target.body.len() / 4).unwrap_or(u64::MAX), 0);
    let permit = generation
        .limiter()
        .acquire(
            &client,
            target.model.as_deref().unwrap_or(NO_MODEL),
            estimate,
        )
        .await?;
    let forward = Forward {
        method: parts.method.clone(),
        path: path.to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: outgoing.body,
    };
    let sent = outgoing.sent;
    let answer = generation
        .upstream()
        .forward(
            target.name,
            target.provider,
            forward,
            &key,
            &ForwardHeaders::from_headers(&parts.headers),
            async move {
                if let Some(sent) = sent {
                    let _ = sent.await;
                }
            },
        )
        .await;
    // A body cut by its limit or deadline explains a failed send better than the send does.
    if let Some(cut) = outgoing.cut.as_ref().and_then(upload::CutSlot::get) {
        return Err(cut.error());
    }
    let answer = answer?;
    tracing::info!(
        door = %door,
        provider = target.name,
        method = %parts.method,
        path = %untrusted(path),
        status = answer.status.as_u16(),
        "passing through"
    );
    // The permit (the request's stream slot) is held until the answer's body is done.
    let body = answer.body.map(move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = headers::response_headers(&answer.headers);
    Ok(response)
}

/// A request body on its way out, and where it goes.
struct Outgoing<'a> {
    target: target::Target<'a>,
    /// None for a request without a body.
    body: Option<reqwest::Body>,
    /// A streamed body's signal that it has been handed over whole.
    sent: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Why a streamed body was cut, once it was.
    cut: Option<upload::CutSlot>,
}

/// The body to send and its target: none; a JSON body read whole (bounded) and routed by the
/// model it names; or anything else streamed as it comes. `headers` lose a `Content-Length`
/// the gateway may have made wrong.
async fn prepare<'a>(
    config: &'a crate::config::Config,
    door: Dialect,
    default: (&'a str, &'a crate::config::ProviderConfig),
    headers: &mut http::HeaderMap,
    body: Body,
) -> Result<Outgoing<'a>, GatewayError> {
    let limit = config.server.max_body_bytes;
    // A `Content-Length` over the limit is refused before a byte of the body is read.
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if body.is_end_stream() {
        return Ok(Outgoing {
            target: target::Target::untouched(default),
            body: None,
            sent: None,
            cut: None,
        });
    }
    if !is_json(headers) {
        let upload = upload::stream(body, limit);
        return Ok(Outgoing {
            target: target::Target::untouched(default),
            body: Some(upload.body),
            sent: Some(upload.sent),
            cut: Some(upload.cut),
        });
    }
    let bytes = read_body(body, limit).await?;
    let target = target::for_json(
        config,
        door,
        default,
        bytes,
        config.server.max_body_json_values,
    )?;
    // The body may have changed (the route's model name): its length is reqwest's to set.
    headers.remove(header::CONTENT_LENGTH);
    Ok(Outgoing {
        body: Some(reqwest::Body::from(target.body.clone())),
        target,
        sent: None,
        cut: None,
    })
}

/// Whether the client says its body is JSON (`application/json`, with any parameters).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
