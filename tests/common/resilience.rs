//! Support for the resilience tests (`tests/resilience*.rs`): recordings and where a fault
//! strikes in them, the same answer re-encoded for the other provider, the gateway configured
//! for fast recovery, and one matrix case run and checked end to end.
//! Loaded with `#[path]` next to `common/gateway.rs` (as module `gw`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use providers::event::{BlockKind, FinishReason};
use providers::{AgentEvent, Dialect, EncodeOptions, StreamDecoder, StreamEncoder};
use serde_json::{Value, json};
use streamgate::config::{Config, ModelConfig};
use streamgate::replay::{self, Recorded};
use streamgate::resilience::continuation::CONTINUE_INSTRUCTION;

use super::gw::{self, Harness, Seen};

/// Provider timers of the test configuration, generous so that a busy machine never trips
/// them (many gateways share two cores while the matrix runs).
pub const IDLE_MS: u64 = 10_000;
pub const FIRST_BYTE_MS: u64 = 10_000;
/// The timers of a route whose stall is the fault under test: small, to notice it quickly.
pub const STALL_IDLE_MS: u64 = 800;
pub const STALL_FIRST_BYTE_MS: u64 = 1500;

/// The provider (and replay endpoint) of a dialect in the replay's configuration.
pub fn provider(dialect: Dialect) -> &'static str {
    dialect.as_str()
}

/// The dialect a recording is re-encoded into for failover: the other vendor's.
pub fn other(dialect: Dialect) -> Dialect {
    match dialect {
        Dialect::OpenAi | Dialect::OpenAiResponses => Dialect::Anthropic,
        Dialect::Anthropic => Dialect::OpenAi,
    }
}

/// The replay path a dialect's requests go to.
pub fn endpoint(dialect: Dialect) -> &'static str {
    dialect.wire().door_paths()[0]
}

/// Where in the answer a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Before the first byte / before any event.
    Pre,
    /// Inside the answer text.
    MidText,
    /// Inside the first tool call's arguments.
    MidTool,
    /// Inside a later tool call (an earlier one is whole, or held until the finish).
    MidLaterTool,
    /// Inside the reasoning (thinking) block.
    MidThinking,
    /// Not a break: the stream is whole, only written oddly.
    Whole,
}

impl Position {
    pub const ALL: [Position; 5] = [
        Position::Pre,
        Position::MidText,
        Position::MidTool,
        Position::MidLaterTool,
        Position::MidThinking,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Position::Pre => "pre",
            Position::MidText => "mid-text",
            Position::MidTool => "mid-tool",
            Position::MidLaterTool => "mid-2nd-tool",
            Position::MidThinking => "mid-thinking",
            Position::Whole => "whole",
        }
    }
}

/// How the gateway must recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// The fault strikes the first request only (`times=1`): the same route answers again.
    Retry,
    /// The primary always fails; the other provider serves the same answer as fallback.
    Failover,
    /// Nothing to recover: one request, whole answer.
    Whole,
}

/// One recording: its frames and the answer it holds.
#[derive(Debug, Clone)]
pub struct Recording {
    pub dialect: Dialect,
    pub name: &'static str,
    pub body: Vec<u8>,
    pub frames: Vec<Bytes>,
    pub seen: Seen,
}

/// What the first `n` frames of a recording left open.
#[derive(Debug, Default)]
struct Cut {
    text_open_with_delta: bool,
    reasoning_open_with_delta: bool,
    call_open: bool,
    calls_started: usize,
    calls_ended: usize,
    ended: bool,
    text: String,
    reasoning: String,
}

