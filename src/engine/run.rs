//! One answer's attempts: open, stream, and on failure retry, fail over or continue.
//!
//! The loop follows the table of [`crate::resilience::classify`]: a transient fault is retried
//! on the same route after a jittered backoff (at least the provider's Retry-After), up to
//! `maxAttempts`; then, or at once for faults retrying cannot fix, the next route of the plan
//! whose circuit breaker lets it through takes over. Everything is bounded by the request's
//! time-to-fallback budget. Once output reached the client, each new attempt is asked to
//! continue the answer, and the splicer joins it to what was sent.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use providers::{AgentEvent, Usage, UsageBasis};
use tokio::time::{Instant, Sleep};
use tracing::Instrument as _;

use super::span::AttemptSpan;
use super::{Answer, Call, Engine, Events, Generation, hedge, unix_now};
use crate::error::GatewayError;
use crate::limit::Permit;
use crate::resilience::breaker::Pass;
use crate::resilience::classify::{Action, classify};
use crate::resilience::continuation::{Mode, continue_request};
use crate::resilience::{Backoff, later};
use crate::route::{self, Route};
use crate::splice::{Continuation, Seam, Splicer};
use crate::telemetry::meter::Meter;
use crate::telemetry::metrics::Reason;
use crate::upstream::EventStream;

/// The state of one answer across its attempts.
struct Run {
    engine: Arc<Engine>,
    /// The configuration this answer started with, to its end (a reload does not change it).
    generation: Arc<Generation>,
    call: Call,
    /// The answer's measures (the request's record, the metrics).
    meter: Meter,
    /// Why the last attempt ended: the reason of the retry, failover or continuation after it.
    broken_by: Option<Reason>,
    routes: Vec<Route>,
    /// Index in `routes` of the route being tried.
    at: usize,
    /// Attempts made on the current route.
    tries: u32,
    backoff: Backoff,
    /// End of the request's time-to-fallback budget.
    budget_end: Instant,
    splicer: Splicer,
    /// What the client has, as of the last break.
    cont: Continuation,
    /// Continuation mode per provider (a rejected prefill switches it).
    modes: HashMap<String, Mode>,
    stream: Option<EventStream>,
    /// Ends the current attempt after `maxDurationMs`.
    attempt_timer: Pin<Box<Sleep>>,
    done: bool,
    /// The rate-limit admission: holds the stream slot, settled with the real usage.
    permit: Permit,
    /// The current route's breaker admission; dropped unreported with the run (the client
    /// left, the answer was abandoned), it gives back a half-open probe.
    pass: Option<Pass>,
    /// The request's span (current when the run began): every attempt's span is its child,
    /// whichever task polls the answer later.
    parent: tracing::Span,
    /// Attempts started so far, across routes (hedges included): numbers the attempt spans.
    attempts: u32,
    /// The current attempt's span.
    trace: AttemptSpan,
    /// Routes of the plan skipped because the request cannot be expressed in their dialect.
    untranslatable: Vec<usize>,
    /// The first of those translation errors: the client's answer when no route can express
    /// the request.
    translation_error: Option<GatewayError>,
    /// The last error a provider (or the way to it) gave: the client's answer, rather than a
    /// translation error, when the routes left cannot express the request.
    provider_error: Option<GatewayError>,
}

/// Why an attempt did not go on.
enum Failed {
    /// The request cannot be expressed for the route's provider: the route is skipped, and
    /// its circuit breaker is not told (the route did nothing wrong).
    Untranslatable(GatewayError),
    /// The attempt failed: opening it, or its stream.
    Attempt(GatewayError),
}

impl From<GatewayError> for Failed {
    fn from(error: GatewayError) -> Self {
        Failed::Attempt(error)
    }
}

