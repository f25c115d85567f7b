//! Fixture-driven tests of the OpenAI Responses codec. Every `fixtures/openai_responses/*.sse`
//! is a case: a new recording is a new test with no new code.

use serde_json::Value;

use super::{Decoder, Encoder, response_body};
use crate::assemble::{Assembler, Message};
use crate::codec::{EncodeOptions, EventEncoder};
use crate::codec::{FrameDecoder, FrameError};
use crate::decode::StreamDecoder;
use crate::dialect::Dialect;
use crate::encode::StreamEncoder;
use crate::error::{CutPoint, UpstreamError};
use crate::event::{AgentEvent, BlockKind, ErrorInfo, FinishReason, StreamEnd, StreamStart, Usage};
use crate::seeded::Rng;
use crate::sse::{SseError, SseFrame, SseParser};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai_responses/");

/// How decoding a body went, short of a dialect (the dialect registry is not in yet).
#[derive(Debug, PartialEq)]
enum Outcome {
    Whole,
    Cut(CutPoint),
    Upstream(UpstreamError),
    Malformed(String),
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sse"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    names
}

/// A recording may hold several responses in a row (an agent loop); each is one body.
fn bodies(name: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(format!("{DIR}{name}")).unwrap();
    let mut out: Vec<String> = Vec::new();
    for block in text.split_inclusive("\n\n") {
        if block.starts_with("event: response.created") || out.is_empty() {
            out.push(String::new());
        }
        out.last_mut().unwrap().push_str(block);
    }
    out.into_iter().map(String::into_bytes).collect()
}

enum Stop {
    Frame(FrameError),
    Sse(SseError),
}

impl From<SseError> for Stop {
    fn from(e: SseError) -> Self {
        Stop::Sse(e)
    }
}

/// Feeds `body` in pieces of the given sizes (cycled) through the SSE parser and decoder.
fn decode_split(body: &[u8], sizes: &[usize]) -> (Vec<AgentEvent>, Outcome) {
    let mut parser = SseParser::new();
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let r = parser.feed(piece, &mut |frame: &SseFrame<'_>| {
            decoder.frame(frame, &mut events).map_err(Stop::Frame)
        });
        match r {
            Ok(()) => {}
            Err(Stop::Frame(FrameError::Upstream(e))) => return (events, Outcome::Upstream(e)),
            Err(Stop::Frame(FrameError::Json(e))) => {
                return (events, Outcome::Malformed(e.to_string()));
            }
            Err(Stop::Frame(FrameError::Protocol(e))) => return (events, Outcome::Malformed(e)),
            Err(Stop::Sse(e)) => return (events, Outcome::Malformed(e.to_string())),
        }
    }
    parser.finish();
    match decoder.eof(&mut events) {
        Ok(()) => (events, Outcome::Whole),
        Err(cut) => (events, Outcome::Cut(cut)),
    }
}

fn decode(body: &[u8]) -> (Vec<AgentEvent>, Outcome) {
    decode_split(body, &[usize::MAX])
}

fn decode_ok(body: &[u8]) -> Vec<AgentEvent> {
    let (events, r) = decode(body);
    assert_eq!(r, Outcome::Whole, "{}", String::from_utf8_lossy(body));
    events
}

fn encode(events: &[AgentEvent]) -> Vec<u8> {
    let mut e = Encoder::new(EncodeOptions::default());
    let mut out = Vec::new();
    for event in events {
        e.event(event, &mut out).unwrap();
    }
    out
}

