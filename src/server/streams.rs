//! `POST /v1/streams`: the native door. An OpenAI- or Anthropic-shaped request starts a stream
//! and the answer comes back as Agent Events over SSE, each frame's `id:` its seq, so that a
//! standard `Last-Event-ID` reconnect can name where to resume (resume and the journal come
//! with the Agent Event Stream issue).
//!
//! The request's dialect is the `streamgate-dialect` header (`openai` or `anthropic`); without
//! it, a request carrying `anthropic-version` is Anthropic-shaped and any other OpenAI-shaped.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use providers::{AgentEvent, Dialect, Envelope, Stamper};

use super::AppState;
use super::door::{client_key, error_response, parse_request, read_body};
use crate::engine::{Call, unix_now};
use crate::error::GatewayError;
use crate::upstream::ForwardHeaders;

/// Response header naming the stream.
pub const STREAM_ID_HEADER: &str = "streamgate-stream-id";

/// Request header choosing the request's dialect.
pub const DIALECT_HEADER: &str = "streamgate-dialect";

static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

/// The handler.
pub async fn start(State(engine): State<AppState>, request: Request) -> Response {
    let dialect = match request_dialect(request.headers()) {
        Ok(d) => d,
        Err(e) => return error_response(Dialect::OpenAi, &e),
    };
    let (parts, body) = request.into_parts();
    let started = async {
        let bytes = read_body(body, engine.config().server.max_body_bytes).await?;
        let request = parse_request(dialect, &bytes)?;
        let call = Call {
            door: dialect,
            request,
            key: client_key(dialect, &parts.headers),
            forward: ForwardHeaders::from_headers(&parts.headers),
        };
        engine.answer(call).await
    };
    let answer = match started.await {
        Ok(answer) => answer,
        Err(e) => return error_response(dialect, &e),
    };
    let id = format!(
        "st_{:x}{:04x}",
        unix_now(),
        NEXT_STREAM.fetch_add(1, Ordering::Relaxed) & 0xffff
    );
    tracing::info!(stream = %id, route = %answer.route, "agent event stream");
    let mut stamper = Stamper::new(id.clone());
    let mut failed = false;
    let body = answer.events.ready_chunks(256).map(move |items| {
        let mut out = Vec::new();
        for item in items {
            if failed {
                break;
            }
            let events = match item {
                Ok(event) => vec![event],
                Err(e) => {
                    failed = true;
                    AgentEvent::terminal_failure(e.to_error_info()).into()
                }
            };
            for event in events {
                write_event(&mut out, &stamper.stamp(event));
            }
        }
        Ok::<_, Infallible>(Bytes::from(out))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(STREAM_ID_HEADER, v);
    }
    response
}

/// One SSE frame: `id:` the seq, `event:` the type, `data:` the envelope.
fn write_event(out: &mut Vec<u8>, envelope: &Envelope) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "id: {}", envelope.seq);
    // serde_json cannot fail on these types; an empty frame is the harmless fallback.
    let _ = providers::sse::write_json_frame(out, Some(envelope.event.kind()), envelope);
}

fn request_dialect(headers: &HeaderMap) -> Result<Dialect, GatewayError> {
    match headers.get(DIALECT_HEADER).map(|v| v.to_str()) {
        Some(Ok(name)) => name
            .parse()
            .map_err(|e: providers::dialect::UnknownDialect| {
                GatewayError::MalformedJson(format!("{DIALECT_HEADER}: {e}"))
            }),
        Some(Err(_)) => Err(GatewayError::MalformedJson(format!(
            "{DIALECT_HEADER} is not text"
        ))),
        None => Ok(super::door_dialect(headers)),
    }
}
