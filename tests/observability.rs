//! Request ids, access lines and `GET /metrics` through real sockets (docs/observability.md).
//!
//! Every test of this file shares one global log capture (a tracing subscriber can be set
//! once per process): each test finds its own lines by the request ids it got back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use providers::{AgentEvent, Dialect};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, fmt};

/// Lines written by one of the capture's layers.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The access log, captured as text and as JSON.
struct Capture {
    text: Buffer,
    json: Buffer,
    /// The engine's own lines (retries, failovers), as JSON with their spans.
    engine: Buffer,
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let (text, json, engine) = (Buffer::default(), Buffer::default(), Buffer::default());
        let (t, j, e) = (text.clone(), json.clone(), engine.clone());
        let filter = || tracing_subscriber::EnvFilter::new("streamgate::access=info");
        let subscriber = tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || t.clone())
                    .with_filter(filter()),
            )
            .with(
                fmt::layer()
                    .json()
                    .with_writer(move || j.clone())
                    .with_filter(filter()),
            )
            .with(
                fmt::layer()
                    .json()
                    .with_span_list(true)
                    .with_writer(move || e.clone())
                    .with_filter(tracing_subscriber::EnvFilter::new(
                        // The request span is made in telemetry: enabled, or this layer sees none.
                        "streamgate::engine=info,streamgate::telemetry=info",
                    )),
            );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        Capture { text, json, engine }
    })
}