fn end_of(events: &[AgentEvent]) -> &StreamEnd {
    match events.last() {
        Some(AgentEvent::StreamEnd(end)) => end,
        other => panic!("last event is not stream.end: {other:?}"),
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

/// The structural rules every decoded stream follows (as for the other dialects).
fn check_rules(events: &[AgentEvent], whole: bool) {
    assert!(matches!(events.first(), Some(AgentEvent::StreamStart(_))));
    let mut open: Vec<u32> = Vec::new();
    // Open text, refusal and reasoning blocks: these are sequential (tool calls and
    // provider-run items may interleave, as Responses allows).
    let mut sequential: Vec<u32> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    let mut args: Vec<(u32, String)> = Vec::new();
    for e in events {
        match e {
            AgentEvent::BlockStart { index, .. } | AgentEvent::ToolCallStart { index, .. } => {
                assert_eq!(*index, seen.len() as u32, "indices not dense in order");
                seen.push(*index);
                sequential.retain(|i| open.contains(i));
                assert!(
                    sequential.is_empty(),
                    "block {index} opened while {sequential:?} open"
                );
                if let AgentEvent::BlockStart {
                    block: BlockKind::Text | BlockKind::Refusal | BlockKind::Reasoning,
                    ..
                } = e
                {
                    sequential.push(*index);
                }
                open.push(*index);
            }
            AgentEvent::TextDelta { index, .. }
            | AgentEvent::RefusalDelta { index, .. }
            | AgentEvent::ReasoningDelta { index, .. }
            | AgentEvent::ReasoningSignature { index, .. }
            | AgentEvent::NativeDelta { index, .. } => {
                assert!(open.contains(index), "delta for closed block {index}");
            }
            AgentEvent::ToolCallDelta { index, arguments } => {
                assert!(open.contains(index), "delta for closed block {index}");
                match args.iter_mut().find(|(i, _)| i == index) {
                    Some((_, a)) => a.push_str(arguments),
                    None => args.push((*index, arguments.to_string())),
                }
            }
            AgentEvent::BlockEnd { index } => {
                let pos = open.iter().position(|i| i == index).unwrap();
                open.remove(pos);
            }
            AgentEvent::ToolCallEnd {
                index,
                arguments,
                truncated,
            } => {
                let pos = open.iter().position(|i| i == index).unwrap();
                open.remove(pos);
                let streamed = args.iter().find(|(i, _)| i == index).map(|(_, a)| a);
                assert_eq!(streamed, Some(arguments), "deltas add up to the end");
                assert_eq!(
                    serde_json::from_str::<Value>(arguments).is_ok(),
                    !truncated,
                    "{arguments}"
                );
            }
            _ => {}
        }
    }
    if whole {
        assert!(open.is_empty(), "blocks left open: {open:?}");
        end_of(events);
    }
}

#[test]
fn every_recorded_response_decodes_and_follows_the_rules() {
    let mut responses = 0;
    for name in fixture_names() {
        for body in bodies(&name) {
            responses += 1;
            let (events, outcome) = decode(&body);
            match &outcome {
                Outcome::Whole => check_rules(&events, true),
                Outcome::Upstream(_) if name.starts_with("error_") => check_rules(&events, false),
                other => panic!("{name}: {other:?}"),
            }
            // Any split of the body gives the same events and the same outcome.
            let mut seed: u64 = 0x5eed ^ body.len() as u64;
            for _ in 0..4 {
                let sizes: Vec<usize> = (0..16)
                    .map(|_| {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        1 + ((seed >> 33) % 97) as usize
                    })
                    .collect();
                let (split, again) = decode_split(&body, &sizes);
                assert_eq!(split, events, "{name} split {sizes:?}");
                assert_eq!(again, outcome, "{name}");
            }
        }
    }
    assert!(
        responses > fixture_names().len(),
        "agent-loop recordings split"
    );
}

#[test]
fn recordings_decode_to_what_they_say() {
    let text = decode_ok(&std::fs::read(format!("{DIR}text_basic.sse")).unwrap());
    let m = Assembler::assemble(&text);
    assert_eq!(m.text(), "The capital of France is Paris.");
    assert_eq!(end_of(&text).reason, FinishReason::Stop);
    assert_eq!(end_of(&text).provider_reason.as_deref(), Some("completed"));
    let u = usage_of(&text);
    assert_eq!((u.input_tokens, u.output_tokens), (Some(278), Some(9)));
    let s = m.start.unwrap();
    assert_eq!(s.model, "gpt-4o-2024-08-06");
    assert_eq!(s.created, Some(1_743_082_658));

    let call =
        decode_ok(&std::fs::read(format!("{DIR}usage_reasoning_function_call.sse")).unwrap());
    let m = Assembler::assemble(&call);
    assert_eq!(
        m.tool_calls(),
        vec![(
            "call_CWXgs68YprAjp6t0371hiPOI",
            "final_result",
            "{\"result\":6666}"
        )]
    );
    assert_eq!(end_of(&call).reason, FinishReason::ToolCalls);
    let u = usage_of(&call);
    assert_eq!(u.reasoning_tokens, Some(448));
    assert_eq!(u.cache_read_tokens, Some(0));
    assert!(call.iter().any(|e| matches!(e,
        AgentEvent::ReasoningSignature { signature, .. } if signature.starts_with("gAAAA"))));

    let cut = decode_ok(&std::fs::read(format!("{DIR}incomplete_max_output_tokens.sse")).unwrap());
    assert_eq!(end_of(&cut).reason, FinishReason::Length);
    assert_eq!(
        end_of(&cut).provider_reason.as_deref(),
        Some("max_output_tokens")
    );
    assert_eq!(usage_of(&cut).reasoning_tokens, Some(1));

    let (_, quota) = decode(&std::fs::read(format!("{DIR}error_insufficient_quota.sse")).unwrap());
    let Outcome::Upstream(e) = quota else {
        panic!("{quota:?}")
    };
    assert_eq!(e.code, "insufficient_quota");
    assert!(!e.retryable);

    let long = decode_ok(&std::fs::read(format!("{DIR}reasoning_summary_long.sse")).unwrap());
    let m = Assembler::assemble(&long);
    // Four summary parts, one reasoning block, parts apart by blank lines.
    assert_eq!(
        m.reasoning().matches("\n\n**").count(),
        3,
        "{}",
        m.reasoning()
    );
    assert!(!m.text().is_empty());

    let web = decode_ok(&std::fs::read(format!("{DIR}web_search_annotations.sse")).unwrap());
    let natives: Vec<&Value> = web
        .iter()
        .filter_map(|e| match e {
            AgentEvent::BlockStart {
                block: BlockKind::Native { block },
                ..
            } => Some(block),
            _ => None,
        })
        .collect();
    assert_eq!(natives.len(), 2);
    assert!(natives.iter().all(|b| b["type"] == "web_search_call"));
    let annotation = web.iter().find_map(|e| match e {
        AgentEvent::NativeDelta { delta, .. } if delta.get("annotation").is_some() => Some(delta),
        _ => None,
    });
    assert_eq!(annotation.unwrap()["annotation"]["type"], "url_citation");
}

/// The checks a Responses client's accumulator relies on, over one encoded body: events
/// numbered 0, 1, 2, ...; each item added is done before the end (unless the answer failed),
/// indices consistent; exactly one terminal event, last, matching the finish.
fn check_encoded(body: &[u8], finish: FinishReason) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap();
    let frames: Vec<Value> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut lines = f.lines();
            let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], event);
            data
        })
        .collect();
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(f["sequence_number"], n as u64, "{f}");
    }
    let mut added: Vec<(u64, String)> = Vec::new();
    let mut done: Vec<u64> = Vec::new();
    for f in &frames {
        match f["type"].as_str().unwrap() {
            "response.output_item.added" => {
                let i = f["output_index"].as_u64().unwrap();
                assert_eq!(i, added.len() as u64, "output_index in order");
                added.push((i, f["item"]["id"].as_str().unwrap().to_owned()));
            }
            "response.output_item.done" => {
                let i = f["output_index"].as_u64().unwrap();
                assert_eq!(added[i as usize].1, f["item"]["id"], "same item id");
                assert!(!done.contains(&i), "item {i} done twice");
                done.push(i);
            }
            _ => {
                if let Some(i) = f.get("output_index").and_then(Value::as_u64) {
                    assert!((i as usize) < added.len() && !done.contains(&i), "{f}");
                    assert_eq!(added[i as usize].1, f["item_id"], "{f}");
                }
            }
        }
    }
    let terminal: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .filter(|t| {
            matches!(
                *t,
                "response.completed" | "response.incomplete" | "response.failed"
            )
        })
        .collect();
    let want = match finish {
        FinishReason::Length | FinishReason::ContentFilter => "response.incomplete",
        FinishReason::Error => "response.failed",
        _ => "response.completed",
    };
    assert_eq!(terminal, vec![want]);
    let last = frames.last().unwrap();
    assert_eq!(last["type"], want);
    if want != "response.failed" {
        assert_eq!(done.len(), added.len(), "every item added is done");
        assert_eq!(
            last["response"]["output"].as_array().unwrap().len(),
            added.len()
        );
    } else {
        assert_eq!(frames[frames.len() - 2]["type"], "error");
    }
    frames
}

