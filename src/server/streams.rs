//! The native door over SSE: `POST /v1/streams` starts a stream in the hub and follows it,
//! `GET /v1/streams/{id}` follows it again from a seq (`Last-Event-ID` or `?after=`),
//! `DELETE /v1/streams/{id}` cancels it, `GET /admin/streams` lists what the hub keeps.
//!
//! Each SSE frame's `id:` is the event's seq and `event:` its type, so a standard
//! EventSource reconnect resumes exactly where the client stopped. A stream goes on when its
//! client leaves (for `streams.detach_ms`), and a finished one stays resumable for
//! `streams.retention_ms`.
//!
//! The request's dialect is the `streamgate-dialect` header (`openai` or `anthropic`); without
//! it, a request carrying `anthropic-version` is Anthropic-shaped and any other OpenAI-shaped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use providers::request::ChatRequest;
use providers::{AgentEvent, Dialect, Envelope};
use serde::Deserialize;
use serde_json::json;

use super::common::{authenticate, client_key, door_dialect, error_response, observed, read_body};
use super::state::AppState;
use crate::engine::{Call, Events};
use crate::error::GatewayError;
use crate::hub::{Entry, NewStream, StoredEvent, Subscription};
use crate::keys::Caller;
use crate::respond::json_response;
use crate::telemetry::request::Observed;
use crate::upstream::ForwardHeaders;

/// Response header naming the stream (request header too, on `POST /v1/streams`, for a
/// client that chooses its stream's id).
pub const STREAM_ID_HEADER: &str = "streamgate-stream-id";

/// Request header choosing the request's dialect.
pub const DIALECT_HEADER: &str = "streamgate-dialect";

/// `POST /v1/streams`.
pub async fn start(State(state): State<AppState>, request: Request) -> Response {
    let dialect = match request_dialect(request.headers()) {
        Ok(d) => d,
        Err(e) => return error_response(providers::dialects::DEFAULT_DOOR, &e),
    };
    let (parts, body) = request.into_parts();
    let id = parts
        .headers
        .get(STREAM_ID_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let started = async {
        let caller = authenticate(&state.engine.keyring(), dialect, &parts.headers)?;
        let bytes = read_body(body, state.engine.config().server.max_body_bytes).await?;
        let observed = observed(&parts.extensions);
        let entry =
            start_stream(&state, caller, dialect, id, bytes, &parts.headers, observed).await?;
        Ok::<_, GatewayError>(entry.subscribe(None)?)
    };
    match started.await {
        Ok(subscription) => sse_response(&state, subscription),
        Err(e) => error_response(dialect, &e),
    }
}

/// Parses a request of `door`'s dialect, starts its answer and hands it to the hub, detached
/// from the caller. Errors before the answer started (bad request, no route, rate limit)
/// come back as such; later ones end the stream with an `error` event.
pub(crate) async fn start_stream(
    state: &AppState,
    caller: Caller,
    door: Dialect,
    id: Option<String>,
    body: Bytes,
    headers: &HeaderMap,
    observed: Observed,
) -> Result<Arc<Entry>, GatewayError> {
    let request = providers::parse::parse(
        door,
        &body,
        state.engine.config().server.max_body_json_values,
    )?;
    start_parsed(state, caller, door, id, body, request, headers, observed).await
}

/// [`start_stream`] for a request the caller has parsed already.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_parsed(
    state: &AppState,
    caller: Caller,
    door: Dialect,
    id: Option<String>,
    body: Bytes,
    request: ChatRequest,
    headers: &HeaderMap,
    observed: Observed,
) -> Result<Arc<Entry>, GatewayError> {
    if let Some(id) = &id {
        state.hub.check_new_id(caller.owner(), id).await?;
    }
    // Before the engine: a stream over a live cap costs no upstream call.
    let slot = state.hub.reserve(caller.owner())?;
    let owner = caller.owner().map(str::to_owned);
    let forward = ForwardHeaders::from_headers(headers);
    let call = Call {
        door,
        request,
        key: client_key(door, headers, &state.engine.keyring()),
        forward: forward.clone(),
        caller,
        observed,
    };
    let answer = state.engine.answer(call).await?;
    let entry = state
        .hub
        .start(
            NewStream {
                id,
                owner,
                door,
                body,
                forward,
            },
            answer,
            slot,
        )
        .await?;
    tracing::info!(stream = entry.id(), route = %entry.info().route, "agent event stream");
    Ok(entry)
}

/// A subscription's events as the engine would give them, for the OpenAI and Anthropic
/// doors' encoders. A stream's `error` event becomes the `Err` that those doors render in
/// their dialect.
pub(crate) fn agent_events(subscription: Subscription) -> Events {
    let events = subscription
        .into_stream()
        .flat_map(futures_util::stream::iter)
        .map(|stored| {
            let envelope: Envelope = serde_json::from_slice(&stored.json)
                .map_err(|e| GatewayError::Internal(format!("a kept event does not parse: {e}")))?;
            match envelope.event {
                AgentEvent::Error(info) => Err(GatewayError::Ended(info)),
                event => Ok(event),
            }
        });
    Box::pin(events)
}

/// `?after=SEQ` of `GET /v1/streams/{id}`.
#[derive(Debug, Deserialize)]
pub struct ResumeQuery {
    after: Option<u64>,
}

