//! Each dialect's stream decoder (`providers::StreamDecoder`): provider SSE bytes -> Agent
//! Events. Byte 0: bits 0-1 pick the dialect (`Dialect::ALL`, wrapping), the rest the chunk
//! size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use providers::{Dialect, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let [head, body @ ..] = data else {
        return;
    };
    let dialect = Dialect::ALL[usize::from(head & 3) % Dialect::ALL.len()];
    let step = usize::from(head >> 2) + 1;
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
