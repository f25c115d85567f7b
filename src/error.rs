//! Gateway errors: what failed and where, which HTTP status it earns, and how it looks in each
//! door's dialect. Provider keys never appear in any of them.
//!
//! The `Display` text of every error is what a client reads (in an error body, a stream's
//! `error` event, a WebSocket `error` frame, a seam's reason): a stable sentence in the
//! gateway's words. Transport error chains (hyper, reqwest, io) and URLs are logged where
//! they happen and never carried here. A request that can never succeed as sent (it cannot be
//! translated for its route, or its answer cannot be written in the client's dialect) is a
//! 4xx, so that SDKs do not retry it.

use std::time::Duration;

use http::StatusCode;
use providers::error::ErrorReport;
use providers::event::ErrorInfo;
use providers::parse::ParseError;
use providers::request::RequestError;
use providers::untrusted::untrusted;
use providers::{DecodeError, Dialect};
use serde_json::Value;

mod refusal;

pub use refusal::{AuthFailure, HubError, LiveScope};

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
    #[error("model {} is not configured: no alias, provider prefix or known family matches", untrusted(.model))]
    UnknownModel {
        /// What the client asked for.
        model: String,
    },
    /// No such endpoint.
    #[error("no endpoint at {}", untrusted(.path))]
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
    /// The request body did not arrive within `server.body_read_timeout_ms`.
    #[error("the request body did not arrive within {timeout_ms} ms")]
    BodyTimeout {
        /// The configured timeout.
        timeout_ms: u64,
    },
    /// The request body holds more JSON values than `server.max_body_json_values`.
    #[error("request body holds more than {limit} JSON values")]
    TooManyJsonValues {
        /// The configured limit.
        limit: usize,
    },
    /// Gateway keys are configured and the request brought none that matches.
    #[error("{}", match .0 {
        AuthFailure::Missing => "a gateway key is required: send it as Authorization: Bearer or x-api-key",
        AuthFailure::Invalid => "the gateway key is not valid",
    })]
    Unauthenticated(AuthFailure),
    /// The request's gateway key may not use the model asked for.
    #[error("this gateway key may not use model {}", untrusted(.model))]
    ModelNotAllowed {
        /// What the client asked for.
        model: String,
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
    /// The provider refused the gateway's own key (401/403): the operator's to fix, never the
    /// client's, and the provider's words (which may quote the key) go to the log only.
    #[error("the gateway's credentials for provider {provider:?} were refused")]
    CredentialsRefused {
        /// Provider name.
        provider: String,
        /// The provider's status (401 or 403).
        status: u16,
    },
    /// The connection to the provider failed, or broke before its answer.
    #[error("provider {provider:?} {fault}")]
    Connection {
        /// Provider name.
        provider: String,
        /// What happened to the connection.
        fault: ConnectionFault,
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
    /// for an Anthropic client): asking again gets the same answer, so it is the client's to
    /// change (another model or door).
    #[error(
        "the answer cannot be written in the {door} dialect: it has {what}; ask another model or use the other door"
    )]
    Untranslatable {
        /// The client's dialect.
        door: Dialect,
        /// What the dialect cannot express.
        what: String,
    },
    /// A stream followed through the hub ended with this error event.
    #[error("{}", .0.message)]
    Ended(ErrorInfo),
    /// A stream of the hub cannot be found, resumed or named as asked.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A WebSocket upgrade the gateway refuses (e.g. no subprotocol it speaks).
    #[error("{0}")]
    Upgrade(String),
    /// The gateway is shutting down and its grace for running answers is over: the answer
    /// ends here (asking again reaches another instance, or this one after its restart).
    #[error("the gateway is shutting down: the answer was ended after {grace_ms} ms of grace")]
    ShuttingDown {
        /// `[server] shutdown_grace_ms`.
        grace_ms: u64,
    },
    /// A bug or an impossible state inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ParseError> for GatewayError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::TooManyValues { limit } => GatewayError::TooManyJsonValues { limit },
            ParseError::NotJson(message) => GatewayError::MalformedJson(message),
            ParseError::Request(e) => GatewayError::Request(e),
        }
    }
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

