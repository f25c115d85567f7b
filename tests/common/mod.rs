//! Shared test support: fixture listing and an independent assembler.
//!
//! The independent assembler reads the raw SSE bodies with `serde_json::Value` only (no code
//! from the `providers` crate) so that the codec tests compare against a second, naive
//! reading of the same bytes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The fixture root.
pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One recorded stream.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Dialect name (`openai`, `anthropic`, `openai-responses`).
    pub dialect: &'static str,
    /// Path of the `.sse` file.
    pub path: PathBuf,
    /// `dir/file.sse`, for messages.
    pub name: String,
    /// The raw body.
    pub body: Vec<u8>,
}

/// Every `*.sse` fixture of `dir` (`anthropic`, `openai_chat`), sorted by name.
pub fn fixtures_in(dialect: &'static str, dir: &str) -> Vec<Fixture> {
    let path = fixtures_root().join(dir);
    let mut out: Vec<Fixture> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("listing {}: {e}", path.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .map(|p| {
            let body = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            Fixture {
                dialect,
                name: format!("{dir}/{file}"),
                path: p,
                body,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no fixtures in {}", path.display());
    out
}

/// Every fixture of every registered dialect (`providers::dialects`), so a new registration
/// is covered by every fixture-driven test.
pub fn all_fixtures() -> Vec<Fixture> {
    providers::dialects::all()
        .flat_map(|w| fixtures_in(w.dialect().as_str(), w.fixture_dir()))
        .collect()
}

/// The fixtures holding an answer: those whose provider reported an error instead (the
/// independent reading says so) have nothing to compare; tests/conformance.rs checks that
/// they decode as that error.
pub fn whole_fixtures() -> Vec<Fixture> {
    all_fixtures()
        .into_iter()
        .filter(|f| !expected(f.dialect, &f.body).error)
        .collect()
}

/// Runs `check` on every fixture and fails once, listing every fixture that failed.
pub fn for_each_fixture(
    fixtures: &[Fixture],
    mut check: impl FnMut(&Fixture) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for f in fixtures {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(f)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => failures.push(format!("{}: {msg}", f.name)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                failures.push(format!("{}: panicked: {msg}", f.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n\n")
    );
}

/// One raw SSE block: its `event:` name and its joined `data:` lines.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub event: Option<String>,
    pub data: String,
}

/// A plain SSE reading: split on blank lines, keep `event:` and `data:` lines.
pub fn raw_frames(body: &[u8]) -> Vec<RawFrame> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut frames = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if !data.is_empty() {
            frames.push(RawFrame {
                event,
                data: data.join("\n"),
            });
        }
    }
    frames
}

/// A tool call as the independent assembler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCall {
    pub name: String,
    /// The concatenated argument text (`{}` when empty).
    pub arguments: String,
    /// Cut by the token limit (invalid JSON, finish `length` / `max_tokens`).
    pub truncated: bool,
}

impl RawCall {
    /// Arguments as JSON (None when truncated or invalid).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.arguments).ok()
    }
}

/// Final token counts, normalized as `docs/protocol.md` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawUsage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
    pub reasoning: Option<u64>,
}

/// What a naive reading of the body says the answer is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Answer text of choice 0.
    pub text: String,
    /// Client tool calls of choice 0, in order of first appearance.
    pub tool_calls: Vec<RawCall>,
    /// Reasoning text of choice 0.
    pub reasoning: String,
    /// Refusal text of choice 0 (OpenAI `delta.refusal`).
    pub refusal: String,
    pub usage: RawUsage,
    /// The provider's own finish reason (choice 0), verbatim.
    pub finish_reason: Option<String>,
    /// Whether a finish reason arrived.
    pub finished: bool,
    /// Number of choices seen (OpenAI `n`).
    pub choices: usize,
    /// Whether the provider reported an error in the stream.
    pub error: bool,
}

/// Assembles a fixture body of `dialect` (a registered dialect name).
pub fn expected(dialect: &str, body: &[u8]) -> Expected {
    match dialect {
        "openai" => expected_openai(body),
        "anthropic" => expected_anthropic(body),
        "openai-responses" => expected_responses(body),
        other => panic!("unknown dialect {other}"),
    }
}

