//! Generated cases for the splicer: tool calls that look alike, split over attempts.

use proptest::prelude::*;
use providers::event::{FinishReason, StreamEnd, StreamStart};
use providers::{AgentEvent, Assembler, Dialect, EncodeOptions, StreamDecoder, StreamEncoder};
use serde_json::Value;

use super::*;

/// Few names and arguments, so that equal calls are frequent; `{"a": 1}` and `{"a":1}` are
/// the same call written differently.
const NAMES: [&str; 2] = ["get_name", "lookup"];
const ARGUMENTS: [&str; 5] = ["{}", "", "{\"a\":1}", "{\"a\": 1}", "{\"b\":[1,2]}"];

fn start(dialect: Dialect) -> AgentEvent {
    AgentEvent::StreamStart(StreamStart {
        id: "s".into(),
        model: "m".into(),
        dialect,
        created: None,
        request_id: None,
        provider: None,
        extra: None,
    })
}

/// One attempt's whole answer: the calls `calls[from..]`, each in its own block, arguments
/// streamed in two pieces, then usage and the finish.
fn attempt(dialect: Dialect, calls: &[(usize, usize)], from: usize, tag: usize) -> Vec<AgentEvent> {
    let mut events = vec![start(dialect)];
    for (index, &(name, args)) in calls[from..].iter().enumerate() {
        let index = index as u32;
        let args = ARGUMENTS[args];
        events.push(AgentEvent::ToolCallStart {
            index,
            id: format!("call_{tag}_{index}"),
            name: NAMES[name].into(),
            choice: 0,
            extra: None,
        });
        let mid = args.len() / 2;
        for piece in [&args[..mid], &args[mid..]] {
            events.push(AgentEvent::ToolCallDelta {
                index,
                arguments: piece.into(),
            });
        }
        events.push(AgentEvent::ToolCallEnd {
            index,
            arguments: args.into(),
            truncated: false,
        });
    }
    events.push(AgentEvent::Usage(Usage {
        output_tokens: Some(1),
        ..Usage::default()
    }));
    events.push(AgentEvent::StreamEnd(StreamEnd {
        reason: FinishReason::ToolCalls,
        provider_reason: None,
        stop_sequence: None,
        other_choices: Vec::new(),
        extra: None,
    }));
    events
}

/// A call as a client compares it: name and JSON arguments (`""` is `{}` to every client).
fn key(name: &str, arguments: &str) -> (String, Value) {
    let args = serde_json::from_str(arguments).unwrap_or(Value::Object(Default::default()));
    (name.to_owned(), args)
}

fn expected(calls: &[(usize, usize)]) -> Vec<(String, Value)> {
    calls
        .iter()
        .map(|&(n, a)| key(NAMES[n], ARGUMENTS[a]))
        .collect()
}