pub fn recording(dialect: Dialect, name: &'static str) -> Recording {
    let body = replay::fixture(dialect, name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .to_vec();
    let (events, result) = StreamDecoder::decode_all(dialect, &body);
    result.unwrap();
    Recording {
        dialect,
        name,
        frames: replay::frames(&bytes::Bytes::copy_from_slice(&body)),
        seen: gw::seen_events(&events, false),
        body,
    }
}

impl Recording {
    fn cut(&self, n: usize) -> Cut {
        let bytes: Vec<u8> = self.frames[..n.min(self.frames.len())].concat();
        let (events, _) = StreamDecoder::decode_all(self.dialect, &bytes);
        let mut open: HashMap<u32, (BlockKind, bool)> = HashMap::new();
        let mut cut = Cut::default();
        let mut calls_open = 0usize;
        for e in &events {
            match e {
                AgentEvent::BlockStart { index, block, .. } => {
                    open.insert(*index, (block.clone(), false));
                }
                AgentEvent::TextDelta { index, text, .. } if !text.is_empty() => {
                    cut.text.push_str(text);
                    if let Some(b) = open.get_mut(index) {
                        b.1 = true;
                    }
                }
                AgentEvent::ReasoningDelta { index, text } if !text.is_empty() => {
                    cut.reasoning.push_str(text);
                    if let Some(b) = open.get_mut(index) {
                        b.1 = true;
                    }
                }
                AgentEvent::BlockEnd { index } => {
                    open.remove(index);
                }
                AgentEvent::ToolCallStart { .. } => {
                    calls_open += 1;
                    cut.calls_started += 1;
                }
                AgentEvent::ToolCallEnd { .. } => {
                    calls_open -= 1;
                    cut.calls_ended += 1;
                }
                AgentEvent::StreamEnd(_) => cut.ended = true,
                _ => {}
            }
        }
        cut.call_open = calls_open > 0;
        cut.text_open_with_delta = open.values().any(|(k, d)| *k == BlockKind::Text && *d);
        cut.reasoning_open_with_delta =
            open.values().any(|(k, d)| *k == BlockKind::Reasoning && *d);
        cut
    }

    /// The frame count after which a fault strikes at `position`, if the recording has such
    /// a place (the middle one of the candidates).
    pub fn position(&self, position: Position) -> Option<usize> {
        if position == Position::Pre {
            return Some(0);
        }
        let candidates: Vec<usize> = (1..self.frames.len())
            .filter(|&n| {
                let c = self.cut(n);
                !c.ended
                    && match position {
                        Position::MidText => {
                            c.text_open_with_delta && c.text != self.seen.text && !c.call_open
                        }
                        // (An OpenAI call ends only when the choice finishes: count starts.)
                        Position::MidTool => c.call_open && c.calls_started == 1,
                        Position::MidLaterTool => c.call_open && c.calls_started > 1,
                        Position::MidThinking => c.reasoning_open_with_delta,
                        Position::Pre | Position::Whole => false,
                    }
            })
            .collect();
        candidates.get(candidates.len() / 2).copied()
    }

    /// The answer text in the first `n` frames.
    pub fn text_before(&self, n: usize) -> String {
        self.cut(n).text
    }

    /// The reasoning in the first `n` frames.
    pub fn reasoning_before(&self, n: usize) -> String {
        self.cut(n).reasoning
    }

    /// The same answer in the other dialect (usage included), for a fallback route.
    pub fn reencoded(&self) -> Vec<u8> {
        let (events, result) = StreamDecoder::decode_all(self.dialect, &self.body);
        result.unwrap();
        StreamEncoder::encode_all(
            other(self.dialect),
            EncodeOptions {
                include_usage: true,
            },
            &events,
        )
        .unwrap()
    }

    /// The name the re-encoded answer is served under.
    pub fn reencoded_name(&self) -> String {
        format!("x_{}", self.name)
    }
}

/// Test configuration: fast backoffs, small timers.
pub fn fast(config: &mut Config, max_attempts: u32) {
    let retry = &mut config.streaming.retry_policy;
    retry.backoff_ms = 10;
    retry.max_backoff_ms = 50;
    retry.max_attempts = max_attempts;
    retry.time_to_fallback_ms = 20_000;
    for p in config.providers.values_mut() {
        p.idle_timeout_ms = IDLE_MS;
        p.first_byte_timeout_ms = FIRST_BYTE_MS;
        p.connect_timeout_ms = 1000;
    }
}

pub fn alias(config: &mut Config, name: &str, route: &str, fallbacks: &[&str]) {
    config.models.insert(
        name.into(),
        ModelConfig {
            route: route.into(),
            fallbacks: fallbacks.iter().map(|s| (*s).to_owned()).collect(),
            reasoning: None,
            hedge_after_ms: None,
            max_output_tokens: None,
            max_n: None,
        },
    );
}

/// One case of the matrix.
#[derive(Debug, Clone)]
pub struct Case {
    pub door: Dialect,
    /// Dialect of the recording (and of the failing route).
    pub dialect: Dialect,
    pub fixture: &'static str,
    /// The fault knobs (without `times`).
    pub knobs: String,
    pub position: Position,
    /// Frames sent before a mid-stream fault.
    pub n: Option<usize>,
    pub axis: Axis,
    /// The fault is a timeout (the route is not asked again).
    pub timeout: bool,
    /// Least time the answer must take (a Retry-After honoured).
    pub min_wait_ms: u64,
}

impl Case {
    pub fn name(&self) -> String {
        let door = format!("{}-door", self.door);
        let axis = match self.axis {
            Axis::Retry => "retry",
            Axis::Failover => "failover",
            Axis::Whole => "whole",
        };
        format!(
            "{door} {axis:8} {:12} {}/{}:{}",
            self.position.label(),
            provider(self.dialect),
            self.knobs,
            self.fixture
        )
    }

    /// Attempts per route: a failover after a mid-stream break is taken at the first break
    /// (an always-failing route's continuation is shorter than the recording and may not
    /// reach the break again); before the first byte, the route is retried first.
    pub fn max_attempts(&self) -> u32 {
        match (self.axis, self.position) {
            (Axis::Failover, Position::Pre) => 3,
            (Axis::Failover, _) => 1,
            _ => 3,
        }
    }
}

/// The names one case uses in a shared harness, made unique by its `tag`: its own copy of
/// the recording (so that `times` counts its requests alone), the re-encoded answer of its
/// fallback, and its failover alias.
pub struct Names {
    /// Primary provider (`anthropic`, or `anthropic_fast` for a stall under test).
    pub primary: String,
    /// The recording's copy, served by the primary.
    pub fixture: String,
    /// The re-encoded answer, served by the other provider.
    pub fallback: String,
    pub alias: String,
}

impl Case {
    pub fn names(&self, tag: &str) -> Names {
        let p = provider(self.dialect);
        Names {
            primary: if self.timeout {
                format!("{p}_fast")
            } else {
                p.to_owned()
            },
            fixture: format!("{tag}_{}", self.fixture),
            fallback: format!("x{tag}_{}", self.fixture),
            alias: format!("fo{tag}"),
        }
    }

    /// Adds the case's alias to a shared configuration.
    pub fn configure(&self, config: &mut Config, tag: &str) {
        let n = self.names(tag);
        alias(
            config,
            &n.alias,
            &format!("{}/{}:{}", n.primary, self.knobs, n.fixture),
            &[&format!("{}/{}", provider(other(self.dialect)), n.fallback)],
        );
    }

    /// Serves the case's recordings from the shared replay.
    pub fn insert(&self, h: &Harness, tag: &str) {
        let n = self.names(tag);
        let rec = recording(self.dialect, self.fixture);
        h.replay
            .insert_fixture(other(self.dialect), &n.fallback, rec.reencoded());
        h.replay.insert_fixture(self.dialect, &n.fixture, rec.body);
    }
}

/// A harness shared by many cases: providers `anthropic_fast` / `openai_fast` (the same
/// upstream with small timers, for stalls under test) besides the usual two.
pub fn shared_config(config: &mut Config, max_attempts: u32) {
    fast(config, max_attempts);
    for p in ["anthropic", "openai"] {
        let mut quick = config.providers[p].clone();
        quick.idle_timeout_ms = STALL_IDLE_MS;
        quick.first_byte_timeout_ms = STALL_FIRST_BYTE_MS;
        config.providers.insert(format!("{p}_fast"), quick);
    }
}

/// Runs one case on a shared harness configured with [`Case::configure`] and
/// [`Case::insert`] under the same `tag`; every difference found, or Ok.
pub async fn run_case(h: &Harness, case: &Case, tag: &str) -> Result<(), Vec<String>> {
    let rec = recording(case.dialect, case.fixture);
    let names = case.names(tag);
    let fallback_dialect = other(case.dialect);
    let attempts = case.max_attempts();
    let model = match case.axis {
        Axis::Retry => format!("{}/{},times=1:{}", names.primary, case.knobs, names.fixture),
        Axis::Failover => names.alias.clone(),
        Axis::Whole => format!("{}/{}:{}", names.primary, case.knobs, names.fixture),
    };
    let t = Instant::now();
    let response = h
        .chat(case.door, &[], &gw::chat_body(case.door, &model, true))
        .await;
    let status = response.status();
    let body = match read_body(response).await {
        Ok(body) => body,
        Err((e, partial)) => {
            return Err(vec![format!(
                "reading the answer: {e}; got {:?}",
                String::from_utf8_lossy(&partial)
            )]);
        }
    };
    let elapsed = t.elapsed();
    if std::env::var_os("MATRIX_DUMP").is_some() {
        println!("{}:\n{}", case.name(), String::from_utf8_lossy(&body));
    }
    let mut errs = Vec::new();
    if status != 200 {
        return Err(vec![format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        )]);
    }
    check_whole(case.door, &rec, &body, case.n, &mut errs);

    // The upstream requests of this case (the replay is shared).
    let primary_suffix = format!(":{}", names.fixture);
    let requests: Vec<Recorded> = h
        .replay
        .requests()
        .into_iter()
        .filter(|r| {
            r.model()
                .is_some_and(|m| m.ends_with(&primary_suffix) || m == names.fallback)
        })
        .collect();
    let to = |d: Dialect| -> Vec<&Recorded> {
        requests.iter().filter(|r| r.path == endpoint(d)).collect()
    };
    let (want_primary, want_fallback) = match case.axis {
        Axis::Retry => (2, 0),
        Axis::Whole => (1, 0),
        Axis::Failover if case.timeout => (1, 1),
        Axis::Failover => (attempts as usize, 1),
    };
    let (got_primary, got_fallback) = (to(case.dialect).len(), to(fallback_dialect).len());
    if (got_primary, got_fallback) != (want_primary, want_fallback) {
        errs.push(format!(
            "upstream requests: want {want_primary} to the primary and {want_fallback} to the \
             fallback, got {got_primary} and {got_fallback}: {:?}",
            requests
                .iter()
                .map(|r| (r.path.clone(), r.model().unwrap_or_default().to_owned()))
                .collect::<Vec<_>>()
        ));
    }
    if let Some(last) = requests.last()
        && case.axis != Axis::Whole
    {
        let prefix = case.n.map(|n| rec.text_before(n)).unwrap_or_default();
        let last_dialect = if last.path == endpoint(Dialect::Anthropic) {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        };
        // A reset discards what the gateway had not read yet: the continuation may start
        // from less (any prefix of what was sent); every other break loses nothing.
        let reset = case.knobs.contains("reset_after");
        if let Err(e) = continuation_shape(last, last_dialect, prefix.trim_end(), reset) {
            errs.push(format!("last upstream request: {e}"));
        }
    }
    if elapsed < Duration::from_millis(case.min_wait_ms) {
        errs.push(format!(
            "answered after {} ms: Retry-After ({} ms) not honoured",
            elapsed.as_millis(),
            case.min_wait_ms
        ));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// The whole body of an answer, or the error that ended reading it and what came before.
pub async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, (String, Vec<u8>)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => return Err((format!("{e:?}"), out)),
        }
    }
    Ok(out)
}

