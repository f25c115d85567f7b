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
    AgentEvent::StreamStart(Box::new(StreamStart {
        id: "s".into(),
        model: "m".into(),
        dialect,
        created: None,
        request_id: None,
        provider: None,
        extra: None,
    }))
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
    events.push(AgentEvent::Usage(Box::new(Usage {
        output_tokens: Some(1),
        ..Usage::default()
    })));
    events.push(AgentEvent::StreamEnd(Box::new(StreamEnd {
        reason: FinishReason::ToolCalls,
        provider_reason: None,
        stop_sequence: None,
        other_choices: Vec::new(),
        extra: None,
    })));
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
/// streaming doors (encoded, then decoded as the SDKs do) and every non-streaming body.
fn calls_at_every_door(out: &[AgentEvent]) -> Vec<(&'static str, Vec<(String, Value)>)> {
    let assembled = |events: &[AgentEvent]| {
        Assembler::assemble(events)
            .tool_calls()
            .into_iter()
            .map(|(_, n, a)| key(n, a))
            .collect::<Vec<_>>()
    };
    let mut doors = vec![("agent event stream", assembled(out))];
    for (door, body_door, dialect) in [
        ("openai", "openai body", Dialect::OpenAi),
        ("anthropic", "anthropic body", Dialect::Anthropic),
        (
            "openai-responses",
            "openai-responses body",
            Dialect::OpenAiResponses,
        ),
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
            Dialect::OpenAiResponses => body["output"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| item["type"] == "function_call")
                .map(|item| {
                    key(
                        item["name"].as_str().unwrap(),
                        item["arguments"].as_str().unwrap(),
                    )
                })
                .collect(),
        };
        doors.push((body_door, calls));
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
        dialect in prop::sample::select(Dialect::ALL.to_vec()),
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

/// The byte offsets of the word starts of `s`, last first.
fn word_starts_of(s: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let (mut b2, mut b1) = (None, None);
    for (i, c) in s.char_indices() {
        if overlap::starts_word(b2, b1, c) {
            starts.push(i);
        }
        (b2, b1) = (b1, Some(c));
    }
    starts.reverse();
    starts
}

/// How a model continues after the prefix it was given.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// Exactly the rest.
    Exact,
    /// From the start of the word the break cut (the rest when the cut was not in a word).
    WordRestart,
    /// From the start of the last `n` words.
    LastWords(usize),
}

/// The answer text of every recording (choice 0), once.
fn recorded_texts() -> &'static [(String, String)] {
    static TEXTS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut texts: Vec<(String, String)> = super::tests::fixtures()
            .into_iter()
            .map(|(name, events)| (name, Assembler::assemble(&events).text()))
            .filter(|(_, text)| !text.is_empty())
            .collect();
        texts.dedup_by(|a, b| a.1 == b.1);
        texts
    })
}

/// `text` cut at byte `cut` (moved back to a char boundary), continued as `resume` says with
/// the head in pieces cut at `splits` (fractions of its length): what the client assembles.
fn spliced(text: &str, cut: usize, resume: Resume, splits: &[f64]) -> Option<String> {
    let cut = (0..=cut.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))?;
    let text_events = |s: &mut Splicer, out: &mut Vec<AgentEvent>, pieces: Vec<&str>| {
        s.push(start(Dialect::OpenAi), out);
        s.push(
            AgentEvent::BlockStart {
                index: 0,
                block: providers::event::BlockKind::Text,
                choice: 0,
                extra: None,
            },
            out,
        );
        for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
            s.push(
                AgentEvent::TextDelta {
                    index: 0,
                    text: piece.into(),
                    extra: None,
                },
                out,
            );
        }
    };
    let mut s = Splicer::new(true);
    let mut out = Vec::new();
    text_events(&mut s, &mut out, vec![&text[..cut]]);
    let cont = s.interrupt(&mut out);
    let prefix = cont.prefix.as_str();
    let from = match resume {
        Resume::Exact => prefix.len(),
        Resume::WordRestart if prefix.ends_with(char::is_alphanumeric) => word_starts_of(prefix)[0],
        Resume::WordRestart => prefix.len(),
        // Words to repeat (with fewer than `n`, from the first one).
        Resume::LastWords(n) => {
            let starts = word_starts_of(prefix);
            *starts.get(n - 1).or(starts.last())?
        }
    };
    // Repeats are compared over the sent text's last `WINDOW` bytes only.
    if prefix.len() - from > overlap::WINDOW {
        return None;
    }
    let head = &text[from..];
    if doubled_first_character(prefix, head) {
        return None;
    }
    let mut bounds: Vec<usize> = splits
        .iter()
        .map(|f| (head.len() as f64 * f) as usize)
        .filter(|&i| head.is_char_boundary(i))
        .collect();
    bounds.push(0);
    bounds.push(head.len());
    bounds.sort_unstable();
    let pieces = bounds.windows(2).map(|w| &head[w[0]..w[1]]).collect();
    text_events(&mut s, &mut out, pieces);
    s.push(AgentEvent::BlockEnd { index: 0 }, &mut out);
    s.push(
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason: FinishReason::Stop,
            provider_reason: None,
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })),
        &mut out,
    );
    Some(Assembler::assemble(&out).text())
}

