//! Each dialect's stream decoder (`providers::StreamDecoder`): provider SSE bytes -> Agent
//! Events. Byte 0: bit 0 picks the dialect (OpenAI, Anthropic), the rest the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use providers::{Dialect, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let [head, body @ ..] = data else {
        return;
    };
    let dialect = if head & 1 == 0 {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    };
    let step = usize::from(head >> 1) + 1;
    let mut decoder = StreamDecoder::new(dialect);
    let mut events = Vec::new();
    let mut result = Ok(());
    for piece in body.chunks(step) {
        result = decoder.feed(piece, &mut events);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        let _ = decoder.finish(&mut events);
    }
    // Whatever was decoded must serialize (the gateway writes every event out).
    for event in &events {
        let _ = serde_json::to_vec(event);
    }
});
