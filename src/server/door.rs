//! The chat doors: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic),
//! streaming and not, over any upstream.

use axum::extract::Request;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use providers::{AgentEvent, Assembler, Dialect, EncodeOptions, StreamEncoder, encode_response};

use super::common::{authenticate, client_key, door_dialect, error_response, observed, read_body};
use super::state::AppState;
use super::streams::STREAM_ID_HEADER;
use crate::engine::{Call, Events};
use crate::error::GatewayError;
use crate::respond::json_response;
use crate::upstream::ForwardHeaders;

/// Request header asking for a resumable answer (`true`), when `streams.doors_resumable` is
/// not already on.
pub const RESUMABLE_HEADER: &str = "streamgate-resumable";

/// Any other path: a 404 in the dialect the client seems to speak.
pub async fn not_found(headers: HeaderMap, uri: http::Uri) -> Response {
    error_response(
        door_dialect(&headers),
        &GatewayError::NotFound {
            path: uri.path().to_owned(),
        },
    )
}

pub(super) async fn chat(state: AppState, door: Dialect, request: Request) -> Response {
    // Past the shutdown grace the answer ends with the door's error (a 503 when not begun,
    // an upstream still to answer included).
    let grace_ms = state.engine.config().server.shutdown_grace_ms;
    // A child token: polled at every event, it locks only its own node, not one that every
    // stream shares.
    let over = state.drain.over().child_token();
    let started = tokio::select! {
        biased;
        () = over.cancelled() => Err(GatewayError::ShuttingDown { grace_ms }),
        started = start(&state, door, request) => started,
    };
    let (streaming, options, stream_id, events) = match started {
        Ok(started) => started,
        Err(e) => return error_response(door, &e),
    };
    let events: Events = Box::pin(super::drain::cut(events, over, grace_ms));
    let mut response = if streaming {
        sse(door, options, events)
    } else {
        whole(door, events).await
    };
    if let Some(id) = stream_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(STREAM_ID_HEADER, v);
    }
    response
}

/// Reads and parses the request, then starts the answer: straight from the engine, or
/// through the hub when the answer is to be resumable (then with its stream id).
async fn start(
    state: &AppState,
    door: Dialect,
    request: Request,
) -> Result<(bool, EncodeOptions, Option<String>, Events), GatewayError> {
    let (parts, body) = request.into_parts();
    let caller = authenticate(&state.engine.keyring(), door, &parts.headers)?;
    let limit = state.engine.config().server.max_body_bytes;
    let bytes = read_body(body, limit).await?;
    let request = providers::parse::parse(
        door,
        &bytes,
        state.engine.config().server.max_body_json_values,
    )?;
    let streaming = request.stream;
    let options = EncodeOptions {
        include_usage: request.include_usage,
    };
    let resumable = state.hub.config().doors_resumable
        || parts
            .headers
            .get(RESUMABLE_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if resumable {
        // Boxed, so that its future does not size the plain answer's.
        let entry = Box::pin(super::streams::start_parsed(
            state,
            caller,
            door,
            None,
            bytes,
            request,
            &parts.headers,
            observed(&parts.extensions),
        ))
        .await?;
        let id = entry.id().to_owned();
        let events = super::streams::agent_events(entry.subscribe(None)?);
        return Ok((streaming, options, Some(id), events));
    }
    // Not kept for the answer: the unified request holds what it needs.
    drop(bytes);
    let call = Call {
        door,
        request,
        key: client_key(door, &parts.headers, &state.engine.keyring()),
        forward: ForwardHeaders::from_headers(&parts.headers),
        caller,
        observed: observed(&parts.extensions),
    };
    // The head's header values are slices of the connection's read buffer: while they live,
    // hyper's next read cannot reuse that buffer and takes another 8 KiB.
    drop(parts);
    let answer = state.engine.answer(call).await?;
    // The access line names the door and the routes when the request ends; this says when
    // the answer began, for debugging (at info it doubled the lines of a busy gateway).
    tracing::debug!(door = %door, route = %answer.route, stream = streaming, "answering");
    Ok((streaming, options, None, answer.events))
}

/// A streaming answer: each event encoded for the door and sent as soon as it is ready.
/// Events that are ready together (decoded from one upstream read) go out in one write, so a
/// fast upstream does not cost one syscall and one task wake-up per event.
fn sse(door: Dialect, options: EncodeOptions, events: Events) -> Response {
    let encoder = DoorEncoder {
        door,
        encoder: StreamEncoder::new(door, options),
    };
    super::body::event_stream(super::body::events(events, encoder))
}

/// An answer's events in the door's dialect; the first error ends it with the dialect's
/// error frame (never a clean end).
struct DoorEncoder {
    door: Dialect,
    encoder: StreamEncoder,
}

impl super::body::EncodeItem<Result<AgentEvent, GatewayError>> for DoorEncoder {
    fn encode(&mut self, item: Result<AgentEvent, GatewayError>, out: &mut Vec<u8>) -> bool {
        let (result, failed) = match item {
            Ok(event) => (self.encoder.event(&event, out), false),
            Err(e) => {
                tracing::warn!(error = %e, "stream failed after it started");
                (encode_failure(&mut self.encoder, &e, out), true)
            }
        };
        match result {
            Ok(()) => failed,
            Err(e) => {
                let _ = encode_failure(&mut self.encoder, &encode_error(self.door, e), out);
                true
            }
        }
    }
}

/// The terminal error of a started stream, in the door's dialect: never a clean end.
fn encode_failure(
    encoder: &mut StreamEncoder,
    error: &GatewayError,
    out: &mut Vec<u8>,
) -> Result<(), providers::EncodeError> {
    for event in AgentEvent::terminal_failure(error.to_error_info()) {
        encoder.event(&event, out)?;
    }
    Ok(())
}

/// A non-streaming answer: the whole stream assembled into the door's response body.
async fn whole(door: Dialect, mut events: Events) -> Response {
    let mut assembler = Assembler::new();
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => assembler.push(&event),
            Err(e) => return error_response(door, &e),
        }
    }
    match encode_response(door, assembler.message()) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error_response(door, &encode_error(door, e)),
    }
}

/// An answer the door's encoder refused: one the dialect cannot express is the client's to
/// change (4xx); any other refusal is the gateway's bug.
fn encode_error(door: Dialect, e: providers::EncodeError) -> GatewayError {
    tracing::error!(error = %e, "encoding for the client failed");
    match e {
        providers::EncodeError::Unsupported { what, .. } => {
            GatewayError::Untranslatable { door, what }
        }
        other => GatewayError::Internal(format!("the answer could not be encoded: {other}")),
    }
}
