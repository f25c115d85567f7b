//! Errors of the pure codecs: what failed, where in the body, and whether retrying may help.

use crate::dialect::Dialect;
use crate::event::ErrorInfo;
use crate::sse::SseError;

/// Decoding a provider stream failed or found the stream broken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// A frame could not be understood.
    #[error("malformed {dialect} stream at line {line} (byte {offset}): {reason}")]
    Malformed {
        /// Dialect being decoded.
        dialect: Dialect,
        /// 1-based line of the offending frame.
        line: u64,
        /// Byte offset of the offending frame.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A frame exceeded the parser's size limit.
    #[error("{dialect} stream: {source}")]
    TooLarge {
        /// Dialect being decoded.
        dialect: Dialect,
        /// The parser's report.
        source: SseError,
    },
    /// The provider sent an error inside the stream (`event: error`, `data: {"error":..}`).
    #[error("{dialect} upstream sent an error mid-stream: {error}")]
    Upstream {
        /// Dialect being decoded.
        dialect: Dialect,
        /// What the provider said.
        error: UpstreamError,
    },
    /// The body ended before the provider said the answer was finished.
    #[error("{dialect} stream ended before its finish reason, {cut}")]
    Incomplete {
        /// Dialect being decoded.
        dialect: Dialect,
        /// Where it was cut.
        cut: CutPoint,
    },
}

/// An error the provider reported inside a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct UpstreamError {
    /// The provider's error type (`overloaded_error`, `server_error`, ...).
    pub code: String,
    /// The provider's message.
    pub message: String,
    /// Whether the same request may succeed if tried again.
    pub retryable: bool,
}

impl UpstreamError {
    /// Classifies a provider error type: overload, rate limit and server faults are
    /// retryable; request, auth, permission and policy errors are not.
    pub fn from_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        let retryable = matches!(
            code.as_str(),
            "overloaded_error"
                | "api_error"
                | "rate_limit_error"
                | "server_error"
                | "timeout_error"
                | "internal_error"
                | "service_unavailable"
        );
        UpstreamError {
            code,
            message: message.into(),
            retryable,
        }
    }
}

/// Where an incomplete stream was cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutPoint {
    /// Nothing recognizable arrived.
    #[error("before the answer started")]
    BeforeStart,
    /// Between content blocks.
    #[error("between content blocks")]
    BetweenBlocks,
    /// Inside a text block.
    #[error("inside a text block")]
    InText,
    /// Inside a reasoning block.
    #[error("inside a reasoning block")]
    InReasoning,
    /// Inside a tool call's arguments.
    #[error("inside the arguments of tool call {name:?}")]
    InToolCall {
        /// Tool name.
        name: String,
    },
    /// Inside a provider-run block.
    #[error("inside a provider-run block")]
    InNative,
}

impl DecodeError {
    /// The `error` event a client should see for this failure.
    pub fn to_error_info(&self) -> ErrorInfo {
        let (code, retryable) = match self {
            DecodeError::Malformed { .. } => ("malformed_upstream_stream".to_owned(), true),
            DecodeError::TooLarge { .. } => ("upstream_frame_too_large".to_owned(), false),
            DecodeError::Upstream { error, .. } => (error.code.clone(), error.retryable),
            DecodeError::Incomplete { .. } => ("incomplete_stream".to_owned(), true),
        };
        ErrorInfo {
            code,
            message: self.to_string(),
            retryable,
        }
    }
}

/// Encoding events into a dialect failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The target dialect cannot express this (e.g. several choices in Anthropic).
    #[error("{dialect} cannot express {what}")]
    Unsupported {
        /// Target dialect.
        dialect: Dialect,
        /// What could not be expressed.
        what: String,
    },
    /// Events arrived in an order the protocol forbids (e.g. a delta for an unopened block).
    #[error("event out of order for {dialect}: {what}")]
    OutOfOrder {
        /// Target dialect.
        dialect: Dialect,
        /// What was wrong.
        what: String,
    },
    /// Serialization failed.
    #[error("serializing {dialect} output: {source}")]
    Json {
        /// Target dialect.
        dialect: Dialect,
        /// serde_json's report.
        source: serde_json::Error,
    },
}

/// An error answer described once, in the words every dialect needs to render it: each
/// dialect's [`crate::dialects::WireDialect::error_body`] picks the fields its clients read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// The HTTP status the error is answered with.
    pub status: u16,
    /// The human-readable message.
    pub message: String,
    /// The broad class, in the vocabulary of Anthropic's error types
    /// (`invalid_request_error`, `not_found_error`, `rate_limit_error`, ...); a dialect with
    /// a closed vocabulary replaces a word outside it with the one for the status.
    pub class: String,
    /// The specific type (OpenAI's `error.type`: `invalid_request_error`, `server_error`,
    /// `requests`, a provider's own word, ...).
    pub kind: String,
    /// A machine-readable code, where one exists (OpenAI's `error.code`).
    pub code: Option<String>,
    /// The request parameter at fault, where one is known (OpenAI's `error.param`).
    pub param: Option<String>,
}

impl ErrorReport {
    /// A report whose class and type are the same word, with no code or parameter.
    pub fn new(status: u16, class: &str, message: impl Into<String>) -> Self {
        ErrorReport {
            status,
            message: message.into(),
            class: class.to_owned(),
            kind: class.to_owned(),
            code: None,
            param: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_classify_retryability() {
        assert!(UpstreamError::from_code("overloaded_error", "busy").retryable);
        assert!(!UpstreamError::from_code("invalid_request_error", "bad").retryable);
    }

    #[test]
    fn incomplete_names_the_cut() {
        let e = DecodeError::Incomplete {
            dialect: Dialect::Anthropic,
            cut: CutPoint::InToolCall {
                name: "get_weather".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "anthropic stream ended before its finish reason, inside the arguments of tool call \"get_weather\""
        );
        let info = e.to_error_info();
        assert_eq!(info.code, "incomplete_stream");
        assert!(info.retryable);
    }
}
