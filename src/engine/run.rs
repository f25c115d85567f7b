//! One answer's attempts: open, stream, and on failure retry, fail over or continue.
//!
//! The loop follows the table of [`crate::resilience::classify`]: a transient fault is retried
//! on the same route after a jittered backoff (at least the provider's Retry-After), up to
//! `maxAttempts`; then, or at once for faults retrying cannot fix, the next route of the plan
//! whose circuit breaker lets it through takes over. Everything is bounded by the request's
//! time-to-fallback budget. Once output reached the client, each new attempt is asked to
//! continue the answer, and the splicer joins it to what was sent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use providers::{AgentEvent, Dialect, Usage};
use tokio::time::{Instant, Sleep};

use super::{Answer, Call, Engine, Events, unix_now};
use crate::error::GatewayError;
use crate::limit::Permit;
use crate::resilience::breaker::Pass;
use crate::resilience::classify::{Action, classify};
use crate::resilience::continuation::{Mode, continue_request};
use crate::resilience::{Backoff, later};
use crate::route::{self, Route};
use crate::splice::{Continuation, Seam, Splicer};
use crate::upstream::EventStream;

/// The state of one answer across its attempts.
struct Run {
    engine: Arc<Engine>,
    call: Call,
    request_id: String,
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
}

/// Opens the first attempt that answers and returns the answer's event stream.
///
/// `prior`: the events a client already has of this answer (a stream recovered from the
/// journal after a restart); the answer then continues after them, as after a break.
pub(super) async fn start(
    engine: Arc<Engine>,
    call: Call,
    request_id: String,
    permit: Permit,
    prior: &[AgentEvent],
) -> Result<Answer, GatewayError> {
    let plan = route::plan(engine.config(), &call.request.model)?;
    let policy = engine.policy;
    let hold = engine.config().streaming.retry_policy.hold_tool_calls;
    let mut run = Run {
        backoff: Backoff::new(&policy),
        budget_end: later(Instant::now(), policy.time_to_fallback),
        engine,
        call,
        request_id,
        routes: plan.routes,
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
    };
    run.at = run.first_open_route().await?;
    let mut out = Vec::new();
    let seam = (!prior.is_empty()).then(|| run.replay(prior, &mut out));
    if let Err(e) = run.attempt(&mut out, seam).await {
        run.recover(e, &mut out).await?;
    }
    let route = run.routes[run.at].clone();
    // Boxed: unfold moves its state into every step's future and back out, and a `Run` is
    // large (the splicer's maps and buffers, the timers): a pointer moves for free.
    let run = Box::new(run);
    let events = futures_util::stream::unfold((run, out), |(mut run, pending)| async move {
        let batch = if pending.is_empty() {
            run.step().await?
        } else {
            pending.into_iter().map(Ok).collect()
        };
        Some((futures_util::stream::iter(batch), (run, Vec::new())))
    })
    .flatten();
    Ok(Answer {
        route,
        events: Box::pin(events) as Events,
    })
}

