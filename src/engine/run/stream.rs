//! A run as the answer's event stream.
//!
//! Every healthy frame takes the same short path: `poll_next` polls the attempt's upstream
//! stream in place and hands its events on, with no future built, moved or instrumented per
//! event (a `Run`'s step future is large: it holds the whole recovery, and building it per
//! event showed as `memmove` and span bookkeeping in the profile). Only a failure, which may
//! wait (a backoff, the next attempt's first byte), runs as a future: boxed, owning the run
//! until it is back, in the failed attempt's span.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use providers::AgentEvent;
use tracing::Instrument as _;

use super::Run;
use crate::error::GatewayError;

type Item = Result<AgentEvent, GatewayError>;

/// The recovery after a failed attempt: gives the run back with the events to send.
type Recovery = Pin<Box<dyn Future<Output = (Box<Run>, Vec<Item>)> + Send>>;

/// Most events taken from the upstream in one poll: bounds the work done before the
/// consumer gets its turn (a batch of a fast upstream is rarely larger).
const MAX_TAKE: usize = 256;

/// The events of a [`Run`], in order, ending after `stream.end` or the error that ends it.
pub(in crate::engine) struct RunEvents {
    /// None while a recovery holds it, and once the answer is over (dropping the run settles
    /// the rate-limit permit and finishes the request's record, as soon as the answer ends).
    run: Option<Box<Run>>,
    recovering: Option<Recovery>,
    ready: VecDeque<Item>,
    /// Reused for every poll's events.
    scratch: Vec<AgentEvent>,
}

impl RunEvents {
    /// The events of `run`, after `first` (what opening it produced).
    pub(in crate::engine) fn new(run: Box<Run>, first: Vec<AgentEvent>) -> RunEvents {
        RunEvents {
            run: Some(run),
            recovering: None,
            ready: first.into_iter().map(Ok).collect(),
            scratch: Vec::new(),
        }
    }
}

impl Stream for RunEvents {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if let Some(recovery) = this.recovering.as_mut() {
                let (run, batch) = ready!(recovery.as_mut().poll(cx));
                this.recovering = None;
                this.run = Some(run);
                this.ready.extend(batch);
                continue;
            }
            let Some(run) = this.run.as_mut() else {
                return Poll::Ready(None);
            };
            if run.done {
                this.run = None;
                return Poll::Ready(None);
            }
            let failed = ready!(run.poll_ready_events(cx, &mut this.scratch, MAX_TAKE));
            this.ready.extend(this.scratch.drain(..).map(Ok));
            if let Some(error) = failed
                && let Some(mut run) = this.run.take()
            {
                // Log lines of the failed attempt carry its span (and so the request's).
                let span = run.trace.context().clone();
                this.recovering = Some(Box::pin(
                    async move {
                        let batch = run.attempt_failed(error).await;
                        (run, batch)
                    }
                    .instrument(span),
                ));
            }
        }
    }
}
