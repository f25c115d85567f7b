//! Client-chosen strings in error bodies and logs (issue #10, point 7). Random strings with
//! control characters, newlines, ANSI escapes, quotes and lengths up to 100 KB go through
//! every door's error paths that name a client string: model names, roles, part, block and
//! tool types, reasoning efforts, stream ids, `Last-Event-ID`, `?after=`, the dialect header,
//! request paths. Each answer is a 4xx whose message has no control character and is
//! bounded; and the gateway's log, captured at debug level, has exactly one line per event
//! and no control character in any line, so no string can forge a log line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use providers::Dialect;
use serde_json::{Value, json};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, fmt};

/// Longest error message accepted: a fixed text plus at most one or two shown strings of
/// `providers::untrusted::MAX_SHOWN` characters each (escaped, so up to 6 bytes a char).
const MAX_MESSAGE_BYTES: usize = 2048;

/// Longest log line accepted (a line names a few shown strings at most).
const MAX_LOG_LINE_BYTES: usize = 4096;

/// The log, as the fmt layer writes it.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts events, to compare with the lines written.
struct Counter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for Counter {
    fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A random hostile string: control characters, line breaks, ANSI escapes, quotes,
/// multi-byte letters, sometimes blown up to tens of kilobytes.
fn hostile(rng: &mut fastrand::Rng) -> String {
    const PIECES: [&str; 14] = [
        "a",
        "Z9",
        "\n",
        "\r\n",
        "\u{1b}[31m",
        "\u{0}",
        "\u{7f}",
        "\t",
        "\u{2028}",
        "é",
        "\"",
        "\\",
        "}{",
        " INFO streamgate: forged ",
    ];
    let mut s: String = (0..rng.usize(0..24))
        .map(|_| PIECES[rng.usize(..PIECES.len())])
        .collect();
    if rng.u8(..4) == 0 {
        s = s.repeat(rng.usize(100..4000));
    }
    s
}

/// `s` reduced to what an HTTP header value can carry (visible ASCII, space, tab), so it
/// reaches the gateway at all.
fn header_safe(s: &str) -> String {
    let safe: String = s
        .chars()
        .filter(|c| *c == '\t' || (' '..='~').contains(c))
        .take(8000)
        .collect();
    safe
}

/// `s` percent-encoded for a URL path segment or query value.
fn encoded(s: &str) -> String {
    s.bytes()
        .take(6000)
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One error-path request: method, path, headers, body.
struct Case {
    what: &'static str,
    door: Dialect,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn cases(s: &str) -> Vec<Case> {
    let post = |what, door, path: &str, body: Value| Case {
        what,
        door,
        method: reqwest::Method::POST,
        path: path.to_owned(),
        headers: Vec::new(),
        body: Some(body),
    };
    let openai = "/v1/chat/completions";
    let anthropic = "/v1/messages";
    let hi = json!({"role": "user", "content": "hi"});
    let h = header_safe(s);
    let printable: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    vec![
        post(
            "openai model",
            Dialect::OpenAi,
            openai,
            json!({"model": s, "messages": [hi]}),
        ),
        // A model name the gateway lets through (printable, short) to an upstream that does
        // not know it: the upstream's error, which quotes it, is logged and relayed.
        post(
            "openai model, upstream refusal",
            Dialect::OpenAi,
            openai,
            json!({"model": format!("openai/x{printable}"), "messages": [hi]}),
        ),
        post(
            "openai effort",
            Dialect::OpenAi,
            openai,
            json!({"model": "openai/text_basic", "messages": [hi], "reasoning_effort": s}),
        ),
        post(
            "openai role, to anthropic",
            Dialect::OpenAi,
            openai,
            json!({"model": "anthropic/text_simple", "messages": [{"role": format!("x{s}"), "content": "hi"}]}),
        ),
        post(
            "openai part type, to anthropic",
            Dialect::OpenAi,
            openai,
            json!({"model": "anthropic/text_simple", "messages": [{"role": "user", "content": [{"type": format!("x{s}")}]}]}),
        ),
        post(
            "openai tool call type",
            Dialect::OpenAi,
            openai,
            json!({"model": "openai/text_basic", "messages": [hi, {"role": "assistant", "tool_calls": [{"id": "c", "type": format!("x{s}"), "function": {"name": "f"}}]}]}),
        ),
        post(
            "anthropic model",
            Dialect::Anthropic,
            anthropic,
            json!({"model": s, "max_tokens": 10, "messages": [hi]}),
        ),
        post(
            "anthropic system block type",
            Dialect::Anthropic,
            anthropic,
            json!({"model": "anthropic/text_simple", "max_tokens": 10, "system": [{"type": format!("x{s}"), "text": "x"}], "messages": [hi]}),
        ),
        post(
            "anthropic block type, to openai",
            Dialect::Anthropic,
            anthropic,
            json!({"model": "openai/text_basic", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": format!("x{s}")}]}]}),
        ),
        Case {
            headers: vec![("streamgate-stream-id", format!("{h}!"))],
            ..post(
                "stream id",
                Dialect::OpenAi,
                "/v1/streams",
                json!({"model": "openai/text_basic", "messages": [hi]}),
            )
        },
        Case {
            headers: vec![("streamgate-dialect", format!("x{h}"))],
            ..post(
                "dialect header",
                Dialect::OpenAi,
                "/v1/streams",
                json!({"model": "openai/text_basic", "messages": [hi]}),
            )
        },
        Case {
            what: "last-event-id",
            door: Dialect::OpenAi,
            method: reqwest::Method::GET,
            path: "/v1/streams/some-stream".into(),
            headers: vec![("last-event-id", format!("x{h}"))],
            body: None,
        },
        Case {
            what: "after",
            door: Dialect::OpenAi,
            method: reqwest::Method::GET,
            path: format!("/v1/streams/some-stream?after=x{}", encoded(s)),
            headers: Vec::new(),
            body: None,
        },
        Case {
            what: "path",
            door: Dialect::OpenAi,
            method: reqwest::Method::GET,
            path: format!("/x{}", encoded(s)),
            headers: Vec::new(),
            body: None,
        },
    ]
}

/// The error message of a body of either dialect (both put it at `error.message`).
fn message(body: &Value) -> Option<&str> {
    body["error"]["message"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_stay_escaped_and_bounded_in_errors_and_logs() {
    let buffer = Buffer::default();
    let events = Arc::new(AtomicUsize::new(0));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(tracing_subscriber::EnvFilter::new(
                    "debug,hyper=off,h2=off,reqwest=off,rustls=off",
                )),
        )
        .with(
            Counter(Arc::clone(&events)).with_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=off,h2=off,reqwest=off,rustls=off",
            )),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let h = gw::start().await;
    let mut rng = fastrand::Rng::with_seed(0x7e57);
    let mut checked = 0;
    for _ in 0..12 {
        let s = hostile(&mut rng);
        for case in cases(&s) {
            let mut request = h
                .client
                .request(case.method.clone(), h.url(&case.path))
                .header("content-type", "application/json");
            if case.door == Dialect::Anthropic {
                request = request.header("anthropic-version", "2023-06-01");
            }
            for (name, value) in &case.headers {
                request = request.header(*name, value.as_str());
            }
            if let Some(body) = &case.body {
                request = request.body(serde_json::to_vec(body).unwrap());
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let bytes = response.bytes().await.unwrap();
            let what = format!("{}: {:?}", case.what, s.get(..s.len().min(80)));
            assert!(
                status.is_client_error(),
                "{what}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&bytes)));
            let text = message(&body).unwrap_or_else(|| panic!("{what}: no message in {body}"));
            assert!(!text.chars().any(char::is_control), "{what}: {text:?}");
            assert!(
                text.len() <= MAX_MESSAGE_BYTES,
                "{what}: {} bytes",
                text.len()
            );
            assert!(
                bytes.len() <= 2 * MAX_MESSAGE_BYTES,
                "{what}: body of {} bytes",
                bytes.len()
            );
            checked += 1;
        }
    }
    drop(h);
    // Let the gateway's tasks finish what they were logging.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let log = buffer.0.lock().unwrap().clone();
    let log = String::from_utf8(log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let counted = events.load(Ordering::SeqCst);
    assert!(
        counted > 0,
        "nothing was logged: the check would prove nothing"
    );
    assert_eq!(
        lines.len(),
        counted,
        "a log event spread over several lines:\n{log}"
    );
    for line in &lines {
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.len() <= MAX_LOG_LINE_BYTES,
            "a line of {} bytes",
            line.len()
        );
    }
    assert!(checked > 100);
    eprintln!("{checked} refusals checked, {counted} log lines");
}
