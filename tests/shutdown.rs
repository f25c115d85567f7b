//! Graceful shutdown that ends, through real sockets: a `streamgate serve` process over a
//! replay upstream that paces its chunks slowly gets SIGTERM in the middle of streams on every
//! door. New connections are refused at once; a stream that finishes within
//! `[server] shutdown_grace_ms` finishes whole; one that does not ends with the door's own
//! error (the OpenAI, Responses and Anthropic doors) or is left resumable in the journal (the
//! native SSE door, the WebSocket, which closes 1001); the log says "draining N streams"; the
//! process exits 0 after the grace. A gateway restarted on the same journal gives the native
//! streams' whole answers, no seq missing or repeated. A second signal exits at once.
//!
//! Which doors get a stream that finishes and how many that do not is drawn from a seed
//! (`STREAMGATE_TEST_SEED`, printed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};
use rustix::process::Signal;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The grace of the main test: long enough for the short streams (about 1.5 s of pacing)
/// on a loaded machine, far shorter than the long ones (30 s).
const GRACE: Duration = Duration::from_secs(8);
/// Beyond the grace, what the process may take to exit on a loaded machine before the test
/// calls it stuck (the gateway itself needs at most 2 s to write the ends and 1 s to stop).
const EXIT_MARGIN: Duration = Duration::from_secs(30);
/// A stream that cannot finish within the grace: 304 frames, 100 ms apart.
const LONG: &str = "drip=100:text_long_obfuscation";
/// Streams that finish within it: (provider, knobs:fixture) of 34 and 12 frames.
const SHORT: [(&str, &str); 2] = [
    ("openai", "drip=40:text_basic"),
    ("anthropic", "drip=100:text_basic"),
];

