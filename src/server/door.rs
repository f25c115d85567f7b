//! The chat doors: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic),
//! streaming and not, over any upstream.

use axum::body::Bytes;
use axum::extract::Request;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use providers::{AgentEvent, Assembler, Dialect, EncodeOptions, StreamEncoder, encode_response};

use super::common::{authenticate, client_key, door_dialect, error_response, observed, read_body};
use super::state::AppState;
use super::streams::STREAM_ID_HEADER;
use crate::batch::ready_batches;
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
        let entry = super::streams::start_parsed(
            state,
            caller,
            door,
            None,
            bytes,
            request,
            &parts.headers,
            observed(&parts.extensions),
        )
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
    let answer = state.engine.answer(call).await?;
    tracing::info!(door = %door, route = %answer.route, stream = streaming, "answering");
    Ok((streaming, options, None, answer.events))
}

/// Most events taken from the upstream at once into one write to the client.
const MAX_BATCH: usize = 256;

/// Scheduler turns the upstream gets to add to a batch (see [`crate::batch`]): hyper's client
/// hands over the next HTTP chunk within two turns when it has it buffered (measured with
/// the load tool: one turn moves nothing, two halve the gateway's CPU per stream at zero delay).
const BATCH_YIELDS: u32 = 2;

/// A streaming answer: each event encoded for the door and sent as soon as it is ready.
/// Events that are ready together (decoded from one upstream read) go out in one write, so a
/// fast upstream does not cost one syscall and one task wake-up per event.
fn sse(door: Dialect, options: EncodeOptions, events: Events) -> Response {
    let mut encoder = StreamEncoder::new(door, options);
    let mut failed = false;
    let body = ready_batches(events, MAX_BATCH, BATCH_YIELDS).filter_map(move |items| {
        let mut out = Vec::new();
        for item in items {
            if failed {
                break;
            }
            let result = match item {
                Ok(event) => encoder.event(&event, &mut out),
                Err(e) => {
                    failed = true;
                    tracing::warn!(error = %e, "stream failed after it started");
                    encode_failure(&mut encoder, &e, &mut out)
                }
            };
            if let Err(e) = result {
                failed = true;
                let _ = encode_failure(&mut encoder, &encode_error(door, e), &mut out);
            }
        }
        std::future::ready((!out.is_empty()).then(|| Bytes::from(out)))
    });
    super::body::event_stream(super::body::spawned(body))
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
