//! The `upstream` span: one HTTP call to a provider, from sending the request to the end of
//! its body, with the OpenTelemetry HTTP-client and GenAI attributes (docs/observability.md,
//! "Traces"). Fields are declared up front and recorded as they become known, so a call
//! costs one span whether or not traces are exported, and nothing per token.

use std::borrow::Cow;

use providers::Dialect;
use tracing::Span;
use tracing::field::Empty;

use crate::error::{ConnectionFault, GatewayError, TimeoutPhase};
use crate::telemetry::CALL_SPANS;

/// `gen_ai.operation.name` of every call the gateway makes upstream.
pub const GEN_AI_OPERATION: &str = "chat";

/// The `gen_ai.provider.name` (and, for backends on older conventions, `gen_ai.system`) of
/// a provider speaking `dialect`: its platform's (`openai` for Chat Completions and
/// Responses, `anthropic`).
pub fn gen_ai_provider(dialect: Dialect) -> &'static str {
    dialect.wire().platform().as_str()
}

/// The `error.type` of `error`: a short, bounded name (an HTTP status for a provider's
/// error answer), never the error's free-form text.
pub fn error_type(error: &GatewayError) -> Cow<'static, str> {
    let name = match error {
        GatewayError::UpstreamStatus { status, .. }
        | GatewayError::CredentialsRefused { status, .. } => {
            return Cow::Owned(status.to_string());
        }
        GatewayError::Connection { fault, .. } => match fault {
            ConnectionFault::Refused => "connection_refused",
            ConnectionFault::Dns => "dns",
            ConnectionFault::Tls => "tls",
            ConnectionFault::Connect => "connect",
            ConnectionFault::ClosedBeforeResponse => "closed_before_response",
            ConnectionFault::ClosedDuringBody => "closed_during_body",
            ConnectionFault::NotJson => "not_json",
        },
        GatewayError::Timeout { phase, .. } => match phase {
            TimeoutPhase::Connect => "timeout_connect",
            TimeoutPhase::FirstByte => "timeout_first_byte",
            TimeoutPhase::Idle => "timeout_idle",
            TimeoutPhase::Total => "timeout_total",
        },
        GatewayError::Stream { source, .. } => match source {
            providers::DecodeError::Upstream { .. } => "upstream_error_event",
            providers::DecodeError::Incomplete { .. } => "incomplete_stream",
            _ => "malformed_stream",
        },
        GatewayError::Request(_) => "untranslatable_request",
        GatewayError::RateLimited(_) => "rate_limited",
        GatewayError::Unavailable { .. } => "unavailable",
        GatewayError::Untranslatable { .. } => "untranslatable_answer",
        GatewayError::Internal(_) => "internal",
        _ => "_OTHER",
    };
    Cow::Borrowed(name)
}

/// Records a count as OpenTelemetry wants integers: signed (tracing-opentelemetry would
/// write an unsigned one as text).
pub fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Marks `span` failed with `error` (`error.type`, and an error status for the exporter).
pub fn record_error(span: &Span, error: &GatewayError) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type(error).as_ref());
    span.record("otel.status_code", "ERROR");
}

/// The span of a streamed answer's call of `provider` (named `name`, speaking `dialect`) to
/// `url` for `model`, a child of the current span (the attempt's).
pub(super) fn call(name: &str, dialect: Dialect, url: &str, model: &str) -> Span {
    http_call(
        name,
        dialect,
        "POST",
        url,
        Some(GEN_AI_OPERATION),
        Some(model),
    )
}

/// The span of any HTTP call to a provider: `operation` and `model` when it is a GenAI
/// operation on a known model (a streamed answer, a token count), none for a pass-through.
/// The URL's query and credentials are left out: only the host, port and path are recorded.
pub(super) fn http_call(
    name: &str,
    dialect: Dialect,
    method: &str,
    url: &str,
    operation: Option<&str>,
    model: Option<&str>,
) -> Span {
    let uri: Option<http::Uri> = url.parse().ok();
    let path = uri.as_ref().map_or("", http::Uri::path);
    let host = uri.as_ref().and_then(http::Uri::host).unwrap_or_default();
    let port = uri.as_ref().and_then(|u| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })
    });
    let system = gen_ai_provider(dialect);
    tracing::debug_span!(
        target: CALL_SPANS,
        "upstream",
        "otel.kind" = "client",
        provider = name,
        "http.request.method" = method,
        "url.path" = path,
        "server.address" = host,
        "server.port" = port.map(i64::from),
        "http.response.status_code" = Empty,
        "gen_ai.operation.name" = operation,
        "gen_ai.provider.name" = system,
        "gen_ai.system" = system,
        "gen_ai.request.model" = model,
        "error.type" = Empty,
        "otel.status_code" = Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_bounded_names() {
        let errors = [
            GatewayError::UpstreamStatus {
                provider: "p".into(),
                status: 503,
                error_type: "overloaded_error".into(),
                message: "free text that must not show".into(),
                retry_after: None,
            },
            GatewayError::Connection {
                provider: "p".into(),
                fault: ConnectionFault::Refused,
            },
            GatewayError::Timeout {
                provider: "p".into(),
                phase: TimeoutPhase::Idle,
            },
            GatewayError::Internal("free text".into()),
        ];
        let names: Vec<_> = errors.iter().map(error_type).collect();
        assert_eq!(
            names,
            ["503", "connection_refused", "timeout_idle", "internal"]
        );
    }

    #[test]
    fn providers_are_named_by_platform() {
        assert_eq!(gen_ai_provider(Dialect::OpenAi), "openai");
        assert_eq!(gen_ai_provider(Dialect::OpenAiResponses), "openai");
        assert_eq!(gen_ai_provider(Dialect::Anthropic), "anthropic");
    }
}