/// The status of a provider's error type that says the request itself was refused.
pub(crate) fn refused_status(code: &str) -> Option<StatusCode> {
    Some(match code {
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "billing_error" => StatusCode::PAYMENT_REQUIRED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        "request_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "rate_limit_error" | "insufficient_quota" => StatusCode::TOO_MANY_REQUESTS,
        _ => return None,
    })
}

/// The Anthropic error type of an HTTP status.
pub(crate) use providers::anthropic::error_type_for as anthropic_type_for;

/// What happened to a provider connection, in words a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionFault {
    /// Nothing accepted the connection.
    #[error("is unreachable: the connection was refused")]
    Refused,
    /// The provider's host name does not resolve.
    #[error("is unreachable: its host name does not resolve")]
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    #[error("is unreachable: the TLS handshake failed")]
    Tls,
    /// Connecting failed otherwise (network unreachable, proxy).
    #[error("is unreachable: the connection could not be made")]
    Connect,
    /// Connected, then the connection was reset or closed before a response head arrived.
    #[error("closed the connection before its response began")]
    ClosedBeforeResponse,
    /// The response began, then the connection broke while its body was read.
    #[error("broke the connection while its answer was being read")]
    ClosedDuringBody,
    /// The response is not the JSON the endpoint returns.
    #[error("answered with a body that is not JSON")]
    NotJson,
}

impl ConnectionFault {
    /// Whether the provider was never reached (nothing was sent).
    pub fn unreachable(self) -> bool {
        matches!(
            self,
            ConnectionFault::Refused
                | ConnectionFault::Dns
                | ConnectionFault::Tls
                | ConnectionFault::Connect
        )
    }

