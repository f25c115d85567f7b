//! The codec's hot path, repeated, for counting its instructions per chunk (a measuring tool,
//! not a product): decodes one recorded OpenAI Chat stream and re-encodes its events to
//! OpenAI (`same`) or Anthropic (`cross`), `PASSES` times, as `benches/codec.rs` does per
//! iteration. Instructions per chunk are the difference of two pass counts under callgrind,
//! divided by the passes between them and the stream's `data:` lines:
//!
//!     cargo build --release --example codec_passes
//!     valgrind --tool=callgrind target/release/examples/codec_passes FILE 210 same
//!     valgrind --tool=callgrind target/release/examples/codec_passes FILE 10 same
//!     # ("Collected" at 210 - at 10) / 200 / (data: lines in FILE)
//!
//! With `CODEC_OUT=PATH` it also writes the last pass's output there, to compare two builds
//! byte for byte.

use std::process::ExitCode;

use providers::{AgentEvent, Dialect, EncodeOptions, StreamDecoder, StreamEncoder};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(Ok(passes))) = (args.get(1), args.get(2).map(|p| p.parse::<usize>()))
    else {
        eprintln!("usage: codec_passes FILE PASSES [same|cross]");
        return ExitCode::from(2);
    };
    let to = match args.get(3).map(String::as_str) {
        Some("cross") => Dialect::Anthropic,
        _ => Dialect::OpenAi,
    };
    let body = match std::fs::read(file) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut events: Vec<AgentEvent> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..passes {
        events.clear();
        let mut decoder = StreamDecoder::new(Dialect::OpenAi);
        // A broken recording is measured as it decodes: the path is the point, not the result.
        let _ = decoder.feed(std::hint::black_box(&body), &mut events);
        let _ = decoder.finish(&mut events);
        out.clear();
        let mut encoder = StreamEncoder::new(
            to,
            EncodeOptions {
                include_usage: true,
            },
        );
        for event in &events {
            let _ = encoder.event(event, &mut out);
        }
    }
    if let Ok(path) = std::env::var("CODEC_OUT")
        && let Err(e) = std::fs::write(&path, &out)
    {
        eprintln!("{path}: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
