//! The chat doors: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic),
//! streaming and not, over any upstream.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use providers::{AgentEvent, Assembler, Dialect, EncodeOptions, StreamEncoder, encode_response};

use super::AppState;
use super::streams::STREAM_ID_HEADER;
use crate::batch::ready_batches;
use crate::engine::{Call, Events};
use crate::error::GatewayError;
use crate::keys::{Caller, Keyring};
use crate::secret::Secret;
use crate::upstream::{ClientKey, ForwardHeaders};

/// Request header asking for a resumable answer (`true`), when `streams.doors_resumable` is
/// not already on.
pub const RESUMABLE_HEADER: &str = "streamgate-resumable";

/// `POST /v1/chat/completions`.
pub async fn openai(State(state): State<AppState>, request: Request) -> Response {
    chat(state, Dialect::OpenAi, request).await
}

/// `POST /v1/messages`.
pub async fn anthropic(State(state): State<AppState>, request: Request) -> Response {
    chat(state, Dialect::Anthropic, request).await
}

/// Any other path: a 404 in the dialect the client seems to speak.
pub async fn not_found(headers: HeaderMap, uri: http::Uri) -> Response {
    error_response(
        super::door_dialect(&headers),
        &GatewayError::NotFound {
            path: uri.path().to_owned(),
        },
    )
}

async fn chat(state: AppState, door: Dialect, request: Request) -> Response {
    let (streaming, options, stream_id, events) = match start(&state, door, request).await {
        Ok(started) => started,
        Err(e) => return error_response(door, &e),
    };
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
    let caller = authenticate(state.engine.keyring(), door, &parts.headers)?;
    let limit = state.engine.config().server.max_body_bytes;
    let bytes = read_body(body, limit).await?;
    let request = providers::request::parse(
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
        let entry =
            super::streams::start_parsed(state, caller, door, None, bytes, request, &parts.headers)
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
        key: client_key(door, &parts.headers, state.engine.keyring()),
        forward: ForwardHeaders::from_headers(&parts.headers),
        caller,
    };
    let answer = state.engine.answer(call).await?;
    tracing::info!(door = %door, route = %answer.route, stream = streaming, "answering");
    Ok((streaming, options, None, answer.events))
}

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
        match door {
            Dialect::Anthropic => text("x-api-key").or(bearer),
            Dialect::OpenAi => bearer,
        }
    } else {
        text(crate::keys::PROVIDER_KEY_HEADER)
    };
    ClientKey {
        door,
        key: key.filter(|k| !k.is_empty()).map(Secret::new),
    }
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
        GatewayError::Hub(crate::hub::HubError::TooManyLive { .. }) => {
            Some(crate::error::retry_after_secs(crate::hub::LIVE_RETRY_AFTER))
        }
        _ => None,
    };
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// A JSON response with its content type.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
