//! Request bodies cost the gateway a small constant factor of their size, whatever their
//! shape: a gateway process with `max_body_bytes` raised to 32 MiB gets 30 MB bodies of the
//! shapes that cost most (one huge string, many small messages, many tiny content parts, a
//! huge number of keys, deep nesting, a sea of tiny values), one after the other and three at
//! once, and its peak resident memory (`VmHWM` in /proc) stays under [`PEAK_RSS_BOUND`].
//! With the default limits, an oversized body gets 413 in the door's dialect before it is
//! read to its end, whether its `Content-Length` says so or it comes chunked; nesting past
//! the JSON parser's recursion limit is a 400.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures_util::StreamExt;
use process::GatewayProcess;
use providers::Dialect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Size of each large body.
const BODY_BYTES: usize = 30 * 1024 * 1024;

/// Peak resident memory of the gateway over the whole test: 30 MB bodies, the three densest
/// accepted shapes at once. Each costs its bytes, the unified request its strings moved into,
/// the tree of at most `max_body_json_values` (1M) values it is parsed into (80 to 200 bytes
/// a value with `preserve_order`), and the body written for the upstream (a tree again, then
/// its bytes): 200 to 300 MB for the densest shape accepted. Three at once plus the
/// allocator's per-thread arenas and the process's own 25 MB: measured 740-790 MB. Without
/// the count of values (a refused body's tree stops growing at the limit, then is dropped),
/// the two refused shapes alone took the gateway to 6.1 and 7.3 GB.
const PEAK_RSS_BOUND: u64 = 1024 * 1024 * 1024;

/// Upper bound for one exchange on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(120);

/// An upstream that reads each body to its end without keeping it and answers with a short
/// recorded stream (the replay would keep every body it gets, in this test's memory).
async fn sink_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = streamgate::replay::fixture(Dialect::OpenAi, "text_basic").unwrap();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |request: Request| async move {
            let mut body = request.into_body().into_data_stream();
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from(answer))
                .unwrap()
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `{"model":...,"stream":true,"messages":[MESSAGES] EXTRA}`.
fn request(messages: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"model":"openai/text_basic","stream":true,"messages":[{messages}]{extra}}}"#)
        .into_bytes()
}

/// Text of `len` bytes with JSON escapes in it (each unescaped into a fresh string).
fn text(len: usize) -> String {
    const UNIT: &str = r#"abc\n\"de\u00e9f "#;
    let mut text = UNIT.repeat(len / UNIT.len());
    text.push_str(&"x".repeat(len - text.len()));
    text
}

/// How many copies of `item` (plus a comma) fill about [`BODY_BYTES`].
fn filling(item: &str) -> usize {
    BODY_BYTES / (item.len() + 1)
}

