//! Fixture-driven tests of the OpenAI Chat codec.

use serde_json::Value;

use crate::StreamDecoder;
use crate::assemble::{Assembler, BlockContent};
use crate::dialect::Dialect;
use crate::encode::{EncodeOptions, StreamEncoder, encode_response};
use crate::error::{CutPoint, DecodeError};
use crate::event::{AgentEvent, BlockKind, FinishReason, StreamEnd, StreamStart, Usage};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai_chat/");

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sse"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "fixtures missing: {names:?}");
    names
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}.sse")).unwrap()
}

fn decode(body: &[u8]) -> (Vec<AgentEvent>, Result<(), DecodeError>) {
    StreamDecoder::decode_all(Dialect::OpenAi, body)
}

fn decode_ok(body: &[u8]) -> Vec<AgentEvent> {
    let (events, r) = decode(body);
    r.unwrap();
    events
}

fn encode(events: &[AgentEvent], include_usage: bool) -> Vec<u8> {
    StreamEncoder::encode_all(Dialect::OpenAi, EncodeOptions { include_usage }, events).unwrap()
}

fn end_of(events: &[AgentEvent]) -> &StreamEnd {
    match events.last() {
        Some(AgentEvent::StreamEnd(end)) => end,
        other => panic!("last event is not stream.end: {other:?}"),
    }
}

fn start_of(events: &[AgentEvent]) -> &StreamStart {
    match events.first() {
        Some(AgentEvent::StreamStart(s)) => s,
        other => panic!("first event is not stream.start: {other:?}"),
    }
}

fn usage_of(events: &[AgentEvent]) -> Usage {
    let mut u = Usage::default();
    for e in events {
        if let AgentEvent::Usage(x) = e {
            u.merge(x);
        }
    }
    u
}

/// Checks the structural rules every decoded stream must follow.
fn check_rules(events: &[AgentEvent]) {
    start_of(events);
    let starts = events.iter().filter(|e| e.kind() == "stream.start").count();
    assert_eq!(starts, 1);
    let mut open: Vec<u32> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for e in events {
        match e {
            AgentEvent::BlockStart { index, .. } | AgentEvent::ToolCallStart { index, .. } => {
                assert!(!seen.contains(index), "index {index} reused");
                if let Some(last) = seen.last() {
                    assert_eq!(*index, last + 1, "indices not in order of appearance");
                } else {
                    assert_eq!(*index, 0);
                }
                seen.push(*index);
                open.push(*index);
            }
            AgentEvent::TextDelta { index, .. }
            | AgentEvent::RefusalDelta { index, .. }
            | AgentEvent::ReasoningDelta { index, .. }
            | AgentEvent::ToolCallDelta { index, .. } => {
                assert!(open.contains(index), "delta for closed block {index}");
            }
            AgentEvent::BlockEnd { index } | AgentEvent::ToolCallEnd { index, .. } => {
                let pos = open.iter().position(|i| i == index).unwrap();
                open.remove(pos);
            }
            _ => {}
        }
        if let AgentEvent::ToolCallEnd {
            arguments,
            truncated,
            ..
        } = e
        {
            assert_eq!(
                serde_json::from_str::<Value>(arguments).is_ok(),
                !truncated,
                "{arguments}"
            );
        }
    }
    assert!(open.is_empty(), "blocks left open: {open:?}");
    end_of(events);
}

#[test]
fn every_fixture_decodes_whole_and_follows_the_rules() {
    for name in fixture_names() {
        let body = std::fs::read(format!("{DIR}{name}")).unwrap();
        let (events, r) = decode(&body);
        assert!(r.is_ok(), "{name}: {r:?}");
        check_rules(&events);
        // Any split of the body gives the same events.
        let mut d = StreamDecoder::new(Dialect::OpenAi);
        let mut split = Vec::new();
        for piece in body.chunks(7) {
            d.feed(piece, &mut split).unwrap();
        }
        d.finish(&mut split).unwrap();
        assert_eq!(split, events, "{name}");
    }
}

#[test]
fn same_dialect_round_trip_is_exact_for_every_fixture() {
    for name in fixture_names() {
        let body = std::fs::read(format!("{DIR}{name}")).unwrap();
        let events = decode_ok(&body);
        let encoded = encode(&events, true);
        let (again, r) = decode(&encoded);
        assert!(
            r.is_ok(),
            "{name}: {r:?}\n{}",
            String::from_utf8_lossy(&encoded)
        );
        assert_eq!(again, events, "{name}");
        // And encoding is stable from there on.
        assert_eq!(encode(&again, true), encoded, "{name}");
    }
}

