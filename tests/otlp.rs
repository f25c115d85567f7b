//! Traces end to end: `streamgate serve` with `[telemetry.otlp]` pointed at an in-process
//! OTLP/HTTP receiver (POST /v1/traces, protobuf bodies decoded with opentelemetry-proto),
//! over a replay upstream. Plain answers, a retry after a 503 and a failover must arrive as
//! `attempt` spans with their `upstream` call spans as children and the GenAI attributes of
//! what the client was sent; without `[telemetry.otlp]` the receiver is never contacted, even
//! with the OpenTelemetry environment variables set.
//!
//! The `request` span that parents the attempts is the request-id work's (issue #12, point
//! 2): when it is present, the attempts of one request must share its trace; when it is not
//! (this branch alone), attempts are roots and are told apart by their requested model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use providers::{AgentEvent, Dialect};
use tokio::time::Instant;

/// What the receiver got.
#[derive(Default)]
struct Received {
    /// Connections accepted (any request, any path).
    connections: AtomicUsize,
    spans: Mutex<Vec<Span>>,
    /// The `service.name` of every batch.
    services: Mutex<Vec<String>>,
    /// The `x-otlp-token` header of every export.
    tokens: Mutex<Vec<Option<String>>>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1.
async fn receiver() -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(export(&shared, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, received)
}

async fn export(
    received: &Received,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt as _;
    let respond = |status: u16| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return respond(404);
    }
    assert_eq!(
        req.headers()["content-type"],
        "application/x-protobuf",
        "http/protobuf export"
    );
    let token = req
        .headers()
        .get("x-otlp-token")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    received.tokens.lock().unwrap().push(token);
    for resource_spans in request.resource_spans {
        if let Some(resource) = &resource_spans.resource {
            for kv in &resource.attributes {
                if kv.key == "service.name"
                    && let Some(Any::StringValue(s)) =
                        kv.value.as_ref().and_then(|v| v.value.clone())
                {
                    received.services.lock().unwrap().push(s);
                }
            }
        }
        for scope in resource_spans.scope_spans {
            received.spans.lock().unwrap().extend(scope.spans);
        }
    }
    // An empty ExportTraceServiceResponse: full success.
    respond(200)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(Any::StringValue(s)) => Some(s),
        None => None,
        Some(other) => panic!("{key} is not a string: {other:?}"),
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Any::IntValue(n)) => Some(*n),
        None => None,
        Some(other) => panic!("{key} is not an integer: {other:?}"),
    }
}

/// One request the test makes, and what its client saw.
struct Asked {
    /// The alias or route the client asked for.
    model: String,
    /// The provider and upstream model its attempts are expected to use, in order, and the
    /// `error.type` each is expected to end with (None: it answered). Unique across the plan.
    attempts: Vec<(&'static str, String, Option<&'static str>)>,
    /// The dialect of the provider that answers (its door is used, so nothing is translated).
    dialect: Dialect,
    /// The last usage the client was sent.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

async fn ask(
    client: &reqwest::Client,
    url: &str,
    door: Dialect,
    model: &str,
) -> (Option<u64>, Option<u64>) {
    let mut request = client
        .post(format!("{url}{}", gw::door_path(door)))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&gw::chat_body(door, model, true)).unwrap())
        .timeout(gw::BOUND);
    if door == Dialect::Anthropic {
        request = request.header("anthropic-version", "2023-06-01");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{model}");
    let body = gw::body_bytes(response).await;
    let (events, end) = gw::decode(door, &body);
    assert!(end.is_ok(), "{model}: {end:?}");
    let (mut input, mut output) = (None, None);
    for event in &events {
        if let AgentEvent::Usage(usage) = event {
            input = usage.input_tokens.or(input);
            output = usage.output_tokens.or(output);
        }
    }
    (input, output)
}

