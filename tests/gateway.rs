//! The gateway through real sockets, table-driven over every fixture: each recording served by
//! the replay upstream, asked for at every door, streaming and not. What the client assembles
//! must be the fixture's own answer (same dialect), or the same content with the finish reason
//! mapped as docs/protocol.md says (other dialect).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use gw::{Seen, chat_body, crossed_from, decode, differences, seen_body, seen_events};
use providers::{Dialect, StreamDecoder};
use streamgate::replay;

/// The fixture's own answer as a client of `door` should see it.
fn want(source: Dialect, door: Dialect, body: &[u8]) -> Seen {
    let (events, result) = StreamDecoder::decode_all(source, body);
    result.unwrap();
    let mut seen = seen_events(&events, door == Dialect::Anthropic);
    if door != source
        && let Some(reason) = seen.finish
    {
        seen.finish = Some(crossed_from(reason, source, door, !seen.calls.is_empty()));
    }
    seen
}

/// OpenAI `n > 1` answers cannot be one Anthropic message or one Responses answer.
fn several_choices(source: Dialect, body: &[u8]) -> bool {
    let (events, _) = StreamDecoder::decode_all(source, body);
    events.iter().any(|e| match e {
        providers::AgentEvent::BlockStart { choice, .. }
        | providers::AgentEvent::ToolCallStart { choice, .. } => *choice > 0,
        providers::AgentEvent::StreamEnd(end) => !end.other_choices.is_empty(),
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_at_both_doors_streaming_and_not() {
    let h = gw::start().await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for source in Dialect::ALL {
        for name in replay::fixture_names(source) {
            let fixture = replay::fixture(source, name).unwrap();
            let model = format!("{}/{name}", source.as_str());
            for door in Dialect::ALL {
                for stream in [true, false] {
                    cases += 1;
                    let case = format!("{model} at the {door} door, stream={stream}");
                    let response = h.chat(door, &[], &chat_body(door, &model, stream)).await;
                    let status = response.status();
                    if door != Dialect::OpenAi && several_choices(source, fixture) {
                        // Refused: an error status (not streaming) or an error event (streaming).
                        let body = gw::body_bytes(response).await;
                        let refused = if stream {
                            decode(door, &body).1.is_err()
                        } else {
                            !status.is_success()
                        };
                        if !refused {
                            failures.push(format!("{case}: several choices were not refused"));
                        }
                        continue;
                    }
                    if let Err(e) = StreamDecoder::decode_all(source, fixture).1 {
                        // A recorded provider error reaches the client as that error.
                        let body = gw::body_bytes(response).await;
                        let code = match e {
                            providers::DecodeError::Upstream { error, .. } => error.code,
                            other => panic!("{case}: recording does not decode: {other}"),
                        };
                        let relayed = if stream {
                            status == 200 && decode(door, &body).1.is_err_and(|e| e.contains(&code))
                        } else {
                            !status.is_success() && String::from_utf8_lossy(&body).contains(&code)
                        };
                        if !relayed {
                            failures.push(format!(
                                "{case}: provider error {code} not relayed: {status} {}",
                                String::from_utf8_lossy(&body)
                            ));
                        }
                        continue;
                    }
                    if status != 200 {
                        let body = gw::body_bytes(response).await;
                        failures.push(format!(
                            "{case}: status {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                        continue;
                    }
                    let got = if stream {
                        let ct = response
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        if !ct.starts_with("text/event-stream") {
                            failures.push(format!("{case}: content-type {ct:?}"));
                        }
                        let body = gw::body_bytes(response).await;
                        let (events, result) = decode(door, &body);
                        if let Err(e) = result {
                            failures.push(format!("{case}: door stream does not decode: {e}"));
                            continue;
                        }
                        seen_events(&events, false)
                    } else {
                        let body = gw::json_of(response).await;
                        seen_body(door, &body)
                    };
                    // Non-streaming bodies carry no truncation flag: compare names only then.
                    let errs = differences(&want(source, door, fixture), &got, !stream);
                    if !errs.is_empty() {
                        failures.push(format!("{case}:\n  {}", errs.join("\n  ")));
                    }
                }
            }
        }
    }
    assert!(cases >= 4 * 25, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_serves_fixture_bytes_frame_by_frame() {
    let h = gw::start().await;
    let client = gw::client();
    for source in Dialect::ALL {
        let name = replay::fixture_names(source)[0];
        let fixture = replay::fixture(source, name).unwrap();
        let path = gw::door_path(source);
        let response = client
            .post(format!("{}{path}", h.replay.url()))
            .body(serde_json::to_vec(&chat_body(source, name, true)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut chunks = 0;
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            body.extend_from_slice(&chunk.unwrap());
            chunks += 1;
        }
        assert_eq!(body, fixture, "{name}");
        assert!(chunks > 1, "{name}: one blob");
        // Unknown model: 404 in the dialect's shape.
        let response = client
            .post(format!("{}{path}", h.replay.url()))
            .body(serde_json::to_vec(&chat_body(source, "no_such_fixture", true)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let body = gw::json_of(response).await;
        match source {
            Dialect::OpenAi | Dialect::OpenAiResponses => {
                assert_eq!(body["error"]["code"], "model_not_found")
            }
            Dialect::Anthropic => assert_eq!(body["error"]["type"], "not_found_error"),
        }
    }
}
