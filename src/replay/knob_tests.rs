//! Tests of the fault knobs and of continuation serving, over a spawned replay and reqwest
//! where the wire matters, and on the body plan where write boundaries matter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use providers::event::FinishReason;
use providers::{Assembler, Dialect, EncodeOptions, StreamDecoder, StreamEncoder};
use serde_json::{Value, json};

use super::continuation::{Ask, CONTINUE_INSTRUCTION, events, repeated_tail};
use super::fault::{Fault, http_date};
use super::*;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn path(dialect: Dialect) -> &'static str {
    dialect.wire().door_paths()[0]
}

/// A request written in Chat's shape (as [`user_only`] and [`continuation_request`] write
/// it) in the shape of `dialect`'s endpoint; Chat's string messages are Responses input items.
fn for_door(dialect: Dialect, body: &Value) -> Value {
    if dialect != Dialect::OpenAiResponses {
        return body.clone();
    }
    json!({
        "model": body["model"], "max_output_tokens": body["max_tokens"],
        "stream": body["stream"], "input": body["messages"],
    })
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Result<Vec<u8>, String>,
}

impl Answer {
    fn bytes(&self) -> &[u8] {
        self.body.as_deref().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).unwrap()
    }
}

async fn post(replay: &Replay, dialect: Dialect, body: &Value) -> Answer {
    let sent = client()
        .post(format!("{}{}", replay.url(), path(dialect)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&for_door(dialect, body)).unwrap())
        .send()
        .await;
    // A reset right after the head can reach the client before the head does.
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            return Answer {
                status: 0,
                headers: http::HeaderMap::new(),
                body: Err(e.to_string()),
            };
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Read chunk by chunk so that a reset after some bytes is seen as an error.
    let mut stream = response.bytes_stream();
    let mut out = Vec::new();
    let mut result = Ok(());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        }
    }
    Answer {
        status,
        headers,
        body: result.map(|()| out),
    }
}

fn user_only(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "max_tokens": 256, "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Prefill,
    Instruction,
}

fn continuation_request(dialect: Dialect, model: &str, prefix: &str, mode: Mode) -> Value {
    let assistant = match dialect {
        Dialect::Anthropic => {
            json!({"role": "assistant", "content": [{"type": "text", "text": prefix}]})
        }
        Dialect::OpenAi | Dialect::OpenAiResponses => {
            json!({"role": "assistant", "content": prefix})
        }
    };
    let mut messages = vec![json!({"role": "user", "content": "hi"}), assistant];
    if mode == Mode::Instruction {
        messages.push(json!({"role": "user", "content": CONTINUE_INSTRUCTION}));
    }
    json!({
        "model": model, "max_tokens": 256, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": messages
    })
}

fn fixture_message(dialect: Dialect, name: &str) -> providers::Message {
    let (events, result) = StreamDecoder::decode_all(dialect, fixture(dialect, name).unwrap());
    result.unwrap();
    Assembler::assemble(&events)
}

/// Checks a served continuation body against the fixture: P + continuation (minus the
/// repeated overlap) is the fixture's text, tool calls whole and equal, same finish.
fn check_continuation(dialect: Dialect, name: &str, prefix: &str, mode: Mode, served: &[u8]) {
    let want = fixture_message(dialect, name);
    let (got, result) = StreamDecoder::decode_all(dialect, served);
    result.unwrap_or_else(|e| panic!("{name}: served continuation does not decode: {e}"));
    let deltas = got
        .iter()
        .filter(|e| matches!(e, AgentEvent::TextDelta { .. }))
        .count();
    let got = Assembler::assemble(&got);
    let text = got.text();
    let rest = match mode {
        Mode::Prefill => text.as_str(),
        Mode::Instruction => {
            let tail = repeated_tail(prefix);
            assert!(
                text.starts_with(tail),
                "{name}: continuation {text:?} does not repeat {tail:?}"
            );
            &text[tail.len()..]
        }
    };
    assert_eq!(format!("{prefix}{rest}"), want.text(), "{name} {mode:?}");
    if text.len() >= 3 {
        assert!(deltas >= 2, "{name}: {deltas} text deltas for {text:?}");
    }
    assert_eq!(got.tool_calls(), want.tool_calls(), "{name}");
    assert!(got.reasoning().is_empty(), "{name}");
    let (got_end, want_end) = (got.end.unwrap(), want.end.unwrap());
    // The continuation leaves refusal text out, and an OpenAI `stop` is a refusal only after
    // refusal text: what it serves ends as a plain stop.
    let want_reason = match (dialect, want_end.reason) {
        (Dialect::OpenAi, FinishReason::Refusal) => FinishReason::Stop,
        (_, reason) => reason,
    };
    assert_eq!(got_end.reason, want_reason, "{name}");
    assert_eq!(got_end.provider_reason, want_end.provider_reason, "{name}");
    assert_eq!(
        got.start.as_ref().map(|s| &s.id),
        want.start.as_ref().map(|s| &s.id)
    );
    assert!(got.usage.output_tokens.is_some(), "{name}");
}

