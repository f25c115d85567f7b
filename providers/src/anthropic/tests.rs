//! Fixture-driven tests of the Anthropic codec: decoding, same-dialect round trips, cut
//! streams, errors, and encoding a foreign (OpenAI-shaped) event stream.

use serde_json::{Value, json};

use crate::assemble::{Assembler, BlockContent, Message};
use crate::decode::StreamDecoder;
use crate::dialect::Dialect;
use crate::encode::{EncodeOptions, StreamEncoder, encode_response};
use crate::error::{CutPoint, DecodeError, EncodeError};
use crate::event::{AgentEvent, BlockKind, FinishReason, StreamEnd, StreamStart, Usage};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/anthropic/");

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sse"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "fixtures missing: {names:?}");
    names
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

fn decode(body: &[u8]) -> (Vec<AgentEvent>, Result<(), DecodeError>) {
    StreamDecoder::decode_all(Dialect::Anthropic, body)
}

fn decode_ok(body: &[u8]) -> Vec<AgentEvent> {
    let (events, r) = decode(body);
    r.unwrap();
    events
}

fn fixture(name: &str) -> (Vec<AgentEvent>, Message) {
    let events = decode_ok(&read(name));
    let m = Assembler::assemble(&events);
    (events, m)
}

fn encode(events: &[AgentEvent]) -> Vec<u8> {
    StreamEncoder::encode_all(Dialect::Anthropic, EncodeOptions::default(), events).unwrap()
}

fn end(m: &Message) -> &StreamEnd {
    m.end.as_ref().unwrap()
}

/// The usage event right after stream.start (message_start usage) and the merged total.
fn usages(events: &[AgentEvent]) -> Vec<&Usage> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(&**u),
            _ => None,
        })
        .collect()
}

/// Checks the rules every decoded stream must follow: start first, end last, every block
/// opened once and closed once.
fn assert_well_formed(events: &[AgentEvent]) {
    assert!(matches!(events.first(), Some(AgentEvent::StreamStart(_))));
    assert!(matches!(events.last(), Some(AgentEvent::StreamEnd(_))));
    let mut open = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in events {
        match e {
            AgentEvent::BlockStart { index, .. } | AgentEvent::ToolCallStart { index, .. } => {
                assert!(seen.insert(*index), "block {index} opened twice");
                open.insert(*index);
            }
            AgentEvent::BlockEnd { index } | AgentEvent::ToolCallEnd { index, .. } => {
                assert!(open.remove(index), "block {index} closed but not open");
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "blocks left open: {open:?}");
}

#[test]
fn every_fixture_decodes_well_formed() {
    for name in fixture_names() {
        let (events, r) = decode(&read(&name));
        assert_eq!(r, Ok(()), "{name}");
        assert_well_formed(&events);
        let start = match &events[0] {
            AgentEvent::StreamStart(s) => s,
            _ => unreachable!(),
        };
        assert!(start.id.starts_with("msg_"), "{name}");
        assert_eq!(start.dialect, Dialect::Anthropic);
        assert_eq!(start.created, None);
        assert!(matches!(events[1], AgentEvent::Usage(_)), "{name}");
    }
}

#[test]
fn text_basic() {
    let (events, m) = fixture("text_basic.sse");
    assert!(!m.text().is_empty());
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Heartbeat)));
    assert_eq!(end(&m).reason, FinishReason::Stop);
    assert_eq!(end(&m).provider_reason.as_deref(), Some("end_turn"));
    let u = usages(&events);
    assert_eq!(u[0].input_tokens, Some(12));
    assert_eq!(m.usage.output_tokens, Some(30));
}

#[test]
fn text_simple() {
    let (_, m) = fixture("text_simple.sse");
    assert!(!m.text().is_empty());
    assert_eq!(m.usage.input_tokens, Some(17));
    assert_eq!(m.usage.output_tokens, Some(10));
}

