//! Resuming the native door's streams through real sockets: `GET /v1/streams/{id}` from a
//! seq (`Last-Event-ID` or `?after=`), clients that drop at random points, `DELETE`,
//! detached generation and its timeout, retention, and the OpenAI/Anthropic doors' opt-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::time::Duration;

use gw::chat_body;
use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};

/// A long recording dripped at 2 ms a frame: long enough to drop and come back mid-stream.
const LONG: &str = "openai/drip=2:text_long_obfuscation";

use gw::NativeReader as Reader;

async fn post_stream(h: &gw::Harness, model: &str) -> reqwest::Response {
    gw::post_stream(&h.url(""), Dialect::OpenAi, model).await
}

use gw::stream_id;

/// Reads `r` to its end.
async fn read_all(r: reqwest::Response) -> Vec<Envelope> {
    let mut reader = Reader::default();
    reader.feed(&r.bytes().await.unwrap());
    for (id, env) in &reader.frames {
        assert_eq!(id, &env.seq.to_string(), "the SSE id is the seq");
    }
    reader.frames.into_iter().map(|(_, e)| e).collect()
}

/// Reads `r` until at least `n` frames arrived (or it ends), then drops the connection.
async fn read_some(mut r: reqwest::Response, n: usize) -> Vec<Envelope> {
    let mut reader = Reader::default();
    while reader.frames.len() < n {
        match r.chunk().await.unwrap() {
            Some(bytes) => reader.feed(&bytes),
            None => break,
        }
    }
    reader.frames.into_iter().map(|(_, e)| e).collect()
}

async fn get(h: &gw::Harness, id: &str, after: Option<u64>, header: bool) -> reqwest::Response {
    let path = match (after, header) {
        (Some(a), false) => format!("/v1/streams/{id}?after={a}"),
        _ => format!("/v1/streams/{id}"),
    };
    let mut req = gw::client().get(h.url(&path));
    if let (Some(a), true) = (after, header) {
        req = req.header("last-event-id", a.to_string());
    }
    req.send().await.unwrap()
}