/// The messages of an upstream request (Responses: its input items).
fn messages(r: &Recorded) -> Vec<Value> {
    let list = match &r.body["input"] {
        Value::Null => &r.body["messages"],
        input => input,
    };
    list.as_array().cloned().unwrap_or_default()
}

/// Checks that `r` continues after `prefix` the way `dialect`'s provider is asked to
/// (Anthropic: prefill; OpenAI: the continue instruction), or is the original request when
/// the client had no text yet.
pub fn continuation_shape(
    r: &Recorded,
    dialect: Dialect,
    prefix: &str,
    or_less: bool,
) -> Result<(), String> {
    let msgs = messages(r);
    let last = msgs.last().cloned().unwrap_or(Value::Null);
    let text = replay::continuation::message_text(&last);
    let original = last["role"] == "user" && text == "hi" && msgs.len() == 1;
    if or_less {
        let got = match dialect {
            Dialect::Anthropic if last["role"] == "assistant" => Some(text.clone()),
            Dialect::OpenAi | Dialect::OpenAiResponses if text == CONTINUE_INSTRUCTION => msgs
                .len()
                .checked_sub(2)
                .map(|i| replay::continuation::message_text(&msgs[i])),
            _ => None,
        };
        return match got {
            None if original => Ok(()),
            Some(p) if prefix.starts_with(&p) && !p.is_empty() => Ok(()),
            _ => Err(format!(
                "want the original request or a continuation after a prefix of {prefix:?}, \
                 got messages {msgs:?}"
            )),
        };
    }
    if prefix.is_empty() {
        return if original {
            Ok(())
        } else {
            Err(format!("want the original request, got messages {msgs:?}"))
        };
    }
    match dialect {
        Dialect::Anthropic => {
            if last["role"] != "assistant" || text != prefix {
                return Err(format!(
                    "want an assistant prefill {prefix:?}, got messages {msgs:?}"
                ));
            }
        }
        Dialect::OpenAi | Dialect::OpenAiResponses => {
            let before = msgs
                .len()
                .checked_sub(2)
                .map(|i| msgs[i].clone())
                .unwrap_or(Value::Null);
            if last["role"] != "user"
                || text != CONTINUE_INSTRUCTION
                || before["role"] != "assistant"
                || replay::continuation::message_text(&before) != prefix
            {
                return Err(format!(
                    "want the partial answer {prefix:?} and the continue instruction, got \
                     messages {msgs:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a door's SSE body holds the recording's whole answer: text exact, tool calls
/// whole and equal, finish mapped, stream complete, usage at least the recording's.
/// `n`: frames the first attempt sent before it broke (reasoning may then stop there).
pub fn check_whole(
    door: Dialect,
    rec: &Recording,
    body: &[u8],
    n: Option<usize>,
    errs: &mut Vec<String>,
) {
    let (events, result) = gw::decode(door, body);
    if let Err(e) = result {
        errs.push(format!("door stream does not decode: {e}"));
    }
    let raw = String::from_utf8_lossy(body);
    match door {
        Dialect::OpenAi if !raw.contains("data: [DONE]") => {
            errs.push("no [DONE]".into());
        }
        Dialect::Anthropic if !raw.contains("event: message_stop") => {
            errs.push("no message_stop".into());
        }
        _ => {}
    }
    if let Some(e) = events.iter().find(|e| matches!(e, AgentEvent::Error(_))) {
        errs.push(format!(
            "error event: {}",
            serde_json::to_string(e).unwrap()
        ));
    }
    match events.last() {
        Some(AgentEvent::StreamEnd(end)) if end.reason != FinishReason::Error => {}
        other => errs.push(format!("stream does not end whole: last event {other:?}")),
    }
    let got = gw::seen_events(&events, false);
    let want = &rec.seen;
    if got.text != want.text {
        errs.push(format!("text: want {:?}, got {:?}", want.text, got.text));
    }
    let calls_ok = got.calls.len() == want.calls.len()
        && got
            .calls
            .iter()
            .zip(&want.calls)
            .all(|(g, w)| g.0 == w.0 && !g.2 && gw::same_args(&g.1, &w.1, false));
    if !calls_ok {
        errs.push(format!(
            "tool calls: want {:?}, got {:?}",
            want.calls, got.calls
        ));
    }
    let starts = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolCallStart { .. }))
        .count();
    if starts != want.calls.len() {
        errs.push(format!(
            "{starts} tool calls started for {} whole ones (a partial call reached the client)",
            want.calls.len()
        ));
    }
    let want_finish = want
        .finish
        .map(|f| gw::crossed(f, door, !want.calls.is_empty()));
    if got.finish != want_finish {
        errs.push(format!(
            "finish: want {want_finish:?}, got {:?}",
            got.finish
        ));
    }
    if let Some(w) = want.output_tokens
        && got.output_tokens.unwrap_or(0) < w
    {
        errs.push(format!(
            "usage: output tokens {:?} < the recording's {w}",
            got.output_tokens
        ));
    }
    // Reasoning: whole, unless the break came inside it or before any text: then the client
    // keeps what was streamed before the break (a prefix of the recording's, reset bytes
    // aside), and a continuation's reasoning is not passed on.
    let before = n.map(|n| rec.reasoning_before(n)).unwrap_or_default();
    let reasoning_ok = got.reasoning == want.reasoning
        || (got.reasoning.len() <= before.len() && want.reasoning.starts_with(&got.reasoning));
    if !reasoning_ok {
        errs.push(format!(
            "reasoning: want {:?} (sent before the break: {before:?}), got {:?}",
            want.reasoning, got.reasoning
        ));
    }
}

/// Splits a door's SSE body into (event name, JSON data) frames; `[DONE]` as `Value::Null`.
pub fn sse_frames(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if data == "[DONE]" {
            out.push((event, Value::Null));
        } else if !data.is_empty() {
            out.push((
                event,
                serde_json::from_str(&data).unwrap_or_else(|_| json!({"unparsed": data})),
            ));
        }
    }
    out
}

/// Starts a harness with the fast configuration and `edit`.
pub async fn start(max_attempts: u32, edit: impl FnOnce(&mut Config)) -> Harness {
    gw::start_with(|c| {
        fast(c, max_attempts);
        edit(c);
    })
    .await
}