#[test]
fn tool_use_with_text() {
    let (_, m) = fixture("tool_use_with_text.sse");
    assert!(!m.text().is_empty());
    let calls = m.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "get_weather");
    let args: Value = serde_json::from_str(calls[0].2).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));
    assert_eq!(end(&m).reason, FinishReason::ToolCalls);
    assert_eq!(m.usage.output_tokens, Some(65));
    assert_eq!(m.usage.input_tokens, Some(377));
}

#[test]
fn tool_use_parallel_3() {
    let (_, m) = fixture("tool_use_parallel_3.sse");
    let calls = m.tool_calls();
    let queries: Vec<Value> = calls
        .iter()
        .map(|c| {
            assert_eq!(c.1, "searchDocs");
            serde_json::from_str::<Value>(c.2).unwrap()["query"].clone()
        })
        .collect();
    assert_eq!(queries, [json!("alpha"), json!("beta"), json!("gamma")]);
    assert_eq!(end(&m).provider_reason.as_deref(), Some("tool_use"));
}

#[test]
fn tool_use_only_and_pings() {
    let (events, m) = fixture("tool_use_only.sse");
    let calls = m.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "json");
    let args: Value = serde_json::from_str(calls[0].2).unwrap();
    assert_eq!(args["elements"][0]["temperature"], json!(58));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Heartbeat)));
}

#[test]
fn thinking_fixtures_have_reasoning_and_signature() {
    for name in [
        "thinking_signature.sse",
        "thinking_short.sse",
        "thinking_then_tool_use.sse",
    ] {
        let (_, m) = fixture(name);
        assert!(!m.reasoning().is_empty(), "{name}");
        let sig = m.blocks.iter().find_map(|b| match &b.content {
            BlockContent::Reasoning { signature, .. } => signature.clone(),
            _ => None,
        });
        assert!(sig.is_some_and(|s| s.len() > 20), "{name}");
    }
    let (_, m) = fixture("thinking_then_tool_use.sse");
    assert_eq!(
        m.tool_calls(),
        vec![("toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version", "{}")]
    );
    assert_eq!(m.usage.reasoning_tokens, Some(53));
    assert_eq!(end(&m).reason, FinishReason::ToolCalls);
    let (_, m) = fixture("thinking_short.sse");
    assert!(m.reasoning().starts_with("The user wants"));
}

#[test]
fn redacted_thinking() {
    let (events, m) = fixture("redacted_thinking.sse");
    let redacted = events
        .iter()
        .filter(|e| {
            matches!(e, AgentEvent::BlockStart { block: BlockKind::RedactedReasoning { data }, .. } if data.len() > 100)
        })
        .count();
    assert_eq!(redacted, 2);
    assert!(m.text().starts_with("I notice that you've sent"));
    assert_eq!(m.usage.output_tokens, Some(189));
}

#[test]
fn max_tokens_mid_tool_use_is_whole_and_truncated() {
    let (events, m) = fixture("max_tokens_mid_tool_use.sse");
    assert_eq!(end(&m).reason, FinishReason::Length);
    assert_eq!(end(&m).provider_reason.as_deref(), Some("max_tokens"));
    let trunc = events.iter().find_map(|e| match e {
        AgentEvent::ToolCallEnd {
            index,
            arguments,
            truncated,
        } => Some((*index, arguments.clone(), *truncated)),
        _ => None,
    });
    let (index, args, truncated) = trunc.unwrap();
    assert_eq!(index, 1);
    assert!(truncated);
    assert!(args.starts_with("{\"filename\": \"taxes.txt\""));
    assert!(args.ends_with("\n\"Filing taxes"));
    assert!(
        m.text()
            .starts_with("I'll create a comprehensive tax guide")
    );
    // The closing events come before the final usage and the end.
    let n = events.len();
    assert!(matches!(events[n - 3], AgentEvent::ToolCallEnd { .. }));
    assert!(matches!(events[n - 2], AgentEvent::Usage(_)));
}