#[test]
fn text_basic() {
    let events = decode_ok(&fixture("text_basic"));
    let s = start_of(&events);
    assert!(s.id.starts_with("chatcmpl-"));
    assert_eq!(s.model, "gpt-4o-2024-08-06");
    assert_eq!(s.created, Some(1727346168));
    assert_eq!(s.dialect, Dialect::OpenAi);
    let m = Assembler::assemble(&events);
    assert!(m.text().ends_with("weather app."), "{}", m.text());
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::Stop);
    assert_eq!(end.provider_reason.as_deref(), Some("stop"));
    let u = usage_of(&events);
    assert_eq!((u.input_tokens, u.output_tokens), (Some(14), Some(30)));
    assert_eq!(u.reasoning_tokens, Some(0));
    assert_eq!(u.cache_read_tokens, None);
    // Usage comes before the closing block.end, which comes right before stream.end.
    let kinds: Vec<_> = events.iter().rev().take(3).map(|e| e.kind()).collect();
    assert_eq!(kinds, ["stream.end", "block.end", "usage"]);
}

#[test]
fn tool_calls_parallel() {
    let events = decode_ok(&fixture("tool_calls_parallel"));
    let m = Assembler::assemble(&events);
    let calls = m.tool_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "call_JMW1whyEaYG438VE1OIflxA2");
    assert_eq!(calls[0].1, "GetWeatherArgs");
    assert_eq!(calls[1].1, "get_stock_price");
    for (_, _, args) in &calls {
        let v: Value = serde_json::from_str(args).unwrap();
        assert!(v.is_object());
    }
    let v: Value = serde_json::from_str(calls[1].2).unwrap();
    assert_eq!(v["ticker"], "AAPL");
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::ToolCalls);
    let u = usage_of(&events);
    assert_eq!((u.input_tokens, u.output_tokens), (Some(149), Some(60)));
    // Both calls stay open until [DONE] and close in index order.
    let ends: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallEnd { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [0, 1]);
}

#[test]
fn tool_call_single_and_strict() {
    for (name, city) in [
        ("tool_call_single", "Edinburgh"),
        ("tool_call_strict", "San Francisco"),
    ] {
        let events = decode_ok(&fixture(name));
        let m = Assembler::assemble(&events);
        let calls = m.tool_calls();
        assert_eq!(calls.len(), 1, "{name}");
        let v: Value = serde_json::from_str(calls[0].2).unwrap();
        assert_eq!(v["city"], city, "{name}");
        assert_eq!(end_of(&events).reason, FinishReason::ToolCalls);
    }
}