/// Plain answers of several recorded streams of both providers (a seeded pick), a retry
/// after one 503, and a failover after a route that always answers 500.
fn plan() -> Vec<Asked> {
    let mut rng = fastrand::Rng::with_seed(0x07e1);
    let mut asked = Vec::new();
    for (dialect, provider) in [
        (Dialect::OpenAi, "openai"),
        (Dialect::Anthropic, "anthropic"),
    ] {
        let mut names: Vec<&str> = streamgate::replay::fixture_names(dialect)
            .into_iter()
            .filter(|n| n.starts_with("text_") || n.starts_with("tool_"))
            .collect();
        rng.shuffle(&mut names);
        for name in names.into_iter().take(3) {
            asked.push(Asked {
                model: format!("{provider}/{name}"),
                attempts: vec![(provider, name.to_owned(), None)],
                dialect,
                input_tokens: None,
                output_tokens: None,
            });
        }
    }
    asked.push(Asked {
        model: "openai/status=503,times=1:text_basic".into(),
        attempts: vec![
            (
                "openai",
                "status=503,times=1:text_basic".into(),
                Some("503"),
            ),
            ("openai", "status=503,times=1:text_basic".into(), None),
        ],
        dialect: Dialect::OpenAi,
        input_tokens: None,
        output_tokens: None,
    });
    asked.push(Asked {
        model: "failover".into(),
        attempts: vec![
            ("anthropic", "status=500:text_simple".into(), Some("500")),
            ("anthropic", "status=500:text_simple".into(), Some("500")),
            ("openai", "finish_length".into(), None),
        ],
        dialect: Dialect::OpenAi,
        input_tokens: None,
        output_tokens: None,
    });
    asked
}

