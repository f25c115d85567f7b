//! The WebSocket door's decoders (`streamgate::ws`): per-message decompression (lz4, zstd,
//! gzip, none), client frames as the gateway reads them, and the reference client's decoder
//! with shard reassembly. Byte 0: bits 0-1 the compression, bits 2-3 the path:
//! 0 `decompress`, 1 `decode_client_message`, 2/3 a `ClientDecoder` fed the rest split at
//! 0xFF bytes into messages (bit 4 of byte 0: binary messages, else text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::ws::{
    ClientDecoder, Compression, DecoderLimits, FrameLimits, Message, ReassemblyLimits,
    decode_client_message, decompress,
};

/// Small bounds, so the fuzzer reaches the limits with small inputs.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let [head, rest @ ..] = data else {
        return;
    };
    let compression = Compression::ALL[usize::from(head & 3)];
    match (head >> 2) & 3 {
        0 => {
            if let Ok(out) = decompress(compression, rest, LIMIT) {
                assert!(out.len() <= LIMIT, "inflated past the limit");
            }
        }
        1 => {
            let message = match String::from_utf8(rest.to_vec()) {
                Ok(text) if head & 0x10 == 0 => Message::Text(text),
                _ => Message::Binary(rest.to_vec()),
            };
            let limits = FrameLimits {
                max_frame: LIMIT,
                max_inflate: LIMIT,
            };
            if let Err(e) = decode_client_message(compression, message, limits) {
                // Every refusal renders as an error frame.
                let _ = e.to_frame().to_json();
                let _ = e.close_code();
            }
        }
        _ => {
            let limits = DecoderLimits {
                max_inflate: LIMIT,
                reassembly: ReassemblyLimits {
                    max_event_bytes: LIMIT,
                    max_pending: 4,
                },
            };
            let mut decoder = ClientDecoder::new(compression, limits);
            for piece in rest.split(|&b| b == 0xFF) {
                let message = match std::str::from_utf8(piece) {
                    Ok(text) if head & 0x10 == 0 => Message::Text(text.to_owned()),
                    _ => Message::Binary(piece.to_vec()),
                };
                let _ = decoder.decode(message);
                assert!(decoder.pending_shards() <= 4, "reassembly past its bound");
            }
        }
    }
});