#[test]
fn n3_multiple_choices() {
    let events = decode_ok(&fixture("n3_multiple_choices"));
    let m = Assembler::assemble(&events);
    let mut choices: Vec<u32> = m.blocks.iter().map(|b| b.choice).collect();
    choices.dedup();
    assert_eq!(choices.len(), 3);
    for c in 0..3 {
        let text: String = m
            .blocks
            .iter()
            .filter(|b| b.choice == c)
            .filter_map(|b| match &b.content {
                BlockContent::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.is_object(), "choice {c}: {text}");
    }
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::Stop);
    let others: Vec<_> = end
        .other_choices
        .iter()
        .map(|c| (c.choice, c.reason, c.provider_reason.as_deref()))
        .collect();
    assert_eq!(
        others,
        [
            (1, FinishReason::Stop, Some("stop")),
            (2, FinishReason::Stop, Some("stop"))
        ]
    );
    assert_eq!(usage_of(&events).output_tokens, Some(42));
    // Encoded back, choices 1 and 2 announce their role in their first delta.
    let encoded = String::from_utf8(encode(&events, true)).unwrap();
    assert!(encoded.contains(r#"{"index":1,"delta":{"role":"assistant","content":"#));
    assert!(encoded.contains(r#"{"index":2,"delta":{"role":"assistant","content":"#));
}

#[test]
fn reasoning_model_azure() {
    let events = decode_ok(&fixture("reasoning_model_azure"));
    let s = start_of(&events);
    assert_eq!(s.id, "chatcmpl-CYPS1lijGoK8gd9lYzY3r9Sx50nbt");
    assert_eq!(s.model, "gpt-5-nano-2025-08-07");
    assert_eq!(s.extra, None, "null system_fingerprint is not passthrough");
    match &events[1] {
        AgentEvent::ProviderEvent { name, data } => {
            assert_eq!(name, &None);
            assert!(data["prompt_filter_results"].is_array());
            assert_eq!(data["id"], "");
        }
        other => panic!("expected provider.event, got {other:?}"),
    }
    let u = usage_of(&events);
    assert_eq!(u.reasoning_tokens, Some(64));
    assert_eq!(u.cache_read_tokens, Some(0));
    assert_eq!((u.input_tokens, u.output_tokens), (Some(15), Some(78)));
    let filtered = events.iter().any(|e| match e {
        AgentEvent::TextDelta {
            extra: Some(extra), ..
        } => extra["content_filter_results"]["hate"]["filtered"] == false,
        _ => false,
    });
    assert!(filtered, "content_filter_results kept in text.delta extra");
    // Empty filter results (role and finish chunks) are not kept.
    assert_eq!(end_of(&events).extra, None);
    // Written back to OpenAI: the provider event verbatim; to nobody else.
    let encoded = String::from_utf8(encode(&events, true)).unwrap();
    let filter_line = String::from_utf8(fixture("reasoning_model_azure"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(encoded.contains(&filter_line));
}

#[test]
fn refusal() {
    let events = decode_ok(&fixture("refusal"));
    let m = Assembler::assemble(&events);
    assert_eq!(m.text(), "");
    let refusal: Vec<_> = m
        .blocks
        .iter()
        .filter_map(|b| match &b.content {
            BlockContent::Refusal { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refusal.len(), 1);
    assert!(refusal[0].starts_with("I'm sorry"), "{}", refusal[0]);
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::BlockStart {
            block: BlockKind::Refusal,
            ..
        }
    )));
    // OpenAI finishes a refusal with `stop`; the normalized reason is the refusal.
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::Refusal);
    assert_eq!(end.provider_reason.as_deref(), Some("stop"));
    let body = encode_response(Dialect::OpenAi, &m).unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        body["choices"][0]["message"]["refusal"],
        Value::String(refusal[0].clone())
    );
}

#[test]
fn logprobs_are_kept_in_text_delta_extra() {
    let events = decode_ok(&fixture("logprobs"));
    let tokens: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta {
                extra: Some(extra), ..
            } => Some(extra["logprobs"]["content"][0]["token"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, ["Foo", "!"]);
    let m = Assembler::assemble(&events);
    let body = encode_response(Dialect::OpenAi, &m).unwrap();
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[1]["token"], "!");
}

#[test]
fn finish_length_and_long_streams() {
    let events = decode_ok(&fixture("finish_length"));
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::Length);
    assert_eq!(Assembler::assemble(&events).text(), "{\"");

    let events = decode_ok(&fixture("text_long_obfuscation"));
    let u = usage_of(&events);
    assert_eq!((u.input_tokens, u.output_tokens), (Some(16), Some(300)));
    let usages = events.iter().filter(|e| e.kind() == "usage").count();
    assert_eq!(usages, 1, "usage: null is no usage");
    let s = start_of(&events);
    let extra = s.extra.as_ref().unwrap();
    assert_eq!(extra["service_tier"], "default");
    assert_eq!(extra["system_fingerprint"], "fp_de604bd877");
    assert!(!extra.contains_key("obfuscation"));
    let encoded = String::from_utf8(encode(&events, false)).unwrap();
    assert!(!encoded.contains("obfuscation"));
    assert!(
        !encoded.contains("\"usage\""),
        "no usage chunk without include_usage"
    );
    let chunks = encoded.matches("\"service_tier\":\"default\"").count();
    assert_eq!(chunks, encoded.matches("data: {").count());

    let events = decode_ok(&fixture("json_object_long"));
    let text = Assembler::assemble(&events).text();
    serde_json::from_str::<Value>(&text).unwrap();
}

/// Cuts `body` right after the frame containing the `nth` occurrence of `needle`.
fn cut_after(body: &[u8], needle: &str, nth: usize) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    let (pos, _) = text.match_indices(needle).nth(nth).unwrap();
    let end = text[pos..].find("\n\n").unwrap() + pos + 2;
    body[..end].to_vec()
}

fn cut(body: &[u8]) -> CutPoint {
    match decode(body).1 {
        Err(DecodeError::Incomplete { cut, .. }) => cut,
        other => panic!("expected Incomplete, got {other:?}"),
    }
}

#[test]
fn cut_streams_are_incomplete_with_the_cut_point() {
    let body = fixture("tool_call_single");
    assert_eq!(
        cut(&cut_after(&body, "arguments", 3)),
        CutPoint::InToolCall {
            name: "GetWeatherArgs".into()
        }
    );
    let body = fixture("tool_calls_parallel");
    assert_eq!(
        cut(&cut_after(&body, "\"index\":1,\"function\"", 0)),
        CutPoint::InToolCall {
            name: "get_stock_price".into()
        }
    );
    let body = fixture("text_basic");
    assert_eq!(cut(&cut_after(&body, "content", 5)), CutPoint::InText);
    assert_eq!(
        cut(&cut_after(&body, "content", 0)),
        CutPoint::BetweenBlocks
    );
    assert_eq!(cut(b""), CutPoint::BeforeStart);
    // A stream cut mid-frame loses that frame.
    assert_eq!(cut(&body[..40]), CutPoint::BeforeStart);
    // Azure's filter chunk alone does not start the answer.
    let body = fixture("reasoning_model_azure");
    assert_eq!(
        cut(&cut_after(&body, "prompt_filter_results", 0)),
        CutPoint::BeforeStart
    );
    // n = 3: choice 0 finished but choices 1 and 2 did not.
    let body = fixture("n3_multiple_choices");
    assert_eq!(
        cut(&cut_after(&body, "\"finish_reason\":\"stop\"", 0)),
        CutPoint::InText
    );
}

#[test]
fn finish_without_done_is_complete() {
    for name in ["text_basic", "tool_calls_parallel", "n3_multiple_choices"] {
        let body = fixture(name);
        let whole = decode_ok(&body);
        // Without [DONE].
        let text = String::from_utf8(body.clone()).unwrap();
        let no_done = text.replace("data: [DONE]\n\n", "");
        assert_eq!(decode_ok(no_done.as_bytes()), whole, "{name}");
        // Without the usage chunk either: cut right after the last finish chunk.
        let n = text.matches("\"finish_reason\":\"").count();
        let short = cut_after(&body, "\"finish_reason\":\"", n - 1);
        let events = decode_ok(&short);
        check_rules(&events);
        assert_eq!(usage_of(&events), Usage::default());
        assert_eq!(end_of(&events), end_of(&whole));
    }
}

const HEAD: &str = r#""id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m""#;

fn body(chunks: &[&str]) -> Vec<u8> {
    let mut s = String::new();
    for c in chunks {
        s.push_str("data: ");
        if c.starts_with('[') || c.starts_with("{\"error") {
            s.push_str(c);
        } else {
            s.push_str(&format!("{{{HEAD},{c}}}"));
        }
        s.push_str("\n\n");
    }
    s.into_bytes()
}

#[test]
fn error_chunk_is_upstream() {
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"content":"Hi"}}]"#,
        r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
    ]);
    let (events, r) = decode(&b);
    assert_eq!(events.len(), 3);
    match r {
        Err(DecodeError::Upstream { error, .. }) => {
            assert_eq!(error.code, "server_error");
            assert_eq!(error.message, "The server had an error");
            assert!(error.retryable);
        }
        other => panic!("{other:?}"),
    }
    // Code only, and not retryable.
    let b = body(&[r#"{"error":{"message":"no","code":"invalid_request_error"}}"#]);
    match decode(&b).1 {
        Err(DecodeError::Upstream { error, .. }) => {
            assert_eq!(error.code, "invalid_request_error");
            assert!(!error.retryable);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_json_is_malformed_at_its_line() {
    let mut b = fixture("text_basic");
    b.truncate(cut_after(&b, "content", 2).len());
    let good_lines = b.iter().filter(|c| **c == b'\n').count() as u64;
    b.extend_from_slice(b"data: {\"id\": oops}\n\n");
    match decode(&b).1 {
        Err(DecodeError::Malformed { line, reason, .. }) => {
            assert_eq!(line, good_lines + 1);
            assert!(reason.contains("invalid JSON"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Multi-line data: the line of the error inside the frame.
    let b = b"data: {\"id\":\"x\",\ndata: oops}\n\n";
    match decode(b).1 {
        Err(DecodeError::Malformed { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_without_data_and_empty_data_are_ignored() {
    let mut b = b": keep-alive\n\nevent: ping\n\ndata:\n\n".to_vec();
    b.extend(fixture("text_basic"));
    assert_eq!(decode_ok(&b), decode_ok(&fixture("text_basic")));
}

fn tool_ends(events: &[AgentEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallEnd {
                arguments,
                truncated,
                ..
            } => Some((arguments.clone(), *truncated)),
            _ => None,
        })
        .collect()
}

#[test]
fn tool_call_arguments_rules() {
    // Empty arguments become {} (streamed too, so that deltas add up to the end).
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"now","arguments":""}}]}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#,
        "[DONE]",
    ]);
    let events = decode_ok(&b);
    assert_eq!(tool_ends(&events), [("{}".to_owned(), false)]);
    assert_eq!(decode_ok(&encode(&events, true)), events);

    // finish "stop" after tool calls is normalized, provider reason kept.
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]"#,
        "[DONE]",
    ]);
    let events = decode_ok(&b);
    let end = end_of(&events);
    assert_eq!(end.reason, FinishReason::ToolCalls);
    assert_eq!(end.provider_reason.as_deref(), Some("stop"));

    // Invalid JSON with finish length: truncated.
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\":"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"length"}]"#,
        "[DONE]",
    ]);
    let events = decode_ok(&b);
    assert_eq!(tool_ends(&events), [("{\"a\":".to_owned(), true)]);
    assert_eq!(end_of(&events).reason, FinishReason::Length);
    assert_eq!(decode_ok(&encode(&events, true)), events);

    // Invalid JSON otherwise: malformed, naming the tool.
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"get_x","arguments":"{\"a\":"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#,
        "[DONE]",
    ]);
    match decode(&b).1 {
        Err(DecodeError::Malformed { reason, line, .. }) => {
            assert!(reason.contains("get_x"), "{reason}");
            assert_eq!(line, 5);
        }
        other => panic!("{other:?}"),
    }

    // A first fragment without a name.
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]"#,
    ]);
    assert!(matches!(decode(&b).1, Err(DecodeError::Malformed { .. })));
}

