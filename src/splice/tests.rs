//! The splicer over every recorded stream, broken at every event: the client's assembled
//! answer is the uninterrupted one, with no half tool call ever sent.

use std::path::Path;

use providers::assemble::{BlockContent, Message};
use providers::event::{BlockKind, ErrorInfo, FinishReason, StreamEnd, StreamStart};
use providers::{AgentEvent, Assembler, Dialect, StreamDecoder, Usage};

use super::*;

pub(super) fn fixtures() -> Vec<(String, Vec<AgentEvent>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out = Vec::new();
    for (dir, dialect) in [
        ("anthropic", Dialect::Anthropic),
        ("openai_chat", Dialect::OpenAi),
    ] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sse"))
            .collect();
        names.sort();
        for name in names {
            let body = std::fs::read(root.join(dir).join(&name)).unwrap();
            let (events, result) = StreamDecoder::decode_all(dialect, &body);
            result.unwrap();
            // Several choices never cross a seam (continuations are single-choice).
            let multi = events.iter().any(|e| {
                matches!(e, AgentEvent::BlockStart { choice, .. } | AgentEvent::ToolCallStart { choice, .. } if *choice > 0)
            });
            if !multi {
                out.push((format!("{dir}/{name}"), events));
            }
        }
    }
    out
}

/// What an ideal model asked to continue `prefix` sends: the rest of the text of `full`
/// (repeating `repeat` bytes of the sent tail first, as instruction-continued models do),
/// then every client tool call (a model regenerates those after the text), then the end.
fn continuation(full: &[AgentEvent], prefix: &str, repeat: usize) -> Vec<AgentEvent> {
    let whole = Assembler::assemble(full);
    let text = whole.text();
    let Some(start) = full.iter().find_map(|e| match e {
        AgentEvent::StreamStart(s) => Some(StreamStart::clone(s)),
        _ => None,
    }) else {
        return Vec::new();
    };
    let mut events = vec![AgentEvent::StreamStart(Box::new(StreamStart {
        id: "second".into(),
        ..start
    }))];
    let mut index = 0;
    let from = prefix.len().saturating_sub(repeat);
    let from = (0..=from)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    if text.len() > prefix.len() || repeat > 0 {
        events.push(AgentEvent::BlockStart {
            index,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        });
        // Two deltas, split mid-way, so the head buffer sees pieces.
        let rest = &text[from..];
        let mid = (0..=rest.len() / 2)
            .rev()
            .find(|i| rest.is_char_boundary(*i))
            .unwrap_or(0);
        for piece in [&rest[..mid], &rest[mid..]] {
            if !piece.is_empty() {
                events.push(AgentEvent::TextDelta {
                    index,
                    text: piece.into(),
                    extra: None,
                });
            }
        }
        events.push(AgentEvent::BlockEnd { index });
        index += 1;
    }
    for block in &whole.blocks {
        if let BlockContent::ToolCall {
            id,
            name,
            arguments,
            truncated,
        } = &block.content
        {
            events.push(AgentEvent::ToolCallStart {
                index,
                id: id.clone(),
                name: name.clone(),
                choice: 0,
                extra: None,
            });
            events.push(AgentEvent::ToolCallDelta {
                index,
                arguments: arguments.as_str().into(),
            });
            events.push(AgentEvent::ToolCallEnd {
                index,
                arguments: arguments.clone(),
                truncated: *truncated,
            });
            index += 1;
        }
    }
    events.push(AgentEvent::Usage(Box::new(Usage {
        input_tokens: Some(7),
        output_tokens: Some(3),
        ..Usage::default()
    })));
    if let Some(end) = &whole.end {
        events.push(AgentEvent::StreamEnd(Box::new(end.clone())));
    }
    events
}

/// A splicer fed the first `cut` events of one attempt, and what it gave the client.
fn sent_until(events: &[AgentEvent], cut: usize) -> (Splicer, Vec<AgentEvent>) {
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    for e in events[..cut].iter().cloned() {
        s.push(e, &mut out);
    }
    (s, out)
}

