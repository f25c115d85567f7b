//! Reading a JSON body field by field, with the path of each field for error messages.

use std::fmt;

use serde_json::{Map, Value};

use super::tree::{Key, Tree, object};

use super::error::RequestError;
use crate::untrusted::untrusted;

/// Where a value sits in the client's body (`messages[3].content[1]`), for error messages.
///
/// A chain of borrowed segments, rendered only when an error is built (`String::from`, so
/// `RequestError::invalid(path, ..)` takes one as it is): a valid request, which needs no
/// path, formats and allocates none (formatting every message's and part's path up front
/// showed in profiles of long conversations).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'a> {
    /// The whole body: renders as `""`.
    Root,
    /// `parent.key`, or `key` when the parent renders as `""`.
    Key(&'a Path<'a>, &'a str),
    /// `parent[i]`.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    /// A top-level field (`messages`).
    pub(crate) fn top(key: &'a str) -> Path<'a> {
        Path::Key(&Path::Root, key)
    }

    /// A field of the value at this path.
    pub(crate) fn key<'b>(&'b self, key: &'b str) -> Path<'b> {
        Path::Key(self, key)
    }

    /// An item of the array at this path.
    pub(crate) fn index(&self, i: usize) -> Path<'_> {
        Path::Index(self, i)
    }

    /// Whether this renders as `""`: the root, or empty keys down from it. Decides the
    /// separator the way the joined strings did (on the text, not on the shape).
    fn is_empty(&self) -> bool {
        match self {
            Path::Root => true,
            Path::Key(parent, key) => key.is_empty() && parent.is_empty(),
            Path::Index(..) => false,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) if parent.is_empty() => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

impl From<Path<'_>> for String {
    fn from(path: Path<'_>) -> String {
        path.to_string()
    }
}

/// A short name for a JSON value's type, for messages.
pub(crate) fn kind(v: &Tree) -> &'static str {
    match v {
        Tree::Null => "null",
        Tree::Bool(_) => "a boolean",
        Tree::Number(_) => "a number",
        Tree::String(_) => "a string",
        Tree::Array(_) => "an array",
        Tree::Object(_) => "an object",
    }
}

/// The string at `key` of `v`, when `v` is an object and the field a string: a look before a
/// value is taken over, to decide whether it is kept whole.
pub(crate) fn peek_str<'a>(v: &'a Tree, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Tree::as_str)
}

/// A JSON object being taken apart: each `take` removes the field, what remains is the
/// passthrough.
///
/// The members are held as a list in their order, not as the parsed map: a request object
/// has a few members and is asked for a dozen or two names, most of them absent. A look down
/// the list costs a few short comparisons where the map hashed every name asked for (SipHash)
/// and shifted the members after each one taken (issue #14: 5k instructions per request).
/// An object of very many members costs a scan per name asked (a few dozen names at most),
/// linear in the body as its parse already is; `max_body_json_values` bounds both.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    /// The members in order; a taken one is `None`. Keys are unique (the tree's).
    members: Vec<Option<(Key, Tree)>>,
    path: Path<'a>,
}

impl<'a> Obj<'a> {
    /// The object at `path`, or an error naming `what` it should have been. Takes the value
    /// over: a body is taken apart, never copied (a copy per nesting level multiplied the
    /// memory a large body costs).
    pub(crate) fn new(v: Tree, path: Path<'a>) -> Result<Obj<'a>, RequestError> {
        match v {
            Tree::Object(members) => Ok(Obj {
                members: members.into_iter().map(Some).collect(),
                path,
            }),
            other => Err(RequestError::invalid(
                path,
                format!("expected an object, got {}", kind(&other)),
            )),
        }
    }

    /// Path of a field of this object.
    pub(crate) fn path<'s>(&'s self, key: &'s str) -> Path<'s> {
        self.path.key(key)
    }

    /// Removes a field; `null` counts as absent.
    pub(crate) fn take(&mut self, key: &str) -> Option<Tree> {
        let slot = self
            .members
            .iter_mut()
            .find(|m| m.as_ref().is_some_and(|(k, _)| k == key))?;
        match slot.take() {
            None | Some((_, Tree::Null)) => None,
            Some((_, v)) => Some(v),
        }
    }

    fn wrong(&self, key: &str, want: &str, got: &Tree) -> RequestError {
        RequestError::invalid(
            self.path(key),
            format!("expected {want}, got {}", kind(got)),
        )
    }

    pub(crate) fn str(&mut self, key: &str) -> Result<Option<String>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(Tree::String(s)) => Ok(Some(s)),
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
            Some(Tree::Bool(b)) => Ok(Some(b)),
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

    pub(crate) fn arr(&mut self, key: &str) -> Result<Option<Vec<Tree>>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(Tree::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong(key, "an array", &other)),
        }
    }

    /// The object at `key`. Its path borrows this object's, so this one is not read again
    /// until the inner one is done with.
    pub(crate) fn obj<'s>(&'s mut self, key: &'s str) -> Result<Option<Obj<'s>>, RequestError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, self.path(key)).map(Some),
        }
    }

    /// [`Obj::obj`] of a required field. A method rather than `obj(..)?.ok_or_else(..)` at
    /// each caller: a closure naming this object's path could not borrow it while the inner
    /// object does.
    pub(crate) fn req_obj<'s>(&'s mut self, key: &'s str) -> Result<Obj<'s>, RequestError> {
        match self.take(key) {
            None => Err(RequestError::invalid(
                self.path(key),
                "required field is missing",
            )),
            Some(v) => Obj::new(v, self.path(key)),
        }
    }

    /// Puts a field back (for passthrough of a value that was inspected): in place of a
    /// member of that name not taken, else last, as a map's insert would.
    pub(crate) fn put(&mut self, key: &str, v: Tree) {
        match self.members.iter_mut().flatten().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.members.push(Some((key.into(), v))),
        }
    }

    /// The fields not taken, in their order, as the unified request keeps them.
    pub(crate) fn rest(self) -> Map<String, Value> {
        object(self.members.into_iter().flatten())
    }

    /// The fields not taken, in their order, as an object to put back; `None` when every
    /// field was taken.
    pub(crate) fn rest_tree(self) -> Option<Tree> {
        let rest: Vec<_> = self.members.into_iter().flatten().collect();
        (!rest.is_empty()).then_some(Tree::Object(rest))
    }
}