const CONFIG_TAIL: &str = "[streaming.retryPolicy]\nmaxAttempts = 2\nbackoffMs = 10\nmaxBackoffMs = 50\n\
    [models.failover]\nroute = \"anthropic/status=500:text_simple\"\nfallbacks = [\"openai/finish_length\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_and_upstream_calls_are_exported_with_genai_attributes() {
    let (receiver_addr, received) = receiver().await;
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let config = format!(
        "{}\n{CONFIG_TAIL}\n[telemetry.otlp]\nendpoint = \"http://{receiver_addr}\"\n\
         service_name = \"sg-test\"\nexport_interval_ms = 100\n\
         headers_env = {{ \"x-otlp-token\" = \"STREAMGATE_TEST_OTLP_TOKEN\" }}\n",
        process::replay_providers(&replay.url())
    );
    let gateway = process::GatewayProcess::serve_with_env(
        &config,
        &[("STREAMGATE_TEST_OTLP_TOKEN", "token-for-the-collector")],
    )
    .await;
    let client = gw::client();
    let mut asked = plan();
    for a in &mut asked {
        let (input, output) = ask(&client, &gateway.url, a.dialect, &a.model).await;
        a.input_tokens = input;
        a.output_tokens = output;
    }

    // Wait (bounded) until every expected attempt and upstream span has been exported.
    let want_attempts: usize = asked.iter().map(|a| a.attempts.len()).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans = received.spans.lock().unwrap().clone();
        let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
        if count("attempt") >= want_attempts && count("upstream") >= want_attempts {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans not exported: {} attempts, {} upstream calls of {want_attempts}",
            count("attempt"),
            count("upstream")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates would show here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = received.spans.lock().unwrap().clone();
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "attempt").collect();
    let upstreams: Vec<&Span> = spans.iter().filter(|s| s.name == "upstream").collect();
    assert_eq!(
        attempts.len(),
        want_attempts,
        "one attempt span per attempt"
    );
    assert_eq!(upstreams.len(), want_attempts, "one upstream span per call");

    // Every upstream call is the child of an attempt, in its trace, inside its time.
    for up in &upstreams {
        let parent = by_id
            .get(up.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("upstream span without an exported parent: {up:?}"));
        assert_eq!(parent.name, "attempt");
        assert_eq!(parent.trace_id, up.trace_id, "one trace");
        assert!(up.start_time_unix_nano >= parent.start_time_unix_nano);
        assert!(up.end_time_unix_nano <= parent.end_time_unix_nano);
        assert_eq!(up.kind, SpanKind::Client as i32);
        assert_eq!(str_attr(up, "http.request.method"), Some("POST"));
        assert_eq!(str_attr(up, "server.address"), Some("127.0.0.1"));
        assert_eq!(
            int_attr(up, "server.port"),
            Some(i64::from(replay.addr().port()))
        );
        let path = str_attr(up, "url.path").unwrap();
        assert!(
            path == "/v1/chat/completions" || path == "/v1/messages",
            "{path}"
        );
        for key in [
            "gen_ai.system",
            "gen_ai.request.model",
            "gen_ai.provider.name",
        ] {
            assert_eq!(str_attr(up, key), str_attr(parent, key), "{key}");
        }
    }
    // An attempt with a parent has the request's span as parent, in the same trace.
    for at in &attempts {
        if !at.parent_span_id.is_empty() {
            let parent = by_id
                .get(at.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("attempt whose parent was not exported: {at:?}"));
            assert_eq!(parent.name, "request");
            assert_eq!(parent.trace_id, at.trace_id);
        }
    }

    let mut with_usage = 0;
    for a in &asked {
        let mut mine: Vec<&Span> = attempts
            .iter()
            .copied()
            .filter(|s| {
                a.attempts.iter().any(|(p, m, _)| {
                    str_attr(s, "provider") == Some(p)
                        && str_attr(s, "gen_ai.request.model") == Some(m)
                })
            })
            .collect();
        mine.sort_by_key(|s| int_attr(s, "attempt"));
        assert_eq!(mine.len(), a.attempts.len(), "{}: {mine:?}", a.model);
        let traces: std::collections::HashSet<_> = mine.iter().map(|s| &s.trace_id).collect();
        if mine.iter().all(|s| !s.parent_span_id.is_empty()) {
            assert_eq!(traces.len(), 1, "{}: one trace per request", a.model);
        }
        for (n, (span, (provider, model, error))) in mine.iter().zip(&a.attempts).enumerate() {
            let ctx = format!("{} attempt {}", a.model, n + 1);
            assert_eq!(int_attr(span, "attempt"), Some(n as i64 + 1), "{ctx}");
            assert_eq!(
                str_attr(span, "gen_ai.operation.name"),
                Some("chat"),
                "{ctx}"
            );
            assert_eq!(
                str_attr(span, "gen_ai.request.model"),
                Some(model.as_str()),
                "{ctx}"
            );
            assert_eq!(str_attr(span, "provider"), Some(*provider), "{ctx}");
            // The replay's providers are named after their platforms.
            let system = *provider;
            assert_eq!(
                str_attr(span, "gen_ai.provider.name"),
                Some(system),
                "{ctx}"
            );
            assert_eq!(str_attr(span, "gen_ai.system"), Some(system), "{ctx}");
            let child = upstreams
                .iter()
                .find(|u| u.parent_span_id == span.span_id)
                .unwrap_or_else(|| panic!("{ctx}: no upstream span"));
            match error {
                Some(kind) => {
                    assert_eq!(str_attr(span, "outcome"), Some("error"), "{ctx}");
                    assert_eq!(str_attr(span, "error.type"), Some(*kind), "{ctx}");
                    let status = span.status.as_ref().map(|s| s.code);
                    assert_eq!(status, Some(StatusCode::Error as i32), "{ctx}");
                    assert_eq!(
                        int_attr(child, "http.response.status_code"),
                        Some(kind.parse::<i64>().unwrap()),
                        "{ctx}"
                    );
                    assert_eq!(str_attr(child, "error.type"), Some(*kind), "{ctx}");
                }
                None => {
                    assert_eq!(str_attr(span, "outcome"), Some("ok"), "{ctx}");
                    assert_eq!(str_attr(span, "error.type"), None, "{ctx}");
                    assert_eq!(
                        int_attr(child, "http.response.status_code"),
                        Some(200),
                        "{ctx}"
                    );
                    assert!(str_attr(span, "gen_ai.response.model").is_some(), "{ctx}");
                    assert!(
                        str_attr(span, "gen_ai.response.finish_reasons").is_some(),
                        "{ctx}"
                    );
                    let input = int_attr(span, "gen_ai.usage.input_tokens");
                    let output = int_attr(span, "gen_ai.usage.output_tokens");
                    if let Some(output) = output {
                        with_usage += 1;
                        assert_eq!(Some(output as u64), a.output_tokens, "{ctx}: output tokens");
                    }
                    if let Some(input) = input {
                        assert_eq!(Some(input as u64), a.input_tokens, "{ctx}: input tokens");
                    }
                }
            }
        }
    }
    assert!(
        with_usage >= 4,
        "usage recorded on most answers ({with_usage})"
    );
    assert!(
        received
            .services
            .lock()
            .unwrap()
            .iter()
            .all(|s| s == "sg-test")
    );
    let tokens = received.tokens.lock().unwrap().clone();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|t| t.as_deref() == Some("token-for-the-collector")),
        "every export carries the configured header"
    );
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_otlp_table_no_collector_is_contacted() {
    let (receiver_addr, received) = receiver().await;
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let config = format!(
        "{}\n{CONFIG_TAIL}",
        process::replay_providers(&replay.url())
    );
    // The SDK's own variables point at the receiver: they must not turn export on.
    let endpoint = format!("http://{receiver_addr}");
    let gateway = process::GatewayProcess::serve_with_env(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let client = gw::client();
    for a in plan() {
        ask(&client, &gateway.url, a.dialect, &a.model).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received.connections.load(Ordering::SeqCst), 0);
    drop(gateway);
}

/// The engine in this process under a `request` span of the test's own (the request-id
/// work makes that span in the doors): each request's attempts are children of its span and
/// its calls children of the attempts, one trace per request, for a seeded mix of plain
/// answers, retries and failovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_trace_of_attempts_and_calls() {
    use streamgate::engine::{Call, Engine};
    use streamgate::upstream::{ClientKey, ForwardHeaders};
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let (receiver_addr, received) = receiver().await;
    let otlp: streamgate::telemetry::otlp::OtlpConfig = toml::from_str(&format!(
        "endpoint = \"http://{receiver_addr}\"\nexport_interval_ms = 60000"
    ))
    .unwrap();
    let (layer, guard) = streamgate::telemetry::otlp::layer(Some(&otlp))
        .unwrap()
        .unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut config = replay.config();
    config.streams.journal.enabled = false;
    config.streaming.retry_policy.max_attempts = 2;
    config.streaming.retry_policy.backoff_ms = 10;
    config.streaming.retry_policy.max_backoff_ms = 50;
    // A first token slower than the hedge delay: the fallback is raced next to it and wins.
    config.models.insert(
        "hedged".into(),
        streamgate::config::ModelConfig {
            route: "openai/first_token_delay_ms=5000:text_basic".into(),
            fallbacks: vec!["anthropic/text_simple".into()],
            reasoning: None,
            hedge_after_ms: Some(100),
            max_output_tokens: None,
            max_n: None,
        },
    );
    let engine = std::sync::Arc::new(Engine::new(config).unwrap());

    // (model, attempts expected); `times=1` faults are counted per identical model string,
    // so every retry case gets a fresh tag.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut cases: Vec<(String, usize)> = Vec::new();
    for i in 0..12 {
        let provider = if rng.bool() { "openai" } else { "anthropic" };
        let case = match rng.u8(0..4) {
            0 => (format!("{provider}/text_basic"), 1),
            3 => ("hedged".to_owned(), 2),
            1 => (
                format!("{provider}/status=503,times=1,drip={i}:text_basic"),
                2,
            ),
            _ => (format!("{provider}/status=500,drip={i}:text_basic"), 2),
        };
        cases.push(case);
    }
    for (n, (model, _)) in cases.iter().enumerate() {
        let door = Dialect::OpenAi;
        let call = Call {
            door,
            request: door
                .wire()
                .parse_request(gw::chat_body(door, model, true).into())
                .unwrap(),
            key: ClientKey { door, key: None },
            forward: ForwardHeaders::default(),
            caller: streamgate::keys::Caller::open(),
            observed: streamgate::telemetry::request::Observed::detached(format!("test-{n}")),
        };
        let span = tracing::info_span!(target: "streamgate::test", "request", request = n as i64);
        let engine = engine.clone();
        async move {
            use futures_util::StreamExt as _;
            // A route that always fails ends the answer with its error: that is fine here.
            if let Ok(answer) = engine.answer(call).await {
                let _ = answer.events.collect::<Vec<_>>().await;
            }
        }
        .instrument(span)
        .await;
    }
    tokio::task::block_in_place(|| guard.flush());

    let spans = received.spans.lock().unwrap().clone();
    let requests: Vec<&Span> = spans.iter().filter(|s| s.name == "request").collect();
    assert_eq!(requests.len(), cases.len());
    for request in requests {
        let n = int_attr(request, "request").unwrap() as usize;
        let (model, want) = &cases[n];
        assert!(request.parent_span_id.is_empty(), "the request is the root");
        let attempts: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "attempt" && s.parent_span_id == request.span_id)
            .collect();
        assert_eq!(attempts.len(), *want, "{model}");
        let upstream_model = model.split_once('/').map(|(_, m)| m);
        for attempt in &attempts {
            assert_eq!(attempt.trace_id, request.trace_id, "{model}: one trace");
            if let Some(upstream_model) = upstream_model {
                assert_eq!(
                    str_attr(attempt, "gen_ai.request.model"),
                    Some(upstream_model)
                );
            }
            let calls: Vec<&Span> = spans
                .iter()
                .filter(|s| s.name == "upstream" && s.parent_span_id == attempt.span_id)
                .collect();
            assert_eq!(calls.len(), 1, "{model}: one call per attempt");
            assert_eq!(calls[0].trace_id, request.trace_id);
        }
        let failed = attempts
            .iter()
            .filter(|a| str_attr(a, "outcome") == Some("error"))
            .count();
        let want_failed = if model.contains("status=500") {
            2
        } else if model.contains("status=503") {
            1
        } else {
            0
        };
        assert_eq!(failed, want_failed, "{model}");
        if model == "hedged" {
            let outcome = |hedge: bool| {
                let a = attempts
                    .iter()
                    .find(|a| matches!(attr(a, "hedge"), Some(Any::BoolValue(h)) if *h == hedge))
                    .unwrap_or_else(|| panic!("no attempt with hedge={hedge}"));
                (str_attr(a, "outcome"), str_attr(a, "gen_ai.request.model"))
            };
            assert_eq!(
                outcome(false),
                (
                    Some("lost_race"),
                    Some("first_token_delay_ms=5000:text_basic")
                )
            );
            assert_eq!(outcome(true), (Some("ok"), Some("text_simple")));
        }
    }
    assert!(
        cases.iter().any(|(m, _)| m == "hedged"),
        "the seed covers a hedge"
    );
    // Nothing outside the requests' trees.
    let trace_of_requests: std::collections::HashSet<_> = spans
        .iter()
        .filter(|s| s.name == "request")
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(
        spans
            .iter()
            .all(|s| trace_of_requests.contains(&s.trace_id))
    );
    drop(guard);
}

