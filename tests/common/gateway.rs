//! Gateway test support: the replay upstream and the gateway (engine + `server::serve`) on
//! 127.0.0.1:0 in the test's tokio runtime, a reqwest client, and readers for both doors.
//! Loaded with `#[path]` by the `tests/gateway*.rs` files.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use providers::assemble::{BlockContent, Message};
use providers::{AgentEvent, Assembler, Dialect, FinishReason, StreamDecoder};
use serde_json::{Value, json};
use streamgate::config::Config;
use streamgate::replay::{self, Replay};
use streamgate::server::AppState;
use tokio::sync::oneshot;

/// Upper bound for any one HTTP exchange in the tests.
pub const BOUND: Duration = Duration::from_secs(20);

/// A replay upstream and a gateway over it.
pub struct Harness {
    pub replay: Replay,
    pub gateway: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    /// The gateway's journal directory, removed with the harness.
    pub journal: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The gateway over a fresh replay with its default configuration.
pub async fn start() -> Harness {
    start_with(|_| {}).await
}

/// The gateway over a fresh replay, with `edit` applied to the replay's configuration.
pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Harness {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut config = replay.config();
    edit(&mut config);
    let journal = tempfile::tempdir().unwrap();
    config.streams.journal.dir = journal.path().to_owned();
    let gateway = serve_gateway(config).await;
    Harness {
        replay,
        gateway: gateway.0,
        client: client(),
        stop: Some(gateway.1),
        journal,
    }
}

/// Serves `config` on 127.0.0.1:0; the address and a sender that stops it.
pub async fn serve_gateway(config: Config) -> (SocketAddr, oneshot::Sender<()>) {
    let state = AppState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(streamgate::server::serve(state, listener, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// A client that never uses a proxy and gives up after [`BOUND`].
pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; the gateway installs ring the same way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .unwrap()
}

/// The chat path of a door (its canonical one).
pub fn door_path(door: Dialect) -> &'static str {
    door.wire().door_paths()[0]
}

/// A minimal chat request of `door`'s dialect.
pub fn chat_body(door: Dialect, model: &str, stream: bool) -> Value {
    match door {
        Dialect::OpenAi => {
            let mut body = json!({
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
            });
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        }
        Dialect::Anthropic => json!({
            "model": model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }),
        Dialect::OpenAiResponses => json!({
            "model": model,
            "input": "hi",
            "stream": stream,
        }),
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    /// POSTs `body` to `door`'s chat path with `headers` (the Anthropic door gets
    /// `anthropic-version` unless given).
    pub async fn chat(
        &self,
        door: Dialect,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        self.post(
            door_path(door),
            door,
            headers,
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn post(
        &self,
        path: &str,
        door: Dialect,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if door == Dialect::Anthropic && !headers.iter().any(|(n, _)| *n == "anthropic-version") {
            request = request.header("anthropic-version", "2023-06-01");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

/// The whole body of a streamed answer (bounded by the client's timeout).
pub async fn body_bytes(response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Decodes a door's SSE answer with the door's own decoder: the events, and the error that
/// ended it, if any.
pub fn decode(door: Dialect, body: &[u8]) -> (Vec<AgentEvent>, Result<(), String>) {
    let (events, result) = StreamDecoder::decode_all(door, body);
    (events, result.map_err(|e| e.to_string()))
}

/// What a client sees of an answer, in dialect-neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub text: String,
    pub reasoning: String,
    /// (name, arguments text, truncated)
    pub calls: Vec<(String, String, bool)>,
    pub finish: Option<FinishReason>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// From an assembled stream. `visible` adds refusal text to the text (Anthropic has no
/// refusal block; an OpenAI refusal reaches Anthropic clients as text).
pub fn seen_in(m: &Message, with_refusal: bool) -> Seen {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in m.blocks.iter().filter(|b| b.choice == 0) {
        match &b.content {
            BlockContent::Text { text: t, .. } => text.push_str(t),
            BlockContent::Refusal { text: t } if with_refusal => text.push_str(t),
            BlockContent::ToolCall {
                name,
                arguments,
                truncated,
                ..
            } => calls.push((name.clone(), arguments.clone(), *truncated)),
            _ => {}
        }
    }
    Seen {
        text,
        reasoning: m.reasoning(),
        calls,
        finish: m.end.as_ref().map(|e| e.reason),
        input_tokens: m.usage.input_tokens,
        output_tokens: m.usage.output_tokens,
    }
}

/// From events.
pub fn seen_events(events: &[AgentEvent], with_refusal: bool) -> Seen {
    seen_in(&Assembler::assemble(events), with_refusal)
}

/// A door's finish reason string, normalized as the decoders do.
pub fn normalize_finish(door: Dialect, reason: &str, has_calls: bool) -> FinishReason {
    match (door, reason) {
        (Dialect::OpenAi, "stop") if has_calls => FinishReason::ToolCalls,
        (Dialect::OpenAi, "stop") => FinishReason::Stop,
        (Dialect::OpenAi, "length") => FinishReason::Length,
        (Dialect::OpenAi, "tool_calls" | "function_call") => FinishReason::ToolCalls,
        (Dialect::OpenAi, "content_filter") => FinishReason::ContentFilter,
        (Dialect::Anthropic, "end_turn" | "stop_sequence") => FinishReason::Stop,
        (Dialect::Anthropic, "max_tokens" | "model_context_window_exceeded") => {
            FinishReason::Length
        }
        (Dialect::Anthropic, "tool_use") => FinishReason::ToolCalls,
        (Dialect::Anthropic, "refusal") => FinishReason::Refusal,
        (Dialect::Anthropic, "pause_turn") => FinishReason::PauseTurn,
        _ => FinishReason::Stop,
    }
}

/// From a non-streaming response body of `door`.
pub fn seen_body(door: Dialect, body: &Value) -> Seen {
    match door {
        Dialect::OpenAi => {
            let choice = &body["choices"][0];
            let msg = &choice["message"];
            let calls: Vec<(String, String, bool)> = msg["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        c["function"]["arguments"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        false,
                    )
                })
                .collect();
            let finish = choice["finish_reason"].as_str().map(|r| {
                match normalize_finish(door, r, !calls.is_empty()) {
                    // OpenAI ends a refusal with `stop`: the refusal text is the finish.
                    FinishReason::Stop if msg["refusal"].is_string() => FinishReason::Refusal,
                    reason => reason,
                }
            });
            Seen {
                text: msg["content"].as_str().unwrap_or_default().to_owned(),
                reasoning: msg["reasoning_content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                calls,
                finish,
                input_tokens: body["usage"]["prompt_tokens"].as_u64(),
                output_tokens: body["usage"]["completion_tokens"].as_u64(),
            }
        }
        Dialect::Anthropic => {
            let mut seen = Seen {
                text: String::new(),
                reasoning: String::new(),
                calls: Vec::new(),
                finish: None,
                input_tokens: None,
                output_tokens: body["usage"]["output_tokens"].as_u64(),
            };
            for block in body["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => seen
                        .text
                        .push_str(block["text"].as_str().unwrap_or_default()),
                    Some("thinking") => seen
                        .reasoning
                        .push_str(block["thinking"].as_str().unwrap_or_default()),
                    Some("tool_use") => seen.calls.push((
                        block["name"].as_str().unwrap_or_default().to_owned(),
                        block["input"].to_string(),
                        false,
                    )),
                    _ => {}
                }
            }
            let usage = &body["usage"];
            seen.input_tokens = usage["input_tokens"].as_u64().map(|i| {
                i + usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0)
            });
            seen.finish = body["stop_reason"]
                .as_str()
                .map(|r| normalize_finish(door, r, !seen.calls.is_empty()));
            seen
        }
        Dialect::OpenAiResponses => seen_responses_body(body),
    }
}

/// From a non-streaming OpenAI Responses body (the final `response` object).
fn seen_responses_body(body: &Value) -> Seen {
    let mut seen = Seen {
        text: String::new(),
        reasoning: String::new(),
        calls: Vec::new(),
        finish: None,
        input_tokens: body["usage"]["input_tokens"].as_u64(),
        output_tokens: body["usage"]["output_tokens"].as_u64(),
    };
    let mut refused = false;
    let mut reasoning = Vec::new();
    for item in body["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    match part["type"].as_str() {
                        Some("output_text") => seen
                            .text
                            .push_str(part["text"].as_str().unwrap_or_default()),
                        Some("refusal") => refused = true,
                        _ => {}
                    }
                }
            }
            Some("reasoning") => {
                let parts = item["summary"]
                    .as_array()
                    .into_iter()
                    .chain(item["content"].as_array())
                    .flatten()
                    .filter_map(|p| p["text"].as_str());
                reasoning.push(parts.collect::<Vec<_>>().join("\n\n"));
            }
            Some("function_call") => seen.calls.push((
                item["name"].as_str().unwrap_or_default().to_owned(),
                item["arguments"].as_str().unwrap_or_default().to_owned(),
                false,
            )),
            _ => {}
        }
    }
    seen.reasoning = reasoning.concat();
    seen.finish = match body["status"].as_str() {
        Some("completed") if !seen.calls.is_empty() => Some(FinishReason::ToolCalls),
        Some("completed") if refused => Some(FinishReason::Refusal),
        Some("completed") => Some(FinishReason::Stop),
        Some("incomplete") => match body["incomplete_details"]["reason"].as_str() {
            Some("content_filter") => Some(FinishReason::ContentFilter),
            _ => Some(FinishReason::Length),
        },
        _ => None,
    };
    seen
}

/// The normalized finish reason of an answer from `from` after crossing into `to`: Responses
/// carries a refusal only as a refusal part (which Anthropic's refusal has not), and ends
/// Anthropic's `pause_turn` as `completed`.
pub fn crossed_from(
    reason: FinishReason,
    from: Dialect,
    to: Dialect,
    has_calls: bool,
) -> FinishReason {
    match (from, to, reason) {
        (_, Dialect::OpenAiResponses, FinishReason::Stop) if has_calls => FinishReason::ToolCalls,
        (
            Dialect::Anthropic,
            Dialect::OpenAiResponses,
            FinishReason::Refusal | FinishReason::PauseTurn,
        ) => {
            if has_calls {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }
        }
        (Dialect::OpenAiResponses, Dialect::OpenAi, FinishReason::Refusal) => FinishReason::Refusal,
        _ => crossed(reason, to, has_calls),
    }
}

/// The normalized finish reason after crossing into `to` (docs/protocol.md, finish table).
pub fn crossed(reason: FinishReason, to: Dialect, has_calls: bool) -> FinishReason {
    match (to, reason) {
        (Dialect::OpenAi, FinishReason::Refusal) => FinishReason::ContentFilter,
        (Dialect::OpenAi, FinishReason::PauseTurn) => FinishReason::Stop,
        (Dialect::OpenAi, FinishReason::Stop) if has_calls => FinishReason::ToolCalls,
        (Dialect::Anthropic, FinishReason::ContentFilter) => FinishReason::Refusal,
        (_, r) => r,
    }
}

/// Equal JSON arguments, or equal text when truncated.
pub fn same_args(a: &str, b: &str, truncated: bool) -> bool {
    if truncated {
        return a == b;
    }
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Every difference between what the client saw and what the fixture says.
pub fn differences(want: &Seen, got: &Seen, truncated_ok: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if want.text != got.text {
        errs.push(format!("text: want {:?}, got {:?}", want.text, got.text));
    }
    if want.reasoning != got.reasoning {
        errs.push(format!(
            "reasoning: want {:?}, got {:?}",
            want.reasoning, got.reasoning
        ));
    }
    let calls_ok = want.calls.len() == got.calls.len()
        && want
            .calls
            .iter()
            .zip(&got.calls)
            .all(|(w, g)| w.0 == g.0 && ((w.2 && truncated_ok) || same_args(&w.1, &g.1, w.2)));
    if !calls_ok {
        errs.push(format!(
            "tool calls: want {:?}, got {:?}",
            want.calls, got.calls
        ));
    }
    if want.finish != got.finish {
        errs.push(format!(
            "finish: want {:?}, got {:?}",
            want.finish, got.finish
        ));
    }
    for (what, w, g) in [
        ("input_tokens", want.input_tokens, got.input_tokens),
        ("output_tokens", want.output_tokens, got.output_tokens),
    ] {
        let ok = match w {
            Some(_) => w == g,
            None => g.is_none() || g == Some(0),
        };
        if !ok {
            errs.push(format!("usage {what}: want {w:?}, got {g:?}"));
        }
    }
    errs
}

/// A response body as JSON.
pub async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// `POST /v1/streams` at the gateway `base` (`http://HOST:PORT`) with a streaming request of
/// `dialect` for `model`; asserts the 200.
pub async fn post_stream(base: &str, dialect: Dialect, model: &str) -> reqwest::Response {
    let r = client()
        .post(format!("{base}/v1/streams"))
        .header("streamgate-dialect", dialect.as_str())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(dialect, model, true)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{dialect} {model}");
    r
}

/// The `streamgate-stream-id` of a native door response.
pub fn stream_id(r: &reqwest::Response) -> String {
    r.headers()["streamgate-stream-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The native SSE door's frames read so far, `(id, envelope)`, kept across reads.
#[derive(Default)]
pub struct NativeReader {
    parser: providers::sse::SseParser,
    pub frames: Vec<(String, providers::Envelope)>,
}

impl NativeReader {
    /// Adds the frames in `bytes` (a frame may be split across calls).
    pub fn feed(&mut self, bytes: &[u8]) {
        let frames = &mut self.frames;
        self.parser
            .feed::<providers::sse::SseError>(bytes, &mut |f| {
                frames.push((
                    f.id.unwrap_or_default().to_owned(),
                    serde_json::from_str(f.data).unwrap(),
                ));
                Ok(())
            })
            .unwrap();
    }

    /// The envelopes read so far.
    pub fn envelopes(&self) -> Vec<providers::Envelope> {
        self.frames.iter().map(|(_, e)| e.clone()).collect()
    }
}
