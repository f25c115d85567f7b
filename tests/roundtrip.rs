//! decode -> encode -> decode, within a dialect (identical events) and across dialects (same
//! content), plus the non-streaming bodies of every fixture.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Expected, Fixture, all_fixtures, decode, dialect_of, for_each_fixture, whole_fixtures,
};
use providers::assemble::{BlockContent, Message};
use providers::{
    AgentEvent, Assembler, Dialect, EncodeError, EncodeOptions, FinishReason, StreamEncoder,
    encode_response,
};
use serde_json::Value;

const WITH_USAGE: EncodeOptions = EncodeOptions {
    include_usage: true,
};

/// Whether the events use choices beyond 0 (OpenAI `n > 1`).
fn has_extra_choices(events: &[AgentEvent]) -> bool {
    events.iter().any(|e| match e {
        AgentEvent::BlockStart { choice, .. } | AgentEvent::ToolCallStart { choice, .. } => {
            *choice > 0
        }
        AgentEvent::StreamEnd(end) => !end.other_choices.is_empty(),
        _ => false,
    })
}

fn encode(to: Dialect, events: &[AgentEvent]) -> Result<Vec<u8>, String> {
    StreamEncoder::encode_all(to, WITH_USAGE, events).map_err(|e| format!("encode to {to}: {e}"))
}

