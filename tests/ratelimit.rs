//! Rate limits through real sockets: the limit holds under 50 concurrent clients, refusals are
//! 429s in the door's dialect with Retry-After, a concurrency limit frees its slot when a
//! stream ends, and a provider's rate-limit headers make the gateway back off that route.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::num::NonZeroU32;
use std::time::Instant;

use futures_util::future::join_all;
use gw::{chat_body, json_of};
use providers::Dialect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_hold_under_50_concurrent_clients() {
    let h = gw::start_with(|c| {
        c.limits.per_key.requests_per_minute = NonZeroU32::new(10);
    })
    .await;
    for (door, key_header) in [
        (Dialect::OpenAi, ("authorization", "Bearer client-a")),
        (Dialect::Anthropic, ("x-api-key", "client-b")),
    ] {
        let body = chat_body(door, "anthropic/text_basic", false);
        let headers = [key_header];
        let began = Instant::now();
        let requests = (0..50).map(|_| h.chat(door, &headers, &body));
        let responses = join_all(requests).await;
        let mut ok = 0;
        let mut limited = 0;
        for r in responses {
            match r.status().as_u16() {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    let after: u64 = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .expect("a Retry-After in seconds");
                    assert!((1..=60).contains(&after), "{door}: retry-after {after}");
                    let body = json_of(r).await;
                    match door {
                        Dialect::OpenAi | Dialect::OpenAiResponses => {
                            assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}")
                        }
                        Dialect::Anthropic => {
                            assert_eq!(body["type"], "error");
                            assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
                        }
                    }
                }
                other => panic!("{door}: unexpected status {other}"),
            }
        }
        // Each key has its own budget of 10 per minute, whatever the concurrency: a burst of
        // 10, then one more every 6 s. A loaded machine may take that long to send all 50, so
        // the refills of the time the requests took are allowed, and nothing more.
        let refilled = (began.elapsed().as_secs() / 6) as usize;
        assert_eq!(ok + limited, 50, "{door}");
        assert!(
            (10..=10 + refilled).contains(&ok),
            "{door}: {ok} admitted, {refilled} refills"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_frees_its_slot_when_the_stream_ends() {
    let h = gw::start_with(|c| {
        c.limits.per_key.concurrent_streams = NonZeroU32::new(1);
    })
    .await;
    let door = Dialect::OpenAi;
    let key = [("authorization", "Bearer solo")];
    // A slow stream holds the only slot...
    let slow = h
        .chat(
            door,
            &key,
            &chat_body(door, "anthropic/drip=30:text_basic", true),
        )
        .await;
    assert_eq!(slow.status(), 200);
    let second = h
        .chat(door, &key, &chat_body(door, "anthropic/text_basic", true))
        .await;
    assert_eq!(second.status(), 429);
    // ...until it is read to the end; then the next request is admitted.
    let _ = slow.bytes().await.unwrap();
    let mut admitted = false;
    for _ in 0..50 {
        let r = h
            .chat(door, &key, &chat_body(door, "anthropic/text_basic", true))
            .await;
        if r.status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted, "the slot was never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_429_makes_the_gateway_back_off_that_route() {
    // A 30 s Retry-After does not fit in this budget: no waiting, the 429 goes to the client.
    let h = gw::start_with(|c| c.streaming.retry_policy.time_to_fallback_ms = 5000).await;
    let door = Dialect::Anthropic;
    let model = "anthropic/status=429,retry_after=30:text_basic";
    let asked = Instant::now();
    let r = h.chat(door, &[], &chat_body(door, model, false)).await;
    assert_eq!(r.status(), 429);
    let seen = h.replay.requests().len();
    // The route is now known to be out of budget: the gateway answers 429 itself, without
    // asking the provider again.
    let r = h.chat(door, &[], &chat_body(door, model, false)).await;
    assert_eq!(r.status(), 429);
    let after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // What is left of the 30 s, in whole seconds rounded up: 30 on a fast machine, less by
    // the time the two requests took on a loaded one.
    let taken = asked.elapsed().as_secs();
    assert!(
        (30u64.saturating_sub(taken + 1)..=30).contains(&after),
        "retry-after {after} after {taken} s"
    );
    assert_eq!(
        h.replay.requests().len(),
        seen,
        "the provider was asked again"
    );
}
