//! Building a JSON body's tree with its values counted, refusing it past a bound.
//!
//! A `serde_json::Value` costs 32 bytes and an object entry about a hundred, so the bytes a
//! body takes on the wire say little about the memory its tree takes: 30 MB of `[0,0,...]`
//! or `{"a0":0,"a1":0,...}` builds a tree twenty times its size. [`parse_bounded`] builds the
//! tree as `serde_json::from_slice` would, counting each value as it is built, and stops at
//! the first one past the limit: the tree never holds more than the limit, and the body is
//! read once (a walk that only counted, then the parse, read it twice: 13% of the
//! instructions of a 33 kB request, issue #14). Nesting is bounded by `serde_json`'s own
//! recursion limit (128).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::tree::{Key, Members, Tree};

/// Why a body did not become a tree.
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

/// The JSON text `bytes` as a [`Tree`] (the `Value` `serde_json::from_slice` builds, objects
/// as member lists), as long as it holds at most `limit` values (scalars, arrays, objects and object keys); past that, what was built
/// is dropped and the body refused.
pub fn parse_bounded(bytes: &[u8], limit: usize) -> Result<Tree, CensusError> {
    let left = Cell::new(limit);
    let over = Cell::new(false);
    let census = Census {
        left: &left,
        over: &over,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = census
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match result {
        Ok(value) => Ok(value),
        Err(_) if over.get() => Err(CensusError::TooManyValues { limit }),
        Err(e) => Err(CensusError::Syntax(e.to_string())),
    }
}

/// The build: each value takes one from `left`; running out sets `over` and fails it.
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
    type Value = Tree;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(self)
    }
}

/// `serde_json::Value`'s own visitor, one count per value.
impl<'de> Visitor<'de> for Census<'_> {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Tree, E> {
        self.take().map(|()| Tree::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Tree, E> {
        self.take().map(|()| Tree::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Tree, E> {
        self.take().map(|()| Tree::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Tree, E> {
        self.take()
            .map(|()| Number::from_f64(n).map_or(Tree::Null, Tree::Number))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Tree, E> {
        self.take().map(|()| Tree::String(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Tree, E> {
        self.take().map(|()| Tree::String(s))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
        self.take().map(|()| Tree::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        self.take()?;
        let mut members = Members::default();
        while let Some(key) = map.next_key::<Key>()? {
            self.take()?;
            members.insert(key, map.next_value_seed(self)?);
        }
        Ok(members.into_tree())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::seeded::{Rng, json_value, tree_count};

    /// Text with newlines, quotes, backslashes, control and multi-byte characters.
    fn text(rng: &mut Rng) -> String {
        rng.pieces(&["a", "\n", "\"", "é", "\u{1}", "\\"], 0, 5, "")
    }

    /// Any JSON: the tree is the one `serde_json` builds, and it is refused at any limit below
    /// the count of its values.
    #[test]
    fn builds_the_tree_within_the_limit_and_refuses_it_past() {
        let mut rng = Rng(0x5eed);
        for _ in 0..2000 {
            let v = json_value(&mut rng, 5, 6, &mut text);
            let text = serde_json::to_vec(&v).unwrap();
            let n = tree_count(&v);
            let tree = parse_bounded(&text, n).map(Value::from);
            assert_eq!(tree.as_ref(), Ok(&v), "{v}");
            let limit = n - 1 - rng.below(n as u64) as usize;
            assert_eq!(
                parse_bounded(&text, limit),
                Err(CensusError::TooManyValues { limit }),
                "{v}"
            );
        }
    }

    /// Scalars where a tree's builder can differ from `serde_json`'s: numbers past `u64` and
    /// `i64`, exponents, negative zero, escapes and surrogate pairs (a lone one too).
    const SCALARS: &[&str] = &[
        "0",
        "-0",
        "-0.0",
        "1e400",
        "-1e-400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.5E+3",
        "true",
        "null",
        "\"\\u00e9\\ud83d\\ude00\\n\"",
        "\"\\ud800\"",
        "\"\"",
    ];

    /// JSON text of [`SCALARS`], arrays and objects (with repeated keys), well formed.
    fn json_text(rng: &mut Rng, depth: u32, out: &mut String) {
        match rng.below(if depth == 0 { 1 } else { 3 }) {
            0 => out.push_str(SCALARS[rng.below(SCALARS.len() as u64) as usize]),
            1 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    out.push_str(if i > 0 { ", " } else { "" });
                    json_text(rng, depth - 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(4) {
                    out.push_str(if i > 0 { "," } else { "" });
                    out.push_str(
                        ["\"k\":", "\"k\" : ", "\"\\u006b\":", "\"j\":"][rng.below(4) as usize],
                    );
                    json_text(rng, depth - 1, out);
                }
                out.push('}');
            }
        }
    }

    /// Any text of those, well formed or cut or with a byte changed: the tree `serde_json`
    /// builds, or its syntax error word for word.
    #[test]
    fn any_text_reads_as_serde_json_reads_it() {
        let mut rng = Rng(0x7e47);
        let mut trees = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            json_text(&mut rng, 4, &mut text);
            let mut bytes = text.into_bytes();
            match rng.below(4) {
                0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                1 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    let edits = b"{}[],:\"x0 ";
                    bytes[at] = edits[rng.below(edits.len() as u64) as usize];
                }
                _ => {}
            }
            // The text of a value shows its members' order, which equality does not.
            let text = |v: Value| serde_json::to_string(&v).unwrap();
            let want = serde_json::from_slice::<Value>(&bytes)
                .map(text)
                .map_err(|e| CensusError::Syntax(e.to_string()));
            trees += usize::from(want.is_ok());
            assert_eq!(
                parse_bounded(&bytes, usize::MAX).map(|t| text(t.into())),
                want,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert!(trees > 5_000, "too few texts that parse: {trees}");
    }

    #[test]
    fn malformed_json_is_a_syntax_error_not_a_count() {
        for text in ["", "{", "[1,]", "{\"a\":1} x", "nul"] {
            assert!(
                matches!(
                    parse_bounded(text.as_bytes(), 100),
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
            parse_bounded(deep.as_bytes(), usize::MAX),
            Err(CensusError::Syntax(_))
        ));
    }
}
