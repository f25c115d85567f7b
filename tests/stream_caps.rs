//! The hub's caps through real sockets: a stream over `streams.max_live` (503) or
//! `streams.max_live_per_key` (429) is refused at every door that goes through the hub, in
//! the door's dialect, with `Retry-After`, before any upstream call; and a live stream over
//! its share of `streams.max_bytes` ends with a `memory_cap` error at every door, after
//! everything it kept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/openai_deltas.rs"]
mod openai_deltas;

use futures_util::{SinkExt, StreamExt};
use gw::{chat_body, json_of};
use openai_deltas::openai_deltas;
use providers::{Dialect, Envelope};
use serde_json::Value;
use streamgate::config::Config;
use streamgate::keys::{GatewayKeyConfig, generate, hex, sha256};
use streamgate::ws::{ClientDecoder, ClientFrame, Compression, DecoderLimits, ErrorCode, Incoming};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A recording dripped slowly enough to stay live for the whole test.
const SLOW: &str = "openai/drip=5000:text_basic";

/// Starts a native stream of `model` as `key` (if any) and returns the response.
async fn native(
    h: &gw::Harness,
    key: Option<&str>,
    dialect: Dialect,
    model: &str,
) -> reqwest::Response {
    let mut r = h
        .client
        .post(h.url("/v1/streams"))
        .header("streamgate-dialect", dialect.as_str())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(dialect, model, true)).unwrap());
    if let Some(key) = key {
        r = r.header("authorization", format!("Bearer {key}"));
    }
    r.send().await.unwrap()
}

/// A resumable answer of the OpenAI or Anthropic door.
async fn door(
    h: &gw::Harness,
    key: Option<&str>,
    dialect: Dialect,
    model: &str,
) -> reqwest::Response {
    let mut r = h
        .client
        .post(h.url(gw::door_path(dialect)))
        .header("streamgate-resumable", "true")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(dialect, model, true)).unwrap());
    if let Some(key) = key {
        r = r.header("authorization", format!("Bearer {key}"));
    }
    r.send().await.unwrap()
}

/// Asserts the refusal of a live cap: `status`, `Retry-After`, the dialect's error shape.
async fn assert_refused(r: reqwest::Response, dialect: Dialect, status: u16, what: &str) {
    assert_eq!(r.status(), status, "{what}");
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1"),
        "{what}"
    );
    let body = json_of(r).await;
    match dialect {
        Dialect::OpenAi | Dialect::OpenAiResponses => {
            assert_eq!(
                body["error"]["code"], "too_many_live_streams",
                "{what}: {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_live"),
                "{what}: {body}"
            );
        }
        Dialect::Anthropic => {
            let want = if status == 429 {
                "rate_limit_error"
            } else {
                "overloaded_error"
            };
            assert_eq!(body["error"]["type"], want, "{what}: {body}");
        }
    }
}