#[test]
fn parallel_calls_under_one_index_are_told_apart_by_id() {
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":1}"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","function":{"arguments":""}}]}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#,
        "[DONE]",
    ]);
    let events = decode_ok(&b);
    check_rules(&events);
    let m = Assembler::assemble(&events);
    assert_eq!(m.tool_calls(), [("a", "f", "{\"x\":1}"), ("b", "g", "{}")]);
    assert_eq!(decode_ok(&encode(&events, true)), events);
}

#[test]
fn strings_without_escapes_are_borrowed() {
    use std::borrow::Cow;
    let c: super::wire::Chunk<'_> =
        serde_json::from_str(r#"{"id":"x","model":"a\/b","choices":[]}"#).unwrap();
    assert!(matches!(c.id.unwrap().0, Cow::Borrowed("x")));
    assert!(matches!(c.model.unwrap().0, Cow::Owned(m) if m == "a/b"));
}

#[test]
fn reasoning_blocks_close_when_text_or_tools_start() {
    let b = body(&[
        r#""choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think"}}]"#,
        r#""choices":[{"index":0,"delta":{"reasoning":"more"}}]"#,
        r#""choices":[{"index":0,"delta":{"content":"Hi"}}]"#,
        r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]"#,
        r#""choices":[{"index":0,"delta":{"content":"again"}}]"#,
        r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#,
        "[DONE]",
    ]);
    let events = decode_ok(&b);
    check_rules(&events);
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            "stream.start",
            "block.start",
            "reasoning.delta",
            "reasoning.delta",
            "block.end",
            "block.start",
            "text.delta",
            "block.end",
            "tool_call.start",
            "tool_call.delta",
            "block.start",
            "text.delta",
            "tool_call.end",
            "block.end",
            "stream.end"
        ]
    );
    assert_eq!(decode_ok(&encode(&events, true)), events);
    let body = encode_response(Dialect::OpenAi, &Assembler::assemble(&events)).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "thinkmore"
    );
    assert_eq!(body["choices"][0]["message"]["content"], "Hiagain");
}

