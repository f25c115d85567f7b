//! Hedging a slow first token: when an attempt has produced no content `hedge_after` after it
//! was sent, the next route of the plan is started in parallel, and the first of the two to
//! produce content answers; the other is cancelled (dropping its future drops its request).
//!
//! "Content" is any event past the opening (`stream.start`, `usage`, `heartbeat`,
//! passthrough): an overloaded server often sends its headers and even Anthropic's
//! `message_start` at once, then nothing for many seconds. Attempts that opened but do not go
//! on (the cancelled one, one that failed after opening) still cost their provider something:
//! their usage comes back estimated (see [`crate::estimate::complete`]) for the caller to count.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use providers::{AgentEvent, Usage};

use super::span::AttemptSpan;
use crate::error::GatewayError;
use crate::estimate::{Produced, complete};
use crate::upstream::EventStream;

/// Most events an attempt may send before content and still be waited on: past it, the
/// attempt counts as started (a server sending only keep-alives is not slow to open).
const MAX_LEAD: usize = 64;

/// What opening an upstream call gives: its first events and the rest of its stream.
pub(super) type Opening = Result<(Vec<AgentEvent>, EventStream), GatewayError>;

/// One attempt of a race, not yet polled.
pub(super) struct Contender<F> {
    /// Index of its route in the plan.
    pub route: usize,
    /// Estimated input tokens of its request.
    pub input: u64,
    /// The upstream call: its first events and the rest of its stream.
    pub open: F,
    /// Its attempt span: told how the race went for it.
    pub trace: AttemptSpan,
}

/// The attempt that goes on.
pub(super) struct Winner {
    /// Index of its route in the plan.
    pub route: usize,
    /// Whether it is the hedge (the primary was cancelled or failed).
    pub hedge: bool,
    /// Estimated input tokens of its request.
    pub input: u64,
    /// Its events up to its first content event.
    pub first: Vec<AgentEvent>,
    /// The rest.
    pub stream: EventStream,
    /// Its attempt span, which the run carries on.
    pub trace: AttemptSpan,
}

/// How a race ended.
pub(super) struct Raced {
    /// The attempt that goes on, or the primary's error when none does.
    pub result: Result<Winner, GatewayError>,
    /// The hedge's failure, with its route index (for its circuit breaker).
    pub hedge_failed: Option<(usize, GatewayError)>,
    /// The primary's failure when the hedge won anyway.
    pub primary_failed: Option<GatewayError>,
    /// Usage of attempts that opened but do not go on.
    pub spent: Vec<Usage>,
}

