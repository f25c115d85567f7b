//! Reloading the configuration without a restart (`POST /admin/reload`, `SIGHUP`), through
//! real sockets: a running stream finishes on the configuration it started with, the next
//! request uses the new one, a file with problems changes nothing and lists them all, the
//! limiter's counts and open breakers survive, concurrent reloads are never seen half-done.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use providers::Dialect;
use serde_json::Value;
use streamgate::config::Config;
use streamgate::replay::{self, Replay};
use streamgate::server::AppState;
use tokio::sync::oneshot;

const DOOR: Dialect = Dialect::Anthropic;

/// A gateway in this process serving a configuration file that the test rewrites.
struct Gateway {
    replay: Replay,
    addr: SocketAddr,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Gateway {
    /// Serves `tables` (TOML after the replay's `[providers]`).
    async fn start(tables: &str) -> Gateway {
        let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut gateway = Gateway {
            replay,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: gw::client(),
            dir,
            _stop: oneshot::channel().0,
        };
        gateway.write(tables);
        let config = Config::load(Some(&gateway.path())).unwrap();
        let state = AppState::new(config).unwrap();
        state.engine.set_source(gateway.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        gateway.addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(streamgate::server::serve(state, listener, async move {
            let _ = rx.await;
        }));
        gateway._stop = tx;
        gateway
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("streamgate.toml")
    }

    /// Replaces the file (written aside, then renamed: a reload never reads half a file).
    fn write(&self, tables: &str) {
        let journal = self.dir.path().join("journal");
        let text = format!(
            "{}{tables}\n[streams.journal]\ndir = {journal:?}\n",
            process::replay_providers(&self.replay.url())
        );
        let aside = self.dir.path().join("next.toml");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, self.path()).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn reload_with(&self, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.client.post(self.url("/admin/reload"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, gw::json_of(response).await)
    }

    async fn reload(&self) -> Value {
        let (status, report) = self.reload_with(&[]).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["applied"], true, "{report}");
        report
    }

    async fn send(&self, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(gw::door_path(DOOR)))
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(DOOR, model, true)).unwrap());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// What a client sees of a whole answer for `model` (which must succeed).
    async fn seen(&self, model: &str) -> gw::Seen {
        let response = self.send(model, &[]).await;
        assert_eq!(response.status(), 200, "{model}");
        seen_of(gw::body_bytes(response).await)
    }

    /// The models the replay was asked for, in order.
    fn upstream_models(&self) -> Vec<String> {
        self.replay
            .requests()
            .iter()
            .filter_map(|r| r.model().map(str::to_owned))
            .collect()
    }
}

fn seen_of(body: Vec<u8>) -> gw::Seen {
    let (events, end) = gw::decode(DOOR, &body);
    assert!(end.is_ok(), "the answer broke: {end:?}");
    gw::seen_events(&events, true)
}

fn alias(name: &str, route: &str) -> String {
    format!("[models.{name}]\nroute = \"{route}\"\n")
}

const SLOW: &str = "anthropic/drip=300:text_basic";

#[tokio::test]
async fn an_alias_moves_while_a_stream_runs_on_it() {
    let g = Gateway::start(&alias("x", SLOW)).await;
    let old = g.seen("anthropic/text_basic").await;
    let new = g.seen("anthropic/tool_use_only").await;
    assert_ne!(old, new);
    let before = g.upstream_models().len();

    let slow = g.send("x", &[]).await;
    assert_eq!(slow.status(), 200);
    let mut body = slow.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().to_vec();

    g.write(&alias("x", "anthropic/tool_use_only"));
    let report = g.reload().await;
    assert_eq!(
        report["changes"]["aliases"]["changed"],
        serde_json::json!(["x"])
    );
    assert_eq!(
        report["changes"]["routes"]["added"],
        serde_json::json!(["anthropic/tool_use_only"])
    );
    assert_eq!(
        report["changes"]["routes"]["removed"],
        serde_json::json!([SLOW])
    );
    assert_eq!(report["needs_restart"], serde_json::json!([]));

    // The next request takes the new route while the old stream still runs.
    assert_eq!(g.seen("x").await, new);
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        seen_of(got),
        old,
        "the running stream is whole, on its old route"
    );
    assert_eq!(
        g.upstream_models()[before..],
        ["drip=300:text_basic", "tool_use_only"],
        "one upstream request each: the old stream was neither retried nor moved"
    );
}