/// The shapes, each about [`BODY_BYTES`], and the status the gateway must give it.
fn shapes() -> Vec<(&'static str, Vec<u8>, u16)> {
    let one_string = request(
        &format!(r#"{{"role":"user","content":"{}"}}"#, text(BODY_BYTES)),
        "",
    );
    // Five values a message: under the 1M value limit, as dense as an accepted body gets.
    let message = format!(r#"{{"role":"user","content":"{}"}}"#, text(140));
    let many_messages = request(&vec![message.as_str(); filling(&message)].join(","), "");
    let part = format!(r#"{{"type":"text","text":"{}"}}"#, text(140));
    let many_parts = request(
        &format!(
            r#"{{"role":"user","content":[{}]}}"#,
            vec![part.as_str(); filling(&part)].join(",")
        ),
        "",
    );
    let pair = |i: usize| format!(r#""k{i:08}":"{}""#, text(55));
    let n_keys = filling(&pair(0));
    let many_keys = request(
        r#"{"role":"user","content":"hi"}"#,
        &format!(
            r#","x_extra":{{{}}}"#,
            (0..n_keys).map(pair).collect::<Vec<_>>().join(",")
        ),
    );
    // Refused by the value count before any tree is built.
    let nest = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let deep = request(
        r#"{"role":"user","content":"hi"}"#,
        &format!(
            r#","x_deep":[{}]"#,
            vec![nest.as_str(); filling(&nest)].join(",")
        ),
    );
    let zeros = request(
        r#"{"role":"user","content":"hi"}"#,
        &format!(r#","x_zeros":[{}]"#, vec!["0"; BODY_BYTES / 2].join(",")),
    );
    vec![
        ("one huge string", one_string, 200),
        ("many small messages", many_messages, 200),
        ("many tiny content parts", many_parts, 200),
        ("a huge number of keys", many_keys, 200),
        ("deep nesting", deep, 413),
        ("a sea of tiny values", zeros, 413),
    ]
}

/// Posts `body` and reads the whole answer; its status.
async fn post(url: &str, body: Vec<u8>) -> u16 {
    // reqwest is built without a TLS provider (see `client()` in tests/common/gateway.rs,
    // whose 20 s bound is too short for 30 MB bodies on a loaded debug build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .unwrap();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_megabyte_bodies_of_every_shape_stay_within_the_bound() {
    let upstream = sink_upstream().await;
    let mut gateway = GatewayProcess::serve(&format!(
        "[server]\nmax_body_bytes = {}\n\n\
         [providers.openai]\ndialect = \"openai\"\nbase_url = \"http://{upstream}/v1\"\n",
        32 * 1024 * 1024
    ))
    .await;
    let idle = gateway.rss_bytes();
    let shapes = shapes();
    // The cheap shapes one by one, then the dense ones at once.
    let (dense, cheap): (Vec<_>, Vec<_>) = shapes
        .iter()
        .partition(|(name, _, want)| *want == 200 && *name != "one huge string");
    for (name, body, want) in &cheap {
        assert!(body.len() > BODY_BYTES * 9 / 10, "{name}: {}", body.len());
        let status = post(&gateway.url, body.clone()).await;
        assert_eq!(status, *want, "{name}");
        eprintln!(
            "{name}: status {status}, peak RSS so far {} MiB",
            gateway.peak_rss_bytes() >> 20
        );
    }
    assert_eq!(dense.len(), 3);
    let at_once = dense
        .iter()
        .map(|(_, body, _)| post(&gateway.url, body.clone()));
    let statuses = futures_util::future::join_all(at_once).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let peak = gateway.peak_rss_bytes();
    eprintln!(
        "idle {} MiB, peak {} MiB (bound {} MiB)",
        idle >> 20,
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
    assert!(gateway.is_running());
    assert!(peak < PEAK_RSS_BOUND, "peak RSS {} MiB", peak >> 20);
}

/// The head of a POST to the OpenAI door, with `framing` (a `Content-Length` or chunked).
fn head(addr: SocketAddr, framing: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/json\r\n{framing}\r\n"
    )
}

/// Reads a response head and body start until the connection has given a status line and
/// the error body, or closes; the text read.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("request_too_large") {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let upstream = sink_upstream().await;
    let gateway = GatewayProcess::serve(&format!(
        "[providers.openai]\ndialect = \"openai\"\nbase_url = \"http://{upstream}/v1\"\n"
    ))
    .await;
    let default_limit: usize = 8 * 1024 * 1024;
    let gateway_addr = gateway.addr;

    // Content-Length over the limit, and only a few bytes of the body ever sent: the answer
    // comes without the rest.
    // Each door answers in its dialect.
    for (path, extra, shape) in [
        (
            "/v1/chat/completions",
            "",
            r#"{"error":{"message":"request body exceeds the limit of 8388608 bytes","type":"invalid_request_error""#,
        ),
        (
            "/v1/messages",
            "anthropic-version: 2023-06-01\r\n",
            r#"{"type":"error","error":{"type":"request_too_large""#,
        ),
    ] {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let framing = format!("{extra}content-length: {}\r\n", default_limit + 1);
        let head = head(gateway.addr, &framing).replacen("/v1/chat/completions", path, 1);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(b"{\"model\":").await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{path}: {response}");
        assert!(response.contains(shape), "{path}: {response}");
    }

    // Nesting past serde_json's recursion limit (128) is a 400 naming nothing of the body.
    let deep = format!(
        r#"{{"model":"openai/text_basic","messages":[{{"role":"user","content":"hi"}}],"x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let status = post(&gateway.url, deep.into_bytes()).await;
    assert_eq!(status, 400);

    // Chunked: the answer comes once the limit is passed, while the client would go on
    // (it sends one MiB past the limit and never the last chunk, then waits).
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer
            .write_all(head(gateway_addr, "transfer-encoding: chunked\r\n").as_bytes())
            .await
            .unwrap();
        let chunk = [
            format!("{:x}\r\n", 1 << 20).into_bytes(),
            vec![b' '; 1 << 20],
            b"\r\n".to_vec(),
        ]
        .concat();
        let mut sent = 0;
        while sent <= default_limit + (1 << 20) {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            sent += 1 << 20;
        }
        // Held open: the answer must not wait for the body's end.
        tokio::time::sleep(BOUND).await;
        drop(writer);
    });
    let response = read_response(&mut reader).await;
    writing.abort();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("request_too_large"), "{response}");
}
