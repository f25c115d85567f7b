//! The reference client and `streamgate tail` / `status` through real sockets: following a
//! stream to its end, through a relay that cuts connections at random bytes, errors that are
//! not retried, giving up, and the two commands against a running gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use gw::chat_body;
use providers::{AgentEvent, Dialect, Envelope, FinishReason};
use streamgate::client::{ClientError, Follow, StreamClient};
use streamgate::config::ReconnectConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A long recording dripped at 2 ms a frame: some 300 events, many connections' worth.
const LONG: &str = "openai/drip=2:text_long_obfuscation";
/// A short recording.
const SHORT: &str = "anthropic/text_simple";
/// Upper bound for following one stream in these tests.
const FOLLOW_BOUND: Duration = Duration::from_secs(60);

/// Quick reconnects: `max_attempts` in a row, 1 ms doubling to 20 ms, jittered.
fn quick(max_attempts: u32) -> ReconnectConfig {
    ReconnectConfig {
        max_attempts,
        initial_backoff: 1,
        max_backoff: 20,
        jitter: 0.5,
    }
}

fn client_at(url: &str, reconnect: ReconnectConfig) -> StreamClient {
    StreamClient::with_http_client(gw::client(), url, reconnect).unwrap()
}

/// Starts a stream of `model` with a plain POST and drops its answer (the stream goes on).
async fn post_stream(h: &gw::Harness, model: &str) -> String {
    gw::stream_id(&gw::post_stream(&h.url(""), Dialect::OpenAi, model).await)
}

/// The stream's events with a plain `GET /v1/streams/{id}` from the start, read to its end.
async fn plain_get(h: &gw::Harness, id: &str) -> Vec<Envelope> {
    let r = gw::client()
        .get(h.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut reader = gw::NativeReader::default();
    reader.feed(&r.bytes().await.unwrap());
    reader.envelopes()
}

/// Everything a follow yields, bounded in time.
async fn collect(follow: Follow) -> Vec<Result<Envelope, ClientError>> {
    tokio::time::timeout(FOLLOW_BOUND, follow.collect::<Vec<_>>())
        .await
        .expect("the follow ended in time")
}

/// The envelopes of a follow that must succeed.
async fn collect_ok(follow: Follow) -> Vec<Envelope> {
    collect(follow)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{}", e.chain())))
        .collect()
}

fn text_of(events: &[Envelope]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            AgentEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn assert_whole(events: &[Envelope], id: &str) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "seq {i} of {}", events.len());
        assert_eq!(e.stream, id);
    }
    match &events.last().unwrap().event {
        AgentEvent::StreamEnd(end) => assert_eq!(end.reason, FinishReason::Stop),
        other => panic!("last event {other:?}"),
    }
}

/// A port nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// A lossy relay.

/// A TCP relay on 127.0.0.1 in front of the gateway. With a cut range, each connection is
/// closed (both ways) once a random number of bytes in that range came from the gateway:
/// the client sees a failed connect, a broken head or a body cut mid-frame.
struct Relay {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
}

impl Relay {
    async fn start(target: SocketAddr, seed: u64, cut: Option<std::ops::Range<usize>>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            cuts: Arc::default(),
        };
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        let (connections, cuts) = (Arc::clone(&relay.connections), Arc::clone(&relay.cuts));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::Relaxed);
                let limit = cut.clone().map(|r| rng.lock().unwrap().usize(r));
                let cuts = Arc::clone(&cuts);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    if pipe(client, server, limit).await {
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        relay
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Relays until either side closes, or until `limit` bytes came from `server`; true when
/// it cut. Both sockets are closed when it returns.
async fn pipe(client: TcpStream, server: TcpStream, limit: Option<usize>) -> bool {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut left = limit.unwrap_or(usize::MAX);
    let mut buf = vec![0u8; 4096];
    let cut = loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break false,
            Ok(n) => n,
        };
        let take = n.min(left);
        if client_write.write_all(&buf[..take]).await.is_err() {
            break false;
        }
        left -= take;
        if left == 0 {
            break true;
        }
    };
    up.abort();
    cut
}

