//! Reading a JSON body field by field, with the path of each field for error messages.

use serde_json::{Map, Value};

use super::error::RequestError;
use crate::untrusted::untrusted;

/// `path.key` (or `key` at the top level).
pub(crate) fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub(crate) fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A short name for a JSON value's type, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string at `key` of `v`, when `v` is an object and the field a string: a look before a
/// value is taken over, to decide whether it is kept whole.
pub(crate) fn peek_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A JSON object being taken apart: each `take` removes the field, what remains is the
/// passthrough.
#[derive(Debug)]
pub(crate) struct Obj {
    map: Map<String, Value>,
    path: String,
}

impl Obj {
    /// The object at `path`, or an error naming `what` it should have been. Takes the value
    /// over: a body is taken apart, never copied (a copy per nesting level multiplied the
    /// memory a large body costs).
    pub(crate) fn new(v: Value, path: &str) -> Result<Obj, RequestError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path: path.to_owned(),
            }),
            other => Err(RequestError::invalid(
                path,
                format!("expected an object, got {}", kind(&other)),
            )),
        }
    }

    /// Path of a field of this object.
    pub(crate) fn path(&self, key: &str) -> String {
        at(&self.path, key)
    }

    /// Removes a field; `null` counts as absent.
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> RequestError {
        RequestError::invalid(
            self.path(key),
            format!("expected {want}, got {}", kind(got)),
        )
    }

    pub(crate) fn str(&mut self, key: &str) -> Result<Option<String>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", &other)),
        }
    }

    pub(crate) fn req_str(&mut self, key: &str) -> Result<String, RequestError> {
        self.str(key)?
            .ok_or_else(|| RequestError::invalid(self.path(key), "required field is missing"))
    }

    pub(crate) fn bool(&mut self, key: &str) -> Result<Option<bool>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong(key, "a boolean", &other)),
        }
    }

    pub(crate) fn u32(&mut self, key: &str) -> Result<Option<u32>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.wrong(key, "a non-negative integer below 2^32", &v)),
            },
        }
    }

    pub(crate) fn f64(&mut self, key: &str) -> Result<Option<f64>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) => Ok(Some(n)),
                None => Err(self.wrong(key, "a number", &v)),
            },
        }
    }

    pub(crate) fn arr(&mut self, key: &str) -> Result<Option<Vec<Value>>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong(key, "an array", &other)),
        }
    }

    pub(crate) fn obj(&mut self, key: &str) -> Result<Option<Obj>, RequestError> {
        let path = self.path(key);
        match self.take(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &path).map(Some),
        }
    }

    /// Puts a field back (for passthrough of a value that was inspected).
    pub(crate) fn put(&mut self, key: &str, v: Value) {
        self.map.insert(key.to_owned(), v);
    }

    /// The fields not taken.
    pub(crate) fn rest(self) -> Map<String, Value> {
        self.map
    }
}

/// Text of a string-or-array-of-text-parts content (OpenAI system messages, tool
/// results). Returns the texts in order.
pub(crate) fn text_parts(v: Value, path: &str) -> Result<Vec<String>, RequestError> {
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let p = idx(path, i);
                let mut o = Obj::new(item, &p)?;
                match o.req_str("type")?.as_str() {
                    "text" => o.req_str("text"),
                    other => Err(RequestError::invalid(
                        p,
                        format!("expected a text part, got type {}", untrusted(other)),
                    )),
                }
            })
            .collect(),
        other => Err(RequestError::invalid(
            path,
            format!(
                "expected a string or an array of text parts, got {}",
                kind(&other)
            ),
        )),
    }
}