#[tokio::test]
async fn a_file_with_problems_changes_nothing_and_lists_them_all() {
    let good = alias("x", "anthropic/text_basic");
    let g = Gateway::start(&good).await;
    let old = g.seen("x").await;
    g.write(&format!(
        "{}{}[providers.bad]\ndialect = \"openai\"\nbase_url = \"ftp://nowhere\"\n\
         [keys.k]\nenv = \"STREAMGATE_TEST_RELOAD_SURELY_UNSET\"\n\
         [server]\nmax_connections = 0\n",
        alias("x", "nope/m"),
        alias("y", "noslash"),
    ));
    let (status, report) = g.reload_with(&[]).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["applied"], false);
    assert_eq!(report["refused"], "invalid");
    let errors: Vec<String> = serde_json::from_value(report["errors"].clone()).unwrap();
    for needle in [
        "\"nope/m\"",
        "\"noslash\"",
        "providers.bad.base_url",
        "STREAMGATE_TEST_RELOAD_SURELY_UNSET",
        "server.max_connections",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle} not in {errors:?}"
        );
    }
    assert_eq!(errors.len(), 5, "{errors:?}");
    // Nothing applied: still the old route, and no gateway key required.
    assert_eq!(g.seen("x").await, old);
    assert_eq!(g.upstream_models().last().unwrap(), "text_basic");
    // A TOML error is one problem, and changes nothing either.
    g.write("[models.x\n");
    let (status, report) = g.reload_with(&[]).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1);
    assert_eq!(g.seen("x").await, old);
}

#[tokio::test]
async fn settings_that_need_a_restart_keep_their_running_value() {
    let g = Gateway::start(&alias("x", "anthropic/text_basic")).await;
    g.write(&format!(
        "{}[server]\nmax_connections = 5\nmax_body_bytes = 64\n[streams]\nmax_live = 3\n",
        alias("x", "anthropic/text_basic")
    ));
    let report = g.reload().await;
    assert_eq!(
        report["needs_restart"],
        serde_json::json!(["server.max_connections", "streams"])
    );
    assert_eq!(
        report["changes"]["settings"],
        serde_json::json!(["server.max_body_bytes"])
    );
    // The body limit applies at once: a chat request is larger than 64 bytes.
    assert_eq!(g.send("x", &[]).await.status(), 413);
}

