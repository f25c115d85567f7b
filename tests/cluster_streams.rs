//! Streams across gateway instances on one Redis (`[state] backend = "redis"`), with real
//! processes: `streamgate serve` twice or three times over one replay upstream living in the
//! test and one `redis-server` of the test's own. A stream started on A and resumed on B
//! (SSE `Last-Event-ID`, `?after=`, the WebSocket `resume`), A killed with SIGKILL mid-stream
//! and its streams continued by exactly one other instance, a client hopping between
//! instances on every reconnect, and Redis stopped and restarted under running streams.
//!
//! Skipped (with a printed SKIPPED line) only when `redis-server` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use process::GatewayProcess;
use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};
use redis_server::RedisServer;
use streamgate::replay::Replay;

/// A long answer, slow enough to be cut in the middle (10 ms between writes).
const SLOW: &str = "openai/drip=10:text_long_obfuscation";
/// The same answer, faster (for tests that read many streams whole).
const BRISK: &str = "openai/drip=4:text_long_obfuscation";

/// The configuration of one instance: the replay's providers, Redis with a short lease (a
/// dead instance's streams are taken over within about a second).
fn config(replay: &Replay, redis: &RedisServer) -> String {
    config_with(replay, redis, "")
}

/// [`config`] with more `[streams]` settings.
fn config_with(replay: &Replay, redis: &RedisServer, streams: &str) -> String {
    format!("[streams]\n{streams}\n{}", config_body(replay, redis))
}

fn config_body(replay: &Replay, redis: &RedisServer) -> String {
    format!(
        "{}\n[state]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"t\"\nlease_ms = 600\ntimeout_ms = 300\n",
        process::replay_providers(&replay.url()),
        redis.url()
    )
}

async fn replay() -> Replay {
    streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// The text of the fixture, uninterrupted.
fn fixture_text() -> String {
    let body = streamgate::replay::fixture(Dialect::OpenAi, "text_long_obfuscation").unwrap();
    Assembler::assemble(&gw::decode(Dialect::OpenAi, body).0).text()
}

/// The next chunk of `r`, within a generous bound; None at its end.
async fn chunk(r: &mut reqwest::Response) -> Option<bytes::Bytes> {
    tokio::time::timeout(Duration::from_secs(30), r.chunk())
        .await
        .expect("the stream said nothing for 30 s")
        .unwrap()
}

/// Reads `r` until `reader` holds at least `n` frames or the response ends (true then).
async fn read_until(r: &mut reqwest::Response, reader: &mut gw::NativeReader, n: usize) -> bool {
    while reader.frames.len() < n {
        match chunk(r).await {
            Some(bytes) => reader.feed(&bytes),
            None => return true,
        }
    }
    false
}

/// Everything `r` says, to its end.
async fn read_all(mut r: reqwest::Response) -> Vec<Envelope> {
    let mut reader = gw::NativeReader::default();
    read_until(&mut r, &mut reader, usize::MAX).await;
    reader.envelopes()
}

/// `GET /v1/streams/{id}` at `base`, after `after` by `Last-Event-ID` or by `?after=`.
async fn resume(base: &str, id: &str, after: Option<u64>, by_query: bool) -> reqwest::Response {
    let mut url = format!("{base}/v1/streams/{id}");
    let mut request = gw::client().get(&url);
    if let Some(after) = after {
        if by_query {
            url.push_str(&format!("?after={after}"));
            request = gw::client().get(&url);
        } else {
            request = request.header("last-event-id", after.to_string());
        }
    }
    request.send().await.unwrap()
}

/// The stream read whole from the start at `base`, once it has ended there (retried while
/// the instance still catches up).
async fn whole_from(base: &str, id: &str) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = resume(base, id, None, false).await;
        if r.status() == 200 {
            let all = read_all(r).await;
            if matches!(all.last().map(|e| &e.event), Some(AgentEvent::StreamEnd(_))) {
                return all;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} never gave {id} whole"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `all` is one whole answer of stream `id`: seqs 0.. with no gap or repeat, the fixture's
/// text, a normal end; `seams` retry events (a takeover is one).
fn assert_whole(all: &[Envelope], id: &str, seams: usize) {
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "no seq repeated or missing in {id}");
        assert_eq!(e.stream, id);
    }
    let retries = all
        .iter()
        .filter(|e| matches!(e.event, AgentEvent::Retry { .. }))
        .count();
    assert_eq!(retries, seams, "retry seams in {id}");
    let events: Vec<AgentEvent> = all.iter().map(|e| e.event.clone()).collect();
    let answer = Assembler::assemble(&events);
    assert!(answer.error.is_none(), "{:?}", answer.error);
    assert_eq!(
        answer.end.as_ref().map(|e| e.reason),
        Some(FinishReason::Stop)
    );
    assert_eq!(answer.text(), fixture_text());
}