    /// The OpenAI `error.code` of this fault.
    fn code(self) -> &'static str {
        match self {
            f if f.unreachable() => "upstream_unreachable",
            ConnectionFault::NotJson => "upstream_invalid_answer",
            _ => "upstream_connection_closed",
        }
    }
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
            | GatewayError::Untranslatable { .. }
            | GatewayError::Upgrade(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::BodyTooLarge { .. } | GatewayError::TooManyJsonValues { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::MissingKey { .. } | GatewayError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // Only a provider's errors are relayed as they are: anything else that is not an
            // answer (a redirect the gateway does not follow, an informational or unknown
            // code) is the provider misbehaving, a bad gateway to the client.
            GatewayError::UpstreamStatus { status, .. } => StatusCode::from_u16(*status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            // A provider that refused the request inside a 200 stream (vLLM and other
            // compatible servers do): its refusal, not a bad gateway, so SDKs do not retry it.
            GatewayError::Stream {
                source: DecodeError::Upstream { error, .. },
                ..
            } if !error.retryable => refused_status(&error.code).unwrap_or(StatusCode::BAD_REQUEST),
            GatewayError::Ended(info) if !info.retryable => {
                refused_status(&info.code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            GatewayError::Connection { .. }
            | GatewayError::CredentialsRefused { .. }
            | GatewayError::Stream { .. }
            | GatewayError::Ended(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Unavailable { .. } | GatewayError::ShuttingDown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Hub(e) => match e {
                HubError::UnknownStream { .. } => StatusCode::NOT_FOUND,
                HubError::SeqBeyondEnd { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                HubError::DuplicateStream { .. } => StatusCode::CONFLICT,
                HubError::InvalidId { .. } => StatusCode::BAD_REQUEST,
                HubError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                HubError::TooManyLive {
                    scope: LiveScope::Key,
                    ..
                } => StatusCode::TOO_MANY_REQUESTS,
                HubError::TooManyLive {
                    scope: LiveScope::Gateway,
                    ..
                } => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The error type name in Anthropic's vocabulary (also used as the OpenAI `type`, where
    /// OpenAI's own vocabulary has no better word).
    fn anthropic_type(&self) -> String {
        match self {
            GatewayError::MalformedJson(_)
            | GatewayError::Request(_)
            | GatewayError::Untranslatable { .. }
            | GatewayError::Upgrade(_) => "invalid_request_error".into(),
            GatewayError::UnknownModel { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::Hub(HubError::UnknownStream { .. }) => "not_found_error".into(),
            GatewayError::Hub(HubError::TooManyLive {
                scope: LiveScope::Key,
                ..
            }) => "rate_limit_error".into(),
            GatewayError::Hub(HubError::TooManyLive {
                scope: LiveScope::Gateway,
                ..
            }) => "overloaded_error".into(),
            GatewayError::Hub(HubError::StoreUnavailable) => "overloaded_error".into(),
            GatewayError::Hub(_) => "invalid_request_error".into(),
            GatewayError::BodyTooLarge { .. } | GatewayError::TooManyJsonValues { .. } => {
                "request_too_large".into()
            }
            GatewayError::BodyTimeout { .. } => "timeout_error".into(),
            GatewayError::Unauthenticated(_) => "authentication_error".into(),
            GatewayError::ModelNotAllowed { .. } => "permission_error".into(),
            GatewayError::UpstreamStatus { error_type, .. } => error_type.clone(),
            GatewayError::Stream { source, .. } => source.to_error_info().code,
            GatewayError::Ended(info) => info.code.clone(),
            GatewayError::Timeout { .. } => "timeout_error".into(),
            GatewayError::Unavailable { .. } | GatewayError::ShuttingDown { .. } => {
                "overloaded_error".into()
            }
            GatewayError::RateLimited(_) => "rate_limit_error".into(),
            GatewayError::MissingKey { .. }
            | GatewayError::Connection { .. }
            | GatewayError::CredentialsRefused { .. }
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
            GatewayError::BodyTooLarge { .. } | GatewayError::TooManyJsonValues { .. } => (
                "invalid_request_error".into(),
                Some("request_too_large".into()),
            ),
            GatewayError::BodyTimeout { .. } => (
                "invalid_request_error".into(),
                Some("request_body_timeout".into()),
            ),
            GatewayError::Unauthenticated(_) => (
                "invalid_request_error".into(),
                Some("invalid_api_key".into()),
            ),
            GatewayError::ModelNotAllowed { .. } => (
                "invalid_request_error".into(),
                Some("permission_denied".into()),
            ),
            GatewayError::UpstreamStatus { error_type, .. } => (error_type.clone(), None),
            GatewayError::MissingKey { .. } => {
                ("server_error".into(), Some("missing_provider_key".into()))
            }
            GatewayError::CredentialsRefused { .. } => (
                "server_error".into(),
                Some("upstream_credentials_refused".into()),
            ),
            GatewayError::Connection { fault, .. } => {
                ("server_error".into(), Some(fault.code().into()))
            }
            GatewayError::Timeout { .. } => {
                ("server_error".into(), Some("upstream_timeout".into()))
            }
            GatewayError::Stream { .. } | GatewayError::Ended(_) => {
                let code = self.to_error_info().code;
                // A refusal keeps the provider's word as its type, as an HTTP error does.
                let ty = if self.status().is_client_error() {
                    code.clone()
                } else {
                    "server_error".into()
                };
                (ty, Some(code))
            }
            GatewayError::Untranslatable { .. } => (
                "invalid_request_error".into(),
                Some("untranslatable_answer".into()),
            ),
            GatewayError::Unavailable { .. } => {
                ("server_error".into(), Some("upstreams_unavailable".into()))
            }
            GatewayError::RateLimited(_) => ("requests".into(), Some("rate_limit_exceeded".into())),
            GatewayError::ShuttingDown { .. } => {
                ("server_error".into(), Some("gateway_shutting_down".into()))
            }
            GatewayError::Internal(_) => ("server_error".into(), None),
            GatewayError::Hub(HubError::TooManyLive { scope, .. }) => (
                match scope {
                    LiveScope::Key => "requests",
                    LiveScope::Gateway => "server_error",
                }
                .into(),
                Some("too_many_live_streams".into()),
            ),
            GatewayError::Hub(HubError::StoreUnavailable) => (
                "server_error".into(),
                Some("stream_store_unavailable".into()),
            ),
            GatewayError::Hub(e) => (
                "invalid_request_error".into(),
                Some(
                    match e {
                        HubError::UnknownStream { .. } => "stream_not_found",
                        HubError::SeqBeyondEnd { .. } => "seq_beyond_end",
                        HubError::DuplicateStream { .. } => "duplicate_stream",
                        HubError::InvalidId { .. } => "invalid_stream_id",
                        HubError::TooManyLive { .. } => "too_many_live_streams",
                        HubError::StoreUnavailable => "stream_store_unavailable",
                    }
                    .into(),
                ),
            ),
        }
    }

    /// The response body in `door`'s dialect.
    pub fn body(&self, door: Dialect) -> Value {
        door.wire().error_body(&self.report())
    }

    /// The error described for any dialect to render.
    pub fn report(&self) -> ErrorReport {
        if let GatewayError::Request(e) = self {
            return e.report();
        }
        if let GatewayError::RateLimited(l) = self {
            return l.report();
        }
        let (kind, code) = self.openai_type_and_code();
        ErrorReport {
            status: self.status().as_u16(),
            message: self.to_string(),
            class: self.anthropic_type(),
            kind,
            code,
            param: None,
        }
    }

    /// The `error` event for this failure once a stream has started.
    pub fn to_error_info(&self) -> ErrorInfo {
        let mut info = match self {
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
        };
        if info.code.is_empty() {
            // A provider that sent an empty error type: clients still need a code.
            info.code = anthropic_type_for(self.status().as_u16()).to_owned();
        }
        info
    }

    /// Whether the same request may succeed when tried again (later, or elsewhere).
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamStatus { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500..=599)
            }
            GatewayError::Connection { .. }
            | GatewayError::Timeout { .. }
            | GatewayError::Unavailable { .. }
            | GatewayError::ShuttingDown { .. }
            | GatewayError::RateLimited(_)
            | GatewayError::Hub(HubError::TooManyLive { .. } | HubError::StoreUnavailable) => true,
            GatewayError::Stream { source, .. } => source.to_error_info().retryable,
            GatewayError::Ended(info) => info.retryable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{LimitKind, Limited, Scope};
    use providers::anthropic::ERROR_TYPES as ANTHROPIC_TYPES;
    use providers::{CutPoint, UpstreamError};

    /// What gateway text never shows a client: transport types and chains, URLs.
    const INTERNAL: [&str; 14] = [
        "hyper",
        "reqwest",
        "error sending request",
        "client error (",
        "tcp connect error",
        "os error",
        "Os {",
        "Kind(",
        "Error {",
        "source:",
        "http://",
        "https://",
        "tungstenite",
        "axum",
    ];

    /// Free text a client or provider could send: from an alphabet that cannot spell any of
    /// [`INTERNAL`], so a hit can only come from the gateway.
    fn text(rng: &mut fastrand::Rng) -> String {
        const ALPHABET: &[u8] = b"abcdef0123456789 _-.";
        (0..rng.usize(0..30))
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
            .collect()
    }

    /// Provider error types that refuse the request itself.
    const REFUSALS: [&str; 8] = [
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "insufficient_quota",
    ];

    /// An error code as providers and the gateway send them, or free text.
    fn code(rng: &mut fastrand::Rng) -> String {
        const OTHERS: [&str; 5] = [
            "overloaded_error",
            "api_error",
            "server_error",
            "incomplete_stream",
            "upstream_frame_too_large",
        ];
        match rng.u8(..3) {
            0 => REFUSALS[rng.usize(..REFUSALS.len())].to_owned(),
            1 => OTHERS[rng.usize(..OTHERS.len())].to_owned(),
            _ => text(rng),
        }
    }

    fn dialect(rng: &mut fastrand::Rng) -> Dialect {
        Dialect::ALL[rng.usize(..Dialect::ALL.len())]
    }

    /// Variant `k` (modulo the variant count) with random contents, and the variant's name.
    fn arbitrary(rng: &mut fastrand::Rng, k: usize) -> GatewayError {
        let provider = text(rng);
        match k % 24 {
            0 => GatewayError::MalformedJson(text(rng)),
            1 => GatewayError::Request(RequestError::Invalid {
                param: text(rng),
                message: text(rng),
            }),
            2 => GatewayError::Request(RequestError::Unsupported {
                param: text(rng),
                target: dialect(rng),
                message: text(rng),
            }),
            3 => GatewayError::UnknownModel { model: text(rng) },
            4 => GatewayError::NotFound { path: text(rng) },
            5 => GatewayError::BodyTooLarge {
                limit: rng.usize(..),
            },
            6 => GatewayError::MissingKey {
                provider,
                env_var: text(rng),
            },
            7 => GatewayError::UpstreamStatus {
                provider,
                // Mostly the provider errors the gateway relays, sometimes any code at all.
                status: if rng.bool() {
                    rng.u16(400..600)
                } else {
                    rng.u16(..)
                },
                error_type: text(rng),
                message: text(rng),
                retry_after: rng
                    .bool()
                    .then(|| Duration::from_millis(rng.u64(..100_000))),
            },
            8 => {
                let faults = [
                    ConnectionFault::Refused,
                    ConnectionFault::Dns,
                    ConnectionFault::Tls,
                    ConnectionFault::Connect,
                    ConnectionFault::ClosedBeforeResponse,
                    ConnectionFault::ClosedDuringBody,
                    ConnectionFault::NotJson,
                ];
                GatewayError::Connection {
                    provider,
                    fault: faults[rng.usize(..faults.len())],
                }
            }
            9 => {
                let phases = [
                    TimeoutPhase::Connect,
                    TimeoutPhase::FirstByte,
                    TimeoutPhase::Idle,
                    TimeoutPhase::Total,
                ];
                GatewayError::Timeout {
                    provider,
                    phase: phases[rng.usize(..phases.len())],
                }
            }
            10 => {
                let dialect = dialect(rng);
                let source = match rng.u8(..4) {
                    0 => DecodeError::Malformed {
                        dialect,
                        line: rng.u64(..),
                        offset: rng.u64(..),
                        reason: text(rng),
                    },
                    1 => DecodeError::TooLarge {
                        dialect,
                        source: providers::sse::SseError::TooLarge {
                            line: rng.u64(..),
                            offset: rng.u64(..),
                            limit: rng.usize(..),
                        },
                    },
                    2 => DecodeError::Upstream {
                        dialect,
                        error: UpstreamError::from_code(code(rng), text(rng)),
                    },
                    _ => DecodeError::Incomplete {
                        dialect,
                        cut: CutPoint::InToolCall { name: text(rng) },
                    },
                };
                GatewayError::Stream { provider, source }
            }
            11 => {
                let limits = [
                    LimitKind::RequestsPerMinute,
                    LimitKind::TokensPerMinute,
                    LimitKind::ConcurrentStreams,
                    LimitKind::Upstream,
                ];
                GatewayError::RateLimited(Limited {
                    limit: limits[rng.usize(..limits.len())],
                    retry_after: Duration::from_millis(rng.u64(..1_000_000)),
                    scope: [Scope::Key, Scope::Model, Scope::Route][rng.usize(..3)],
                })
            }
            12 => GatewayError::Unavailable {
                message: text(rng),
                retry_after: rng
                    .bool()
                    .then(|| Duration::from_millis(rng.u64(..1_000_000))),
            },
            13 => GatewayError::Untranslatable {
                door: dialect(rng),
                what: text(rng),
            },
            14 => GatewayError::Ended(ErrorInfo {
                code: code(rng),
                message: text(rng),
                retryable: rng.bool(),
            }),
            15 => GatewayError::Hub(match rng.u8(..6) {
                0 => HubError::UnknownStream { id: text(rng) },
                5 => HubError::StoreUnavailable,
                4 => HubError::TooManyLive {
                    scope: [LiveScope::Gateway, LiveScope::Key][rng.usize(..2)],
                    limit: rng.usize(..),
                },
                1 => HubError::SeqBeyondEnd {
                    id: text(rng),
                    after: rng.u64(..),
                    last: rng.bool().then(|| rng.u64(..)),
                },
                2 => HubError::DuplicateStream { id: text(rng) },
                _ => HubError::InvalidId { id: text(rng) },
            }),
            16 => GatewayError::Upgrade(text(rng)),
            17 => GatewayError::Internal(text(rng)),
            18 => GatewayError::Unauthenticated(if rng.bool() {
                AuthFailure::Missing
            } else {
                AuthFailure::Invalid
            }),
            19 => GatewayError::ModelNotAllowed { model: text(rng) },
            20 => GatewayError::BodyTimeout {
                timeout_ms: rng.u64(..),
            },
            21 => GatewayError::CredentialsRefused {
                provider,
                status: [401, 403][rng.usize(..2)],
            },
            23 => GatewayError::ShuttingDown {
                grace_ms: rng.u64(..),
            },
            _ => GatewayError::TooManyJsonValues {
                limit: rng.usize(..),
            },
        }
    }

    /// The status class each variant must have: the client's own mistakes and requests that
    /// can never succeed as sent are 4xx; the provider's and the gateway's failures 5xx.
    fn want_client_error(e: &GatewayError) -> Option<bool> {
        Some(match e {
            // The gateway is full, or its store is down: its failure, not the client's.
            GatewayError::Hub(
                HubError::TooManyLive {
                    scope: LiveScope::Gateway,
                    ..
                }
                | HubError::StoreUnavailable,
            ) => false,
            GatewayError::MalformedJson(_)
            | GatewayError::Request(_)
            | GatewayError::UnknownModel { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BodyTimeout { .. }
            | GatewayError::TooManyJsonValues { .. }
            | GatewayError::RateLimited(_)
            | GatewayError::Untranslatable { .. }
            | GatewayError::Hub(_)
            | GatewayError::Unauthenticated(_)
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::Upgrade(_) => true,
            // The provider refused the request inside its stream.
            GatewayError::Stream {
                source: DecodeError::Upstream { error, .. },
                ..
            } => !error.retryable,
            GatewayError::Ended(info) if !info.retryable => REFUSALS.contains(&info.code.as_str()),
            GatewayError::MissingKey { .. }
            | GatewayError::Connection { .. }
            | GatewayError::CredentialsRefused { .. }
            | GatewayError::Timeout { .. }
            | GatewayError::Stream { .. }
            | GatewayError::Unavailable { .. }
            | GatewayError::ShuttingDown { .. }
            | GatewayError::Ended(_)
            | GatewayError::Internal(_) => false,
            // The provider's own status passes through.
            GatewayError::UpstreamStatus { .. } => return None,
        })
    }

    fn clean(what: &str, text: &str) -> Result<(), String> {
        match INTERNAL.iter().find(|m| text.contains(*m)) {
            Some(m) => Err(format!("{what} shows {m:?}: {text}")),
            None => Ok(()),
        }
    }

    fn check(e: &GatewayError) -> Result<(), String> {
        let status = e.status();
        match want_client_error(e) {
            Some(true) if !status.is_client_error() => return Err(format!("status {status}")),
            Some(false) if !status.is_server_error() => return Err(format!("status {status}")),
            None => {
                if let GatewayError::UpstreamStatus { status: s, .. } = e {
                    let want = if (400..600).contains(s) { *s } else { 502 };
                    if status.as_u16() != want {
                        return Err(format!("status {status}, the provider's was {s}"));
                    }
                }
            }
            _ => {}
        }
        // SDKs retry 408, 409, 429 and 5xx: no other 4xx may claim that retrying helps.
        if status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 429) && e.retryable()
        {
            return Err(format!("{status} but retryable"));
        }
        clean("message", &e.to_string())?;
        let oa = e.body(Dialect::OpenAi);
        let message = oa["error"]["message"]
            .as_str()
            .ok_or("OpenAI body without message")?;
        clean("OpenAI body", message)?;
        if message.is_empty() && !e.to_string().is_empty() {
            return Err("OpenAI message lost".into());
        }
        if !oa["error"]["type"].is_string() || oa["error"].get("param").is_none() {
            return Err(format!("OpenAI body shape: {oa}"));
        }
        if !(oa["error"]["code"].is_string() || oa["error"]["code"].is_null()) {
            return Err(format!("OpenAI code: {oa}"));
        }
        let an = e.body(Dialect::Anthropic);
        let ty = an["error"]["type"].as_str().unwrap_or_default();
        if an["type"] != "error" || !ANTHROPIC_TYPES.contains(&ty) {
            return Err(format!("Anthropic body shape: {an}"));
        }
        clean(
            "Anthropic body",
            an["error"]["message"]
                .as_str()
                .ok_or("no Anthropic message")?,
        )?;
        let info = e.to_error_info();
        clean("error event", &info.message)?;
        if info.code.is_empty() {
            return Err("error event without a code".into());
        }
        Ok(())
    }

    #[test]
    fn every_variant_has_its_status_class_and_a_clean_body_in_both_dialects() {
        let mut rng = fastrand::Rng::with_seed(0x0e77_0e77);
        let mut failures = Vec::new();
        for k in 0..24 * 200 {
            let e = arbitrary(&mut rng, k);
            if let Err(why) = check(&e) {
                failures.push(format!("{e:?}: {why}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_generator_covers_every_variant() {
        // Exhaustive on purpose: a new variant stops this compiling until it is generated.
        fn index(e: &GatewayError) -> usize {
            match e {
                GatewayError::MalformedJson(_) => 0,
                GatewayError::Request(RequestError::Invalid { .. }) => 1,
                GatewayError::Request(RequestError::Unsupported { .. }) => 2,
                GatewayError::UnknownModel { .. } => 3,
                GatewayError::NotFound { .. } => 4,
                GatewayError::BodyTooLarge { .. } => 5,
                GatewayError::MissingKey { .. } => 6,
                GatewayError::UpstreamStatus { .. } => 7,
                GatewayError::Connection { .. } => 8,
                GatewayError::Timeout { .. } => 9,
                GatewayError::Stream { .. } => 10,
                GatewayError::RateLimited(_) => 11,
                GatewayError::Unavailable { .. } => 12,
                GatewayError::Untranslatable { .. } => 13,
                GatewayError::Ended(_) => 14,
                GatewayError::Hub(_) => 15,
                GatewayError::Upgrade(_) => 16,
                GatewayError::Internal(_) => 17,
                GatewayError::Unauthenticated(_) => 18,
                GatewayError::ModelNotAllowed { .. } => 19,
                GatewayError::BodyTimeout { .. } => 20,
                GatewayError::CredentialsRefused { .. } => 21,
                GatewayError::TooManyJsonValues { .. } => 22,
                GatewayError::ShuttingDown { .. } => 23,
            }
        }
        let mut rng = fastrand::Rng::with_seed(1);
        for k in 0..24 {
            assert_eq!(index(&arbitrary(&mut rng, k)), k);
        }
    }

    #[test]
    fn a_broken_connection_is_not_called_unreachable() {
        for fault in [
            ConnectionFault::ClosedBeforeResponse,
            ConnectionFault::ClosedDuringBody,
            ConnectionFault::NotJson,
        ] {
            let e = GatewayError::Connection {
                provider: "anthropic".into(),
                fault,
            };
            assert!(!e.to_string().contains("unreachable"), "{e}");
            assert_eq!(
                e.body(Dialect::OpenAi)["error"]["code"],
                fault.code(),
                "{fault:?}"
            );
            assert_ne!(fault.code(), "upstream_unreachable");
        }
        let refused = GatewayError::Connection {
            provider: "anthropic".into(),
            fault: ConnectionFault::Refused,
        };
        assert_eq!(
            refused.to_string(),
            "provider \"anthropic\" is unreachable: the connection was refused"
        );
    }

    #[test]
    fn an_untranslatable_answer_is_a_4xx_in_the_door_dialect() {
        let e = GatewayError::Untranslatable {
            door: Dialect::Anthropic,
            what: "more than one choice".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(!e.retryable());
        let an = e.body(Dialect::Anthropic);
        assert_eq!(an["error"]["type"], "invalid_request_error");
        assert!(
            an["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than one choice")
        );
    }

    #[test]
    fn an_openai_provider_error_type_reaches_anthropic_clients_in_their_words() {
        let e = GatewayError::UpstreamStatus {
            provider: "openai".into(),
            status: 429,
            error_type: "insufficient_quota".into(),
            message: "You exceeded your current quota".into(),
            retry_after: None,
        };
        assert_eq!(
            e.body(Dialect::Anthropic)["error"]["type"],
            "rate_limit_error"
        );
        assert_eq!(
            e.body(Dialect::OpenAi)["error"]["type"],
            "insufficient_quota"
        );
    }

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
    fn a_forged_model_name_is_capped_and_escaped_in_both_dialects() {
        let model = format!(
            "gpt-4o\n2026-01-01T00:00:00Z  INFO forged{}",
            "x".repeat(10 << 10)
        );
        let e = GatewayError::UnknownModel { model };
        for door in Dialect::ALL {
            let body = e.body(door).to_string();
            let message = e.body(door)["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.contains("gpt-4o\\n2026"), "{message}");
            assert!(message.len() < 300, "{} bytes", message.len());
            assert!(body.len() < 500, "{} bytes", body.len());
        }
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