#[test]
fn stop_sequence() {
    let (_, m) = fixture("stop_sequence.sse");
    let e = end(&m);
    assert_eq!(e.reason, FinishReason::Stop);
    assert_eq!(e.provider_reason.as_deref(), Some("stop_sequence"));
    assert_eq!(e.stop_sequence.as_deref(), Some("```"));
    assert!(m.text().contains("def pelican"));
}

#[test]
fn refusal_with_stop_details() {
    let (events, m) = fixture("refusal.sse");
    assert!(m.blocks.is_empty());
    let e = end(&m);
    assert_eq!(e.reason, FinishReason::Refusal);
    let details = &e.extra.as_ref().unwrap()["stop_details"];
    assert_eq!(details["category"], json!("cyber"));
    assert_eq!(m.usage.output_tokens, Some(5));
    // message_start usage extras survive; the null stop_details at start does not.
    let u = usages(&events)[0];
    assert_eq!(
        u.extra.as_ref().unwrap()["inference_geo"],
        json!("not_available")
    );
    match &events[0] {
        AgentEvent::StreamStart(s) => assert_eq!(s.extra, None),
        _ => unreachable!(),
    }
}

#[test]
fn usage_cache_read_is_normalized() {
    let (events, m) = fixture("usage_cache_read_max_tokens.sse");
    let first = usages(&events)[0];
    assert_eq!(first.input_tokens, Some(3 + 18639));
    assert_eq!(first.cache_read_tokens, Some(18639));
    assert_eq!(first.cache_write_tokens, Some(0));
    assert_eq!(m.usage.input_tokens, Some(18642));
    assert_eq!(m.usage.output_tokens, Some(1));
    assert_eq!(end(&m).reason, FinishReason::Length);
    assert_eq!(m.text(), "OK");
}

#[test]
fn web_search_fixtures_keep_native_blocks() {
    let (events, m) = fixture("web_search_citations.sse");
    let natives: Vec<&str> = m
        .blocks
        .iter()
        .filter_map(|b| match &b.content {
            BlockContent::Native { block, .. } => block["type"].as_str(),
            _ => None,
        })
        .collect();
    assert_eq!(natives, ["server_tool_use", "web_search_tool_result"]);
    let query: String = m
        .blocks
        .iter()
        .find_map(|b| match &b.content {
            BlockContent::Native { deltas, .. } if !deltas.is_empty() => Some(
                deltas
                    .iter()
                    .map(|d| d["partial_json"].as_str().unwrap().to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&query).unwrap(),
        json!({"query": "tech news today September 26 2025"})
    );
    let citations = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::NativeDelta { delta, .. } if delta["type"] == "citations_delta"))
        .count();
    assert_eq!(citations, 14);
    assert!(m.tool_calls().is_empty());
    assert!(m.text().contains("Apple Ginza"));
    assert_eq!(m.usage.input_tokens, Some(15665));

    let (_, m) = fixture("pause_turn_web_search_long.sse");
    assert_eq!(end(&m).reason, FinishReason::PauseTurn);
    let servers = m
        .blocks
        .iter()
        .filter(|b| matches!(&b.content, BlockContent::Native { block, .. } if block["type"] == "server_tool_use"))
        .count();
    assert_eq!(servers, 11);
    assert_eq!(m.usage.reasoning_tokens, Some(261));
    assert_eq!(m.usage.input_tokens, Some(404500));
    assert!(!m.reasoning().is_empty());
}

#[test]
fn byte_by_byte_feeding_gives_the_same_events() {
    for name in [
        "thinking_short.sse",
        "web_search_citations.sse",
        "max_tokens_mid_tool_use.sse",
    ] {
        let body = read(name);
        let whole = decode_ok(&body);
        let mut d = StreamDecoder::new(Dialect::Anthropic);
        let mut events = Vec::new();
        for b in &body {
            d.feed(std::slice::from_ref(b), &mut events).unwrap();
        }
        d.finish(&mut events).unwrap();
        assert_eq!(events, whole, "{name}");
    }
}