fn resume() -> impl Strategy<Value = Resume> {
    prop_oneof![
        Just(Resume::Exact),
        Just(Resume::WordRestart),
        (1usize..=3).prop_map(Resume::LastWords),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The text of every recording, cut at a random point and continued exactly, from the
    /// start of the cut word, or from the last 1-3 words: the client has the recording's text.
    #[test]
    fn every_recording_survives_a_restarted_word_or_repeated_words(
        pick in any::<prop::sample::Index>(),
        at in 0.0f64..1.0,
        resume in resume(),
        splits in prop::collection::vec(0.0f64..1.0, 0..3),
    ) {
        let texts = recorded_texts();
        let (name, text) = &texts[pick.index(texts.len())];
        let cut = ((text.len() as f64) * at) as usize;
        if let Some(got) = spliced(text, cut, resume, &splits) {
            prop_assert_eq!(&got, text, "{} cut at {} {:?}", name, cut, resume);
        }
    }

    /// Once `decidable`, more head text never changes the overlap.
    #[test]
    fn a_decided_overlap_stays(
        sent in "[ab1 .]{0,40}",
        head in "[ab1 .]{0,16}",
        more in "[ab1 .]{1,16}",
        trimmed in prop_oneof![Just(""), Just(" ")],
    ) {
        let sent = format!("{sent}{trimmed}");
        if overlap::decidable(&sent, &head, trimmed) {
            prop_assert_eq!(
                overlap(&sent, &format!("{head}{more}"), trimmed),
                overlap(&sent, &head, trimmed)
            );
        }
    }
}

/// Every cut of every recording continued with the exact rest loses nothing: checked for all
/// cuts of every text (not sampled), on the overlap rule itself.
#[test]
fn no_exact_rest_of_any_recording_is_taken_for_a_repeat() {
    let mut failures = Vec::new();
    for (name, text) in recorded_texts() {
        let (name, text) = (name.as_str(), text.as_str());
        for (cut, _) in text.char_indices().skip(1) {
            let sent = &text[..cut];
            let prefix = sent.trim_end();
            let rest = &text[prefix.len()..];
            if doubled_first_character(prefix, rest) {
                continue;
            }
            let k = overlap(sent, rest, &sent[prefix.len()..]);
            if k != sent.len() - prefix.len() {
                failures.push(format!(
                    "{name}: {:?} + {:?}",
                    tail_of(sent),
                    &text[prefix.len()..][..k]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cuts lose text: {failures:#?}",
        failures.len()
    );
}

/// The one case the rule gets wrong on purpose (module `overlap`): an answer of one character
/// so far, continued exactly with that character again, is taken for a restart.
fn doubled_first_character(prefix: &str, rest: &str) -> bool {
    prefix.chars().count() == 1 && rest.starts_with(prefix)
}

fn tail_of(s: &str) -> &str {
    let mut from = s.len().saturating_sub(30);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}
