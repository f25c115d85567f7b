//! Soak: 25 clients start long streams and never read them, against a gateway process with a
//! 32 MiB `[streams] max_bytes`. The hub keeps at most its cap (live streams over their share
//! are ended with `memory_cap`, finished ones forgotten and freed even while an unread client
//! follows them), so the gateway's peak resident memory stays under a bound derived from the
//! cap, a normal client keeps getting answers, and the process is still running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/openai_deltas.rs"]
mod openai_deltas;
#[path = "common/process.rs"]
mod process;

use openai_deltas::openai_deltas;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use providers::Dialect;
use serde_json::Value;

/// `[streams] max_bytes` of the gateway under test.
const MAX_BYTES: u64 = 32 << 20;

/// Resident memory of the gateway with nothing to do, with margin: the debug binary, the
/// runtime's threads and the allocator's arenas (measured at about 25 MiB on a 2-core machine).
const BASE: u64 = 64 << 20;

/// The peak resident memory allowed: the base; the hub's kept events (the cap); the engine's
/// copy of each live answer's text (kept for a continuation after an upstream break, in a
/// string that grows by doubling: up to twice the text, and live streams keep at most the cap
/// between them); and the 25 unread connections' write buffers (one capped batch of 256 KiB
/// plus hyper's buffer, about 1 MiB each). Measured: about 25 MiB idle and 145-160 MiB peak
/// with a 32 MiB cap, 84 MiB with an 8 MiB cap (the slope is the three copies of the cap).
const PEAK_RSS_BOUND: u64 = BASE + 3 * MAX_BYTES + UNREAD as u64 * (1 << 20);

/// Unread streams.
const UNREAD: usize = 25;

fn post(client: &reqwest::Client, url: &str, model: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{url}/v1/streams"))
        .header("streamgate-dialect", "openai")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&gw::chat_body(Dialect::OpenAi, model, true)).unwrap())
}

/// A normal client's answer: complete, in order.
async fn normal_answer(client: &reqwest::Client, url: &str) {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&gw::chat_body(Dialect::OpenAi, "openai/text_basic", true)).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = gw::body_bytes(r).await;
    let (_, end) = gw::decode(Dialect::OpenAi, &body);
    assert!(end.is_ok(), "a normal answer came whole: {end:?}");
}

async fn totals(client: &reqwest::Client, url: &str) -> Value {
    let r = client
        .get(format!("{url}/admin/streams"))
        .send()
        .await
        .unwrap();
    gw::json_of(r).await["totals"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_unread_long_streams_stay_within_the_memory_cap() {
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    // About 4 MB of text each: 100 MB over the 25 streams, three times the cap.
    replay.insert_fixture(
        Dialect::OpenAi,
        "x_soak",
        openai_deltas((0..4000).map(|_| "y".repeat(1000))),
    );
    let mut gateway = process::GatewayProcess::serve(&format!(
        "{}\n[streams]\nmax_bytes = {MAX_BYTES}\n",
        process::replay_providers(&replay.url())
    ))
    .await;
    let url = gateway.url.clone();
    let client = gw::client();
    normal_answer(&client, &url).await;
    let idle = gateway.rss_bytes();

    // Started together, and a frame a millisecond (about 4 s each), so that they are live
    // together whatever the gateway's speed: an upstream read at once would let the first ones
    // finish (and be evicted) before the last began; their bodies are never read.
    let unread: Vec<reqwest::Response> = futures_util::future::join_all(
        (0..UNREAD).map(|_| post(&client, &url, "openai/drip=1:x_soak").send()),
    )
    .await
    .into_iter()
    .map(|r| {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        r
    })
    .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    let totals = loop {
        normal_answer(&client, &url).await;
        let totals = totals(&client, &url).await;
        if totals["live"] == 0 {
            break totals;
        }
        assert!(
            Instant::now() < deadline,
            "the unread streams did not end: {totals}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(gateway.is_running(), "the gateway is still up");
    let peak = gateway.peak_rss_bytes();
    eprintln!(
        "soak_streams: idle RSS {} MiB, peak RSS {} MiB (bound {} MiB), totals {totals}",
        idle >> 20,
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
    assert!(
        totals["cut"].as_u64().unwrap() > 0,
        "live streams alone passed the cap and some were ended: {totals}"
    );
    assert!(
        totals["buffer_bytes"].as_u64().unwrap() <= MAX_BYTES + (1 << 20),
        "{totals}"
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {} MiB over the bound of {} MiB",
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
    eprintln!(
        "soak_streams: RSS at the end {} MiB",
        gateway.rss_bytes() >> 20
    );
    drop(unread);
    normal_answer(&client, &url).await;
    assert!(gateway.is_running());
}