/// Prefixes of `text` to continue from: empty, a third, cut next to a non-ASCII character if
/// any, all but the last character, all.
fn cuts(text: &str) -> Vec<&str> {
    let boundary = |at: usize| {
        let mut at = at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    let mut out = vec![
        "",
        &text[..boundary(text.len() / 3)],
        &text[..boundary(text.len().saturating_sub(1))],
        text,
    ];
    if let Some((i, c)) = text.char_indices().find(|(_, c)| !c.is_ascii()) {
        out.push(&text[..i + c.len_utf8()]);
        out.push(&text[..i]);
    }
    out
}

/// Every fixture, both modes, several cut points: the continuation events, encoded as the
/// replay serves them, decode back to the rest of the answer.
#[test]
fn continuations_of_every_fixture_complete_the_answer() {
    for dialect in Dialect::ALL {
        for name in fixture_names(dialect) {
            let body = fixture(dialect, name).unwrap();
            if StreamDecoder::decode_all(dialect, body).1.is_err() {
                // A recorded provider error has no answer to continue.
                assert!(
                    events(dialect, body, &Ask::Prefill(String::new()), 10).is_err(),
                    "{dialect} {name}"
                );
                continue;
            }
            let text = fixture_message(dialect, name).text();
            for prefix in cuts(&text) {
                for mode in [Mode::Prefill, Mode::Instruction] {
                    let ask = match mode {
                        Mode::Prefill => Ask::Prefill(prefix.to_owned()),
                        Mode::Instruction => Ask::Instruction(prefix.to_owned()),
                    };
                    let events = events(dialect, body, &ask, 400).unwrap();
                    let options = EncodeOptions {
                        include_usage: true,
                    };
                    let served = StreamEncoder::encode_all(dialect, options, &events)
                        .unwrap_or_else(|e| panic!("{dialect} {name}: {e}"));
                    check_continuation(dialect, name, prefix, mode, &served);
                }
            }
            assert_eq!(
                events(dialect, body, &Ask::Prefill("\u{1}nope".into()), 10),
                Err(continuation::Refused::Mismatch)
            );
        }
    }
}

#[tokio::test]
async fn continuation_served_in_both_dialects_and_modes() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let cases = [
        (Dialect::Anthropic, "tool_use_with_text"),
        (Dialect::Anthropic, "thinking_short"),
        (Dialect::OpenAi, "text_then_tool_calls_empty_array"),
        (Dialect::OpenAi, "json_object_long"),
    ];
    for (dialect, name) in cases {
        let text = fixture_message(dialect, name).text();
        assert!(!text.is_empty(), "{name}");
        for prefix in cuts(&text) {
            for mode in [Mode::Prefill, Mode::Instruction] {
                let answer = post(
                    &replay,
                    dialect,
                    &continuation_request(dialect, name, prefix, mode),
                )
                .await;
                assert_eq!(answer.status, 200, "{name}");
                check_continuation(dialect, name, prefix, mode, answer.bytes());
            }
        }
    }
    // Not streamed: the same continuation as one JSON body.
    let mut body = continuation_request(Dialect::Anthropic, "text_basic", "", Mode::Prefill);
    let text = fixture_message(Dialect::Anthropic, "text_basic").text();
    let cut = text.len() / 2;
    body["messages"][1]["content"][0]["text"] = json!(&text[..cut]);
    body["stream"] = json!(false);
    let answer = post(&replay, Dialect::Anthropic, &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["content"][0]["text"], json!(&text[cut..]));
}

#[tokio::test]
async fn a_prefill_that_is_not_the_recording_is_a_400() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for dialect in Dialect::ALL {
        for mode in [Mode::Prefill, Mode::Instruction] {
            let body = continuation_request(dialect, "text_basic", "Not what was said", mode);
            let answer = post(&replay, dialect, &body).await;
            assert_eq!(answer.status, 400, "{dialect}");
            let json = answer.json();
            assert_eq!(
                json["error"]["message"],
                "prefill does not match the recording"
            );
        }
    }
}

