//! The tree a door's body is read into before it is taken apart into the unified request.
//!
//! It is `serde_json::Value` with objects as member lists in their order. A request's objects
//! are taken apart member by member as soon as they are read ([`super::fields::Obj`]), so the
//! map `Value` builds for each of them (a SipHash of every key, a hash table, its drop) was
//! pure cost: 16% of the instructions of reading a 33 kB conversation (issue #14). What the
//! unified request keeps whole (a field the gateway does not interpret, a block of a kind it
//! does not know) becomes a `Value` where it is kept, with [`Value::from`].
//!
//! Keys are unique, as in the map: a repeated key keeps its first place and its last value.
//! A key is a [`Key`], inline up to 24 bytes: a request's keys (`type`, `role`, `content`,
//! `tool_use_id`...) cost no allocation each, as a `String` did (8% of the instructions of a
//! 40 kB Claude Code request, most of its blocks being a few short keys).

use std::collections::HashMap;

use compact_str::CompactString;
use serde_json::{Map, Number, Value};

/// An object's key: inline up to 24 bytes.
pub type Key = CompactString;

/// A JSON value whose objects are member lists (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Tree>),
    /// An object: its members in their order, each key once.
    Object(Vec<(Key, Tree)>),
}

impl Tree {
    /// The member `key` of an object; `None` for anything else.
    pub fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The keys of an object, in order; none for anything else.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let members = match self {
            Tree::Object(members) => members.as_slice(),
            _ => &[],
        };
        members.iter().map(|(k, _)| k.as_str())
    }

    /// The text of a string; `None` for anything else.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::String(s) => Some(s),
            _ => None,
        }
    }

    /// A number that is a `u64`; `None` for anything else.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Tree::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// A number as an `f64`; `None` for anything else.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Tree::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Whether this is a string.
    pub fn is_string(&self) -> bool {
        matches!(self, Tree::String(_))
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Tree::Object(_))
    }
}

/// Members of an object being built: a repeated key replaces the earlier value in its place.
/// A short object is searched in order; past [`Members::SCAN`] members an index of the keys
/// is kept, so that an object of a million keys costs no more than its map did.
#[derive(Default)]
pub(crate) struct Members {
    list: Vec<(Key, Tree)>,
    index: Option<HashMap<Key, usize>>,
}

impl Members {
    /// Members searched in order before the index is built.
    const SCAN: usize = 16;

    pub(crate) fn insert(&mut self, key: Key, value: Tree) {
        let found = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.list.iter().position(|(k, _)| *k == key),
        };
        if let Some(i) = found {
            self.list[i].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.list.len());
        }
        self.list.push((key, value));
        if self.index.is_none() && self.list.len() > Self::SCAN {
            let index = self.list.iter().enumerate();
            self.index = Some(index.map(|(i, (k, _))| (k.clone(), i)).collect());
        }
    }

    pub(crate) fn into_tree(self) -> Tree {
        Tree::Object(self.list)
    }
}

impl From<Tree> for Value {
    fn from(tree: Tree) -> Value {
        match tree {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::Number(n) => Value::Number(n),
            Tree::String(s) => Value::String(s),
            Tree::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            Tree::Object(members) => Value::Object(object(members)),
        }
    }
}

/// Members (each key once) as a `serde_json` map, in their order.
pub fn object(members: impl IntoIterator<Item = (Key, Tree)>) -> Map<String, Value> {
    members
        .into_iter()
        .map(|(k, v)| (k.into_string(), v.into()))
        .collect()
}

impl From<Value> for Tree {
    fn from(value: Value) -> Tree {
        match value {
            Value::Null => Tree::Null,
            Value::Bool(b) => Tree::Bool(b),
            Value::Number(n) => Tree::Number(n),
            Value::String(s) => Tree::String(s),
            Value::Array(items) => Tree::Array(items.into_iter().map(Tree::from).collect()),
            Value::Object(map) => {
                Tree::Object(map.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::{Rng, json_value};

    /// Any value goes to a tree and back unchanged, member order included.
    #[test]
    fn a_value_goes_to_a_tree_and_back_unchanged() {
        let mut rng = Rng(0x7eee);
        for _ in 0..2000 {
            let v = json_value(&mut rng, 4, 6, &mut |rng| {
                rng.pieces(&["a", "b", "é"], 0, 3, "")
            });
            let back = Value::from(Tree::from(v.clone()));
            assert_eq!(back, v);
            let order = |v: &Value| serde_json::to_string(v).unwrap();
            assert_eq!(order(&back), order(&v), "member order");
        }
    }

    /// Keys inserted in any order, repeated or not, across the switch to the index: the
    /// members a map's inserts leave, in the same order.
    #[test]
    fn members_keep_the_first_place_and_the_last_value_of_a_key() {
        let mut rng = Rng(0x3e3);
        for _ in 0..500 {
            let mut members = Members::default();
            let mut map = Map::new();
            let keys = 1 + rng.below(40);
            for n in 0..rng.below(60) {
                let key = format!("k{}", rng.below(keys));
                members.insert(key.as_str().into(), Tree::Number(n.into()));
                map.insert(key, Value::Number(n.into()));
            }
            let Tree::Object(list) = members.into_tree() else {
                unreachable!()
            };
            let got: Vec<_> = object(list).into_iter().collect();
            let want: Vec<_> = map.into_iter().collect();
            assert_eq!(got, want);
        }
    }
}
