//! Resilience edges through real sockets (docs/resilience.md), next to the matrix of
//! `tests/resilience.rs`: a stream that closes after its finish without `[DONE]` /
//! `message_stop`, a rejected prefill, both routes failing (mid-stream and before the first
//! byte), context-length and content-policy 400s, and the circuit breaker's round trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

#[path = "common/resilience.rs"]
mod rs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use providers::Dialect;
use serde_json::{Value, json};
use streamgate::config::ProviderConfig;

const DOORS: [Dialect; 3] = Dialect::ALL;

fn door_name(door: Dialect) -> String {
    format!("{door} door")
}

/// Streams `model` through `door` and checks the answer is `rec`'s, whole.
async fn whole(h: &gw::Harness, door: Dialect, model: &str, rec: &rs::Recording) -> Vec<String> {
    let response = h.chat(door, &[], &gw::chat_body(door, model, true)).await;
    let status = response.status();
    let body = rs::read_body(response).await.unwrap();
    if status != 200 {
        return vec![format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        )];
    }
    let mut errs = Vec::new();
    rs::check_whole(door, rec, &body, None, &mut errs);
    errs
}

fn count(h: &gw::Harness, dialect: Dialect, model: &str) -> usize {
    h.replay
        .requests()
        .iter()
        .filter(|r| r.path == rs::endpoint(dialect) && r.model() == Some(model))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_after_its_finish_is_whole_and_not_continued() {
    let h = rs::start(3, |_| {}).await;
    let mut failures = Vec::new();
    for (dialect, name) in [
        (Dialect::Anthropic, "tool_use_with_text"),
        (Dialect::Anthropic, "thinking_then_tool_use"),
        (Dialect::OpenAi, "tool_calls_parallel"),
        (Dialect::OpenAi, "text_basic"),
    ] {
        let rec = rs::recording(dialect, name);
        // Without the last frame: `message_stop` / `data: [DONE]`.
        let last = rec.frames.last().unwrap();
        let text = String::from_utf8_lossy(last);
        assert!(
            text.contains("message_stop") || text.contains("[DONE]"),
            "{name}: last frame {text:?}"
        );
        let truncated = rec.frames[..rec.frames.len() - 1].concat();
        let fixture = format!("trunc_{name}");
        h.replay.insert_fixture(dialect, &fixture, truncated);
        for door in DOORS {
            let model = format!("{}/{fixture}", rs::provider(dialect));
            let before = count(&h, dialect, &fixture);
            let mut errs = whole(&h, door, &model, &rec).await;
            let sent = count(&h, dialect, &fixture) - before;
            if sent != 1 {
                errs.push(format!("{sent} upstream requests, want exactly 1"));
            }
            if !errs.is_empty() {
                failures.push(format!("{} {model}: {errs:?}", door_name(door)));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_prefill_is_continued_by_instruction() {
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    // Four frames: message_start, the text block's start, ping, "I" (a clean cut: nothing
    // in flight is lost).
    let prefix = rec.text_before(4);
    assert_eq!(prefix, "I");
    let mut failures = Vec::new();
    for door in DOORS {
        let h = rs::start(3, |_| {}).await;
        let model = "anthropic/no_prefill,cut_after=4,times=1:tool_use_with_text";
        let mut errs = whole(&h, door, model, &rec).await;
        let requests = h.replay.requests();
        // The break, the refused prefill, the continuation by instruction.
        if requests.len() == 3 {
            for (i, want) in [(1, Dialect::Anthropic), (2, Dialect::OpenAi)] {
                // Request 1 is a prefill (Anthropic's shape), request 2 asks by instruction
                // (the OpenAI check looks for the instruction turn).
                if let Err(e) = rs::continuation_shape(&requests[i], want, &prefix, false) {
                    errs.push(format!("request {i}: {e}"));
                }
            }
        } else {
            errs.push(format!("{} upstream requests, want 3", requests.len()));
        }
        if !errs.is_empty() {
            failures.push(format!("{}: {errs:?}", door_name(door)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_fallback_fails_too_the_client_gets_an_explicit_error() {
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    let h = rs::start(1, |c| {
        // Mid-stream: the primary breaks inside the text, the fallback right after its start.
        rs::alias(
            c,
            "both-break",
            "anthropic/cut_after=4:tool_use_with_text",
            &["openai/overloaded_after=1:x_tool_use_with_text"],
        );
        // Before anything was sent.
        rs::alias(
            c,
            "both-refuse",
            "anthropic/status=500:tool_use_with_text",
            &["openai/status=503:x_tool_use_with_text"],
        );
    })
    .await;
    h.replay
        .insert_fixture(Dialect::OpenAi, &rec.reencoded_name(), rec.reencoded());
    for door in DOORS {
        let response = h
            .chat(door, &[], &gw::chat_body(door, "both-break", true))
            .await;
        assert_eq!(response.status(), 200, "{}", door_name(door));
        let body = rs::read_body(response).await.unwrap();
        let raw = String::from_utf8_lossy(&body);
        let frames = rs::sse_frames(&body);
        match door {
            Dialect::Anthropic => {
                assert!(
                    frames
                        .iter()
                        .any(|(e, v)| e.as_deref() == Some("error") && v["type"] == "error"),
                    "anthropic door: no error event in {raw}"
                );
                assert!(!raw.contains("message_stop"), "anthropic door: {raw}");
            }
            Dialect::OpenAi => {
                assert!(
                    frames.iter().any(|(_, v)| v["error"].is_object()),
                    "openai door: no error chunk in {raw}"
                );
                assert!(!raw.contains("[DONE]"), "openai door: {raw}");
            }
            Dialect::OpenAiResponses => {
                // A broken answer is failed, never completed.
                assert!(
                    frames
                        .iter()
                        .any(|(e, _)| e.as_deref() == Some("response.failed")),
                    "responses door: no response.failed in {raw}"
                );
                assert!(!raw.contains("response.completed"), "responses door: {raw}");
            }
        }
        // What was sent before stays: the text the client had.
        let (events, _) = gw::decode(door, &body);
        let seen = gw::seen_events(&events, false);
        assert!(
            seen.text.starts_with("I"),
            "{}: text {:?}",
            door_name(door),
            seen.text
        );

        let response = h
            .chat(door, &[], &gw::chat_body(door, "both-refuse", true))
            .await;
        let status = response.status();
        let body: Value = gw::json_of(response).await;
        assert_eq!(status, 503, "{}: {body}", door_name(door));
        match door {
            Dialect::Anthropic => {
                assert_eq!(body["type"], "error", "{body}");
                assert!(body["error"]["message"].is_string(), "{body}");
            }
            Dialect::OpenAi | Dialect::OpenAiResponses => {
                assert!(body["error"]["message"].is_string(), "{body}")
            }
        }
    }
}

/// An upstream that answers every request with one status and body, and counts them.
async fn stub(status: u16, body: Value) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let body = body.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                http::StatusCode::from_u16(status).unwrap(),
                [(http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

fn stub_provider(dialect: Dialect, addr: SocketAddr) -> ProviderConfig {
    let base = match dialect {
        Dialect::Anthropic => format!("http://{addr}"),
        Dialect::OpenAi | Dialect::OpenAiResponses => format!("http://{addr}/v1"),
    };
    let mut p = ProviderConfig::new(dialect, &base, "");
    p.api_key_env = None;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_length_400_fails_over_at_once_and_a_content_policy_400_does_not() {
    let (long, long_hits) = stub(
        400,
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum"
        }}),
    )
    .await;
    let (policy, policy_hits) = stub(
        400,
        json!({"error": {
            "message": "Your request was rejected as a result of our safety system.",
            "type": "invalid_request_error",
            "param": null,
            "code": "content_policy_violation"
        }}),
    )
    .await;
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    let h = rs::start(3, |c| {
        c.providers
            .insert("small".into(), stub_provider(Dialect::Anthropic, long));
        c.providers
            .insert("strict".into(), stub_provider(Dialect::OpenAi, policy));
        rs::alias(
            c,
            "long",
            "small/claude-small",
            &["openai/x_tool_use_with_text"],
        );
        rs::alias(
            c,
            "policed",
            "strict/gpt-strict",
            &["anthropic/tool_use_with_text"],
        );
    })
    .await;
    h.replay
        .insert_fixture(Dialect::OpenAi, &rec.reencoded_name(), rec.reencoded());
    for (i, door) in DOORS.into_iter().enumerate() {
        let errs = whole(&h, door, "long", &rec).await;
        assert!(errs.is_empty(), "{}: {errs:?}", door_name(door));
        assert_eq!(
            long_hits.load(Ordering::SeqCst),
            i + 1,
            "{}: the context-length refusal is not retried",
            door_name(door)
        );
        assert_eq!(count(&h, Dialect::OpenAi, "x_tool_use_with_text"), i + 1);

        let response = h
            .chat(door, &[], &gw::chat_body(door, "policed", true))
            .await;
        let status = response.status();
        let body = gw::json_of(response).await;
        assert_eq!(status, 400, "{}: {body}", door_name(door));
        assert!(
            body.to_string().contains("safety system"),
            "{}: {body}",
            door_name(door)
        );
        assert_eq!(policy_hits.load(Ordering::SeqCst), i + 1);
        assert_eq!(
            count(&h, Dialect::Anthropic, "tool_use_with_text"),
            0,
            "{}: the content-policy refusal is not laundered by the fallback",
            door_name(door)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_skips_the_primary_and_lets_it_back_after_a_probe() {
    const COOLDOWN_MS: u64 = 3000;
    const PRIMARY: &str = "status=503,times=2:tool_use_with_text";
    let route = format!("anthropic/{PRIMARY}");
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    let h = rs::start(1, |c| {
        c.streaming.circuit_breaker.failure_threshold = 2;
        // Long enough that the "while open" request below always lands inside it on a
        // loaded machine; the test waits it out once.
        c.streaming.circuit_breaker.cooldown_ms = COOLDOWN_MS;
        rs::alias(c, "cb", &route, &["openai/x_tool_use_with_text"]);
    })
    .await;
    h.replay
        .insert_fixture(Dialect::OpenAi, &rec.reencoded_name(), rec.reencoded());
    let state = || async {
        let r = h.client.get(h.url("/admin/routes")).send().await.unwrap();
        let v: Value = gw::json_of(r).await;
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route.as_str())
            .map(|r| r["state"].as_str().unwrap().to_owned())
    };
    let primary = || count(&h, Dialect::Anthropic, PRIMARY);
    let fallback = || count(&h, Dialect::OpenAi, "x_tool_use_with_text");
    let door = Dialect::Anthropic;

    // Two failures (each request fails over and is answered whole): the breaker opens.
    for i in 1..=2 {
        let errs = whole(&h, door, "cb", &rec).await;
        assert!(errs.is_empty(), "request {i}: {errs:?}");
        assert_eq!((primary(), fallback()), (i, i));
    }
    assert_eq!(state().await.as_deref(), Some("open"));
    // Open: the primary is skipped, the fallback answers.
    let errs = whole(&h, Dialect::OpenAi, "cb", &rec).await;
    assert!(errs.is_empty(), "while open: {errs:?}");
    assert_eq!(
        (primary(), fallback()),
        (2, 3),
        "no request reaches an open route"
    );
    // After the cooldown one probe goes through; the primary has recovered (`times=2`).
    // A timer never fires early: after this the cooldown is over, however loaded the machine.
    tokio::time::sleep(Duration::from_millis(COOLDOWN_MS + 100)).await;
    let errs = whole(&h, door, "cb", &rec).await;
    assert!(errs.is_empty(), "probe: {errs:?}");
    assert_eq!(
        (primary(), fallback()),
        (3, 3),
        "the probe is answered by the primary"
    );
    assert_eq!(state().await.as_deref(), Some("closed"));
    // Traffic is back on the primary.
    let errs = whole(&h, Dialect::OpenAi, "cb", &rec).await;
    assert!(errs.is_empty(), "after the probe: {errs:?}");
    assert_eq!((primary(), fallback()), (4, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_reach_the_client_and_provider_side_refusals_fail_over_without_retry() {
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    // (knob, Some(status the client gets) or None: the fallback answers).
    let table: [(&str, Option<u16>); 6] = [
        ("status=400", Some(400)),
        ("status=422", Some(422)),
        ("status=413", Some(413)),
        ("status=401", None),
        ("status=403", None),
        ("status=404", None),
    ];
    let h = rs::start(3, |c| {
        for (knob, _) in table {
            rs::alias(
                c,
                knob,
                &format!("anthropic/{knob}:tool_use_with_text"),
                &["openai/x_tool_use_with_text"],
            );
        }
    })
    .await;
    h.replay
        .insert_fixture(Dialect::OpenAi, &rec.reencoded_name(), rec.reencoded());
    let mut failures = Vec::new();
    for (knob, client_status) in table {
        for door in DOORS {
            let primary = format!("{knob}:tool_use_with_text");
            let (p0, f0) = (
                count(&h, Dialect::Anthropic, &primary),
                count(&h, Dialect::OpenAi, "x_tool_use_with_text"),
            );
            let mut errs = match client_status {
                Some(want) => {
                    let response = h.chat(door, &[], &gw::chat_body(door, knob, true)).await;
                    let status = response.status().as_u16();
                    let body = gw::json_of(response).await;
                    let shaped = match door {
                        Dialect::Anthropic => body["type"] == "error",
                        Dialect::OpenAi | Dialect::OpenAiResponses => body["error"].is_object(),
                    };
                    let mut errs = Vec::new();
                    if status != want || !shaped {
                        errs.push(format!(
                            "want {want} in the door's dialect, got {status} {body}"
                        ));
                    }
                    errs
                }
                None => whole(&h, door, knob, &rec).await,
            };
            let sent = (
                count(&h, Dialect::Anthropic, &primary) - p0,
                count(&h, Dialect::OpenAi, "x_tool_use_with_text") - f0,
            );
            let want = (1, usize::from(client_status.is_none()));
            if sent != want {
                errs.push(format!(
                    "upstream requests (primary, fallback): want {want:?}, got {sent:?}"
                ));
            }
            if !errs.is_empty() {
                failures.push(format!("{} {knob}: {errs:?}", door_name(door)));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_answer_survives_the_same_faults() {
    let rec = rs::recording(Dialect::Anthropic, "tool_use_with_text");
    let h = rs::start(3, |_| {}).await;
    let mut failures = Vec::new();
    for (i, knobs) in [
        "reset_after=9,times=1",
        "cut_after=4,times=1",
        "overloaded_after=10,times=1",
        "status=503,times=1",
        "status=429,retry_after_ms=50,times=1",
    ]
    .into_iter()
    .enumerate()
    {
        for door in DOORS {
            // A fixture name of its own per request, so that `times` counts it alone.
            let fixture = format!("ns{i}{}_tool_use_with_text", door_name(door).len());
            h.replay
                .insert_fixture(Dialect::Anthropic, &fixture, rec.body.clone());
            let model = format!("anthropic/{knobs}:{fixture}");
            let response = h.chat(door, &[], &gw::chat_body(door, &model, false)).await;
            let status = response.status();
            let body = gw::json_of(response).await;
            if status != 200 {
                failures.push(format!("{} {model}: {status} {body}", door_name(door)));
                continue;
            }
            let got = gw::seen_body(door, &body);
            let want = &rec.seen;
            let calls_ok = got.calls.len() == want.calls.len()
                && got
                    .calls
                    .iter()
                    .zip(&want.calls)
                    .all(|(g, w)| g.0 == w.0 && gw::same_args(&g.1, &w.1, false));
            let finish = want
                .finish
                .map(|f| gw::crossed(f, door, !want.calls.is_empty()));
            if got.text != want.text || !calls_ok || got.finish != finish {
                failures.push(format!(
                    "{} {model}: want {:?} {:?} {finish:?}, got {:?} {:?} {:?}",
                    door_name(door),
                    want.text,
                    want.calls,
                    got.text,
                    got.calls,
                    got.finish
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
