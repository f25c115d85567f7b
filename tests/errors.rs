//! Errors say what they are, through real sockets: a request no route can express is a 4xx in
//! the door's dialect and never reaches a provider; a connection that breaks after the
//! provider answered is not called "unreachable"; no transport error chain, URL or credential
//! reaches a client. Cases are generated (seeded) over the untranslatable parameters and the
//! points where a connection breaks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use gw::{Harness, body_bytes, chat_body, door_path};
use providers::Dialect;
use serde_json::{Value, json};

/// What the gateway's own words never contain: transport types and chains, addresses.
const INTERNAL: [&str; 9] = [
    "hyper",
    "reqwest",
    "error sending request",
    "client error (",
    "tcp connect error",
    "os error",
    "http://",
    "127.0.0.1",
    "unexpected end of file",
];

fn assert_clean(case: &str, text: &str) {
    for bad in INTERNAL {
        assert!(
            !text.contains(bad),
            "{case}: {bad:?} reached the client: {text}"
        );
    }
}

/// The error a client of `door` reads from a non-2xx body: (type, message).
fn body_error(door: Dialect, body: &Value) -> (String, String) {
    let error = &body["error"];
    if door == Dialect::Anthropic {
        assert_eq!(body["type"], "error", "{body}");
    }
    (
        error["type"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The error that ended a streamed answer, if one did: (type, message).
fn stream_error(body: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n").find_map(|frame| {
        let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?.trim();
        let v: Value = serde_json::from_str(data).ok()?;
        let error = v.get("error").filter(|e| e.is_object())?;
        Some((
            error["type"].as_str().unwrap_or_default().to_owned(),
            error["message"].as_str().unwrap_or_default().to_owned(),
        ))
    })
}

/// Requests of `door`'s dialect for `model` carrying one parameter the other dialect cannot
/// express, as (parameter, body), seeded.
fn untranslatable(door: Dialect, model: &str, rng: &mut fastrand::Rng) -> Vec<(String, Value)> {
    let mut cases = Vec::new();
    for stream in [true, false] {
        let base = chat_body(door, model, stream);
        let mut with = |param: &str, value: Value| {
            let mut body = base.clone();
            body[param] = value;
            cases.push((param.to_owned(), body));
        };
        match door {
            Dialect::OpenAi => {
                with("n", json!(rng.u32(2..=128)));
                with(
                    "temperature",
                    json!(1.0 + f64::from(rng.u32(1..=100)) / 100.0),
                );
                with("logprobs", json!(true));
                with(
                    "logit_bias",
                    json!({ rng.u32(1..100_000).to_string(): -100 }),
                );
                with("audio", json!({"voice": "alloy", "format": "wav"}));
                with("modalities", json!(["text", "audio"]));
                with(
                    "response_format",
                    if rng.bool() {
                        json!({"type": "json_object"})
                    } else {
                        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
                    },
                );
                with("web_search_options", json!({}));
            }
            Dialect::Anthropic => {
                with("container", json!(format!("container_{}", rng.u32(..))));
                with(
                    "mcp_servers",
                    json!([{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]),
                );
                with(
                    "output_format",
                    json!({"type": "json_schema", "schema": {"type": "object"}}),
                );
            }
            Dialect::OpenAiResponses => {
                // What only a Responses upstream can honour (docs/translation.md).
                with(
                    "previous_response_id",
                    json!(format!("resp_{}", rng.u32(..))),
                );
                with("conversation", json!(format!("conv_{}", rng.u32(..))));
                with("background", json!(true));
                with("prompt", json!({"id": format!("pmpt_{}", rng.u32(..))}));
                with(
                    "text",
                    json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}),
                );
                with(
                    "tools",
                    if rng.bool() {
                        json!([{"type": "web_search"}])
                    } else {
                        json!([{"type": "code_interpreter", "container": {"type": "auto"}}])
                    },
                );
            }
        }
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_route_can_express_is_a_4xx_in_the_door_dialect() {
    let h = gw::start().await;
    let mut rng = fastrand::Rng::with_seed(0x4_00);
    let mut checked = 0;
    for door in Dialect::ALL {
        // Each door's request goes to the other dialect's provider.
        let model = match door {
            Dialect::OpenAi | Dialect::OpenAiResponses => "anthropic/text_basic",
            Dialect::Anthropic => "openai/text_basic",
        };
        for ((param, body), resumable) in untranslatable(door, model, &mut rng)
            .into_iter()
            .flat_map(|case| [(case.clone(), false), (case, true)])
        {
            let case = format!(
                "{param} at the {door} door (stream {}, resumable {resumable})",
                body["stream"]
            );
            // A resumable answer goes through the hub: refused all the same, before it starts.
            let headers: &[(&str, &str)] = if resumable {
                &[("streamgate-resumable", "true")]
            } else {
                &[]
            };
            let r = h.chat(door, headers, &body).await;
            assert_eq!(r.status(), 400, "{case}");
            let body = gw::json_of(r).await;
            let (ty, message) = body_error(door, &body);
            assert_eq!(ty, "invalid_request_error", "{case}: {body}");
            assert!(message.contains(&param), "{case}: {message}");
            assert_clean(&case, &message);
            if door == Dialect::OpenAi {
                assert_eq!(body["error"]["param"], param.as_str(), "{case}");
                assert_eq!(body["error"]["code"], "unsupported_parameter", "{case}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked}");
    // Refused before any provider was asked, so never retried either.
    assert!(h.replay.requests().is_empty(), "{:?}", h.replay.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_choices_for_an_anthropic_client_is_a_4xx() {
    let h = gw::start().await;
    let model = "openai/n3_multiple_choices";
    let r = h
        .chat(
            Dialect::Anthropic,
            &[],
            &chat_body(Dialect::Anthropic, model, false),
        )
        .await;
    assert_eq!(r.status(), 400);
    let (ty, message) = body_error(Dialect::Anthropic, &gw::json_of(r).await);
    assert_eq!(ty, "invalid_request_error");
    assert!(message.contains("more than one choice"), "{message}");
    assert_clean("not streaming", &message);
    let r = h
        .chat(
            Dialect::Anthropic,
            &[],
            &chat_body(Dialect::Anthropic, model, true),
        )
        .await;
    assert_eq!(r.status(), 200, "the stream had started");
    let (ty, message) = stream_error(&body_bytes(r).await).expect("an error event");
    assert_eq!(ty, "invalid_request_error");
    assert!(message.contains("more than one choice"), "{message}");
}

/// A gateway retrying fast, once, and never opening its circuit breaker.
async fn fast() -> Harness {
    gw::start_with(|c| {
        let retry = &mut c.streaming.retry_policy;
        retry.backoff_ms = 10;
        retry.max_backoff_ms = 20;
        retry.max_attempts = 2;
        // Every case breaks its route on purpose: the breaker must not turn them into 503s.
        c.streaming.circuit_breaker.failure_threshold = 10_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_after_the_headers_is_not_called_unreachable() {
    let h = fast().await;
    let mut rng = fastrand::Rng::with_seed(0x7e5e7);
    let mut errors = 0;
    for source in Dialect::ALL {
        let fixture = match source {
            Dialect::OpenAi | Dialect::OpenAiResponses => "text_basic",
            Dialect::Anthropic => "text_simple",
        };
        // Right after the head, and at seeded points inside the body.
        let mut points = vec![0, 1];
        points.extend((0..3).map(|_| rng.usize(2..8)));
        // Without a pause the replay's head and frames are still in its buffers when the
        // reset comes (the client sees no response at all); with one, the head and the first
        // frames arrive first.
        let knobs = points.iter().flat_map(|n| {
            [
                format!("reset_after={n}"),
                format!("drip=5,reset_after={n}"),
            ]
        });
        for knobs in knobs {
            let model = format!("{}/{knobs}:{fixture}", source.as_str());
            for door in Dialect::ALL {
                for stream in [true, false] {
                    let case = format!("{model} at the {door} door, stream={stream}");
                    let r = h.chat(door, &[], &chat_body(door, &model, stream)).await;
                    let status = r.status();
                    let bytes = body_bytes(r).await;
                    let error = if status.is_success() {
                        if stream { stream_error(&bytes) } else { None }
                    } else {
                        assert_eq!(status, 502, "{case}: {}", String::from_utf8_lossy(&bytes));
                        Some(body_error(door, &serde_json::from_slice(&bytes).unwrap()))
                    };
                    let Some((_, message)) = error else {
                        // A continuation finished the answer.
                        continue;
                    };
                    errors += 1;
                    assert!(!message.contains("unreachable"), "{case}: {message}");
                    assert!(
                        message.contains("closed the connection before its response began")
                            || message.contains("ended before its finish reason"),
                        "{case}: {message}"
                    );
                    assert_clean(&case, &message);
                }
            }
        }
    }
    // A reset right after the head breaks every attempt: those cases at least end in errors.
    assert!(errors >= 8, "only {errors} cases ended in an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_named_without_its_url_or_credentials() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = gw::start_with(move |c| {
        let p = c.providers.get_mut("openai").unwrap();
        p.base_url = format!("http://gateway:hunter2@127.0.0.1:{port}/v1");
        p.connect_timeout_ms = 2000;
        c.streaming.retry_policy.backoff_ms = 10;
        c.streaming.retry_policy.max_attempts = 2;
        c.streaming.circuit_breaker.failure_threshold = 10_000;
    })
    .await;
    for door in Dialect::ALL {
        for stream in [true, false] {
            let case = format!("{door} door, stream={stream}");
            let r = h
                .post(
                    door_path(door),
                    door,
                    &[],
                    serde_json::to_vec(&chat_body(door, "openai/text_basic", stream)).unwrap(),
                )
                .await;
            assert_eq!(r.status(), 502, "{case}");
            let (_, message) = body_error(door, &gw::json_of(r).await);
            assert_eq!(
                message, "provider \"openai\" is unreachable: the connection was refused",
                "{case}"
            );
            assert!(!message.contains("hunter2"), "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_200_stream_is_a_4xx_and_not_retried() {
    let h = fast().await;
    // vLLM-style OpenAI-compatible servers answer a bad request with a 200 stream whose first
    // chunk is the error; Anthropic can send `event: error` first.
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "x_refused_in_stream",
        "data: {\"error\":{\"object\":\"error\",\"message\":\"max_tokens must be at least 1, got 0.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}}\n\n",
    );
    h.replay.insert_fixture(
        Dialect::Anthropic,
        "x_refused_in_stream",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"max_tokens must be at least 1, got 0.\"}}\n\n",
    );
    let mut sent = 0;
    for (source, status) in [(Dialect::OpenAi, 400), (Dialect::Anthropic, 403)] {
        let model = format!("{}/x_refused_in_stream", source.as_str());
        for door in Dialect::ALL {
            for stream in [true, false] {
                let case = format!("{model} at the {door} door, stream={stream}");
                let r = h.chat(door, &[], &chat_body(door, &model, stream)).await;
                sent += 1;
                assert_eq!(r.status(), status, "{case}");
                let (ty, message) = body_error(door, &gw::json_of(r).await);
                assert!(
                    message.contains("max_tokens must be at least 1"),
                    "{case}: {message}"
                );
                if door == Dialect::Anthropic {
                    let want = if status == 400 {
                        "invalid_request_error"
                    } else {
                        "permission_error"
                    };
                    assert_eq!(ty, want, "{case}");
                }
                assert_clean(&case, &message);
                assert_eq!(h.replay.requests().len(), sent, "{case}: retried");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_provider_echoes_is_redacted() {
    let h = fast().await;
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "x_key_echoed",
        "data: {\"error\":{\"message\":\"Incorrect API key provided: sk-proj-****************************WXyz. You can find your API key in your account.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}\n\n",
    );
    for door in Dialect::ALL {
        let r = h
            .chat(door, &[], &chat_body(door, "openai/x_key_echoed", false))
            .await;
        assert_eq!(r.status(), 400, "{door}");
        let (_, message) = body_error(door, &gw::json_of(r).await);
        assert!(
            message.contains("Incorrect API key provided: [redacted]."),
            "{door}: {message}"
        );
        assert!(!message.contains("WXyz"), "{door}: {message}");
    }
}

/// The replay endpoint of a dialect's provider.
fn endpoint(dialect: Dialect) -> &'static str {
    gw::door_path(dialect)
}

fn provider(dialect: Dialect) -> &'static str {
    dialect.as_str()
}

fn other(dialect: Dialect) -> Dialect {
    match dialect {
        Dialect::OpenAi | Dialect::OpenAiResponses => Dialect::Anthropic,
        Dialect::Anthropic => Dialect::OpenAi,
    }
}

fn alias(c: &mut streamgate::config::Config, name: String, route: String, fallback: String) {
    c.models.insert(
        name,
        streamgate::config::ModelConfig {
            route,
            fallbacks: vec![fallback],
            reasoning: None,
            hedge_after_ms: None,
            max_output_tokens: None,
            max_n: None,
        },
    );
}

/// Requests the replay got on `dialect`'s endpoint for `model` (its knobs and fixture).
fn sent(h: &Harness, dialect: Dialect, model: &str) -> usize {
    h.replay
        .requests()
        .iter()
        .filter(|r| r.path == endpoint(dialect) && r.model() == Some(model))
        .count()
}

/// A mixed-dialect plan: a route whose dialect cannot express the request is skipped (and its
/// breaker never hears of it) for one that can; only when none can, the client gets the
/// translation's 4xx, never having reached a provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_cannot_express_the_request_is_skipped_not_blamed() {
    let h = gw::start_with(|c| {
        c.streaming.retry_policy.backoff_ms = 10;
        c.streaming.retry_policy.max_backoff_ms = 20;
        // Low: blaming the skipped route would open its breaker within the cases below.
        c.streaming.circuit_breaker.failure_threshold = 2;
        for door in Dialect::ALL {
            let (same, other) = (provider(door), provider(other(door)));
            alias(
                c,
                format!("skip-{door}"),
                format!("{other}/text_basic"),
                format!("{same}/text_basic"),
            );
            alias(
                c,
                format!("nowhere-{door}"),
                format!("{other}/text_basic"),
                format!("{other}/chunk=64:text_basic"),
            );
        }
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(0x4_07);
    let mut checked = 0;
    for door in Dialect::ALL {
        let skip = format!("skip-{door}");
        for (param, body) in untranslatable(door, &skip, &mut rng) {
            let case = format!("{param} at the {door} door (stream {})", body["stream"]);
            let before = (
                sent(&h, other(door), "text_basic"),
                sent(&h, door, "text_basic"),
            );
            let r = h.chat(door, &[], &body).await;
            assert_eq!(r.status(), 200, "{case}: the fallback answers");
            let bytes = body_bytes(r).await;
            if body["stream"] == true {
                assert_eq!(stream_error(&bytes), None, "{case}");
            }
            let after = (
                sent(&h, other(door), "text_basic"),
                sent(&h, door, "text_basic"),
            );
            assert_eq!(
                (after.0 - before.0, after.1 - before.1),
                (0, 1),
                "{case}: (first route, fallback) requests"
            );
            checked += 1;
        }
        // The skipped route was never blamed: a request it can express still goes to it.
        let before = sent(&h, other(door), "text_basic");
        let r = h.chat(door, &[], &chat_body(door, &skip, true)).await;
        assert_eq!(r.status(), 200);
        body_bytes(r).await;
        assert_eq!(sent(&h, other(door), "text_basic") - before, 1, "{door}");

        let nowhere = format!("nowhere-{door}");
        let requests = h.replay.requests().len();
        for (param, body) in untranslatable(door, &nowhere, &mut rng) {
            let case = format!("{param} at the {door} door (stream {})", body["stream"]);
            let r = h.chat(door, &[], &body).await;
            assert_eq!(r.status(), 400, "{case}: no route can express it");
            let body = gw::json_of(r).await;
            let (ty, message) = body_error(door, &body);
            assert_eq!(ty, "invalid_request_error", "{case}: {body}");
            assert!(message.contains(&param), "{case}: {message}");
            checked += 1;
        }
        assert_eq!(h.replay.requests().len(), requests, "no provider was asked");
    }
    assert!(checked >= 40, "{checked}");
}

/// When the first route failed at its provider and the routes left cannot express the request,
/// the client gets that provider's error, not the translation's 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_provider_error_an_untranslatable_fallback_leaves_that_error() {
    let h = gw::start_with(|c| {
        let retry = &mut c.streaming.retry_policy;
        retry.backoff_ms = 10;
        retry.max_backoff_ms = 20;
        retry.max_attempts = 2;
        c.streaming.circuit_breaker.failure_threshold = 10_000;
        for door in Dialect::ALL {
            alias(
                c,
                format!("broken-{door}"),
                format!("{}/status=503:text_basic", provider(door)),
                format!("{}/text_basic", provider(other(door))),
            );
        }
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(0x5_03);
    let mut checked = 0;
    for door in Dialect::ALL {
        let broken = format!("broken-{door}");
        for (param, body) in untranslatable(door, &broken, &mut rng) {
            let case = format!("{param} at the {door} door (stream {})", body["stream"]);
            let before = sent(&h, other(door), "text_basic");
            let r = h.chat(door, &[], &body).await;
            assert_eq!(r.status(), 503, "{case}: the primary's error");
            let body = gw::json_of(r).await;
            let (ty, message) = body_error(door, &body);
            assert_ne!(ty, "invalid_request_error", "{case}: {body}");
            assert!(message.contains("503"), "{case}: {message}");
            assert_clean(&case, &message);
            assert_eq!(sent(&h, other(door), "text_basic"), before, "{case}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}

/// When the only routes that can express the request rest behind an open breaker, the client
/// gets their 503 with `Retry-After` (come back later), not the 400 (never come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_routes_that_can_express_it_rest_the_client_gets_their_503() {
    let h = gw::start_with(|c| {
        c.streaming.retry_policy.max_attempts = 1;
        c.streaming.circuit_breaker.failure_threshold = 1;
        c.streaming.circuit_breaker.cooldown_ms = 600_000;
        for door in Dialect::ALL {
            alias(
                c,
                format!("resting-{door}"),
                format!("{}/text_basic", provider(other(door))),
                format!("{}/status=500:text_basic", provider(door)),
            );
        }
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(0x5_04);
    for door in Dialect::ALL {
        let model = format!("resting-{door}");
        let cases = untranslatable(door, &model, &mut rng);
        // The first opens the fallback's breaker (its provider's 500 reaches the client).
        let r = h.chat(door, &[], &cases[0].1).await;
        assert_eq!(r.status(), 500, "{door}");
        body_bytes(r).await;
        for (param, body) in &cases {
            let case = format!("{param} at the {door} door (stream {})", body["stream"]);
            let r = h.chat(door, &[], body).await;
            assert_eq!(r.status(), 503, "{case}");
            let retry_after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=600).contains(&retry_after), "{case}: {retry_after}");
            let body = gw::json_of(r).await;
            let (ty, _) = body_error(door, &body);
            assert_ne!(ty, "invalid_request_error", "{case}: {body}");
        }
    }
}
