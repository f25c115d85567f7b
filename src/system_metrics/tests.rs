//! Each subsystem exercised, then the collector's text output read: every metric shows the
//! exact value the subsystem's state implies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use providers::request::ChatRequest;
use providers::{AgentEvent, Dialect};
use serde_json::json;
use tokio_util::task::TaskTracker;

use super::{SystemSources, names, register};
use crate::config::Config;
use crate::engine::{Answer, Call, Engine};
use crate::hub::{Hub, NewStream};
use crate::limit::{ClientId, TokenEstimate};
use crate::route::Route;
use crate::upstream::{ClientKey, ForwardHeaders};

/// The text exposition of the subsystem metrics of `engine` and `hub`.
fn scrape(engine: &Arc<Engine>, hub: &Arc<Hub>, websockets: &TaskTracker) -> String {
    let mut registry = Registry::default();
    register(
        &mut registry,
        SystemSources {
            engine: Arc::clone(engine),
            hub: Arc::clone(hub),
            websockets: websockets.clone(),
        },
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The value of the sample `series` (name and labels as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn parts(config: Config) -> (Arc<Engine>, Arc<Hub>) {
    let mut streams = config.streams.clone();
    streams.journal.enabled = false;
    let engine = Arc::new(Engine::new(config).unwrap());
    let hub = Hub::open(streams, &engine).unwrap();
    (engine, hub)
}

fn config(text: &str) -> Config {
    Config::parse(text).unwrap()
}

fn gateway_key(secret: &str) -> String {
    crate::keys::hex(&crate::keys::sha256(secret))
}

#[tokio::test(start_paused = true)]
async fn refusals_are_counted_by_configured_key_name_and_limit_kind() {
    let (engine, hub) = parts(config(&format!(
        r#"
        [limits]
        queue_ms = 0
        [limits.per_key]
        concurrent_streams = 1
        [limits.models.limited]
        requests_per_minute = 1
        [keys.alpha]
        sha256 = "{}"
        [keys.beta]
        sha256 = "{}"
        [keys.gamma]
        sha256 = "{}"
        "#,
        gateway_key("sk-alpha"),
        gateway_key("sk-beta"),
        gateway_key("sk-gamma"),
    )));
    let limiter = engine.limiter();
    // Clients and the label each must count under: never a credential nor its hash.
    let clients = [
        (ClientId::gateway_key("alpha"), "alpha"),
        (ClientId::gateway_key("beta"), "beta"),
        (ClientId::ANONYMOUS, "anonymous"),
        (ClientId::from_credential(Some("sk-unknown-1")), "other"),
        (ClientId::from_credential(Some("sk-unknown-2")), "other"),
    ];
    let mut held = Vec::new();
    for (client, _) in &clients {
        held.push(
            limiter
                .acquire(client, "m", TokenEstimate::new(1, 1))
                .await
                .unwrap(),
        );
    }
    let mut rng = fastrand::Rng::with_seed(12);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..rng.usize(50..200) {
        let (client, label) = clients[rng.usize(..clients.len())];
        let refused = limiter
            .acquire(&client, "m", TokenEstimate::new(1, 1))
            .await;
        assert!(refused.is_err());
        *expected.entry(label).or_default() += 1;
    }
    // Another kind: the model's requests per minute, for a key with room.
    let gamma = ClientId::gateway_key("gamma");
    drop(
        limiter
            .acquire(&gamma, "limited", TokenEstimate::new(1, 1))
            .await
            .unwrap(),
    );
    let rpm_refusals = rng.u64(1..20);
    for _ in 0..rpm_refusals {
        assert!(
            limiter
                .acquire(&gamma, "limited", TokenEstimate::new(1, 1))
                .await
                .is_err()
        );
    }
    let text = scrape(&engine, &hub, &TaskTracker::new());
    let name = format!("{}_total", names::RATE_LIMIT_REJECTIONS);
    for (label, n) in &expected {
        let series = format!(r#"{name}{{key="{label}",limit="concurrency"}}"#);
        assert_eq!(value(&text, &series), *n as f64, "{series}");
    }
    let series = format!(r#"{name}{{key="gamma",limit="requests_per_minute"}}"#);
    assert_eq!(value(&text, &series), rpm_refusals as f64);
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with(&name))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let refused: u64 = expected.values().sum::<u64>() + rpm_refusals;
    assert_eq!(total, refused as f64, "no other series:\n{text}");
    assert!(!text.contains("sk-") && !text.contains("key-"), "{text}");
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn queue_waits_are_observed_and_the_queue_is_a_gauge() {
    let (engine, hub) = parts(config(
        "[limits]\nqueue_ms = 1000\n[limits.per_key]\nconcurrent_streams = 1\n",
    ));
    let limiter = engine.limiter().clone();
    let client = ClientId::from_credential(Some("sk-q"));
    let first = limiter
        .acquire(&client, "m", TokenEstimate::default())
        .await
        .unwrap();
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            limiter
                .acquire(&client, "m", TokenEstimate::default())
                .await
        })
    };
    while limiter.queued() == 0 {
        tokio::task::yield_now().await;
    }
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(value(&text, names::RATE_LIMIT_QUEUED), 1.0);
    tokio::time::advance(Duration::from_millis(300)).await;
    drop(first);
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(second.waited(), Duration::from_millis(300));
    // A second waiter that never gets room: refused at the deadline, its wait counted too.
    let refused = limiter
        .acquire(&client, "m", TokenEstimate::default())
        .await;
    assert!(refused.is_err());
    let text = scrape(&engine, &hub, &TaskTracker::new());
    let h = names::RATE_LIMIT_QUEUE_WAIT;
    assert_eq!(value(&text, &format!("{h}_count")), 2.0);
    assert!(
        (value(&text, &format!("{h}_sum")) - 1.3).abs() < 1e-6,
        "{text}"
    );
    assert_eq!(value(&text, &format!(r#"{h}_bucket{{le="0.25"}}"#)), 0.0);
    assert_eq!(value(&text, &format!(r#"{h}_bucket{{le="0.5"}}"#)), 1.0);
    assert_eq!(value(&text, &format!(r#"{h}_bucket{{le="1.0"}}"#)), 2.0);
    assert_eq!(value(&text, names::RATE_LIMIT_QUEUED), 0.0);
}

#[tokio::test(start_paused = true)]
async fn breakers_show_each_configured_route_and_other_routes_together() {
    let (engine, hub) = parts(config(
        r#"
        [streaming.circuitBreaker]
        failureThreshold = 2
        cooldownMs = 1000
        [models.smart]
        route = "openai/gpt-x"
        fallbacks = ["anthropic/claude-y"]
        "#,
    ));
    let breakers = engine.breakers();
    let state = |text: &str, route: &str| {
        value(
            text,
            &format!(r#"{}{{route="{route}"}}"#, names::BREAKER_STATE),
        )
    };
    let moved = |text: &str, route: &str, to: &str| {
        let name = format!("{}_total", names::BREAKER_TRANSITIONS);
        value(text, &format!(r#"{name}{{route="{route}",to="{to}"}}"#))
    };
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(
        state(&text, "openai/gpt-x"),
        0.0,
        "configured routes show before use"
    );
    assert_eq!(state(&text, "anthropic/claude-y"), 0.0);
    assert_eq!(
        sample(&text, r#"streamgate_breaker_state{route="other"}"#),
        None
    );

    breakers.failure("openai/gpt-x");
    breakers.failure("openai/gpt-x");
    // Routes a client named itself: one `other` row, however many.
    for model in ["free-1", "free-2", "free-3"] {
        breakers.success(&format!("openai/{model}"));
    }
    breakers.failure("openai/free-2");
    breakers.failure("openai/free-2");
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(state(&text, "openai/gpt-x"), 2.0);
    assert_eq!(moved(&text, "openai/gpt-x", "open"), 1.0);
    assert_eq!(state(&text, "other"), 2.0, "the most open of them");
    assert_eq!(moved(&text, "other", "open"), 1.0);
    assert!(!text.contains("free-"), "{text}");

    tokio::time::advance(Duration::from_millis(1000)).await;
    let probe = breakers.allow("openai/gpt-x").unwrap();
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(state(&text, "openai/gpt-x"), 1.0);
    assert_eq!(moved(&text, "openai/gpt-x", "half_open"), 1.0);
    probe.success();
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(state(&text, "openai/gpt-x"), 0.0);
    assert_eq!(moved(&text, "openai/gpt-x", "closed"), 1.0);
    assert_eq!(moved(&text, "anthropic/claude-y", "open"), 0.0);
}

fn open_call(model: &str) -> Call {
    let request = ChatRequest::from_anthropic(&json!({
        "model": model, "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hello"}]
    }))
    .unwrap();
    Call {
        door: Dialect::Anthropic,
        request,
        key: ClientKey {
            door: Dialect::Anthropic,
            key: None,
        },
        forward: ForwardHeaders::default(),
        caller: crate::keys::Caller::open(),
        observed: crate::telemetry::request::Observed::detached("test".into()),
    }
}

/// An answer whose events never come: its stream stays live.
fn endless_answer() -> Answer {
    Answer {
        route: Route {
            provider: "p".into(),
            model: "m".into(),
        },
        events: Box::pin(futures_util::stream::pending::<Result<AgentEvent, _>>()),
    }
}

#[tokio::test]
async fn streams_subscribers_websockets_and_the_journal_are_read_at_scrape_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.streams.journal.dir = dir.path().to_owned();
    config.streams.max_live = 3;
    let streams = config.streams.clone();
    let engine = Arc::new(Engine::new(config).unwrap());
    let hub = Hub::open(streams, &engine).unwrap();
    let websockets = TaskTracker::new();
    let text = scrape(&engine, &hub, &websockets);
    assert_eq!(value(&text, names::STREAMS_ACTIVE), 0.0);
    assert_eq!(value(&text, names::WEBSOCKET_CONNECTIONS), 0.0);

    let mut entries = Vec::new();
    let started = 3;
    for _ in 0..started {
        let slot = hub.reserve(None).unwrap();
        let new = NewStream {
            id: None,
            owner: None,
            door: Dialect::OpenAi,
            body: Bytes::from_static(b"{}"),
            forward: ForwardHeaders::default(),
        };
        entries.push(hub.start(new, endless_answer(), slot).await.unwrap());
    }
    let subscriptions: Vec<_> = (0..5)
        .map(|i| entries[i % started].subscribe(None).unwrap())
        .collect();
    let tokens: Vec<_> = (0..2).map(|_| websockets.token()).collect();
    assert!(hub.reserve(None).is_err(), "max_live is 3");
    // The interval flusher may sync while the scrape runs: its count is bracketed.
    let syncs_before = hub.journal().unwrap().latencies().sync.count;
    let text = scrape(&engine, &hub, &websockets);
    let refused = format!("{}_total", names::STREAMS_REFUSED);
    assert_eq!(
        value(&text, &format!(r#"{refused}{{limit="max_live"}}"#)),
        1.0
    );
    assert_eq!(
        value(&text, &format!(r#"{refused}{{limit="max_live_per_key"}}"#)),
        0.0
    );
    assert_eq!(value(&text, names::STREAMS_ACTIVE), started as f64);
    assert_eq!(
        value(&text, &format!("{}_total", names::STREAMS_STARTED)),
        3.0
    );
    assert_eq!(value(&text, names::STREAM_SUBSCRIBERS), 5.0);
    assert_eq!(value(&text, names::WEBSOCKET_CONNECTIONS), 2.0);

    let journal = hub.journal().unwrap();
    let stats = journal.stats();
    assert_eq!(
        stats.records_appended, started as u64,
        "one Open record each"
    );
    let records = format!("{}_total", names::JOURNAL_RECORDS);
    assert_eq!(value(&text, &records), started as f64);
    let bytes = format!("{}_total", names::JOURNAL_APPENDED_BYTES);
    assert_eq!(value(&text, &bytes), journal.appended_bytes() as f64);
    // The first segment holds everything: its size is its header plus what was appended.
    let on_disk = value(&text, names::JOURNAL_BYTES);
    assert_eq!(on_disk, stats.bytes as f64);
    assert!(on_disk > journal.appended_bytes() as f64);
    assert_eq!(value(&text, names::JOURNAL_SEGMENTS), stats.segments as f64);
    let append = format!("{}_count", names::JOURNAL_APPEND);
    assert_eq!(value(&text, &append), started as f64);
    let sync = format!("{}_count", names::JOURNAL_SYNC);
    let syncs = value(&text, &sync);
    assert!(
        (syncs_before as f64..=journal.latencies().sync.count as f64).contains(&syncs),
        "{syncs} syncs scraped, {syncs_before} before"
    );
    let compacted = format!("{}_total", names::JOURNAL_COMPACTED);
    assert_eq!(value(&text, &compacted), 0.0);

    drop(subscriptions);
    drop(tokens);
    for entry in &entries {
        entry.cancel();
    }
    let text = scrape(&engine, &hub, &websockets);
    assert_eq!(value(&text, names::STREAM_SUBSCRIBERS), 0.0);
    assert_eq!(value(&text, names::WEBSOCKET_CONNECTIONS), 0.0);
}

#[tokio::test]
async fn streams_over_a_keys_live_cap_are_counted() {
    let mut config = Config::default();
    config.streams.max_live_per_key = 1;
    let (engine, hub) = parts(config);
    let held = hub.reserve(Some("k")).unwrap();
    let n = fastrand::Rng::with_seed(7).u64(1..30);
    for _ in 0..n {
        assert!(hub.reserve(Some("k")).is_err());
    }
    let text = scrape(&engine, &hub, &TaskTracker::new());
    let refused = format!("{}_total", names::STREAMS_REFUSED);
    assert_eq!(
        value(&text, &format!(r#"{refused}{{limit="max_live_per_key"}}"#)),
        n as f64
    );
    assert_eq!(
        value(&text, &format!(r#"{refused}{{limit="max_live"}}"#)),
        0.0
    );
    drop(held);
}

#[tokio::test]
async fn without_a_journal_no_journal_metric_is_shown() {
    let (engine, hub) = parts(Config::default());
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert!(!text.contains("streamgate_journal_"), "{text}");
}

#[tokio::test]
async fn upstream_connections_and_requests_in_flight_per_provider() {
    let replay = crate::replay::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let (engine, hub) = parts(replay.config());
    let opened = |text: &str, provider: &str| {
        let name = format!("{}_total", names::UPSTREAM_CONNECTIONS_OPENED);
        value(text, &format!(r#"{name}{{provider="{provider}"}}"#))
    };
    let in_flight = |text: &str, provider: &str| {
        value(
            text,
            &format!(r#"{}{{provider="{provider}"}}"#, names::UPSTREAM_IN_FLIGHT),
        )
    };
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(opened(&text, "anthropic"), 0.0);
    assert_eq!(in_flight(&text, "anthropic"), 0.0);

    // Two answers open at once: two connections, both in flight until their bodies go.
    let first = engine.answer(open_call("demo")).await.unwrap();
    let second = engine.answer(open_call("demo")).await.unwrap();
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(in_flight(&text, "anthropic"), 2.0);
    assert_eq!(opened(&text, "anthropic"), 2.0);
    assert_eq!(in_flight(&text, "openai"), 0.0);
    assert_eq!(opened(&text, "openai"), 0.0);

    let drained: Vec<_> = first.events.collect().await;
    assert!(drained.iter().all(Result::is_ok));
    drop(second);
    // The answers' tasks let go of their bodies as they end.
    let mut text = scrape(&engine, &hub, &TaskTracker::new());
    for _ in 0..200 {
        if in_flight(&text, "anthropic") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        text = scrape(&engine, &hub, &TaskTracker::new());
    }
    assert_eq!(in_flight(&text, "anthropic"), 0.0);
    assert_eq!(opened(&text, "anthropic"), 2.0);
}

#[tokio::test]
async fn a_forwarded_request_is_in_flight_until_its_body_goes() {
    let replay = crate::replay::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let (engine, hub) = parts(replay.config());
    let provider = engine.config().providers["openai"].clone();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let forward = crate::upstream::Forward {
        method: http::Method::POST,
        path: "/v1/embeddings".into(),
        query: None,
        headers,
        body: Some(reqwest::Body::from(r#"{"model":"e","input":"hi"}"#)),
    };
    let key = ClientKey {
        door: Dialect::OpenAi,
        key: None,
    };
    let forwarded = engine
        .upstream()
        .forward(
            "openai",
            &provider,
            forward,
            &key,
            &ForwardHeaders::default(),
            std::future::ready(()),
        )
        .await
        .unwrap();
    assert_eq!(forwarded.status, 200);
    let series = format!(r#"{}{{provider="openai"}}"#, names::UPSTREAM_IN_FLIGHT);
    let opened = format!(
        r#"{}_total{{provider="openai"}}"#,
        names::UPSTREAM_CONNECTIONS_OPENED
    );
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(value(&text, &series), 1.0);
    assert_eq!(value(&text, &opened), 1.0);
    drop(forwarded);
    let text = scrape(&engine, &hub, &TaskTracker::new());
    assert_eq!(value(&text, &series), 0.0);
}