/// The calls a client of each door gets from `out`: the Agent Event Stream itself, both
/// streaming doors (encoded, then decoded as the SDKs do) and both non-streaming bodies.
fn calls_at_every_door(out: &[AgentEvent]) -> Vec<(&'static str, Vec<(String, Value)>)> {
    let assembled = |events: &[AgentEvent]| {
        Assembler::assemble(events)
            .tool_calls()
            .into_iter()
            .map(|(_, n, a)| key(n, a))
            .collect::<Vec<_>>()
    };
    let mut doors = vec![("agent event stream", assembled(out))];
    for (door, dialect) in [
        ("openai", Dialect::OpenAi),
        ("anthropic", Dialect::Anthropic),
    ] {
        let sse = StreamEncoder::encode_all(dialect, EncodeOptions::default(), out).unwrap();
        let (decoded, result) = StreamDecoder::decode_all(dialect, &sse);
        result.unwrap();
        doors.push((door, assembled(&decoded)));
        let body = providers::encode_response(dialect, &Assembler::assemble(out)).unwrap();
        let calls = match dialect {
            Dialect::OpenAi => body["choices"][0]["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let f = &c["function"];
                    key(
                        f["name"].as_str().unwrap(),
                        f["arguments"].as_str().unwrap(),
                    )
                })
                .collect(),
            Dialect::Anthropic => body["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| (b["name"].as_str().unwrap().to_owned(), b["input"].clone()))
                .collect(),
        };
        doors.push((
            if door == "openai" {
                "openai body"
            } else {
                "anthropic body"
            },
            calls,
        ));
    }
    doors
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Calls of few names and arguments (so many are equal), answered over up to four
    /// attempts, each broken after a random number of its events. A continuation produces
    /// the answer's calls again, from the first or (when that is unambiguous) from a later
    /// one it still remembers. Every door gets exactly the original calls, in order, each
    /// whole.
    #[test]
    fn look_alike_calls_are_all_delivered_once_over_any_breaks(
        calls in prop::collection::vec((0..NAMES.len(), 0..ARGUMENTS.len()), 1..7),
        breaks in prop::collection::vec((0usize..40, 0usize..8), 0..4),
        dialect in prop_oneof![Just(Dialect::OpenAi), Just(Dialect::Anthropic)],
    ) {
        let want = expected(&calls);
        let mut s = Splicer::new(true);
        let mut out = Vec::new();
        // Calls the client has: a later attempt's repeat starts at most from there.
        let mut delivered = 0usize;
        let mut attempts = breaks.iter().map(|&(cut, from)| (Some(cut), from)).collect::<Vec<_>>();
        attempts.push((None, 0));
        for (n, (cut, from)) in attempts.into_iter().enumerate() {
            // Starting after call `from` is a repeat of the rest only if no call before it
            // equals a call the client still lacks (else that call would count as repeated).
            let mut from = from.min(delivered);
            if want[..from].iter().any(|k| want[delivered..].contains(k)) {
                from = 0;
            }
            let events = attempt(dialect, &calls, from, n);
            let cut = cut.map_or(events.len(), |c| c.min(events.len() - 1));
            let before = out.len();
            for e in events[..cut].iter().cloned() {
                s.push(e, &mut out);
            }
            delivered += out[before..]
                .iter()
                .filter(|e| matches!(e, AgentEvent::ToolCallEnd { .. }))
                .count();
            if cut < events.len() {
                let _ = s.interrupt(&mut out);
                s.seam(Seam::Retry { attempt: n as u32 + 1, delay_ms: 0, reason: "test".into() }, &mut out);
            }
        }
        // None half: every call the client was told about is closed, and none twice.
        let m = Assembler::assemble(&out);
        prop_assert!(m.blocks.iter().all(|b| b.closed));
        let starts = out.iter().filter(|e| matches!(e, AgentEvent::ToolCallStart { .. })).count();
        prop_assert_eq!(starts, want.len());
        for (door, got) in calls_at_every_door(&out) {
            prop_assert_eq!(&got, &want, "{}", door);
        }
    }
}

/// The case of the issue: two `tool_use` blocks of one tool with empty input in one answer.
#[test]
fn two_equal_calls_in_one_attempt_both_reach_the_client() {
    let calls = [(0, 0), (0, 0)];
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    for e in attempt(Dialect::Anthropic, &calls, 0, 0) {
        s.push(e, &mut out);
    }
    for (door, got) in calls_at_every_door(&out) {
        assert_eq!(got, expected(&calls), "{door}");
    }
}

/// Three equal calls sent, the continuation repeats one and adds another: four, not five
/// and not three.
#[test]
fn a_continuation_repeat_absorbs_one_delivered_call_only() {
    let calls = [(0, 0), (0, 0), (0, 0), (1, 2)];
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    let first = attempt(Dialect::OpenAi, &calls[..3], 0, 0);
    // Everything but the finish: three whole calls.
    for e in first[..first.len() - 2].iter().cloned() {
        s.push(e, &mut out);
    }
    let _ = s.interrupt(&mut out);
    // The continuation repeats the third call, then sends the fourth.
    for e in attempt(Dialect::OpenAi, &calls, 2, 1) {
        s.push(e, &mut out);
    }
    for (door, got) in calls_at_every_door(&out) {
        assert_eq!(got, expected(&calls), "{door}");
    }
}