#[test]
fn decode_encode_decode_round_trips_every_recording() {
    for name in fixture_names() {
        for body in bodies(&name) {
            let (events, outcome) = decode(&body);
            let mut events = events;
            if let Outcome::Upstream(e) = &outcome {
                events.extend(AgentEvent::terminal_failure(ErrorInfo {
                    code: e.code.clone(),
                    message: e.message.clone(),
                    retryable: e.retryable,
                }));
            }
            let encoded = encode(&events);
            check_encoded(&encoded, end_of(&events).reason);
            let (again, r) = decode(&encoded);
            match outcome {
                Outcome::Whole => {
                    assert_eq!(r, Outcome::Whole, "{name}");
                    assert_eq!(again, events, "{name}");
                }
                Outcome::Upstream(e) => {
                    assert_eq!(r, Outcome::Upstream(e), "{name}");
                    assert_eq!(again, events[..events.len() - 2], "{name}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

/// What any dialect must carry across: text, tool calls, finish, usage.
#[derive(Debug, PartialEq)]
struct Gist {
    text: String,
    calls: Vec<(String, String, String)>,
    finish: FinishReason,
    input: Option<u64>,
    output: Option<u64>,
}

fn gist(events: &[AgentEvent]) -> Gist {
    let m = Assembler::assemble(events);
    let calls = m
        .tool_calls()
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
        .collect();
    let u = usage_of(events);
    Gist {
        text: m.text(),
        calls,
        finish: end_of(events).reason,
        input: u.input_tokens,
        output: u.output_tokens,
    }
}

#[test]
fn recordings_cross_to_chat_and_anthropic_and_back() {
    for name in fixture_names() {
        for body in bodies(&name) {
            let (events, outcome) = decode(&body);
            if outcome != Outcome::Whole {
                continue;
            }
            let want = gist(&events);
            for door in [Dialect::OpenAi, Dialect::Anthropic] {
                let body = StreamEncoder::encode_all(
                    door,
                    EncodeOptions {
                        include_usage: true,
                    },
                    &events,
                )
                .unwrap();
                let (back, r) = StreamDecoder::decode_all(door, &body);
                r.unwrap_or_else(|e| panic!("{name} via {door}: {e}"));
                assert_eq!(gist(&back), want, "{name} via {door}");
            }
        }
    }
}

fn other_fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/../fixtures/{dir}/", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sse"))
        .map(|n| (n.clone(), std::fs::read(format!("{dir}{n}")).unwrap()))
        .collect();
    out.sort();
    out
}

/// Chat and Anthropic recordings (thinking with signatures, refusals, parallel tool calls,
/// server tools) encode into a Responses stream that decodes back to the same answer.
#[test]
fn chat_and_anthropic_recordings_encode_as_responses() {
    for (dialect, dir) in [
        (Dialect::OpenAi, "openai_chat"),
        (Dialect::Anthropic, "anthropic"),
    ] {
        for (name, body) in other_fixtures(dir) {
            let (events, r) = StreamDecoder::decode_all(dialect, &body);
            if r.is_err() {
                continue;
            }
            if events.iter().any(|e| matches!(e, AgentEvent::BlockStart { choice, .. } | AgentEvent::ToolCallStart { choice, .. } if *choice > 0)) {
                // Several choices: Responses has one answer per request.
                let mut e = Encoder::new(EncodeOptions::default());
                let mut out = Vec::new();
                let refused = events.iter().try_for_each(|ev| e.event(ev, &mut out));
                assert!(refused.is_err(), "{name}");
                continue;
            }
            let encoded = encode(&events);
            let finish = end_of(&events).reason;
            let frames = check_encoded(&encoded, finish);
            // The non-streaming body is the stream's final response.
            let whole = response_body(&Assembler::assemble(&events)).unwrap();
            assert_eq!(&whole, &frames.last().unwrap()["response"], "{dir}/{name}");
            let back = decode_ok(&encoded);
            check_rules(&back, true);
            let (want, got) = (gist(&events), gist(&back));
            assert_eq!(got.text, want.text, "{dir}/{name}");
            assert_eq!(got.calls, want.calls, "{dir}/{name}");
            let refusal_block = events.iter().any(|e| e.kind() == "refusal.delta");
            let finish_back = match finish {
                // Responses says `completed` for these; the decoder reads them from content:
                // an Anthropic refusal is plain text, a paused server-tool loop just ends.
                FinishReason::PauseTurn => FinishReason::Stop,
                FinishReason::Refusal if !refusal_block => FinishReason::Stop,
                f => f,
            };
            assert_eq!(got.finish, finish_back, "{dir}/{name}");
            assert_eq!(
                (got.input, got.output),
                (want.input.or(Some(0)), want.output.or(Some(0))),
                "{dir}/{name}"
            );
            let m = Assembler::assemble(&back);
            assert_eq!(
                m.reasoning(),
                Assembler::assemble(&events).reasoning(),
                "{dir}/{name}"
            );
            // Another provider's signature never reaches a Responses client.
            assert!(
                !back.iter().any(|e| e.kind() == "reasoning.signature"),
                "{dir}/{name}"
            );
        }
    }
}

/// The non-streaming body says what the stream's terminal event says.
#[test]
fn non_streaming_body_agrees_with_the_stream() {
    for name in fixture_names() {
        for body in bodies(&name) {
            let (events, outcome) = decode(&body);
            if outcome != Outcome::Whole {
                continue;
            }
            let frames = check_encoded(&encode(&events), end_of(&events).reason);
            let streamed = &frames.last().unwrap()["response"];
            let message: Message = Assembler::assemble(&events);
            let whole = response_body(&message).unwrap();
            assert_eq!(&whole, streamed, "{name}");
            // And with what the provider itself reported in its final response.
            let text = String::from_utf8(body.clone()).unwrap();
            let last = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .next_back()
                .unwrap();
            let original: Value = serde_json::from_str(last).unwrap();
            let theirs = original["response"]["output"].as_array();
            let Some(theirs) = theirs.filter(|o| !o.is_empty()) else {
                continue;
            };
            let ours = whole["output"].as_array().unwrap();
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for (a, b) in ours.iter().zip(theirs) {
                for key in ["id", "type", "call_id", "name", "arguments"] {
                    assert_eq!(a.get(key), b.get(key), "{name} {key}");
                }
                // OpenAI encrypts the reasoning again for the final response: present in
                // both, not byte-equal.
                let sealed = |v: &Value| v.get("encrypted_content").is_some();
                assert_eq!(sealed(a), sealed(b), "{name}");
                let parts = |v: &Value| -> Vec<Vec<Value>> {
                    let keys = ["type", "text", "annotations", "refusal"];
                    let content = v["content"].as_array().cloned().unwrap_or_default();
                    content
                        .iter()
                        .map(|p| keys.iter().map(|k| p[k].clone()).collect())
                        .collect()
                };
                assert_eq!(parts(a), parts(b), "{name}");
            }
            assert_eq!(whole["usage"], original["response"]["usage"], "{name}");
        }
    }
}

/// Text with spaces, newlines, quotes, backslashes, braces and multi-byte characters.
fn text(rng: &mut Rng) -> String {
    rng.pieces(&["a", " ", "é", "\n", "\"", "\\", "日本", "{"], 1, 6, "")
}

/// A random but well-formed event stream from any source: blocks of every kind, usage, and
/// every way of ending (each finish, an error after a whole block, an error inside one).
fn random_stream(rng: &mut Rng, source: Dialect) -> (Vec<AgentEvent>, FinishReason) {
    let mut events = vec![AgentEvent::StreamStart(Box::new(StreamStart {
        id: format!("resp_{}", rng.below(1000)),
        model: "m".into(),
        dialect: source,
        created: Some(1 + rng.below(1 << 30)),
        request_id: None,
        provider: None,
        extra: None,
    }))];
    let blocks = rng.below(6) as u32;
    let cut_inside = rng.below(5) == 0;
    let mut has_call = false;
    for index in 0..blocks {
        let last = index + 1 == blocks;
        match rng.below(5) {
            0 | 1 => {
                let refusal = rng.below(4) == 0;
                events.push(AgentEvent::BlockStart {
                    index,
                    block: if refusal {
                        BlockKind::Refusal
                    } else {
                        BlockKind::Text
                    },
                    choice: 0,
                    extra: None,
                });
                for _ in 0..1 + rng.below(4) {
                    let text = text(rng);
                    events.push(if refusal {
                        AgentEvent::RefusalDelta {
                            index,
                            text: text.into(),
                        }
                    } else {
                        AgentEvent::TextDelta {
                            index,
                            text: text.into(),
                            extra: None,
                        }
                    });
                }
                if !(last && cut_inside) {
                    events.push(AgentEvent::BlockEnd { index });
                }
            }
            2 => {
                events.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::Reasoning,
                    choice: 0,
                    extra: None,
                });
                for _ in 0..rng.below(4) {
                    let text = text(rng);
                    events.push(AgentEvent::ReasoningDelta {
                        index,
                        text: text.into(),
                    });
                }
                if rng.below(2) == 0 {
                    events.push(AgentEvent::ReasoningSignature {
                        index,
                        signature: "sig".into(),
                    });
                }
                if !(last && cut_inside) {
                    events.push(AgentEvent::BlockEnd { index });
                }
            }
            3 => {
                has_call = true;
                events.push(AgentEvent::ToolCallStart {
                    index,
                    id: format!("call_{index}"),
                    name: format!("tool_{}", rng.below(3)),
                    choice: 0,
                    extra: None,
                });
                let args = serde_json::json!({"q": text(rng), "n": rng.below(100)}).to_string();
                let mut rest = args.as_str();
                while !rest.is_empty() {
                    let mut n = (1 + rng.below(8) as usize).min(rest.len());
                    while !rest.is_char_boundary(n) {
                        n += 1;
                    }
                    let (piece, tail) = rest.split_at(n);
                    events.push(AgentEvent::ToolCallDelta {
                        index,
                        arguments: piece.into(),
                    });
                    rest = tail;
                }
                if !(last && cut_inside) {
                    events.push(AgentEvent::ToolCallEnd {
                        index,
                        arguments: args,
                        truncated: false,
                    });
                }
            }
            _ => {
                events.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::Native {
                        block: serde_json::json!({
                            "id": format!("ws_{index}"),
                            "type": "web_search_call",
                            "status": "in_progress",
                        }),
                    },
                    choice: 0,
                    extra: None,
                });
                events.push(AgentEvent::NativeDelta {
                    index,
                    delta: serde_json::json!({
                        "type": "response.web_search_call.searching",
                        "item_id": format!("ws_{index}"),
                        "output_index": 0,
                    }),
                });
                if !(last && cut_inside) {
                    events.push(AgentEvent::BlockEnd { index });
                }
            }
        }
    }
    if rng.below(3) > 0 {
        events.push(AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(rng.below(500)),
            output_tokens: Some(rng.below(500)),
            ..Usage::default()
        })));
    }
    let error = ErrorInfo {
        code: "overloaded_error".into(),
        message: "busy".into(),
        retryable: true,
    };
    if cut_inside && blocks > 0 {
        events.extend(AgentEvent::terminal_failure(error));
        return (events, FinishReason::Error);
    }
    let reason = match rng.below(6) {
        0 => FinishReason::Length,
        1 => FinishReason::ContentFilter,
        2 => FinishReason::Error,
        _ if has_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    };
    if reason == FinishReason::Error {
        events.extend(AgentEvent::terminal_failure(error));
    } else {
        events.push(AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason,
            provider_reason: None,
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })));
    }
    (events, reason)
}