#[test]
fn cross_dialect_encoding_maps_reasons_and_drops_passthrough() {
    let mut events = decode_ok(&fixture("text_gpt4o_mini"));
    if let AgentEvent::StreamStart(s) = &mut events[0] {
        s.dialect = Dialect::Anthropic;
        s.created = None;
    }
    if let Some(AgentEvent::StreamEnd(end)) = events.last_mut() {
        end.reason = FinishReason::Refusal;
        end.provider_reason = Some("refusal".into());
    }
    let out = String::from_utf8(encode(&events, true)).unwrap();
    assert!(!out.contains("system_fingerprint"));
    assert!(!out.contains("service_tier"));
    assert!(out.contains("\"created\":0,"));
    assert!(out.contains("\"finish_reason\":\"content_filter\""));
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn encoder_writes_the_argument_suffix_only_end_knows() {
    let events = vec![
        AgentEvent::StreamStart(Box::new(StreamStart {
            id: "msg_1".into(),
            model: "claude".into(),
            dialect: Dialect::Anthropic,
            created: None,
            request_id: None,
            provider: None,
            extra: None,
        })),
        AgentEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "now".into(),
            choice: 0,
            extra: None,
        },
        AgentEvent::ToolCallEnd {
            index: 0,
            arguments: "{}".into(),
            truncated: false,
        },
        AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(10),
            cache_read_tokens: Some(4),
            ..Usage::default()
        })),
        AgentEvent::Usage(Box::new(Usage {
            output_tokens: Some(3),
            ..Usage::default()
        })),
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: FinishReason::ToolCalls,
            provider_reason: Some("tool_use".into()),
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })),
    ];
    let out = encode(&events, true);
    let back = decode_ok(&out);
    let m = Assembler::assemble(&back);
    assert_eq!(m.tool_calls(), [("toolu_1", "now", "{}")]);
    assert_eq!(end_of(&back).provider_reason.as_deref(), Some("tool_calls"));
    let u = usage_of(&back);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cache_read_tokens),
        (Some(10), Some(3), Some(4))
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":4}}"#), "{text}");
}