/// A collector that is down costs the requests nothing: every answer comes whole while each
/// export fails (nothing listens on the endpoint), and the gateway stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_never_fails_a_request() {
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let closed = process::free_port();
    let config = format!(
        "{}\n{CONFIG_TAIL}\n[telemetry.otlp]\nendpoint = \"http://127.0.0.1:{closed}\"\n\
         export_interval_ms = 20\ntimeout_ms = 200\nmax_queue_size = 4\n",
        process::replay_providers(&replay.url())
    );
    let mut gateway = process::GatewayProcess::serve(&config).await;
    let client = gw::client();
    for round in 0..3 {
        for a in plan() {
            let model = if round == 0 {
                a.model.clone()
            } else {
                a.model.replace("times=1", &format!("times=1,drip={round}"))
            };
            ask(&client, &gateway.url, a.dialect, &model).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gateway.is_running());
}

/// Calls that are not streamed answers are `upstream` spans too: a token count (with its
/// model) and a pass-through call (method and path, never the query, no GenAI operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_counts_and_pass_through_calls_have_upstream_spans() {
    let (receiver_addr, received) = receiver().await;
    let replay = streamgate::replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let config = format!(
        "{}\n[telemetry.otlp]\nendpoint = \"http://{receiver_addr}/v1/traces\"\n\
         export_interval_ms = 50\n",
        process::replay_providers(&replay.url())
    );
    let gateway = process::GatewayProcess::serve(&config).await;
    let client = gw::client();
    let r = client
        .post(format!("{}/v1/embeddings?secret=q-value", gateway.url))
        .header("content-type", "application/json")
        .body(r#"{"model":"text-embedding-3-small","input":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let count = serde_json::to_vec(&gw::chat_body(
        Dialect::Anthropic,
        "anthropic/text_basic",
        false,
    ))
    .unwrap();
    let r = client
        .post(format!("{}/v1/messages/count_tokens", gateway.url))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(count)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans: Vec<Span> = received.spans.lock().unwrap().clone();
        if spans.iter().filter(|s| s.name == "upstream").count() >= 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans not exported: {spans:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |path: &str| {
        spans
            .iter()
            .find(|s| s.name == "upstream" && str_attr(s, "url.path") == Some(path))
            .unwrap_or_else(|| panic!("no upstream span for {path}: {spans:?}"))
    };
    let embeddings = find("/v1/embeddings");
    assert_eq!(str_attr(embeddings, "http.request.method"), Some("POST"));
    assert_eq!(int_attr(embeddings, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(embeddings, "gen_ai.provider.name"), Some("openai"));
    assert_eq!(str_attr(embeddings, "gen_ai.operation.name"), None);
    assert_eq!(str_attr(embeddings, "gen_ai.request.model"), None);
    let count = find("/v1/messages/count_tokens");
    assert_eq!(int_attr(count, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(count, "gen_ai.provider.name"), Some("anthropic"));
    assert_eq!(str_attr(count, "gen_ai.request.model"), Some("text_basic"));
    for span in &spans {
        for kv in &span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(
                !text.contains("q-value"),
                "a query value in {}: {text}",
                kv.key
            );
        }
    }
    drop(gateway);
}