#[tokio::test]
async fn times_limits_a_fault_to_the_first_identical_requests() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let model = "times=2,status=503:text_basic";
    for dialect in Dialect::ALL {
        let statuses = [
            post(&replay, dialect, &user_only(model, true)).await.status,
            post(&replay, dialect, &user_only(model, true)).await.status,
            post(&replay, dialect, &user_only(model, true)).await.status,
            post(&replay, dialect, &user_only(model, false))
                .await
                .status,
        ];
        assert_eq!(statuses, [503, 503, 200, 200], "{dialect}");
    }
    // Another model string counts on its own; without `times` the fault always applies.
    let answer = post(
        &replay,
        Dialect::Anthropic,
        &user_only("times=1,reset_after=2:text_basic", true),
    )
    .await;
    assert!(answer.body.is_err());
    let answer = post(
        &replay,
        Dialect::Anthropic,
        &user_only("times=1,reset_after=2:text_basic", true),
    )
    .await;
    assert_eq!(
        answer.bytes(),
        fixture(Dialect::Anthropic, "text_basic").unwrap()
    );
    for _ in 0..3 {
        let answer = post(
            &replay,
            Dialect::OpenAi,
            &user_only("status=500:text_basic", true),
        )
        .await;
        assert_eq!(answer.status, 500);
    }
    // The retry of a broken stream: the first attempt breaks, the continuation succeeds.
    let model = "times=1,cut_after=4:tool_use_with_text";
    let first = post(&replay, Dialect::Anthropic, &user_only(model, true)).await;
    let (partial, _) = StreamDecoder::decode_all(Dialect::Anthropic, first.bytes());
    let prefix = Assembler::assemble(&partial).text();
    assert!(!prefix.is_empty());
    let body = continuation_request(Dialect::Anthropic, model, &prefix, Mode::Prefill);
    let second = post(&replay, Dialect::Anthropic, &body).await;
    check_continuation(
        Dialect::Anthropic,
        "tool_use_with_text",
        &prefix,
        Mode::Prefill,
        second.bytes(),
    );
}

#[tokio::test]
async fn no_prefill_refuses_only_an_assistant_ending() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let model = "no_prefill:text_basic";
    let answer = post(
        &replay,
        Dialect::Anthropic,
        &continuation_request(Dialect::Anthropic, model, "Hel", Mode::Prefill),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json(),
        json!({"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}})
    );
    let answer = post(
        &replay,
        Dialect::OpenAi,
        &continuation_request(Dialect::OpenAi, model, "Hel", Mode::Prefill),
    )
    .await;
    assert_eq!(answer.status, 400);
    let json = answer.json();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not support assistant message prefill")
    );
    for dialect in Dialect::ALL {
        let answer = post(&replay, dialect, &user_only(model, true)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.bytes(), fixture(dialect, "text_basic").unwrap());
        // Instruction mode ends with a user message: served.
        let text = fixture_message(dialect, "text_basic").text();
        let prefix = &text[..text.len() / 2];
        let body = continuation_request(dialect, model, prefix, Mode::Instruction);
        let answer = post(&replay, dialect, &body).await;
        assert_eq!(answer.status, 200, "{dialect}");
        check_continuation(
            dialect,
            "text_basic",
            prefix,
            Mode::Instruction,
            answer.bytes(),
        );
    }
}

#[tokio::test]
async fn status_529_and_retry_headers() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let answer = post(
        &replay,
        Dialect::Anthropic,
        &user_only("status=529,retry_after_ms=1500:text_basic", true),
    )
    .await;
    assert_eq!(answer.status, 529);
    assert_eq!(
        answer.json(),
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
    assert_eq!(answer.headers["retry-after-ms"], "1500");
    assert!(answer.headers.get("retry-after").is_none());

    let answer = post(
        &replay,
        Dialect::OpenAi,
        &user_only("status=429,retry_after_date=30:text_basic", true),
    )
    .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"]["type"], "rate_limit_error");
    let date = answer.headers["retry-after"].to_str().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 25..=now + 31).any(|t| http_date(t) == date),
        "{date} is not about 30 s ahead"
    );
}

fn frames_of(dialect: Dialect, name: &str) -> Vec<Bytes> {
    frames(&Bytes::from_static(fixture(dialect, name).unwrap()))
}