/// Random streams from any source encode into a valid Responses stream (sequence numbers
/// 0, 1, 2, ...; every item added is done; the terminal event matches the finish, never
/// `response.completed` for a failed or cut answer) that decodes back to the same answer.
#[test]
fn random_streams_encode_to_valid_responses_streams() {
    let mut rng = Rng(0x0dd5_eed5);
    for case in 0..600 {
        let source = if case % 2 == 0 {
            super::DIALECT
        } else {
            Dialect::Anthropic
        };
        let (events, finish) = random_stream(&mut rng, source);
        let body = encode(&events);
        let frames = check_encoded(&body, finish);
        let whole = response_body(&Assembler::assemble(&events)).unwrap();
        if finish == FinishReason::Error {
            // Items cut mid-way are `in_progress` in the stream; the verdict is the same.
            assert_eq!(whole["status"], "failed", "case {case}");
            assert_eq!(whole["error"]["code"], "overloaded_error", "case {case}");
        } else {
            assert_eq!(&whole, &frames.last().unwrap()["response"], "case {case}");
        }
        let (back, outcome) = decode(&body);
        if finish == FinishReason::Error {
            let Outcome::Upstream(e) = outcome else {
                panic!("case {case}: {outcome:?}")
            };
            assert_eq!(e.code, "overloaded_error");
            assert!(e.retryable);
            continue;
        }
        assert_eq!(outcome, Outcome::Whole, "case {case}");
        check_rules(&back, true);
        let (want, got) = (gist(&events), gist(&back));
        assert_eq!(got.text, want.text, "case {case}");
        assert_eq!(got.calls, want.calls, "case {case}");
        let refused = events.iter().any(|e| e.kind() == "refusal.delta");
        let want_finish = match finish {
            FinishReason::Stop if refused => FinishReason::Refusal,
            FinishReason::Stop if !want.calls.is_empty() => FinishReason::ToolCalls,
            f => f,
        };
        assert_eq!(got.finish, want_finish, "case {case}");
        assert_eq!(
            Assembler::assemble(&back).reasoning(),
            Assembler::assemble(&events).reasoning(),
            "case {case}"
        );
    }
}