fn take(dst: &mut Option<u64>, v: &Value) {
    if let Some(n) = v.as_u64() {
        *dst = Some(n);
    }
}

/// OpenAI Chat Completions chunks.
pub fn expected_openai(body: &[u8]) -> Expected {
    let mut e = Expected {
        choices: 0,
        ..Expected::default()
    };
    // (tool_calls[].index, call) for choice 0.
    let mut calls: Vec<(u64, RawCall)> = Vec::new();
    for frame in raw_frames(body) {
        if frame.data.trim() == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&frame.data).expect("chunk JSON");
        if chunk.get("error").is_some_and(|v| !v.is_null()) {
            e.error = true;
            continue;
        }
        if let Some(usage) = chunk.get("usage").filter(|v| v.is_object()) {
            take(&mut e.usage.input, &usage["prompt_tokens"]);
            take(&mut e.usage.output, &usage["completion_tokens"]);
            take(
                &mut e.usage.cache_read,
                &usage["prompt_tokens_details"]["cached_tokens"],
            );
            take(
                &mut e.usage.reasoning,
                &usage["completion_tokens_details"]["reasoning_tokens"],
            );
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0);
            e.choices = e.choices.max(index as usize + 1);
            if index != 0 {
                continue;
            }
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                e.text.push_str(t);
            }
            if let Some(t) = delta["refusal"].as_str() {
                e.refusal.push_str(t);
            }
            for key in ["reasoning_content", "reasoning"] {
                if let Some(t) = delta[key].as_str() {
                    e.reasoning.push_str(t);
                }
            }
            for tc in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap_or(0);
                let pos = match calls.iter().position(|(j, _)| *j == i) {
                    Some(p) => p,
                    None => {
                        calls.push((
                            i,
                            RawCall {
                                name: String::new(),
                                arguments: String::new(),
                                truncated: false,
                            },
                        ));
                        calls.len() - 1
                    }
                };
                let call = &mut calls[pos].1;
                if let Some(n) = tc["function"]["name"].as_str() {
                    call.name.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    call.arguments.push_str(a);
                }
            }
            if let Some(r) = choice["finish_reason"].as_str() {
                e.finish_reason = Some(r.to_owned());
                e.finished = true;
            }
        }
    }
    let length = e.finish_reason.as_deref() == Some("length");
    e.tool_calls = calls
        .into_iter()
        .map(|(_, mut c)| {
            if c.arguments.is_empty() {
                c.arguments = "{}".to_owned();
            }
            c.truncated = length && c.json().is_none();
            c
        })
        .collect();
    e
}

