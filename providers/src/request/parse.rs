//! A door's JSON body to the unified request, with the body's value count bounded first.

use crate::dialect::Dialect;

use super::census::{CensusError, count_values};
use super::error::RequestError;
use super::unified::ChatRequest;

/// Why a body did not become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body holds more than `limit` JSON values (see [`count_values`]).
    #[error("the request body holds more than {limit} JSON values")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON, or not a JSON object: the parser's words (a position, never the
    /// input).
    #[error("{0}")]
    NotJson(String),
    /// The body is a JSON object but not a valid request of the door's dialect.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Parses a door's JSON body into the unified request, refusing a body of more than
/// `max_values` JSON values before building anything (see [`count_values`]). The tree is
/// built once and taken apart into the request, never copied, so parsing costs the body's
/// strings once plus at most about a hundred bytes per value.
pub fn parse(door: Dialect, bytes: &[u8], max_values: usize) -> Result<ChatRequest, ParseError> {
    count_values(bytes, max_values).map_err(|e| match e {
        CensusError::TooManyValues { limit } => ParseError::TooManyValues { limit },
        CensusError::Syntax(message) => ParseError::NotJson(message),
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ParseError::NotJson("the body must be a JSON object".into()));
    }
    Ok(match door {
        Dialect::OpenAi => ChatRequest::from_openai_value(value)?,
        Dialect::Anthropic => ChatRequest::from_anthropic_value(value)?,
    })
}
