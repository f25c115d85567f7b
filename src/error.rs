//! Gateway errors: what failed and where, which HTTP status it earns, and how it looks in each
//! door's dialect. Provider keys never appear in any of them.

use std::time::Duration;

use crate::hub::HubError;
use http::StatusCode;
use providers::event::ErrorInfo;
use providers::request::RequestError;
use providers::{DecodeError, Dialect};
use serde_json::{Value, json};

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request body is not JSON (or not an object).
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The request is JSON but not a valid request of the door's dialect, or it cannot be
    /// translated to the chosen upstream's dialect.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No alias, provider or model family matches the requested model.
    #[error("model {model:?} is not configured: no alias, provider prefix or known family matches")]
    UnknownModel {
        /// What the client asked for.
        model: String,
    },
    /// No such endpoint.
    #[error("no endpoint at {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The request body exceeds `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The provider's key variable is not set (and the client brought no key of its own).
    #[error(
        "provider {provider:?} has no API key: environment variable {env_var} is not set on the gateway"
    )]
    MissingKey {
        /// Provider name.
        provider: String,
        /// The variable's name (never its value).
        env_var: String,
    },
    /// The provider answered with an HTTP error.
    #[error("provider {provider:?} answered {status}: {message}")]
    UpstreamStatus {
        /// Provider name.
        provider: String,
        /// The provider's status.
        status: u16,
        /// The provider's error type (`invalid_request_error`, `rate_limit_error`, ...).
        error_type: String,
        /// The provider's message.
        message: String,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The provider could not be reached.
    #[error("provider {provider:?} is unreachable: {reason}")]
    Unreachable {
        /// Provider name.
        provider: String,
        /// Connection error, without URL credentials.
        reason: String,
    },
    /// The provider took too long.
    #[error("provider {provider:?} timed out {phase}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// Which timer fired.
        phase: TimeoutPhase,
    },
    /// The provider's stream broke, was malformed, or carried an error event.
    #[error("provider {provider:?}: {source}")]
    Stream {
        /// Provider name.
        provider: String,
        /// What the decoder found.
        source: DecodeError,
    },
    /// A rate limit (the gateway's own, or a provider's that every route is backing off from).
    #[error(transparent)]
    RateLimited(#[from] crate::limit::Limited),
    /// Every route is skipped by its circuit breaker.
    #[error("{message}{}", retry_in(.retry_after))]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// When the soonest route lets a request through (the `Retry-After` of the 503).
        retry_after: Option<Duration>,
    },
    /// The upstream's answer cannot be expressed in the client's dialect (e.g. several choices
    /// for an Anthropic client).
    #[error("the upstream's answer cannot be expressed for this client: {0}")]
    Untranslatable(String),
    /// A stream followed through the hub ended with this error event.
    #[error("{}", .0.message)]
    Ended(ErrorInfo),
    /// A stream of the hub cannot be found, resumed or named as asked.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// A WebSocket upgrade the gateway refuses (e.g. no subprotocol it speaks).
    #[error("{0}")]
    Upgrade(String),
    /// A bug or an impossible state inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `; retry in N s` when a wait is known.
fn retry_in(after: &Option<Duration>) -> String {
    after.map_or_else(String::new, |d| {
        format!("; retry in {} s", retry_after_secs(d))
    })
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Which of an upstream call's timers fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutPhase {
    /// TCP/TLS connect.
    #[error("connecting")]
    Connect,
    /// Waiting for the first SSE event after sending the request.
    #[error("waiting for the first event")]
    FirstByte,
    /// Silence between two chunks of a started stream.
    #[error("between chunks (stream went idle)")]
    Idle,
    /// The attempt streamed longer than `maxDurationMs`.
    #[error("streaming past its maximum duration")]
    Total,
}

