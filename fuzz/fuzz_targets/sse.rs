//! The SSE parser (`providers::sse::SseParser`): any bytes, any split, any frame limit.
//! Byte 0: the frame limit (small limits reach the too-large paths); byte 1: the split step.
//! Property: feeding the body whole or in pieces yields the same frames (or both fail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use providers::sse::{SseError, SseFrame, SseParser};

/// A frame's owned fields, to compare two runs.
type Owned = (
    Option<String>,
    String,
    bool,
    Option<String>,
    Option<u64>,
    u64,
    u64,
);

fn run(limit: usize, body: &[u8], step: usize) -> (Vec<Owned>, bool, bool) {
    let mut parser = SseParser::with_limit(limit);
    let mut frames = Vec::new();
    let mut on = |f: &SseFrame<'_>| -> Result<(), SseError> {
        frames.push((
            f.event.map(str::to_owned),
            f.data.to_owned(),
            f.has_data,
            f.id.map(str::to_owned),
            f.retry,
            f.line,
            f.offset,
        ));
        Ok(())
    };
    let mut failed = false;
    for piece in body.chunks(step.max(1)) {
        if parser.feed(piece, &mut on).is_err() {
            failed = true;
            break;
        }
    }
    let pending = !failed && parser.finish();
    (frames, failed, pending)
}

fuzz_target!(|data: &[u8]| {
    let [limit, step, body @ ..] = data else {
        return;
    };
    let limit = if *limit == 0 {
        1 << 20
    } else {
        usize::from(*limit) * 4
    };
    let whole = run(limit, body, body.len());
    let split = run(limit, body, usize::from(*step % 16) + 1);
    if !whole.1 && !split.1 {
        assert_eq!(whole, split, "a split changed the frames");
    }
});