/// A `streamgate serve` process on `port` with the configuration and journal of `dir`, its
/// log (RUST_LOG=info) in a file.
struct Gateway {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Gateway {
    async fn serve(dir: &Path, port: u16, run: &str) -> Gateway {
        let log = dir.join(format!("{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--config"])
            .arg(dir.join("streamgate.toml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!(
                    "the gateway exited before listening ({status}):\n{}",
                    gateway.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits up to `limit` for the process to exit.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to a minute for `needle` in the log.
    async fn logged(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the configuration of a gateway on `port` over `replay_url` into `dir`.
fn configure(dir: &Path, port: u16, replay_url: &str, grace: Duration) {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = {}\n\n{}\n\
         [streams.journal]\ndir = {:?}\n",
        grace.as_millis(),
        process::replay_providers(replay_url),
        dir.join("journal"),
    );
    std::fs::write(dir.join("streamgate.toml"), config).unwrap();
}

/// A client for answers longer than the shared one's 20 s bound.
fn client() -> reqwest::Client {
    // Installs the rustls provider once.
    drop(gw::client());
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn seed() -> u64 {
    let seed = std::env::var("STREAMGATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("STREAMGATE_TEST_SEED={seed}");
    seed
}

/// POSTs a chat request of `door` for `model` (streaming or not).
async fn chat(base: &str, door: Dialect, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{base}{}", gw::door_path(door)))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(serde_json::to_vec(&gw::chat_body(door, model, stream)).unwrap())
        .send()
        .await
        .unwrap()
}

/// Reads a response's whole body on a task of its own, so that it is read while the test
/// goes on; an error if the body broke instead of ending.
fn read_all(response: reqwest::Response) -> tokio::task::JoinHandle<Result<Vec<u8>, String>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(out)
    })
}

/// The text of a fixture, uninterrupted.
fn fixture_text(provider: &str, knobs_fixture: &str) -> String {
    let dialect = if provider == "anthropic" {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let name = knobs_fixture.rsplit(':').next().unwrap();
    let body = streamgate::replay::fixture(dialect, name).unwrap();
    Assembler::assemble(&gw::decode(dialect, body).0).text()
}

/// The events after `last` of stream `id`, from the gateway at `base`.
async fn resume(base: &str, id: &str, last: Option<u64>) -> Vec<Envelope> {
    let mut request = client().get(format!("{base}/v1/streams/{id}"));
    if let Some(last) = last {
        request = request.header("last-event-id", last.to_string());
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200, "resuming {id}");
    let mut rest = gw::NativeReader::default();
    rest.feed(&r.bytes().await.unwrap());
    rest.envelopes()
}

/// Checks that `seen` then `rest` are stream `id` whole: seqs 0.. without gap or repeat, no
/// error, a clean finish, and `text`.
fn assert_whole(id: &str, seen: &[Envelope], rest: &[Envelope], text: &str) {
    let all: Vec<&Envelope> = seen.iter().chain(rest).collect();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "{id}: no seq repeated or missing");
        assert_eq!(e.stream, id);
    }
    let events: Vec<AgentEvent> = all.iter().map(|e| e.event.clone()).collect();
    let answer = Assembler::assemble(&events);
    assert!(answer.error.is_none(), "{id}: {:?}", answer.error);
    assert_eq!(
        answer.end.as_ref().map(|e| e.reason),
        Some(FinishReason::Stop),
        "{id}"
    );
    assert_eq!(answer.text(), text, "{id}");
}

/// A WebSocket client that started one stream: its id, and the events it got until the
/// gateway closed the connection (and the close code).
async fn websocket_stream(
    addr: SocketAddr,
    model: &str,
    started: tokio::sync::oneshot::Sender<String>,
) -> (Vec<Envelope>, Option<u16>) {
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "streamgate.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let start = serde_json::json!({
        "op": "start",
        "dialect": "openai",
        "request": gw::chat_body(Dialect::OpenAi, model, true),
        "detach": true,
    });
    ws.send(Message::Text(start.to_string().into()))
        .await
        .unwrap();
    let mut started = Some(started);
    let mut events = Vec::new();
    while let Some(message) = ws.next().await {
        match message.unwrap() {
            Message::Text(text) => {
                let mut frame: Value = serde_json::from_str(&text).unwrap();
                if frame["op"] == "event" {
                    frame.as_object_mut().unwrap().remove("op");
                    let envelope: Envelope = serde_json::from_value(frame).unwrap();
                    if let Some(tx) = started.take() {
                        let _ = tx.send(envelope.stream.clone());
                    }
                    events.push(envelope);
                }
            }
            Message::Close(frame) => return (events, frame.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
    (events, None)
}

/// What one door stream is for.
struct DoorStream {
    door: Dialect,
    /// `Some((provider, knobs:fixture))` for one that finishes within the grace.
    short: Option<(&'static str, &'static str)>,
    body: tokio::task::JoinHandle<Result<Vec<u8>, String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishes_short_streams_ends_the_rest_and_leaves_native_ones_resumable() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    configure(dir.path(), port, &replay.url(), GRACE);
    let mut gateway = Gateway::serve(dir.path(), port, "first").await;
    let base = gateway.url.clone();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Door streams: on each door, one to three that cannot finish, and maybe one that can.
    let mut doors = Vec::new();
    for door in [
        Dialect::OpenAi,
        Dialect::OpenAiResponses,
        Dialect::Anthropic,
    ] {
        let mut plan: Vec<Option<(&str, &str)>> = vec![None; rng.usize(1..=3)];
        if rng.bool() {
            plan.push(Some(SHORT[rng.usize(..SHORT.len())]));
        }
        for short in plan {
            let model = match short {
                Some((provider, model)) => format!("{provider}/{model}"),
                None => format!("openai/{LONG}"),
            };
            let r = chat(&base, door, &model, true).await;
            assert_eq!(r.status(), 200, "{door} {model}");
            doors.push(DoorStream {
                door,
                short,
                body: read_all(r),
            });
        }
    }
    // A non-streaming answer whose upstream never answers: a 503 in its door's dialect.
    let still = [
        Dialect::OpenAi,
        Dialect::OpenAiResponses,
        Dialect::Anthropic,
    ][rng.usize(..3)];
    let waiting = tokio::spawn({
        let base = base.clone();
        async move {
            let r = chat(&base, still, "openai/hang:text_basic", false).await;
            let status = r.status();
            (status, gw::json_of(r).await)
        }
    });
    // A native SSE stream (`times=1`: its continuation after the restart is served at once).
    let native_model = format!("openai/times=1,{LONG}");
    let mut native = gw::post_stream(&base, Dialect::OpenAi, &native_model).await;
    let native_id = gw::stream_id(&native);
    let mut native_seen = gw::NativeReader::default();
    while native_seen.frames.len() < 3 {
        native_seen.feed(&native.chunk().await.unwrap().expect("the stream goes on"));
    }
    let native_body = tokio::spawn(async move {
        while let Some(chunk) = native.chunk().await.unwrap() {
            native_seen.feed(&chunk);
        }
        native_seen
    });
    // A WebSocket stream.
    let ws_model = "openai/times=1,drip=101:text_long_obfuscation";
    let (ws_started, ws_id) = tokio::sync::oneshot::channel();
    let ws = tokio::spawn(websocket_stream(addr, ws_model, ws_started));
    let ws_id = tokio::time::timeout(Duration::from_secs(30), ws_id)
        .await
        .unwrap()
        .unwrap();
    // The non-streaming request is in flight (its upstream holds it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());

    let signalled = Instant::now();
    gateway.signal(Signal::TERM);

    // New connections are refused (the listener is closed), soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The WebSocket closes with 1001 (going away), its stream left in the hub.
    let (ws_seen, close) = tokio::time::timeout(Duration::from_secs(30), ws)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(close, Some(1001));

    let long = doors.iter().filter(|d| d.short.is_none()).count();
    let short = doors.len() - long;
    for stream in doors {
        let body = tokio::time::timeout(GRACE + EXIT_MARGIN, stream.body)
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: the body broke instead of ending: {e}", stream.door));
        let (events, result) = gw::decode(stream.door, &body);
        match stream.short {
            Some((provider, model)) => {
                assert_eq!(result, Ok(()), "{} {model}", stream.door);
                assert_eq!(
                    Assembler::assemble(&events).text(),
                    fixture_text(provider, model),
                    "{} {model}: whole",
                    stream.door
                );
            }
            None => {
                let error = result.expect_err("a cut answer ends with an error, not a finish");
                assert!(
                    error.contains("shutting down"),
                    "{}: {error}\n{}",
                    stream.door,
                    String::from_utf8_lossy(&body)
                );
                let finish = Assembler::assemble(&events).end.map(|e| e.reason);
                assert_ne!(
                    finish,
                    Some(FinishReason::Stop),
                    "{}: no clean finish",
                    stream.door
                );
            }
        }
    }
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 503, "{body}");
    match still {
        Dialect::Anthropic => assert_eq!(body["error"]["type"], "overloaded_error", "{body}"),
        _ => assert_eq!(body["error"]["code"], "gateway_shutting_down", "{body}"),
    }

    // The native SSE response ends (no `stream.end`): the stream is the journal's now.
    let native_seen = native_body.await.unwrap().envelopes();
    assert!(
        !native_seen
            .iter()
            .any(|e| matches!(e.event, AgentEvent::StreamEnd(_))),
        "the native stream did not finish within the grace"
    );

    let status = gateway.exit_within(GRACE + EXIT_MARGIN).await;
    let took = signalled.elapsed();
    let log = gateway.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took >= GRACE,
        "streams were running: the grace is given ({took:?})"
    );
    let draining = log
        .lines()
        .find_map(|l| {
            let at = l.find("draining ")?;
            l[at + "draining ".len()..]
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no \"draining N streams\" line:\n{log}"));
    // Every door stream that cannot finish, the non-streaming request and the native SSE one
    // at least; at most also the short ones and the WebSocket (its connection, or its stream
    // once detached).
    let least = long + 1 + 1;
    assert!(
        (least..=least + short + 1).contains(&draining),
        "draining {draining}, expected {least} to {}:\n{log}",
        least + short + 1
    );
    assert!(log.contains("shutdown grace over"), "{log}");
    // The journal's writer was joined and the journal synced before the exit.
    assert!(log.contains("journal closed and synced"), "{log}");

    // Restarted on the same journal: the native streams continue, whole.
    let gateway = Gateway::serve(dir.path(), port, "second").await;
    let last = native_seen.last().map(|e| e.seq);
    let rest = resume(&gateway.url, &native_id, last).await;
    assert_whole(
        &native_id,
        &native_seen,
        &rest,
        &fixture_text("openai", LONG),
    );
    let last = ws_seen.last().map(|e| e.seq);
    let rest = resume(&gateway.url, &ws_id, last).await;
    assert_whole(&ws_id, &ws_seen, &rest, &fixture_text("openai", LONG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_an_idle_gateway_at_the_first() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let grace = Duration::from_secs(120);
    let signals = [(Signal::INT, 130), (Signal::TERM, 143)];

    // Nothing running: the first signal exits 0 without waiting for the grace.
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    configure(dir.path(), port, &replay.url(), grace);
    let mut gateway = Gateway::serve(dir.path(), port, "idle").await;
    let (first, _) = signals[rng.usize(..2)];
    gateway.signal(first);
    let status = gateway.exit_within(Duration::from_secs(30)).await;
    let log = gateway.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("draining 0 streams"), "{log}");

    // A stream running: the second signal ends the drain at once, with 128 + its number.
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    configure(dir.path(), port, &replay.url(), grace);
    let mut gateway = Gateway::serve(dir.path(), port, "busy").await;
    let door = [
        Dialect::OpenAi,
        Dialect::OpenAiResponses,
        Dialect::Anthropic,
    ][rng.usize(..3)];
    let r = chat(&gateway.url, door, &format!("openai/{LONG}"), true).await;
    assert_eq!(r.status(), 200);
    let body = read_all(r);
    let (first, _) = signals[rng.usize(..2)];
    let (second, code) = signals[rng.usize(..2)];
    gateway.signal(first);
    gateway.logged("draining 1 streams").await;
    let signalled = Instant::now();
    gateway.signal(second);
    // Well before the two-minute grace.
    let status = gateway.exit_within(Duration::from_secs(30)).await;
    assert!(signalled.elapsed() < grace / 4);
    let log = gateway.log();
    assert_eq!(status.code(), Some(code), "{log}");
    // Its log lines are written before the exit, the last one included.
    assert!(log.contains("second stop signal: exiting now"), "{log}");
    // The client's connection went with the process.
    let _ = tokio::time::timeout(Duration::from_secs(30), body)
        .await
        .unwrap();
}
