//! Counting a JSON body's values before it is built into a tree.
//!
//! A `serde_json::Value` costs 32 bytes and an object entry about a hundred, so the bytes a
//! body takes on the wire say little about the memory its tree takes: 30 MB of `[0,0,...]`
//! or `{"a0":0,"a1":0,...}` builds a tree twenty times its size. [`count_values`] walks the
//! body once without keeping anything (strings are borrowed or go through the parser's
//! scratch buffer), so a body with more values than the gateway is willing to build is
//! refused for the price of reading it. Nesting is bounded by `serde_json`'s own recursion
//! limit (128), which this walk and the later parse both keep.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why a body was not counted to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CensusError {
    /// The body holds more than `limit` values (object keys count as values: each is a
    /// string the tree keeps).
    #[error("the request body holds more than {limit} JSON values")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON; the parser's words (a position, never the input).
    #[error("{0}")]
    Syntax(String),
}

/// Counts the values of the JSON text `bytes` (scalars, arrays, objects and object keys),
/// stopping at the first one past `limit`. Returns the count.
pub fn count_values(bytes: &[u8], limit: usize) -> Result<usize, CensusError> {
    let left = Cell::new(limit);
    let over = Cell::new(false);
    let census = Census {
        left: &left,
        over: &over,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = census.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(limit - left.get()),
        Err(_) if over.get() => Err(CensusError::TooManyValues { limit }),
        Err(e) => Err(CensusError::Syntax(e.to_string())),
    }
}

/// The walk: each value takes one from `left`; running out sets `over` and fails the walk.
#[derive(Clone, Copy)]
struct Census<'a> {
    left: &'a Cell<usize>,
    over: &'a Cell<bool>,
}

impl Census<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.over.set(true);
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Census<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Census<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.take()?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::{Rng, json_value, tree_count};

    /// Text with newlines, quotes, backslashes, control and multi-byte characters.
    fn text(rng: &mut Rng) -> String {
        rng.pieces(&["a", "\n", "\"", "é", "\u{1}", "\\"], 0, 5, "")
    }

    /// Any JSON: the census counts exactly the tree's values, and refuses it at any limit
    /// below that count.
    #[test]
    fn counts_what_the_tree_holds() {
        let mut rng = Rng(0x5eed);
        for _ in 0..2000 {
            let v = json_value(&mut rng, 5, 6, &mut text);
            let text = serde_json::to_vec(&v).unwrap();
            let n = tree_count(&v);
            assert_eq!(count_values(&text, n), Ok(n), "{v}");
            let limit = n - 1 - rng.below(n as u64) as usize;
            assert_eq!(
                count_values(&text, limit),
                Err(CensusError::TooManyValues { limit }),
                "{v}"
            );
        }
    }

    #[test]
    fn malformed_json_is_a_syntax_error_not_a_count() {
        for text in ["", "{", "[1,]", "{\"a\":1} x", "nul"] {
            assert!(
                matches!(
                    count_values(text.as_bytes(), 100),
                    Err(CensusError::Syntax(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn nesting_beyond_the_parsers_limit_is_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            count_values(deep.as_bytes(), usize::MAX),
            Err(CensusError::Syntax(_))
        ));
    }
}
