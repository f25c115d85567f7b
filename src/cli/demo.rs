//! `streamgate demo`: the replay upstream and the gateway over it, in one process, no keys and
//! no network. Prints how to call it, then serves until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use providers::assemble::BlockContent;
use providers::{Assembler, Dialect, StreamDecoder};

use super::serve::{ServeError, init_logging, shutdown_signal};
use crate::config::Config;
use crate::replay;
use crate::server;

/// Runs the demo. With `json`, standard output gets exactly one line,
/// `{"gateway":"http://HOST:P","replay":"http://HOST:Q"}`; logs always go to stderr.
/// With `chaos`, the replay upstream misbehaves on that fraction of the requests (seeded from
/// the clock; the seed is logged) and the gateway retries more.
/// With `journal`, streams are journaled there and survive a restart; without, in a temporary
/// directory removed at exit. A non-loopback `listen` needs `allow_open` (`--allow-open`).
pub fn run(
    listen: SocketAddr,
    json: bool,
    chaos: Option<f64>,
    journal: Option<PathBuf>,
    allow_open: bool,
) -> Result<(), ServeError> {
    let _logs = init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let replay = replay::spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let mut config = replay.config();
        config.server.listen = listen;
        config.server.open |= allow_open;
        server::exposure::check(&config)?;
        if let Some(rate) = chaos {
            let seed = crate::engine::unix_now();
            replay.set_chaos(rate, seed);
            config.streaming.retry_policy.max_attempts = 6;
            tracing::info!(rate, seed, "chaos: the replay upstream fails at random");
        }
        let temporary = journal.is_none().then(|| {
            std::env::temp_dir().join(format!(
                "streamgate-demo-{}-{}",
                std::process::id(),
                crate::engine::unix_now_ms()
            ))
        });
        if let Some(dir) = journal.as_ref().or(temporary.as_ref()) {
            config.streams.journal.dir.clone_from(dir);
        }
        let text_config = (!json).then(|| config.clone());
        let state = server::AppState::new(config)?;
        let stop = shutdown_signal();
        let listener = server::bind(listen)?;
        let gateway = format!("http://{}", listener.local_addr()?);
        let text = match text_config {
            None => format!(
                "{}\n",
                serde_json::json!({"gateway": gateway, "replay": replay.url()})
            ),
            Some(config) => instructions(&gateway, &replay.url(), &config),
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(gateway = %gateway, replay = %replay.url(), "streamgate demo listening");
        server::serve(state, listener, stop).await?;
        replay.shutdown().await?;
        if let Some(dir) = temporary {
            // Best effort: a leftover temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    })
}

/// What each alias of `config` does, one line each: its routes, what the recording behind its
/// route holds, and its limits (read from the configuration the demo serves).
fn aliases(config: &Config) -> String {
    config
        .models
        .iter()
        .map(|(alias, model)| {
            let mut what = vec![format!("{alias} -> {}", model.route)];
            if let Some(recording) = describe_recording(&model.route) {
                what.push(format!("replays {recording}"));
            }
            if !model.fallbacks.is_empty() {
                what.push(format!("falls back to {}", model.fallbacks.join(", ")));
            }
            if let Some(ms) = model.hedge_after_ms {
                what.push(format!("hedged after {ms} ms"));
            }
            if let Some(quotas) = config.limits.models.get(alias) {
                if let Some(rpm) = quotas.requests_per_minute {
                    what.push(format!(
                        "at most {rpm} requests a minute: one more gets the gateway's own 429"
                    ));
                }
                if let Some(tpm) = quotas.tokens_per_minute {
                    what.push(format!("at most {tpm} tokens a minute"));
                }
                if let Some(n) = quotas.concurrent_streams {
                    what.push(format!("at most {n} streams at once"));
                }
            }
            what.join("; ")
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// What the recording a demo route (`DIALECT/FIXTURE`) names holds: reasoning, text, tool
/// calls, as its decoded events say.
fn describe_recording(route: &str) -> Option<String> {
    let (dialect, name) = route.split_once('/')?;
    let dialect: Dialect = dialect.parse().ok()?;
    let body = replay::fixture(dialect, name)?;
    let message = Assembler::assemble(&StreamDecoder::decode_all(dialect, body).0);
    let mut parts: Vec<String> = Vec::new();
    for block in &message.blocks {
        let part = match &block.content {
            BlockContent::Reasoning { .. } => "reasoning",
            BlockContent::Text { .. } => "text",
            BlockContent::Refusal { .. } => "a refusal",
            _ => continue,
        };
        if !parts.iter().any(|p| p == part) {
            parts.push(part.to_owned());
        }
    }
    let calls = message.tool_calls();
    if !calls.is_empty() {
        let names: Vec<&str> = calls.iter().map(|(_, name, _)| *name).collect();
        parts.push(format!(
            "{} tool call{} ({})",
            calls.len(),
            if calls.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    Some(format!(
        "a recorded {} answer: {}",
        dialect.as_str(),
        parts.join(", ")
    ))
}

/// The how-to-call-it text: every door and admin endpoint, every alias of `config` (the
/// demo's own) with what it does, and every recording.
fn instructions(gateway: &str, replay: &str, config: &Config) -> String {
    let models = providers::dialects::all()
        .flat_map(|w| {
            let d = w.dialect();
            replay::fixture_names(d)
                .into_iter()
                .map(move |n| format!("{}/{n}", d.as_str()))
        })
        .collect::<Vec<_>>()
        .join("\n    ");
    let aliases = aliases(config);
    format!(
        r#"streamgate demo: the gateway at {gateway}, over a replay upstream at {replay}
serving recorded OpenAI (Chat Completions and Responses) and Anthropic streams (no keys, no
network). Ctrl-C stops it (after its streams finish, at most [server] shutdown_grace_ms; a
second Ctrl-C at once).

Doors:
    POST {gateway}/v1/chat/completions          OpenAI Chat Completions (stream or not)
    POST {gateway}/v1/responses                 OpenAI Responses
    POST {gateway}/v1/messages                  Anthropic Messages
    POST {gateway}/v1/messages/count_tokens     Anthropic token count (estimated)
    POST {gateway}/v1/streams                   native Agent Event Stream (SSE, resumable)
    GET  {gateway}/v1/streams/ID                resume it (Last-Event-ID); DELETE cancels it
    GET  {gateway}/v1/ws                        WebSocket door (subprotocol streamgate.v1)
    GET  {gateway}/v1/models                    the models (OpenAI or Anthropic shape)
    GET  {gateway}/healthz                      liveness
    GET  {gateway}/readyz                       readiness, per provider
    GET  {gateway}/metrics                      Prometheus metrics (with the admin routes)
Admin (open on loopback; elsewhere it needs [server] admin_key_env or admin_listen):
    GET  {gateway}/admin/streams                the streams kept (streamgate status --streaming)
    GET  {gateway}/admin/routes                 breakers, recent error rates (streamgate status --routes)
    GET  {gateway}/admin/keys                   gateway keys and their use
    POST {gateway}/admin/reload                 re-read the config file (SIGHUP too; 409 here: built in)

Every door answers for any model: ask the OpenAI door for an Anthropic recording and get an
OpenAI stream, and the reverse.

OpenAI door:
  curl -sN {gateway}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"anthropic/tool_use_with_text","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}'

Anthropic door:
  curl -sN {gateway}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d '{{"model":"openai/tool_calls_parallel","max_tokens":1024,"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'

OpenAI Responses door:
  curl -sN {gateway}/v1/responses -H 'content-type: application/json' \
    -d '{{"model":"anthropic/tool_use_with_text","stream":true,"input":"hi"}}'

Native door (resume with GET /v1/streams/ID and Last-Event-ID, or `streamgate tail ID`):
  curl -sN {gateway}/v1/streams -H 'content-type: application/json' -H 'streamgate-dialect: openai' \
    -d '{{"model":"demo","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'

Python, OpenAI SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{gateway}/v1", api_key="unused")
  for chunk in client.chat.completions.create(model="anthropic/tool_use_with_text", stream=True,
                                               messages=[{{"role": "user", "content": "hi"}}]):
      print(chunk.choices[0].delta if chunk.choices else chunk.usage)
  print(client.responses.create(model="openai-responses/text_basic", input="hi").output_text)

Python, Anthropic SDK:
  import anthropic
  client = anthropic.Anthropic(base_url="{gateway}", api_key="unused")
  with client.messages.stream(model="demo", max_tokens=1024,
                              messages=[{{"role": "user", "content": "hi"}}]) as stream:
      print(stream.get_final_message())

Aliases:
    {aliases}

Models (each is a recording; the question asked does not matter):
    {models}

Faults: put knobs before the recording, e.g. anthropic/slow:text_basic (one frame per 100 ms),
drip=MS, stall, stall_after=N, reset_after=N, error_after=N, status=429,retry_after=2, chunk=N.
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_list_every_recording_of_every_dialect() {
        let text = instructions(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            &Config::default(),
        );
        for w in providers::dialects::all() {
            let d = w.dialect();
            for name in replay::fixture_names(d) {
                assert!(text.contains(&format!("    {d}/{name}\n")), "{d}/{name}");
            }
            assert!(
                w.door_paths().iter().any(|p| text.contains(p)),
                "{d}: no door"
            );
        }
    }

    /// The configuration `streamgate demo` serves (the replay's, at a fake address).
    fn demo_config() -> Config {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let replay = replay::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap();
            let config = replay.config();
            replay.shutdown().await.unwrap();
            config
        })
    }

    #[test]
    fn every_alias_of_the_demo_is_listed_with_what_it_does() {
        let config = demo_config();
        assert!(!config.models.is_empty());
        let text = instructions("http://127.0.0.1:1", "http://127.0.0.1:2", &config);
        for (alias, model) in &config.models {
            let line = text
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with(&format!("{alias} -> {};", model.route))
                })
                .unwrap_or_else(|| panic!("no line for {alias}:\n{text}"));
            let recording = describe_recording(&model.route).expect("a demo route is a recording");
            assert!(line.contains(&recording), "{line}");
            if let Some(rpm) = config
                .limits
                .models
                .get(alias)
                .and_then(|q| q.requests_per_minute)
            {
                assert!(
                    line.contains(&format!("at most {rpm} requests a minute")),
                    "{line}"
                );
            }
        }
        // Derived, not kept by hand: a new alias shows up with its own description.
        let mut more = config.clone();
        let mut extra = config.models.values().next().unwrap().clone();
        extra.route = "openai/tool_calls_parallel".into();
        extra.fallbacks = vec!["anthropic/text_basic".into()];
        more.models.insert("zz-new".into(), extra);
        let text = instructions("http://g", "http://r", &more);
        assert!(
            text.contains("zz-new -> openai/tool_calls_parallel; replays a recorded openai answer"),
            "{text}"
        );
        assert!(
            text.contains("falls back to anthropic/text_basic"),
            "{text}"
        );
    }

    #[test]
    fn recordings_are_described_by_what_they_hold() {
        let thinking = describe_recording("anthropic/thinking_short").unwrap();
        assert!(
            thinking.contains("reasoning") && thinking.contains("text"),
            "{thinking}"
        );
        let calls = describe_recording("openai/tool_calls_parallel").unwrap();
        assert!(calls.contains("tool calls ("), "{calls}");
        assert!(describe_recording("openai/no_such_recording").is_none());
        assert!(describe_recording("nope").is_none());
    }

    #[test]
    fn the_banner_lists_every_door_and_admin_endpoint() {
        let text = instructions("http://g", "http://r", &Config::default());
        for path in [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/streams",
            "/v1/streams/ID",
            "/v1/ws",
            "/v1/models",
            "/healthz",
            "/readyz",
            "/metrics",
            "/admin/streams",
            "/admin/routes",
            "/admin/keys",
            "/admin/reload",
        ] {
            assert!(text.contains(&format!("http://g{path} ")), "{path}");
        }
    }
}
