//! Codec throughput on the largest recorded streams: decode+normalize, encode, and the
//! gateway's hot path (decode + re-encode) in the same and the other dialect.
//!
//! Run with `cargo bench --bench codec`. Each case is measured twice, once reported in
//! provider chunks (SSE frames) per second and once in bytes per second; docs/performance.md
//! records the figures.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use providers::{AgentEvent, Dialect, EncodeOptions, StreamDecoder, StreamEncoder};

/// The largest fixtures of each dialect (by bytes), plus typical token streams.
const CASES: &[(Dialect, &str)] = &[
    (
        Dialect::Anthropic,
        "anthropic/pause_turn_web_search_long.sse",
    ),
    (Dialect::Anthropic, "anthropic/web_search_citations.sse"),
    // Typical Anthropic token streams: small text, thinking and tool-argument deltas.
    (Dialect::Anthropic, "anthropic/thinking_signature.sse"),
    (Dialect::Anthropic, "anthropic/tool_use_parallel_3.sse"),
    (Dialect::OpenAi, "openai_chat/text_long_obfuscation.sse"),
    (Dialect::OpenAi, "openai_chat/json_object_long.sse"),
];

/// Number of SSE frames in a body: what a provider calls a chunk.
fn frame_count(body: &[u8]) -> u64 {
    let mut parser = providers::sse::SseParser::new();
    let mut n = 0u64;
    let _ = parser.feed::<providers::sse::SseError>(body, &mut |_| {
        n += 1;
        Ok(())
    });
    n
}

fn decode(dialect: Dialect, body: &[u8], events: &mut Vec<AgentEvent>) {
    events.clear();
    let mut d = StreamDecoder::new(dialect);
    let _ = d.feed(body, events);
    let _ = d.finish(events);
}

fn encode(to: Dialect, events: &[AgentEvent], out: &mut Vec<u8>) {
    out.clear();
    let mut e = StreamEncoder::new(
        to,
        EncodeOptions {
            include_usage: true,
        },
    );
    for ev in events {
        let _ = e.event(ev, out);
    }
}

fn other(d: Dialect) -> Dialect {
    match d {
        Dialect::OpenAi | Dialect::OpenAiResponses => Dialect::Anthropic,
        Dialect::Anthropic => Dialect::OpenAi,
    }
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for unit in ["chunks", "bytes"] {
        let mut group = c.benchmark_group(format!("codec/{unit}"));
        for &(dialect, file) in CASES {
            let Ok(body) = std::fs::read(root.join(file)) else {
                continue;
            };
            let frames = frame_count(&body);
            group.throughput(match unit {
                "chunks" => Throughput::Elements(frames),
                _ => Throughput::Bytes(body.len() as u64),
            });
            let name = file.trim_end_matches(".sse");
            let mut events = Vec::new();
            decode(dialect, &body, &mut events);
            let mut out = Vec::with_capacity(body.len() * 2);

            group.bench_function(format!("decode/{name}"), |b| {
                let mut evs = Vec::new();
                b.iter(|| decode(dialect, black_box(&body), &mut evs));
            });
            group.bench_function(format!("encode_same/{name}"), |b| {
                b.iter(|| encode(dialect, black_box(&events), &mut out));
            });
            for (label, to) in [("same", dialect), ("cross", other(dialect))] {
                group.bench_function(format!("decode+encode_{label}/{name}"), |b| {
                    let mut evs = Vec::new();
                    b.iter(|| {
                        decode(dialect, black_box(&body), &mut evs);
                        encode(to, &evs, &mut out);
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
