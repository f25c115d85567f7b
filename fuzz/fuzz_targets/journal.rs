//! The journal's segment scanner and record decoder (`streamgate::journal::recover_segment`).
//! Byte 0: bit 0 says whether the segment is the last one; bit 1 picks raw mode (the rest is
//! the segment file as is) or framed mode (the rest, split at each `\n\n`, gives payloads that
//! get a segment header, length and a valid CRC, so the fuzzer reaches the record decoder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::journal::recover_segment;

const HEADER: &[u8; 8] = b"SGJOURN\x01";

fuzz_target!(|data: &[u8]| {
    let [head, rest @ ..] = data else {
        return;
    };
    let last = head & 1 == 1;
    let segment = if head & 2 == 0 {
        rest.to_vec()
    } else {
        let mut buf = HEADER.to_vec();
        let mut start = 0;
        let mut i = 0;
        while i <= rest.len() {
            let end_here = i == rest.len() || rest[i..].starts_with(b"\n\n");
            if end_here {
                let payload = &rest[start..i];
                let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                buf.extend_from_slice(payload);
                start = i + 2;
                i += 2;
            } else {
                i += 1;
            }
        }
        buf
    };
    for stream in recover_segment(&segment, last) {
        // Recovery hands back events gap-free from 0; every one came from the input.
        assert!(stream.events.iter().all(|e| e.len() <= segment.len()));
    }
});