/// Whatever bytes arrive, the decoder returns (never panics) and its events stay within
/// the rules as far as they go.
#[test]
fn hostile_bodies_never_panic() {
    let body = std::fs::read(format!("{DIR}web_search_annotations.sse")).unwrap();
    let mut rng = Rng(0xbad_5eed);
    for _ in 0..300 {
        let mut mutated = body.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(mutated.len() as u64) as usize;
            match rng.below(3) {
                0 => mutated[at] = b"{}[]\":,\n0x"[rng.below(10) as usize],
                1 => {
                    mutated.remove(at);
                }
                _ => mutated.insert(at, b'\n'),
            }
        }
        let (events, _) = decode(&mutated);
        if !events.is_empty() {
            check_rules(&events, false);
        }
    }
    // Indices and counts from the stream are bounded.
    let mut flood = String::new();
    flood.push_str("data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n");
    for i in 0..5000 {
        flood.push_str(&format!(
            "data: {{\"type\":\"response.output_item.added\",\"output_index\":{i},\"item\":{{\"type\":\"message\",\"id\":\"m{i}\"}}}}\n\n"
        ));
    }
    let (_, outcome) = decode(flood.as_bytes());
    assert!(
        matches!(&outcome, Outcome::Malformed(r) if r.contains("output items")),
        "{outcome:?}"
    );
    let big = "data: {\"type\":\"response.output_text.delta\",\"output_index\":4294967296,\"delta\":\"x\"}\n\n";
    let (_, outcome) = decode(big.as_bytes());
    assert!(matches!(outcome, Outcome::Malformed(_)), "{outcome:?}");
}

