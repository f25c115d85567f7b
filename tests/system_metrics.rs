//! The subsystem metrics of a running gateway, driven through real sockets: the gateway's own
//! registry (what `/metrics` serves) is read after real traffic: rate-limit refusals by the gateway and by the
//! provider, a native stream, a WebSocket connection, the journal and the upstream pools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::net::SocketAddr;
use std::time::Duration;

use providers::Dialect;
use streamgate::replay;
use streamgate::server::AppState;
use streamgate::system_metrics::names;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What `GET /metrics` serves: the gateway's own registry, where `AppState::new` registered
/// the subsystem collector beside the request path's families.
fn scrape(state: &AppState) -> String {
    state.telemetry.encode().expect("metrics are on by default")
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Scrapes until `series` reads `want` (a connection's end is seen by its task a little after
/// the client's), at most [`gw::BOUND`].
async fn settles(state: &AppState, series: &str, want: f64) -> String {
    settles_on(state, |text| value(text, series) == want).await
}

/// Scrapes until `done` holds of the text, at most [`gw::BOUND`]; returns the last text, for
/// the caller's assertions to fail on when it never did.
async fn settles_on(state: &AppState, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + gw::BOUND;
    loop {
        let text = scrape(state);
        if done(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway serving on 127.0.0.1 in front of the replay upstream, with a journal of its own.
struct Running {
    replay: replay::Replay,
    state: AppState,
    addr: SocketAddr,
    /// Stops the gateway when sent (or dropped).
    stop: tokio::sync::oneshot::Sender<()>,
    journal: tempfile::TempDir,
}

async fn running() -> Running {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = replay.config();
    config.streams.journal.dir = journal.path().to_owned();
    let state = AppState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(streamgate::server::serve(
        state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        replay,
        state,
        addr,
        stop,
        journal,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_reports_its_subsystems() {
    let Running {
        replay,
        state,
        addr,
        stop,
        journal: _journal,
    } = running().await;
    let base = format!("http://{addr}");
    let client = gw::client();
    let chat = |model: &str| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(Dialect::OpenAi, model, false)).unwrap())
            .send()
    };

    // The gateway's own limit: `demo-limited` allows DEMO_LIMITED_RPM a minute.
    let rpm = replay::DEMO_LIMITED_RPM as usize;
    let mut statuses = Vec::new();
    for _ in 0..rpm + 2 {
        statuses.push(chat("demo-limited").await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        2,
        "{statuses:?}"
    );
    // The provider's limit: a 429 whose Retry-After is past the retry budget, then the route
    // rests and the next request is refused without calling it.
    let upstream_limited = "anthropic/status=429,retry_after=600:text_basic";
    for _ in 0..2 {
        assert_eq!(chat(upstream_limited).await.unwrap().status(), 429);
    }
    let text = scrape(&state);
    let rejections = format!("{}_total", names::RATE_LIMIT_REJECTIONS);
    assert_eq!(
        value(
            &text,
            &format!(r#"{rejections}{{key="anonymous",limit="requests_per_minute"}}"#)
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"{rejections}{{key="anonymous",limit="upstream"}}"#)
        ),
        2.0
    );

    // A native stream, read to its end: started once, journaled, not live any more.
    let response = gw::post_stream(&base, Dialect::Anthropic, "demo").await;
    let body = gw::body_bytes(response).await;
    assert!(!body.is_empty());
    let started = format!("{}_total", names::STREAMS_STARTED);
    let text = settles(&state, names::STREAMS_ACTIVE, 0.0).await;
    assert_eq!(value(&text, &started), 1.0);
    assert_eq!(value(&text, names::STREAMS_ACTIVE), 0.0);
    // The end record is queued, not awaited, as the stream ends, and the writer thread counts
    // a record (its latency, then the record, then its bytes) apart from the scrape's reads:
    // the journal's series are read once they agree.
    let records = format!("{}_total", names::JOURNAL_RECORDS);
    let bytes = format!("{}_total", names::JOURNAL_APPENDED_BYTES);
    let appends = format!("{}_count", names::JOURNAL_APPEND);
    let journaled = |text: &str| {
        value(text, &records) >= 3.0
            && value(text, &appends) == value(text, &records)
            && value(text, &bytes) > body.len() as f64 / 4.0
    };
    let text = settles_on(&state, journaled).await;
    assert!(value(&text, &records) >= 3.0, "open, events, end:\n{text}");
    assert!(value(&text, &bytes) > body.len() as f64 / 4.0, "{text}");
    assert_eq!(value(&text, &appends), value(&text, &records));

    // Upstream pools: the anthropic provider was called (demo, the 429), the openai one not.
    let opened = format!("{}_total", names::UPSTREAM_CONNECTIONS_OPENED);
    assert!(value(&text, &format!(r#"{opened}{{provider="anthropic"}}"#)) >= 1.0);
    assert_eq!(
        value(&text, &format!(r#"{opened}{{provider="openai"}}"#)),
        0.0
    );
    let in_flight = format!(r#"{}{{provider="anthropic"}}"#, names::UPSTREAM_IN_FLIGHT);
    let text = settles(&state, &in_flight, 0.0).await;
    assert_eq!(value(&text, &in_flight), 0.0);

    // A WebSocket connection: counted while open, gone once closed.
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "streamgate.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let text = settles(&state, names::WEBSOCKET_CONNECTIONS, 1.0).await;
    assert_eq!(value(&text, names::WEBSOCKET_CONNECTIONS), 1.0);
    ws.close(None).await.unwrap();
    drop(ws);
    let text = settles(&state, names::WEBSOCKET_CONNECTIONS, 0.0).await;
    assert_eq!(value(&text, names::WEBSOCKET_CONNECTIONS), 0.0);

    let _ = stop.send(());
    replay.shutdown().await.unwrap();
}

/// Streamed answers one after another, through both doors and the whole engine, go over one
/// upstream connection: each answer's body is read to its end (the chunked terminator
/// included) before its connection is dropped, so it goes back to the pool. Were it dropped
/// at the last event instead, every answer would open a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_in_turn_reuse_one_upstream_connection() {
    // Every part is held to the end: dropping the replay or the stop ends them.
    let Running {
        replay: _replay,
        state,
        addr,
        stop: _stop,
        journal: _journal,
    } = running().await;
    let client = gw::client();
    let answers = 12;
    for i in 0..answers {
        let door = [Dialect::OpenAi, Dialect::Anthropic][i % 2];
        let response = client
            .post(format!("http://{addr}{}", gw::door_path(door)))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(door, "openai/text_basic", true)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = gw::body_bytes(response).await;
        let (events, end) = gw::decode(door, &body);
        assert!(end.is_ok() && !events.is_empty(), "answer {i}: {end:?}");
        // The next request only once this answer's upstream call is over (its body dropped
        // a little after the client's last byte).
        let in_flight = format!(r#"{}{{provider="openai"}}"#, names::UPSTREAM_IN_FLIGHT);
        settles(&state, &in_flight, 0.0).await;
    }
    let opened = format!(
        r#"{}_total{{provider="openai"}}"#,
        names::UPSTREAM_CONNECTIONS_OPENED
    );
    let opened = value(&scrape(&state), &opened);
    assert_eq!(
        opened, 1.0,
        "{answers} answers in turn opened {opened} connections"
    );
}
