//! A door's JSON body to the unified request, with the body's value count bounded first.

use crate::dialect::Dialect;

use crate::request::{CensusError, ChatRequest, RequestError, parse_bounded};

/// Why a body did not become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body holds more than `limit` JSON values (see [`parse_bounded`]).
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
/// `max_values` JSON values once that many are built (see [`parse_bounded`]). The tree is
/// built once and taken apart into the request, never copied, so parsing costs the body's
/// strings once plus at most about a hundred bytes per value.
pub fn parse(door: Dialect, bytes: &[u8], max_values: usize) -> Result<ChatRequest, ParseError> {
    let value = parse_bounded(bytes, max_values).map_err(|e| match e {
        CensusError::TooManyValues { limit } => ParseError::TooManyValues { limit },
        CensusError::Syntax(message) => ParseError::NotJson(message),
    })?;
    if !value.is_object() {
        return Err(ParseError::NotJson("the body must be a JSON object".into()));
    }
    Ok(door.wire().parse_request(value)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::seeded::{Rng, json_object, json_value, tree_count};

    /// Text of JSON-escaped characters and the names of request fields.
    fn text(rng: &mut Rng) -> String {
        rng.pieces(
            &["a", "model", "\n", "\"", "é", "user", "messages"],
            0,
            3,
            "",
        )
    }

    /// A body of either door: a plausible request, a random object, or a plausible request
    /// with random fields mixed in (valid or not).
    fn body(rng: &mut Rng) -> Value {
        let mut plausible = json!({
            "model": text(rng),
            "max_tokens": rng.below(5000),
            "messages": (0..rng.below(3))
                .map(|_| json!({"role": "user", "content": text(rng)}))
                .collect::<Vec<_>>(),
        });
        match rng.below(3) {
            0 => plausible,
            1 => Value::Object(json_object(rng, 3, 4, &mut text)),
            _ => {
                if let Some(o) = plausible.as_object_mut() {
                    o.extend(json_object(rng, 2, 4, &mut text));
                }
                plausible
            }
        }
    }

    fn reference(door: Dialect, value: Value) -> Result<ChatRequest, RequestError> {
        match door {
            Dialect::OpenAi => ChatRequest::from_openai_value(value),
            Dialect::Anthropic => ChatRequest::from_anthropic_value(value),
            Dialect::OpenAiResponses => ChatRequest::from_responses_value(value),
        }
    }

    /// Any object within the limit reads as the door's dialect reads it (the request or the
    /// same request error); one value fewer allowed and it is refused before it is built.
    #[test]
    fn an_object_within_the_limit_is_the_dialects_request() {
        let mut rng = Rng(0x9a75e);
        let mut built = 0;
        for _ in 0..3000 {
            for door in Dialect::ALL {
                let value = body(&mut rng);
                let bytes = serde_json::to_vec(&value).unwrap();
                let n = tree_count(&value);
                let want = reference(door, value).map_err(ParseError::Request);
                built += usize::from(want.is_ok());
                assert_eq!(parse(door, &bytes, n), want);
                assert_eq!(
                    parse(door, &bytes, n - 1),
                    Err(ParseError::TooManyValues { limit: n - 1 })
                );
            }
        }
        assert!(
            built > 500,
            "the generator made too few valid requests: {built}"
        );
    }

    /// Any JSON that is not an object, and any cut of an object's text, is not a request.
    #[test]
    fn anything_but_a_whole_object_is_not_json() {
        let mut rng = Rng(0xbad);
        for _ in 0..3000 {
            for door in Dialect::ALL {
                let value = json_value(&mut rng, 3, 4, &mut text);
                let bytes = serde_json::to_vec(&value).unwrap();
                if !value.is_object() {
                    assert_eq!(
                        parse(door, &bytes, usize::MAX),
                        Err(ParseError::NotJson("the body must be a JSON object".into())),
                        "{value}"
                    );
                }
                let body = serde_json::to_vec(&body(&mut rng)).unwrap();
                let cut = rng.below(body.len() as u64) as usize;
                assert!(
                    matches!(
                        parse(door, &body[..cut], usize::MAX),
                        Err(ParseError::NotJson(_))
                    ),
                    "{}",
                    String::from_utf8_lossy(&body[..cut])
                );
            }
        }
    }
}
