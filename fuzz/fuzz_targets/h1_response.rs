//! The own HTTP/1.1 client's reading of a response (`streamgate::upstream::h1_wire`): heads
//! (informational ones skipped), then the body's framing, with the bytes arriving in pieces.
//! Byte 0: the read size (1 to 256); the rest: what the upstream sent. Checks that the body
//! data handed out is never more than what came after the head, and every step stays within
//! the bytes read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::upstream::h1_wire::{Head, MAX_INFORMATIONAL, Step, parse_head};

/// The client's read buffer (and head cap).
const BUFFER: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    let [size, wire @ ..] = data else {
        return;
    };
    let read = usize::from(*size) + 1;
    let mut at = 0;
    let mut informational = 0;
    let mut framing = loop {
        let window = &wire[at..wire.len().min(at + BUFFER)];
        match parse_head(window, BUFFER) {
            Ok(Head::Final { head, len }) => {
                assert!(len <= window.len());
                at += len;
                break head.framing;
            }
            Ok(Head::Informational { len }) => {
                assert!(len > 0 && len <= window.len());
                at += len;
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return;
                }
            }
            Ok(Head::Partial) | Err(_) => return,
        }
    };
    let body = &wire[at..];
    let (mut arrived, mut consumed, mut data_len) = (0, 0, 0);
    loop {
        match framing.step(&body[consumed..arrived]) {
            Ok(Step::Data(n)) => {
                assert!(n > 0 && consumed + n <= arrived);
                consumed += n;
                data_len += n;
            }
            Ok(Step::Skip(n)) => {
                assert!(n > 0 && consumed + n <= arrived);
                consumed += n;
            }
            Ok(Step::Done(n)) => {
                assert!(consumed + n <= arrived);
                break;
            }
            Ok(Step::More) if arrived < body.len() => {
                arrived = body.len().min(arrived + read);
            }
            Ok(Step::More) => {
                let _ = framing.at_eof();
                break;
            }
            Err(_) => break,
        }
    }
    assert!(data_len <= body.len());
});
