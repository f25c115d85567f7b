//! The replay upstream: an HTTP server (axum on hyper) that answers like OpenAI and Anthropic
//! from the recorded fixtures. `streamgate demo` and the gateway tests run the gateway over it.
//!
//! # Contract
//!
//! - `POST /v1/chat/completions` serves `fixtures/openai_chat/<model>.sse`, `POST /v1/messages`
//!   serves `fixtures/anthropic/<model>.sse`, where `<model>` is the request body's `model`.
//!   An unknown model is a 404 with that dialect's error JSON. OpenAI SDK base_url:
//!   `{replay}/v1`; Anthropic SDK base_url: `{replay}`.
//! - `stream: true`: the fixture's bytes as `text/event-stream`, one SSE frame per body chunk
//!   (each flushed as it is written). `stream` false or absent: the non-streaming JSON body of
//!   the same answer. That body is *derived*, not recorded: the fixture is decoded, assembled
//!   and written with [`providers::encode_response`] of the endpoint's dialect.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N = request bytes / 4.
//! - `POST /v1/embeddings` and `POST /v1/files` (multipart): deterministic answers for the
//!   paths the gateway passes through (see `endpoints.rs`).
//! - The fixtures are embedded in the binary at build time (build.rs), so the replay works
//!   from any directory; tests may add bodies of their own with [`Replay::insert_fixture`].
//! - Fault knobs are written in front of the model: `KNOBS:FIXTURE`, see [`fault`] (the knob
//!   table); `times=N` limits a fault to the first N identical requests.
//! - A continuation request (the partial answer as a final assistant message, or followed by
//!   the gateway's continue instruction) is answered with the rest of the recording, see
//!   [`continuation`].
//! - Every request is recorded ([`Replay::requests`]); streamed responses are counted when
//!   they open and when their body is dropped (finished, or the client went away), so a test
//!   can prove that the gateway lets go of an upstream whose client disconnected.

pub mod continuation;
mod endpoints;
pub mod fault;

pub use endpoints::EMBEDDING_DIMENSIONS;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use providers::error::ErrorReport;
use providers::{
    AgentEvent, Assembler, Dialect, EncodeOptions, StreamDecoder, StreamEncoder, encode_response,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ModelConfig, ProviderConfig};
pub use fault::Fault;

/// The fixture directory of a dialect.
pub fn fixture_dir(dialect: Dialect) -> &'static str {
    dialect.wire().fixture_dir()
}

/// The embedded fixture `name` (file stem) of `dialect`.
pub fn fixture(dialect: Dialect, name: &str) -> Option<&'static [u8]> {
    let dir = fixture_dir(dialect);
    embedded::FIXTURES
        .iter()
        .find(|(d, n, _)| *d == dir && *n == name)
        .map(|(_, _, body)| *body)
}

/// The names (file stems) of every embedded fixture of `dialect`, sorted.
pub fn fixture_names(dialect: Dialect) -> Vec<&'static str> {
    let dir = fixture_dir(dialect);
    embedded::FIXTURES
        .iter()
        .filter(|(d, _, _)| *d == dir)
        .map(|(_, n, _)| *n)
        .collect()
}

/// Model aliases the replay's configuration defines (alias, route).
pub const DEMO_ALIASES: [(&str, &str); 4] = [
    ("demo", "anthropic/tool_use_with_text"),
    ("demo-openai", "openai/tool_calls_parallel"),
    ("demo-thinking", "anthropic/thinking_short"),
    ("demo-limited", "anthropic/text_basic"),
];

/// Requests per minute of the `demo-limited` alias, to see the gateway's own 429.
pub const DEMO_LIMITED_RPM: u32 = 2;

/// One request the replay received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request path (`/v1/messages`).
    pub path: String,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's `model`.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    extra: Mutex<HashMap<(Dialect, String), Bytes>>,
    /// Requests seen per (endpoint dialect, model string), for `times=N`.
    seen: Mutex<HashMap<(Dialect, String), usize>>,
    opened: AtomicUsize,
    closed: watch::Sender<usize>,
    cancel: CancellationToken,
    /// `streamgate demo --chaos`: the fraction of knob-less requests given a random fault.
    chaos: Mutex<Option<(f64, fastrand::Rng)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the recordings from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running replay upstream. Dropping it shuts it down (open streams are cut).
