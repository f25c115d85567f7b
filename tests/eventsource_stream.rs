//! Where the `eventsource-stream` crate (0.2.3) falls short for an LLM gateway, next to our
//! parser (`providers::sse::SseParser`) on the same bytes.
//!
//! Each test asserts the crate's behaviour as observed (run, not assumed) and our parser's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::FutureExt;
use futures::executor::block_on;
use futures::stream::{self, StreamExt};
use providers::sse::{SseError, SseFrame, SseParser};

/// What the crate yields for `chunks`, driven to the end of the input.
fn crate_items(chunks: &[&[u8]]) -> Vec<Result<Event, EventStreamError<Infallible>>> {
    let owned: Vec<Result<Vec<u8>, Infallible>> = chunks.iter().map(|c| Ok(c.to_vec())).collect();
    block_on(stream::iter(owned).eventsource().collect::<Vec<_>>())
}

/// A frame as our parser reports it, owned.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
}

/// Our parser on `chunks`: the frames and the last event id at the end.
fn our_frames(chunks: &[&[u8]]) -> (Vec<Frame>, String) {
    let mut parser = SseParser::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        parser
            .feed(chunk, &mut |f: &SseFrame<'_>| -> Result<(), SseError> {
                frames.push(Frame {
                    event: f.event.map(str::to_owned),
                    data: f.data.to_owned(),
                    has_data: f.has_data,
                    id: f.id.map(str::to_owned),
                    retry: f.retry,
                });
                Ok(())
            })
            .unwrap();
    }
    parser.finish();
    (frames, parser.last_event_id().to_owned())
}

/// (1) One invalid UTF-8 byte inside a data line.
///
/// The crate keeps the bytes from the first invalid one onward in its UTF-8 buffer and appends
/// every later chunk behind them, so no later chunk ever becomes valid: the frame holding the
/// bad byte and every frame after it are never delivered (the stream stalls while the
/// connection lives), and at the end of input the whole tail surfaces as one `Utf8` error.
/// Our parser decodes each complete line on its own, turns the bad byte into U+FFFD and
/// goes on.
#[test]
fn invalid_utf8_stalls_the_crate_but_not_our_parser() {
    let chunks: [&[u8]; 3] = [
        b"data: first\n\n",
        b"data: bad \xFF byte\n\n",
        b"data: third\n\ndata: fourth\n\n",
    ];

    let items = crate_items(&chunks);
    // Observed: the first event, then a single UTF-8 error at the end; "bad", "third" and
    // "fourth" are lost.
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().data, "first");
    assert!(
        matches!(items[1], Err(EventStreamError::Utf8(_))),
        "{:?}",
        items[1]
    );

    // While the connection is still open (input not ended), nothing after the bad byte comes
    // out at all: feed the same chunks without ending the stream and poll what is ready.
    let pending =
        stream::iter(chunks.map(|c| Ok::<_, Infallible>(c.to_vec()))).chain(stream::pending());
    let mut es = pending.eventsource();
    let mut ready = Vec::new();
    // `now_or_never` polls once: None means Pending (waiting for more bytes).
    while let Some(Some(item)) = es.next().now_or_never() {
        ready.push(item);
    }
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0].as_ref().unwrap().data, "first");

    let (frames, _) = our_frames(&chunks);
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(data, ["first", "bad \u{FFFD} byte", "third", "fourth"]);
}

/// (2) A block with only a `retry:` field.
///
/// The crate drops a block without data (as a browser does) and with it the `retry` value:
/// `Event::retry` is only ever seen on an event that also carries data, so a server that
/// sends `retry:` on its own (the usual way) is never heard. Our parser reports the block
/// with `has_data == false` and the value.
#[test]
fn retry_only_block_is_lost_by_the_crate() {
    let chunks: [&[u8]; 1] = [b"retry: 3000\n\ndata: hello\n\n"];

    let items = crate_items(&chunks);
    assert_eq!(items.len(), 1, "{items:?}");
    let event = items[0].as_ref().unwrap();
    assert_eq!(event.data, "hello");
    // Observed: the retry value of the earlier block is gone.
    assert_eq!(event.retry, None);

    let (frames, _) = our_frames(&chunks);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].retry, Some(3000));
    assert!(!frames[0].has_data);
    assert_eq!(frames[1].data, "hello");
    assert_eq!(frames[1].retry, None);
}

/// (3) `id:` carried into later events.
///
/// The crate copies the last id into every later event's `Event::id` (the WHATWG
/// `lastEventId`, which is what the spec asks of a browser). That is not a parsing bug, but
/// it means `Event::id` cannot tell whether *this* frame set an id: a proxy re-emitting the
/// frames writes `id:` lines the upstream never sent. Our parser reports the field per
/// block (`SseFrame::id`) and keeps the last one separately (`last_event_id`, for
/// reconnects).
#[test]
fn id_is_carried_into_later_events_by_the_crate() {
    let chunks: [&[u8]; 1] = [b"id: 7\ndata: a\n\ndata: b\n\ndata: c\n\n"];

    let items = crate_items(&chunks);
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i.as_ref().unwrap().id.as_str())
        .collect();
    // Observed: every event after the first reports id 7.
    assert_eq!(ids, ["7", "7", "7"]);

    let (frames, last) = our_frames(&chunks);
    let ids: Vec<Option<&str>> = frames.iter().map(|f| f.id.as_deref()).collect();
    assert_eq!(ids, [Some("7"), None, None]);
    assert_eq!(last, "7");
}

/// Both agree on the basics (so the differences above are not a harness artifact).
#[test]
fn both_parse_a_plain_anthropic_frame_split_anywhere() {
    let body: &[u8] = b"event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n";
    for cut in 0..=body.len() {
        let chunks = [&body[..cut], &body[cut..]];
        let items = crate_items(&chunks);
        assert_eq!(items.len(), 1, "cut {cut}: {items:?}");
        let e = items[0].as_ref().unwrap();
        assert_eq!(
            (e.event.as_str(), e.data.as_str()),
            ("ping", "{\"type\":\"ping\"}")
        );
        let (frames, _) = our_frames(&chunks);
        assert_eq!(frames.len(), 1, "cut {cut}");
        assert_eq!(frames[0].event.as_deref(), Some("ping"));
        assert_eq!(frames[0].data, "{\"type\":\"ping\"}");
    }
}