impl GatewayError {
    /// The HTTP status a client gets when this happens before the response started.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MalformedJson(_)
            | GatewayError::Request(_)
            | GatewayError::Upgrade(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::MissingKey { .. } | GatewayError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            GatewayError::UpstreamStatus { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            GatewayError::Unreachable { .. }
            | GatewayError::Stream { .. }
            | GatewayError::Ended(_)
            | GatewayError::Untranslatable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Hub(e) => match e {
                HubError::UnknownStream { .. } => StatusCode::NOT_FOUND,
                HubError::SeqBeyondEnd { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                HubError::DuplicateStream { .. } => StatusCode::CONFLICT,
                HubError::InvalidId { .. } => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The error type name in Anthropic's vocabulary (also used as the OpenAI `type`, where
    /// OpenAI's own vocabulary has no better word).
    fn anthropic_type(&self) -> String {
        match self {
            GatewayError::MalformedJson(_)
            | GatewayError::Request(_)
            | GatewayError::Upgrade(_) => "invalid_request_error".into(),
            GatewayError::UnknownModel { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::Hub(HubError::UnknownStream { .. }) => "not_found_error".into(),
            GatewayError::Hub(_) => "invalid_request_error".into(),
            GatewayError::BodyTooLarge { .. } => "request_too_large".into(),
            GatewayError::UpstreamStatus { error_type, .. } => error_type.clone(),
            GatewayError::Stream { source, .. } => source.to_error_info().code,
            GatewayError::Ended(info) => info.code.clone(),
            GatewayError::Timeout { .. } => "timeout_error".into(),
            GatewayError::Unavailable { .. } => "overloaded_error".into(),
            GatewayError::RateLimited(_) => "rate_limit_error".into(),
            GatewayError::MissingKey { .. }
            | GatewayError::Unreachable { .. }
            | GatewayError::Untranslatable(_)
            | GatewayError::Internal(_) => "api_error".into(),
        }
    }

    /// OpenAI's `error.type` and `error.code` for this error.
    fn openai_type_and_code(&self) -> (String, Option<String>) {
        match self {
            GatewayError::MalformedJson(_) => ("invalid_request_error".into(), None),
            GatewayError::Upgrade(_) => (
                "invalid_request_error".into(),
                Some("websocket_upgrade_refused".into()),
            ),
            GatewayError::Request(e) => ("invalid_request_error".into(), Some(e.code().into())),
            GatewayError::UnknownModel { .. } => (
                "invalid_request_error".into(),
                Some("model_not_found".into()),
            ),
            GatewayError::NotFound { .. } => {
                ("invalid_request_error".into(), Some("not_found".into()))
            }
            GatewayError::BodyTooLarge { .. } => (
                "invalid_request_error".into(),
                Some("request_too_large".into()),
            ),
            GatewayError::UpstreamStatus { error_type, .. } => (error_type.clone(), None),
            GatewayError::MissingKey { .. } => {
                ("server_error".into(), Some("missing_provider_key".into()))
            }
            GatewayError::Unreachable { .. } => {
                ("server_error".into(), Some("upstream_unreachable".into()))
            }
            GatewayError::Timeout { .. } => {
                ("server_error".into(), Some("upstream_timeout".into()))
            }
            GatewayError::Stream { source, .. } => {
                ("server_error".into(), Some(source.to_error_info().code))
            }
            GatewayError::Ended(info) => ("server_error".into(), Some(info.code.clone())),
            GatewayError::Untranslatable(_) => {
                ("server_error".into(), Some("untranslatable_answer".into()))
            }
            GatewayError::Unavailable { .. } => {
                ("server_error".into(), Some("upstreams_unavailable".into()))
            }
            GatewayError::RateLimited(_) => ("requests".into(), Some("rate_limit_exceeded".into())),
            GatewayError::Internal(_) => ("server_error".into(), None),
            GatewayError::Hub(e) => (
                "invalid_request_error".into(),
                Some(
                    match e {
                        HubError::UnknownStream { .. } => "stream_not_found",
                        HubError::SeqBeyondEnd { .. } => "seq_beyond_end",
                        HubError::DuplicateStream { .. } => "duplicate_stream",
                        HubError::InvalidId { .. } => "invalid_stream_id",
                    }
                    .into(),
                ),
            ),
        }
    }

    /// The response body in `door`'s dialect.
    pub fn body(&self, door: Dialect) -> Value {
        if let GatewayError::Request(e) = self {
            return match door {
                Dialect::OpenAi => e.to_openai_error_body(),
                Dialect::Anthropic => e.to_anthropic_error_body(),
            };
        }
        if let GatewayError::RateLimited(l) = self {
            return l.body(door);
        }
        let message = self.to_string();
        match door {
            Dialect::OpenAi => {
                let (ty, code) = self.openai_type_and_code();
                json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
            }
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": message}})
            }
        }
    }

    /// The `error` event for this failure once a stream has started.
    pub fn to_error_info(&self) -> ErrorInfo {
        match self {
            GatewayError::Ended(info) => info.clone(),
            GatewayError::Stream { source, .. } => {
                let mut info = source.to_error_info();
                info.message = self.to_string();
                info
            }
            other => ErrorInfo {
                code: other.anthropic_type(),
                message: other.to_string(),
                retryable: other.retryable(),
            },
        }
    }

    /// Whether the same request may succeed when tried again (later, or elsewhere).
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamStatus { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500..=599)
            }
            GatewayError::Unreachable { .. }
            | GatewayError::Timeout { .. }
            | GatewayError::Unavailable { .. }
            | GatewayError::RateLimited(_) => true,
            GatewayError::Stream { source, .. } => source.to_error_info().retryable,
            GatewayError::Ended(info) => info.retryable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_in_the_door_dialect_with_their_status() {
        let e = GatewayError::UnknownModel {
            model: "nope".into(),
        };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let oa = e.body(Dialect::OpenAi);
        assert_eq!(oa["error"]["code"], "model_not_found");
        assert!(oa["error"]["message"].as_str().unwrap().contains("nope"));
        let an = e.body(Dialect::Anthropic);
        assert_eq!(an["type"], "error");
        assert_eq!(an["error"]["type"], "not_found_error");
    }

    #[test]
    fn missing_key_names_the_variable() {
        let e = GatewayError::MissingKey {
            provider: "openai".into(),
            env_var: "OPENAI_API_KEY".into(),
        };
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.to_string().contains("OPENAI_API_KEY"));
    }

    #[test]
    fn upstream_status_passes_through() {
        let e = GatewayError::UpstreamStatus {
            provider: "anthropic".into(),
            status: 429,
            error_type: "rate_limit_error".into(),
            message: "slow down".into(),
            retry_after: None,
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retryable());
        assert_eq!(
            e.body(Dialect::Anthropic)["error"]["type"],
            "rate_limit_error"
        );
        assert_eq!(e.body(Dialect::OpenAi)["error"]["type"], "rate_limit_error");
    }
}
