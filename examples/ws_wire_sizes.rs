//! Bytes per event on the WebSocket wire, for each compression mode, over the largest
//! recorded streams: each fixture is decoded into Agent Events, stamped, turned into `event`
//! frames and encoded the way the gateway sends them (one message per event, each compressed
//! on its own). Sizes are message payloads (the 2-4 byte WebSocket header comes on top).
//!
//! Run with `cargo run --example ws_wire_sizes`; docs/websocket.md records the figures.

use std::path::Path;

use providers::{Dialect, Stamper, StreamDecoder};
use streamgate::ws::compress::ZSTD_LEVEL;
use streamgate::ws::{
    COMPRESS_MIN_BYTES, Compression, encode_server_message, encode_server_message_min, event_frame,
};

/// The compressed modes.
const MODES: [Compression; 3] = [Compression::Lz4, Compression::Zstd, Compression::Gzip];

/// Thresholds tried for compressing only large frames.
const THRESHOLDS: [usize; 7] = [0, 64, 128, 192, 256, 512, 1024];

const FIXTURES: &[(Dialect, &str)] = &[
    (
        Dialect::Anthropic,
        "anthropic/pause_turn_web_search_long.sse",
    ),
    (Dialect::OpenAi, "openai_chat/text_long_obfuscation.sse"),
    (Dialect::Anthropic, "anthropic/web_search_citations.sse"),
    (Dialect::OpenAi, "openai_chat/json_object_long.sse"),
    (Dialect::Anthropic, "anthropic/thinking_signature.sse"),
    (Dialect::OpenAi, "openai_chat/n3_multiple_choices.sse"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    println!(
        "| fixture | events | largest event | raw JSON | lz4 | zstd-1 | gzip-1 | zstd-3 | gzip-6 | whole stream, zstd-1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut totals = [0usize; 8];
    let mut total_events = 0;
    let mut small = 0;
    let mut threshold_totals = [[0usize; 3]; THRESHOLDS.len()];
    for &(dialect, file) in FIXTURES {
        let body = std::fs::read(root.join(file))?;
        let mut decoder = StreamDecoder::new(dialect);
        let mut events = Vec::new();
        decoder.feed(&body, &mut events)?;
        decoder.finish(&mut events)?;
        let mut stamper = Stamper::new("st_19a2b3c4d5e0001");
        let frames: Vec<Vec<u8>> = events
            .into_iter()
            .map(|e| serde_json::to_vec(&stamper.stamp(e)).map(|json| event_frame(&json)))
            .collect::<Result<_, _>>()?;
        let n = frames.len();
        total_events += n;
        small += frames
            .iter()
            .filter(|f| f.len() < COMPRESS_MIN_BYTES)
            .count();
        let mut sizes = [0usize; 8];
        for f in &frames {
            sizes[0] += f.len();
            for (i, c) in [Compression::Lz4, Compression::Zstd, Compression::Gzip]
                .into_iter()
                .enumerate()
            {
                sizes[1 + i] += encode_server_message(c, f).len();
            }
            // Higher levels, for the choice of levels.
            sizes[4] += zstd::bulk::compress(f, 3)?.len();
            sizes[5] += gzip_len(f, 6)?;
        }
        // One compression context over the whole stream (what a shared context, like
        // permessage-deflate with context takeover, could approach at best).
        sizes[6] = zstd::bulk::compress(&frames.concat(), ZSTD_LEVEL)?.len();
        sizes[7] = frames.iter().map(Vec::len).max().unwrap_or(0);
        for (t, s) in totals.iter_mut().zip(sizes).take(7) {
            *t += s;
        }
        totals[7] = totals[7].max(sizes[7]);
        for (t, &min) in threshold_totals.iter_mut().zip(&THRESHOLDS) {
            for (t, c) in t.iter_mut().zip(MODES) {
                for f in &frames {
                    *t += encode_server_message_min(c, f, min).len();
                }
            }
        }
        row(file.trim_end_matches(".sse"), n, &sizes);
    }
    row("**all**", total_events, &totals);
    println!();
    println!(
        "{small} of {total_events} event frames ({:.0}%) are shorter than {COMPRESS_MIN_BYTES} bytes.",
        100.0 * small as f64 / total_events as f64
    );
    println!();
    println!(
        "Compressing only frames of at least N bytes (smaller ones go as text), all fixtures:"
    );
    println!();
    println!("| N | lz4 | zstd-1 | gzip-1 |");
    println!("|---:|---:|---:|---:|");
    for (t, min) in threshold_totals.iter().zip(THRESHOLDS) {
        let cell = |b: usize| {
            format!(
                "{:.0} ({:.0}%)",
                b as f64 / total_events as f64,
                100.0 * b as f64 / totals[0] as f64
            )
        };
        println!(
            "| {min} | {} | {} | {} |",
            cell(t[0]),
            cell(t[1]),
            cell(t[2])
        );
    }
    Ok(())
}

/// One table row: per-event averages, and each mode's share of raw.
fn row(name: &str, n: usize, s: &[usize; 8]) {
    let per = |b: usize| b as f64 / n as f64;
    let cell = |b: usize| format!("{:.0} ({:.0}%)", per(b), 100.0 * b as f64 / s[0] as f64);
    println!(
        "| {name} | {n} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        s[7],
        per(s[0]),
        cell(s[1]),
        cell(s[2]),
        cell(s[3]),
        cell(s[4]),
        cell(s[5]),
        cell(s[6]),
    );
}

fn gzip_len(data: &[u8], level: u32) -> std::io::Result<usize> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data)?;
    Ok(e.finish()?.len())
}