/// Runs `primary`; if it has produced no content after `after`, starts the contender `hedge`
/// returns (None: no route to hedge with) and lets the first content win.
pub(super) async fn race<P, H, M>(primary: Contender<P>, after: Duration, hedge: M) -> Raced
where
    P: Future<Output = Opening>,
    H: Future<Output = Opening>,
    M: FnOnce() -> Option<Contender<H>>,
{
    let mut raced = Raced {
        result: Err(GatewayError::Internal("hedge race without a result".into())),
        hedge_failed: None,
        primary_failed: None,
        spent: Vec::new(),
    };
    let mut p_seen = Vec::new();
    let mut p = Box::pin(lead(primary.open, &mut p_seen));
    let early = tokio::select! {
        biased;
        r = &mut p => Some(r),
        () = tokio::time::sleep(after) => None,
    };
    let p_result = match early {
        Some(r) => Some(r),
        None => match hedge() {
            None => Some(p.as_mut().await),
            Some(contender) => {
                let mut h_seen = Vec::new();
                let mut h = Box::pin(lead(contender.open, &mut h_seen));
                let (p_done, h_done) = first_to_content(p.as_mut(), h.as_mut()).await;
                drop(h);
                let mut h_trace = contender.trace;
                match h_done {
                    Some(Ok(stream)) => {
                        raced.result = Ok(Winner {
                            route: contender.route,
                            hedge: true,
                            input: contender.input,
                            first: std::mem::take(&mut h_seen),
                            stream,
                            trace: h_trace,
                        });
                    }
                    Some(Err(e)) => {
                        h_trace.failed(&e);
                        raced.hedge_failed = Some((contender.route, e));
                    }
                    None => h_trace.lost_race(),
                }
                spend(&mut raced.spent, &h_seen, contender.input);
                if raced.result.is_ok() {
                    // The primary lost: cancelled, or failed before the hedge came in.
                    drop(p);
                    let mut p_trace = primary.trace;
                    match p_done {
                        Some(Err(e)) => {
                            p_trace.failed(&e);
                            raced.primary_failed = Some(e);
                        }
                        _ => p_trace.lost_race(),
                    }
                    spend(&mut raced.spent, &p_seen, primary.input);
                    return raced;
                }
                p_done
            }
        },
    };
    drop(p);
    match p_result {
        Some(Ok(stream)) => {
            raced.result = Ok(Winner {
                route: primary.route,
                hedge: false,
                input: primary.input,
                first: p_seen,
                stream,
                trace: primary.trace,
            });
        }
        Some(Err(e)) => {
            let mut p_trace = primary.trace;
            p_trace.failed(&e);
            spend(&mut raced.spent, &p_seen, primary.input);
            raced.result = Err(e);
        }
        None => {}
    }
    raced
}

/// Polls both until one has content or both failed; the primary first when both are ready.
async fn first_to_content<A, B>(
    mut primary: std::pin::Pin<&mut A>,
    mut hedge: std::pin::Pin<&mut B>,
) -> (
    Option<Result<EventStream, GatewayError>>,
    Option<Result<EventStream, GatewayError>>,
)
where
    A: Future<Output = Result<EventStream, GatewayError>>,
    B: Future<Output = Result<EventStream, GatewayError>>,
{
    let mut p_done = None;
    let mut h_done = None;
    loop {
        tokio::select! {
            biased;
            r = primary.as_mut(), if p_done.is_none() => p_done = Some(r),
            r = hedge.as_mut(), if h_done.is_none() => h_done = Some(r),
        }
        let won = matches!(p_done, Some(Ok(_))) || matches!(h_done, Some(Ok(_)));
        if won || (p_done.is_some() && h_done.is_some()) {
            return (p_done, h_done);
        }
    }
}

/// Opens an attempt and reads it up to its first content event, keeping every event in
/// `seen` (so that a cancelled attempt's events can still be counted).
async fn lead<F>(open: F, seen: &mut Vec<AgentEvent>) -> Result<EventStream, GatewayError>
where
    F: Future<Output = Opening>,
{
    let (first, mut stream) = open.await?;
    seen.extend(first);
    while !seen.iter().any(is_content) && seen.len() < MAX_LEAD {
        match stream.next().await {
            Some(Ok(event)) => seen.push(event),
            Some(Err(e)) => return Err(e),
            // Ended without content: the caller's stream handling says what that means.
            None => break,
        }
    }
    Ok(stream)
}

/// Whether `event` is part of the answer rather than of its opening.
fn is_content(event: &AgentEvent) -> bool {
    !matches!(
        event,
        AgentEvent::StreamStart(_)
            | AgentEvent::Usage(_)
            | AgentEvent::Heartbeat
            | AgentEvent::ProviderEvent { .. }
    )
}

/// Adds the usage of an attempt that opened (sent any event) and does not go on.
fn spend(spent: &mut Vec<Usage>, seen: &[AgentEvent], input: u64) {
    if seen.is_empty() {
        // Never opened: refused or cancelled before the provider said anything.
        return;
    }
    let mut reported = Usage::default();
    let mut produced = Produced::default();
    for event in seen {
        produced.add(event);
        if let AgentEvent::Usage(u) = event {
            reported.merge(u);
        }
    }
    spent.push(complete(&reported, input, produced));
}
