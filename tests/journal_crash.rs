//! The journal through real crashes: a gateway process (`streamgate demo`, or `streamgate
//! serve` over a replay upstream living in the test, which outlives the gateway) is killed
//! with SIGKILL in the middle of streams, restarted on the same journal directory and port,
//! and a client resuming from the last seq it saw gets exactly the rest: no seq repeated or
//! missing, and the answer whole (continued by the restarted gateway from the journaled
//! partial answer), on the route plan of the model it asked for, however many crashes in a
//! row it takes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};

/// A gateway process on a fixed port over a journal directory: `streamgate demo` (its replay
/// upstream inside) or `streamgate serve` with a written configuration.
struct Gateway {
    child: Child,
    url: String,
}

impl Gateway {
    fn demo(port: u16, journal: &std::path::Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["demo", "--json", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--journal")
            .arg(journal)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Gateway {
            child,
            url: v["gateway"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts the gateway of `config` (TOML) and waits until it accepts connections.
    async fn serve(config: &std::path::Path, port: u16) -> Gateway {
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let gateway = Gateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway
    }

    fn kill9(mut self) {
        // Child::kill is SIGKILL on Unix: no destructor, no flush, no goodbye.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The text of the fixture, uninterrupted.
fn fixture_text(dialect: Dialect, name: &str) -> String {
    let body = streamgate::replay::fixture(dialect, name).unwrap();
    Assembler::assemble(&gw::decode(dialect, body).0).text()
}

async fn post(url: &str, model: &str) -> reqwest::Response {
    gw::post_stream(url, Dialect::Anthropic, model).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_kill_9_and_resumes_exactly() {
    let journal = tempfile::tempdir().unwrap();
    let port = free_port();
    let demo = Gateway::demo(port, journal.path());

    // A short stream that finishes before the crash: still resumable after it.
    let done = post(&demo.url, "openai/text_basic").await;
    let done_id = gw::stream_id(&done);
    let mut whole = gw::NativeReader::default();
    whole.feed(&done.bytes().await.unwrap());

    // A long one, killed in the middle.
    let mut r = post(&demo.url, "openai/drip=10:text_long_obfuscation").await;
    let id = gw::stream_id(&r);
    let mut seen = gw::NativeReader::default();
    while seen.frames.len() < 60 {
        seen.feed(&r.chunk().await.unwrap().expect("the stream goes on"));
    }
    demo.kill9();
    drop(r);
    let last = seen.envelopes().last().unwrap().seq;

    let demo = Gateway::demo(port, journal.path());
    let r = gw::client()
        .get(format!("{}/v1/streams/{id}", demo.url))
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut rest = gw::NativeReader::default();
    rest.feed(&r.bytes().await.unwrap());

    let mut all = seen.envelopes();
    all.extend(rest.envelopes());
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "no seq repeated or missing");
        assert_eq!(e.stream, id);
    }
    let events: Vec<AgentEvent> = all.iter().map(|e| e.event.clone()).collect();
    assert!(
        rest.envelopes()
            .iter()
            .any(|e| matches!(e.event, AgentEvent::Retry { .. })),
        "the restart is marked as a seam"
    );
    let answer = Assembler::assemble(&events);
    assert!(answer.error.is_none(), "{:?}", answer.error);
    assert_eq!(
        answer.end.as_ref().map(|e| e.reason),
        Some(FinishReason::Stop)
    );
    assert_eq!(
        answer.text(),
        fixture_text(Dialect::OpenAi, "text_long_obfuscation")
    );

    // The stream that had finished comes back whole from the journal.
    let r = gw::client()
        .get(format!("{}/v1/streams/{done_id}", demo.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut again = gw::NativeReader::default();
    again.feed(&r.bytes().await.unwrap());
    assert_eq!(again.envelopes(), whole.envelopes());

    // The admin list says which streams came back from the journal.
    let list = gw::json_of(
        gw::client()
            .get(format!("{}/admin/streams", demo.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let recovered = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["recovered"] == true)
        .count();
    assert_eq!(recovered, 2, "{list}");
    assert!(list["journal"]["segments"].as_u64().unwrap() >= 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_cannot_share_a_journal_directory() {
    let journal = tempfile::tempdir().unwrap();
    let _first = Gateway::demo(free_port(), journal.path());
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["demo", "--json", "--listen", "127.0.0.1:0", "--journal"])
        .arg(journal.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another streamgate process"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fsync_policy_serves_and_recovers() {
    for fsync in ["always", "interval", "never"] {
        let journal = tempfile::tempdir().unwrap();
        let mut config = streamgate::config::Config::default();
        config.streams.journal.dir = journal.path().to_owned();
        config.streams.journal.fsync = match fsync {
            "always" => streamgate::hub::FsyncMode::Always,
            "interval" => streamgate::hub::FsyncMode::Interval,
            _ => streamgate::hub::FsyncMode::Never,
        };
        let replay = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let mut config2 = replay.config();
        config2.streams = config.streams.clone();
        let (addr, stop) = gw::serve_gateway(config2.clone()).await;
        let url = format!("http://{addr}");
        let r = post(&url, "anthropic/thinking_signature").await;
        let id = gw::stream_id(&r);
        let mut first = gw::NativeReader::default();
        first.feed(&r.bytes().await.unwrap());
        let _ = stop.send(());
        // The first gateway's hub goes when its last task does: wait for the lock.
        let mut state = None;
        for _ in 0..200 {
            match streamgate::server::AppState::new(config2.clone()) {
                Ok(s) => {
                    state = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let state = state.expect("the journal reopens");
        let entry = state.hub.get(None, &id).unwrap();
        assert!(entry.is_finished(), "{fsync}");
        let kept: Vec<Envelope> = entry
            .events()
            .iter()
            .map(|e| serde_json::from_slice(&e.json).unwrap())
            .collect();
        assert_eq!(kept, first.envelopes(), "{fsync}");
    }
}

/// A gateway configuration file in `dir`: listening on `port`, `body` (providers, models and
/// other tables, TOML), and the journal in `journal`.
fn write_config(
    dir: &std::path::Path,
    port: u16,
    journal: &std::path::Path,
    body: &str,
) -> std::path::PathBuf {
    let path = dir.join("streamgate.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{body}\n[streams.journal]\ndir = {journal:?}\n",
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// Every event of stream `id` from the first, until its end (bounded).
async fn whole_stream(url: &str, id: &str) -> Vec<Envelope> {
    let read = async {
        let r = gw::client()
            .get(format!("{url}/v1/streams/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "stream {id}");
        let mut all = gw::NativeReader::default();
        all.feed(&r.bytes().await.unwrap());
        all.envelopes()
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the stream ends")
}

/// Reads `r` until it has `n` frames.
async fn read_frames(r: &mut reqwest::Response, n: usize) -> gw::NativeReader {
    let mut seen = gw::NativeReader::default();
    while seen.frames.len() < n {
        seen.feed(&r.chunk().await.unwrap().expect("the stream goes on"));
    }
    seen
}

/// One stream's events checked against its recording: seqs from 0 without a gap, one start
/// and one end, every block started once, the recording's text, calls and finish.
fn assert_whole(all: &[Envelope], id: &str, dialect: Dialect, fixture: &str) {
    let what = format!("stream {id} ({fixture})");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "{what}: no seq repeated or missing");
        assert_eq!(e.stream, id);
    }
    let events: Vec<AgentEvent> = all.iter().map(|e| e.event.clone()).collect();
    let count = |f: fn(&AgentEvent) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(|e| matches!(e, AgentEvent::StreamStart(_))),
        1,
        "{what}"
    );
    assert_eq!(
        count(|e| matches!(e, AgentEvent::StreamEnd(_))),
        1,
        "{what}"
    );
    let mut started = std::collections::HashSet::new();
    for e in &events {
        if let AgentEvent::BlockStart { index, .. } | AgentEvent::ToolCallStart { index, .. } = e {
            assert!(
                started.insert(*index),
                "{what}: block {index} started twice"
            );
        }
    }
    let body = streamgate::replay::fixture(dialect, fixture).unwrap();
    let want = Assembler::assemble(&gw::decode(dialect, body).0);
    let got = Assembler::assemble(&events);
    assert!(got.error.is_none(), "{what}: {:?}", got.error);
    assert_eq!(got.text(), want.text(), "{what}: the text, whole and once");
    let calls = |m: &providers::assemble::Message| -> Vec<(String, serde_json::Value)> {
        m.tool_calls()
            .into_iter()
            .map(|(_, n, a)| (n.to_owned(), serde_json::from_str(a).unwrap_or_default()))
            .collect()
    };
    assert_eq!(calls(&got), calls(&want), "{what}: every call, once");
    assert_eq!(
        got.end.as_ref().map(|e| e.reason),
        want.end.as_ref().map(|e| e.reason),
        "{what}"
    );
}

/// Point 9: a stream asked for an alias continues after a restart on that alias's plan: its
/// primary is gone, so the continuation fails over to the alias's fallback (not to whatever
/// model name the upstream reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_stream_continues_on_its_aliases_routes() {
    let primary = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let backup = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &journal,
        &format!(
            "[providers.primary]\ndialect = \"openai\"\nbase_url = \"{}/v1\"\n\
             [providers.backup]\ndialect = \"openai\"\nbase_url = \"{}/v1\"\n\
             [models.flaky]\nroute = \"primary/drip=10:text_long_obfuscation\"\n\
             fallbacks = [\"backup/text_long_obfuscation\"]\n\
             [streaming.retryPolicy]\nmaxAttempts = 1\n",
            primary.url(),
            backup.url()
        ),
    );
    let gateway = Gateway::serve(&config, port).await;
    let mut r = post(&gateway.url, "flaky").await;
    let id = gw::stream_id(&r);
    let seen = read_frames(&mut r, 40).await;
    gateway.kill9();
    drop(r);
    primary.shutdown().await.unwrap();
    assert!(backup.requests().is_empty(), "the primary answered first");

    let gateway = Gateway::serve(&config, port).await;
    let list = gw::json_of(
        gw::client()
            .get(format!("{}/admin/streams", gateway.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let route = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| s["route"].clone());
    assert_eq!(
        route,
        Some(serde_json::json!("primary/drip=10:text_long_obfuscation")),
        "the route that answered, as before the crash: {list}"
    );
    let all = whole_stream(&gateway.url, &id).await;
    assert_eq!(
        &all[..seen.frames.len()],
        &seen.envelopes()[..],
        "the journal kept them"
    );
    assert_whole(&all, &id, Dialect::OpenAi, "text_long_obfuscation");
    let failover = all.iter().find_map(|e| match &e.event {
        AgentEvent::Failover { from, to, .. } => Some((from.clone(), to.clone())),
        _ => None,
    });
    assert_eq!(
        failover,
        Some((
            "primary/drip=10:text_long_obfuscation".to_owned(),
            "backup/text_long_obfuscation".to_owned()
        )),
        "the alias's fallback took over"
    );
    let asked: Vec<String> = backup
        .requests()
        .iter()
        .filter_map(|r| r.model().map(str::to_owned))
        .collect();
    assert_eq!(asked, vec!["text_long_obfuscation".to_owned()]);
}

/// Point 10: streams killed again and again at random short intervals (the second kill often
/// during the previous restart's continuation) come back exactly as recorded, with usage
/// counted once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_never_repeats_text_or_usage() {
    let replay = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &journal,
        &format!(
            "[providers.openai]\ndialect = \"openai\"\nbase_url = \"{url}/v1\"\n\
             [providers.anthropic]\ndialect = \"anthropic\"\nbase_url = \"{url}\"\n",
            url = replay.url()
        ),
    );
    // Slow enough that a continuation (a handful of frames) is still running when the next
    // kill comes; each model string is one stream's, so the replay's requests tell them apart.
    let streams = [
        (Dialect::OpenAi, "text_long_obfuscation", 60),
        (Dialect::Anthropic, "thinking_signature", 70),
        (Dialect::Anthropic, "tool_use_parallel_3", 80),
        (Dialect::OpenAi, "json_object_long", 90),
    ];
    let seed: u64 = std::env::var("CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut gateway = Gateway::serve(&config, port).await;
    let mut ids = Vec::new();
    for (dialect, fixture, drip) in streams {
        let mut r = post(
            &gateway.url,
            &format!("{}/drip={drip}:{fixture}", dialect.as_str()),
        )
        .await;
        ids.push(gw::stream_id(&r));
        read_frames(&mut r, 1).await;
        // Dropped: the stream goes on detached, as after a client's crash.
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.u64(50..800))).await;
        gateway.kill9();
        gateway = Gateway::serve(&config, port).await;
    }
    let mut continuations_killed = 0;
    for (id, (dialect, fixture, drip)) in ids.iter().zip(streams) {
        let all = whole_stream(&gateway.url, id).await;
        assert_whole(&all, id, dialect, fixture);
        let model = format!("drip={drip}:{fixture}");
        assert_usage_once(&all, &replay.requests(), dialect, fixture, &model, seed);
        // A restart's continuation that sent text before the next kill: the case at stake.
        let mut since_restart = None;
        for e in &all {
            match &e.event {
                AgentEvent::Retry { reason, .. } if reason.contains("restarted") => {
                    if since_restart == Some(true) {
                        continuations_killed += 1;
                    }
                    since_restart = Some(false);
                }
                AgentEvent::TextDelta { .. } | AgentEvent::ToolCallEnd { .. } => {
                    since_restart = since_restart.map(|_| true);
                }
                _ => {}
            }
        }
    }
    assert!(
        continuations_killed > 0,
        "seed {seed}: no kill came during a restart's continuation"
    );
}

/// Each attempt's usage joins the client's total once: across every seam (a retry, or the
/// restart's), the total's input grows by exactly one attempt's input, one the replay
/// reported: the recording's own, or a continuation's (a quarter of its request's bytes).
fn assert_usage_once(
    all: &[Envelope],
    requests: &[streamgate::replay::Recorded],
    dialect: Dialect,
    fixture: &str,
    model: &str,
    seed: u64,
) {
    let body = streamgate::replay::fixture(dialect, fixture).unwrap();
    let mut one_attempt: std::collections::HashSet<u64> = gw::decode(dialect, body)
        .0
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => u.input_tokens,
            _ => None,
        })
        .collect();
    let mine: Vec<_> = requests
        .iter()
        .filter(|r| r.model() == Some(model))
        .collect();
    assert!(!mine.is_empty());
    for r in &mine[1..] {
        let bytes = serde_json::to_vec(&r.body).unwrap().len();
        one_attempt.insert(bytes.div_ceil(4).max(1) as u64);
    }
    let input = |e: &Envelope| match &e.event {
        AgentEvent::Usage(u) => u.input_tokens,
        _ => None,
    };
    let seams: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.event,
                AgentEvent::Retry { .. } | AgentEvent::Failover { .. }
            )
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        !seams.is_empty(),
        "{fixture} (seed {seed}): the stream was interrupted at least once"
    );
    for at in seams {
        let before = all[..at].iter().rev().find_map(input).unwrap_or(0);
        let Some(after) = all[at..].iter().find_map(input) else {
            continue;
        };
        assert!(
            one_attempt.contains(&(after - before)),
            "{fixture} (seed {seed}): at seq {at} the input went from {before} to {after}, \
             not one attempt's ({one_attempt:?})"
        );
    }
}

/// Point 10: a client-chosen id reused after the first stream of that id was forgotten is the
/// new stream after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_stream_id_is_the_new_stream_after_a_restart() {
    let replay = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &journal,
        &format!(
            "[providers.openai]\ndialect = \"openai\"\nbase_url = \"{url}/v1\"\n\
             [providers.anthropic]\ndialect = \"anthropic\"\nbase_url = \"{url}\"\n\
             [streams]\nretention_ms = 200\n",
            url = replay.url()
        ),
    );
    let gateway = Gateway::serve(&config, port).await;
    let start = |model: &'static str| {
        gw::client()
            .post(format!("{}/v1/streams", gateway.url))
            .header("streamgate-dialect", "anthropic")
            .header("streamgate-stream-id", "mine_1")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(Dialect::Anthropic, model, true)).unwrap())
            .send()
    };
    let first = start("openai/text_basic").await.unwrap();
    assert_eq!(first.status(), 200);
    first.bytes().await.unwrap();
    // Forgotten after its retention (the janitor sweeps every second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = gw::client()
            .get(format!("{}/v1/streams/mine_1", gateway.url))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = start("anthropic/drip=40:thinking_signature").await.unwrap();
    assert_eq!(second.status(), 200);
    read_frames(&mut second, 10).await;
    gateway.kill9();

    let gateway = Gateway::serve(&config, port).await;
    let all = whole_stream(&gateway.url, "mine_1").await;
    assert_whole(&all, "mine_1", Dialect::Anthropic, "thinking_signature");
}