#[tokio::test]
async fn the_limiter_keeps_its_counts_and_running_streams() {
    let limits = "[limits.per_key]\nrequests_per_minute = 3\nconcurrent_streams = 1\n";
    let g = Gateway::start(&format!("{}{limits}", alias("x", SLOW))).await;
    let slow = g.send("x", &[]).await;
    assert_eq!(slow.status(), 200);
    g.write(&format!(
        "{}{}{limits}",
        alias("x", SLOW),
        alias("y", "anthropic/text_basic")
    ));
    g.reload().await;
    // The slow stream still holds the key's one stream slot.
    assert_eq!(g.send("y", &[]).await.status(), 429);
    seen_of(gw::body_bytes(slow).await);
    assert_eq!(g.send("y", &[]).await.status(), 200);
    assert_eq!(g.send("y", &[]).await.status(), 200);
    g.write(&format!(
        "{}{}{limits}",
        alias("x", "anthropic/text_basic"),
        alias("y", "anthropic/text_basic")
    ));
    g.reload().await;
    // Three requests this minute (the refused one did not count): the fourth is refused.
    let refused = g.send("y", &[]).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn an_open_breaker_stays_open_across_a_reload() {
    let breaker = "[streaming.retryPolicy]\nmaxAttempts = 1\n\
                   [streaming.circuitBreaker]\nfailureThreshold = 1\ncooldownMs = 600000\n";
    let failing = "anthropic/status=500:text_basic";
    let g = Gateway::start(&format!("{}{breaker}", alias("f", failing))).await;
    assert!(!g.send("f", &[]).await.status().is_success());
    let asked = g.upstream_models().len();
    let routes = |v: Value| v["routes"].as_array().cloned().unwrap_or_default();
    let state_of = |all: Vec<Value>| {
        all.into_iter()
            .find(|r| r["route"] == failing)
            .map(|r| r["state"].clone())
    };
    let admin = g.client.get(g.url("/admin/routes")).send().await.unwrap();
    let admin = gw::json_of(admin).await;
    assert_eq!(state_of(routes(admin)), Some(Value::from("open")));

    g.write(&format!(
        "{}{}{breaker}",
        alias("f", failing),
        alias("g", "anthropic/text_basic")
    ));
    g.reload().await;
    let admin = g.client.get(g.url("/admin/routes")).send().await.unwrap();
    let admin = gw::json_of(admin).await;
    assert_eq!(state_of(routes(admin)), Some(Value::from("open")));
    assert!(!g.send("f", &[]).await.status().is_success());
    assert_eq!(
        g.upstream_models().len(),
        asked,
        "the open breaker kept the request from the upstream"
    );
}

#[tokio::test]
async fn the_admin_key_guards_reload() {
    let secret = "admin-secret-for-reload";
    let hash = streamgate::keys::hex(&streamgate::keys::sha256(secret));
    let tables = format!(
        "{}[server]\nadmin_key_sha256 = \"{hash}\"\n",
        alias("x", "anthropic/text_basic")
    );
    let g = Gateway::start(&tables).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("x-api-key", secret)],
    ] {
        let (status, _) = g.reload_with(&headers).await;
        assert_eq!(status, 401, "{headers:?}");
    }
    let bearer = format!("Bearer {secret}");
    let (status, report) = g.reload_with(&[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{report}");
}

#[tokio::test]
async fn a_built_in_configuration_cannot_be_reloaded() {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut config = replay.config();
    let journal = tempfile::tempdir().unwrap();
    config.streams.journal.dir = journal.path().to_owned();
    let (addr, _stop) = gw::serve_gateway(config).await;
    let response = gw::client()
        .post(format!("http://{addr}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let report = gw::json_of(response).await;
    assert_eq!(report["refused"], "no_file");
    assert!(report["errors"][0].as_str().unwrap().contains("no file"));
}

/// Reloads alternate two configurations while clients ask for their aliases: with P the key
/// may use `p` (routed to `text_basic`), with Q only `q` (routed to `text_simple`). A request
/// sees one of them whole: 200 with its alias's own answer, or 403 (the key may not use that
/// alias), never an unknown model or another alias's answer.
#[tokio::test]
async fn concurrent_reloads_are_never_seen_half_done() {
    let secret = "sk-reload-client";
    let hash = streamgate::keys::hex(&streamgate::keys::sha256(secret));
    let config = |allowed: &str, alias_name: &str, route: &str| {
        format!(
            "{}[keys.k]\nsha256 = \"{hash}\"\nmodels = [\"{allowed}\"]\n",
            alias(alias_name, route)
        )
    };
    let p = config("p", "p", "anthropic/text_basic");
    let q = config("q", "q", "anthropic/text_simple");
    let g = std::sync::Arc::new(Gateway::start(&p).await);
    let key = [("x-api-key", secret)];
    let seen_p = seen_of(gw::body_bytes(g.send("p", &key).await).await);
    g.write(&q);
    g.reload().await;
    let seen_q = seen_of(gw::body_bytes(g.send("q", &key).await).await);
    assert_ne!(seen_p, seen_q);

    let reloads = {
        let g = std::sync::Arc::clone(&g);
        tokio::spawn(async move {
            for i in 0..16 {
                g.write(if i % 2 == 0 { &p } else { &q });
                g.reload().await;
            }
        })
    };
    let mut clients = Vec::new();
    for worker in 0..3u64 {
        let g = std::sync::Arc::clone(&g);
        let (seen_p, seen_q) = (seen_p.clone(), seen_q.clone());
        clients.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ worker;
            let mut outcomes = [0usize; 2];
            for _ in 0..12 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (model, want) = if seed >> 63 == 0 {
                    ("p", &seen_p)
                } else {
                    ("q", &seen_q)
                };
                let response = g.send(model, &[("x-api-key", secret)]).await;
                match response.status().as_u16() {
                    200 => {
                        let got = seen_of(gw::body_bytes(response).await);
                        assert_eq!(&got, want, "{model} answered with another alias's route");
                        outcomes[0] += 1;
                    }
                    403 => outcomes[1] += 1,
                    other => {
                        let body = response.text().await.unwrap_or_default();
                        panic!("{model}: {other} {body}");
                    }
                }
            }
            outcomes
        }));
    }
    reloads.await.unwrap();
    for client in clients {
        let outcomes = client.await.unwrap();
        assert_eq!(outcomes.iter().sum::<usize>(), 12);
    }
    // The last reload applied Q.
    assert_eq!(g.send("p", &key).await.status(), 403);
    assert_eq!(
        seen_of(gw::body_bytes(g.send("q", &key).await).await),
        seen_q
    );
}

