//! Pass-through: paths the gateway does not answer itself go, over real sockets, to a local
//! upstream that records what it received. Bodies arrive byte for byte (JSON, multipart,
//! binary), stream both ways without being held whole, and every request passes the
//! gateway's authentication, body limit and rate limits first; errors come in the door's
//! dialect, and the gateway key never reaches the provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::HeaderMap;
use serde_json::{Value, json};
use streamgate::config::Config;
use streamgate::keys::{generate, hex, sha256};
use tokio::sync::{Notify, mpsc};

/// Upper bound for one wait in these tests (generous: a loaded 2-core machine).
const BOUND: Duration = Duration::from_secs(20);

/// One request the test upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Signalled when a `/slow` body's first chunk arrives.
    first_chunk: Notify,
    /// Bytes a `/slow` body brought in all.
    slow_total: Mutex<usize>,
    /// The events a `/sse` answer sends, as the test releases them.
    events: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

/// A local upstream: `/slow` counts a body chunk by chunk, `/sse` streams what the test
/// releases, `/status/N` answers N with an error body of the path's dialect, anything else
/// is recorded and echoed.
struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    async fn spawn() -> Upstream {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path.ends_with("/slow") {
        let mut data = body.into_data_stream();
        let mut total = 0;
        while let Some(Ok(chunk)) = data.next().await {
            if total == 0 {
                shared.first_chunk.notify_one();
            }
            total += chunk.len();
        }
        *shared.slow_total.lock().unwrap() = total;
        return json_answer(200, &json!({"received": total}));
    }
    if path.ends_with("/sse") {
        let events = shared.events.lock().unwrap().take().unwrap();
        let stream = futures_util::stream::unfold(events, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        // The gateway cut the body (its limit): nothing to record.
        return json_answer(400, &json!({"error": {"message": "cut"}}));
    };
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: bytes.to_vec(),
    });
    if let Some(status) = path.rsplit_once("/status/").map(|(_, s)| s) {
        let status: u16 = status.parse().unwrap();
        let message = format!(
            "no such thing (key {})",
            parts
                .headers
                .get("authorization")
                .or(parts.headers.get("x-api-key"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
        );
        let body = if parts.headers.contains_key("anthropic-version") {
            json!({"type": "error", "error": {"type": "not_found_error", "message": message}})
        } else {
            json!({"error": {"type": "invalid_request_error", "message": message, "code": null}})
        };
        return json_answer(status, &body);
    }
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("set-cookie", "provider=1")
        .header("x-request-id", "req_echo")
        .body(Body::from(bytes))
        .unwrap()
}

fn json_answer(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Two upstreams (OpenAI, Anthropic) and a gateway over them, with `extra` TOML appended.
async fn start(extra: &str) -> (Upstream, Upstream, String, tokio::sync::oneshot::Sender<()>) {
    let (oa, an) = (Upstream::spawn().await, Upstream::spawn().await);
    let config = Config::parse(&format!(
        "[providers.oa]\ndialect = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.an]\ndialect = \"anthropic\"\nbase_url = \"{}\"\n\
         [models.embed]\nroute = \"oa/text-embedding-3-small\"\n\
         [streams.journal]\nenabled = false\n{extra}",
        oa.url(),
        an.url()
    ))
    .unwrap();
    let (addr, stop) = gw::serve_gateway(config).await;
    (oa, an, format!("http://{addr}"), stop)
}

/// The status line and headers of a GET of `path` written as it is on the wire.
async fn raw_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, socket.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn is_openai_error(body: &Value) -> bool {
    body["error"]["message"].is_string() && body.get("type").is_none()
}

fn is_anthropic_error(body: &Value) -> bool {
    body["type"] == "error" && body["error"]["type"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_reach_the_doors_provider_with_aliases_resolved() {
    let (oa, an, gateway, _stop) = start("").await;
    let client = gw::client();
    let body = json!({"model": "embed", "input": ["a", "b"], "encoding_format": "float"});
    let r = client
        .post(format!("{gateway}/v1/embeddings"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The provider's id moves aside; the gateway's own (a UUID v7 here) is x-request-id.
    assert_eq!(r.headers()["x-upstream-request-id"], "req_echo");
    assert_eq!(r.headers()["x-request-id"].len(), 36);
    assert!(r.headers().get("set-cookie").is_none());
    let echoed: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let mut want = body.clone();
    want["model"] = json!("text-embedding-3-small");
    assert_eq!(echoed, want);
    // A model that is no alias goes as it is, bytes untouched.
    let raw = br#"{"model":"text-embedding-3-large",   "input":"x"}"#;
    let r = client
        .post(format!("{gateway}/v1/embeddings"))
        .header("content-type", "application/json")
        .body(raw.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), raw);
    let seen = oa.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.path == "/v1/embeddings" && s.method == "POST")
    );
    // The Anthropic door (its headers say so) goes to the Anthropic provider, with the
    // provider's version header.
    let r = client
        .post(format!("{gateway}/v1/messages/batches"))
        .header("x-api-key", "client-credential")
        .header("anthropic-version", "2099-01-01")
        .header("anthropic-beta", "files-api-2025-04-14")
        .header("content-type", "application/json")
        .body(json!({"requests": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = an.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages/batches");
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen[0].header("anthropic-beta"),
        Some("files-api-2025-04-14")
    );
    assert_eq!(
        seen[0].header("x-api-key"),
        None,
        "no provider key configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_provider_key_goes_only_where_the_provider_allows_it() {
    // Open, the SDK's credential is the client's provider key; keyed, it comes in
    // `streamgate-provider-key`.
    let (oa, an) = (Upstream::spawn().await, Upstream::spawn().await);
    let gateway_key = generate().unwrap();
    for keyed in [false, true] {
        let keys = if keyed {
            format!("[keys.app]\nsha256 = \"{}\"\n", hex(&sha256(&gateway_key)))
        } else {
            String::new()
        };
        let config = Config::parse(&format!(
            "[providers.oa]\ndialect = \"openai\"\nbase_url = \"{}/v1\"\n\
             pass_through_client_key = true\n\
             [providers.an]\ndialect = \"anthropic\"\nbase_url = \"{}\"\n\
             [streams.journal]\nenabled = false\n{keys}",
            oa.url(),
            an.url()
        ))
        .unwrap();
        let (addr, _stop) = gw::serve_gateway(config).await;
        let client = gw::client();
        let credential = if keyed {
            gateway_key.as_str()
        } else {
            "sk-client-own"
        };
        let mut request = client
            .post(format!("http://{addr}/v1/embeddings"))
            .bearer_auth(credential)
            .header("content-type", "application/json")
            .body(r#"{"input":"x"}"#);
        if keyed {
            request = request.header("streamgate-provider-key", "sk-client-own");
        }
        assert_eq!(request.send().await.unwrap().status(), 200, "keyed {keyed}");
        let seen = oa.seen().pop().unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer sk-client-own"),
            "keyed {keyed}"
        );
        assert!(seen.header("streamgate-provider-key").is_none());
        // The Anthropic provider does not take client keys: none goes there.
        let r = client
            .get(format!("http://{addr}/v1/messages/batches"))
            .header("x-api-key", credential)
            .header("anthropic-version", "2023-06-01")
            .header("streamgate-provider-key", "sk-client-own")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "keyed {keyed}");
        let seen = an.seen().pop().unwrap();
        assert!(seen.header("x-api-key").is_none(), "keyed {keyed}");
        assert!(seen.header("authorization").is_none(), "keyed {keyed}");
    }
}

/// A multipart body of `files` (name, bytes) with `boundary`.
fn multipart(boundary: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        )
        .as_bytes(),
    );
    for (name, bytes) in files {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 content-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_binary_bodies_arrive_byte_for_byte() {
    let (oa, _an, gateway, _stop) = start("").await;
    let client = gw::client();
    let mut rng = fastrand::Rng::with_seed(11);
    for case in 0..8 {
        let size = [0, 1, 4095, 65_537, 300_000][case % 5] + rng.usize(..100);
        let bytes: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        let boundary = format!("----b{}", rng.u64(..));
        let body = multipart(&boundary, &[(format!("f{case}.bin"), bytes)]);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let r = client
            .post(format!("{gateway}/v1/files"))
            .header("content-type", &content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "case {case}");
        assert_eq!(r.bytes().await.unwrap(), body, "case {case}: echoed");
        let seen = oa.seen().pop().unwrap();
        assert_eq!(seen.body, body, "case {case}: received");
        assert_eq!(seen.header("content-type"), Some(content_type.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_reaches_the_upstream_before_the_client_has_sent_it() {
    let (oa, _an, gateway, _stop) = start("").await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let request = tokio::spawn(
        gw::client()
            .post(format!("{gateway}/v1/audio/slow"))
            .header("content-type", "audio/wav")
            .body(body)
            .send(),
    );
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    tx.send(Ok(chunk.clone())).await.unwrap();
    // Were the body buffered whole before forwarding, this would never come: the client has
    // sent 64 KiB of what will be 6 MiB.
    tokio::time::timeout(BOUND, oa.shared.first_chunk.notified())
        .await
        .expect("the upstream got the body's first bytes while the client was still sending");
    for _ in 1..96 {
        tx.send(Ok(chunk.clone())).await.unwrap();
    }
    drop(tx);
    let r = tokio::time::timeout(BOUND, request)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = gw::json_of(r).await;
    assert_eq!(answer["received"], 96 * 64 * 1024);
    assert_eq!(*oa.shared.slow_total.lock().unwrap(), 96 * 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_reaches_the_client_event_by_event() {
    let (oa, _an, gateway, _stop) = start("").await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    *oa.shared.events.lock().unwrap() = Some(rx);
    let r = gw::client()
        .get(format!("{gateway}/v1/batches/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut received = Vec::new();
    for i in 0..5 {
        let event = format!("data: {{\"n\":{i}}}\n\n");
        tx.send(Bytes::from(event.clone())).await.unwrap();
        // Each event reaches the client before the upstream has produced the next one.
        let mut got = Vec::new();
        while got.len() < event.len() {
            let chunk = tokio::time::timeout(BOUND, body.next())
                .await
                .expect("event {i} arrived on its own")
                .unwrap()
                .unwrap();
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, event.as_bytes());
        received.push(got);
    }
    drop(tx);
    assert!(
        tokio::time::timeout(BOUND, body.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(received.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_and_the_query_string_pass() {
    let (oa, _an, gateway, _stop) = start("").await;
    let client = gw::client();
    let r = client
        .get(format!(
            "{gateway}/v1/files?purpose=batch&limit=2&after=file%2Dx"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .delete(format!("{gateway}/v1/files/file-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{gateway}/v1/files/file-123/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = oa.seen();
    let got: Vec<(&str, &str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.query.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "GET",
                "/v1/files",
                Some("purpose=batch&limit=2&after=file%2Dx")
            ),
            ("DELETE", "/v1/files/file-123", None),
            ("GET", "/v1/files/file-123/content", None),
        ]
    );
    assert!(seen.iter().all(|s| s.body.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_routes_and_paths_keep_precedence() {
    let (oa, an, gateway, _stop) = start("[passthrough]\nanthropic = false\n").await;
    let client = gw::client();
    let r = client
        .get(format!("{gateway}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/v1/streams/abc/more", "/admin/anything", "/v2/embeddings"] {
        let r = client.get(format!("{gateway}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(is_openai_error(&gw::json_of(r).await), "{path}");
    }
    // Written on the wire as they are (a client library would resolve the dots itself).
    for path in [
        "/v1/../admin/keys",
        "/v1/files/%2e%2e/%2E%2e/secrets",
        "/v1/files/./x",
    ] {
        let head = raw_get(gateway.trim_start_matches("http://"), path).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }
    // Pass-through off at the Anthropic door: a 404 in its dialect.
    let r = client
        .get(format!("{gateway}/v1/models/claude-x"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(is_anthropic_error(&gw::json_of(r).await));
    assert!(oa.seen().is_empty() && an.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limits_and_body_size_apply_before_anything_is_forwarded() {
    let (full, narrow) = (generate().unwrap(), generate().unwrap());
    let extra = format!(
        "[server]\nmax_body_bytes = 4096\n\
         [keys.full]\nsha256 = \"{}\"\n\
         [keys.narrow]\nsha256 = \"{}\"\nmodels = [\"embed\"]\nrequests_per_minute = 2\n",
        hex(&sha256(&full)),
        hex(&sha256(&narrow))
    );
    let (oa, an, gateway, _stop) = start(&extra).await;
    let client = gw::client();
    let post = |key: Option<&str>, anthropic: bool, body: Vec<u8>, json: bool| {
        let mut r = client
            .post(format!("{gateway}/v1/embeddings"))
            .header(
                "content-type",
                if json {
                    "application/json"
                } else {
                    "application/octet-stream"
                },
            )
            .body(body);
        if anthropic {
            r = r.header("anthropic-version", "2023-06-01");
            if let Some(key) = key {
                r = r.header("x-api-key", key);
            }
        } else if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        r.send()
    };
    let small = serde_json::to_vec(&json!({"model": "embed", "input": "x"})).unwrap();
    // No key, or a wrong one: 401 in the door's dialect.
    for (key, anthropic) in [(None, false), (Some("sg-wrong"), false), (None, true)] {
        let r = post(key, anthropic, small.clone(), true).await.unwrap();
        assert_eq!(r.status(), 401, "{key:?}");
        let body: Value = gw::json_of(r).await;
        assert!(if anthropic {
            is_anthropic_error(&body)
        } else {
            is_openai_error(&body)
        });
    }
    // Over the body limit: 413, declared (JSON) or streamed (chunked, no length).
    let r = post(Some(&full), false, vec![b' '; 5000], true)
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..10).map(|_| Ok(Bytes::from(vec![1u8; 1000]))).collect();
    let r = client
        .post(format!("{gateway}/v1/audio/transcriptions"))
        .bearer_auth(&full)
        .header("content-type", "audio/wav")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(is_openai_error(&gw::json_of(r).await));
    // A key restricted to some models: others are 403.
    let other = serde_json::to_vec(&json!({"model": "text-embedding-3-large"})).unwrap();
    let r = post(Some(&narrow), false, other, true).await.unwrap();
    assert_eq!(r.status(), 403);
    let before = oa.seen().len();
    assert_eq!(before, 0, "nothing refused reached the upstream");
    // The key's request rate: two a minute, then 429 with Retry-After.
    for _ in 0..2 {
        let r = post(Some(&narrow), false, small.clone(), true)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = post(Some(&narrow), false, small.clone(), true)
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Accepted requests never carry the gateway key upstream, at either door.
    let r = post(Some(&full), false, small.clone(), true).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(Some(&full), true, small.clone(), false).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Vec<Seen> = oa.seen().into_iter().chain(an.seen()).collect();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        for (name, value) in &s.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(&full) && !value.contains(&narrow),
                "{name} carried a gateway key"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_come_in_the_doors_dialect() {
    let closed = process::free_port();
    let (_oa, _an, gateway, _stop) = start("").await;
    let client = gw::client();
    // The provider's 4xx, its status kept, in the door's shape.
    let r = client
        .get(format!("{gateway}/v1/files/status/404"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = gw::json_of(r).await;
    assert!(is_openai_error(&body), "{body}");
    assert!(body.to_string().contains("no such thing"), "{body}");
    let r = client
        .get(format!("{gateway}/v1/files/status/404"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(is_anthropic_error(&gw::json_of(r).await));
    // The provider refused the gateway's credentials: the operator's problem, a 502.
    for status in [401, 403] {
        let r = client
            .get(format!("{gateway}/v1/files/status/{status}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{status}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("no such thing"), "{text}");
    }
    // An unreachable provider: 502, no transport words.
    let (_oa2, _an2, gateway2, _stop2) = start(&format!(
        "[providers.gone]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:{closed}/v1\"\n\
         [passthrough]\nopenai = \"gone\"\n"
    ))
    .await;
    let r = client
        .post(format!("{gateway2}/v1/embeddings"))
        .header("content-type", "application/json")
        .body(json!({"input": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(is_openai_error(&serde_json::from_str(&text).unwrap()));
    for word in ["127.0.0.1", "os error", "hyper", "reqwest", "refused (os"] {
        assert!(!text.contains(word), "{word} in {text}");
    }
}

/// The configured provider key goes in the dialect's header and the client's never does;
/// a provider's error quoting the key is scrubbed. The key variables live in a gateway
/// process of its own (a test cannot set variables in its own process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_key_replaces_the_gateway_key() {
    let (oa, an) = (Upstream::spawn().await, Upstream::spawn().await);
    let gateway_key = generate().unwrap();
    let pid = std::process::id();
    let (oa_var, an_var) = (format!("SG_PT_OA_{pid}"), format!("SG_PT_AN_{pid}"));
    let config = format!(
        "[providers.oa]\ndialect = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"{oa_var}\"\n\
         organization = \"org-gw\"\n\
         [providers.an]\ndialect = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"{an_var}\"\n\
         [keys.app]\nsha256 = \"{}\"\n",
        oa.url(),
        an.url(),
        hex(&sha256(&gateway_key))
    );
    let gateway = process::GatewayProcess::serve_with_env(
        &config,
        &[
            (&oa_var, "sk-env-openai-31337"),
            (&an_var, "sk-env-anthropic-4242"),
        ],
    )
    .await;
    let client = gw::client();
    let r = client
        .post(format!("{}/v1/moderations", gateway.url))
        .bearer_auth(&gateway_key)
        .header("openai-organization", "org-client")
        .header("content-type", "application/json")
        .body(json!({"input": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/v1/models/claude-x", gateway.url))
        .header("x-api-key", &gateway_key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = oa.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-env-openai-31337")
    );
    assert_eq!(seen[0].header("openai-organization"), Some("org-gw"));
    assert_eq!(seen[0].headers.get_all("authorization").iter().count(), 1);
    let seen = an.seen();
    assert_eq!(seen[0].header("x-api-key"), Some("sk-env-anthropic-4242"));
    assert_eq!(seen[0].headers.get_all("x-api-key").iter().count(), 1);
    assert_eq!(seen[0].header("authorization"), None);
    // The provider quotes the key it got in a 400: the client never reads it.
    let r = client
        .get(format!("{}/v1/files/status/400", gateway.url))
        .bearer_auth(&gateway_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("no such thing"), "{text}");
    assert!(!text.contains("sk-env-openai-31337"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408_and_an_open_answer_holds_its_stream_slot() {
    let (oa, _an, gateway, _stop) = start(
        "[server]\nbody_read_timeout_ms = 300\n\
         [limits.per_key]\nconcurrent_streams = 1\n",
    )
    .await;
    let client = gw::client();
    // The body's first bytes, then silence: the listener's body deadline ends it.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tx.send(Ok(Bytes::from_static(b"RIFF"))).await.unwrap();
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let r = client
        .post(format!("{gateway}/v1/audio/slow"))
        .header("content-type", "audio/wav")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    assert!(is_openai_error(&gw::json_of(r).await));
    drop(tx);
    // One stream at a time: while an answer is still streaming, the next request waits its
    // turn (429); once that answer's body is done, it passes.
    let (events, rx) = mpsc::channel::<Bytes>(1);
    *oa.shared.events.lock().unwrap() = Some(rx);
    let open = client
        .get(format!("{gateway}/v1/batches/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let r = client
        .get(format!("{gateway}/v1/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    events
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    drop(events);
    assert_eq!(open.bytes().await.unwrap().as_ref(), b"data: 1\n\n");
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let r = client
            .get(format!("{gateway}/v1/files"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        // The slot comes back when the gateway has dropped the finished body.
        assert_eq!(r.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
