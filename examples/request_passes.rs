//! A request's path through the gateway's JSON, repeated, for counting its instructions per
//! request (a measuring tool, not a product): reads a request body as its door does
//! (`providers::parse::parse`) and writes the upstream body for a provider of `UPSTREAM`'s
//! dialect, `PASSES` times. `FILE` is a request body, or a recorded Claude Code request
//! (`fixtures/claude_code/*.json`, whose `body` is taken); `--grow BYTES` repeats its
//! messages until the body is at least that long, to stand for a long conversation.
//!
//!     cargo build --release --example request_passes
//!     valgrind --tool=callgrind target/release/examples/request_passes \
//!         fixtures/claude_code/tool_loop_budgeted.json 110 anthropic anthropic --grow 40000
//!     # the same with 10 passes; ("Collected" at 110 - at 10) / 100
//!
//! With `REQUEST_OUT=PATH` it also writes the upstream body there, to compare two builds byte
//! for byte.

use std::process::ExitCode;

use providers::Dialect;
use providers::request::{AnthropicDefaults, Capabilities};
use serde_json::Value;

fn dialect(name: Option<&String>) -> Option<Dialect> {
    Dialect::ALL
        .into_iter()
        .find(|d| name.is_some_and(|n| d.as_str().starts_with(n.as_str())))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(Ok(passes)), Some(door), Some(upstream)) = (
        args.get(1),
        args.get(2).map(|p| p.parse::<usize>()),
        dialect(args.get(3)),
        dialect(args.get(4)),
    ) else {
        eprintln!("usage: request_passes FILE PASSES DOOR UPSTREAM [--grow BYTES]");
        return ExitCode::from(2);
    };
    let grow = match args.get(5).map(String::as_str) {
        Some("--grow") => args.get(6).and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    };
    let mut body: Value = match std::fs::read(file).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(inner) = body.get_mut("body").map(Value::take) {
        body = inner;
    }
    let turns = body["messages"].as_array().cloned().unwrap_or_default();
    while !turns.is_empty() && serde_json::to_vec(&body).map_or(0, |b| b.len()) < grow {
        if let Some(messages) = body["messages"].as_array_mut() {
            messages.extend(turns.iter().cloned());
        }
    }
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return ExitCode::from(2);
    };
    let mut out = Vec::new();
    for _ in 0..passes {
        let request = match providers::parse::parse(door, &bytes, 1 << 20) {
            Ok(request) => request,
            Err(e) => {
                eprintln!("{file} at the {} door: {e}", door.as_str());
                return ExitCode::from(1);
            }
        };
        out = match upstream.wire().upstream_request(
            &request,
            &request.model,
            &AnthropicDefaults::default(),
            Capabilities::default(),
        ) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{file} for {}: {e}", upstream.as_str());
                return ExitCode::from(1);
            }
        };
    }
    println!(
        "request {} bytes, upstream body {} bytes",
        bytes.len(),
        out.len()
    );
    if let Ok(path) = std::env::var("REQUEST_OUT")
        && let Err(e) = std::fs::write(&path, &out)
    {
        eprintln!("{path}: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