#[tokio::test]
async fn overloaded_after_sends_the_providers_overload_error() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for dialect in Dialect::ALL {
        let answer = post(
            &replay,
            dialect,
            &user_only("overloaded_after=3:text_basic", true),
        )
        .await;
        assert_eq!(answer.status, 200);
        let mut want = frames_of(dialect, "text_basic")[..3].concat();
        want.extend_from_slice(overloaded_event(dialect).as_bytes());
        assert_eq!(answer.bytes(), want);
        let (events, result) = StreamDecoder::decode_all(dialect, answer.bytes());
        let error = events.iter().find_map(|e| match e {
            AgentEvent::Error(e) => Some(e.clone()),
            _ => None,
        });
        assert!(
            error.is_some() || result.is_err(),
            "{dialect}: no error decoded: {events:?}"
        );
    }
    let overloaded: Value = serde_json::from_str(
        overloaded_event(Dialect::Anthropic)
            .lines()
            .nth(1)
            .unwrap()
            .trim_start_matches("data: "),
    )
    .unwrap();
    assert_eq!(
        overloaded,
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
}

#[tokio::test]
async fn malformed_after_inserts_a_frame_that_is_not_json() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for dialect in Dialect::ALL {
        let answer = post(
            &replay,
            dialect,
            &user_only("malformed_after=2:text_basic", true),
        )
        .await;
        let frames = frames_of(dialect, "text_basic");
        let mut want = frames[..2].concat();
        want.extend_from_slice(b"data: {not json\n\n");
        want.extend_from_slice(&frames[2..].concat());
        assert_eq!(answer.bytes(), want);
        let (_, result) = StreamDecoder::decode_all(dialect, answer.bytes());
        assert!(result.is_err(), "{dialect}: the bad frame decodes");
    }
}

#[tokio::test]
async fn cut_after_ends_cleanly_and_reset_after_aborts() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for dialect in Dialect::ALL {
        let frames = frames_of(dialect, "text_basic");
        let cut = post(&replay, dialect, &user_only("cut_after=3:text_basic", true)).await;
        assert_eq!(cut.bytes(), frames[..3].concat(), "{dialect}");
        let (events, _) = StreamDecoder::decode_all(dialect, cut.bytes());
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, AgentEvent::StreamEnd(_) | AgentEvent::Error(_))),
            "{dialect}"
        );
        let reset = post(
            &replay,
            dialect,
            &user_only("reset_after=3:text_basic", true),
        )
        .await;
        assert!(reset.body.is_err(), "{dialect}");
    }
    assert!(replay.wait_streams_closed(4, Duration::from_secs(5)).await);
}

#[test]
fn drip_bytes_writes_one_byte_at_a_time() {
    let body = fixture(Dialect::Anthropic, "text_basic").unwrap();
    let fault = Fault::parse("drip_bytes:x").unwrap().0;
    let steps = plan(Dialect::Anthropic, &Bytes::copy_from_slice(body), &fault);
    assert_eq!(steps.len(), body.len());
    let mut joined = Vec::new();
    for step in steps {
        let Step::Send(bytes) = step else {
            panic!("{step:?}")
        };
        assert_eq!(bytes.len(), 1);
        joined.extend_from_slice(&bytes);
    }
    assert_eq!(joined, body);
}

#[tokio::test]
async fn drip_bytes_and_utf8_cut_serve_the_same_bytes() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for (dialect, name) in [
        (Dialect::OpenAi, "text_basic"),
        (Dialect::Anthropic, "thinking_short"),
    ] {
        for knob in ["drip_bytes", "utf8_cut"] {
            let answer = post(
                &replay,
                dialect,
                &user_only(&format!("{knob}:{name}"), true),
            )
            .await;
            assert_eq!(answer.bytes(), fixture(dialect, name).unwrap(), "{knob}");
        }
    }
}

/// The writes of a plan, the pauses between them dropped.
fn writes(steps: &[Step]) -> Vec<Bytes> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn utf8_cut_splits_inside_a_character() {
    for (dialect, name) in [
        (Dialect::Anthropic, "thinking_short"),
        (Dialect::OpenAi, "json_object_long"),
    ] {
        let body = fixture(dialect, name).unwrap();
        assert!(!body.is_ascii());
        let fault = Fault::parse("utf8_cut:x").unwrap().0;
        let steps = plan(dialect, &Bytes::copy_from_slice(body), &fault);
        let writes = writes(&steps);
        assert_eq!(writes.concat(), body);
        let cut_inside = writes
            .iter()
            .any(|w| std::str::from_utf8(w).is_err_and(|e| e.error_len().is_none()));
        assert!(cut_inside, "{name}: no write ends inside a character");
        assert!(steps.contains(&Step::Pause(fault::UTF8_CUT_PAUSE)));
    }
    // A body without non-ASCII is cut inside a JSON string value.
    let body = fixture(Dialect::OpenAi, "text_basic").unwrap();
    assert!(body.is_ascii());
    let steps = plan(
        Dialect::OpenAi,
        &Bytes::copy_from_slice(body),
        &Fault::parse("utf8_cut:x").unwrap().0,
    );
    let writes = writes(&steps);
    assert_eq!(writes.concat(), body);
    assert!(writes.len() > frames(&Bytes::copy_from_slice(body)).len());
    let first = std::str::from_utf8(&writes[0]).unwrap();
    let quotes = first.matches('"').count();
    assert_eq!(quotes % 2, 1, "{first:?} does not end inside a string");
}

