//! The journal through a real crash: a `streamgate demo` process is killed with SIGKILL in
//! the middle of a stream, restarted on the same journal directory and port, and a client
//! resuming from the last seq it saw gets exactly the rest: no seq repeated or missing, and
//! the answer whole (continued by the restarted gateway from the journaled partial answer).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use providers::{AgentEvent, Assembler, Dialect, Envelope, FinishReason};

/// A demo gateway process on a fixed port over a journal directory.
struct Demo {
    child: Child,
    url: String,
}

impl Demo {
    fn start(port: u16, journal: &std::path::Path) -> Demo {
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
        Demo {
            child,
            url: v["gateway"].as_str().unwrap().to_owned(),
        }
    }

    fn kill9(mut self) {
        // Child::kill is SIGKILL on Unix: no destructor, no flush, no goodbye.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Demo {
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
    let demo = Demo::start(port, journal.path());

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

    let demo = Demo::start(port, journal.path());
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
    let _first = Demo::start(free_port(), journal.path());
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
        let entry = state.hub.get(&id).unwrap();
        assert!(entry.is_finished(), "{fsync}");
        let kept: Vec<Envelope> = entry
            .events()
            .iter()
            .map(|e| serde_json::from_slice(&e.json).unwrap())
            .collect();
        assert_eq!(kept, first.envelopes(), "{fsync}");
    }
}
