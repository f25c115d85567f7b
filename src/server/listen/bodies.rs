//! The bodies the listener wraps: a request body with a total deadline, and a response body
//! that holds its request's [`InFlight`] mark until it is written (or dropped).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::watch::InFlight;
use crate::server::drain::Counted;

/// The request body did not arrive within `[server] body_read_timeout_ms` (found in a body
/// read error's source chain by [`crate::server`]'s `read_body`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {timeout_ms} ms")]
pub struct BodyTimedOut {
    /// The configured timeout.
    pub timeout_ms: u64,
}

/// `body` with a deadline of `timeout` from now for its whole content; an empty body (a GET,
/// a WebSocket upgrade) is passed as it is.
pub fn with_deadline(body: Incoming, timeout: Duration) -> Body {
    if body.is_end_stream() {
        return Body::new(body);
    }
    Body::new(Deadline {
        body,
        deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
        timeout,
    })
}

struct Deadline {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Whatever already arrived is taken first: the deadline only cuts a body still
        // waiting for more.
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut {
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `body`, keeping `in_flight` (the connection's mark and the shutdown drain's count) until
/// it is done or dropped.
pub fn tracked(body: Body, in_flight: (InFlight, Counted)) -> Tracked {
    Tracked {
        body,
        in_flight: Some(in_flight),
    }
}

/// See [`tracked`].
pub struct Tracked {
    body: Body,
    in_flight: Option<(InFlight, Counted)>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Written to its end: the connection is idle from here even if hyper keeps the
            // body a little longer.
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