impl Run {
    /// The next batch of client events; None once the answer is over.
    async fn step(&mut self) -> Option<Vec<Result<AgentEvent, GatewayError>>> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let item = match self.stream.as_mut() {
                None => None,
                Some(stream) => tokio::select! {
                    item = stream.next() => item,
                    () = self.attempt_timer.as_mut() => Some(Err(GatewayError::Timeout {
                        provider: self.routes[self.at].provider.clone(),
                        phase: crate::error::TimeoutPhase::Total,
                    })),
                },
            };
            match item {
                Some(Ok(event)) => {
                    self.push(event, &mut out);
                    if self.splicer.ended() {
                        self.report_success();
                        self.done = true;
                    }
                }
                None => {
                    // The attempt's stream ended without its stream.end: nothing more to say,
                    // and the route did not finish its answer.
                    self.report_failure();
                    self.done = true;
                }
                Some(Err(e)) => {
                    tracing::warn!(route = %self.routes[self.at], error = %e, "attempt failed");
                    if let Err(last) = self.recover(e, &mut out).await {
                        self.splicer.wind_down(&mut out);
                        self.done = true;
                        let mut batch: Vec<_> = out.into_iter().map(Ok).collect();
                        batch.push(Err(last));
                        return Some(batch);
                    }
                }
            }
            if !out.is_empty() || self.done {
                return Some(out.into_iter().map(Ok).collect());
            }
        }
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
        let event = match event {
            AgentEvent::StreamStart(mut start) => {
                start.request_id = Some(self.request_id.clone());
                start.provider = Some(self.routes[self.at].provider.clone());
                start.created.get_or_insert_with(unix_now);
                AgentEvent::StreamStart(start)
            }
            other => other,
        };
        let before = out.len();
        self.splicer.push(event, out);
        if let Some(AgentEvent::Usage(total)) = out[before..].last() {
            // The splicer reports usage summed over attempts: settle the token borrow with it.
            let used = total.input_tokens.unwrap_or(0) + total.output_tokens.unwrap_or(0);
            self.permit.settle(used);
        }
    }

    /// After a failure: retry, fail over or continue until an attempt opens, or give the
    /// error that ends the answer.
    async fn recover(
        &mut self,
        mut error: GatewayError,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), GatewayError> {
        if self.stream.take().is_some() {
            // The attempt had started: record what the client has, to continue from it.
            self.cont = self.splicer.interrupt(out);
        }
        loop {
            let route = self.routes[self.at].clone();
            let action = classify(&error, self.uses_client_key(&route));
            if !matches!(action, Action::Client | Action::ContinueWithoutPrefill) {
                self.report_failure();
            }
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
            match self.attempt(out, seam).await {
                Ok(()) => return Ok(()),
                Err(e) => error = e,
            }
        }
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
        if self.tries >= self.engine.policy.max_attempts {
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
        self.backoff = Backoff::new(&self.engine.policy);
        let to = &self.routes[next];
        self.engine.failovers.fetch_add(1, Ordering::Relaxed);
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
            if self.engine.upstream.backoff().blocked_for(&route).is_some() {
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
            let backoff = self.engine.upstream.backoff();
            let limited = self
                .routes
                .iter()
                .filter_map(|r| backoff.limited(&r.to_string()))
                .min_by_key(|l| l.retry_after);
            if let Some(limited) = limited {
                if !self.fits_budget(limited.retry_after) {
                    return Err(GatewayError::RateLimited(limited));
                }
                tracing::info!(
                    model = %self.call.request.model,
                    wait_ms = limited.retry_after.as_millis() as u64,
                    "every route is rate-limited upstream: waiting for the soonest"
                );
                tokio::time::sleep(limited.retry_after).await;
                continue;
            }
            let breakers = &self.engine.breakers;
            let retry_after = self
                .routes
                .iter()
                .filter_map(|r| breakers.retry_in(&r.to_string()))
                .min();
            return Err(GatewayError::Unavailable {
                message: format!(
                    "every route for {:?} is cooling down after repeated failures",
                    self.call.request.model
                ),
                retry_after,
            });
        }
    }

    fn uses_client_key(&self, route: &Route) -> bool {
        self.engine.provider(route).is_ok_and(|p| {
            p.pass_through_client_key && p.dialect == self.call.door && self.call.key.key.is_some()
        })
    }

    /// One attempt on the current route: translate, send, wait for its first events, and
    /// hand them to the splicer (after the seam, when there is one).
    async fn attempt(
        &mut self,
        out: &mut Vec<AgentEvent>,
        seam: Option<Seam>,
    ) -> Result<(), GatewayError> {
        self.tries += 1;
        let route = self.routes[self.at].clone();
        let provider = self.engine.provider(&route)?.clone();
        let mode = *self
            .modes
            .entry(route.provider.clone())
            .or_insert_with(|| self.engine.continuation_mode(&provider));
        let request = continue_request(&self.call.request, &self.cont, mode);
        let body = self.engine.upstream_body(&request, &route)?;
        let (first, stream) = self
            .engine
            .upstream
            .open(&route, &provider, body, &self.call.key, &self.call.forward)
            .await?;
        if let Some(mut seam) = seam {
            // Name the model the provider says is answering.
            if let (Seam::Failover { model, .. }, Some(AgentEvent::StreamStart(start))) =
                (&mut seam, first.first())
            {
                model.clone_from(&start.model);
            }
            self.splicer.seam(seam, out);
        }
        let max = self.engine.config().streaming.retry_policy.max_duration_ms;
        if max > 0 {
            self.attempt_timer
                .as_mut()
                .reset(Instant::now() + Duration::from_millis(max));
        }
        let estimate = (self.call.door == Dialect::Anthropic
            && provider.dialect == Dialect::OpenAi
            && !self.splicer.output_started())
        .then(|| crate::estimate::input_tokens(&self.call.request));
        for event in first {
            let is_start = matches!(event, AgentEvent::StreamStart(_));
            self.push(event, out);
            if is_start && let Some(input) = estimate {
                // An Anthropic client reads its input count from message_start, but an
                // OpenAI-dialect upstream reports usage only at the end: start with an
                // estimate, which the real count replaces (usage is latest-wins).
                self.splicer.push(
                    AgentEvent::Usage(Usage {
                        input_tokens: Some(input),
                        output_tokens: Some(0),
                        ..Usage::default()
                    }),
                    out,
                );
            }
        }
        self.stream = Some(stream);
        Ok(())
    }
}
