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
    })
}

struct EventBody<S, E> {
    items: S,
    encoder: E,
    done: bool,
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
        let mut out = Vec::new();
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
