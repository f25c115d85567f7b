//! A provider's limits and failures as the gateway meets them (docs/resilience.md, "Retries"
//! and "Circuit breakers"): hostile rate-limit headers through the whole attempt loop, many
//! clients meeting one short 429, a circuit-breaker probe whose client leaves, and the 503 of
//! cooling routes at every door. The upstream is a small scripted OpenAI-dialect server on
//! 127.0.0.1 inside the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use providers::Dialect;
use serde_json::{Value, json};
use streamgate::config::{Config, ModelConfig, ProviderConfig};

/// What the scripted upstream answers.
#[derive(Debug, Clone)]
enum Reply {
    /// An error status with these headers.
    Status(u16, Vec<(String, String)>),
    /// The answer [`TEXT`], one word per chunk, `drip` apart, with these headers.
    Stream(Duration, Vec<(String, String)>),
}

/// The answer's text, as its chunks carry it.
const WORDS: [&str; 5] = ["Hello", " there", ",", " friend", "."];

fn text() -> String {
    WORDS.concat()
}

/// Decides a reply from the requested model and how many requests for it came before.
type Script = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

fn sse(model: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    frames.extend(
        WORDS
            .iter()
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    frames.push(chunk(json!({}), json!("stop")));
    frames.push(
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
        "model": model, "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
    );
    let mut out: Vec<String> = frames.iter().map(|f| format!("data: {f}\n\n")).collect();
    out.push("data: [DONE]\n\n".into());
    out
}

async fn upstream(script: Script) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let (script, counter, seen) = (script.clone(), counter.clone(), seen.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let model = request["model"].as_str().unwrap_or_default().to_owned();
            let nth = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(model.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            let (status, headers, body) = match script(&model, nth) {
                Reply::Status(status, headers) => {
                    let body =
                        json!({"error": {"message": "scripted", "type": "rate_limit_error"}});
                    (status, headers, Body::from(body.to_string()))
                }
                Reply::Stream(drip, headers) => {
                    let frames =
                        futures_util::stream::iter(sse(&model)).then(move |f| async move {
                            tokio::time::sleep(drip).await;
                            Ok::<_, std::io::Error>(f)
                        });
                    (200, headers, Body::from_stream(frames))
                }
            };
            let mut response = http::Response::builder().status(status).header(
                "content-type",
                if status == 200 {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(&value),
                ) {
                    response = response.header(n, v);
                }
            }
            response.body(body).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream { addr, hits }
}

/// A gateway on 127.0.0.1:0, stopped when dropped.
struct Gateway {
    addr: SocketAddr,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _journal: tempfile::TempDir,
}

/// A gateway whose provider `up` is `upstream`, with fast retries; `edit` adjusts the rest.
async fn gateway(upstream: &Upstream, edit: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = Config::default();
    let mut provider =
        ProviderConfig::new(Dialect::OpenAi, &format!("http://{}/v1", upstream.addr), "");
    provider.api_key_env = None;
    provider.connect_timeout_ms = 1000;
    provider.first_byte_timeout_ms = 5000;
    provider.idle_timeout_ms = 5000;
    config.providers.insert("up".into(), provider);
    let retry = &mut config.streaming.retry_policy;
    retry.backoff_ms = 10;
    retry.max_backoff_ms = 50;
    let journal = tempfile::tempdir().unwrap();
    config.streams.journal.dir = journal.path().to_owned();
    edit(&mut config);
    let (addr, stop) = gw::serve_gateway(config).await;
    Gateway {
        addr,
        client: gw::client(),
        _stop: stop,
        _journal: journal,
    }
}

/// How one request through a door ended.
#[derive(Debug)]
enum Outcome {
    /// 200 and the whole answer.
    Whole,
    /// A clean refusal: the status, its `Retry-After` and its JSON error body.
    Refused(u16, Option<u64>, Value),
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks `model` through `door` (streaming or not); panics on anything but a whole answer
    /// or a clean error in the door's shape.
    async fn ask(&self, door: Dialect, model: &str, stream: bool) -> Outcome {
        let body = gw::chat_body(door, model, stream);
        let mut request = self
            .client
            .post(self.url(gw::door_path(door)))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
        if door == Dialect::Anthropic {
            request = request.header("anthropic-version", "2023-06-01");
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{door} {model}: no answer: {e}"));
        self.outcome(door, model, stream, response).await
    }

    async fn outcome(
        &self,
        door: Dialect,
        model: &str,
        stream: bool,
        response: reqwest::Response,
    ) -> Outcome {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{door} {model}: body cut: {e}"));
        if status != 200 {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{door} {model}: {status} {e}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(body["error"].is_object(), "{door} {model}: {body}");
            return Outcome::Refused(status, retry_after, body);
        }
        let seen = if stream {
            let (events, ended) = gw::decode(door, &bytes);
            ended.unwrap_or_else(|e| panic!("{door} {model}: {e}"));
            gw::seen_events(&events, false)
        } else {
            gw::seen_body(door, &serde_json::from_slice(&bytes).unwrap())
        };
        assert_eq!(seen.text, text(), "{door} {model}");
        assert_eq!(
            seen.finish,
            Some(providers::FinishReason::Stop),
            "{door} {model}"
        );
        Outcome::Whole
    }

    async fn routes(&self) -> Vec<Value> {
        let r = self
            .client
            .get(self.url("/admin/routes"))
            .send()
            .await
            .unwrap();
        gw::json_of(r).await["routes"].as_array().unwrap().clone()
    }
}

fn alias(config: &mut Config, name: &str, route: &str) {
    config.models.insert(
        name.into(),
        ModelConfig {
            route: route.into(),
            fallbacks: Vec::new(),
            reasoning: None,
            hedge_after_ms: None,
            max_output_tokens: None,
            max_n: None,
        },
    );
}

const DOORS: [Dialect; 3] = Dialect::ALL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_wait_out_one_short_429() {
    let up = upstream(Arc::new(|_, nth| {
        if nth == 0 {
            Reply::Status(429, vec![("retry-after".into(), "1".into())])
        } else {
            Reply::Stream(Duration::ZERO, Vec::new())
        }
    }))
    .await;
    let g = Arc::new(
        gateway(&up, |c| {
            c.streaming.retry_policy.time_to_fallback_ms = 10_000
        })
        .await,
    );
    let ask = |i: usize| {
        let g = g.clone();
        tokio::spawn(async move { g.ask(DOORS[i % DOORS.len()], "up/m", i % 4 < 2).await })
    };
    let first = ask(0);
    // The 429 is out: the route rests for a second, and the first client retries after it.
    for _ in 0..2000 {
        if up.hits.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    // Let the gateway read the 429's headers (the retry comes a second later).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let others: Vec<_> = (1..20).map(ask).collect();
    let mut outcomes = vec![first.await.unwrap()];
    for o in others {
        outcomes.push(o.await.unwrap());
    }
    for (i, o) in outcomes.iter().enumerate() {
        assert!(matches!(o, Outcome::Whole), "client {i}: {o:?}");
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        21,
        "one 429, then one request per client: nobody was refused or asked twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_longer_than_the_budget_is_passed_on_at_once_with_its_retry_after() {
    let up = upstream(Arc::new(|_, nth| {
        if nth == 0 {
            Reply::Status(429, vec![("retry-after".into(), "30".into())])
        } else {
            Reply::Stream(Duration::ZERO, Vec::new())
        }
    }))
    .await;
    let g = gateway(&up, |c| {
        c.streaming.retry_policy.time_to_fallback_ms = 5_000
    })
    .await;
    for door in DOORS {
        let started = std::time::Instant::now();
        match g.ask(door, "up/m", true).await {
            Outcome::Refused(429, Some(after), _) => assert!((1..=30).contains(&after), "{after}"),
            o => panic!("{door}: {o:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{door}: not waited out"
        );
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        1,
        "the resting route is not asked"
    );
}

/// A provider that answers with a redirect (to any host) is never followed: the request, and
/// with it the provider key (`x-api-key` survives reqwest's cross-host redirect), stays with
/// the configured provider, and the client gets an error in its door's dialect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_provider_is_never_followed() {
    let elsewhere = upstream(Arc::new(|_, _| Reply::Stream(Duration::ZERO, Vec::new()))).await;
    for status in [301, 302, 303, 307, 308] {
        let target = format!("http://{}/v1/chat/completions", elsewhere.addr);
        let up = upstream(Arc::new(move |_, _| {
            Reply::Status(status, vec![("location".into(), target.clone())])
        }))
        .await;
        let g = gateway(&up, |c| c.streaming.retry_policy.max_attempts = 1).await;
        for door in DOORS {
            for stream in [true, false] {
                match g.ask(door, "up/m", stream).await {
                    Outcome::Refused(code, _, _) => {
                        assert!(code >= 400, "{status} at {door}: {code}")
                    }
                    Outcome::Whole => panic!("{status} at {door}: the redirect was followed"),
                }
            }
        }
        assert!(up.hits.load(Ordering::SeqCst) >= 1, "{status}");
    }
    assert_eq!(
        elsewhere.hits.load(Ordering::SeqCst),
        0,
        "no request reached the redirect's target"
    );
}

/// `route`'s line of `/admin/routes`.
async fn route_status(g: &Gateway, route: &str) -> Value {
    g.routes()
        .await
        .into_iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("{route} not in /admin/routes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_503_of_cooling_routes_carries_retry_after_at_every_door() {
    let up = upstream(Arc::new(|_, _| Reply::Status(500, Vec::new()))).await;
    let g = gateway(&up, |c| {
        c.streaming.retry_policy.max_attempts = 1;
        c.streaming.circuit_breaker.failure_threshold = 1;
        c.streaming.circuit_breaker.cooldown_ms = 30_000;
        alias(c, "cooling", "up/m");
    })
    .await;
    assert!(matches!(
        g.ask(Dialect::OpenAi, "cooling", true).await,
        Outcome::Refused(500, None, _)
    ));
    let status = route_status(&g, "up/m").await;
    assert_eq!(status["state"], "open", "{status}");
    assert_eq!(
        status["failures"], 1,
        "an open route shows what opened it: {status}"
    );
    let in_range = |after: Option<u64>| after.is_some_and(|s| (1..=30).contains(&s));
    for door in DOORS {
        for stream in [true, false] {
            match g.ask(door, "cooling", stream).await {
                Outcome::Refused(503, after, body) if in_range(after) => {
                    assert!(body.to_string().contains("retry in"), "{body}");
                }
                o => panic!("{door} stream={stream}: {o:?}"),
            }
        }
    }
    // The Agent Event Stream door.
    let r = g
        .client
        .post(g.url("/v1/streams"))
        .header("streamgate-dialect", "openai")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&gw::chat_body(Dialect::OpenAi, "cooling", true)).unwrap())
        .send()
        .await
        .unwrap();
    let after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    assert_eq!(r.status(), 503);
    assert!(in_range(after), "{after:?}");
    // The WebSocket door has no headers: its error frame says when.
    let (mut ws, _) = tokio::time::timeout(
        gw::BOUND,
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", g.addr)),
    )
    .await
    .unwrap()
    .unwrap();
    let start = json!({"op": "start", "dialect": "openai",
                       "request": gw::chat_body(Dialect::OpenAi, "cooling", true)});
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(start.to_string().into()),
    )
    .await
    .unwrap();
    let frame = loop {
        let m = tokio::time::timeout(gw::BOUND, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["op"] == "error" {
                break v;
            }
        }
    };
    assert_eq!(frame["code"], "unavailable", "{frame}");
    assert!(
        frame["message"].as_str().unwrap().contains("retry in"),
        "{frame}"
    );
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        1,
        "no request reached the open route"
    );
}

/// An engine over `upstream` alone, for what the doors do not show (the pass a run holds).
fn engine(upstream: &Upstream, edit: impl FnOnce(&mut Config)) -> Arc<streamgate::engine::Engine> {
    engine_at(upstream.addr, edit)
}

fn engine_at(addr: SocketAddr, edit: impl FnOnce(&mut Config)) -> Arc<streamgate::engine::Engine> {
    let mut config = Config::default();
    let mut provider = ProviderConfig::new(Dialect::OpenAi, &format!("http://{addr}/v1"), "");
    provider.api_key_env = None;
    config.providers.insert("up".into(), provider);
    edit(&mut config);
    Arc::new(streamgate::engine::Engine::new(config).unwrap())
}

fn call(model: &str) -> streamgate::engine::Call {
    let body = gw::chat_body(Dialect::OpenAi, model, true);
    streamgate::engine::Call {
        door: Dialect::OpenAi,
        request: providers::request::ChatRequest::from_openai(&body).unwrap(),
        key: streamgate::upstream::ClientKey {
            door: Dialect::OpenAi,
            key: None,
        },
        forward: streamgate::upstream::ForwardHeaders::default(),
        caller: streamgate::keys::Caller::open(),
        observed: streamgate::telemetry::request::Observed::detached("test".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_client_leaves_gives_the_route_back_at_once() {
    const COOLDOWN: Duration = Duration::from_secs(4);
    // The first request fails (the breaker opens); then slow answers (~2 s each).
    let up = upstream(Arc::new(|_, nth| {
        if nth == 0 {
            Reply::Status(500, Vec::new())
        } else {
            Reply::Stream(Duration::from_millis(200), Vec::new())
        }
    }))
    .await;
    let e = engine(&up, |c| {
        c.streaming.retry_policy.max_attempts = 1;
        c.streaming.circuit_breaker.failure_threshold = 1;
        c.streaming.circuit_breaker.cooldown_ms = COOLDOWN.as_millis() as u64;
    });
    let state = || {
        let all = e.breakers().snapshot();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    };
    assert!(e.answer(call("up/m")).await.is_err());
    assert_eq!((state().state, state().failures), ("open", 1));
    match e.answer(call("up/m")).await {
        Err(streamgate::error::GatewayError::Unavailable {
            retry_after: Some(after),
            ..
        }) => assert!(after <= COOLDOWN && !after.is_zero(), "{after:?}"),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(state().retry_in_ms + 20)).await;

    let probing = std::time::Instant::now();
    let mut probe = e
        .answer(call("up/m"))
        .await
        .expect("the probe is let through");
    assert!(probe.events.next().await.unwrap().is_ok());
    assert_eq!(state().state, "half_open");
    assert!(state().retry_in_ms > 0, "the probe holds the route");
    assert!(e.answer(call("up/m")).await.is_err(), "one probe at a time");
    // The client leaves mid-answer: the run and its pass are dropped unreported.
    drop(probe);
    assert!(
        probing.elapsed() < COOLDOWN,
        "the machine stalled past the probe's deadline: the rest would not test the drop"
    );
    assert_eq!(
        (state().state, state().retry_in_ms),
        ("half_open", 0),
        "given back"
    );
    let mut next = e
        .answer(call("up/m"))
        .await
        .expect("the next request probes");
    let mut text = String::new();
    while let Some(event) = next.events.next().await {
        if let providers::AgentEvent::TextDelta { text: t, .. } = event.unwrap() {
            text.push_str(&t);
        }
    }
    assert_eq!(text, self::text());
    assert_eq!((state().state, state().failures), ("closed", 0));
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

/// Header values of every class a hostile or broken provider may send.
fn hostile_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("inf".to_owned()),
        Just("NaN".to_owned()),
        Just("1e30".to_owned()),
        Just("18446744073709551615".to_owned()),
        // Small enough to be waited out within the test's budget.
        (0u32..1500).prop_map(|ms| format!("{}", f64::from(ms) / 1000.0)),
        "[0-9]{1,40}(\\.[0-9]{0,4})?(h|m|s|ms|us|ns){1,3}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        (0u64..10_000).prop_map(|year| format!("Fri, 31 Dec {year:04} 23:59:59 GMT")),
        "[ -~]{0,30}",
    ]
}

fn hostile_headers() -> impl proptest::strategy::Strategy<Value = Vec<(String, String)>> {
    use proptest::prelude::*;
    let names = vec![
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ];
    let remaining = vec![
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ];
    (
        proptest::collection::vec((proptest::sample::select(names), hostile_value()), 0..6),
        proptest::collection::vec(
            (
                proptest::sample::select(remaining),
                prop_oneof![Just("0"), Just("-0"), Just("NaN"), Just("7")],
            ),
            0..4,
        ),
    )
        .prop_map(|(resets, budgets)| {
            resets
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .chain(
                    budgets
                        .into_iter()
                        .map(|(n, v)| (n.to_owned(), v.to_owned())),
                )
                .collect()
        })
}

/// One generated upstream behavior: the first answer's status and headers, then a stream
/// with headers of its own.
#[derive(Debug, Clone)]
struct Hostile {
    status: u16,
    first: Vec<(String, String)>,
    then: Vec<(String, String)>,
    door: Dialect,
    stream: bool,
}

fn hostile() -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    (
        proptest::sample::select(vec![200u16, 408, 429, 429, 500, 503, 529]),
        hostile_headers(),
        hostile_headers(),
        proptest::sample::select(DOORS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(status, first, then, door, stream)| Hostile {
            status,
            first,
            then,
            door,
            stream,
        })
}

#[test]
fn hostile_rate_limit_headers_through_the_attempt_loop_end_cleanly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Each case asks its own model, so what one case's headers block does not touch the next.
    let cases: Arc<Mutex<HashMap<String, Hostile>>> = Arc::default();
    let script_cases = cases.clone();
    let (up, g) = rt.block_on(async {
        let up = upstream(Arc::new(move |model, nth| {
            let case = script_cases.lock().unwrap()[model].clone();
            match (nth, case.status) {
                (0, 200) | (1.., _) => Reply::Stream(
                    Duration::ZERO,
                    if nth == 0 { case.first } else { case.then },
                ),
                (0, status) => Reply::Status(status, case.first),
            }
        }))
        .await;
        let g = gateway(&up, |c| {
            let retry = &mut c.streaming.retry_policy;
            retry.max_attempts = 3;
            // Waits past this are refused at once: a case never waits longer.
            retry.time_to_fallback_ms = 1500;
            c.streaming.circuit_breaker.failure_threshold = 1000;
        })
        .await;
        (up, g)
    });
    let next = AtomicUsize::new(0);
    let config = proptest::test_runner::Config {
        cases: 40,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    proptest::proptest!(config, |(case in hostile())| {
        let model = format!("c{}", next.fetch_add(1, Ordering::SeqCst));
        cases.lock().unwrap().insert(model.clone(), case.clone());
        let outcome = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(15),
                g.ask(case.door, &format!("up/{model}"), case.stream),
            )
            .await
        });
        match outcome {
            Err(_) => proptest::prop_assert!(false, "no answer within 15 s: {case:?}"),
            Ok(Outcome::Whole) => {}
            Ok(Outcome::Refused(status, _, body)) => {
                // Only the upstream's own failure, passed on in the door's shape.
                proptest::prop_assert!(
                    matches!(status, 408 | 429 | 500 | 502 | 503 | 529),
                    "{status} {body}: {case:?}"
                );
            }
        }
    });
    // The gateway is still whole.
    rt.block_on(async {
        cases.lock().unwrap().insert(
            "after".into(),
            Hostile {
                status: 200,
                first: Vec::new(),
                then: Vec::new(),
                door: Dialect::OpenAi,
                stream: true,
            },
        );
        assert!(matches!(
            g.ask(Dialect::OpenAi, "up/after", true).await,
            Outcome::Whole
        ));
    });
    assert!(up.hits.load(Ordering::SeqCst) >= 41);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 32,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// On a paused clock: a request whose only route rests waits the rest out exactly when
    /// it ends within the budget, and is refused at once (429, that rest) otherwise.
    #[test]
    fn a_request_waits_out_a_rest_only_when_it_fits_the_budget(
        rest_ms in 1u64..20_000,
        budget_ms in 1u64..20_000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            // Nothing listens there: what matters is whether and when an attempt is made.
            let e = engine_at(SocketAddr::from(([127, 0, 0, 1], 1)), |c| {
                c.streaming.retry_policy.max_attempts = 1;
                c.streaming.retry_policy.time_to_fallback_ms = budget_ms;
            });
            let rest = Duration::from_millis(rest_ms);
            e.upstream().backoff().block("up/m", rest);
            let started = tokio::time::Instant::now();
            let result = e.answer(call("up/m")).await;
            let waited = started.elapsed();
            match result {
                Err(streamgate::error::GatewayError::RateLimited(l)) => {
                    proptest::prop_assert!(rest_ms >= budget_ms, "refused a rest that fits");
                    proptest::prop_assert_eq!(l.retry_after, rest);
                    proptest::prop_assert!(waited.is_zero(), "{waited:?}");
                }
                other => {
                    proptest::prop_assert!(rest_ms < budget_ms, "waited past the budget: {other:?}");
                    proptest::prop_assert!(waited >= rest, "{waited:?}");
                    proptest::prop_assert!(other.is_err(), "nothing listens");
                }
            }
            Ok(())
        })?;
    }
}
