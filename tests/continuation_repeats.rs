//! What a continuation produces again never reaches a client twice, and what is new always
//! does (docs/resilience.md, "Continuing an interrupted answer"), through real sockets: tool
//! calls that look alike (the replay serves an answer with two equal calls) and a chat model
//! that restarts the word it was cut in or repeats the last words (a stub OpenAI upstream).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

#[path = "common/resilience.rs"]
mod rs;

use std::net::SocketAddr;

use axum::body::Bytes;
use providers::Dialect;
use serde_json::{Value, json};
use streamgate::config::ProviderConfig;
use streamgate::resilience::continuation::CONTINUE_INSTRUCTION;

const DOORS: [Dialect; 3] = Dialect::ALL;

fn door_name(door: Dialect) -> String {
    format!("{door} door")
}

/// Two `tool_use` blocks of one tool with empty input in one answer, as Claude sends for
/// "give me two names" (issue #9).
const TWIN_CALLS: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_twins","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":1}}}"#,
    "\n\nevent: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\nevent: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Two names"}}"#,
    "\n\nevent: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" coming."}}"#,
    "\n\nevent: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\nevent: content_block_start\n",
    r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_name","input":{}}}"#,
    "\n\nevent: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
    "\n\nevent: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":1}"#,
    "\n\nevent: content_block_start\n",
    r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_name","input":{}}}"#,
    "\n\nevent: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
    "\n\nevent: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":2}"#,
    "\n\nevent: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}"#,
    "\n\nevent: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

/// A recording served from `body` under `name`.
fn recording_of(dialect: Dialect, name: &'static str, body: Vec<u8>) -> rs::Recording {
    let (events, result) = providers::StreamDecoder::decode_all(dialect, &body);
    result.unwrap();
    rs::Recording {
        dialect,
        name,
        frames: streamgate::replay::frames(&bytes::Bytes::copy_from_slice(&body)),
        seen: gw::seen_events(&events, false),
        body,
    }
}

