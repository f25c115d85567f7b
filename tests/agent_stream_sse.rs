//! `POST /v1/streams`, the native door, through real sockets: Agent Events as SSE with `id:` =
//! seq and `event:` = type, the stream id in a header and in every envelope, for requests of
//! either dialect over either provider; a failed stream ends with `error` + `stream.end`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use gw::chat_body;
use providers::sse::{SseError, SseParser};
use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};

/// (id, event name, envelope) of every frame.
fn frames(body: &[u8]) -> Vec<(String, String, Envelope)> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser
        .feed::<SseError>(body, &mut |f| {
            out.push((
                f.id.unwrap_or_default().to_owned(),
                f.event.unwrap_or_default().to_owned(),
                serde_json::from_str(f.data).unwrap(),
            ));
            Ok(())
        })
        .unwrap();
    out
}

async fn open(h: &gw::Harness, dialect: Dialect, model: &str) -> (String, Vec<u8>) {
    let r = gw::client()
        .post(h.url("/v1/streams"))
        .header("streamgate-dialect", dialect.as_str())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(dialect, model, true)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{dialect} {model}");
    let id = r
        .headers()
        .get("streamgate-stream-id")
        .expect("a stream id header")
        .to_str()
        .unwrap()
        .to_owned();
    (id, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_seq_as_id_and_type_as_event_for_both_request_dialects() {
    let h = gw::start().await;
    for dialect in Dialect::ALL {
        for (model, fixture_dialect, fixture) in [
            (
                "anthropic/tool_use_with_text",
                Dialect::Anthropic,
                "tool_use_with_text",
            ),
            (
                "openai/tool_calls_parallel",
                Dialect::OpenAi,
                "tool_calls_parallel",
            ),
        ] {
            let (id, body) = open(&h, dialect, model).await;
            let frames = frames(&body);
            for (i, (sse_id, event, env)) in frames.iter().enumerate() {
                assert_eq!(sse_id, &i.to_string(), "{dialect} {model}: id is the seq");
                assert_eq!(env.seq, i as u64);
                assert_eq!(event, env.event.kind(), "{dialect} {model}");
                assert_eq!(env.stream, id);
            }
            let events: Vec<AgentEvent> = frames.into_iter().map(|(_, _, e)| e.event).collect();
            assert!(matches!(events.first(), Some(AgentEvent::StreamStart(_))));
            assert!(matches!(events.last(), Some(AgentEvent::StreamEnd(_))));
            let want = Assembler::assemble(
                &gw::decode(
                    fixture_dialect,
                    streamgate::replay::fixture(fixture_dialect, fixture).unwrap(),
                )
                .0,
            );
            let got = Assembler::assemble(&events);
            assert_eq!(got.text(), want.text(), "{dialect} {model}");
            assert_eq!(got.tool_calls(), want.tool_calls(), "{dialect} {model}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_be_saved_ends_with_error_then_stream_end() {
    let h = gw::start_with(|c| {
        c.streaming.retry_policy.max_attempts = 1;
    })
    .await;
    let (_, body) = open(
        &h,
        Dialect::OpenAi,
        "anthropic/cut_after=10:tool_use_with_text",
    )
    .await;
    let frames = frames(&body);
    let kinds: Vec<&str> = frames.iter().map(|(_, e, _)| e.as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "stream.end"],
        "{kinds:?}"
    );
    match &frames.last().unwrap().2.event {
        AgentEvent::StreamEnd(end) => assert_eq!(end.reason, FinishReason::Error),
        other => panic!("{other:?}"),
    }
    for (i, (sse_id, _, _)) in frames.iter().enumerate() {
        assert_eq!(sse_id, &i.to_string(), "no gap in the seq");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dialect_header_is_a_400() {
    let h = gw::start().await;
    let r = gw::client()
        .post(h.url("/v1/streams"))
        .header("streamgate-dialect", "gemini")
        .body(
            serde_json::to_vec(&chat_body(Dialect::OpenAi, "anthropic/text_basic", true)).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gemini"),
        "{body}"
    );
}
