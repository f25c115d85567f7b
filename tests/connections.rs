//! The listener's bounds through real sockets (`[server]` `max_connections`,
//! `max_connections_per_address`, `header_read_timeout_ms`, `keep_alive_idle_ms`,
//! `body_read_timeout_ms`): over-cap connections get their answer and are closed, slow heads
//! and idle connections are closed, trickled bodies get 408, and a long answer is never cut.
//!
//! Timeouts here are short and every wait is bounded by [`gw::BOUND`]; nothing asserts how
//! fast anything happened, only what happened (a close, an answer) within the bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use streamgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source` (any 127.x.y.z works on Linux) to the gateway.
async fn connect_from(source: Ipv4Addr, gateway: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(gateway).await.unwrap()
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Everything the gateway sends until it closes the connection (a reset counts as a close).
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(gw::BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the gateway did not close the connection");
    out
}

/// One response with a `content-length` body on a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(gw::BOUND, async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(data[..end].to_vec()).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                if data.len() >= end + 4 + length {
                    return (head, data[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&data)
            );
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no whole response")
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

fn json_body(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let (_, body) = text.split_once("\r\n\r\n").expect("a head");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";

/// Asks `/healthz` on a fresh connection from `source`; the response's status.
async fn health_from(source: Ipv4Addr, gateway: SocketAddr) -> u16 {
    let mut stream = connect_from(source, gateway).await;
    stream.write_all(HEALTH).await.unwrap();
    status_of(&read_response(&mut stream).await.0.into_bytes())
}

async fn gateway(edit: impl FnOnce(&mut Config)) -> gw::Harness {
    gw::start_with(|c| {
        // Long by default, so that each test sees only the limit it sets.
        c.server.header_read_timeout_ms = 60_000;
        c.server.keep_alive_idle_ms = 60_000;
        c.server.body_read_timeout_ms = 60_000;
        edit(c);
    })
    .await
}

#[tokio::test]
async fn over_the_total_cap_a_connection_gets_503_and_is_closed() {
    let h = gateway(|c| c.server.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(LOCAL, h.gateway).await;
        // A request answered proves the connection was admitted (and is counted).
        stream.write_all(HEALTH).await.unwrap();
        assert_eq!(
            status_of(read_response(&mut stream).await.0.as_bytes()),
            200
        );
        held.push(stream);
    }
    for source in [LOCAL, Ipv4Addr::new(127, 0, 0, 9)] {
        let mut over = connect_from(source, h.gateway).await;
        let answer = read_to_close(&mut over).await;
        assert_eq!(
            status_of(&answer),
            503,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.contains("retry-after: 1\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(json_body(&answer)["error"]["code"], "too_many_connections");
    }
    // A closed connection frees its place.
    drop(held.pop());
    let admitted = tokio::time::timeout(gw::BOUND, async {
        loop {
            let mut stream = connect_from(LOCAL, h.gateway).await;
            stream.write_all(HEALTH).await.unwrap();
            let answer = read_to_close_or_response(&mut stream).await;
            if status_of(&answer) == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "a freed place was never given again");
}

/// The first response on `stream` (to its close for a refusal, which has no keep-alive).
async fn read_to_close_or_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(gw::BOUND, async {
        while !String::from_utf8_lossy(&data).contains("\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap();
    data
}

#[tokio::test]
async fn the_per_address_cap_counts_each_source_address() {
    let h = gateway(|c| {
        c.server.max_connections = 100;
        c.server.max_connections_per_address = 2;
    })
    .await;
    let crowded = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(crowded, h.gateway).await;
        stream.write_all(HEALTH).await.unwrap();
        assert_eq!(
            status_of(read_response(&mut stream).await.0.as_bytes()),
            200
        );
        held.push(stream);
    }
    let mut over = connect_from(crowded, h.gateway).await;
    // A client that sent its request before the refusal still reads the answer.
    over.write_all(HEALTH).await.unwrap();
    let answer = read_to_close(&mut over).await;
    assert_eq!(
        status_of(&answer),
        429,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        json_body(&answer)["error"]["code"],
        "too_many_connections_from_address"
    );
    // Other addresses are not affected, however many of them.
    for host in 3..8 {
        for _ in 0..2 {
            assert_eq!(
                health_from(Ipv4Addr::new(127, 0, 0, host), h.gateway).await,
                200
            );
        }
    }
}

#[tokio::test]
async fn a_head_trickled_slower_than_the_header_timeout_is_closed() {
    let h = gateway(|c| c.server.header_read_timeout_ms = 500).await;
    let mut stream = connect_from(LOCAL, h.gateway).await;
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms: bytes keep arriving, but the head never completes, and
    // arriving bytes do not extend its deadline.
    let trickle = async {
        for _ in 0..(gw::BOUND.as_millis() / 100) {
            if stream.write_all(b"x").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(trickle.await, "the slow head was never cut");
    // Nothing but the close: a head that never came gets no answer.
    let rest = read_to_close(&mut stream).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // The gateway still answers others.
    assert_eq!(health_from(LOCAL, h.gateway).await, 200);
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_after_the_header_timeout() {
    let h = gateway(|c| c.server.header_read_timeout_ms = 300).await;
    let mut silent = connect_from(LOCAL, h.gateway).await;
    assert!(read_to_close(&mut silent).await.is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is past the bound: only the idle clock can close it in time.
    let h = gateway(|c| c.server.keep_alive_idle_ms = 300).await;
    let mut stream = connect_from(LOCAL, h.gateway).await;
    stream.write_all(HEALTH).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    assert!(read_to_close(&mut stream).await.is_empty());
}

#[tokio::test]
async fn keep_alive_outlives_a_shorter_header_timeout() {
    // hyper's own header timer would close this connection 300 ms after its first answer.
    let h = gateway(|c| c.server.header_read_timeout_ms = 300).await;
    let mut stream = connect_from(LOCAL, h.gateway).await;
    for _ in 0..2 {
        stream.write_all(HEALTH).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test]
async fn a_long_streaming_answer_is_not_cut_by_either_timeout() {
    let h = gateway(|c| {
        c.server.header_read_timeout_ms = 200;
        c.server.keep_alive_idle_ms = 200;
    })
    .await;
    // 34 frames, 50 ms apart: the answer takes well over both timeouts.
    let body = serde_json::to_vec(&gw::chat_body(
        providers::Dialect::OpenAi,
        "openai/drip=50:text_basic",
        true,
    ))
    .unwrap();
    let mut stream = connect_from(LOCAL, h.gateway).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let started = tokio::time::Instant::now();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("data: [DONE]"), "cut short: {answer}");
    // The drip guarantees the answer outlasted the timeouts (a lower bound, not a speed).
    assert!(started.elapsed() > Duration::from_millis(1000));
}

#[tokio::test]
async fn a_trickled_body_gets_408_in_the_door_dialect() {
    let h = gateway(|c| c.server.body_read_timeout_ms = 500).await;
    for (path, extra, check) in [
        (
            "/v1/chat/completions",
            "",
            (|v: &Value| v["error"]["code"] == "request_body_timeout") as fn(&Value) -> bool,
        ),
        (
            "/v1/messages",
            "anthropic-version: 2023-06-01\r\n",
            |v: &Value| v["type"] == "error" && v["error"]["type"] == "timeout_error",
        ),
        ("/v1/streams", "", |v: &Value| {
            v["error"]["code"] == "request_body_timeout"
        }),
    ] {
        let mut stream = connect_from(LOCAL, h.gateway).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
             {extra}content-length: 1000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // One byte every 100 ms: each frame arrives well within any per-read timeout, the
        // whole body never within the total one.
        let (mut read, mut write) = stream.split();
        let trickle = async {
            for _ in 0..(gw::BOUND.as_millis() / 100) {
                if write.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let reading = async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&answer);
                if let Some((_, body)) = text.split_once("\r\n\r\n")
                    && serde_json::from_str::<Value>(body.trim()).is_ok()
                {
                    break;
                }
            }
        };
        tokio::select! {
            () = reading => {}
            () = trickle => panic!("{path}: no answer while the body trickled"),
        }
        assert_eq!(
            status_of(&answer),
            408,
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
        let body = json_body(&answer);
        assert!(check(&body), "{path}: {body}");
    }
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_answered() {
    // Sent in pieces, each within the deadline and the whole too.
    let h = gateway(|c| c.server.body_read_timeout_ms = 10_000).await;
    let body = serde_json::to_vec(&gw::chat_body(
        providers::Dialect::OpenAi,
        "openai/text_basic",
        false,
    ))
    .unwrap();
    let mut stream = connect_from(LOCAL, h.gateway).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(4)) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
}

#[tokio::test]
async fn a_head_over_64_kib_is_refused_with_431() {
    let h = gateway(|_| {}).await;
    let mut stream = connect_from(LOCAL, h.gateway).await;
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The gateway may answer and close before taking all of it.
    let _ = stream.write_all(huge.as_bytes()).await;
    let answer = read_to_close(&mut stream).await;
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Heads of sizes on both sides of the 64 KiB limit (seeded, a few hundred bytes clear of it),
/// sent whole or in pieces: those within it are answered, those over it get 431.
/// hyper's buffer cap alone let a head of up to ~110 KiB through when its reads grew the
/// buffer past the cap before the head was complete.
#[tokio::test]
async fn heads_are_answered_or_refused_by_their_size_alone() {
    let h = gateway(|_| {}).await;
    let mut rng = fastrand::Rng::with_seed(0x5eed_0431);
    let mut next = |bound: usize| rng.usize(..bound);
    const LIMIT: usize = 64 * 1024;
    for case in 0..12 {
        let over = case % 2 == 1;
        let size = if over {
            LIMIT + 512 + next(96 * 1024)
        } else {
            LIMIT - 512 - next(8 * 1024)
        };
        let start = "GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-big: ";
        let head = format!("{start}{}\r\n\r\n", "a".repeat(size - start.len() - 4));
        assert_eq!(head.len(), size);
        let mut stream = connect_from(LOCAL, h.gateway).await;
        // Half the heads in one write (the reads then see as much as the buffer takes), the
        // others in pieces; the first piece may be a single byte: the version is told from
        // whatever came first.
        let whole = next(2) == 0;
        let mut rest = head.as_bytes();
        while !rest.is_empty() {
            let piece = if whole {
                rest.len()
            } else {
                (1 + next(40 * 1024)).min(rest.len())
            };
            if stream.write_all(&rest[..piece]).await.is_err() {
                break;
            }
            rest = &rest[piece..];
            tokio::time::sleep(Duration::from_millis(next(20) as u64)).await;
        }
        let status = if over {
            status_of(&read_to_close(&mut stream).await)
        } else {
            status_of(read_response(&mut stream).await.0.as_bytes())
        };
        assert_eq!(
            status,
            if over { 431 } else { 200 },
            "a head of {size} bytes"
        );
    }
}

/// An HTTP/2 (prior knowledge) connection to the gateway, its request sender, and the task
/// driving it (which ends when the gateway closes the connection).
async fn http2(
    gateway: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    http2_over(connect_from(LOCAL, gateway).await).await
}

async fn http2_over<I>(
    io: I,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    (send, tokio::spawn(async move { drop(conn.await) }))
}

/// The HTTP/2 preface cut at every place, the pieces apart: the gateway waits for enough of
/// it to tell the version, and serves HTTP/2.
#[tokio::test]
async fn an_http2_preface_that_arrives_in_pieces_is_served_as_http2() {
    let h = gateway(|_| {}).await;
    // Every strict prefix of the 24-byte preface.
    for cut in 1..24 {
        // The client's bytes pass through a relay that sends the first `cut` alone.
        let (client, relay) = tokio::io::duplex(64 * 1024);
        let upstream = connect_from(LOCAL, h.gateway).await;
        tokio::spawn(async move {
            let (mut from_client, mut to_client) = tokio::io::split(relay);
            let (mut from_gateway, mut to_gateway) = upstream.into_split();
            let mut first = vec![0u8; cut];
            if from_client.read_exact(&mut first).await.is_err() {
                return;
            }
            let _ = to_gateway.write_all(&first).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let up = tokio::io::copy(&mut from_client, &mut to_gateway);
            let down = tokio::io::copy(&mut from_gateway, &mut to_client);
            let _ = tokio::join!(up, down);
        });
        let (mut send, _driver) = http2_over(client).await;
        assert_eq!(
            http2_health(&mut send, h.gateway).await,
            200,
            "cut at {cut}"
        );
    }
}

async fn http2_health(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    gateway: SocketAddr,
) -> u16 {
    let request = http::Request::get(format!("http://{gateway}/healthz"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = tokio::time::timeout(gw::BOUND, send.send_request(request))
        .await
        .unwrap()
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn http2_connections_live_between_requests_and_close_when_idle() {
    // A header timeout far shorter than the pause: HTTP/2 between requests is on the idle
    // clock only.
    let h = gateway(|c| c.server.header_read_timeout_ms = 300).await;
    let (mut send, driver) = http2(h.gateway).await;
    for _ in 0..2 {
        assert_eq!(http2_health(&mut send, h.gateway).await, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(!driver.is_finished(), "the connection was closed");

    let h = gateway(|c| c.server.keep_alive_idle_ms = 300).await;
    let (mut send, driver) = http2(h.gateway).await;
    assert_eq!(http2_health(&mut send, h.gateway).await, 200);
    tokio::time::timeout(gw::BOUND, driver)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .unwrap();
}

#[tokio::test]
async fn shutdown_drains_answers_in_flight_and_closes_the_rest_at_once() {
    let replay = streamgate::replay::spawn(SocketAddr::from((LOCAL, 0)))
        .await
        .unwrap();
    let mut config = replay.config();
    let journal = tempfile::tempdir().unwrap();
    config.streams.journal.dir = journal.path().to_owned();
    // Far past the bound: only shutdown can close the slow head in time.
    config.server.header_read_timeout_ms = 600_000;
    let (gateway, stop) = gw::serve_gateway(config).await;

    let body = serde_json::to_vec(&gw::chat_body(
        providers::Dialect::OpenAi,
        "openai/drip=50:text_basic",
        true,
    ))
    .unwrap();
    let mut answering = connect_from(LOCAL, gateway).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    answering.write_all(head.as_bytes()).await.unwrap();
    answering.write_all(&body).await.unwrap();
    // The response has started: the request is in flight.
    let mut first = [0u8; 12];
    answering.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let mut slow = connect_from(LOCAL, gateway).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nho")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();

    assert!(read_to_close(&mut slow).await.is_empty());
    let rest = String::from_utf8(read_to_close(&mut answering).await).unwrap();
    assert!(rest.contains("data: [DONE]"), "the answer was cut: {rest}");
}
