//! What to do about a failed attempt: try the same route again, move to the next route, or
//! tell the client. Decided per error; docs/resilience.md has the table.

use crate::error::{GatewayError, TimeoutPhase};

/// The engine's answer to one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A transient fault: try the same route again after a backoff (then fail over when its
    /// attempts are spent).
    Retry,
    /// This route cannot answer this request: go to the next route at once.
    Failover,
    /// The same route rejected the assistant prefill: continue there with an instruction.
    ContinueWithoutPrefill,
    /// The client's own error (or one another model would only launder): report it.
    Client,
}

/// Classifies `error`. `client_key`: the request used the client's own provider key, so an
/// authentication failure is the client's to fix, not a reason to try elsewhere.
pub fn classify(error: &GatewayError, client_key: bool) -> Action {
    match error {
        GatewayError::MalformedJson(_)
        | GatewayError::Request(_)
        | GatewayError::Upgrade(_)
        | GatewayError::UnknownModel { .. }
        | GatewayError::NotFound { .. }
        | GatewayError::BodyTooLarge { .. }
        | GatewayError::BodyTimeout { .. }
        | GatewayError::TooManyJsonValues { .. }
        | GatewayError::Unauthenticated(_)
        | GatewayError::ModelNotAllowed { .. }
        | GatewayError::Untranslatable { .. }
        | GatewayError::Unavailable { .. }
        | GatewayError::RateLimited(_)
        | GatewayError::Hub(_)
        | GatewayError::Ended(_)
        | GatewayError::ShuttingDown { .. }
        | GatewayError::Internal(_) => Action::Client,
        // Another provider may well have its key configured (and accepted).
        GatewayError::MissingKey { .. } | GatewayError::CredentialsRefused { .. } => {
            Action::Failover
        }
        GatewayError::Connection { .. } => Action::Retry,
        GatewayError::Timeout { phase, .. } => match phase {
            TimeoutPhase::Connect => Action::Retry,
            // It accepted the request and then said nothing: asking it again only waits
            // another full timer.
            TimeoutPhase::FirstByte | TimeoutPhase::Idle | TimeoutPhase::Total => Action::Failover,
        },
        GatewayError::Stream { source, .. } => match source {
            providers::DecodeError::TooLarge { .. } => Action::Client,
            providers::DecodeError::Upstream { error, .. } if !error.retryable => {
                upstream_400(&error.code, &error.message)
            }
            _ => Action::Retry,
        },
        GatewayError::UpstreamStatus {
            status,
            error_type,
            message,
            ..
        } => match status {
            400 | 422 => upstream_400(error_type, message),
            401 | 403 if client_key => Action::Client,
            401 | 403 | 404 => Action::Failover,
            408 | 409 | 429 => Action::Retry,
            413 => Action::Client,
            500..=599 => Action::Retry,
            _ => Action::Client,
        },
    }
}

/// A request the provider refused: a context-length refusal fails over (a model with a
/// larger window may take it), a refused prefill continues another way, a content-policy
/// refusal goes to the client (another model would only launder it), and anything else is the
/// client's request.
fn upstream_400(code: &str, message: &str) -> Action {
    let text = format!("{code} {message}").to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if any(&[
        "prefill",
        "final assistant content",
        "assistant message prefill",
    ]) {
        Action::ContinueWithoutPrefill
    } else if any(&[
        "content_policy",
        "content policy",
        "content_filter",
        "safety system",
    ]) {
        Action::Client
    } else if any(&[
        "context_length_exceeded",
        "context length",
        "context window",
        "prompt is too long",
        "too many tokens",
        "maximum context",
    ]) {
        Action::Failover
    } else {
        Action::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, error_type: &str, message: &str) -> GatewayError {
        GatewayError::UpstreamStatus {
            provider: "p".into(),
            status,
            error_type: error_type.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn the_documented_table() {
        let cases = [
            (status(429, "rate_limit_error", "slow"), Action::Retry),
            (status(529, "overloaded_error", "busy"), Action::Retry),
            (status(503, "api_error", "x"), Action::Retry),
            (
                status(
                    400,
                    "invalid_request_error",
                    "prompt is too long: 250000 tokens",
                ),
                Action::Failover,
            ),
            (
                status(
                    400,
                    "invalid_request_error",
                    "This model's maximum context length is 128000",
                ),
                Action::Failover,
            ),
            (
                status(
                    400,
                    "invalid_request_error",
                    "rejected by our content_policy",
                ),
                Action::Client,
            ),
            (
                status(
                    400,
                    "invalid_request_error",
                    "This model does not support assistant message prefill",
                ),
                Action::ContinueWithoutPrefill,
            ),
            (
                status(400, "invalid_request_error", "temperature"),
                Action::Client,
            ),
            (
                status(401, "authentication_error", "bad key"),
                Action::Failover,
            ),
            (status(404, "not_found_error", "model"), Action::Failover),
            (
                GatewayError::Timeout {
                    provider: "p".into(),
                    phase: TimeoutPhase::FirstByte,
                },
                Action::Failover,
            ),
            (
                GatewayError::Connection {
                    provider: "p".into(),
                    fault: crate::error::ConnectionFault::Refused,
                },
                Action::Retry,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(classify(&error, false), want, "{error}");
        }
        assert_eq!(
            classify(&status(401, "authentication_error", "bad"), true),
            Action::Client
        );
    }
}
