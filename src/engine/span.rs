//! The `attempt` span: one try of one route for an answer (a retry, a failover, a hedge and
//! a continuation are each an attempt of their own), a child of the request's span, parent
//! of the attempt's `upstream` call span. It records the GenAI attributes as they become
//! known: the answering model at `stream.start`; usage and finish reason once, when the
//! attempt ends (nothing is recorded per token). docs/observability.md, "Traces".

use providers::{AgentEvent, Dialect, FinishReason};
use tracing::Span;
use tracing::field::Empty;

use crate::error::GatewayError;
use crate::route::Route;
use crate::telemetry::CALL_SPANS;
use crate::upstream::span::{GEN_AI_OPERATION, gen_ai_provider, int, record_error};

/// How an attempt ended, as recorded in its `outcome` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The route finished the answer.
    Ok,
    /// The attempt failed (its error is in `error.type`).
    Error,
    /// Another attempt of a hedge race answered first.
    LostRace,
    /// The answer was abandoned while the attempt ran (the client left).
    Abandoned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::LostRace => "lost_race",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// One attempt's span and what it saw of the answer, recorded when it ends.
#[derive(Debug)]
pub(super) struct AttemptSpan {
    span: Span,
    /// What the attempt's work runs in ([`AttemptSpan::context`]).
    context: Span,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: Option<FinishReason>,
    ended: bool,
}

impl AttemptSpan {
    /// No attempt (before the first one): records nothing.
    pub(super) fn none() -> AttemptSpan {
        AttemptSpan {
            span: Span::none(),
            context: Span::none(),
            input_tokens: None,
            output_tokens: None,
            finish: None,
            ended: true,
        }
    }

    /// Starts the `number`th attempt of an answer (1-based, across routes) on `route`, whose
    /// provider speaks `dialect`, under `parent` (the request's span).
    pub(super) fn start(
        parent: &Span,
        number: u32,
        route: &Route,
        dialect: Dialect,
        hedge: bool,
    ) -> AttemptSpan {
        let system = gen_ai_provider(dialect);
        let span = tracing::debug_span!(
            target: CALL_SPANS,
            parent: parent,
            "attempt",
            attempt = i64::from(number),
            route = %route,
            provider = route.provider.as_str(),
            model = route.model.as_str(),
            hedge,
            outcome = Empty,
            "gen_ai.operation.name" = GEN_AI_OPERATION,
            "gen_ai.provider.name" = system,
            "gen_ai.system" = system,
            "gen_ai.request.model" = route.model.as_str(),
            "gen_ai.response.model" = Empty,
            "gen_ai.usage.input_tokens" = Empty,
            "gen_ai.usage.output_tokens" = Empty,
            "gen_ai.response.finish_reasons" = Empty,
            "error.type" = Empty,
            "otel.status_code" = Empty,
        );
        // Without a trace exporter and with call spans filtered out of the logs, the span is
        // disabled: the attempt's work then runs in the request's span, so that its log lines
        // still carry the request id.
        let context = if span.is_disabled() {
            parent.clone()
        } else {
            span.clone()
        };
        AttemptSpan {
            span,
            context,
            input_tokens: None,
            output_tokens: None,
            finish: None,
            ended: false,
        }
    }

    /// The span to instrument the attempt's work with: its own, or the request's when its own
    /// is disabled.
    pub(super) fn context(&self) -> &Span {
        &self.context
    }

    /// Notes what `event` (from this attempt's provider) says about the answer.
    pub(super) fn observe(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::StreamStart(start) => {
                self.span
                    .record("gen_ai.response.model", start.model.as_str());
            }
            AgentEvent::Usage(usage) => {
                // Providers report usage in parts (Anthropic: input first, output at the
                // end); the latest value of each count wins.
                self.input_tokens = usage.input_tokens.or(self.input_tokens);
                self.output_tokens = usage.output_tokens.or(self.output_tokens);
            }
            AgentEvent::StreamEnd(end) => self.finish = Some(end.reason),
            _ => {}
        }
    }

    /// The attempt finished the answer.
    pub(super) fn succeeded(&mut self) {
        self.end(Outcome::Ok);
    }

    /// The attempt failed with `error`.
    pub(super) fn failed(&mut self, error: &GatewayError) {
        if self.ended {
            return;
        }
        record_error(&self.span, error);
        self.end(Outcome::Error);
    }

    /// The attempt's stream ended without its `stream.end`.
    pub(super) fn cut(&mut self) {
        if self.ended {
            return;
        }
        self.span.record("error.type", "incomplete_stream");
        self.span.record("otel.status_code", "ERROR");
        self.end(Outcome::Error);
    }

    /// Another attempt answered first.
    pub(super) fn lost_race(&mut self) {
        self.end(Outcome::LostRace);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        let span = &self.span;
        span.record("outcome", outcome.as_str());
        if let Some(n) = self.input_tokens {
            span.record("gen_ai.usage.input_tokens", int(n));
        }
        if let Some(n) = self.output_tokens {
            span.record("gen_ai.usage.output_tokens", int(n));
        }
        if let Some(reason) = self.finish {
            span.record("gen_ai.response.finish_reasons", finish_reason(reason));
        }
    }
}

impl Drop for AttemptSpan {
    /// An attempt still running when its answer is dropped was abandoned.
    fn drop(&mut self) {
        self.end(Outcome::Abandoned);
    }
}

/// The OpenTelemetry GenAI finish reason of `reason`.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Refusal => "refusal",
        FinishReason::PauseTurn => "pause_turn",
        FinishReason::Error => "error",
    }
}