/// Look-alike parallel calls reach every door, streaming and not, whole and after a break
/// in the text or between the two calls (the continuation produces both calls again: the
/// one already sent is dropped, the other is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_that_look_alike_reach_every_door() {
    let anthropic = recording_of(Dialect::Anthropic, "twins", TWIN_CALLS.as_bytes().to_vec());
    let openai = recording_of(Dialect::OpenAi, "twins", anthropic.reencoded());
    assert_eq!(anthropic.seen.calls.len(), 2);
    assert_eq!(openai.seen.calls, anthropic.seen.calls);
    let h = rs::start(3, |_| {}).await;
    let mut failures = Vec::new();
    let mut case = 0;
    for rec in [&anthropic, &openai] {
        let mut knobs = vec![String::new()];
        for position in [rs::Position::MidText, rs::Position::MidLaterTool] {
            let n = rec.position(position).unwrap();
            knobs.push(format!("cut_after={n},times=1"));
            knobs.push(format!("reset_after={n},times=1"));
        }
        for knobs in &knobs {
            for door in DOORS {
                for stream in [true, false] {
                    // A fixture name of its own per request, so that `times` counts it alone.
                    case += 1;
                    let fixture = format!("twins{case}");
                    h.replay
                        .insert_fixture(rec.dialect, &fixture, rec.body.clone());
                    let model = format!("{}/{knobs}:{fixture}", rs::provider(rec.dialect));
                    let response = h
                        .chat(door, &[], &gw::chat_body(door, &model, stream))
                        .await;
                    let status = response.status();
                    let label = format!("{} stream={stream} {model}", door_name(door));
                    if status != 200 {
                        failures.push(format!("{label}: status {status}"));
                        continue;
                    }
                    let mut errs = Vec::new();
                    if stream {
                        let body = rs::read_body(response).await.unwrap();
                        rs::check_whole(door, rec, &body, None, &mut errs);
                    } else {
                        let got = gw::seen_body(door, &gw::json_of(response).await);
                        if got.text != rec.seen.text {
                            errs.push(format!("text {:?}", got.text));
                        }
                        let calls_ok = got.calls.len() == rec.seen.calls.len()
                            && got
                                .calls
                                .iter()
                                .zip(&rec.seen.calls)
                                .all(|(g, w)| g.0 == w.0 && gw::same_args(&g.1, &w.1, false));
                        if !calls_ok {
                            errs.push(format!("calls {:?}", got.calls));
                        }
                    }
                    if !errs.is_empty() {
                        failures.push(format!("{label}: {errs:?}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A chat model asked to continue "`sent`" that answers "`continued`"; the client must read
/// `want`. Restarts of the cut word and repeats of the last words are removed, the exact rest
/// and coincidences are kept.
const WORD_CASES: [(&str, &str, &str); 6] = [
    (
        "Step 1: Divid",
        "Divide 1071 by 462.",
        "Step 1: Divide 1071 by 462.",
    ),
    (
        "Step 1: Divid",
        "e 1071 by 462.",
        "Step 1: Divide 1071 by 462.",
    ),
    (
        "Step 1: Divide",
        "1: Divide 1071 by 462.",
        "Step 1: Divide 1071 by 462.",
    ),
    (
        "Step 1: Divide",
        "Divide 1071 by 462.",
        "Step 1: Divide 1071 by 462.",
    ),
    (
        "Step 1: Divide",
        " 1071 by 462.",
        "Step 1: Divide 1071 by 462.",
    ),
    ("It was a mis", "sion to Mars.", "It was a mission to Mars."),
];

/// An OpenAI-dialect SSE body with `pieces` of content; `finish` ends it properly, else it
/// just stops (a connection that closed too early).
fn openai_sse(pieces: &[&str], finish: bool) -> String {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({
            "id": "chatcmpl-words", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-words",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {c}\n\n")
    };
    let mut body = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    for piece in pieces {
        body.push_str(&chunk(json!({"content": piece}), Value::Null));
    }
    if finish {
        body.push_str(&chunk(json!({}), json!("stop")));
        body.push_str("data: [DONE]\n\n");
    }
    body
}

/// An OpenAI upstream serving [`WORD_CASES`]: model `caseN` first answers the case's sent text
/// and breaks; asked to continue it (an instruction continuation), it answers the case's
/// continuation in two pieces.
async fn word_upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let case: usize = request["model"].as_str().unwrap()["case".len()..]
            .parse()
            .unwrap();
        let (sent, continued, _) = WORD_CASES[case];
        let messages = request["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        let asked = last["role"] == "user" && last["content"] == CONTINUE_INSTRUCTION;
        let body = if asked {
            let before = &messages[messages.len() - 2];
            assert_eq!(before["content"], sent, "the continuation's partial answer");
            let mid = continued.len() / 2;
            openai_sse(&[&continued[..mid], &continued[mid..]], true)
        } else {
            openai_sse(&[sent], false)
        };
        ([(http::header::CONTENT_TYPE, "text/event-stream")], body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_word_or_repeated_words_reach_no_door_twice() {
    let addr = word_upstream().await;
    let h = rs::start(3, |c| {
        let mut p = ProviderConfig::new(Dialect::OpenAi, &format!("http://{addr}/v1"), "");
        p.api_key_env = None;
        c.providers.insert("words".into(), p);
    })
    .await;
    let mut failures = Vec::new();
    for (case, (sent, continued, want)) in WORD_CASES.iter().enumerate() {
        for door in DOORS {
            let model = format!("words/case{case}");
            let response = h.chat(door, &[], &gw::chat_body(door, &model, true)).await;
            let status = response.status();
            let body = rs::read_body(response).await.unwrap();
            let (events, result) = gw::decode(door, &body);
            let got = gw::seen_events(&events, false).text;
            if status != 200 || result.is_err() || got != *want {
                failures.push(format!(
                    "{} {sent:?} + {continued:?}: {status} {result:?} {got:?}",
                    door_name(door)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