fn calls(m: &Message) -> Vec<(String, serde_json::Value)> {
    m.tool_calls()
        .into_iter()
        .map(|(_, n, a)| (n.to_owned(), serde_json::from_str(a).unwrap_or_default()))
        .collect()
}

#[test]
fn one_attempt_passes_everything_through() {
    for (name, events) in fixtures() {
        let mut s = Splicer::new(true);
        let mut out = Vec::new();
        for e in events.clone() {
            s.push(e, &mut out);
        }
        let (a, b) = (Assembler::assemble(&events), Assembler::assemble(&out));
        assert_eq!(a.text(), b.text(), "{name}");
        assert_eq!(calls(&a), calls(&b), "{name}");
        assert_eq!(a.reasoning(), b.reasoning(), "{name}");
        assert_eq!(a.end, b.end, "{name}");
        assert_eq!(a.usage.output_tokens, b.usage.output_tokens, "{name}");
        assert!(s.ended(), "{name}");
    }
}

#[test]
fn a_break_at_any_event_is_continued_without_gap_duplicate_or_half_call() {
    let mut cases = 0;
    for (name, events) in fixtures() {
        let whole = Assembler::assemble(&events);
        // Break before each event after stream.start (the decoder's last event is stream.end).
        for cut in 1..events.len() - 1 {
            for repeat in [0, 20] {
                let (mut s, mut out) = sent_until(&events, cut);
                // Nothing of a tool call that was still open may have reached the client.
                let sent = Assembler::assemble(&out);
                for b in &sent.blocks {
                    if matches!(b.content, BlockContent::ToolCall { .. }) {
                        assert!(b.closed, "{name} cut {cut}: half tool call sent");
                    }
                }
                let cont = s.interrupt(&mut out);
                s.seam(
                    Seam::Retry {
                        attempt: 1,
                        delay_ms: 10,
                        reason: "test".into(),
                    },
                    &mut out,
                );
                for e in continuation(&events, &cont.prefix, repeat) {
                    s.push(e, &mut out);
                }
                let got = Assembler::assemble(&out);
                assert_eq!(got.text(), whole.text(), "{name} cut {cut} repeat {repeat}");
                assert_eq!(calls(&got), calls(&whole), "{name} cut {cut}");
                assert_eq!(
                    got.end.as_ref().map(|e| e.reason),
                    whole.end.as_ref().map(|e| e.reason),
                    "{name} cut {cut}"
                );
                // One stream.start, one stream.end, and every block closed exactly once.
                let starts = out
                    .iter()
                    .filter(|e| matches!(e, AgentEvent::StreamStart(_)))
                    .count();
                assert_eq!(starts, 1, "{name} cut {cut}");
                assert!(got.blocks.iter().all(|b| b.closed), "{name} cut {cut}");
                let mut opened = std::collections::HashSet::new();
                for e in &out {
                    if let AgentEvent::BlockStart { index, .. }
                    | AgentEvent::ToolCallStart { index, .. } = e
                    {
                        assert!(
                            opened.insert(*index),
                            "{name} cut {cut}: block {index} reopened"
                        );
                    }
                }
                // Usage is summed: the continuation's 3 output tokens come on top.
                let first = Assembler::assemble(&events[..cut]).usage.output_tokens;
                assert_eq!(
                    got.usage.output_tokens,
                    Some(first.unwrap_or(0) + 3),
                    "{name} cut {cut}"
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 500, "only {cases} cases");
}

#[test]
fn failing_for_good_ends_with_an_error_not_a_clean_finish() {
    let (_, events) = fixtures()
        .into_iter()
        .find(|(n, _)| n.ends_with("tool_use_with_text.sse"))
        .unwrap();
    let cut = events
        .iter()
        .position(|e| matches!(e, AgentEvent::ToolCallDelta { .. }))
        .unwrap();
    let (mut s, mut out) = sent_until(&events, cut);
    s.fail(
        ErrorInfo {
            code: "overloaded_error".into(),
            message: "every route failed".into(),
            retryable: true,
        },
        &mut out,
    );
    let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
    assert_eq!(kinds[kinds.len() - 2..], ["error", "stream.end"]);
    assert!(matches!(
        out.last(),
        Some(AgentEvent::StreamEnd(end)) if end.reason == FinishReason::Error
    ));
    let m = Assembler::assemble(&out);
    assert!(m.tool_calls().is_empty(), "the half call was never sent");
    assert!(m.blocks.iter().all(|b| b.closed));
}

#[test]
fn the_failover_seam_names_the_new_model_and_its_seq() {
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    s.push(
        AgentEvent::StreamStart(Box::new(StreamStart {
            id: "a".into(),
            model: "claude".into(),
            dialect: Dialect::Anthropic,
            created: None,
            request_id: None,
            provider: None,
            extra: None,
        })),
        &mut out,
    );
    s.interrupt(&mut out);
    s.seam(
        Seam::Failover {
            from: "anthropic/claude".into(),
            to: "openai/gpt".into(),
            model: "gpt-4o".into(),
            reason: "overloaded".into(),
        },
        &mut out,
    );
    assert!(matches!(&out[1], AgentEvent::Failover { at_seq: 2, model, .. } if model == "gpt-4o"));
    assert_eq!(Assembler::assemble(&out).start.unwrap().model, "gpt-4o");
}

/// A continuation that breaks again while its head (the part that may repeat the sent text)
/// is still held: the held text was never sent, so it must not reach the client as new text.
/// Found by the chaos run (tests/chaos.rs): the replay's instruction continuation repeats up
/// to 24 bytes and sends its text in three pieces, so a short answer's first piece can be
/// all repeat; the link then reset before the next piece.
#[test]
fn a_second_break_inside_the_held_head_sends_no_repeat() {
    let start = AgentEvent::StreamStart(Box::new(StreamStart {
        id: "s".into(),
        model: "m".into(),
        dialect: Dialect::OpenAi,
        created: None,
        request_id: None,
        provider: None,
        extra: None,
    }));
    let text_block = |index| AgentEvent::BlockStart {
        index,
        block: BlockKind::Text,
        choice: 0,
        extra: None,
    };
    let delta = |index, text: &str| AgentEvent::TextDelta {
        index,
        text: text.into(),
        extra: None,
    };
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    s.push(start.clone(), &mut out);
    s.push(text_block(0), &mut out);
    s.push(delta(0, "The quick brown fox jumps"), &mut out);
    let cont = s.interrupt(&mut out);
    assert_eq!(cont.prefix, "The quick brown fox jumps");
    // The continuation restarts the sentence; it breaks after its first piece, which is a
    // part of that repeat only.
    s.push(start.clone(), &mut out);
    s.push(text_block(0), &mut out);
    s.push(delta(0, "quick brown fox"), &mut out);
    let cont = s.interrupt(&mut out);
    assert_eq!(cont.prefix, "The quick brown fox jumps");
    // The next continuation goes through.
    s.push(start, &mut out);
    s.push(text_block(0), &mut out);
    s.push(delta(0, "brown fox jumps over the lazy dog."), &mut out);
    s.push(AgentEvent::BlockEnd { index: 0 }, &mut out);
    s.push(
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: providers::FinishReason::Stop,
            provider_reason: None,
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })),
        &mut out,
    );
    assert_eq!(
        Assembler::assemble(&out).text(),
        "The quick brown fox jumps over the lazy dog."
    );
}

