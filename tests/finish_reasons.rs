//! How an answer ended, in every direction: the finish-reason table of docs/protocol.md is the
//! oracle. Each row is checked through synthetic provider streams (rows naming "any other
//! value" with seeded random names), and every fixture is checked against the row its own
//! finish reason selects (a new recording is a new case): decoded into the Agent Event Stream,
//! then written to both doors, streaming and not. A second, generated test writes every
//! normalized reason, from either source dialect, to both doors and reads it back with the
//! door's own decoder: a refusal stays a refusal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/gateway.rs"]
mod gw;

use common::{all_fixtures, dialect_of, expected, for_each_fixture};
use providers::event::BlockKind;
use providers::{
    AgentEvent, Assembler, Dialect, EncodeOptions, FinishReason, StreamDecoder, StreamEncoder,
    StreamEnd, StreamStart, encode_response,
};
use serde_json::{Value, json};

/// The dialects the finish table of docs/protocol.md has columns for (a provider value and
/// "the other door"). OpenAI Responses reasons (a status, not a value) are checked by the
/// codec's own tests and tests/roundtrip.rs.
const TABLE: [Dialect; 2] = [Dialect::OpenAi, Dialect::Anthropic];

/// Whether a fixture's dialect is in the table.
fn in_table(f: &common::Fixture) -> bool {
    TABLE.contains(&dialect_of(f))
}

const OPTIONS: EncodeOptions = EncodeOptions {
    include_usage: true,
};

/// What the answer held besides plain text, as the table's `when` column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Plain,
    ToolCalls,
    Refusal,
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    from: Dialect,
    /// None: "any other value".
    value: Option<String>,
    when: When,
    normalized: String,
    other_door: String,
}

impl Row {
    /// The other door's value for a provider value `value` of this row.
    fn other_door(&self, value: &str) -> String {
        if self.other_door == "same value" {
            value.to_owned()
        } else {
            self.other_door.clone()
        }
    }
}

/// The first backquoted word of a cell, or the cell.
fn cell_word(cell: &str) -> String {
    let cell = cell.trim();
    match cell.split('`').nth(1) {
        Some(word) if cell.starts_with('`') => word.to_owned(),
        _ => cell.to_owned(),
    }
}

/// The rows of the "Finish reasons" table of docs/protocol.md.
fn table() -> Vec<Row> {
    let doc = std::fs::read_to_string(common::fixtures_root().join("../docs/protocol.md")).unwrap();
    let section = doc
        .split("## Finish reasons\n")
        .nth(1)
        .expect("a Finish reasons section");
    let rows: Vec<Row> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "{line}");
            let from = match cells[0] {
                "OpenAI" => Dialect::OpenAi,
                "Anthropic" => Dialect::Anthropic,
                other => panic!("unknown dialect {other:?} in {line}"),
            };
            let value = (cells[1] != "any other value").then(|| cell_word(cells[1]));
            let when = match cells[2] {
                "" => When::Plain,
                "tool calls were emitted" => When::ToolCalls,
                "a refusal was emitted" => When::Refusal,
                other => panic!("unknown condition {other:?} in {line}"),
            };
            Row {
                from,
                value,
                when,
                normalized: cell_word(cells[3]),
                other_door: cell_word(cells[4]),
            }
        })
        .collect();
    assert!(rows.len() >= 16, "only {} rows", rows.len());
    rows
}

/// The row for a provider value: the one whose condition matches, else the plain one, else
/// "any other value".
fn row_for<'a>(rows: &'a [Row], from: Dialect, value: &str, when: When) -> &'a Row {
    let of_value = |w: When| {
        rows.iter()
            .find(|r| r.from == from && r.value.as_deref() == Some(value) && r.when == w)
    };
    of_value(when)
        .or_else(|| of_value(When::Plain))
        .or_else(|| rows.iter().find(|r| r.from == from && r.value.is_none()))
        .unwrap_or_else(|| panic!("no row for {from} {value:?}"))
}