/// Polls `GET /admin/streams` (every 10 ms, `secs` at most) until stream `id` is finished;
/// returns its row.
async fn wait_finished(h: &gw::Harness, id: &str, secs: u64) -> serde_json::Value {
    for _ in 0..secs * 100 {
        let list = gw::json_of(
            gw::client()
                .get(h.url("/admin/streams"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let row = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .expect("the stream is listed");
        if row["status"] == "finished" {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stream {id} did not finish within {secs} s");
}

fn assert_gap_free(events: &[Envelope], id: &str) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "seq {i} of {}", events.len());
        assert_eq!(e.stream, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stream_replays_from_any_seq() {
    let h = gw::start().await;
    let r = post_stream(&h, "anthropic/tool_use_with_text").await;
    let id = stream_id(&r);
    let all = read_all(r).await;
    assert_gap_free(&all, &id);
    assert!(matches!(
        all.last().unwrap().event,
        AgentEvent::StreamEnd(_)
    ));
    // From the start, and after every seq but the last, by header and by query.
    let from_start = read_all(get(&h, &id, None, false).await).await;
    assert_eq!(from_start, all);
    for after in 0..all.len() as u64 - 1 {
        let header = after % 2 == 0;
        let r = get(&h, &id, Some(after), header).await;
        assert_eq!(r.status(), 200, "after {after}");
        assert_eq!(r.headers()["streamgate-stream-id"], id.as_str());
        let rest = read_all(r).await;
        assert_eq!(rest, all[after as usize + 1..], "after {after}");
    }
    // The client has it all: 204 tells an EventSource to stop reconnecting.
    let r = get(&h, &id, Some(all.len() as u64 - 1), true).await;
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resumes_get_clear_errors_in_the_callers_dialect() {
    let h = gw::start().await;
    let r = post_stream(&h, "anthropic/text_simple").await;
    let id = stream_id(&r);
    let all = read_all(r).await;
    let beyond = all.len() as u64;
    let r = get(&h, &id, Some(beyond), false).await;
    assert_eq!(r.status(), 416);
    let body = gw::json_of(r).await;
    assert_eq!(body["error"]["code"], "seq_beyond_end", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("last seq is {}", beyond - 1)),
        "{body}"
    );

    let r = get(&h, "st_nope", None, false).await;
    assert_eq!(r.status(), 404);
    assert_eq!(gw::json_of(r).await["error"]["code"], "stream_not_found");
    let r = gw::client()
        .get(h.url("/v1/streams/st_nope"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = gw::json_of(r).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");

    let r = gw::client()
        .get(h.url(&format!("/v1/streams/{id}")))
        .header("last-event-id", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = gw::client()
        .delete(h.url("/v1/streams/st_nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The property: a client that drops at random points and resumes from the last seq it saw
/// ends up with exactly the stream's events, none repeated or missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_dropping_at_random_points_resume_to_the_exact_sequence() {
    let h = gw::start().await;
    for seed in 0..12u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let r = post_stream(&h, LONG).await;
        let id = stream_id(&r);
        let mut got = read_some(r, rng.usize(1..40)).await;
        let mut drops = 1;
        // Bounded: each round makes progress unless the stream is over.
        for _ in 0..200 {
            if matches!(got.last().map(|e| &e.event), Some(AgentEvent::StreamEnd(_))) {
                break;
            }
            let after = got.last().map(|e| e.seq);
            let header = rng.bool();
            let r = get(&h, &id, after, header).await;
            assert_eq!(r.status(), 200, "seed {seed}");
            if rng.u8(..4) == 0 {
                got.extend(read_all(r).await);
            } else {
                got.extend(read_some(r, rng.usize(1..60)).await);
                drops += 1;
            }
        }
        assert_gap_free(&got, &id);
        let whole = read_all(get(&h, &id, None, false).await).await;
        assert_eq!(got, whole, "seed {seed} after {drops} drops");
        let text = Assembler::assemble(&got.iter().map(|e| e.event.clone()).collect::<Vec<_>>());
        assert!(text.text().len() > 1000, "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_goes_on_while_no_client_follows() {
    let h = gw::start().await;
    let r = post_stream(&h, LONG).await;
    let id = stream_id(&r);
    let seen = read_some(r, 3).await;
    // Nobody follows now; the answer still completes.
    let row = wait_finished(&h, &id, 20).await;
    assert_eq!(row["subscribers"], 0);
    let rest = read_all(get(&h, &id, Some(seen.last().unwrap().seq), false).await).await;
    match &rest.last().unwrap().event {
        AgentEvent::StreamEnd(end) => assert_eq!(end.reason, FinishReason::Stop),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_comes_back_to_is_cancelled_after_the_detach_time() {
    let h = gw::start_with(|c| c.streams.detach_ms = 50).await;
    let r = post_stream(&h, "openai/drip=20:text_long_obfuscation").await;
    let id = stream_id(&r);
    let seen = read_some(r, 2).await;
    // Only the admin list is polled: following the stream again would stop the timer.
    wait_finished(&h, &id, 20).await;
    let rest = read_all(get(&h, &id, Some(seen.last().unwrap().seq), false).await).await;
    let kinds: Vec<&str> = rest.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "stream.end"],
        "{kinds:?}"
    );
    match &rest[rest.len() - 2].event {
        AgentEvent::Error(e) => assert_eq!(e.code, "detached_timeout"),
        other => panic!("{other:?}"),
    }
    assert!(
        rest.len() < 250,
        "generation stopped early: {} events",
        rest.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cancels_generation_and_followers_see_why() {
    let h = gw::start().await;
    let r = post_stream(&h, "openai/drip=20:text_long_obfuscation").await;
    let id = stream_id(&r);
    let mut follower = Reader::default();
    let mut r = r;
    follower.feed(&r.chunk().await.unwrap().unwrap());
    let d = gw::client()
        .delete(h.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    assert_eq!(gw::json_of(d).await["cancelled"], true);
    while let Some(bytes) = r.chunk().await.unwrap() {
        follower.feed(&bytes);
    }
    let events: Vec<AgentEvent> = follower.frames.into_iter().map(|(_, e)| e.event).collect();
    assert!(events.len() < 100, "stopped early: {}", events.len());
    match &events[events.len() - 2] {
        AgentEvent::Error(e) => assert_eq!(e.code, "cancelled"),
        other => panic!("{other:?}"),
    }
    // Cancelling again says it had already ended.
    let d = gw::client()
        .delete(h.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gw::json_of(d).await["cancelled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_streams_are_forgotten_after_their_retention() {
    let h = gw::start_with(|c| c.streams.retention_ms = 0).await;
    let r = post_stream(&h, "anthropic/text_simple").await;
    let id = stream_id(&r);
    read_all(r).await;
    let mut gone = false;
    for _ in 0..300 {
        if get(&h, &id, None, false).await.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "forgotten by the janitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_doors_opt_in_to_resumable_answers() {
    let h = gw::start().await;
    for door in Dialect::ALL {
        for stream in [true, false] {
            let r = gw::client()
                .post(h.url(gw::door_path(door)))
                .header("streamgate-resumable", "true")
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&chat_body(door, "anthropic/tool_use_with_text", stream))
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let id = stream_id(&r);
            let door_text = if stream {
                let body = gw::body_bytes(r).await;
                let (events, end) = gw::decode(door, &body);
                assert!(end.is_ok(), "{door}: {end:?}");
                Assembler::assemble(&events).text()
            } else {
                let body = gw::json_of(r).await;
                gw::seen_body(door, &body).text
            };
            let events = read_all(get(&h, &id, Some(0), false).await).await;
            assert_eq!(events[0].seq, 1);
            let again =
                Assembler::assemble(&events.into_iter().map(|e| e.event).collect::<Vec<_>>());
            assert_eq!(again.text(), door_text, "{door} stream={stream}");
            assert!(!door_text.is_empty());
        }
    }
    // Without the header, no stream id.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &chat_body(Dialect::OpenAi, "anthropic/text_simple", true),
        )
        .await;
    assert!(r.headers().get("streamgate-stream-id").is_none());
}

/// The engine's half of crash recovery: given the events a client already has, the answer
/// continues after them (a `retry` seam, then the rest) and the whole reads as the
/// uninterrupted answer, at every cut point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_continues_an_answer_from_the_events_a_client_has() {
    use streamgate::engine::Call;
    use streamgate::upstream::{ClientKey, ForwardHeaders};
    let h = gw::start().await;
    let mut config = h.replay.config();
    config.streams.journal.enabled = false;
    let state = streamgate::server::AppState::new(config).unwrap();
    for (model, door) in [
        ("anthropic/text_basic", Dialect::Anthropic),
        ("openai/text_long_obfuscation", Dialect::OpenAi),
        ("anthropic/thinking_signature", Dialect::OpenAi),
    ] {
        let body = chat_body(door, model, true);
        let call = Call {
            door,
            request: door.wire().parse_request(body.into()).unwrap(),
            key: ClientKey { door, key: None },
            forward: ForwardHeaders::default(),
            caller: streamgate::keys::Caller::open(),
            observed: streamgate::telemetry::request::Observed::detached("test".into()),
        };
        let collect = |answer: streamgate::engine::Answer| async move {
            use futures_util::StreamExt;
            answer
                .events
                .map(|e| e.unwrap())
                .collect::<Vec<AgentEvent>>()
                .await
        };
        let whole = collect(state.engine.answer(call.clone()).await.unwrap()).await;
        let want = Assembler::assemble(&whole);
        let step = (whole.len() / 7).max(1);
        for cut in (2..whole.len() - 1).step_by(step) {
            let prior = &whole[..cut];
            let rest = collect(state.engine.resume(call.clone(), prior).await.unwrap()).await;
            assert!(
                rest.iter().any(|e| matches!(e, AgentEvent::Retry { .. })),
                "{model} cut {cut}: the seam is marked"
            );
            let mut joined = prior.to_vec();
            joined.extend(rest);
            let got = Assembler::assemble(&joined);
            assert_eq!(got.text(), want.text(), "{model} cut {cut}");
            assert_eq!(
                got.end.as_ref().map(|e| e.reason),
                want.end.as_ref().map(|e| e.reason),
                "{model} cut {cut}"
            );
            assert!(got.error.is_none(), "{model} cut {cut}");
            assert_eq!(
                joined
                    .iter()
                    .filter(|e| matches!(e, AgentEvent::StreamStart(_)))
                    .count(),
                1,
                "{model} cut {cut}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_keep_alive_comments_that_clients_ignore() {
    // Gaps of 200 ms against a keep-alive of 20: a busy machine would have to hold the
    // gateway's task back for 180 ms at every one of the 9 gaps to miss the comment.
    let h = gw::start_with(|c| c.streams.sse_keepalive_ms = 20).await;
    let r = post_stream(&h, "anthropic/drip=200:text_simple").await;
    let body = gw::body_bytes(r).await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\n\n: keep-alive\n\n"), "{text}");
    let mut reader = Reader::default();
    reader.feed(&body);
    let events: Vec<AgentEvent> = reader.frames.into_iter().map(|(_, e)| e.event).collect();
    assert_eq!(
        Assembler::assemble(&events).text(),
        Assembler::assemble(
            &gw::decode(
                Dialect::Anthropic,
                streamgate::replay::fixture(Dialect::Anthropic, "text_simple").unwrap()
            )
            .0
        )
        .text()
    );
}
