//! A JSON value to be written, borrowing its text from what it is written from.
//!
//! An upstream body written from the unified request as a `serde_json::Value` copies every
//! string of the conversation into the tree (an allocation and a copy each), hashes every key
//! of every object into a map, then frees it all once the bytes are out: a third of the
//! instructions of a 33 kB request (issue #14). An [`Out`] holds the request's strings and
//! kept values by reference, its objects as member lists, and is written by
//! [`Out::write`] exactly as `serde_json` writes the `Value` it stands for ([`Value::from`]).

use serde_json::{Map, Number, Value};

use crate::json_write::{write_array, write_object, write_value};
use crate::sse::json::write_str;

/// A JSON value to be written (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum Out<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string, borrowed.
    Str(&'a str),
    /// A string made for the body (a data URL, say).
    String(String),
    /// A value kept whole, borrowed.
    Value(&'a Value),
    /// A value made for the body (tool call arguments read as an object, say).
    Owned(Value),
    /// An array.
    Array(Vec<Out<'a>>),
    /// An object: members in order, each key once ([`Out::insert`]).
    Object(Vec<(&'a str, Out<'a>)>),
}

impl<'a> Out<'a> {
    /// An object of `members`, whose keys are distinct.
    pub fn object<const N: usize>(members: [(&'a str, Out<'a>); N]) -> Out<'a> {
        Out::Object(members.into())
    }

    /// Sets `key` of an object as a map's insert would: in place of a member of that name,
    /// else last. Does nothing to anything but an object.
    pub fn insert(&mut self, key: &'a str, value: Out<'a>) {
        let Out::Object(members) = self else { return };
        match members.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = value,
            None => members.push((key, value)),
        }
    }

    /// Sets every member of `add` (borrowed), as [`Out::insert`] each.
    pub fn extend(&mut self, add: &'a Map<String, Value>) {
        for (k, v) in add {
            self.insert(k, Out::Value(v));
        }
    }

    /// Sets a passthrough field `key` as [`Out::insert`], except that an object merges into
    /// an object already there (the client's other `stream_options` beside the gateway's).
    pub fn merge(&mut self, key: &'a str, value: &'a Value) {
        match (self.get_mut(key), value) {
            (Some(have @ Out::Object(_)), Value::Object(add)) => have.extend(add),
            _ => self.insert(key, Out::Value(value)),
        }
    }

    /// The member `key` of an object, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Out<'a>> {
        match self {
            Out::Object(members) => members.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Appends the value as JSON, byte for byte what `serde_json::to_vec` writes of
    /// `Value::from(self)`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Out::Str(s) => write_str(out, s),
            Out::String(s) => write_str(out, s),
            Out::Value(v) => write_value(out, v),
            Out::Owned(v) => write_value(out, v),
            Out::Array(items) => write_array(out, items, |out, item| item.write(out)),
            Out::Object(members) => {
                write_object(out, members.iter().map(|(k, v)| (k, v)), |out, item| {
                    item.write(out)
                })
            }
            Out::Null => out.extend_from_slice(b"null"),
            Out::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Out::Number(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
    }

    /// The value as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }
}

impl From<Out<'_>> for Value {
    fn from(out: Out<'_>) -> Value {
        match out {
            Out::Null => Value::Null,
            Out::Bool(b) => Value::Bool(b),
            Out::Number(n) => Value::Number(n),
            Out::Str(s) => Value::String(s.to_owned()),
            Out::String(s) => Value::String(s),
            Out::Value(v) => v.clone(),
            Out::Owned(v) => v,
            Out::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            Out::Object(members) => Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<u32> for Out<'_> {
    fn from(n: u32) -> Self {
        Out::Number(n.into())
    }
}

/// As `json!` writes an `f64`: `null` when it is not finite.
impl From<f64> for Out<'_> {
    fn from(n: f64) -> Self {
        Number::from_f64(n).map_or(Out::Null, Out::Number)
    }
}

impl From<bool> for Out<'_> {
    fn from(b: bool) -> Self {
        Out::Bool(b)
    }
}