// ---------------------------------------------------------------------------------------
// The client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_stream_to_its_end_like_a_plain_get() {
    let h = gw::start().await;
    let client = client_at(&h.url(""), quick(3));
    let (id, follow) = client
        .start(Dialect::OpenAi, &chat_body(Dialect::OpenAi, LONG, true))
        .await
        .unwrap();
    assert_eq!(follow.id(), id);
    let live = collect_ok(follow).await;
    assert_whole(&live, &id);
    assert!(text_of(&live).len() > 1000);
    let plain = plain_get(&h, &id).await;
    assert_eq!(
        live, plain,
        "POST answer followed == plain GET from the start"
    );

    // Following it again: from the start, from the middle, and after its last event (204).
    let again = client.follow(&id, None);
    let again = collect_ok(again).await;
    assert_eq!(again, plain);
    let middle = collect_ok(client.follow(&id, Some(41))).await;
    assert_eq!(middle, plain[42..]);
    let last = plain.last().unwrap().seq;
    let follow = client.follow(&id, Some(last));
    let nothing = collect(follow).await;
    assert!(nothing.is_empty(), "{nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_lossy_relay_the_client_assembles_the_exact_sequence() {
    let h = gw::start().await;
    for seed in 0..6u64 {
        // Cuts anywhere in the first 2.5 KB of each connection: heads, frames, bodies.
        let relay = Relay::start(h.gateway, seed, Some(1..2500)).await;
        let reconnects = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&reconnects);
        let client = client_at(&relay.url(), quick(30)).on_reconnect(move |r| {
            assert!(r.attempt >= 1 && r.attempt <= 30, "{r:?}");
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let (id, follow) = if seed % 2 == 0 {
            // Started through the relay: the POST's own answer breaks first. The POST itself
            // is not retried by the client (a second one would start a second answer), so a
            // cut before its head is retried here.
            let mut started = None;
            for _ in 0..50 {
                match client
                    .start(Dialect::OpenAi, &chat_body(Dialect::OpenAi, LONG, true))
                    .await
                {
                    Ok(s) => {
                        started = Some(s);
                        break;
                    }
                    Err(e @ ClientError::Transport(_)) => drop(e),
                    Err(e) => panic!("seed {seed}: {}", e.chain()),
                }
            }
            started.expect("a POST got through")
        } else {
            let id = post_stream(&h, LONG).await;
            let follow = client.follow(&id, None);
            (id, follow)
        };
        let follow_reconnects = {
            let mut follow = follow;
            let mut got = Vec::new();
            let bounded = tokio::time::timeout(FOLLOW_BOUND, async {
                while let Some(item) = follow.next().await {
                    got.push(item.unwrap_or_else(|e| panic!("seed {seed}: {}", e.chain())));
                }
            });
            bounded.await.expect("the follow ended in time");
            let plain = plain_get(&h, &id).await;
            assert_whole(&got, &id);
            assert_eq!(
                got, plain,
                "seed {seed}: exactly the uninterrupted sequence"
            );
            follow.reconnects()
        };
        assert!(follow_reconnects > 0, "seed {seed}: no reconnect");
        assert_eq!(follow_reconnects, reconnects.load(Ordering::Relaxed));
        assert!(relay.cuts.load(Ordering::Relaxed) > 0, "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_resets_the_count_of_reconnects() {
    let h = gw::start().await;
    let id = post_stream(&h, LONG).await;
    let plain = plain_get(&h, &id).await;
    // Each connection carries its head and at least two whole frames before its cut.
    let biggest_frame = plain
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len() + 64)
        .max()
        .unwrap();
    let floor = 1024 + 2 * biggest_frame;
    let relay = Relay::start(h.gateway, 7, Some(floor..floor + 2000)).await;
    // One reconnect allowed in a row: only a reset on progress gets through many cuts.
    let follow = client_at(&relay.url(), quick(1)).follow(&id, None);
    let mut follow = follow;
    let mut got = Vec::new();
    while let Some(item) = tokio::time::timeout(FOLLOW_BOUND, follow.next())
        .await
        .unwrap()
    {
        got.push(item.unwrap_or_else(|e| panic!("{}", e.chain())));
    }
    assert_eq!(got, plain);
    assert!(
        follow.reconnects() > 1,
        "{} reconnects",
        follow.reconnects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_and_seqs_beyond_the_end_are_not_retried() {
    let h = gw::start().await;
    let relay = Relay::start(h.gateway, 0, None).await;
    let hooked = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&hooked);
    let client = client_at(&relay.url(), quick(5)).on_reconnect(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let follow = client.follow("st_nope", None);
    let got = collect(follow).await;
    assert_eq!(got.len(), 1, "{got:?}");
    match &got[0] {
        Err(ClientError::NotFound { id, .. }) => assert_eq!(id, "st_nope"),
        other => panic!("{other:?}"),
    }
    assert_eq!(relay.connections.load(Ordering::Relaxed), 1, "one request");
    assert_eq!(hooked.load(Ordering::Relaxed), 0);

    let id = post_stream(&h, SHORT).await;
    let events = plain_get(&h, &id).await;
    let beyond = events.len() as u64 + 5;
    let mut follow = client.follow(&id, Some(beyond));
    match follow.next().await {
        Some(Err(e @ ClientError::SeqBeyondEnd { .. })) => {
            assert!(!e.is_retryable());
            assert!(
                e.to_string().contains(&format!("after seq {beyond}")),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(follow.next().await.is_none());
    assert_eq!(follow.reconnects(), 0);
    assert_eq!(hooked.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gives_up_after_max_attempts_without_progress() {
    let dead = dead_addr().await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let client = client_at(&format!("http://{dead}"), quick(2)).on_reconnect(move |r| {
        assert!(
            matches!(r.cause, ClientError::Transport(_)),
            "{:?}",
            r.cause
        );
        seen.lock().unwrap().push((r.attempt, r.after));
    });
    let mut follow = client.follow("st_any", Some(3));
    match follow.next().await {
        Some(Err(ClientError::GaveUp { attempts, last })) => {
            assert_eq!(attempts, 2);
            assert!(matches!(*last, ClientError::Transport(_)), "{last:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(follow.next().await.is_none());
    assert_eq!(follow.reconnects(), 2);
    assert_eq!(*attempts.lock().unwrap(), [(1, Some(3)), (2, Some(3))]);
}

// ---------------------------------------------------------------------------------------
// The commands.

/// Runs the built `streamgate` with `args`, off the runtime's threads.
async fn streamgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(&args)
            .env_remove("STREAMGATE_CONFIG")
            .env_remove("STREAMGATE_URL")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
            .expect("run streamgate")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A configuration file with quick reconnects, removed when dropped.
struct TempConfig(std::path::PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "streamgate-tail-{}-{nanos}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_text_of_a_stream_and_exits_0() {
    let h = gw::start().await;
    let url = h.url("");
    let id = post_stream(&h, SHORT).await;
    let events = plain_get(&h, &id).await;
    let text = text_of(&events);
    assert!(!text.is_empty());

    let o = streamgate(args(&["tail", &id, "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = if text.ends_with('\n') {
        text.clone()
    } else {
        format!("{text}\n")
    };
    assert_eq!(stdout(&o), want);
    let err = stderr(&o);
    assert!(err.contains("[0 stream.start "), "{err}");
    assert!(err.contains(" stream.end reason=stop"), "{err}");
    assert!(!err.contains("text.delta"), "text is not marked: {err}");

    // --json: the envelopes, one per line, as a plain GET gets them; --after skips.
    let o = streamgate(args(&[
        "tail", &id, "--url", &url, "--json", "--after", "1",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed: Vec<Envelope> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed, events[2..]);

    // A live long stream, followed while it is generated.
    let id = post_stream(&h, LONG).await;
    let o = streamgate(args(&["tail", &id, "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = text_of(&plain_get(&h, &id).await);
    assert!(text.len() > 1000);
    assert_eq!(
        stdout(&o).trim_end_matches('\n'),
        text.trim_end_matches('\n')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_exit_codes_say_how_the_stream_ended() {
    let h = gw::start().await;
    let url = h.url("");
    // Unknown stream: 2, not retried.
    let o = streamgate(args(&["tail", "st_nope", "--url", &url])).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no stream \"st_nope\""),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("reconnecting"), "{}", stderr(&o));

    // A cancelled stream ends with an error: 1.
    let id = post_stream(&h, "openai/drip=20:text_long_obfuscation").await;
    let d = gw::client()
        .delete(h.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    let o = streamgate(args(&["tail", &id, "--url", &url])).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stream.end reason=error"),
        "{}",
        stderr(&o)
    );

    // No gateway: reconnects from `reconnect` of --config, logged, then 1. The file is the
    // original design's whole [streaming] block, inline tables and all.
    let config = TempConfig::new(
        "[streaming]\nbufferSize = 256\nchunkSize = 4096\ncompression = \"zstd\"\n\
         retryPolicy = { maxAttempts = 3, backoffMs = 100 }\n\
         reconnect = { maxAttempts = 2, initialBackoff = 1, maxBackoff = 5, jitter = 0.1 }\n",
    );
    let dead = format!("http://{}", dead_addr().await);
    let o = streamgate(args(&[
        "tail",
        "st_x",
        "--url",
        &dead,
        "--config",
        config.path(),
    ]))
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("reconnecting").count(), 2, "{err}");
    assert!(err.contains("attempt 2 of 2"), "{err}");
    assert!(err.contains("gave up after 2 reconnect(s)"), "{err}");

    // Bad usage: 2.
    let bad = TempConfig::new("[streaming.reconnect]\nnope = 1\n");
    let o = streamgate(args(&[
        "tail",
        "st_x",
        "--url",
        &url,
        "--config",
        bad.path(),
    ]))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = streamgate(args(&["tail", "st_x", "--url", "not a url"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = streamgate(args(&["tail"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_routes_and_streams_as_tables_and_as_json() {
    let h = gw::start().await;
    let url = h.url("");
    let id = post_stream(&h, SHORT).await;
    plain_get(&h, &id).await;

    // Routes first: the one that answered, closed, one attempt and no failure in the window.
    let o = streamgate(args(&["status", "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ROUTE"), "{out}");
    let route: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(route[1..], ["closed", "0", "-", "1", "0", "0.0%"], "{out}");
    assert!(out.contains("the last 60 s"), "{out}");
    let streams = out
        .split_once("\n\n")
        .expect("the streams after a blank line")
        .1;
    assert!(streams.starts_with("STREAM"), "{out}");
    let o = streamgate(args(&["status", "--routes", "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("STREAM"), "{}", stdout(&o));

    let o = streamgate(args(&["status", "--streaming", "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("STREAM"), "{out}");
    assert!(!lines[0].contains("BUFFER"), "{out}");
    let row = lines.iter().find(|l| l.starts_with(&id)).expect("a row");
    assert!(row.contains("finished") && row.contains("openai"), "{row}");
    assert!(out.contains("0 live, 1 finished"), "{out}");

    let o = streamgate(args(&["status", "--streaming", "--buffer", "--url", &url])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().next().unwrap().ends_with("BUFFER"), "{out}");
    assert!(out.contains(" evicted"), "{out}");

    let o = streamgate(args(&["status", "--url", &url, "--json"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let both: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        both["routes"]["routes"][0]["recent"]["attempts"], 1,
        "{both}"
    );
    assert_eq!(both["streams"]["data"][0]["id"], id.as_str(), "{both}");
    let o = streamgate(args(&["status", "--streaming", "--url", &url, "--json"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["object"], "list");
    assert_eq!(json["data"][0]["id"], id.as_str());
    assert!(json["totals"]["max_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unreachable_gateway_exits_2() {
    let dead = format!("http://{}", dead_addr().await);
    let o = streamgate(args(&["status", "--url", &dead])).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("cannot reach the gateway at {dead}")),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
}