/// A WebSocket `start` of `model` on `h` (no key: an open gateway), followed to its
/// `stream.end`: its events, or the `error` frame that refused it.
async fn websocket_start(
    h: &gw::Harness,
    model: &str,
) -> Result<Vec<Envelope>, (ErrorCode, String)> {
    let request = format!("ws://{}/v1/ws", h.gateway)
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio::time::timeout(gw::BOUND, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    let frame = ClientFrame::Start {
        id: Some("ws".into()),
        dialect: Some(Dialect::OpenAi),
        request: chat_body(Dialect::OpenAi, model, true),
        detach: true,
    };
    let streamgate::ws::Message::Text(text) =
        streamgate::ws::encode_client_frame(Compression::None, &frame)
    else {
        panic!("uncompressed frames are text");
    };
    ws.send(Message::Text(text.into())).await.unwrap();
    let mut decoder = ClientDecoder::new(Compression::None, DecoderLimits::default());
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(gw::BOUND, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = next
            && let Some(incoming) = decoder
                .decode(streamgate::ws::Message::Text(t.as_str().to_owned()))
                .unwrap()
        {
            match incoming {
                Incoming::Error { code, message, .. } => return Err((code, message)),
                Incoming::Event(e) => {
                    let end = matches!(e.event, providers::AgentEvent::StreamEnd(_));
                    events.push(e);
                    if end {
                        return Ok(events);
                    }
                }
                Incoming::Started { .. } | Incoming::Pong(_) => {}
            }
        }
    }
}

/// Asserts `events` are every kept event in order, then a `memory_cap` error and the end.
fn assert_memory_cap_end(events: &[Envelope], what: &str) {
    let n = events.len();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "{what}: every kept event, in order");
    }
    match &events[n - 2].event {
        providers::AgentEvent::Error(info) => {
            assert_eq!(info.code, "memory_cap", "{what}: {info:?}")
        }
        other => panic!("{what}: not a memory_cap end: {other:?}"),
    }
    assert!(
        matches!(events[n - 1].event, providers::AgentEvent::StreamEnd(_)),
        "{what}"
    );
    assert!(
        n > 100 && n < 4000,
        "{what}: kept up to the cap: {n} events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_live_every_hub_door_answers_503_before_any_upstream_call() {
    let h = gw::start_with(|c| c.streams.max_live = 2).await;
    // Two live streams, their clients gone (they go on detached, and still count).
    for _ in 0..2 {
        let r = native(&h, None, Dialect::OpenAi, SLOW).await;
        assert_eq!(r.status(), 200);
    }
    let upstream_calls = h.replay.requests().len();
    for dialect in Dialect::ALL {
        assert_refused(
            native(&h, None, dialect, "openai/text_basic").await,
            dialect,
            503,
            &format!("native {dialect}"),
        )
        .await;
        assert_refused(
            door(&h, None, dialect, "openai/text_basic").await,
            dialect,
            503,
            &format!("door {dialect}"),
        )
        .await;
    }
    let (code, message) = websocket_start(&h, "openai/text_basic").await.unwrap_err();
    assert_eq!(code, ErrorCode::Unavailable, "{message}");
    assert!(message.contains("max_live"), "{message}");
    assert_eq!(
        h.replay.requests().len(),
        upstream_calls,
        "no refused stream reached the upstream"
    );
    // An answer that does not go through the hub is not a live stream of the hub.
    let r = h
        .client
        .post(h.url(gw::door_path(Dialect::OpenAi)))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(Dialect::OpenAi, "openai/text_basic", true)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw::body_bytes(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_live_per_key_only_that_key_gets_429_and_a_stream_that_ended_frees_its_place() {
    let (one, two) = (generate().unwrap(), generate().unwrap());
    let h = gw::start_with(|c: &mut Config| {
        c.streams.max_live_per_key = 1;
        for (name, key) in [("one", &one), ("two", &two)] {
            c.keys.insert(
                name.into(),
                GatewayKeyConfig {
                    sha256: Some(hex(&sha256(key))),
                    ..GatewayKeyConfig::default()
                },
            );
        }
    })
    .await;
    let live = native(&h, Some(&one), Dialect::OpenAi, SLOW).await;
    assert_eq!(live.status(), 200);
    let id = gw::stream_id(&live);
    for dialect in Dialect::ALL {
        assert_refused(
            native(&h, Some(&one), dialect, "openai/text_basic").await,
            dialect,
            429,
            &format!("native {dialect}"),
        )
        .await;
        assert_refused(
            door(&h, Some(&one), dialect, "openai/text_basic").await,
            dialect,
            429,
            &format!("door {dialect}"),
        )
        .await;
    }
    // The other key is not held back by the first one's streams.
    let r = native(&h, Some(&two), Dialect::OpenAi, "openai/text_basic").await;
    assert_eq!(r.status(), 200);
    gw::body_bytes(r).await;
    // Once the first key's stream ended (cancelled here), its place is free again.
    let cancelled = h
        .client
        .delete(h.url(&format!("/v1/streams/{id}")))
        .header("authorization", format!("Bearer {one}"))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    gw::body_bytes(live).await;
    let deadline = std::time::Instant::now() + gw::BOUND;
    loop {
        let r = native(&h, Some(&one), Dialect::OpenAi, "openai/text_basic").await;
        if r.status() == 200 {
            gw::body_bytes(r).await;
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The envelopes of a native SSE body.
fn envelopes(body: &[u8]) -> Vec<Envelope> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_over_its_share_ends_with_memory_cap_at_every_door() {
    const MAX: usize = 256 << 10;
    let h = gw::start_with(|c| c.streams.max_bytes = MAX).await;
    // About 2 MB of answer: eight times the cap.
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "x_long",
        openai_deltas((0..4000).map(|_| "y".repeat(500))),
    );
    let model = "openai/x_long";

    let r = native(&h, None, Dialect::OpenAi, model).await;
    assert_eq!(r.status(), 200);
    let id = gw::stream_id(&r);
    let events = envelopes(&gw::body_bytes(r).await);
    let n = events.len();
    assert_memory_cap_end(&events, "native SSE");
    // The hub shows it cut, and what it keeps stays within the cap.
    let admin: Value = json_of(h.client.get(h.url("/admin/streams")).send().await.unwrap()).await;
    assert!(
        admin["totals"]["cut"].as_u64().unwrap() >= 1,
        "{}",
        admin["totals"]
    );
    assert!(
        admin["totals"]["buffer_bytes"].as_u64().unwrap() <= (MAX + (64 << 10)) as u64,
        "{}",
        admin["totals"]
    );
    // It is not live any more: a resume gets the same end.
    let again = h
        .client
        .get(h.url(&format!("/v1/streams/{id}?after={}", n - 3)))
        .send()
        .await
        .unwrap();
    if again.status() == 200 {
        let tail = envelopes(&gw::body_bytes(again).await);
        assert!(
            matches!(&tail[0].event, providers::AgentEvent::Error(i) if i.code == "memory_cap")
        );
    } else {
        // Forgotten already to make room: as unknown as any forgotten stream.
        assert_eq!(again.status(), 404);
    }

    for dialect in Dialect::ALL {
        let r = door(&h, None, dialect, model).await;
        assert_eq!(r.status(), 200, "{dialect}");
        let body = String::from_utf8(gw::body_bytes(r).await).unwrap();
        assert!(
            body.contains("streams.max_bytes"),
            "{dialect}: the end names the cap: {}",
            &body[body.len().saturating_sub(600)..]
        );
        let (decoded, end) = gw::decode(dialect, body.as_bytes());
        assert!(
            end.is_err()
                || decoded
                    .iter()
                    .any(|e| matches!(e, providers::AgentEvent::Error(_))),
            "{dialect}: the client sees an error, not a clean end"
        );
    }
}
