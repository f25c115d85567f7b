//! A `serde_json::Value` written to bytes exactly as `serde_json::to_vec` writes it, with the
//! string scan the encoders use (`sse::json::write_str`).
//!
//! An Anthropic or Responses upstream body is a `Value` built from the unified request (an
//! OpenAI one is an [`crate::json_out::Out`], whose kept values are written here), and most
//! of its bytes are the conversation's text. serde_json's serializer escapes a string a byte at a
//! time (about five instructions per byte, the largest single cost of a request carrying a
//! long conversation); the encoders' scan takes eight bytes at a time. Numbers, booleans and
//! null are still written by serde_json.

use serde_json::Value;

use crate::sse::json::write_str;

/// `value` as JSON bytes, byte for byte what `serde_json::to_vec` gives.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Appends `value` as JSON (compact, keys in the map's order), as `serde_json` writes it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items, write_value),
        Value::Object(map) => write_object(out, map, write_value),
        // Writing a scalar into a Vec cannot fail (a non-finite float is already `null`
        // in a `Value`).
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Appends `[item,item,...]`, each item written by `write`.
pub(crate) fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// Appends `{"key":value,...}`, each value written by `write`.
pub(crate) fn write_object<K: AsRef<str>, T>(
    out: &mut Vec<u8>,
    members: impl IntoIterator<Item = (K, T)>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'{');
    for (i, (key, item)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key.as_ref());
        out.push(b':');
        write(out, item);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::seeded::{Rng, escaper_string, json_value};

    #[test]
    fn writes_what_serde_json_writes() {
        let mut rng = Rng(0x0b0d_7e57);
        let mut text = |rng: &mut Rng| {
            let len = rng.below(40) as usize;
            escaper_string(rng, len)
        };
        for case in 0..3000 {
            let value = json_value(&mut rng, 5, 6, &mut text);
            let ours = to_vec(&value);
            let theirs = serde_json::to_vec(&value).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "case {case}"
            );
        }
    }

    #[test]
    fn numbers_and_empty_containers() {
        for value in [
            json!(null),
            json!(true),
            json!(-0.0),
            json!(1e300),
            json!(0.1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!([]),
            json!({}),
            json!({"": [[], {}, ""]}),
        ] {
            assert_eq!(
                to_vec(&value),
                serde_json::to_vec(&value).unwrap(),
                "{value}"
            );
        }
    }
}