/// Text and refusal text of choice 0, in block order.
fn visible_text(m: &Message) -> String {
    m.blocks
        .iter()
        .filter(|b| b.choice == 0)
        .filter_map(|b| match &b.content {
            BlockContent::Text { text, .. } | BlockContent::Refusal { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The normalized finish reason after crossing from `from` into `to` (docs/protocol.md,
/// finish table). Responses carries a refusal only as a refusal part (Anthropic's refusal
/// is text) and ends Anthropic's `pause_turn` as `completed`.
fn crossed_reason(
    reason: FinishReason,
    from: Dialect,
    to: Dialect,
    has_calls: bool,
) -> FinishReason {
    match (from, to, reason) {
        (_, Dialect::OpenAiResponses, FinishReason::Stop) if has_calls => {
            return FinishReason::ToolCalls;
        }
        (
            Dialect::Anthropic,
            Dialect::OpenAiResponses,
            FinishReason::Refusal | FinishReason::PauseTurn,
        ) => {
            return if has_calls {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            };
        }
        (Dialect::OpenAiResponses, Dialect::OpenAi, FinishReason::Refusal) => {
            return FinishReason::Refusal;
        }
        _ => {}
    }
    match (to, reason) {
        (Dialect::OpenAi, FinishReason::Refusal) => FinishReason::ContentFilter,
        (Dialect::OpenAi, FinishReason::PauseTurn) => FinishReason::Stop,
        // OpenAI `stop` is read as `tool_calls` when tool calls were emitted.
        (Dialect::OpenAi, FinishReason::Stop) if has_calls => FinishReason::ToolCalls,
        (Dialect::Anthropic, FinishReason::ContentFilter) => FinishReason::Refusal,
        (_, r) => r,
    }
}

fn args_equal(a: &str, b: &str, truncated: bool) -> bool {
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

#[test]
fn same_dialect_roundtrip_gives_identical_events() {
    for_each_fixture(&whole_fixtures(), |f| {
        let d = dialect_of(f);
        let events = decode(d, &f.body)?;
        let bytes = encode(d, &events)?;
        let again = decode(d, &bytes)
            .map_err(|e| format!("{e}\nre-encoded body:\n{}", String::from_utf8_lossy(&bytes)))?;
        if again == events {
            return Ok(());
        }
        let first = events
            .iter()
            .zip(&again)
            .position(|(a, b)| a != b)
            .unwrap_or(events.len().min(again.len()));
        Err(format!(
            "events differ ({} vs {}) first at #{first}:\n  before: {}\n  after:  {}",
            events.len(),
            again.len(),
            events
                .get(first)
                .map(|e| serde_json::to_string(e).unwrap())
                .unwrap_or_default(),
            again
                .get(first)
                .map(|e| serde_json::to_string(e).unwrap())
                .unwrap_or_default(),
        ))
    });
}

fn compare_content(
    before: &[AgentEvent],
    after: &[AgentEvent],
    from: Dialect,
    to: Dialect,
) -> Result<(), String> {
    let (a, b) = (Assembler::assemble(before), Assembler::assemble(after));
    let mut errs = Vec::new();
    // Anthropic has no refusal block: an OpenAI refusal reaches Anthropic clients as text
    // (the encoder's choice; the rules do not say).
    let want_text = match to {
        Dialect::Anthropic => visible_text(&a),
        Dialect::OpenAi | Dialect::OpenAiResponses => a.text(),
    };
    if want_text != b.text() {
        errs.push(format!("text: {want_text:?} became {:?}", b.text()));
    }
    if a.reasoning() != b.reasoning() {
        errs.push(format!(
            "reasoning: {:?} became {:?}",
            a.reasoning(),
            b.reasoning()
        ));
    }
    let (ca, cb) = (common::calls(&a), common::calls(&b));
    let same_calls = ca.len() == cb.len()
        && ca
            .iter()
            .zip(&cb)
            .all(|(x, y)| x.0 == y.0 && x.2 == y.2 && args_equal(&x.1, &y.1, x.2));
    if !same_calls {
        errs.push(format!("tool calls: {ca:?} became {cb:?}"));
    }
    let ra = a
        .end
        .as_ref()
        .map(|e| crossed_reason(e.reason, from, to, !ca.is_empty()));
    let rb = b.end.as_ref().map(|e| e.reason);
    if ra != rb {
        errs.push(format!("finish reason: expected {ra:?}, got {rb:?}"));
    }
    // A count the source never reported may come back as 0 (Anthropic always writes usage).
    for (what, x, y) in [
        ("input_tokens", a.usage.input_tokens, b.usage.input_tokens),
        (
            "output_tokens",
            a.usage.output_tokens,
            b.usage.output_tokens,
        ),
    ] {
        let ok = match x {
            Some(_) => x == y,
            None => y.is_none() || y == Some(0),
        };
        if !ok {
            errs.push(format!("usage {what}: {x:?} became {y:?}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n  "))
    }
}

/// Every fixture into every other dialect (Chat <-> Anthropic <-> Responses).
#[test]
fn cross_dialect_roundtrip_keeps_the_content() {
    for_each_fixture(&whole_fixtures(), |f| {
        let from = dialect_of(f);
        let mut errs = Vec::new();
        for to in Dialect::ALL.into_iter().filter(|d| *d != from) {
            if let Err(e) = cross(from, to, &f.body) {
                errs.push(format!("to {to}: {e}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    });
}

fn cross(from: Dialect, to: Dialect, body: &[u8]) -> Result<(), String> {
    {
        let events = decode(from, body)?;
        let encoded = StreamEncoder::encode_all(to, WITH_USAGE, &events);
        if to != Dialect::OpenAi && has_extra_choices(&events) {
            // The rules: Anthropic and Responses have one choice; choices > 0 are refused.
            return match encoded {
                Err(EncodeError::Unsupported { dialect, .. }) if dialect == to => Ok(()),
                Err(e) => Err(format!("n > 1 into {to}: want Unsupported, got {e}")),
                Ok(_) => Err(format!("n > 1 into {to}: want Unsupported, got Ok")),
            };
        }
        let bytes = encoded.map_err(|e| format!("encode to {to}: {e}"))?;
        let again = decode(to, &bytes)
            .map_err(|e| format!("{e}\nre-encoded body:\n{}", String::from_utf8_lossy(&bytes)))?;
        common::check_structure(&again).map_err(|e| format!("after crossing to {to}: {e}"))?;
        if to == Dialect::OpenAi
            && !Assembler::assemble(&events).reasoning().is_empty()
            && !String::from_utf8_lossy(&bytes).contains("\"reasoning_content\"")
        {
            return Err("reasoning is not carried as delta.reasoning_content".into());
        }
        compare_content(&events, &again, from, to)
    }
}

#[test]
fn n_greater_than_one_is_exercised_by_the_fixtures() {
    let n3 = all_fixtures()
        .into_iter()
        .find(|f| f.name == "openai_chat/n3_multiple_choices.sse")
        .expect("fixture");
    assert_eq!(common::expected(n3.dialect, &n3.body).choices, 3);
}

/// The non-streaming body's text and tool calls (name, arguments as text or JSON).
fn body_content(d: Dialect, body: &Value) -> Result<(String, Vec<(String, Value)>), String> {
    match d {
        Dialect::OpenAi => {
            let msg = &body["choices"][0]["message"];
            let text = match &msg["content"] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => return Err(format!("message.content is {other}")),
            };
            let calls = msg["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        c["function"]["arguments"].clone(),
                    )
                })
                .collect();
            Ok((text, calls))
        }
        Dialect::OpenAiResponses => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for item in body["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("message") => {
                        for part in item["content"].as_array().into_iter().flatten() {
                            if part["type"] == "output_text" {
                                text.push_str(part["text"].as_str().unwrap_or_default());
                            }
                        }
                    }
                    Some("function_call") => calls.push((
                        item["name"].as_str().unwrap_or_default().to_owned(),
                        item["arguments"].clone(),
                    )),
                    _ => {}
                }
            }
            Ok((text, calls))
        }
        Dialect::Anthropic => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for block in body["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                    Some("tool_use") => calls.push((
                        block["name"].as_str().unwrap_or_default().to_owned(),
                        block["input"].clone(),
                    )),
                    _ => {}
                }
            }
            Ok((text, calls))
        }
    }
}

fn check_response(f: &Fixture, to: Dialect, m: &Message, want: &Expected) -> Result<(), String> {
    let body = match encode_response(to, m) {
        Ok(body) => body,
        Err(EncodeError::Unsupported { .. }) if to != Dialect::OpenAi && want.choices > 1 => {
            // Several choices cannot be one Anthropic message or Responses answer: refusing
            // is correct.
            return Ok(());
        }
        Err(e) => return Err(format!("encode_response({to}): {e}")),
    };
    // It must be JSON text a client can parse.
    let text = serde_json::to_string(&body).map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let (got_text, got_calls) = body_content(to, &body)?;
    let mut errs = Vec::new();
    // As in the streams, an OpenAI refusal becomes Anthropic text.
    let want_text = match to {
        Dialect::Anthropic => format!("{}{}", want.text, want.refusal),
        Dialect::OpenAi | Dialect::OpenAiResponses => want.text.clone(),
    };
    if got_text != want_text {
        errs.push(format!(
            "{to} body text: got {got_text:?}, want {want_text:?}"
        ));
    }
    if got_calls.len() != want.tool_calls.len() {
        errs.push(format!(
            "{to} body tool calls: got {got_calls:?}, want {:?}",
            want.tool_calls
        ));
    } else {
        for ((name, args), w) in got_calls.iter().zip(&want.tool_calls) {
            let args_ok = match (to, args) {
                // OpenAI carries the argument text: equal text when truncated, else equal JSON.
                (Dialect::OpenAi | Dialect::OpenAiResponses, Value::String(s)) => {
                    if w.truncated {
                        s == &w.arguments
                    } else {
                        serde_json::from_str::<Value>(s).ok() == w.json()
                    }
                }
                (Dialect::OpenAi | Dialect::OpenAiResponses, _) => false,
                // Anthropic carries an object: a truncated call has no JSON to compare.
                (Dialect::Anthropic, v) => w.truncated || Some(v) == w.json().as_ref(),
            };
            if name != &w.name || !args_ok {
                errs.push(format!(
                    "{to} body tool call: got ({name}, {args}), want {w:?}"
                ));
            }
        }
    }
    let _ = f;
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n  "))
    }
}

#[test]
fn non_streaming_bodies_carry_text_and_tool_calls() {
    for_each_fixture(&whole_fixtures(), |f| {
        let events = decode(dialect_of(f), &f.body)?;
        let m = Assembler::assemble(&events);
        let want = common::expected(f.dialect, &f.body);
        let mut errs = Vec::new();
        for to in Dialect::ALL {
            if let Err(e) = check_response(f, to, &m, &want) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n  "))
        }
    });
}