impl<'a> From<&'a str> for Out<'a> {
    fn from(s: &'a str) -> Self {
        Out::Str(s)
    }
}

impl<'a> From<&'a String> for Out<'a> {
    fn from(s: &'a String) -> Self {
        Out::Str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::{Rng, escaper_string, json_value};

    /// Keys a generated object draws from: few, so that inserts replace members.
    const KEYS: [&str; 4] = ["a", "b", "\"é\"", ""];

    /// An `Out` of every kind, objects built by inserts (repeated keys included), with kept
    /// values of `values`.
    fn out<'a>(rng: &mut Rng, depth: u32, values: &'a [Value], texts: &'a [String]) -> Out<'a> {
        match rng.below(if depth == 0 { 7 } else { 9 }) {
            0 => Out::Null,
            1 => Out::Bool(rng.below(2) == 0),
            2 => Out::Number(match rng.below(3) {
                0 => rng.next().into(),
                1 => (-(rng.below(1000) as i64)).into(),
                _ => Number::from_f64(rng.below(10_000) as f64 / 7.0).unwrap_or(0.into()),
            }),
            3 => Out::Str(&texts[rng.below(texts.len() as u64) as usize]),
            4 => Out::String(texts[rng.below(texts.len() as u64) as usize].clone()),
            5 => Out::Value(&values[rng.below(values.len() as u64) as usize]),
            6 => Out::Owned(values[rng.below(values.len() as u64) as usize].clone()),
            7 => Out::Array(
                (0..rng.below(4))
                    .map(|_| out(rng, depth - 1, values, texts))
                    .collect(),
            ),
            _ => {
                let mut o = Out::object([]);
                for _ in 0..rng.below(6) {
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let v = out(rng, depth - 1, values, texts);
                    o.insert(key, v);
                }
                o
            }
        }
    }

    /// Any `Out`: its bytes are serde_json's of the `Value` it stands for, and its inserts
    /// leave what a map's would.
    #[test]
    fn writes_what_serde_json_writes_of_its_value() {
        let mut rng = Rng(0x0a57);
        let mut text = |rng: &mut Rng| {
            let len = rng.below(20) as usize;
            escaper_string(rng, len)
        };
        for case in 0..2000 {
            let values: Vec<Value> = (0..3)
                .map(|_| json_value(&mut rng, 3, 4, &mut text))
                .collect();
            let texts: Vec<String> = (0..3).map(|_| text(&mut rng)).collect();
            let o = out(&mut rng, 4, &values, &texts);
            let ours = o.to_vec();
            let theirs = serde_json::to_vec(&Value::from(o.clone())).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "case {case}"
            );
        }
    }

    #[test]
    fn insert_replaces_in_place_and_extend_and_merge_add_in_order() {
        let extra: Map<String, Value> =
            serde_json::from_str(r#"{"b": 2, "z": [1], "a": null}"#).unwrap();
        let mut o = Out::object([("a", Out::Bool(true)), ("b", 1.into())]);
        o.extend(&extra);
        o.insert("c", "x".into());
        assert_eq!(o.to_vec(), br#"{"a":null,"b":2,"z":[1],"c":"x"}"#);
        if let Some(b) = o.get_mut("b") {
            *b = Out::Null;
        }
        assert_eq!(o.to_vec(), br#"{"a":null,"b":null,"z":[1],"c":"x"}"#);
        // A passthrough object merges into an object there, and replaces anything else.
        let passthrough: Map<String, Value> =
            serde_json::from_str(r#"{"o": {"k": 2, "n": 3}, "c": {"k": 1}}"#).unwrap();
        let mut o = Out::object([("o", Out::object([("k", 1.into()), ("m", true.into())]))]);
        o.insert("c", "x".into());
        for (k, v) in &passthrough {
            o.merge(k, v);
        }
        assert_eq!(o.to_vec(), br#"{"o":{"k":2,"m":true,"n":3},"c":{"k":1}}"#);
    }
}
