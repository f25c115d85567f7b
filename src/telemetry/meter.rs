//! One answer's measures, taken by the engine as the answer goes: attempts, retries,
//! failovers and continuations as they happen, time to first token and inter-token gaps per
//! content delta, and at the end the answer's duration and tokens. Filled into the request's
//! [`Observed`] record (the access line) and into the [`Metrics`].

use std::sync::Arc;
use std::time::Instant;

use providers::{AgentEvent, Usage, UsageBasis};

use super::metrics::{Metrics, Reason, RouteMetrics, route_label};
use super::request::{Observed, Tokens};
use crate::config::Config;
use crate::route::Route;

/// See the module doc.
#[derive(Debug)]
pub struct Meter {
    observed: Observed,
    metrics: Option<Arc<Metrics>>,
    /// The model asked for: it decides the route labels.
    model: String,
    started: Instant,
    /// The current route's handles (None before the first attempt or when not counted).
    route: Option<RouteMetrics>,
    last_token: Option<Instant>,
}

impl Meter {
    /// The meter of an answer to `observed`'s request for `model`.
    pub fn new(observed: Observed, model: &str) -> Meter {
        Meter {
            metrics: observed.metrics().cloned(),
            observed,
            model: model.to_owned(),
            started: Instant::now(),
            route: None,
            last_token: None,
        }
    }

    /// The request's record.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// An attempt starts on `route`; `continuing` when it continues an answer the client
    /// already has part of (broken by that reason).
    pub fn attempt(&mut self, config: &Config, route: &Route, continuing: Option<Reason>) {
        let label = route_label(config, &self.model, route);
        self.observed.attempt(route, &label);
        let Some(metrics) = &self.metrics else { return };
        if self.route.as_ref().is_none_or(|r| r.label() != label) {
            self.route = Some(metrics.route(label));
        }
        if let Some(route) = &self.route {
            metrics.attempt(route);
            if let Some(reason) = continuing {
                metrics.continuation(route, reason);
            }
        }
    }

    /// The current route is retried after `reason`.
    pub fn retry(&self, reason: Reason) {
        if let (Some(metrics), Some(route)) = (&self.metrics, &self.route) {
            metrics.retry(route, reason);
        }
    }

    /// The answer leaves the current route after `reason`.
    pub fn failover(&self, reason: Reason) {
        if let (Some(metrics), Some(route)) = (&self.metrics, &self.route) {
            metrics.failover(route, reason);
        }
    }

    /// Events on their way to the client: the first content delta is the time to first
    /// token, each next one a gap. Events handed over together arrived together: one clock
    /// read for all of them.
    pub fn events(&mut self, events: &[AgentEvent]) {
        let mut now = None;
        for event in events {
            if !is_token(event) {
                continue;
            }
            let now = *now.get_or_insert_with(Instant::now);
            match self.last_token.replace(now) {
                None => {
                    self.observed.first_token();
                    if let Some(route) = &self.route {
                        route.first_token(now.duration_since(self.started));
                    }
                }
                Some(last) => {
                    if let Some(route) = &self.route {
                        route.gap(now.duration_since(last));
                    }
                }
            }
        }
    }

    /// The answer ended with an error after it started.
    pub fn interrupted(&self) {
        self.observed.interrupted();
    }

    /// The answer is over (finished, failed or abandoned) and cost `usage`.
    pub fn finish(&mut self, usage: &Usage) {
        let tokens = Tokens {
            input: usage.input_tokens.unwrap_or(0),
            output: usage.output_tokens.unwrap_or(0),
            estimated: usage.basis == UsageBasis::Estimated,
        };
        if usage.input_tokens.is_some() || usage.output_tokens.is_some() {
            self.observed.tokens(tokens);
        }
        if let (Some(metrics), Some(route)) = (&self.metrics, self.route.take()) {
            route.stream_duration(self.started.elapsed());
            metrics.tokens(route.label(), tokens.input, tokens.output, tokens.estimated);
        }
    }
}

/// Whether `event` carries generated content (a token, as clients perceive it).
fn is_token(event: &AgentEvent) -> bool {
    matches!(
        event,
        AgentEvent::TextDelta { .. }
            | AgentEvent::RefusalDelta { .. }
            | AgentEvent::ReasoningDelta { .. }
            | AgentEvent::ToolCallDelta { .. }
            | AgentEvent::NativeDelta { .. }
    )
}