/// A small deterministic generator for the cut points (seeded, reproducible).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_instance_is_killed_is_resumed_whole_on_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    let b = GatewayProcess::serve(&config(&replay, &redis)).await;
    // Killed at seeded points of the answer, a new A each time.
    let mut rng = Rng(0x5eed);
    for round in 1..=3u64 {
        let mut a = GatewayProcess::serve(&config(&replay, &redis)).await;
        let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
        let id = gw::stream_id(&r);
        let mut seen = gw::NativeReader::default();
        let cut = 2 + rng.below(60) as usize;
        assert!(!read_until(&mut r, &mut seen, cut).await, "still running");
        a.kill();
        drop(r);
        let seen = seen.envelopes();
        let last = seen.last().unwrap().seq;

        // Last-Event-ID on B: the rest, continued by B once A's lease lapsed.
        let r = resume(&b.url, &id, Some(last), false).await;
        assert_eq!(r.status(), 200);
        let rest = read_all(r).await;
        let mut all = seen.clone();
        all.extend(rest);
        assert_whole(&all, &id, 1);

        // `?after=` on B, from seeded points: exactly the tail of the same answer.
        for _ in 0..3 {
            let after = rng.below(all.len() as u64 - 1);
            let r = resume(&b.url, &id, Some(after), true).await;
            assert_eq!(r.status(), 200);
            assert_eq!(read_all(r).await, all[after as usize + 1..].to_vec());
        }
        let admin = gw::json_of(
            gw::client()
                .get(format!("{}/admin/streams", b.url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(admin["redis"]["taken_over"], round, "cut at {cut}: {admin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hopping_between_instances_gets_the_exact_sequence() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    let a = GatewayProcess::serve(&config(&replay, &redis)).await;
    let b = GatewayProcess::serve(&config(&replay, &redis)).await;
    for seed in [3u64, 17, 99] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut r = gw::post_stream(&a.url, Dialect::Anthropic, BRISK).await;
        let id = gw::stream_id(&r);
        let mut got: Vec<Envelope> = Vec::new();
        let mut on_a = true;
        let mut hops = 0;
        for _ in 0..500 {
            let mut reader = gw::NativeReader::default();
            let take = 1 + rng.below(12) as usize;
            let ended = read_until(&mut r, &mut reader, take).await;
            got.extend(reader.envelopes());
            if ended || matches!(got.last().map(|e| &e.event), Some(AgentEvent::StreamEnd(_))) {
                break;
            }
            // Cut here (mid-frame, maybe), reconnect on the other instance.
            on_a = !on_a;
            hops += 1;
            let base = if on_a { &a.url } else { &b.url };
            let after = got.last().map(|e| e.seq);
            r = resume(base, &id, after, hops % 2 == 0).await;
            if r.status() == 204 {
                break;
            }
            assert_eq!(r.status(), 200, "seed {seed}");
        }
        assert!(hops >= 2, "seed {seed}: the client hopped");
        // A stream no instance ever had is unknown everywhere (Redis answers: not a 503).
        let r = resume(&b.url, &format!("{id}x"), None, false).await;
        assert_eq!(r.status(), 404, "seed {seed}");
        let single = whole_from(&a.url, &id).await;
        assert_eq!(got, single, "seed {seed}: what the hopping client got");
        assert_eq!(whole_from(&b.url, &id).await, single, "seed {seed}");
        assert_whole(&single, &id, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_resume_on_b_follows_a_stream_started_on_a() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    let a = GatewayProcess::serve(&config(&replay, &redis)).await;
    let b = GatewayProcess::serve(&config(&replay, &redis)).await;
    let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
    let id = gw::stream_id(&r);
    let mut seen = gw::NativeReader::default();
    read_until(&mut r, &mut seen, 15).await;
    drop(r);
    let after = seen.envelopes().last().unwrap().seq;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", b.addr))
        .await
        .unwrap();
    let frame = serde_json::json!({"op": "resume", "stream": id, "after": after});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        frame.to_string().into(),
    ))
    .await
    .unwrap();
    let mut got: Vec<Envelope> = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the gateway said nothing for 30 s")
            .expect("the connection stays open")
            .unwrap();
        let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
            continue;
        };
        let mut v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(v["op"], "event", "{v}");
        v.as_object_mut().unwrap().remove("op");
        let envelope: Envelope = serde_json::from_value(v).unwrap();
        let end = matches!(envelope.event, AgentEvent::StreamEnd(_));
        got.push(envelope);
        if end {
            break;
        }
    }
    let single = whole_from(&a.url, &id).await;
    assert_eq!(got, single[after as usize + 1..].to_vec());
    assert_whole(&single, &id, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_survivors_exactly_one_continues_each_stream() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    let mut a = GatewayProcess::serve(&config(&replay, &redis)).await;
    let b = GatewayProcess::serve(&config(&replay, &redis)).await;
    let c = GatewayProcess::serve(&config(&replay, &redis)).await;
    let mut ids = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..3 {
        let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
        ids.push(gw::stream_id(&r));
        let mut seen = gw::NativeReader::default();
        read_until(&mut r, &mut seen, 5).await;
        responses.push(r);
    }
    a.kill();
    drop(responses);
    for id in &ids {
        let on_b = whole_from(&b.url, id).await;
        let on_c = whole_from(&c.url, id).await;
        assert_eq!(on_b, on_c, "{id}: one answer, whoever serves it");
        assert_whole(&on_b, id, 1);
    }
    let mut taken = 0;
    for g in [&b, &c] {
        let admin = gw::json_of(
            gw::client()
                .get(format!("{}/admin/streams", g.url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        taken += admin["redis"]["taken_over"].as_u64().unwrap();
    }
    assert_eq!(taken, 3, "each stream taken over exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load_loses_nothing_a_client_was_shown() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    let a = GatewayProcess::serve(&config(&replay, &redis)).await;
    let b = GatewayProcess::serve(&config(&replay, &redis)).await;

    let mut running = Vec::new();
    for _ in 0..3 {
        let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
        let id = gw::stream_id(&r);
        let mut seen = gw::NativeReader::default();
        read_until(&mut r, &mut seen, 10).await;
        running.push((id, r, seen));
    }
    redis.stop();

    // A stream started while Redis is down starts locally.
    let started_down = gw::post_stream(&a.url, Dialect::Anthropic, BRISK).await;
    let down_id = gw::stream_id(&started_down);
    // A stream B does not hold cannot be looked up: 503 with Retry-After, not 404.
    let r = resume(&b.url, &running[0].0, None, false).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    // The running streams finish whole for their clients on A.
    let mut finished = Vec::new();
    for (id, mut r, mut seen) in running {
        read_until(&mut r, &mut seen, usize::MAX).await;
        let all = seen.envelopes();
        assert_whole(&all, &id, 0);
        finished.push((id, all));
    }
    let down = read_all(started_down).await;
    assert_whole(&down, &down_id, 0);

    redis.restart().await;
    // Once Redis answers again (empty), A writes back what it kept: every stream is
    // resumable on B, whole, with no restart of either instance.
    finished.push((down_id, down));
    for (id, all) in &finished {
        assert_eq!(&whole_from(&b.url, id).await, all, "{id} on B");
    }
    // A counted the stream it started during the outage, and Redis misses nothing of A's now.
    let metrics = gw::client()
        .get(format!("{}/metrics", a.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, "streamgate_streams_degraded_starts_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "streamgate_streams_unsynced"),
        0.0,
        "{metrics}"
    );

    // New streams are shared again: one started on A is followed on B mid-way.
    let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
    let id = gw::stream_id(&r);
    let mut seen = gw::NativeReader::default();
    read_until(&mut r, &mut seen, 5).await;
    // Its id is taken on every instance: a client choosing it on B, which never saw the
    // stream, is refused (409).
    let dup = gw::client()
        .post(format!("{}/v1/streams", b.url))
        .header("streamgate-dialect", "anthropic")
        .header("streamgate-stream-id", &id)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&gw::chat_body(Dialect::Anthropic, SLOW, true)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let after = seen.envelopes().last().unwrap().seq;
    let on_b = resume(&b.url, &id, Some(after), false).await;
    assert_eq!(on_b.status(), 200);
    let mut all = seen.envelopes();
    all.extend(read_all(on_b).await);
    assert_whole(&all, &id, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_following_on_b_keeps_the_stream_generating_on_a_and_b_relays_a_cancel() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = replay().await;
    // Generation stops 1.5 s after the last client of the instance generating it left,
    // unless a client follows it on another instance (the answer lasts about 5 s).
    let config = config_with(&replay, &redis, "detach_ms = 1500");
    let a = GatewayProcess::serve(&config).await;
    let b = GatewayProcess::serve(&config).await;
    let mut r = gw::post_stream(
        &a.url,
        Dialect::Anthropic,
        "openai/drip=30:text_long_obfuscation",
    )
    .await;
    let id = gw::stream_id(&r);
    let mut seen = gw::NativeReader::default();
    read_until(&mut r, &mut seen, 3).await;
    drop(r);
    let after = seen.envelopes().last().unwrap().seq;
    let on_b = resume(&b.url, &id, Some(after), false).await;
    assert_eq!(on_b.status(), 200);
    let mut all = seen.envelopes();
    all.extend(read_all(on_b).await);
    assert_whole(&all, &id, 0);

    // A DELETE on B of a stream A generates reaches A: its followers anywhere get the
    // `cancelled` end.
    let mut r = gw::post_stream(&a.url, Dialect::Anthropic, SLOW).await;
    let id = gw::stream_id(&r);
    let mut seen = gw::NativeReader::default();
    read_until(&mut r, &mut seen, 3).await;
    let cancel = gw::client()
        .delete(format!("{}/v1/streams/{id}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert_eq!(gw::json_of(cancel).await["cancelled"], true);
    read_until(&mut r, &mut seen, usize::MAX).await;
    let all = seen.envelopes();
    let code = all.iter().find_map(|e| match &e.event {
        AgentEvent::Error(info) => Some(info.code.clone()),
        _ => None,
    });
    assert_eq!(code.as_deref(), Some("cancelled"), "{all:?}");
    assert!(matches!(
        all.last().map(|e| &e.event),
        Some(AgentEvent::StreamEnd(_))
    ));
    assert_eq!(whole_from(&b.url, &id).await, all, "B shows the same end");
    // Cancelling an id no instance has is a 404 on any of them.
    let unknown = gw::client()
        .delete(format!("{}/v1/streams/{id}x", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// The value of the unlabelled metric `name` in an OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name}"))
        .trim()
        .parse()
        .unwrap()
}