#[test]
fn same_dialect_round_trip_is_exact() {
    for name in fixture_names() {
        let events = decode_ok(&read(&name));
        let body = encode(&events);
        let (again, r) = decode(&body);
        assert_eq!(r, Ok(()), "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(again, events, "{name}");
        // And once more: the encoding is stable.
        assert_eq!(encode(&again), body, "{name}");
    }
}

#[test]
fn round_trip_keeps_wire_details() {
    let events = decode_ok(&read("web_search_citations.sse"));
    let body = String::from_utf8(encode(&events)).unwrap();
    assert!(body.contains(r#""content_block":{"type":"text","text":"","citations":[]}"#));
    assert!(body.contains(r#""delta":{"type":"citations_delta""#));
    assert!(body.contains(r#""server_tool_use":{"web_search_requests":1"#));
    let events = decode_ok(&read("usage_cache_read_max_tokens.sse"));
    let body = String::from_utf8(encode(&events)).unwrap();
    assert!(body.contains(r#""usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":18639,"output_tokens":1"#));
    let events = decode_ok(&read("max_tokens_mid_tool_use.sse"));
    let body = String::from_utf8(encode(&events)).unwrap();
    // No content_block_stop for the truncated call, as Anthropic does.
    assert_eq!(body.matches("event: content_block_stop").count(), 1);
}

/// Cuts `body` right before the `n`th (0-based) frame whose data contains `needle`.
fn cut_before(body: &[u8], needle: &str, n: usize) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    let mut at = 0;
    let mut seen = 0;
    for frame in text.split_inclusive("\n\n") {
        if frame.contains(needle) {
            if seen == n {
                return body[..at].to_vec();
            }
            seen += 1;
        }
        at += frame.len();
    }
    panic!("{needle} #{n} not found");
}

fn cut_point(body: &[u8]) -> CutPoint {
    match decode(body).1 {
        Err(DecodeError::Incomplete { dialect, cut }) => {
            assert_eq!(dialect, Dialect::Anthropic);
            cut
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
}

#[test]
fn truncated_bodies_are_incomplete_with_the_cut_point() {
    assert_eq!(cut_point(b""), CutPoint::BeforeStart);
    let body = read("tool_use_with_text.sse");
    assert_eq!(
        cut_point(&cut_before(&body, "content_block_start", 0)),
        CutPoint::BetweenBlocks
    );
    assert_eq!(
        cut_point(&cut_before(&body, "text_delta", 1)),
        CutPoint::InText
    );
    assert_eq!(
        cut_point(&cut_before(&body, "input_json_delta", 2)),
        CutPoint::InToolCall {
            name: "get_weather".into()
        }
    );
    assert_eq!(
        cut_point(&cut_before(&body, "message_delta", 0)),
        CutPoint::BetweenBlocks
    );
    let body = read("thinking_short.sse");
    assert_eq!(
        cut_point(&cut_before(&body, "thinking_delta", 2)),
        CutPoint::InReasoning
    );
    let body = read("web_search_citations.sse");
    assert_eq!(
        cut_point(&cut_before(&body, "input_json_delta", 2)),
        CutPoint::InNative
    );
    // A frame cut mid-line is discarded, like a missing one.
    let body = read("text_basic.sse");
    let cut = cut_before(&body, "message_delta", 0);
    let mut partial = cut.clone();
    partial.extend_from_slice(
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_re",
    );
    assert_eq!(cut_point(&partial), CutPoint::BetweenBlocks);
}

#[test]
fn message_delta_without_message_stop_is_complete() {
    let body = read("tool_use_with_text.sse");
    let cut = cut_before(&body, "message_stop", 0);
    let (events, r) = decode(&cut);
    assert_eq!(r, Ok(()));
    assert_eq!(events, decode_ok(&body));
    // Also when the open tool call was cut by max_tokens.
    let body = read("max_tokens_mid_tool_use.sse");
    let (events, r) = decode(&cut_before(&body, "message_stop", 0));
    assert_eq!(r, Ok(()));
    assert_eq!(events, decode_ok(&body));
}

#[test]
fn mid_stream_error_is_upstream_and_retryable() {
    let body = read("text_basic.sse");
    let mut cut = cut_before(&body, "text_delta", 2);
    cut.extend_from_slice(
        b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    );
    let (events, r) = decode(&cut);
    match r {
        Err(DecodeError::Upstream { dialect, error }) => {
            assert_eq!(dialect, Dialect::Anthropic);
            assert_eq!(error.code, "overloaded_error");
            assert_eq!(error.message, "Overloaded");
            assert!(error.retryable);
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert!(!Assembler::assemble(&events).text().is_empty());
    // An error without the event name is recognized by its type.
    let (_, r) = decode(b"data: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"no\"}}\n\n");
    match r {
        Err(DecodeError::Upstream { error, .. }) => assert!(!error.retryable),
        other => panic!("expected Upstream, got {other:?}"),
    }
}

#[test]
fn bad_json_is_malformed_at_its_line() {
    let body = read("text_basic.sse");
    let text = String::from_utf8(body).unwrap();
    let target = text.lines().position(|l| l.contains("text_delta")).unwrap();
    let broken: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == target {
                format!("{}\n", &l[..l.len() - 5])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let (_, r) = decode(broken.as_bytes());
    match r {
        Err(DecodeError::Malformed { line, reason, .. }) => {
            // The error names the broken `data:` line itself (1-based), not the `event:` line.
            assert_eq!(line, target as u64 + 1);
            assert!(reason.contains("invalid JSON"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn protocol_violations_are_malformed() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n";
    let cases = [
        // Delta for a block that never opened.
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":4,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
        // A tool call closed with invalid JSON without a token limit.
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        // A text delta in a tool call.
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
    ];
    for case in cases {
        let body = format!("{start}{case}");
        let (_, r) = decode(body.as_bytes());
        assert!(
            matches!(r, Err(DecodeError::Malformed { .. })),
            "{case}: {r:?}"
        );
    }
}

#[test]
fn unknown_events_and_deltas_pass_through() {
    let body = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"container\":{\"id\":\"c\"},\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"future_delta\",\"x\":1}}\n\n",
        "event: future_event\ndata: {\"type\":\"future_event\",\"y\":[1]}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"brand_new\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let events = decode_ok(body.as_bytes());
    match &events[0] {
        AgentEvent::StreamStart(s) => {
            assert_eq!(s.extra.as_ref().unwrap()["container"], json!({"id": "c"}));
        }
        _ => unreachable!(),
    }
    assert!(events.contains(&AgentEvent::NativeDelta {
        index: 0,
        delta: json!({"type": "future_delta", "x": 1})
    }));
    assert!(events.contains(&AgentEvent::ProviderEvent {
        name: Some("future_event".into()),
        data: json!({"type": "future_event", "y": [1]})
    }));
    let m = Assembler::assemble(&events);
    assert_eq!(end(&m).reason, FinishReason::Stop);
    assert_eq!(end(&m).provider_reason.as_deref(), Some("brand_new"));
    // Same-dialect: all of it comes back.
    assert_eq!(decode_ok(&encode(&events)), events);
    // Other dialect: the provider event and the unknown delta are dropped.
    let mut foreign = events.clone();
    if let AgentEvent::StreamStart(s) = &mut foreign[0] {
        s.dialect = Dialect::OpenAi;
    }
    let body = String::from_utf8(encode(&foreign)).unwrap();
    assert!(!body.contains("future"));
    assert!(!body.contains("container"));
    assert!(body.contains("\"stop_reason\":\"end_turn\""));
}

fn start(dialect: Dialect) -> AgentEvent {
    AgentEvent::StreamStart(Box::new(StreamStart {
        id: "chatcmpl-1".into(),
        model: "gpt-4o".into(),
        dialect,
        created: Some(1),
        request_id: None,
        provider: None,
        extra: None,
    }))
}

fn stream_end(reason: FinishReason) -> AgentEvent {
    AgentEvent::StreamEnd(Box::new(StreamEnd {
        reason,
        provider_reason: Some("tool_calls".into()),
        stop_sequence: None,
        other_choices: Vec::new(),
        extra: None,
    }))
}

/// Events shaped like an OpenAI upstream: text, then two tool calls that open (and
/// interleave) before the text closes, usage only at the end.
fn openai_style_events() -> Vec<AgentEvent> {
    let tstart = |index: u32, id: &str, name: &str| AgentEvent::ToolCallStart {
        index,
        id: id.into(),
        name: name.into(),
        choice: 0,
        extra: None,
    };
    let tdelta = |index: u32, a: &str| AgentEvent::ToolCallDelta {
        index,
        arguments: a.into(),
    };
    let text = |t: &str| AgentEvent::TextDelta {
        index: 0,
        text: t.into(),
        extra: None,
    };
    vec![
        start(Dialect::OpenAi),
        AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        },
        text("Let me "),
        tstart(1, "call_a", "get_weather"),
        tdelta(1, "{\"city\":"),
        tstart(2, "call_b", "get_time"),
        text("check."),
        tdelta(2, "{\"tz\":\"CET\"}"),
        tdelta(1, "\"Paris\"}"),
        AgentEvent::BlockEnd { index: 0 },
        AgentEvent::ToolCallEnd {
            index: 1,
            arguments: "{\"city\":\"Paris\"}".into(),
            truncated: false,
        },
        AgentEvent::ToolCallEnd {
            index: 2,
            arguments: "{\"tz\":\"CET\"}".into(),
            truncated: false,
        },
        AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(100),
            output_tokens: Some(20),
            cache_read_tokens: Some(80),
            reasoning_tokens: Some(5),
            ..Usage::default()
        })),
        stream_end(FinishReason::ToolCalls),
    ]
}

/// Parses an SSE body into (event name, data) pairs.
fn frames(body: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(body)
        .unwrap()
        .split_terminator("\n\n")
        .map(|f| {
            let mut lines = f.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn openai_style_events_encode_to_a_sequential_stream() {
    let body = encode(&openai_style_events());
    let fs = frames(&body);
    // Every frame's event name is its data type.
    for (name, data) in &fs {
        assert_eq!(data["type"], json!(name));
    }
    // One block open at a time, indices 0, 1, 2 in write order.
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (name, data) in &fs {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None);
                assert_eq!(data["index"], json!(next));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(next, 3);
    let names: Vec<&str> = fs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(fs[0].1["message"]["id"], json!("chatcmpl-1"));
    assert_eq!(
        fs[0].1["message"]["usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
    let delta = &fs[fs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], json!("tool_use"));
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 20, "cache_read_input_tokens": 80, "output_tokens": 20,
               "output_tokens_details": {"thinking_tokens": 5}})
    );

    // Decoded back, it is the same answer.
    let events = decode_ok(&body);
    assert_well_formed(&events);
    let m = Assembler::assemble(&events);
    assert_eq!(m.text(), "Let me check.");
    assert_eq!(
        m.tool_calls(),
        vec![
            ("call_a", "get_weather", "{\"city\":\"Paris\"}"),
            ("call_b", "get_time", "{\"tz\":\"CET\"}")
        ]
    );
    assert_eq!(m.usage.input_tokens, Some(100));
    assert_eq!(m.usage.cache_read_tokens, Some(80));
    assert_eq!(end(&m).reason, FinishReason::ToolCalls);
}

#[test]
fn encoder_fills_in_final_arguments_and_drops_foreign_secrets() {
    let events = vec![
        start(Dialect::OpenAi),
        AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Reasoning,
            choice: 0,
            extra: None,
        },
        AgentEvent::ReasoningDelta {
            index: 0,
            text: "hmm".into(),
        },
        AgentEvent::ReasoningSignature {
            index: 0,
            signature: "sig".into(),
        },
        AgentEvent::BlockEnd { index: 0 },
        AgentEvent::BlockStart {
            index: 1,
            block: BlockKind::Native {
                block: json!({"type": "server_tool_use"}),
            },
            choice: 0,
            extra: None,
        },
        AgentEvent::NativeDelta {
            index: 1,
            delta: json!({"type": "input_json_delta", "partial_json": "{}"}),
        },
        AgentEvent::BlockEnd { index: 1 },
        AgentEvent::ToolCallStart {
            index: 2,
            id: "c1".into(),
            name: "f".into(),
            choice: 0,
            extra: None,
        },
        AgentEvent::ToolCallEnd {
            index: 2,
            arguments: "{\"x\":1}".into(),
            truncated: false,
        },
        AgentEvent::ToolCallStart {
            index: 3,
            id: "c2".into(),
            name: "g".into(),
            choice: 0,
            extra: None,
        },
        AgentEvent::ToolCallEnd {
            index: 3,
            arguments: "{}".into(),
            truncated: false,
        },
        stream_end(FinishReason::ToolCalls),
    ];
    let body = encode(&events);
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(!text.contains("sig\""));
    assert!(!text.contains("server_tool_use"));
    let m = Assembler::assemble(&decode_ok(&body));
    assert_eq!(m.reasoning(), "hmm");
    assert_eq!(
        m.tool_calls(),
        vec![("c1", "f", "{\"x\":1}"), ("c2", "g", "{}")]
    );
    // Wire indices skip nothing for the dropped native block.
    let idx: Vec<u32> = m.blocks.iter().map(|b| b.index).collect();
    assert_eq!(idx, [0, 1, 2]);
}

#[test]
fn encoder_errors_and_edges() {
    // Choices beyond 0 cannot be expressed.
    let mut enc = StreamEncoder::new(Dialect::Anthropic, EncodeOptions::default());
    let mut out = Vec::new();
    enc.event(&start(Dialect::OpenAi), &mut out).unwrap();
    let r = enc.event(
        &AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Text,
            choice: 1,
            extra: None,
        },
        &mut out,
    );
    assert!(matches!(r, Err(EncodeError::Unsupported { .. })));
    // A delta for a block that never opened.
    let r = enc.event(
        &AgentEvent::TextDelta {
            index: 9,
            text: "x".into(),
            extra: None,
        },
        &mut out,
    );
    assert!(matches!(r, Err(EncodeError::OutOfOrder { .. })));

    // error -> event: error, and nothing after it.
    let events = vec![
        start(Dialect::Anthropic),
        AgentEvent::Heartbeat,
        AgentEvent::Error(crate::event::ErrorInfo {
            code: "overloaded_error".into(),
            message: "Overloaded".into(),
            retryable: true,
        }),
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: FinishReason::Error,
            provider_reason: None,
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })),
    ];
    let fs = frames(&encode(&events));
    let names: Vec<&str> = fs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "ping", "error"]);
    assert_eq!(
        fs[2].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let (_, r) = decode(&encode(&events));
    assert!(matches!(r, Err(DecodeError::Upstream { .. })));
}

#[test]
fn stop_reasons_map_across_dialects() {
    let cases = [
        (FinishReason::Stop, None, "end_turn"),
        (FinishReason::Stop, Some("###"), "stop_sequence"),
        (FinishReason::Length, None, "max_tokens"),
        (FinishReason::ToolCalls, None, "tool_use"),
        (FinishReason::ContentFilter, None, "refusal"),
        (FinishReason::Refusal, None, "refusal"),
        (FinishReason::PauseTurn, None, "pause_turn"),
    ];
    for (reason, seq, want) in cases {
        let events = vec![
            start(Dialect::OpenAi),
            AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason,
                provider_reason: Some("whatever".into()),
                stop_sequence: seq.map(str::to_owned),
                other_choices: Vec::new(),
                extra: None,
            })),
        ];
        let fs = frames(&encode(&events));
        let delta = &fs[fs.len() - 2].1["delta"];
        assert_eq!(delta["stop_reason"], json!(want), "{reason:?}");
        assert_eq!(delta["stop_sequence"], json!(seq));
    }
}

#[test]
fn response_bodies() {
    let (_, m) = fixture("web_search_citations.sse");
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    assert_eq!(body["type"], json!("message"));
    assert_eq!(body["role"], json!("assistant"));
    assert_eq!(body["id"], json!("msg_01LHpEgU4KbfgXGVi3UtHQY1"));
    assert_eq!(body["stop_reason"], json!("end_turn"));
    let content = body["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], json!("server_tool_use"));
    assert_eq!(
        content[0]["input"],
        json!({"query": "tech news today September 26 2025"})
    );
    assert_eq!(content[1]["type"], json!("web_search_tool_result"));
    assert_eq!(content[3]["type"], json!("text"));
    let cites = content[3]["citations"].as_array().unwrap();
    assert_eq!(cites.len(), 3);
    assert_eq!(cites[0]["type"], json!("web_search_result_location"));
    assert_eq!(body["usage"]["input_tokens"], json!(15665));
    assert_eq!(
        body["usage"]["server_tool_use"]["web_search_requests"],
        json!(1)
    );
    // The body reads back as the wire type.
    let typed: super::wire::ResponseBody = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(typed.content.len(), content.len());

    let (_, m) = fixture("thinking_then_tool_use.sse");
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    let content = body["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], json!("thinking"));
    assert!(content[0]["signature"].as_str().unwrap().len() > 20);
    assert_eq!(
        content[1],
        json!({"type": "tool_use", "id": "toolu_01825dXWLSoJwCst1qTsiWdb", "name": "fixed_version", "input": {},
               "caller": {"type": "direct"}}),
        "the call's header fields (caller) survive in a whole body, as in a stream"
    );
    assert_eq!(body["stop_reason"], json!("tool_use"));

    let (_, m) = fixture("usage_cache_read_max_tokens.sse");
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    assert_eq!(body["usage"]["input_tokens"], json!(3));
    assert_eq!(body["usage"]["cache_read_input_tokens"], json!(18639));
    assert_eq!(body["stop_reason"], json!("max_tokens"));

    let (_, m) = fixture("refusal.sse");
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    assert_eq!(body["stop_reason"], json!("refusal"));
    assert_eq!(body["stop_details"]["category"], json!("cyber"));
    assert_eq!(body["content"], json!([]));

    // From another dialect: no signatures, no native blocks, mapped reasons.
    let m = Assembler::assemble(&openai_style_events());
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    assert_eq!(body["stop_reason"], json!("tool_use"));
    let content = body["content"].as_array().unwrap();
    assert_eq!(content[0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(content[1]["input"], json!({"city": "Paris"}));
    assert!(
        content[1].get("caller").is_none(),
        "no Anthropic fields from elsewhere"
    );
    assert_eq!(body["usage"]["input_tokens"], json!(20));

    let (_, m) = fixture("max_tokens_mid_tool_use.sse");
    let body = encode_response(Dialect::Anthropic, &m).unwrap();
    assert_eq!(body["content"][1]["input"], json!({}));
}

#[test]
fn unknown_delta_in_a_tool_call_round_trips() {
    let body = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"future_delta\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    );
    let events = decode_ok(body.as_bytes());
    assert_eq!(decode_ok(&encode(&events)), events);
    assert_eq!(
        Assembler::assemble(&events).tool_calls(),
        vec![("t", "f", "{\"a\":1}")]
    );
}