/// The JSON access lines of request `id`, waiting (boundedly) until there are `n`.
async fn access_lines(id: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + gw::BOUND;
    loop {
        let lines = access_lines_now(id);
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON access lines of request `id` so far.
fn access_lines_now(id: &str) -> Vec<Value> {
    capture()
        .json
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON access line parses"))
        .filter(|v| v["fields"]["request_id"] == id)
        .collect()
}

fn id_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {} {:?}", r.status(), r.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A gateway-made id: a UUID v7.
fn assert_v7(id: &str) -> uuid::Uuid {
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
    assert_eq!(parsed.get_version_num(), 7, "{id}");
    parsed
}

/// One request of each kind the gateway answers: every door's success, its errors, a
/// pass-through, a 404, the small routes.
fn requests(h: &gw::Harness) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let c = &h.client;
    let chat = |door: Dialect, model: &str, stream: bool| {
        let mut r = c
            .post(h.url(gw::door_path(door)))
            .header("content-type", "application/json")
            .body(gw::chat_body(door, model, stream).to_string());
        if door == Dialect::Anthropic {
            r = r.header("anthropic-version", "2023-06-01");
        }
        r
    };
    vec![
        ("openai stream", chat(Dialect::OpenAi, "demo", true)),
        ("openai whole", chat(Dialect::OpenAi, "demo-openai", false)),
        ("anthropic stream", chat(Dialect::Anthropic, "demo", true)),
        (
            "responses",
            chat(Dialect::OpenAiResponses, "demo-openai", false),
        ),
        (
            "unknown model",
            chat(Dialect::OpenAi, "no-such-model", true),
        ),
        (
            "bad json",
            c.post(h.url("/v1/messages"))
                .header("anthropic-version", "2023-06-01")
                .body("{"),
        ),
        (
            "native",
            c.post(h.url("/v1/streams"))
                .header("streamgate-dialect", "openai")
                .header("content-type", "application/json")
                .body(gw::chat_body(Dialect::OpenAi, "demo", true).to_string()),
        ),
        ("native 404", c.get(h.url("/v1/streams/nope"))),
        (
            "passthrough",
            c.post(h.url("/v1/embeddings"))
                .header("content-type", "application/json")
                .body(r#"{"model":"x","input":"hi"}"#),
        ),
        ("models", c.get(h.url("/v1/models"))),
        ("health", c.get(h.url("/healthz"))),
        ("metrics", c.get(h.url("/metrics"))),
        ("admin", c.get(h.url("/admin/routes"))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_fresh_ordered_request_id_that_reaches_the_upstream() {
    capture();
    let h = gw::start().await;
    let mut last: Option<uuid::Uuid> = None;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..2 {
        for (what, request) in requests(&h) {
            let r = request.send().await.unwrap();
            let id = id_of(&r);
            let uuid = assert_v7(&id);
            if let Some(last) = last {
                assert!(uuid > last, "{what}: {uuid} after {last}");
            }
            last = Some(uuid);
            assert!(seen.insert(id.clone()), "{what}: {id} twice");
            let status = r.status();
            let native = what == "native";
            let body = gw::body_bytes(r).await;
            if native {
                let mut reader = gw::NativeReader::default();
                reader.feed(&body);
                let start = reader
                    .envelopes()
                    .into_iter()
                    .find_map(|e| match e.event {
                        AgentEvent::StreamStart(s) => Some(s),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!(
                    start.request_id.as_deref(),
                    Some(id.as_str()),
                    "round {round}"
                );
            }
            // One access line per request, whatever its answer.
            let lines = access_lines(&id, 1).await;
            assert_eq!(lines.len(), 1, "{what} ({status}): {lines:?}");
        }
    }
    // Every upstream call carried the id of the request that made it.
    let upstream: Vec<String> = h
        .replay
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or_default().to_owned())
        .collect();
    assert!(!upstream.is_empty());
    for id in &upstream {
        assert!(seen.contains(id), "upstream got {id:?}, no answer had it");
    }
}

/// Header values a client could send: from the documented alphabet (kept) or not (replaced).
fn client_id(rng: &mut fastrand::Rng) -> (String, bool) {
    const SANE: &[u8] = b"ABCXYZabcxyz0189._:@/+=-";
    const INSANE: &[u8] = b" !\"#$%&'()*,;<>?[\\]^`{|}~";
    match rng.u8(0..4) {
        0 => {
            let n = rng.usize(1..=128);
            let s = (0..n)
                .map(|_| SANE[rng.usize(..SANE.len())] as char)
                .collect();
            (s, true)
        }
        1 => {
            let n = rng.usize(129..400);
            let s = (0..n)
                .map(|_| SANE[rng.usize(..SANE.len())] as char)
                .collect();
            (s, false)
        }
        _ => {
            let n = rng.usize(1..60);
            let mut s: Vec<char> = (0..n)
                .map(|_| SANE[rng.usize(..SANE.len())] as char)
                .collect();
            let at = rng.usize(..s.len());
            s[at] = INSANE[rng.usize(..INSANE.len())] as char;
            // Leading and trailing blanks are trimmed by HTTP itself: keep the bad byte inside.
            let s: String = s.into_iter().collect();
            let s = format!("a{s}b");
            (s, false)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sane_client_id_is_kept_and_any_other_replaced() {
    capture();
    let h = gw::start().await;
    let mut rng = fastrand::Rng::with_seed(0x1d5);
    let mut kinds = [0usize; 2];
    for i in 0..48 {
        let (sent, sane) = client_id(&mut rng);
        kinds[usize::from(sane)] += 1;
        let (what, request) = requests(&h).swap_remove(i % 13);
        let r = request
            .header("x-request-id", sent.as_str())
            .send()
            .await
            .unwrap();
        let got = id_of(&r);
        if sane {
            assert_eq!(got, sent, "{what}");
        } else {
            assert_ne!(got, sent, "{what}");
            assert_v7(&got);
        }
        drop(gw::body_bytes(r).await);
        assert_eq!(access_lines(&got, 1).await.len(), 1, "{what}");
    }
    assert!(kinds[0] > 5 && kinds[1] > 5, "{kinds:?}");
    // Two ids at once: neither is trusted.
    let r = h
        .client
        .get(h.url("/healthz"))
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    assert_v7(&id_of(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_say_what_happened() {
    capture();
    let h = gw::start().await;
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &gw::chat_body(Dialect::OpenAi, "demo", true),
        )
        .await;
    let ok = id_of(&r);
    gw::body_bytes(r).await;
    let line = &access_lines(&ok, 1).await[0];
    let f = &line["fields"];
    assert_eq!(f["door"], "openai");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/v1/chat/completions");
    assert_eq!(f["model"], "\"demo\"");
    assert_eq!(f["routes"], "anthropic/tool_use_with_text");
    assert_eq!(f["status"], 200);
    assert_eq!(f["outcome"], "ok");
    assert_eq!(f["attempts"], 1);
    assert_eq!(f["message"], "request finished");
    assert_eq!(line["target"], "streamgate::access");
    assert!(f["tokens_in"].as_u64().unwrap() > 0, "{f}");
    assert!(f["tokens_out"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["tokens_estimated"], false);
    assert!(f["ttft_ms"].as_u64().unwrap() <= f["duration_ms"].as_u64().unwrap());
    // The text line carries the same id.
    assert!(
        capture().text.lines().iter().any(|l| l.contains(&ok)),
        "no text line for {ok}"
    );

    // Refusals: the client's fault, a rate limit.
    let r = h
        .chat(
            Dialect::Anthropic,
            &[],
            &gw::chat_body(Dialect::Anthropic, "nope\nforged", true),
        )
        .await;
    let refused = id_of(&r);
    assert_eq!(r.status(), 404);
    let f = &access_lines(&refused, 1).await[0]["fields"];
    assert_eq!(f["outcome"], "client_error");
    assert_eq!(f["door"], "anthropic");
    assert_eq!(f["model"], "\"nope\\nforged\"", "escaped as untrusted");
    let mut limited = None;
    for _ in 0..=streamgate::replay::DEMO_LIMITED_RPM {
        let r = h
            .chat(
                Dialect::OpenAi,
                &[],
                &gw::chat_body(Dialect::OpenAi, "demo-limited", false),
            )
            .await;
        if r.status() == 429 {
            limited = Some(id_of(&r));
        }
        gw::body_bytes(r).await;
    }
    let limited = limited.expect("the demo-limited alias refuses past its rpm");
    assert_eq!(
        access_lines(&limited, 1).await[0]["fields"]["outcome"],
        "rate_limited"
    );

    // An answer that breaks for good after it started (no second attempt allowed).
    let h = gw::start_with(|c| c.streaming.retry_policy.max_attempts = 1).await;
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &gw::chat_body(
                Dialect::OpenAi,
                "openai/drip=5,reset_after=10:text_long_obfuscation",
                true,
            ),
        )
        .await;
    let broken = id_of(&r);
    gw::body_bytes(r).await;
    let f = &access_lines(&broken, 1).await[0]["fields"];
    assert_eq!(f["status"], 200);
    assert_eq!(f["outcome"], "interrupted", "{f}");
    assert_eq!(f["attempts"], 1, "{f}");
    assert!(f["ttft_ms"].as_u64().is_some(), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_gets_one_cancelled_line() {
    capture();
    let h = gw::start().await;
    for door in [Dialect::OpenAi, Dialect::Anthropic] {
        let mut r = h
            .chat(
                door,
                &[],
                &gw::chat_body(door, "openai/slow:text_long_obfuscation", true),
            )
            .await;
        let id = id_of(&r);
        assert_eq!(r.status(), 200);
        // Something arrived: the answer started; then the client goes.
        let first = tokio::time::timeout(gw::BOUND, r.chunk())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_some());
        drop(r);
        let lines = access_lines(&id, 1).await;
        assert_eq!(lines.len(), 1, "{door}");
        let f = &lines[0]["fields"];
        assert_eq!(f["outcome"], "cancelled", "{door}: {f}");
        assert_eq!(f["status"], 200);
        // Never a second line, even once the answer's work has wound down.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(access_lines_now(&id).len(), 1, "{door}");
    }
}

/// One sample of the exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the OpenMetrics text `GET /metrics` returns, checking its grammar as it goes:
/// comments are `# HELP|TYPE|UNIT name ...`, it ends with `# EOF`, every sample belongs to a
/// declared family, label values are quoted, values are numbers.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut families = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "a line after # EOF: {line}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            let name = parts.next().unwrap();
            assert!(name.starts_with("streamgate_"), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "stateset",
                        "unknown"
                    ]
                    .contains(&t),
                    "{line}"
                );
                families.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels: BTreeMap<String, String> = parse_labels(body).into_iter().collect();
                (name.to_owned(), labels)
            }
        };
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            families.contains(family) || families.contains(&name),
            "{name} has no # TYPE"
        );
        samples.push((name, labels, value));
    }
    assert!(ended, "no # EOF");
    samples
}

/// `a="x",b="y"` as pairs, values unescaped (`\\`, `\"`, `\n`); panics on anything else.
fn parse_labels(body: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label {key:?} in {body}"
        );
        assert_eq!(chars.next(), Some('"'), "unquoted label in {body}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("escape {other:?} in {body}"),
                },
                Some(c) => value.push(c),
                None => panic!("unterminated label in {body}"),
            }
        }
        pairs.push((key, value));
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => panic!("{c:?} after a label in {body}"),
        }
    }
    pairs
}

async fn scrape(h: &gw::Harness) -> (String, Vec<Sample>) {
    let r = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = r.text().await.unwrap();
    let samples = parse_exposition(&text);
    (text, samples)
}

/// The sum of the samples named `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Scrapes until `ready` holds (the last request's record finishes as its body ends, which a
/// client may see a moment before).
async fn scrape_until(h: &gw::Harness, ready: impl Fn(&[Sample]) -> bool) -> (String, Vec<Sample>) {
    let deadline = tokio::time::Instant::now() + gw::BOUND;
    loop {
        let (text, samples) = scrape(h).await;
        if ready(&samples) || tokio::time::Instant::now() > deadline {
            return (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_requests_made_and_never_a_clients_string() {
    capture();
    let h = gw::start().await;
    let mut rng = fastrand::Rng::with_seed(0x3e7);
    let (_, before) = scrape(&h).await;
    let requests_before = value(&before, "streamgate_requests_total", &[]);
    let n = rng.usize(3..7);
    for _ in 0..n {
        let r = h
            .chat(
                Dialect::OpenAi,
                &[],
                &gw::chat_body(Dialect::OpenAi, "demo", true),
            )
            .await;
        assert_eq!(r.status(), 200);
        gw::body_bytes(r).await;
    }
    // Models a client made up: some routed (PROVIDER/...), some unknown.
    let mut made_up = Vec::new();
    for _ in 0..6 {
        let word: String = (0..12).map(|_| rng.alphanumeric()).collect();
        let model = if rng.bool() {
            format!("anthropic/text_basic{word}")
        } else {
            format!("zz{word}")
        };
        let r = h
            .chat(
                Dialect::OpenAi,
                &[],
                &gw::chat_body(Dialect::OpenAi, &model, false),
            )
            .await;
        gw::body_bytes(r).await;
        made_up.push(word);
    }
    let demo = [
        ("door", "openai"),
        ("model", "demo"),
        ("status_class", "2xx"),
        ("outcome", "ok"),
    ];
    let route = [("route", "anthropic/tool_use_with_text")];
    // Each scrape is itself a request: those before the ones counted here are counted too.
    let (text, samples) = scrape_until(&h, |s| {
        value(s, "streamgate_requests_total", &demo) == n as f64
            && value(s, "streamgate_requests_total", &[("model", "other")]) == 6.0
    })
    .await;
    assert_eq!(
        value(&samples, "streamgate_requests_total", &demo),
        n as f64,
        "{text}"
    );
    assert_eq!(
        value(&samples, "streamgate_requests_total", &[("model", "other")]),
        6.0
    );
    let scrapes = value(
        &samples,
        "streamgate_requests_total",
        &[("door", "metrics")],
    );
    assert_eq!(
        value(&samples, "streamgate_requests_total", &[]) - requests_before,
        (n + 6) as f64 + scrapes
            - value(&before, "streamgate_requests_total", &[("door", "metrics")]),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "streamgate_time_to_first_token_seconds_count",
            &route
        ),
        n as f64
    );
    assert_eq!(
        value(&samples, "streamgate_stream_duration_seconds_count", &route),
        n as f64
    );
    assert!(value(&samples, "streamgate_inter_token_gap_seconds_count", &route) >= n as f64);
    assert_eq!(
        value(&samples, "streamgate_attempts_total", &route),
        n as f64
    );
    assert!(
        value(
            &samples,
            "streamgate_tokens_total",
            &[
                ("route", "anthropic/tool_use_with_text"),
                ("direction", "output"),
                ("estimated", "false")
            ]
        ) > 0.0
    );
    assert!(
        value(
            &samples,
            "streamgate_request_duration_seconds_count",
            &[("door", "openai")]
        ) >= (n + 6) as f64
    );
    for word in &made_up {
        assert!(
            !text.contains(word.as_str()),
            "{word} became a label: {text}"
        );
    }
    // Routed by a client's own model string: counted under its provider only.
    // (The breaker gauges list every configured alias's routes: only the request path's
    // families are checked here.)
    for (name, labels, _) in &samples {
        if name.starts_with("streamgate_breaker") {
            continue;
        }
        if let Some(route) = labels.get("route") {
            assert!(
                route == "none"
                    || route == "anthropic/tool_use_with_text"
                    || route.ends_with("/other"),
                "{route}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_continuations_are_counted_by_reason() {
    capture();
    let h = gw::start_with(|config| {
        config.models.insert(
            "flaky".into(),
            streamgate::config::ModelConfig {
                route: "openai/times=1,reset_after=20:text_long_obfuscation".into(),
                fallbacks: Vec::new(),
                reasoning: None,
                hedge_after_ms: None,
                max_output_tokens: None,
                max_n: None,
            },
        );
        config.streaming.retry_policy.backoff_ms = 1;
    })
    .await;
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &gw::chat_body(Dialect::OpenAi, "flaky", true),
        )
        .await;
    let id = id_of(&r);
    gw::body_bytes(r).await;
    let f = &access_lines(&id, 1).await[0]["fields"];
    assert_eq!(f["outcome"], "ok", "{f}");
    assert_eq!(f["attempts"], 2, "{f}");
    // The engine's lines about this answer (run in the body's own task) are in its span.
    let engine: Vec<Value> = capture()
        .engine
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id.as_str()))
        })
        .collect();
    assert!(
        engine.iter().any(|l| l["fields"]["message"] == "retrying"),
        "{engine:?} {:?}",
        capture().engine.lines()
    );
    assert!(
        engine
            .iter()
            .any(|l| l["fields"]["message"] == "attempt failed"),
        "{engine:?}"
    );
    let route = "openai/times=1,reset_after=20:text_long_obfuscation";
    let (text, samples) = scrape_until(&h, |s| {
        value(s, "streamgate_requests_total", &[("model", "flaky")]) == 1.0
    })
    .await;
    assert_eq!(
        value(&samples, "streamgate_attempts_total", &[("route", route)]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&samples, "streamgate_retries_total", &[("route", route)]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "streamgate_continuations_total",
            &[("route", route)]
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_connection_logs_each_stream_and_itself() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    capture();
    let h = gw::start().await;
    let request = format!("ws://{}/v1/ws", h.gateway)
        .into_client_request()
        .unwrap();
    let (mut ws, response) =
        tokio::time::timeout(gw::BOUND, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    let connection = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_v7(&connection);
    let streams = 2;
    let mut request_ids = Vec::new();
    for _ in 0..streams {
        let start = json!({
            "op": "start",
            "dialect": "openai",
            "request": gw::chat_body(Dialect::OpenAi, "demo", true),
        });
        ws.send(Message::Text(start.to_string().into()))
            .await
            .unwrap();
        // Until this stream's end: its stream.start names its request id.
        loop {
            let message = tokio::time::timeout(gw::BOUND, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            // The envelope itself with `"op":"event"` added (docs/websocket.md).
            let event = &frame;
            if event["type"] == "stream.start" {
                request_ids.push(event["request_id"].as_str().unwrap().to_owned());
            }
            if event["type"] == "stream.end" {
                break;
            }
        }
    }
    assert_eq!(request_ids.len(), streams, "a stream.start per stream");
    for id in &request_ids {
        assert_v7(id);
        assert_ne!(id, &connection);
        let lines = access_lines(id, 1).await;
        assert_eq!(lines.len(), 1, "{id}");
        let f = &lines[0]["fields"];
        assert_eq!(f["door"], "websocket");
        assert_eq!(f["model"], "\"demo\"");
        assert_eq!(f["outcome"], "ok", "{f}");
        assert_eq!(f["status"], 200);
        assert!(f["ttft_ms"].as_u64().is_some(), "{f}");
    }
    // The connection's own line comes when it closes, not before.
    assert!(access_lines_now(&connection).is_empty());
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(gw::BOUND, ws.next()).await {}
    let lines = access_lines(&connection, 1).await;
    assert_eq!(lines.len(), 1);
    let f = &lines[0]["fields"];
    assert_eq!(f["door"], "websocket");
    assert_eq!(f["path"], "/v1/ws");
    assert_eq!(f["status"], 101);
    assert_eq!(f["outcome"], "ok", "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_only_metrics_without_a_key() {
    capture();
    // A free port now (the gateway binds it a moment later).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = gw::start_with(|c| c.server.metrics_listen = Some(addr)).await;
    let r = h
        .chat(
            Dialect::Anthropic,
            &[],
            &gw::chat_body(Dialect::Anthropic, "demo", false),
        )
        .await;
    assert_eq!(r.status(), 200);
    gw::body_bytes(r).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let deadline = tokio::time::Instant::now() + gw::BOUND;
    let samples = loop {
        let r = h.client.get(url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_v7(&id_of(&r));
        let samples = parse_exposition(&r.text().await.unwrap());
        let counted = value(
            &samples,
            "streamgate_requests_total",
            &[("door", "anthropic"), ("model", "demo")],
        );
        if counted == 1.0 || tokio::time::Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        value(
            &samples,
            "streamgate_requests_total",
            &[("door", "anthropic"), ("model", "demo")]
        ),
        1.0
    );
    // Nothing else is served there.
    for path in ["/admin/routes", "/v1/models", "/healthz"] {
        let r = h.client.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_v7(&id_of(&r));
    }
}

/// `streamgate serve` with `[log] format = "json"`: logging starts from the config file, so the
/// startup lines and the access line are JSON, on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_as_its_config_says() {
    use std::io::BufRead;
    let replay = streamgate::replay::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = replay.url();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\
         [providers.anthropic]\ndialect = \"anthropic\"\nbase_url = \"{url}\"\n\
         [streams.journal]\ndir = {:?}\n",
        dir.path().join("journal")
    );
    let path = dir.path().join("streamgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = gw::client();
    let deadline = tokio::time::Instant::now() + gw::BOUND;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-request-id", "from-the-client.1")
        .body(gw::chat_body(Dialect::Anthropic, "anthropic/text_basic", true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "from-the-client.1");
    gw::body_bytes(r).await;
    let access = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("streamgate::access"))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access line: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.lock().unwrap().clone();
    // Every line is JSON: the subscriber was made from [log], not before it.
    for line in &all {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(
        all.iter().any(|l| l.contains("streamgate listening")),
        "{all:?}"
    );
    let access: Value = serde_json::from_str(&access).unwrap();
    assert_eq!(access["fields"]["request_id"], "from-the-client.1");
    assert_eq!(access["fields"]["outcome"], "ok");
    assert_eq!(access["span"]["request_id"], "from-the-client.1");
    // The upstream got the client's id.
    assert!(
        replay
            .requests()
            .iter()
            .any(|r| r.header("x-request-id") == Some("from-the-client.1"))
    );
}

/// `[server] metrics = false` and `[log] access = false` (what docs/performance.md measures
/// against): answers are the same, `/metrics` is a 404 with a request id, and no access line
/// is written, for seeded requests over every door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_lines_can_be_turned_off() {
    capture();
    let h = gw::start_with(|c| {
        c.server.metrics = false;
        c.log.access = false;
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(0x0ff);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let door = Dialect::ALL[rng.usize(..Dialect::ALL.len())];
        let stream = rng.bool();
        let r = h
            .chat(door, &[], &gw::chat_body(door, "demo", stream))
            .await;
        assert_eq!(r.status(), 200, "{door:?}");
        ids.push(id_of(&r));
        gw::body_bytes(r).await;
    }
    let r = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_v7(&id_of(&r));
    // Lines of other tests' gateways may be written meanwhile: only these ids matter, and a
    // line of theirs would have been written by now (as `access_lines` waits for it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in &ids {
        assert!(access_lines_now(id).is_empty(), "{id}");
    }
}
