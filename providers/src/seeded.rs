//! Seeded test inputs shared by the crate's unit tests (it has no property-testing
//! dependency): a small deterministic generator, so that a failure reproduces from its seed,
//! strings that stress a JSON escaper, and random JSON trees.

use serde_json::{Map, Value};

/// xorshift64*.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `min` to `max` (inclusive) of `pieces`, each picked at random, joined by `sep`.
    pub(crate) fn pieces(&mut self, pieces: &[&str], min: u64, max: u64, sep: &str) -> String {
        let count = min + self.below(max - min + 1);
        (0..count)
            .map(|_| pieces[self.below(pieces.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// A JSON value nested at most `depth` deep: null, a bool, an integer of any sign, a string
/// of `text`, or (above depth 0) an array or object of up to `width - 1` members, keyed by
/// `text`.
pub(crate) fn json_value(
    rng: &mut Rng,
    depth: u32,
    width: u64,
    text: &mut dyn FnMut(&mut Rng) -> String,
) -> Value {
    match rng.below(if depth == 0 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() as i64),
        3 => Value::String(text(rng)),
        4 => Value::Array(
            (0..rng.below(width))
                .map(|_| json_value(rng, depth - 1, width, text))
                .collect(),
        ),
        _ => Value::Object(json_object(rng, depth - 1, width, text)),
    }
}

/// An object of up to `width - 1` members keyed by `text`, each a [`json_value`] of `depth`.
pub(crate) fn json_object(
    rng: &mut Rng,
    depth: u32,
    width: u64,
    text: &mut dyn FnMut(&mut Rng) -> String,
) -> Map<String, Value> {
    (0..rng.below(width))
        .map(|_| (text(rng), json_value(rng, depth, width, text)))
        .collect()
}

/// The values a tree holds as the request census counts them: every value and every object
/// key.
pub(crate) fn tree_count(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(tree_count).sum(),
        Value::Object(o) => o.values().map(|v| 1 + tree_count(v)).sum(),
        _ => 0,
    }
}

/// `len` characters that stress an escaper: every control character, the two escaped ASCII
/// characters, DEL, plain ASCII and multi-byte UTF-8 (2, 3 and 4 bytes, U+2028 among them).
pub(crate) fn escaper_string(rng: &mut Rng, len: usize) -> String {
    const SPECIAL: &[char] = &[
        '"', '\\', '/', '\u{7f}', 'é', '—', '\u{2028}', '\u{2029}', '😀', '\u{fffd}', ' ',
    ];
    (0..len)
        .map(|_| match rng.below(4) {
            0 => char::from(rng.below(0x20) as u8),
            1 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
            2 => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x'),
            _ => char::from(b' ' + rng.below(95) as u8),
        })
        .collect()
}
