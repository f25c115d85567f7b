//! Streaming response bodies: polled by the client's connection itself, served as SSE.
//!
//! An answer's events are encoded when the connection asks for the next chunk: every event
//! ready at that moment goes into one chunk (one write), and the connection's task is the one
//! the upstream wakes, so a frame costs one task wake-up from the upstream socket to the
//! client's. The chunk holding the answer's last event says so ([`Body::is_end_stream`]), and
//! hyper writes the end of the chunked body with it instead of in a write of its own. When the
//! client goes away the connection drops the body, and with it the answer (the upstream call
//! included).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures_util::Stream;
use http::{HeaderValue, header};
use http_body::Frame;

/// Most items encoded into one chunk: bounds the work and the chunk before a write.
const MAX_ITEMS: usize = 256;

/// The room a chunk's buffer starts with, at least and at most: the last chunk's size within
/// these bounds, so that encoding a chunk rarely grows its buffer (a frame of a few hundred
/// bytes grew it six times from empty).
const CHUNK_ROOM: (usize, usize) = (256, 16 * 1024);

/// Encodes one item of an answer into the client's bytes; `true` once nothing may follow.
pub trait EncodeItem<T>: Send + Unpin + 'static {
    /// Appends `item`'s bytes to `out`; returns whether the answer is over for the client.
    fn encode(&mut self, item: T, out: &mut Vec<u8>) -> bool;
}

/// The body of a streaming answer: `items` encoded by `encoder`, each chunk holding everything
/// ready when the connection asked.
pub fn events<S, E>(items: S, encoder: E) -> Body
where
    S: Stream + Send + Unpin + 'static,
    E: EncodeItem<S::Item>,
{
    Body::new(EventBody {
        items,
        encoder,
        done: false,
        first: First::NotYet,
        room: CHUNK_ROOM.0,
    })
}

struct EventBody<S, E> {
    items: S,
    encoder: E,
    done: bool,
    /// Before the first chunk: it holds what is ready when the first event is, and the next
    /// poll gives way once (hyper flushes on `Pending`, not before, and would otherwise keep
    /// the first chunk in its buffer while the rest of an answer already there is encoded).
    first: First,
    /// What the next chunk's buffer starts with (see [`CHUNK_ROOM`]).
    room: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    NotYet,
    Sent,
    Flushed,
}

impl<S, E> http_body::Body for EventBody<S, E>
where
    S: Stream + Unpin,
    E: EncodeItem<S::Item>,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.first == First::Sent && !this.done {
            this.first = First::Flushed;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut out = Vec::with_capacity(this.room);
        let mut waiting = false;
        for _ in 0..MAX_ITEMS {
            if this.done {
                break;
            }
            match Pin::new(&mut this.items).poll_next(cx) {
                Poll::Ready(Some(item)) => this.done = this.encoder.encode(item, &mut out),
                Poll::Ready(None) => this.done = true,
                Poll::Pending => {
                    waiting = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            this.room = out.len().clamp(CHUNK_ROOM.0, CHUNK_ROOM.1);
            if this.first == First::NotYet {
                this.first = First::Sent;
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        } else if this.done {
            Poll::Ready(None)
        } else {
            if !waiting {
                // A full round of items that wrote nothing (events the door does not show):
                // more are ready, and nothing else will wake the connection for them.
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// An SSE response of `body`: the event-stream type, no caching, and no buffering by an
/// nginx in front (`X-Accel-Buffering`), which would otherwise hold events back.
pub fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body::Body as _;

    /// Writes each item's text; `"end"` ends the answer, `""` writes nothing.
    struct Echo;

    impl EncodeItem<&'static str> for Echo {
        fn encode(&mut self, item: &'static str, out: &mut Vec<u8>) -> bool {
            out.extend_from_slice(item.as_bytes());
            item == "end"
        }
    }

    fn body<S: Stream<Item = &'static str> + Send + Unpin + 'static>(
        items: S,
    ) -> EventBody<S, Echo> {
        EventBody {
            items,
            encoder: Echo,
            done: false,
            first: First::NotYet,
            room: CHUNK_ROOM.0,
        }
    }

    fn poll<B: http_body::Body<Data = Bytes> + Unpin>(b: &mut B) -> Poll<Option<Vec<u8>>>
    where
        B::Error: std::fmt::Debug,
    {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match Pin::new(b).poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => {
                Poll::Ready(Some(frame.unwrap().into_data().unwrap().to_vec()))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn everything_ready_goes_in_one_chunk_with_the_end() {
        let mut b = body(futures_util::stream::iter(["", "a", "b", "c", "end"]));
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"abcend".to_vec())));
        assert!(b.is_end_stream(), "the last chunk says it is the last");
        assert_eq!(poll(&mut b), Poll::Ready(None));
    }

    #[test]
    fn the_first_chunk_is_flushed_before_the_next_is_encoded() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<&'static str>();
        let mut b = body(rx);
        tx.unbounded_send("a").unwrap();
        tx.unbounded_send("b").unwrap();
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"ab".to_vec())));
        // hyper flushes on Pending: what comes next does not hold the first chunk back.
        tx.unbounded_send("c").unwrap();
        assert_eq!(poll(&mut b), Poll::Pending);
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"c".to_vec())));
        tx.unbounded_send("d").unwrap();
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"d".to_vec())));
    }

    #[test]
    fn a_stream_that_waits_gives_what_it_had_and_waits_too() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<&'static str>();
        let mut b = body(rx);
        assert_eq!(poll(&mut b), Poll::Pending);
        tx.unbounded_send("x").unwrap();
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"x".to_vec())));
        assert_eq!(poll(&mut b), Poll::Pending);
        tx.unbounded_send("y").unwrap();
        tx.unbounded_send("z").unwrap();
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"yz".to_vec())));
        assert_eq!(poll(&mut b), Poll::Pending);
        drop(tx);
        assert_eq!(poll(&mut b), Poll::Ready(None));
        assert!(b.is_end_stream());
    }

    #[test]
    fn a_chunk_is_bounded_and_items_that_write_nothing_do_not_stall() {
        // More silent items than one poll takes: the body wakes itself instead of waiting for a
        // wake-up nothing will send.
        let silent = std::iter::repeat_n("", MAX_ITEMS + 10);
        let items = futures_util::stream::iter(silent.chain(["a", "end"]));
        let mut b = body(items);
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = futures_util::task::waker(std::sync::Arc::new(Flag(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut b).poll_frame(&mut cx).is_pending());
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(poll(&mut b), Poll::Ready(Some(b"aend".to_vec())));
        let many = futures_util::stream::iter(std::iter::repeat_n("x", MAX_ITEMS * 2)).boxed();
        let mut b = body(many);
        assert_eq!(poll(&mut b), Poll::Ready(Some(vec![b'x'; MAX_ITEMS])));
        assert_eq!(poll(&mut b), Poll::Pending);
        assert_eq!(poll(&mut b), Poll::Ready(Some(vec![b'x'; MAX_ITEMS])));
    }

    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl futures_util::task::ArcWake for Flag {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