/// `GET /v1/streams/{id}`: the events after `Last-Event-ID` (or `?after=`, which wins), then
/// live ones. A finished stream the client has whole answers 204, which tells an
/// EventSource to stop reconnecting.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<ResumeQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let dialect = door_dialect(&headers);
    let caller = match authenticate(&state.engine.keyring(), dialect, &headers) {
        Ok(caller) => caller,
        Err(e) => return error_response(dialect, &e),
    };
    let after = match query {
        Ok(Query(q)) => match q.after {
            Some(after) => Some(after),
            None => match last_event_id(&headers) {
                Ok(after) => after,
                Err(e) => return error_response(dialect, &e),
            },
        },
        Err(e) => {
            // The parser's words can quote the query: logged escaped, not echoed.
            tracing::debug!(error = %providers::untrusted::untrusted(&e.to_string()), "bad ?after=");
            return error_response(
                dialect,
                &GatewayError::MalformedJson("after must be a seq number".into()),
            );
        }
    };
    let entry = match state.hub.get_or_follow(caller.owner(), &id, after).await {
        Ok(entry) => entry,
        Err(e) => return error_response(dialect, &e.into()),
    };
    if entry.is_finished() && after.is_some_and(|a| a + 1 == entry.next_seq()) {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .unwrap_or_default();
    }
    match entry.subscribe(after) {
        Ok(subscription) => sse_response(&state, subscription),
        Err(e) => error_response(dialect, &e.into()),
    }
}

/// `DELETE /v1/streams/{id}`: stops generation; followers get the `cancelled` error and the
/// stream's end. The stream stays resumable like any finished one.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let dialect = door_dialect(&headers);
    let caller = match authenticate(&state.engine.keyring(), dialect, &headers) {
        Ok(caller) => caller,
        Err(e) => return error_response(dialect, &e),
    };
    match state.hub.cancel_stream(caller.owner(), &id).await {
        Ok(was_live) => json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "stream.cancel", "cancelled": was_live}),
        ),
        Err(e) => error_response(dialect, &e.into()),
    }
}

/// `GET /admin/streams`: every stream kept, with totals (and the journal's, when on).
pub async fn admin(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "totals": state.hub.stats(),
            "journal": state.hub.journal_stats(),
            "redis": state.hub.cluster_stats(),
            "websocket": websocket_settings(&state.hub.config().websocket),
            "data": state.hub.list(),
        }),
    )
}

/// The WebSocket door's settings in force (set by `[streams.websocket]` or the original
/// design's `[streaming]` keys), so an operator sees which one won.
fn websocket_settings(settings: &crate::hub::WebSocketSettings) -> serde_json::Value {
    let compression: Vec<&str> = settings
        .compression
        .modes()
        .iter()
        .map(crate::ws::Compression::name)
        .collect();
    json!({
        "buffer_events": settings.buffer_events,
        "chunk_size": settings.chunk_size.max(crate::ws::MIN_CHUNK_SIZE),
        "compression": compression,
    })
}

/// The SSE response following `subscription`: all events ready together go out in one write,
/// and a comment line after `sse_keepalive_ms` without any (never when zero). When the
/// shutdown grace is over the response ends without `stream.end`: the stream stays in the
/// journal, for the client to resume from its last seq once the gateway is back.
fn sse_response(state: &AppState, subscription: Subscription) -> Response {
    let id = subscription.entry().id().to_owned();
    let keepalive = keepalive(state);
    let keepalive = (!keepalive.is_zero()).then_some(keepalive);
    // A child token, whose lock no other stream shares (it is polled at every batch).
    let over = state.drain.over().child_token().cancelled_owned();
    let body = futures_util::stream::unfold(subscription, move |mut sub| async move {
        let batch = match keepalive {
            // next_batch is cancel-safe: what it had not returned is read again next time.
            Some(every) => match tokio::time::timeout(every, sub.next_batch()).await {
                Ok(batch) => batch?,
                Err(_) => return Some((Bytes::from_static(b": keep-alive\n\n"), sub)),
            },
            None => sub.next_batch().await?,
        };
        let mut out = Vec::new();
        for event in &batch {
            write_event(&mut out, event);
        }
        Some((Bytes::from(out), sub))
    })
    .take_until(over)
    .map(Ok::<_, Infallible>);
    let mut response = super::body::event_stream(Body::from_stream(body));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(STREAM_ID_HEADER, v);
    }
    response
}

fn keepalive(state: &AppState) -> Duration {
    Duration::from_millis(state.hub.config().sse_keepalive_ms)
}

/// One SSE frame: `id:` the seq, `event:` the type, `data:` the envelope.
fn write_event(out: &mut Vec<u8>, event: &StoredEvent) {
    let mut seq = itoa::Buffer::new();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(seq.format(event.seq).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(event.kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Envelope JSON is one line: serde_json escapes every newline inside strings.
    out.extend_from_slice(&event.json);
    out.extend_from_slice(b"\n\n");
}

/// `Last-Event-ID`, the seq of the last event the client has.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, GatewayError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| {
                GatewayError::MalformedJson(format!(
                    "Last-Event-ID must be a seq number, got {}",
                    providers::untrusted::untrusted(text)
                ))
            })
        }
    }
}

/// The request's dialect from the headers: `streamgate-dialect`, else guessed (`anthropic-version`
/// or `x-api-key`: Anthropic; otherwise OpenAI).
pub(crate) fn request_dialect(headers: &HeaderMap) -> Result<Dialect, GatewayError> {
    match headers.get(DIALECT_HEADER).map(|v| v.to_str()) {
        Some(Ok(name)) => name
            .parse()
            .map_err(|e: providers::dialect::UnknownDialect| {
                GatewayError::MalformedJson(format!("{DIALECT_HEADER}: {e}"))
            }),
        Some(Err(_)) => Err(GatewayError::MalformedJson(format!(
            "{DIALECT_HEADER} is not text"
        ))),
        None => Ok(door_dialect(headers)),
    }
}