/// Opens the first attempt that answers and returns the answer's event stream.
///
/// `prior`: the events a client already has of this answer (a stream recovered from the
/// journal after a restart); the answer then continues after them, as after a break.
pub(super) async fn start(
    engine: Arc<Engine>,
    generation: Arc<Generation>,
    call: Box<Call>,
    permit: Permit,
    prior: &[AgentEvent],
) -> Result<Answer, GatewayError> {
    let plan = route::plan(&generation.config, &call.request.model)?;
    // Boxed from the start, not when the stream takes it: the request's future waits for the
    // first events with a pointer, not the whole run, inside it.
    let mut run = Box::new(Run::new(engine, generation, *call, permit, plan.routes));
    run.at = run.first_open_route().await?;
    let mut out = Vec::new();
    let seam = (!prior.is_empty()).then(|| run.replay(prior, &mut out));
    if let Err(e) = run.attempt(&mut out, seam).await {
        // Boxed: the rare path, larger than the attempt, would size every answer's future.
        Box::pin(run.recover(e, &mut out)).await?;
    }
    let route = run.routes[run.at].clone();
    let events = stream::RunEvents::new(run, out);
    Ok(Answer {
        route,
        events: Box::pin(events) as Events,
    })
}

impl Drop for Run {
    /// However the answer stops (finished, failed, its client gone mid-stream, its upstream
    /// ended without `stream.end`), the token borrow is settled with what it cost as far as
    /// the gateway can tell: reported usage where the providers said, estimates where they
    /// did not. An answer no provider started costs nothing.
    fn drop(&mut self) {
        let total = self.splicer.usage_if_ended_now();
        let used = total.input_tokens.unwrap_or(0) + total.output_tokens.unwrap_or(0);
        self.permit.settle(used);
        self.meter.finish(&total);
    }
}

impl Run {
    fn new(
        engine: Arc<Engine>,
        generation: Arc<Generation>,
        call: Call,
        permit: Permit,
        routes: Vec<Route>,
    ) -> Run {
        let policy = generation.policy;
        let hold = generation.config.streaming.retry_policy.hold_tool_calls;
        Run {
            backoff: Backoff::new(&policy),
            budget_end: later(Instant::now(), policy.time_to_fallback),
            engine,
            generation,
            meter: Meter::new(call.observed.clone(), &call.request.model),
            broken_by: None,
            call,
            routes,
            at: 0,
            tries: 0,
            splicer: Splicer::new(hold),
            cont: Continuation::default(),
            modes: HashMap::new(),
            stream: None,
            attempt_timer: Box::pin(tokio::time::sleep(Duration::from_secs(u32::MAX.into()))),
            done: false,
            permit,
            pass: None,
            parent: tracing::Span::current(),
            attempts: 0,
            trace: AttemptSpan::none(),
            untranslatable: Vec::new(),
            translation_error: None,
            provider_error: None,
        }
    }