/// Responses may interleave items (parallel calls whose arguments alternate): each call
/// keeps all its arguments, and a delta after an item is done is refused.
#[test]
fn interleaved_calls_keep_their_arguments() {
    let frame = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
    let call = |i: u32| {
        serde_json::json!({"type": "response.output_item.added", "output_index": i,
            "item": {"type": "function_call", "id": format!("fc_{i}"), "call_id": format!("call_{i}"),
                     "name": "f", "arguments": ""}})
    };
    let delta = |i: u32, d: &str| serde_json::json!({"type": "response.function_call_arguments.delta", "output_index": i, "delta": d});
    let done = |i: u32, a: &str| {
        serde_json::json!({"type": "response.output_item.done", "output_index": i,
            "item": {"type": "function_call", "id": format!("fc_{i}"), "call_id": format!("call_{i}"),
                     "name": "f", "arguments": a, "status": "completed"}})
    };
    let mut body = String::new();
    body.push_str(&frame(
        serde_json::json!({"type": "response.created", "response": {"id": "r", "model": "m"}}),
    ));
    body.push_str(&frame(call(0)));
    body.push_str(&frame(delta(0, "{\"a\":")));
    body.push_str(&frame(call(1)));
    body.push_str(&frame(delta(1, "{\"b\":")));
    body.push_str(&frame(delta(0, "1}")));
    body.push_str(&frame(delta(1, "2}")));
    body.push_str(&frame(done(0, "{\"a\":1}")));
    body.push_str(&frame(done(1, "{\"b\":2}")));
    let mut late = body.clone();
    body.push_str(&frame(
        serde_json::json!({"type": "response.completed", "response": {"status": "completed"}}),
    ));
    let events = decode_ok(body.as_bytes());
    check_rules(&events, true);
    assert_eq!(
        Assembler::assemble(&events).tool_calls(),
        vec![("call_0", "f", "{\"a\":1}"), ("call_1", "f", "{\"b\":2}")]
    );
    assert_eq!(end_of(&events).reason, FinishReason::ToolCalls);
    // Encoded, the interleaving survives and decodes the same.
    let again = decode_ok(&encode(&events));
    assert_eq!(again, events);
    late.push_str(&frame(delta(0, "x")));
    let (_, outcome) = decode(late.as_bytes());
    assert!(
        matches!(&outcome, Outcome::Malformed(r) if r.contains("finished")),
        "{outcome:?}"
    );
}