/// The finish value a door's client reads from a streamed body (choice 0).
fn streamed_finish(door: Dialect, body: &[u8]) -> Option<String> {
    let mut found = None;
    for frame in common::raw_frames(body) {
        let Ok(v) = serde_json::from_str::<Value>(&frame.data) else {
            continue;
        };
        let value = match door {
            Dialect::OpenAi => v["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["index"] == 0)
                .and_then(|c| c["finish_reason"].as_str()),
            Dialect::Anthropic => v["delta"]["stop_reason"].as_str(),
            Dialect::OpenAiResponses => v["response"]["status"].as_str(),
        };
        if let Some(value) = value {
            found = Some(value.to_owned());
        }
    }
    found
}

/// The finish value of a non-streaming body (choice 0).
fn body_finish(door: Dialect, body: &Value) -> Option<String> {
    let v = match door {
        Dialect::OpenAi => &body["choices"][0]["finish_reason"],
        Dialect::Anthropic => &body["stop_reason"],
        Dialect::OpenAiResponses => &body["status"],
    };
    v.as_str().map(str::to_owned)
}

/// Checks decoded `events` of a `from` stream whose provider value is `value` against `row`:
/// the Agent Event Stream's reason, and both doors, streaming and not.
fn check_row(events: &[AgentEvent], from: Dialect, value: &str, row: &Row) -> Result<(), String> {
    let mut errs = Vec::new();
    let Some(AgentEvent::StreamEnd(end)) = events.last() else {
        return Err("no stream.end".into());
    };
    let aes = serde_json::to_value(events.last().unwrap()).unwrap();
    if aes["reason"] != row.normalized.as_str() {
        errs.push(format!(
            "Agent Event Stream reason {}, the table says {}",
            aes["reason"], row.normalized
        ));
    }
    if aes["provider_reason"] != value {
        errs.push(format!("provider_reason {}", aes["provider_reason"]));
    }
    if value == "stop_sequence" && end.stop_sequence.is_none() {
        errs.push("stop_sequence lost".into());
    }
    let several = !end.other_choices.is_empty();
    for door in TABLE {
        let want = if door == from {
            value.to_owned()
        } else {
            row.other_door(value)
        };
        if door == Dialect::Anthropic && several {
            // Several choices cannot be one Anthropic message: refused, not mapped.
            if StreamEncoder::encode_all(door, OPTIONS, events).is_ok() {
                errs.push("several choices written to the Anthropic door".into());
            }
            continue;
        }
        let bytes = StreamEncoder::encode_all(door, OPTIONS, events)
            .map_err(|e| format!("encode to {door}: {e}"))?;
        let got = streamed_finish(door, &bytes);
        if got.as_deref() != Some(want.as_str()) {
            errs.push(format!(
                "{door} door, streaming: got {got:?}, want {want:?}"
            ));
        }
        let body = encode_response(door, &Assembler::assemble(events))
            .map_err(|e| format!("body for {door}: {e}"))?;
        let got = body_finish(door, &body);
        if got.as_deref() != Some(want.as_str()) {
            errs.push(format!(
                "{door} door, not streaming: got {got:?}, want {want:?}"
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// A provider stream of `from` with content of kind `when` ending with `value`.
fn synthetic(from: Dialect, value: &str, when: When) -> Vec<u8> {
    let mut out = String::new();
    let mut data = |event: Option<&str>, v: Value| {
        if let Some(e) = event {
            out.push_str(&format!("event: {e}\n"));
        }
        out.push_str(&format!("data: {v}\n\n"));
    };
    match from {
        Dialect::OpenAiResponses => unreachable!("not in the finish table"),
        Dialect::OpenAi => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-t", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            data(
                None,
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            );
            let delta = match when {
                When::Plain => json!({"content": "Hello there"}),
                When::Refusal => json!({"refusal": "I can't help with that."}),
                When::ToolCalls => {
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]})
                }
            };
            data(None, chunk(delta, Value::Null));
            data(None, chunk(json!({}), json!(value)));
            out.push_str("data: [DONE]\n\n");
        }
        Dialect::Anthropic => {
            data(
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_t", "type": "message",
                    "role": "assistant", "model": "claude-t", "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            );
            let tool = value == "tool_use" || when == When::ToolCalls;
            let (start, delta) = if tool {
                (
                    json!({"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}),
                    json!({"type": "input_json_delta", "partial_json": "{\"q\":1}"}),
                )
            } else {
                (
                    json!({"type": "text", "text": ""}),
                    json!({"type": "text_delta", "text": "Hello there"}),
                )
            };
            data(
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": start}),
            );
            data(
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            );
            data(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            );
            let sequence = (value == "stop_sequence").then_some("END");
            data(
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": value, "stop_sequence": sequence},
                       "usage": {"output_tokens": 5}}),
            );
            data(Some("message_stop"), json!({"type": "message_stop"}));
        }
    }
    out.into_bytes()
}

/// A finish value no provider documents: seeded, lowercase, never a known one.
fn unknown_value(rng: &mut fastrand::Rng, rows: &[Row]) -> String {
    loop {
        let len = rng.usize(3..14);
        let v: String = (0..len)
            .map(|_| {
                if rng.u8(0..6) == 0 {
                    '_'
                } else {
                    rng.lowercase()
                }
            })
            .collect();
        if rows.iter().all(|r| r.value.as_deref() != Some(v.as_str())) {
            return v;
        }
    }
}

#[test]
fn every_row_of_the_table_holds_for_synthetic_streams() {
    let rows = table();
    let mut rng = fastrand::Rng::with_seed(0x5eed_f1a1);
    let mut failures = Vec::new();
    let mut cases = 0;
    for row in &rows {
        let values: Vec<String> = match &row.value {
            Some(v) => vec![v.clone()],
            None => (0..8).map(|_| unknown_value(&mut rng, &rows)).collect(),
        };
        for value in values {
            cases += 1;
            let body = synthetic(row.from, &value, row.when);
            let (events, result) = StreamDecoder::decode_all(row.from, &body);
            if let Err(e) = result {
                failures.push(format!(
                    "{} {value:?} {:?}: decode: {e}",
                    row.from, row.when
                ));
                continue;
            }
            if let Err(e) = check_row(&events, row.from, &value, row) {
                failures.push(format!("{} {value:?} {:?}: {e}", row.from, row.when));
            }
        }
    }
    assert!(cases > rows.len());
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_ends_as_its_row_says_everywhere() {
    let rows = table();
    let fixtures: Vec<_> = all_fixtures().into_iter().filter(in_table).collect();
    let mut refusals = 0;
    for_each_fixture(&fixtures, |f| {
        let from = dialect_of(f);
        let want = expected(f.dialect, &f.body);
        let Some(value) = want.finish_reason.as_deref() else {
            // A recording without a finish (a provider error) has no row.
            return Ok(());
        };
        let when = if !want.tool_calls.is_empty() {
            When::ToolCalls
        } else if !want.refusal.is_empty() {
            When::Refusal
        } else {
            When::Plain
        };
        if value == "refusal" || when == When::Refusal {
            refusals += 1;
        }
        let (events, result) = StreamDecoder::decode_all(from, &f.body);
        result.map_err(|e| format!("decode: {e}"))?;
        check_row(&events, from, value, row_for(&rows, from, value, when))
    });
    // Both dialects' refusal recordings were checked.
    assert!(refusals >= 2, "only {refusals} refusal recordings");
}

/// The normalized reasons a stream can end with (`error` ends as an error, checked apart).
const REASONS: [FinishReason; 6] = [
    FinishReason::Stop,
    FinishReason::Length,
    FinishReason::ToolCalls,
    FinishReason::ContentFilter,
    FinishReason::Refusal,
    FinishReason::PauseTurn,
];

/// A stream from a `source` provider with `reason`: refusal text or answer text, a tool call
/// when the reason is `tool_calls`.
fn events_ending(
    source: Dialect,
    reason: FinishReason,
    provider_reason: Option<&str>,
    refusal_text: bool,
    stop_sequence: Option<&str>,
) -> Vec<AgentEvent> {
    let mut events = vec![AgentEvent::StreamStart(Box::new(StreamStart {
        id: "id_t".into(),
        model: "model-t".into(),
        dialect: source,
        created: Some(1),
        request_id: None,
        provider: None,
        extra: None,
    }))];
    let (block, delta) = if refusal_text {
        (
            BlockKind::Refusal,
            AgentEvent::RefusalDelta {
                index: 0,
                text: "I can't help with that.".into(),
            },
        )
    } else {
        (
            BlockKind::Text,
            AgentEvent::TextDelta {
                index: 0,
                text: "Hello".into(),
                extra: None,
            },
        )
    };
    events.push(AgentEvent::BlockStart {
        index: 0,
        block,
        choice: 0,
        extra: None,
    });
    events.push(delta);
    events.push(AgentEvent::BlockEnd { index: 0 });
    if reason == FinishReason::ToolCalls {
        events.push(AgentEvent::ToolCallStart {
            index: 1,
            id: "call_1".into(),
            name: "lookup".into(),
            choice: 0,
            extra: None,
        });
        events.push(AgentEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        });
        events.push(AgentEvent::ToolCallEnd {
            index: 1,
            arguments: "{}".into(),
            truncated: false,
        });
    }
    events.push(AgentEvent::StreamEnd(Box::new(StreamEnd {
        reason,
        provider_reason: provider_reason.map(str::to_owned),
        stop_sequence: stop_sequence.map(str::to_owned),
        other_choices: Vec::new(),
        extra: None,
    })));
    events
}

/// The provider value a `source` provider sends for `reason` (what decoding it gives back).
fn native(source: Dialect, reason: FinishReason, refusal_text: bool) -> &'static str {
    match (source, reason) {
        (Dialect::OpenAi, FinishReason::Stop | FinishReason::PauseTurn) => "stop",
        (Dialect::OpenAi, FinishReason::Refusal) if refusal_text => "stop",
        (Dialect::OpenAi, FinishReason::ContentFilter | FinishReason::Refusal) => "content_filter",
        (Dialect::OpenAi, FinishReason::Length) => "length",
        (Dialect::OpenAi, FinishReason::ToolCalls) => "tool_calls",
        (Dialect::Anthropic, FinishReason::Stop) => "end_turn",
        (Dialect::Anthropic, FinishReason::Length) => "max_tokens",
        (Dialect::Anthropic, FinishReason::ToolCalls) => "tool_use",
        (Dialect::Anthropic, FinishReason::ContentFilter | FinishReason::Refusal) => "refusal",
        (Dialect::Anthropic, FinishReason::PauseTurn) => "pause_turn",
        (Dialect::OpenAiResponses, _) => unreachable!("not in the finish table"),
        (_, FinishReason::Error) => unreachable!("error ends as an error"),
    }
}

/// What a door writes for a normalized reason without a usable provider value (the last
/// bullet under the table).
fn written(
    door: Dialect,
    reason: FinishReason,
    refusal_text: bool,
    stop_sequence: bool,
) -> &'static str {
    match (door, reason) {
        (Dialect::OpenAi, FinishReason::Stop | FinishReason::PauseTurn) => "stop",
        (Dialect::OpenAi, FinishReason::Length) => "length",
        (Dialect::OpenAi, FinishReason::ToolCalls) => "tool_calls",
        (Dialect::OpenAi, FinishReason::Refusal) if refusal_text => "stop",
        (Dialect::OpenAi, FinishReason::ContentFilter | FinishReason::Refusal) => "content_filter",
        (Dialect::Anthropic, FinishReason::Stop) if stop_sequence => "stop_sequence",
        (Dialect::Anthropic, FinishReason::Stop) => "end_turn",
        (Dialect::Anthropic, FinishReason::Length) => "max_tokens",
        (Dialect::Anthropic, FinishReason::ToolCalls) => "tool_use",
        (Dialect::Anthropic, FinishReason::ContentFilter | FinishReason::Refusal) => "refusal",
        (Dialect::Anthropic, FinishReason::PauseTurn) => "pause_turn",
        (Dialect::OpenAiResponses, _) => unreachable!("not in the finish table"),
        (_, FinishReason::Error) => unreachable!("error ends as an error"),
    }
}