/// Anthropic Messages events.
pub fn expected_anthropic(body: &[u8]) -> Expected {
    let mut e = Expected {
        choices: 1,
        ..Expected::default()
    };
    // Raw (wire) usage fields, latest wins; normalized at the end.
    let (mut input, mut output, mut cache_read, mut cache_write) = (None, None, None, None);
    let mut thinking = None;
    let mut raw_usage = |usage: &Value| {
        // Not in the rules' list, but the analogue of OpenAI's reasoning_tokens: Anthropic
        // reports thinking tokens (already counted in output_tokens) here.
        take(
            &mut thinking,
            &usage["output_tokens_details"]["thinking_tokens"],
        );
        take(&mut input, &usage["input_tokens"]);
        take(&mut output, &usage["output_tokens"]);
        take(&mut cache_read, &usage["cache_read_input_tokens"]);
        take(&mut cache_write, &usage["cache_creation_input_tokens"]);
    };
    // (wire index, call, closed)
    let mut calls: Vec<(u64, RawCall, bool)> = Vec::new();
    // wire index -> block type, for routing deltas.
    let mut kinds: Vec<(u64, String)> = Vec::new();
    for frame in raw_frames(body) {
        let v: Value = serde_json::from_str(&frame.data).expect("event JSON");
        let ty = v["type"].as_str().unwrap_or_default().to_owned();
        let index = v["index"].as_u64().unwrap_or(0);
        match ty.as_str() {
            "message_start" => raw_usage(&v["message"]["usage"]),
            "content_block_start" => {
                let block = &v["content_block"];
                let kind = block["type"].as_str().unwrap_or_default().to_owned();
                match kind.as_str() {
                    "text" => e.text.push_str(block["text"].as_str().unwrap_or_default()),
                    "thinking" => e
                        .reasoning
                        .push_str(block["thinking"].as_str().unwrap_or_default()),
                    "tool_use" => {
                        // The start carries `input: {}`; the arguments come as deltas.
                        calls.push((
                            index,
                            RawCall {
                                name: block["name"].as_str().unwrap_or_default().to_owned(),
                                arguments: String::new(),
                                truncated: false,
                            },
                            false,
                        ));
                    }
                    _ => {}
                }
                kinds.push((index, kind));
            }
            "content_block_delta" => {
                let kind = kinds
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == index)
                    .map(|(_, k)| k.as_str())
                    .unwrap_or_default();
                let delta = &v["delta"];
                match (kind, delta["type"].as_str().unwrap_or_default()) {
                    ("text", "text_delta") => {
                        e.text.push_str(delta["text"].as_str().unwrap_or_default());
                    }
                    ("thinking", "thinking_delta") => e
                        .reasoning
                        .push_str(delta["thinking"].as_str().unwrap_or_default()),
                    ("tool_use", "input_json_delta") => {
                        if let Some(c) = calls.iter_mut().rev().find(|(i, _, _)| *i == index) {
                            c.1.arguments
                                .push_str(delta["partial_json"].as_str().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(c) = calls.iter_mut().rev().find(|(i, _, _)| *i == index) {
                    c.2 = true;
                }
            }
            "message_delta" => {
                raw_usage(&v["usage"]);
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    e.finish_reason = Some(r.to_owned());
                    e.finished = true;
                }
            }
            "error" => e.error = true,
            _ => {}
        }
    }
    let max_tokens = e.finish_reason.as_deref() == Some("max_tokens");
    e.tool_calls = calls
        .into_iter()
        .map(|(_, mut c, closed)| {
            if c.arguments.is_empty() {
                c.arguments = "{}".to_owned();
            }
            c.truncated = max_tokens && !closed;
            c
        })
        .collect();
    e.usage = RawUsage {
        input: input.map(|i: u64| i + cache_read.unwrap_or(0) + cache_write.unwrap_or(0)),
        output,
        cache_read,
        cache_write,
        reasoning: thinking,
    };
    e
}

/// OpenAI Responses events: text and refusal deltas, reasoning per item (its summary and
/// reasoning-text parts joined by blank lines), function calls by item id, the terminal
/// response's status and usage.
pub fn expected_responses(body: &[u8]) -> Expected {
    let mut e = Expected {
        choices: 1,
        ..Expected::default()
    };
    // (item id, parts as (key, text)), in order of appearance.
    let mut reasoning: Vec<(String, Vec<(String, String)>)> = Vec::new();
    // (item id, call, done)
    let mut calls: Vec<(String, RawCall, bool)> = Vec::new();
    let mut incomplete = false;
    for frame in raw_frames(body) {
        if e.finished || e.error {
            // One request's answer ends there (a recording may hold the next turns after it).
            break;
        }
        let v: Value = serde_json::from_str(&frame.data).expect("event JSON");
        let ty = v["type"].as_str().unwrap_or_default();
        let item_id = v["item_id"].as_str().unwrap_or_default().to_owned();
        match ty {
            "response.output_text.delta" => {
                e.text.push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.refusal.delta" => {
                e.refusal.push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let key = if ty == "response.reasoning_text.delta" {
                    format!("content {}", v["content_index"])
                } else {
                    format!("summary {}", v["summary_index"])
                };
                if !reasoning.iter().any(|(id, _)| *id == item_id) {
                    reasoning.push((item_id.clone(), Vec::new()));
                }
                let parts = &mut reasoning
                    .iter_mut()
                    .find(|(id, _)| *id == item_id)
                    .unwrap()
                    .1;
                if !parts.iter().any(|(k, _)| *k == key) {
                    parts.push((key.clone(), String::new()));
                }
                let part = parts.iter_mut().find(|(k, _)| *k == key).unwrap();
                part.1.push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.output_item.added" if v["item"]["type"] == "function_call" => {
                calls.push((
                    v["item"]["id"].as_str().unwrap_or_default().to_owned(),
                    RawCall {
                        name: v["item"]["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: String::new(),
                        truncated: false,
                    },
                    false,
                ));
            }
            "response.function_call_arguments.delta" => {
                if let Some(c) = calls.iter_mut().find(|(id, _, _)| *id == item_id) {
                    c.1.arguments
                        .push_str(v["delta"].as_str().unwrap_or_default());
                }
            }
            "response.output_item.done" if v["item"]["type"] == "function_call" => {
                let id = v["item"]["id"].as_str().unwrap_or_default();
                if let Some(c) = calls.iter_mut().find(|(i, _, _)| i == id) {
                    if let Some(args) = v["item"]["arguments"].as_str() {
                        c.1.arguments = args.to_owned();
                    }
                    c.2 = true;
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = &v["response"];
                e.finished = true;
                incomplete = ty == "response.incomplete";
                e.finish_reason = if incomplete {
                    Some(
                        response["incomplete_details"]["reason"]
                            .as_str()
                            .unwrap_or("incomplete")
                            .to_owned(),
                    )
                } else {
                    response["status"].as_str().map(str::to_owned)
                };
                let usage = &response["usage"];
                take(&mut e.usage.input, &usage["input_tokens"]);
                take(&mut e.usage.output, &usage["output_tokens"]);
                take(
                    &mut e.usage.cache_read,
                    &usage["input_tokens_details"]["cached_tokens"],
                );
                take(
                    &mut e.usage.reasoning,
                    &usage["output_tokens_details"]["reasoning_tokens"],
                );
            }
            "error" | "response.failed" => e.error = true,
            _ => {}
        }
    }
    e.reasoning = reasoning
        .into_iter()
        .map(|(_, parts)| {
            let texts: Vec<String> = parts
                .into_iter()
                .map(|(_, t)| t)
                .filter(|t| !t.is_empty())
                .collect();
            texts.join("\n\n")
        })
        .collect();
    e.tool_calls = calls
        .into_iter()
        .map(|(_, mut c, done)| {
            if c.arguments.is_empty() {
                c.arguments = "{}".to_owned();
            }
            c.truncated = incomplete && !done;
            c
        })
        .collect();
    e
}

// ---------------------------------------------------------------------------------------
// Helpers over the codecs (these do use the `providers` crate).

/// The codec dialect of a fixture.
pub fn dialect_of(f: &Fixture) -> providers::Dialect {
    f.dialect.parse().expect("dialect name")
}

/// Checks the structural rules of a decoded, complete event stream.
pub fn check_structure(events: &[providers::AgentEvent]) -> Result<(), String> {
    use providers::AgentEvent as E;
    use std::collections::HashMap;

    #[derive(PartialEq, Clone, Copy, Debug)]
    enum State {
        OpenBlock,
        OpenCall,
        Closed,
    }

    let starts = events
        .iter()
        .filter(|e| matches!(e, E::StreamStart(_)))
        .count();
    let ends = events
        .iter()
        .filter(|e| matches!(e, E::StreamEnd(_)))
        .count();
    if starts != 1 || !matches!(events.first(), Some(E::StreamStart(_))) {
        return Err(format!(
            "stream.start must be first exactly once (count {starts}, first {:?})",
            events.first().map(|e| e.kind())
        ));
    }
    if ends != 1 || !matches!(events.last(), Some(E::StreamEnd(_))) {
        return Err(format!(
            "stream.end must be last exactly once (count {ends}, last {:?})",
            events.last().map(|e| e.kind())
        ));
    }
    let mut blocks: HashMap<u32, State> = HashMap::new();
    // Argument text streamed so far per call: the deltas must add up to the end's arguments.
    let mut streamed: HashMap<u32, String> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let at = || {
            format!(
                "event #{i} {}",
                serde_json::to_string(e).unwrap_or_default()
            )
        };
        match e {
            E::BlockStart { index, .. } | E::ToolCallStart { index, .. } => {
                let state = if matches!(e, E::BlockStart { .. }) {
                    State::OpenBlock
                } else {
                    State::OpenCall
                };
                if blocks.insert(*index, state).is_some() {
                    return Err(format!("{}: block {index} opened twice", at()));
                }
            }
            E::TextDelta { index, .. }
            | E::RefusalDelta { index, .. }
            | E::ReasoningDelta { index, .. }
            | E::ReasoningSignature { index, .. }
            | E::NativeDelta { index, .. }
                if blocks.get(index) != Some(&State::OpenBlock) =>
            {
                return Err(format!(
                    "{}: delta for block {index} in state {:?}",
                    at(),
                    blocks.get(index)
                ));
            }
            E::ToolCallDelta { index, .. } if blocks.get(index) != Some(&State::OpenCall) => {
                return Err(format!(
                    "{}: tool_call.delta for block {index} in state {:?}",
                    at(),
                    blocks.get(index)
                ));
            }
            E::ToolCallDelta { index, arguments } => {
                streamed.entry(*index).or_default().push_str(arguments);
            }
            E::ToolCallEnd {
                index,
                arguments,
                truncated,
            } => {
                if blocks.get(index) != Some(&State::OpenCall) {
                    return Err(format!(
                        "{}: tool_call.end for block {index} in state {:?}",
                        at(),
                        blocks.get(index)
                    ));
                }
                if !truncated && serde_json::from_str::<Value>(arguments).is_err() {
                    return Err(format!("{}: arguments are not valid JSON", at()));
                }
                let sent = streamed.remove(index).unwrap_or_default();
                if &sent != arguments {
                    return Err(format!(
                        "{}: deltas add up to {sent:?}, not to the end's arguments",
                        at()
                    ));
                }
                blocks.insert(*index, State::Closed);
            }
            E::BlockEnd { index } => {
                if blocks.get(index) != Some(&State::OpenBlock) {
                    return Err(format!(
                        "{}: block.end for block {index} in state {:?}",
                        at(),
                        blocks.get(index)
                    ));
                }
                blocks.insert(*index, State::Closed);
            }
            E::StreamEnd(_) => {
                let mut open: Vec<u32> = blocks
                    .iter()
                    .filter(|(_, s)| **s != State::Closed)
                    .map(|(i, _)| *i)
                    .collect();
                open.sort_unstable();
                if !open.is_empty() {
                    return Err(format!("{}: blocks {open:?} never closed", at()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a whole body, failing with the error's text.
pub fn decode(
    dialect: providers::Dialect,
    body: &[u8],
) -> Result<Vec<providers::AgentEvent>, String> {
    let (events, result) = providers::StreamDecoder::decode_all(dialect, body);
    result.map_err(|e| format!("decode error: {e}"))?;
    Ok(events)
}

/// Tool-call argument equality: JSON-equal, or equal raw text when either side is truncated.
pub fn same_args(got: &str, got_truncated: bool, want: &RawCall) -> bool {
    if got_truncated || want.truncated {
        return got_truncated == want.truncated && got == want.arguments;
    }
    match (serde_json::from_str::<Value>(got), want.json()) {
        (Ok(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Client tool calls of choice 0 as (name, arguments, truncated).
pub fn calls(m: &providers::assemble::Message) -> Vec<(String, String, bool)> {
    m.blocks
        .iter()
        .filter(|b| b.choice == 0)
        .filter_map(|b| match &b.content {
            providers::assemble::BlockContent::ToolCall {
                name,
                arguments,
                truncated,
                ..
            } => Some((name.clone(), arguments.clone(), *truncated)),
            _ => None,
        })
        .collect()
}