/// Text that arrives only with its `.done` event (no deltas, or fewer than the whole) is
/// still the answer; text the deltas already gave is not repeated.
#[test]
fn done_events_fill_in_what_deltas_missed() {
    let body = std::fs::read_to_string(format!("{DIR}text_basic.sse")).unwrap();
    let whole = Assembler::assemble(&decode_ok(body.as_bytes())).text();
    // Drop every delta after the first two.
    let mut kept = 0;
    let thinned: String = body
        .split_inclusive("\n\n")
        .filter(|f| {
            if f.contains("\"response.output_text.delta\"") {
                kept += 1;
                kept <= 2
            } else {
                true
            }
        })
        .collect();
    let events = decode_ok(thinned.as_bytes());
    check_rules(&events, true);
    assert_eq!(Assembler::assemble(&events).text(), whole);
    let deltas = events.iter().filter(|e| e.kind() == "text.delta").count();
    assert_eq!(deltas, 3, "two deltas and the rest");
}

/// Event types the recordings lack, written as the API reference shows them: raw reasoning
/// text, a refusal, a code interpreter call with its code deltas, a content-filter stop, and
/// a `response.failed` with no `error` event before it.
#[test]
fn event_types_beyond_the_recordings() {
    use serde_json::json;
    let body = |events: &[Value]| -> Vec<u8> {
        let mut out = String::new();
        for (n, e) in events.iter().enumerate() {
            let mut e = e.clone();
            e["sequence_number"] = json!(n);
            out.push_str(&format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap()
            ));
        }
        out.into_bytes()
    };
    let created = json!({"type": "response.created", "response": {"id": "resp_1", "model": "gpt-oss", "created_at": 5}});
    let events = [
        created.clone(),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        json!({"type": "response.reasoning_text.delta", "output_index": 0, "item_id": "rs_1", "content_index": 0, "delta": "think"}),
        json!({"type": "response.reasoning_text.done", "output_index": 0, "item_id": "rs_1", "content_index": 0, "text": "think"}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "code_interpreter_call", "id": "ci_1", "status": "in_progress", "code": ""}}),
        json!({"type": "response.code_interpreter_call_code.delta", "output_index": 1, "item_id": "ci_1", "delta": "print(1)"}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(1)"}}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "output_index": 2, "item_id": "msg_1", "content_index": 0, "part": {"type": "refusal", "refusal": ""}}),
        json!({"type": "response.refusal.delta", "output_index": 2, "item_id": "msg_1", "content_index": 0, "delta": "no"}),
        json!({"type": "response.refusal.done", "output_index": 2, "item_id": "msg_1", "content_index": 0, "refusal": "no"}),
        json!({"type": "response.content_part.done", "output_index": 2, "item_id": "msg_1", "content_index": 0, "part": {"type": "refusal", "refusal": "no"}}),
        json!({"type": "response.output_item.done", "output_index": 2, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}}),
        json!({"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 12}}}),
    ];
    let decoded = decode_ok(&body(&events));
    check_rules(&decoded, true);
    let m = Assembler::assemble(&decoded);
    assert_eq!(m.reasoning(), "think");
    assert_eq!(end_of(&decoded).reason, FinishReason::Refusal);
    let u = usage_of(&decoded);
    assert_eq!(
        (u.cache_read_tokens, u.reasoning_tokens),
        (Some(4), Some(1))
    );
    let native = decoded.iter().find_map(|e| match e {
        AgentEvent::BlockStart {
            block: BlockKind::Native { block },
            ..
        } => Some(block),
        _ => None,
    });
    assert_eq!(native.unwrap()["type"], "code_interpreter_call");
    let code = decoded.iter().any(|e| {
        matches!(e,
        AgentEvent::NativeDelta { delta, .. } if delta["delta"] == "print(1)")
    });
    assert!(code);
    // Same dialect, the code interpreter call goes back verbatim.
    let again = decode_ok(&encode(&decoded));
    assert_eq!(again, decoded);

    let filtered = [
        created.clone(),
        json!({"type": "response.incomplete", "response": {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}}}),
    ];
    let decoded = decode_ok(&body(&filtered));
    assert_eq!(end_of(&decoded).reason, FinishReason::ContentFilter);
    check_encoded(&encode(&decoded), FinishReason::ContentFilter);

    let failed = [
        created,
        json!({"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}}}),
    ];
    let (_, outcome) = decode(&body(&failed));
    let Outcome::Upstream(e) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (e.code.as_str(), e.message.as_str(), e.retryable),
        ("server_error", "boom", true)
    );
}
