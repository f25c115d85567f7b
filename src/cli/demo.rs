//! `streamgate demo`: the replay upstream and the gateway over it, in one process, no keys and
//! no network. Prints how to call it, then serves until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::serve::{ServeError, init_logging, shutdown_signal};
use crate::replay::{self, DEMO_ALIASES};
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
    init_logging();
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
        let state = server::AppState::new(config)?;
        let listener = server::bind(listen)?;
        let gateway = format!("http://{}", listener.local_addr()?);
        let text = if json {
            format!(
                "{}\n",
                serde_json::json!({"gateway": gateway, "replay": replay.url()})
            )
        } else {
            instructions(&gateway, &replay.url())
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(gateway = %gateway, replay = %replay.url(), "streamgate demo listening");
        server::serve(state, listener, shutdown_signal()).await?;
        replay.shutdown().await?;
        if let Some(dir) = temporary {
            // Best effort: a leftover temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    })
}

/// The how-to-call-it text.
fn instructions(gateway: &str, replay: &str) -> String {
    let models = providers::dialects::all()
        .flat_map(|w| {
            let d = w.dialect();
            replay::fixture_names(d)
                .into_iter()
                .map(move |n| format!("{}/{n}", d.as_str()))
        })
        .collect::<Vec<_>>()
        .join("\n    ");
    let aliases = DEMO_ALIASES
        .iter()
        .map(|(a, r)| format!("{a} -> {r}"))
        .collect::<Vec<_>>()
        .join("\n    ");
    format!(
        r#"streamgate demo: the gateway at {gateway}, over a replay upstream at {replay}
serving recorded OpenAI (Chat Completions and Responses) and Anthropic streams (no keys, no
network). Ctrl-C stops it.

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
        let text = instructions("http://127.0.0.1:1", "http://127.0.0.1:2");
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
}