#[derive(Debug)]
pub struct Replay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// Starts a replay upstream on `addr` (`127.0.0.1:0` for any free port) on the current tokio
/// runtime.
pub async fn spawn(addr: SocketAddr) -> io::Result<Replay> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (closed, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        requests: Mutex::new(Vec::new()),
        extra: Mutex::new(HashMap::new()),
        seen: Mutex::new(HashMap::new()),
        opened: AtomicUsize::new(0),
        closed,
        cancel: CancellationToken::new(),
        chaos: Mutex::new(None),
    });
    let mut app = Router::new();
    for wire in providers::dialects::all() {
        let dialect = wire.dialect();
        for path in wire.door_paths() {
            app = app.route(
                path,
                post(
                    move |State(shared): State<Arc<Shared>>, request: Request| async move {
                        answer(&shared, dialect, request).await
                    },
                ),
            );
        }
    }
    let app = app
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/embeddings", post(endpoints::embeddings))
        .route("/v1/files", post(endpoints::files))
        .with_state(shared.clone());
    let cancel = shared.cancel.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    Ok(Replay {
        addr,
        shared,
        task: Some(task),
    })
}

impl Replay {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the Anthropic SDK's base_url (the OpenAI SDK's is this + `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gateway configuration over this replay: providers `openai` and `anthropic` (no key
    /// variables), and the [`DEMO_ALIASES`].
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        let mut openai = ProviderConfig::new(Dialect::OpenAi, &format!("{}/v1", self.url()), "");
        openai.api_key_env = None;
        let mut anthropic = ProviderConfig::new(Dialect::Anthropic, &self.url(), "");
        anthropic.api_key_env = None;
        let mut responses =
            ProviderConfig::new(Dialect::OpenAiResponses, &format!("{}/v1", self.url()), "");
        responses.api_key_env = None;
        config.providers.insert("openai".into(), openai);
        config.providers.insert("anthropic".into(), anthropic);
        config
            .providers
            .insert(Dialect::OpenAiResponses.as_str().into(), responses);
        for (alias, route) in DEMO_ALIASES {
            config.models.insert(
                alias.into(),
                ModelConfig {
                    route: route.into(),
                    fallbacks: Vec::new(),
                    reasoning: None,
                    hedge_after_ms: None,
                    max_output_tokens: None,
                    max_n: None,
                },
            );
        }
        config.limits.models.insert(
            "demo-limited".into(),
            crate::limit::Quotas {
                requests_per_minute: std::num::NonZeroU32::new(DEMO_LIMITED_RPM),
                ..crate::limit::Quotas::default()
            },
        );
        config
    }

    /// Gives a random fault (reset, cut, overloaded event, 429/503/529) to `rate` of the
    /// requests whose model names no knob, from a generator seeded with `seed`.
    pub fn set_chaos(&self, rate: f64, seed: u64) {
        *lock(&self.shared.chaos) = Some((rate.clamp(0.0, 1.0), fastrand::Rng::with_seed(seed)));
    }

    /// Serves `body` as model `name` of `dialect` (tests' own bodies; shadows a fixture).
    pub fn insert_fixture(&self, dialect: Dialect, name: &str, body: impl Into<Bytes>) {
        lock(&self.shared.extra).insert((dialect, name.to_owned()), body.into());
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Streamed responses started so far.
    pub fn streams_opened(&self) -> usize {
        self.shared.opened.load(Ordering::SeqCst)
    }

    /// Streamed responses whose body was dropped (written to the end, or the client left).
    pub fn streams_closed(&self) -> usize {
        *self.shared.closed.borrow()
    }

    /// Waits up to `timeout` until at least `count` streams have closed; false on timeout.
    pub async fn wait_streams_closed(&self, count: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.closed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops accepting, cuts open streams and waits for the server to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shared.cancel.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

async fn count_tokens(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match record(&shared, request).await {
        Ok((_, bytes)) => json_response(
            StatusCode::OK,
            &json!({"input_tokens": bytes.len().div_ceil(4)}),
        ),
        Err(message) => error(Dialect::Anthropic, StatusCode::BAD_REQUEST, &message),
    }
}

/// Reads and records a request; the parsed body, or why it is not JSON.
async fn record(shared: &Shared, request: Request) -> Result<(Value, Bytes), String> {
    let (_, bytes) = record_raw(shared, request).await?;
    let value = serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| format!("the body is not JSON: {e}"))?;
    Ok((value, bytes))
}

/// Reads and records a request of any body; its headers and body.
async fn record_raw(shared: &Shared, request: Request) -> Result<(HeaderMap, Bytes), String> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    lock(&shared.requests).push(Recorded {
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    Ok((parts.headers, bytes))
}

async fn answer(shared: &Arc<Shared>, dialect: Dialect, request: Request) -> Response {
    let (body, size) = match record(shared, request).await {
        Ok((body, bytes)) => (body, bytes.len()),
        Err(message) => return error(dialect, StatusCode::BAD_REQUEST, &message),
    };
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return error(dialect, StatusCode::BAD_REQUEST, "model: field required");
    };
    let (mut fault, name) = match Fault::parse(model) {
        Ok(parsed) => parsed,
        Err(message) => return error(dialect, StatusCode::BAD_REQUEST, &message),
    };
    let extra = lock(&shared.extra)
        .get(&(dialect, name.to_owned()))
        .cloned();
    let Some(fixture) = extra.or_else(|| fixture(dialect, name).map(Bytes::from_static)) else {
        return not_found(dialect, model);
    };
    let seen = {
        let mut seen = lock(&shared.seen);
        let n = seen.entry((dialect, model.to_owned())).or_insert(0);
        *n += 1;
        *n - 1
    };
    if fault.no_prefill && continuation::ends_with_assistant(&body) {
        return no_prefill(dialect);
    }
    if fault.times.is_some_and(|times| seen >= times) {
        fault = fault.cleared();
    }
    if fault == Fault::default()
        && let Some((rate, rng)) = lock(&shared.chaos).as_mut()
        && rng.f64() < *rate
    {
        fault = Fault::random(rng);
    }
    if fault.hang {
        shared.cancel.cancelled().await;
        return error(dialect, StatusCode::SERVICE_UNAVAILABLE, "replay shut down");
    }
    if let Some(status) = fault.status {
        return status_answer(dialect, status, &fault);
    }
    let streaming = body.get("stream").and_then(Value::as_bool) == Some(true);
    let Some(ask) = continuation::ask(&body) else {
        return if streaming {
            stream(shared, dialect, fixture, &fault)
        } else {
            whole(dialect, &fixture)
        };
    };
    let events = match continuation::events(dialect, &fixture, &ask, size) {
        Ok(events) => events,
        Err(continuation::Refused::Mismatch) => {
            return error(
                dialect,
                StatusCode::BAD_REQUEST,
                "prefill does not match the recording",
            );
        }
        Err(continuation::Refused::Fixture(e)) => {
            return error(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("replay: fixture does not decode: {e}"),
            );
        }
    };
    if !streaming {
        return assembled(dialect, &events);
    }
    let options = EncodeOptions {
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    match StreamEncoder::encode_all(dialect, options, &events) {
        Ok(sse) => stream(shared, dialect, Bytes::from(sse), &fault),
        Err(e) => error(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("replay: continuation does not encode: {e}"),
        ),
    }
}

/// The answer of a `status` fault: the dialect's error body and any retry headers.
fn status_answer(dialect: Dialect, status: u16, fault: &Fault) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = dialect
        .wire()
        .status_message(status.as_u16())
        .unwrap_or("replay: injected failure");
    let mut response = error(dialect, status, message);
    let headers = response.headers_mut();
    if let Some(secs) = fault.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(ms) = fault.retry_after_ms {
        headers.insert("retry-after-ms", HeaderValue::from(ms));
    }
    if let Some(secs) = fault.retry_after_date
        && let Ok(date) = HeaderValue::from_str(&fault::http_date_in(secs))
    {
        headers.insert(header::RETRY_AFTER, date);
    }
    response
}

/// Anthropic's refusal of an assistant prefill (and an OpenAI-shaped equivalent).
fn no_prefill(dialect: Dialect) -> Response {
    const MESSAGE: &str = "This model does not support assistant message prefill. The \
conversation must end with a user message.";
    let report = ErrorReport {
        param: Some("messages".into()),
        ..ErrorReport::new(400, "invalid_request_error", MESSAGE)
    };
    let body = dialect.wire().error_body(&report);
    json_response(StatusCode::BAD_REQUEST, &body)
}

/// A non-streaming body from events.
fn assembled(dialect: Dialect, events: &[AgentEvent]) -> Response {
    match encode_response(dialect, &Assembler::assemble(events)) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("replay: no non-streaming body for this fixture: {e}"),
        ),
    }
}

/// The derived non-streaming body: the fixture decoded, assembled and encoded.
fn whole(dialect: Dialect, fixture: &[u8]) -> Response {
    let (events, result) = StreamDecoder::decode_all(dialect, fixture);
    if let Err(providers::DecodeError::Upstream { error, .. }) = &result {
        // A recorded provider error: what the provider answers a non-streaming request.
        let status =
            crate::error::refused_status(&error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let report = ErrorReport {
            kind: error.code.clone(),
            code: Some(error.code.clone()),
            ..ErrorReport::new(
                status.as_u16(),
                crate::error::anthropic_type_for(status.as_u16()),
                error.message.clone(),
            )
        };
        return json_response(status, &dialect.wire().error_body(&report));
    }
    if let Err(e) = result {
        return error(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("replay: fixture does not decode: {e}"),
        );
    }
    assembled(dialect, &events)
}

/// The SSE frames of a body, each with its terminating blank line; together they are the
/// whole body (blank lines between frames stay with the frame before them).
/// The frames share `body`'s buffer: an embedded fixture is never copied per request.
pub fn frames(body: &Bytes) -> Vec<Bytes> {
    let mut ends = Vec::new();
    let (mut start, mut line_start) = (0, 0);
    for (i, &b) in body.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &body[line_start..i];
        let has_content = body[start..line_start]
            .iter()
            .any(|b| !b.is_ascii_whitespace());
        if (line.is_empty() || line == b"\r") && has_content {
            ends.push(i + 1);
            start = i + 1;
        } else if (line.is_empty() || line == b"\r") && !ends.is_empty() && start == line_start {
            // A further blank line: it belongs to the frame before.
            if let Some(last) = ends.last_mut() {
                *last = i + 1;
            }
            start = i + 1;
        }
        line_start = i + 1;
    }
    if body[start..].iter().any(|b| !b.is_ascii_whitespace()) || ends.is_empty() {
        ends.push(body.len());
    } else if let Some(last) = ends.last_mut() {
        *last = body.len();
    }
    let mut out = Vec::with_capacity(ends.len());
    let mut from = 0;
    for end in ends {
        if end > from {
            out.push(body.slice(from..end));
        }
        from = end;
    }
    out
}

/// Counts a streamed response closed when its body is dropped.
#[derive(Debug)]
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed.send_modify(|n| *n += 1);
    }
}

/// One thing the body writer does.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Write (and flush) these bytes.
    Send(Bytes),
    /// Wait before the next step (not counted as a write for `drip`).
    Pause(Duration),
    /// Abort the connection.
    Reset,
}

/// The frame `malformed_after` inserts.
const MALFORMED: &[u8] = b"data: {not json\n\n";

/// What the body writer does for `body` under `fault` (everything but the pacing of `drip`
/// and the silence of a stall).
fn plan(dialect: Dialect, body: &Bytes, fault: &Fault) -> Vec<Step> {
    let frames = frames(body);
    let sent = if fault.stall {
        &frames[..0]
    } else {
        &frames[..fault
            .stop_after()
            .map_or(frames.len(), |n| n.min(frames.len()))]
    };
    let non_ascii = !body.is_ascii();
    let mut steps: Vec<Step> = fault
        .first_token_delay
        .map(Step::Pause)
        .into_iter()
        .collect();
    let write = |frame: &Bytes, steps: &mut Vec<Step>| {
        if fault.drip_bytes {
            steps.extend((0..frame.len()).map(|i| Step::Send(frame.slice(i..=i))));
        } else if let Some(size) = fault.chunk {
            steps.extend(frame.chunks(size).map(|c| Step::Send(frame.slice_ref(c))));
        } else if let Some(at) = fault
            .utf8_cut
            .then(|| utf8_cut_at(frame, non_ascii))
            .flatten()
        {
            steps.push(Step::Send(frame.slice(..at)));
            steps.push(Step::Pause(fault::UTF8_CUT_PAUSE));
            steps.push(Step::Send(frame.slice(at..)));
        } else {
            steps.push(Step::Send(frame.clone()));
        }
    };
    for (i, frame) in sent.iter().enumerate() {
        if fault.malformed_after == Some(i) {
            write(&Bytes::from_static(MALFORMED), &mut steps);
        }
        write(frame, &mut steps);
    }
    if fault.malformed_after.is_some_and(|n| n >= sent.len()) {
        write(&Bytes::from_static(MALFORMED), &mut steps);
    }
    if fault.stall_after.is_none() && fault.reset_after.is_none() {
        if fault.error_after.is_some() {
            write(&Bytes::from(error_event(dialect)), &mut steps);
        } else if fault.overloaded_after.is_some() {
            write(&Bytes::from(overloaded_event(dialect)), &mut steps);
        }
    }
    if fault.stall_after.is_none() && fault.reset_after.is_some() {
        steps.push(Step::Reset);
    }
    steps
}

/// Where `utf8_cut` splits `frame`: inside its first multi-byte character when the body has
/// any, else inside its first non-empty JSON string value.
fn utf8_cut_at(frame: &[u8], non_ascii: bool) -> Option<usize> {
    if non_ascii {
        return frame.iter().position(|b| *b >= 0xC0).map(|lead| lead + 1);
    }
    // The first `":"` whose string value has at least two characters: cut after the first.
    frame
        .windows(5)
        .position(|w| &w[..3] == b"\":\"" && w[3] != b'"' && w[3] != b'\\' && w[4] != b'"')
        .map(|at| at + 4)
}

fn stream(shared: &Arc<Shared>, dialect: Dialect, body: Bytes, fault: &Fault) -> Response {
    shared.opened.fetch_add(1, Ordering::SeqCst);
    let guard = Open(shared.clone());
    let steps = plan(dialect, &body, fault);
    let stall = fault.stall || fault.stall_after.is_some();
    let drip = fault.drip;
    let cancel = shared.cancel.clone();
    let state = (steps.into_iter(), 0usize, guard);
    let body = futures_util::stream::unfold(state, move |(mut steps, n, guard)| {
        let cancel = cancel.clone();
        async move {
            let step = loop {
                match steps.next() {
                    None => {
                        if stall {
                            cancel.cancelled().await;
                        }
                        return None;
                    }
                    Some(Step::Pause(pause)) => {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = cancel.cancelled() => return None,
                        }
                    }
                    Some(step) => break step,
                }
            };
            if let Some(drip) = drip.filter(|_| n > 0) {
                tokio::select! {
                    () = tokio::time::sleep(drip) => {}
                    () = cancel.cancelled() => return None,
                }
            }
            let item = match step {
                Step::Send(bytes) => Ok(bytes),
                Step::Pause(_) | Step::Reset => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "replay: injected reset",
                )),
            };
            Some((item, (steps, n + 1, guard)))
        }
    })
    .boxed();
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A provider's mid-stream error event.
fn error_event(dialect: Dialect) -> String {
    let report = ErrorReport {
        kind: "server_error".into(),
        ..ErrorReport::new(500, "overloaded_error", "replay: injected error")
    };
    dialect.wire().error_frame(&report)
}

/// A provider's mid-stream overload error, as each provider sends it.
fn overloaded_event(dialect: Dialect) -> String {
    let wire = dialect.wire();
    let report = ErrorReport {
        kind: "server_error".into(),
        ..ErrorReport::new(529, "overloaded_error", wire.overloaded_message())
    };
    wire.error_frame(&report)
}

fn not_found(dialect: Dialect, model: &str) -> Response {
    let report = dialect.wire().unknown_model_error(model);
    json_response(StatusCode::NOT_FOUND, &dialect.wire().error_body(&report))
}

/// An error answer in `dialect`'s shape.
fn error(dialect: Dialect, status: StatusCode, message: &str) -> Response {
    let ty = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let report = ErrorReport::new(status.as_u16(), ty, message);
    json_response(status, &dialect.wire().error_body(&report))
}

use crate::respond::json_response;

#[cfg(test)]
mod knob_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_is_embedded_and_splits_into_frames() {
        for dialect in Dialect::ALL {
            let names = fixture_names(dialect);
            assert!(names.len() >= 8, "{dialect}: {names:?}");
            for name in names {
                let body = fixture(dialect, name).unwrap();
                let frames = frames(&Bytes::copy_from_slice(body));
                assert!(frames.len() > 1, "{name}");
                assert_eq!(frames.concat(), body, "{name}");
            }
        }
    }

    #[test]
    fn frames_keep_their_blank_line() {
        let f = frames(&Bytes::from_static(
            b"event: a\ndata: 1\n\ndata: 2\r\n\r\n\ndata: 3",
        ));
        assert_eq!(f.len(), 3);
        assert_eq!(&f[0][..], b"event: a\ndata: 1\n\n");
        assert_eq!(&f[1][..], b"data: 2\r\n\r\n\n");
        assert_eq!(f.concat(), b"event: a\ndata: 1\n\ndata: 2\r\n\r\n\ndata: 3");
        assert_eq!(&f[2][..], b"data: 3");
    }

    /// The provider-shaped errors are the providers' own bytes (what clients and the
    /// gateway's decoders were tested against), whichever code renders them.
    #[test]
    fn imitated_errors_are_the_providers_bytes() {
        assert_eq!(
            error_event(Dialect::OpenAi),
            "data: {\"error\":{\"message\":\"replay: injected error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
        );
        assert_eq!(
            error_event(Dialect::Anthropic),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"replay: injected error\"}}\n\n"
        );
        assert_eq!(
            overloaded_event(Dialect::OpenAi),
            "data: {\"error\":{\"message\":\"That model is currently overloaded with other requests. You can retry your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
        );
        assert_eq!(
            overloaded_event(Dialect::Anthropic),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
        );
    }
}