/// After a failover from an Anthropic route to an OpenAI one, the Anthropic client's
/// `stop_reason` is Anthropic's (`tool_use`), not OpenAI's verbatim `tool_calls`: the door
/// passes provider fields through only for the dialect of the first `stream.start`. Found by
/// the chaos run (tests/chaos.rs).
#[test]
fn a_failover_across_dialects_passes_no_foreign_provider_fields() {
    let start = |dialect| {
        AgentEvent::StreamStart(Box::new(StreamStart {
            id: "s".into(),
            model: "m".into(),
            dialect,
            created: None,
            request_id: None,
            provider: None,
            extra: None,
        }))
    };
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    s.push(start(Dialect::Anthropic), &mut out);
    s.push(
        AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Reasoning,
            choice: 0,
            extra: None,
        },
        &mut out,
    );
    let _ = s.interrupt(&mut out);
    s.push(start(Dialect::OpenAi), &mut out);
    let mut extra = providers::event::Extra::new();
    extra.insert("logprobs".into(), serde_json::Value::Null);
    s.push(
        AgentEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
            choice: 0,
            extra: Some(Box::new(extra.clone())),
        },
        &mut out,
    );
    s.push(
        AgentEvent::ToolCallEnd {
            index: 0,
            arguments: "{}".into(),
            truncated: false,
        },
        &mut out,
    );
    s.push(
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: providers::FinishReason::ToolCalls,
            provider_reason: Some("tool_calls".into()),
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: Some(extra),
        })),
        &mut out,
    );
    let end = out.iter().find_map(|e| match e {
        AgentEvent::StreamEnd(end) => Some(end.clone()),
        _ => None,
    });
    let end = end.unwrap();
    assert_eq!(end.provider_reason, None);
    assert_eq!(end.extra, None);
    assert!(
        out.iter()
            .all(|e| !matches!(e, AgentEvent::ToolCallStart { extra: Some(_), .. }))
    );
    let sse = providers::StreamEncoder::encode_all(
        Dialect::Anthropic,
        providers::EncodeOptions::default(),
        &out,
    )
    .unwrap();
    let sse = String::from_utf8(sse).unwrap();
    assert!(sse.contains("\"stop_reason\":\"tool_use\""), "{sse}");
}