    /// Takes every event the current attempt has ready (at most `max`) into `out`, without
    /// waiting: the path of every healthy frame, polled in place (no future per event).
    /// `Ready(Some(error))` when the attempt failed (the events before it are in `out`);
    /// `Ready(None)` when something was taken or the answer is over.
    fn poll_ready_events(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<AgentEvent>,
        max: usize,
    ) -> Poll<Option<GatewayError>> {
        if self.stream.is_none() {
            self.cut();
            return Poll::Ready(None);
        }
        let before = out.len();
        let mut failed = None;
        let mut ended = false;
        while out.len() - before < max {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    self.push(event, out);
                    if self.splicer.ended() {
                        break;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    failed = Some(e);
                    break;
                }
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.meter.events(&out[before..]);
        if self.splicer.ended() {
            self.trace.succeeded();
            self.report_success();
            self.done = true;
            return Poll::Ready(None);
        }
        if let Some(e) = failed {
            return Poll::Ready(Some(e));
        }
        if ended {
            self.cut();
            return Poll::Ready(None);
        }
        // The attempt's time limit, looked at only when no event was ready or once per batch
        // (a clock read), not with a timer registration per event.
        let timed_out = if out.len() > before {
            Instant::now() >= self.attempt_timer.deadline()
        } else {
            self.attempt_timer.as_mut().poll(cx).is_ready()
        };
        if timed_out {
            return Poll::Ready(Some(GatewayError::Timeout {
                provider: self.routes[self.at].provider.clone(),
                phase: crate::error::TimeoutPhase::Total,
            }));
        }
        if out.len() > before {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// The attempt's stream ended without its stream.end: nothing more to say, and the route
    /// did not finish its answer.
    fn cut(&mut self) {
        self.trace.cut();
        self.report_failure();
        self.meter.interrupted();
        self.done = true;
    }

    /// After the current attempt failed with `e`: recovers (retry, failover, continuation)
    /// and returns the events to send, ending with the error when the answer cannot go on.
    async fn attempt_failed(&mut self, e: GatewayError) -> Vec<Result<AgentEvent, GatewayError>> {
        tracing::warn!(route = %self.routes[self.at], error = %e, "attempt failed");
        self.trace.failed(&e);
        // Ended here: the wait before the next attempt is not this one's.
        self.trace = AttemptSpan::none();
        let mut out = Vec::new();
        let last = self.recover(Failed::Attempt(e), &mut out).await.err();
        if last.is_some() {
            self.meter.interrupted();
            self.splicer.wind_down(&mut out);
            self.settle();
            self.done = true;
        }
        out.into_iter().map(Ok).chain(last.map(Err)).collect()
    }

    /// Brings the splicer to where a client holding `prior` is (see [`super::resume`]) and
    /// breaks there: the next attempt continues the answer. Events the break itself emits
    /// (closing a reasoning block) go to `out`; the seam to mark is returned.
    fn replay(&mut self, prior: &[AgentEvent], out: &mut Vec<AgentEvent>) -> Seam {
        super::resume::restore(&mut self.splicer, prior);
        self.cont = self.splicer.interrupt(out);
        Seam::Retry {
            attempt: 1,
            delay_ms: 0,
            reason: "the gateway restarted while answering: continuing".into(),
        }
    }

    /// Hands an attempt's event to the splicer, completing `stream.start` with what only the
    /// gateway knows.
    fn push(&mut self, event: AgentEvent, out: &mut Vec<AgentEvent>) {
        self.trace.observe(&event);
        let event = match event {
            AgentEvent::StreamStart(mut start) => {
                start.request_id = Some(self.meter.observed().id().to_owned());
                start.provider = Some(self.routes[self.at].provider.clone());
                start.created.get_or_insert_with(unix_now);
                AgentEvent::StreamStart(start)
            }
            other => other,
        };
        let before = out.len();
        self.splicer.push(event, out);
        if matches!(out[before..].last(), Some(AgentEvent::Usage(_))) {
            self.settle();
        }
    }

    /// Settles the token borrow with the usage summed over every attempt so far (estimates
    /// of broken attempts included).
    fn settle(&mut self) {
        let total = self.splicer.usage();
        let used = total.input_tokens.unwrap_or(0) + total.output_tokens.unwrap_or(0);
        self.permit.settle(used);
    }

    /// After a failure: retry, fail over or continue until an attempt opens, or give the
    /// error that ends the answer.
    async fn recover(
        &mut self,
        mut failed: Failed,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), GatewayError> {
        if self.stream.take().is_some() {
            // The attempt had started: record what the client has, to continue from it.
            self.cont = self.splicer.interrupt(out);
        }
        loop {
            let route = self.routes[self.at].clone();
            let error = match failed {
                Failed::Attempt(error) => error,
                Failed::Untranslatable(error) => {
                    let seam = self.skip_untranslatable(&route, error)?;
                    match self.attempt(out, Some(seam)).await {
                        Ok(()) => return Ok(()),
                        Err(e) => failed = e,
                    }
                    continue;
                }
            };
            let action = classify(&error, self.uses_client_key(&route));
            self.broken_by = Some(Reason::of(&error));
            self.report_failure_of(self.at, &error);
            let reason = error.to_string();
            let seam = match action {
                Action::Client => return Err(error),
                Action::ContinueWithoutPrefill => {
                    let mode = self
                        .modes
                        .entry(route.provider.clone())
                        .or_insert(Mode::Prefill);
                    if *mode == Mode::Instruction {
                        return Err(error);
                    }
                    *mode = Mode::Instruction;
                    tracing::info!(route = %route, "prefill rejected: continuing by instruction");
                    None
                }
                Action::Retry => match self.retry_delay(&error) {
                    Some(delay) => {
                        tracing::info!(route = %route, delay_ms = delay.as_millis() as u64, "retrying");
                        self.engine.retries.fetch_add(1, Ordering::Relaxed);
                        self.meter.retry(Reason::of(&error));
                        if self.splicer.output_started() {
                            self.splicer.seam(
                                Seam::Retry {
                                    attempt: self.tries,
                                    delay_ms: delay.as_millis() as u64,
                                    reason,
                                },
                                out,
                            );
                        }
                        tokio::time::sleep(delay).await;
                        None
                    }
                    None => match self.failover(&route, reason) {
                        Some(seam) => Some(seam),
                        None => return Err(error),
                    },
                },
                Action::Failover => match self.failover(&route, reason) {
                    Some(seam) => Some(seam),
                    None => return Err(error),
                },
            };
            self.provider_error = Some(error);
            match self.attempt(out, seam).await {
                Ok(()) => return Ok(()),
                Err(e) => failed = e,
            }
        }
    }

    /// The request cannot be expressed for `route` (a mixed-dialect plan: `n > 1` towards
    /// Anthropic, an OpenAI-only parameter...): moves to the next route without blaming this
    /// one, and returns the seam to mark. When no route is left, the error for the client:
    /// the last provider error if an earlier route failed, else the 503 / 429 of routes that
    /// could express it but are resting, else the first translation error (a 4xx: the request
    /// can never succeed on this plan).
    fn skip_untranslatable(
        &mut self,
        route: &Route,
        error: GatewayError,
    ) -> Result<Seam, GatewayError> {
        tracing::info!(route = %route, error = %error, "the request cannot be expressed for this route: skipping it");
        let reason = error.to_string();
        self.broken_by = Some(Reason::Untranslatable);
        self.untranslatable.push(self.at);
        let first = self.translation_error.take().unwrap_or(error);
        // The pass goes back unreported: a half-open probe is not spent on a route that was
        // never asked.
        self.pass = None;
        if let Some(seam) = self.failover(route, reason) {
            self.translation_error = Some(first);
            return Ok(seam);
        }
        if let Some(error) = self.provider_error.take() {
            return Err(error);
        }
        Err(self.resting_error().unwrap_or(first))
    }

    /// The current route answered: through the run's pass when it is that route's, so a probe
    /// is reported as such.
    fn report_success(&mut self) {
        let route = self.routes[self.at].to_string();
        match self.pass.take() {
            Some(pass) if pass.route() == route => pass.success(),
            _ => self.engine.breakers.success(&route),
        }
    }

    /// The current route failed (a failure that is the route's, not the client's).
    fn report_failure(&mut self) {
        let route = self.routes[self.at].to_string();
        match self.pass.as_mut() {
            Some(pass) if pass.route() == route => pass.failure(),
            _ => self.engine.breakers.failure(&route),
        }
    }

    /// The wait before retrying the current route, if it may be retried within the budget.
    fn retry_delay(&mut self, error: &GatewayError) -> Option<Duration> {
        if self.tries >= self.generation.policy.max_attempts {
            return None;
        }
        let retry_after = match error {
            GatewayError::UpstreamStatus { retry_after, .. } => *retry_after,
            _ => None,
        };
        let delay = self.backoff.next_delay(retry_after)?;
        self.fits_budget(delay).then_some(delay)
    }

    /// Whether a wait of `delay` from now ends within the request's budget.
    fn fits_budget(&self, delay: Duration) -> bool {
        Instant::now()
            .checked_add(delay)
            .is_some_and(|end| end < self.budget_end)
    }

    /// Moves to the next route whose breaker lets it through, and returns the seam to mark
    /// for the client; None when no route is left (or the budget is spent), so the last
    /// error is the client's answer.
    fn failover(&mut self, from: &Route, reason: String) -> Option<Seam> {
        if Instant::now() >= self.budget_end {
            return None;
        }
        let next = self.first_allowed(self.at + 1)?;
        self.at = next;
        self.tries = 0;
        self.backoff = Backoff::new(&self.generation.policy);
        let to = &self.routes[next];
        self.engine.failovers.fetch_add(1, Ordering::Relaxed);
        self.meter.failover(self.broken_by.unwrap_or(Reason::Other));
        tracing::warn!(from = %from, to = %to, reason, "failing over");
        Some(Seam::Failover {
            from: from.to_string(),
            to: to.to_string(),
            model: to.model.clone(),
            reason,
        })
    }

    /// The first route from `from` on that its provider is not rate-limiting and its circuit
    /// breaker lets through; its breaker pass becomes the run's.
    fn first_allowed(&mut self, from: usize) -> Option<usize> {
        (from..self.routes.len()).find(|&i| {
            let route = self.routes[i].to_string();
            if self
                .generation
                .upstream
                .backoff()
                .blocked_for(&route)
                .is_some()
            {
                return false;
            }
            self.pass = self.engine.breakers.allow(&route);
            self.pass.is_some()
        })
    }

    /// The first route of the plan that may be tried. When every route rests after its
    /// provider's 429 and the shortest rest fits in the budget, waits for it (as a retry on
    /// that route would) rather than refusing: concurrent requests do not turn one short 429
    /// into a 429 each. Otherwise the client gets that 429, or the 503 of open breakers, with
    /// the soonest time to come back.
    async fn first_open_route(&mut self) -> Result<usize, GatewayError> {
        loop {
            if let Some(first) = self.first_allowed(0) {
                return Ok(first);
            }
            if let Some(limited) = self.soonest_limited(|_| true) {
                if !self.fits_budget(limited.retry_after) {
                    return Err(GatewayError::RateLimited(limited));
                }
                tracing::info!(
                    model = %providers::untrusted::untrusted(&self.call.request.model),
                    wait_ms = limited.retry_after.as_millis() as u64,
                    "every route is rate-limited upstream: waiting for the soonest"
                );
                tokio::time::sleep(limited.retry_after).await;
                continue;
            }
            return Err(self.cooling_down(|_| true));
        }
    }

    /// The soonest end of an upstream 429's rest among the routes `include` selects.
    fn soonest_limited(&self, include: impl Fn(usize) -> bool) -> Option<crate::limit::Limited> {
        let backoff = self.generation.upstream.backoff();
        (0..self.routes.len())
            .filter(|&i| include(i))
            .filter_map(|i| backoff.limited(&self.routes[i].to_string()))
            .min_by_key(|l| l.retry_after)
    }

    /// The 503 of routes whose breakers are open, with the soonest time one lets a request
    /// through among those `include` selects.
    fn cooling_down(&self, include: impl Fn(usize) -> bool) -> GatewayError {
        let breakers = &self.engine.breakers;
        let retry_after = (0..self.routes.len())
            .filter(|&i| include(i))
            .filter_map(|i| breakers.retry_in(&self.routes[i].to_string()))
            .min();
        GatewayError::Unavailable {
            message: format!(
                "every route for {:?} is cooling down after repeated failures",
                self.call.request.model
            ),
            retry_after,
        }
    }

    /// When the routes that can express the request were not tried because they rest (an
    /// upstream 429's backoff, an open breaker): the 429 or 503 that says when to come back.
    fn resting_error(&self) -> Option<GatewayError> {
        let expressible = |i: usize| !self.untranslatable.contains(&i);
        if let Some(limited) = self.soonest_limited(expressible) {
            return Some(GatewayError::RateLimited(limited));
        }
        let breakers = &self.engine.breakers;
        let open = (0..self.routes.len())
            .any(|i| expressible(i) && breakers.retry_in(&self.routes[i].to_string()).is_some());
        open.then(|| self.cooling_down(expressible))
    }

    fn uses_client_key(&self, route: &Route) -> bool {
        self.generation
            .provider(route)
            .is_ok_and(|p| crate::upstream::uses_client_key(p, &self.call.key))
    }

    /// One attempt on the current route: translate, send, wait for its first events, and
    /// hand them to the splicer (after the seam, when there is one).
    async fn attempt(
        &mut self,
        out: &mut Vec<AgentEvent>,
        seam: Option<Seam>,
    ) -> Result<(), Failed> {
        self.tries += 1;
        let route = self.routes[self.at].clone();
        let continuing = self
            .splicer
            .output_started()
            .then(|| self.broken_by.unwrap_or(Reason::Other));
        self.meter
            .attempt(&self.generation.config, &route, continuing);
        let provider = self.generation.provider(&route)?.clone();
        let mode = *self
            .modes
            .entry(route.provider.clone())
            .or_insert_with(|| self.generation.continuation_mode(&provider));
        let request = continue_request(&self.call.request, &self.cont, mode);
        let body = match self.generation.upstream_body(&request, &route) {
            Ok(body) => body,
            Err(e @ GatewayError::Request(_)) => return Err(Failed::Untranslatable(e)),
            Err(e) => return Err(e.into()),
        };
        let input = crate::estimate::input_tokens(&request);
        let hedge_after = self.hedge_after();
        self.attempts += 1;
        let mut trace =
            AttemptSpan::start(&self.parent, self.attempts, &route, provider.dialect, false);
        let open = self
            .generation
            .upstream
            .open(&route, &provider, body, &self.call.key, &self.call.forward)
            .instrument(trace.context().clone());
        let winner = match hedge_after {
            None => match open.await {
                Ok((first, stream)) => hedge::Winner {
                    route: self.at,
                    hedge: false,
                    input,
                    first,
                    stream,
                    trace,
                },
                Err(e) => {
                    trace.failed(&e);
                    return Err(e.into());
                }
            },
            Some(after) => {
                let primary = hedge::Contender {
                    route: self.at,
                    input,
                    open,
                    trace,
                };
                let (engine, call, routes, modes, cont) = (
                    (&*self.engine, &*self.generation),
                    &self.call,
                    &self.routes,
                    &self.modes,
                    &self.cont,
                );
                let next = self.at + 1;
                let (attempts, parent) = (&mut self.attempts, &self.parent);
                let hedge = || {
                    let number = *attempts + 1;
                    let contender =
                        hedge_contender(engine, call, routes, next, modes, cont, parent, number);
                    if contender.is_some() {
                        *attempts = number;
                    }
                    contender
                };
                // Boxed: the race holds two openings at once, and inline it would size every
                // request's future (they live on the heap while the head is awaited) for the
                // rare answer that hedges.
                let raced = Box::pin(hedge::race(primary, after, hedge)).await;
                self.raced(raced)?
            }
        };
        let hedge::Winner {
            route: won,
            hedge: hedged,
            input,
            first,
            stream,
            trace,
        } = winner;
        self.trace = trace;
        if let Some(mut seam) = seam {
            // Name the model the provider says is answering (unless a hedge answered instead:
            // its own seam follows).
            if let (false, Seam::Failover { model, .. }, Some(AgentEvent::StreamStart(start))) =
                (hedged, &mut seam, first.first())
            {
                model.clone_from(&start.model);
            }
            self.splicer.seam(seam, out);
        }
        if hedged {
            let (from, to) = (&route, &self.routes[won]);
            let model = match first.first() {
                Some(AgentEvent::StreamStart(start)) => start.model.clone(),
                _ => to.model.clone(),
            };
            tracing::warn!(from = %from, to = %to, "hedge answered first");
            let seam = Seam::Hedge {
                from: from.to_string(),
                to: to.to_string(),
                model,
            };
            self.splicer.seam(seam, out);
        }
        let provider = self.generation.provider(&self.routes[self.at])?.clone();
        let max = self
            .generation
            .config
            .streaming
            .retry_policy
            .max_duration_ms;
        if max > 0 {
            self.attempt_timer
                .as_mut()
                .reset(later(Instant::now(), Duration::from_millis(max)));
        }
        self.splicer.begin_attempt(input);
        let estimate_first = self.call.door.wire().input_usage_first()
            && !provider.dialect.wire().input_usage_first()
            && !self.splicer.output_started();
        let metered = out.len();
        for event in first {
            let is_start = matches!(event, AgentEvent::StreamStart(_));
            self.push(event, out);
            if is_start && estimate_first {
                // A client reading its input count at the start (Anthropic's, from
                // message_start) of an upstream reporting usage only at the end (OpenAI's):
                // start with an estimate, which the real count replaces (latest-wins).
                self.splicer.push(
                    AgentEvent::Usage(Box::new(Usage {
                        input_tokens: Some(input),
                        output_tokens: Some(0),
                        basis: UsageBasis::Estimated,
                        ..Usage::default()
                    })),
                    out,
                );
            }
        }
        self.meter.events(&out[metered..]);
        self.stream = Some(stream);
        Ok(())
    }

    /// How long the current attempt may go without content before the next route is
    /// started next to it; None when it is not hedged (hedging off, no next route, or the
    /// budget would be spent before).
    fn hedge_after(&self) -> Option<Duration> {
        let after = self.generation.hedge_after(&self.call.request.model)?;
        (self.at + 1 < self.routes.len() && self.fits_budget(after)).then_some(after)
    }

    /// Books a race: the usage of the attempts that do not go on, the failures for the
    /// breakers, and, when the hedge won, the move to its route.
    fn raced(&mut self, raced: hedge::Raced) -> Result<hedge::Winner, GatewayError> {
        for usage in &raced.spent {
            self.splicer.add_usage(usage);
        }
        if let Some((at, error)) = &raced.hedge_failed {
            tracing::warn!(route = %self.routes[*at], error = %error, "hedge failed");
            self.report_failure_of(*at, error);
        }
        let winner = raced.result?;
        if winner.hedge {
            if let Some(error) = &raced.primary_failed {
                self.report_failure_of(self.at, error);
            } else if self.pass.as_ref().is_some_and(Pass::probing) {
                // The primary was its breaker's probe and was cancelled: a probe that lost
                // to a fallback did not show the route serving again.
                self.report_failure();
            }
            let route = &self.routes[winner.route];
            let provider = self.generation.provider(route)?;
            let mode = self.generation.continuation_mode(provider);
            self.modes.entry(route.provider.clone()).or_insert(mode);
            self.at = winner.route;
            self.tries = 1;
            self.backoff = Backoff::new(&self.generation.policy);
            self.engine.failovers.fetch_add(1, Ordering::Relaxed);
        }
        Ok(winner)
    }

    /// Tells `routes[at]`'s breaker about `error` if it is the route's failure, not the
    /// client's (through the run's pass when `at` is the current route).
    fn report_failure_of(&mut self, at: usize, error: &GatewayError) {
        let route = &self.routes[at];
        let action = classify(error, self.uses_client_key(route));
        if matches!(action, Action::Client | Action::ContinueWithoutPrefill) {
            return;
        }
        if at == self.at {
            self.report_failure();
        } else {
            self.engine.breakers.failure(&route.to_string());
        }
    }
}

/// The hedge for an attempt on `routes[at - 1]`: `routes[at]`, if that route is not
/// rate-limited and its circuit breaker is closed (a hedge never takes a half-open breaker's
/// single probe: the race may cancel it before it reports). A free function over the parts of
/// the run it reads, so that the race borrows them and not the whole run with its stream.
#[allow(clippy::too_many_arguments)]
fn hedge_contender<'a>(
    (engine, generation): (&'a Engine, &'a Generation),
    call: &'a Call,
    routes: &'a [Route],
    at: usize,
    modes: &HashMap<String, Mode>,
    cont: &Continuation,
    parent: &tracing::Span,
    number: u32,
) -> Option<hedge::Contender<impl Future<Output = hedge::Opening> + 'a>> {
    let route = routes.get(at)?;
    let name = route.to_string();
    if !engine.breakers.closed(&name) || generation.upstream.backoff().blocked_for(&name).is_some()
    {
        return None;
    }
    let provider = generation.provider(route).ok()?;
    let mode = modes
        .get(&route.provider)
        .copied()
        .unwrap_or_else(|| generation.continuation_mode(provider));
    let request = continue_request(&call.request, cont, mode);
    let body = match generation.upstream_body(&request, route) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(route = %route, error = %e, "no hedge: the request does not translate");
            return None;
        }
    };
    tracing::info!(route = %route, "first event is slow: hedging");
    let trace = AttemptSpan::start(parent, number, route, provider.dialect, true);
    Some(hedge::Contender {
        route: at,
        input: crate::estimate::input_tokens(&request),
        open: generation
            .upstream
            .open(route, provider, body, &call.key, &call.forward)
            .instrument(trace.context().clone()),
        trace,
    })
}

mod stream;

#[cfg(test)]
pub(super) mod tests;