#[test]
fn error_event_is_written_and_ends_the_stream() {
    let mut events = decode_ok(&fixture("text_basic"));
    events.truncate(5);
    events.push(AgentEvent::Error(crate::event::ErrorInfo {
        code: "overloaded_error".into(),
        message: "busy".into(),
        retryable: true,
    }));
    events.push(AgentEvent::StreamEnd(Box::new(StreamEnd {
        reason: FinishReason::Error,
        provider_reason: None,
        stop_sequence: None,
        other_choices: Vec::new(),
        extra: None,
    })));
    let out = String::from_utf8(encode(&events, true)).unwrap();
    assert!(out.ends_with(
        "data: {\"error\":{\"message\":\"busy\",\"type\":\"overloaded_error\",\"code\":\"overloaded_error\"}}\n\n"
    ));
    assert!(!out.contains("[DONE]"));
    match decode(out.as_bytes()).1 {
        Err(DecodeError::Upstream { error, .. }) => {
            assert_eq!(error.code, "overloaded_error");
            assert!(error.retryable);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn response_bodies() {
    let m = Assembler::assemble(&decode_ok(&fixture("tool_calls_parallel")));
    let body = encode_response(Dialect::OpenAi, &m).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["system_fingerprint"], "fp_5050236cbd");
    assert_eq!(body["created"], 1727346178);
    let msg = &body["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], Value::Null);
    assert_eq!(msg["tool_calls"][1]["function"]["name"], "get_stock_price");
    assert_eq!(msg["tool_calls"][0]["type"], "function");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["total_tokens"], 209);
    // Typed view parses back.
    let typed: super::wire::ChatCompletion = serde_json::from_value(body).unwrap();
    assert_eq!(typed.choices.len(), 1);

    let m = Assembler::assemble(&decode_ok(&fixture("n3_multiple_choices")));
    let body = encode_response(Dialect::OpenAi, &m).unwrap();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "stop");
        let text = c["message"]["content"].as_str().unwrap();
        serde_json::from_str::<Value>(text).unwrap();
    }
}

#[test]
fn chunks_after_a_failover_name_the_model_that_answers() {
    let mut events = decode_ok(&fixture("text_basic"));
    let at = events
        .iter()
        .position(|e| matches!(e, AgentEvent::TextDelta { .. }))
        .unwrap();
    events.insert(
        at,
        AgentEvent::Failover {
            from: "openai/gpt-4o".into(),
            to: "anthropic/claude".into(),
            model: "claude-sonnet-4-5".into(),
            at_seq: at as u64 + 1,
            reason: "overloaded".into(),
            cause: crate::event::FailoverCause::Failure,
        },
    );
    let body = String::from_utf8(encode(&events, true)).unwrap();
    let models: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["model"].as_str().map(str::to_owned))
        .collect();
    let first = start_of(&events).model.clone();
    assert_eq!(models.first(), Some(&first));
    assert_eq!(models.last().map(String::as_str), Some("claude-sonnet-4-5"));
}