/// `SIGHUP` reloads a gateway process from its file.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_a_gateway_process() {
    let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let providers = process::replay_providers(&replay.url());
    let before = alias("x", "anthropic/text_basic");
    let gateway = process::GatewayProcess::serve(&format!("{providers}{before}")).await;
    let client = gw::client();
    let ask = || async {
        let response = client
            .post(format!("{}/v1/messages", gateway.url))
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&gw::chat_body(DOOR, "x", true)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        gw::body_bytes(response).await;
        replay
            .requests()
            .last()
            .and_then(|r| r.model().map(str::to_owned))
    };
    assert_eq!(ask().await.as_deref(), Some("text_basic"));
    let path = gateway.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let after = text.replace(&before, &alias("x", "anthropic/text_simple"));
    assert_ne!(text, after);
    std::fs::write(&path, after).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if ask().await.as_deref() == Some("text_simple") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process did not reload on SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request whose head arrived (and was authenticated) before a reload and whose body after
/// is judged whole by the configuration its answer starts with: with Q the key may not use
/// `p` (403), never "p is allowed" from P with "p is unknown" from Q.
#[tokio::test]
async fn a_request_straddling_a_reload_sees_one_configuration() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let secret = "sk-reload-straddle";
    let hash = streamgate::keys::hex(&streamgate::keys::sha256(secret));
    let config = |name: &str, route: &str| {
        format!(
            "{}[keys.k]\nsha256 = \"{hash}\"\nmodels = [\"{name}\"]\n",
            alias(name, route)
        )
    };
    let g = Gateway::start(&config("p", "anthropic/text_basic")).await;
    let body = serde_json::to_vec(&gw::chat_body(DOOR, "p", false)).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut socket = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\nx-api-key: {secret}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        g.addr,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(first).await.unwrap();
    socket.flush().await.unwrap();
    // Let the gateway authenticate and start reading the body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    g.write(&config("q", "anthropic/text_simple"));
    g.reload().await;
    socket.write_all(rest).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(gw::BOUND, socket.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        g.upstream_models().is_empty(),
        "nothing reached the upstream"
    );
}

/// A stream that breaks after a reload removed its provider is continued on that provider:
/// the answer keeps the configuration it started with for every later attempt.
#[tokio::test]
async fn a_stream_broken_after_a_reload_continues_on_its_own_configuration() {
    let old_provider = |g: &Gateway| {
        format!(
            "[providers.old]\ndialect = \"anthropic\"\nbase_url = \"{}\"\n",
            g.replay.url()
        )
    };
    let breaking = "old/times=1,drip=200,reset_after=5:text_basic";
    let g = Gateway::start(&alias("x", "anthropic/text_basic")).await;
    let whole = g.seen("anthropic/text_basic").await;
    g.write(&format!("{}{}", old_provider(&g), alias("x", breaking)));
    let report = g.reload().await;
    assert_eq!(
        report["changes"]["providers"]["added"],
        serde_json::json!(["old"])
    );

    let response = g.send("x", &[]).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    g.write(&alias("x", "anthropic/tool_use_only"));
    let report = g.reload().await;
    assert_eq!(
        report["changes"]["providers"]["removed"],
        serde_json::json!(["old"])
    );
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    let seen = seen_of(got);
    assert_eq!(seen.text, whole.text, "the answer is whole");
    assert_eq!(seen.finish, whole.finish);
    let asked: Vec<String> = g
        .upstream_models()
        .into_iter()
        .filter(|m| m.ends_with(":text_basic"))
        .collect();
    assert_eq!(
        asked.len(),
        2,
        "the break was continued on the removed provider: {asked:?}"
    );
}