/// Text of a string-or-array-of-text-parts content (OpenAI system messages, tool
/// results). Returns the texts in order.
pub(crate) fn text_parts(v: Tree, path: Path<'_>) -> Result<Vec<String>, RequestError> {
    match v {
        Tree::String(s) => Ok(vec![s]),
        Tree::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let p = path.index(i);
                let mut o = Obj::new(item, p)?;
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

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::{Obj, Path, Tree};
    use crate::request::tests::Rng;

    fn key(rng: &mut Rng) -> String {
        const KEYS: [&str; 6] = ["model", "messages", "stream", "n", "", "extra"];
        KEYS[rng.below(6) as usize].to_owned()
    }

    fn value(rng: &mut Rng) -> Value {
        match rng.below(4) {
            0 => Value::Null,
            1 => json!(rng.below(100)),
            2 => json!(key(rng)),
            _ => json!([rng.below(3)]),
        }
    }

    /// Taking, putting back and the rest behave as the parsed map's `shift_remove`, `insert`
    /// and the map itself did: over seeded objects and sequences of operations, names that
    /// are there and names that are not, `null` members, a name taken then put back.
    #[test]
    fn members_are_taken_and_put_back_as_the_map_did() {
        let mut rng = Rng(14);
        for case in 0..2000 {
            let mut map = Map::new();
            for _ in 0..rng.below(6) {
                map.insert(key(&mut rng), value(&mut rng));
            }
            let mut obj = Obj::new(Value::Object(map.clone()).into(), Path::Root).unwrap();
            for _ in 0..rng.below(8) {
                let key = key(&mut rng);
                if rng.below(3) == 0 {
                    let v = value(&mut rng);
                    map.insert(key.clone(), v.clone());
                    obj.put(&key, v.into());
                } else {
                    let want = match map.shift_remove(&key) {
                        None | Some(Value::Null) => None,
                        v => v,
                    };
                    let want = want.map(Tree::from);
                    assert_eq!(obj.take(&key), want, "case {case}: take {key:?}");
                }
            }
            let rest: Vec<_> = obj.rest().into_iter().collect();
            let want: Vec<_> = map.into_iter().collect();
            assert_eq!(rest, want, "case {case}: the rest, in order");
        }
    }

    /// The paths as they were joined when each level was formatted at once.
    fn at(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    fn idx(path: &str, i: usize) -> String {
        format!("{path}[{i}]")
    }

    /// Extends `path` (rendered by the old joins as `old`) a level at a time, down to `depth`
    /// more levels, checking each rendering on the way.
    fn nest(rng: &mut Rng, path: Path<'_>, old: &str, depth: u32, case: u32) {
        assert_eq!(path.to_string(), old, "case {case}");
        assert_eq!(String::from(path), old, "case {case}");
        if depth == 0 {
            return;
        }
        for _ in 0..1 + rng.below(2) {
            if rng.below(2) == 0 {
                let key = key(rng);
                nest(rng, path.key(&key), &at(old, &key), depth - 1, case);
            } else {
                let i = rng.below(12) as usize;
                nest(rng, path.index(i), &idx(old, i), depth - 1, case);
            }
        }
    }

    /// A path renders as the eager joins did, over seeded nestings of keys (the empty key
    /// among them, at the top and below) and indices, from the root and from a top field.
    #[test]
    fn paths_render_as_the_eager_joins_did() {
        let mut rng = Rng(41);
        for case in 0..500 {
            let depth = rng.below(7) as u32;
            if rng.below(2) == 0 {
                nest(&mut rng, Path::Root, "", depth, case);
            } else {
                let top = key(&mut rng);
                nest(&mut rng, Path::top(&top), &at("", &top), depth, case);
            }
        }
    }
}