#[test]
fn stopping_knobs_plan() {
    let body = fixture(Dialect::Anthropic, "text_basic").unwrap();
    let frames = frames(&Bytes::copy_from_slice(body));
    let plan_of = |model: &str| {
        plan(
            Dialect::Anthropic,
            &Bytes::copy_from_slice(body),
            &Fault::parse(model).unwrap().0,
        )
    };
    assert_eq!(
        writes(&plan_of("cut_after=2:x")).concat(),
        frames[..2].concat()
    );
    assert_eq!(plan_of("cut_after=2:x").len(), 2);
    assert_eq!(plan_of("reset_after=2:x").last(), Some(&Step::Reset));
    assert_eq!(plan_of("stall_after=2:x").len(), 2);
    assert_eq!(
        writes(&plan_of("cut_after=999:x")).concat(),
        body,
        "N beyond the body is the whole body"
    );
    let malformed_end = writes(&plan_of("malformed_after=999:x")).concat();
    assert!(malformed_end.ends_with(b"data: {not json\n\n"));
}

#[tokio::test]
async fn first_token_delay_sends_the_head_at_once_and_the_body_after_the_delay() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for dialect in Dialect::ALL {
        let mut response = client()
            .post(format!("{}{}", replay.url(), path(dialect)))
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                serde_json::to_vec(&user_only("first_token_delay_ms=1500:text_basic", true))
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{dialect}: the head comes at once");
        // Nothing of the body within a third of the delay (a loaded machine only delays it
        // more), then the whole recording.
        let early = tokio::time::timeout(Duration::from_millis(500), response.chunk()).await;
        assert!(early.is_err(), "{dialect}: a frame before the delay");
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(body, frames_of(dialect, "text_basic").concat(), "{dialect}");
    }
}

#[test]
fn first_token_delay_pauses_before_the_first_write_only() {
    let body = fixture(Dialect::OpenAi, "text_basic").unwrap();
    for model in ["x", "reset_after=3:x", "chunk=7:x"] {
        let base = Fault::parse(model).unwrap().0;
        let delayed = Fault {
            first_token_delay: Some(Duration::from_millis(20_000)),
            ..base.clone()
        };
        let plain = plan(Dialect::OpenAi, &Bytes::copy_from_slice(body), &base);
        let steps = plan(Dialect::OpenAi, &Bytes::copy_from_slice(body), &delayed);
        assert_eq!(
            steps[0],
            Step::Pause(Duration::from_millis(20_000)),
            "{model}"
        );
        assert_eq!(steps[1..], plain[..], "{model}");
    }
}

/// A recorded provider error asked for without streaming is that provider's error answer:
/// its status and error body, as the provider sends them to a non-streaming request.
#[tokio::test]
async fn a_recorded_provider_error_is_the_non_streaming_error_answer() {
    let replay = spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut checked = 0;
    for dialect in Dialect::ALL {
        for name in fixture_names(dialect) {
            let (_, result) = StreamDecoder::decode_all(dialect, fixture(dialect, name).unwrap());
            let Err(providers::DecodeError::Upstream { error, .. }) = result else {
                continue;
            };
            checked += 1;
            let answer = post(&replay, dialect, &user_only(name, false)).await;
            assert!(
                (400..600).contains(&answer.status) && answer.status != 500,
                "{dialect}/{name}: {}",
                answer.status
            );
            let (code, message) = dialect
                .wire()
                .parse_error_body(answer.bytes())
                .unwrap_or_else(|| panic!("{dialect}/{name}: not an error body"));
            assert_eq!(
                (code, message),
                (error.code, error.message),
                "{dialect}/{name}"
            );
        }
    }
    assert!(checked >= 1, "no provider error recording");
}