/// Whether a reason tells the client its answer was withheld or refused.
fn refused(reason: FinishReason) -> bool {
    matches!(reason, FinishReason::Refusal | FinishReason::ContentFilter)
}

#[test]
fn every_reason_from_every_dialect_reaches_every_door() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for reason in REASONS {
        for source in TABLE {
            for refusal_text in [false, true] {
                for stop_sequence in [None, Some("END")] {
                    for with_provider in [false, true] {
                        let provider = with_provider.then(|| native(source, reason, refusal_text));
                        let events =
                            events_ending(source, reason, provider, refusal_text, stop_sequence);
                        for door in TABLE {
                            cases += 1;
                            let case = format!(
                                "{reason:?} from {source} (provider value {provider:?}, refusal text {refusal_text}, stop sequence {stop_sequence:?}) at the {door} door"
                            );
                            let want = match provider {
                                Some(p) if door == source => p,
                                _ => written(door, reason, refusal_text, stop_sequence.is_some()),
                            };
                            let bytes = StreamEncoder::encode_all(door, OPTIONS, &events).unwrap();
                            let got = streamed_finish(door, &bytes);
                            if got.as_deref() != Some(want) {
                                failures
                                    .push(format!("{case}, streaming: got {got:?}, want {want:?}"));
                            }
                            let body =
                                encode_response(door, &Assembler::assemble(&events)).unwrap();
                            let got = body_finish(door, &body);
                            if got.as_deref() != Some(want) {
                                failures.push(format!("{case}, body: got {got:?}, want {want:?}"));
                            }
                            // Read back as the door's client reads it: a refusal stays one, and
                            // what was not refused is not read as refused (refusal text an
                            // OpenAI client got with `stop` is OpenAI's own way to refuse).
                            let (back, result) = StreamDecoder::decode_all(door, &bytes);
                            let back = match (result, back.last()) {
                                (Ok(()), Some(AgentEvent::StreamEnd(end))) => end.reason,
                                (r, last) => {
                                    failures
                                        .push(format!("{case}: read back {r:?}, last {last:?}"));
                                    continue;
                                }
                            };
                            let want_refused = refused(reason)
                                || (refusal_text && door == Dialect::OpenAi && want == "stop");
                            if refused(back) != want_refused {
                                failures.push(format!("{case}: read back as {back:?}"));
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, REASONS.len() * 2 * 2 * 2 * 2 * 2);
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn an_error_end_is_never_a_clean_end_at_any_door() {
    for source in TABLE {
        for door in TABLE {
            let events = events_ending(source, FinishReason::Error, Some("stop"), false, None);
            let bytes = StreamEncoder::encode_all(door, OPTIONS, &events).unwrap();
            let (_, result) = StreamDecoder::decode_all(door, &bytes);
            assert!(
                result.is_err(),
                "{source} -> {door}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_ends_as_its_row_says_in_the_gateways_agent_event_stream() {
    let rows = table();
    let h = gw::start().await;
    let base = format!("http://{}", h.gateway);
    let mut failures = Vec::new();
    let mut cases = 0;
    for f in all_fixtures().into_iter().filter(in_table) {
        let from = dialect_of(&f);
        let want = expected(f.dialect, &f.body);
        let Some(value) = want.finish_reason.as_deref() else {
            continue;
        };
        let when = if !want.tool_calls.is_empty() {
            When::ToolCalls
        } else if !want.refusal.is_empty() {
            When::Refusal
        } else {
            When::Plain
        };
        let row = row_for(&rows, from, value, when);
        let stem = f.name.rsplit('/').next().unwrap().trim_end_matches(".sse");
        let model = format!("{}/{stem}", from.as_str());
        // The request's dialect does not matter to the native door: ask in both.
        for dialect in TABLE {
            cases += 1;
            let r = gw::post_stream(&base, dialect, &model).await;
            let mut reader = gw::NativeReader::default();
            reader.feed(&gw::body_bytes(r).await);
            let end = reader.envelopes().into_iter().find_map(|e| match e.event {
                AgentEvent::StreamEnd(end) => Some(end),
                _ => None,
            });
            let got = end.map(|e| serde_json::to_value(e.reason).unwrap());
            if got.as_ref().and_then(Value::as_str) != Some(row.normalized.as_str()) {
                failures.push(format!(
                    "{model} asked as {dialect}: stream.end reason {got:?}, the table says {}",
                    row.normalized
                ));
            }
        }
    }
    assert!(cases >= 2 * 25, "only {cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
