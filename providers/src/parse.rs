//! A door's JSON body to the unified request, with the body's value count bounded first.

use crate::dialect::Dialect;

use crate::request::{CensusError, ChatRequest, RequestError, count_values};

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
    Ok(door.wire().parse_request(value)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    /// A small seeded generator (the crate has no property-testing dependency).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 7] = ["a", "model", "\n", "\"", "é", "user", "messages"];
            (0..self.below(4))
                .map(|_| PIECES[self.below(7) as usize])
                .collect()
        }

        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth == 0 { 4 } else { 6 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => Value::from(self.below(1000)),
                3 => Value::String(self.text()),
                4 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
                _ => Value::Object(self.object(depth - 1)),
            }
        }

        fn object(&mut self, depth: u32) -> Map<String, Value> {
            (0..self.below(4))
                .map(|_| (self.text(), self.value(depth)))
                .collect()
        }

        /// A body of either door: a plausible request, a random object, or a plausible
        /// request with random fields mixed in (valid or not).
        fn body(&mut self) -> Value {
            let mut plausible = json!({
                "model": self.text(),
                "max_tokens": self.below(5000),
                "messages": (0..self.below(3))
                    .map(|_| json!({"role": "user", "content": self.text()}))
                    .collect::<Vec<_>>(),
            });
            match self.below(3) {
                0 => plausible,
                1 => Value::Object(self.object(3)),
                _ => {
                    if let Some(o) = plausible.as_object_mut() {
                        o.extend(self.object(2));
                    }
                    plausible
                }
            }
        }
    }

    /// The value count [`count_values`] gives a tree: every value and every object key.
    fn tree_count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(tree_count).sum(),
            Value::Object(o) => o.values().map(|v| 1 + tree_count(v)).sum(),
            _ => 0,
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
                let value = rng.body();
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
                let value = rng.value(3);
                let bytes = serde_json::to_vec(&value).unwrap();
                if !value.is_object() {
                    assert_eq!(
                        parse(door, &bytes, usize::MAX),
                        Err(ParseError::NotJson("the body must be a JSON object".into())),
                        "{value}"
                    );
                }
                let body = serde_json::to_vec(&rng.body()).unwrap();
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
