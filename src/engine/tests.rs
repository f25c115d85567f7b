//! The engine's footprint per request: what an answer holds while it waits for its upstream.

use super::run::tests::{call, engine};

/// An answer's future lives from the door's call until the upstream's response head, one per
/// request in flight: at 500 streams where the upstream is the slower side, most requests
/// wait there, and the handler's boxed future around this one was the largest allocation of
/// a waiting request (issue #14). The call is passed boxed, and the connect and recovery
/// paths are awaited boxed: 7.9 KB became 3.7 KB. The bound leaves room for compiler
/// changes, not for a 520-byte `Call` held by value at each level again.
#[tokio::test]
async fn an_answer_waiting_for_its_upstream_holds_little() {
    let engine = engine();
    let answer = engine.answer(call());
    let bytes = size_of_val(&answer);
    assert!(
        bytes <= 5 * 1024,
        "the answer's future is {bytes} bytes: a large value held across an await?"
    );
    let resume = engine.resume(call(), &[]);
    assert_eq!(size_of_val(&resume), bytes, "one future for both");
}