#[test]
fn a_failover_to_another_dialect_drops_its_native_finish_reason() {
    let start = |dialect| {
        AgentEvent::StreamStart(Box::new(StreamStart {
            id: "a".into(),
            model: "m".into(),
            dialect,
            created: None,
            request_id: None,
            provider: None,
            extra: None,
        }))
    };
    let end = |reason: &str| {
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: FinishReason::ToolCalls,
            provider_reason: Some(reason.into()),
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        }))
    };
    // Same dialect again (a retry): the raw reason is the client's dialect's and stays.
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    s.push(start(Dialect::Anthropic), &mut out);
    s.interrupt(&mut out);
    s.push(start(Dialect::Anthropic), &mut out);
    s.push(end("tool_use"), &mut out);
    assert!(
        matches!(out.last(), Some(AgentEvent::StreamEnd(e)) if e.provider_reason.as_deref() == Some("tool_use"))
    );
    // Anthropic first, OpenAI continues: `tool_calls` must not reach an Anthropic client as
    // its stop_reason.
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    s.push(start(Dialect::Anthropic), &mut out);
    s.interrupt(&mut out);
    s.push(start(Dialect::OpenAi), &mut out);
    s.push(end("tool_calls"), &mut out);
    match out.last() {
        Some(AgentEvent::StreamEnd(e)) => {
            assert_eq!(e.provider_reason, None);
            assert_eq!(e.reason, FinishReason::ToolCalls);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_continuation_that_reasons_anyway_shows_the_client_no_second_reasoning() {
    let (_, events) = fixtures()
        .into_iter()
        .find(|(n, _)| n.ends_with("thinking_signature.sse"))
        .unwrap();
    let whole = Assembler::assemble(&events);
    // Break in the middle of the reasoning, before any text.
    let cut = events
        .iter()
        .rposition(|e| matches!(e, AgentEvent::ReasoningDelta { .. }))
        .unwrap();
    let (mut s, mut out) = sent_until(&events, cut);
    s.interrupt(&mut out);
    let sent_reasoning = Assembler::assemble(&out).reasoning();
    assert!(!sent_reasoning.is_empty());
    // The continuation thinks again from scratch, then answers.
    for e in events.iter().cloned() {
        s.push(e, &mut out);
    }
    let got = Assembler::assemble(&out);
    assert_eq!(got.reasoning(), sent_reasoning, "no second reasoning block");
    assert_eq!(got.text(), whole.text());
    assert!(got.blocks.iter().all(|b| b.closed));
}
