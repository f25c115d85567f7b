//! Codec throughput on the largest recorded streams: decode+normalize, encode, and the
//! gateway's hot path (decode + re-encode) in the same and the other dialect.
//!
//! Run with `cargo bench --bench codec`. Each case is measured twice, once reported in
//! provider chunks (SSE frames) per second and once in bytes per second; docs/performance.md
//! records the figures.
//!
//! The guard of issue #14 (at least 1.5 M OpenAI token chunks per second per core, decode +
//! re-encode) reads the OpenAI token cases: the `openai_chat/*` fixtures and the synthetic
//! streams ([`SYNTHETIC`]). After a run, `python3 benches/summarize.py --check` prints each
//! `decode+encode_same` figure against the target with PASS or FAIL (the cross-dialect one
//! beside it) and exits 1 on a FAIL. It is a benchmark: nothing in CI runs it.

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
    // A short recorded token stream: the per-stream setup weighs on each of its 34 chunks.
    (Dialect::OpenAi, "openai_chat/text_basic.sse"),
];

/// Builds a synthetic stream body.
type Synthesize = fn() -> Vec<u8>;

/// Synthetic OpenAI token streams (name, body), shaped like the recorded fixtures.
const SYNTHETIC: &[(&str, Synthesize)] = &[
    ("synthetic/load_tokens_50", load_tokens_50),
    ("synthetic/prose_tokens_300", prose_tokens_300),
];

/// Exactly what the load tool's synthetic upstream sends (benches/load.rs, `answer_frames`
/// with its default `--chunks 50`): role chunk, 50 one-token content chunks, a `stop` finish
/// chunk, a usage chunk and `data: [DONE]`.
fn load_tokens_50() -> Vec<u8> {
    const HEAD: &str = r#"{"id":"chatcmpl-LoadSynthetic0000000000000000","object":"chat.completion.chunk","created":1727346171,"model":"synthetic-2024-08-06","system_fingerprint":"fp_0000000000","choices":["#;
    let chunks = 50;
    let mut body = String::new();
    let mut frame = |json: &str| body.push_str(&format!("data: {HEAD}{json}\n\n"));
    frame(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
    );
    for i in 0..chunks {
        frame(&format!(
            r#"{{"index":0,"delta":{{"content":" tok{i}"}},"logprobs":null,"finish_reason":null}}]}}"#
        ));
    }
    frame(r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#);
    frame(&format!(
        r#"],"usage":{{"prompt_tokens":12,"completion_tokens":{chunks},"total_tokens":{},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#,
        chunks + 12
    ));
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// A 300-token answer in today's recorded shape (`service_tier`, `usage: null` and
/// `obfuscation` on every chunk, as in `text_long_obfuscation`), with prose tokens and, as
/// real markdown answers have, escaped line breaks and quotes and non-ASCII text in some.
fn prose_tokens_300() -> Vec<u8> {
    const HEAD: &str = r#"{"id":"chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0","object":"chat.completion.chunk","created":1770933892,"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_de604bd877","choices":["#;
    // JSON string contents, as on the wire.
    const TOKENS: &[&str] = &[
        "The",
        " capital",
        " of",
        " France",
        " is",
        " Paris",
        ",",
        " a",
        " city",
        " known",
        " for",
        " its",
        " art",
        ".",
        r"\n\n",
        "**",
        "Key",
        " facts",
        "**",
        ":",
        r"\n",
        "-",
        r#" \""#,
        "La",
        " Ville",
        " Lumière",
        r#"\""#,
        " —",
        " population",
        " 2",
        ".1",
        "M",
        r"\n",
    ];
    const PAD: &str = "abcdefghijklmno";
    let chunks = 300;
    let mut body = String::new();
    let mut frame = |json: &str, pad: usize| {
        let obf = &PAD[..pad % PAD.len()];
        body.push_str(&format!(
            "data: {HEAD}{json}],\"usage\":null,\"obfuscation\":\"{obf}\"}}\n\n"
        ));
    };
    frame(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
        9,
    );
    for i in 0..chunks {
        let token = TOKENS[i % TOKENS.len()];
        frame(
            &format!(
                r#"{{"index":0,"delta":{{"content":"{token}"}},"logprobs":null,"finish_reason":null}}"#
            ),
            11 - token.len().min(10),
        );
    }
    frame(
        r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
        5,
    );
    body.push_str(&format!(
        r#"data: {HEAD}],"usage":{{"prompt_tokens":78,"completion_tokens":{chunks},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"obfuscation":"dhWUdLZO659"}}"#,
        chunks + 78
    ));
    body.push_str("\n\ndata: [DONE]\n\n");
    body.into_bytes()
}

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
    let mut cases: Vec<(Dialect, String, Vec<u8>)> = CASES
        .iter()
        .filter_map(|&(dialect, file)| {
            let body = std::fs::read(root.join(file)).ok()?;
            Some((dialect, file.trim_end_matches(".sse").to_owned(), body))
        })
        .collect();
    for &(name, make) in SYNTHETIC {
        let body = make();
        // A synthetic stream the codec rejects would measure an error path.
        let (events, result) = StreamDecoder::decode_all(Dialect::OpenAi, &body);
        assert!(result.is_ok() && events.len() > 3, "{name}: {result:?}");
        cases.push((Dialect::OpenAi, name.to_owned(), body));
    }
    for unit in ["chunks", "bytes"] {
        let mut group = c.benchmark_group(format!("codec/{unit}"));
        for (dialect, name, body) in &cases {
            let (dialect, name) = (*dialect, name.as_str());
            let frames = frame_count(body);
            group.throughput(match unit {
                "chunks" => Throughput::Elements(frames),
                _ => Throughput::Bytes(body.len() as u64),
            });
            let mut events = Vec::new();
            decode(dialect, body, &mut events);
            let mut out = Vec::with_capacity(body.len() * 2);

            group.bench_function(format!("decode/{name}"), |b| {
                let mut evs = Vec::new();
                b.iter(|| decode(dialect, black_box(body), &mut evs));
            });
            group.bench_function(format!("encode_same/{name}"), |b| {
                b.iter(|| encode(dialect, black_box(&events), &mut out));
            });
            for (label, to) in [("same", dialect), ("cross", other(dialect))] {
                group.bench_function(format!("decode+encode_{label}/{name}"), |b| {
                    let mut evs = Vec::new();
                    b.iter(|| {
                        decode(dialect, black_box(body), &mut evs);
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
