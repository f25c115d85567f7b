//! Stream ids: the one rule every door checks an id from a client against (`POST
//! /v1/streams` with `streamgate-stream-id`, `GET`/`DELETE /v1/streams/{id}`, and the
//! WebSocket door's `start`, `resume` and `cancel`). One function, so that an id one door
//! accepts is never refused by another (docs/streams.md, docs/websocket.md).
//!
//! The gateway's own ids (`st_` and hex digits) are within the same set.

/// Longest stream id, in bytes (= characters: every allowed character is ASCII).
pub const MAX_LEN: usize = 128;

/// The allowed characters, as the docs and error messages write them.
pub const ALLOWED: &str = "[A-Za-z0-9._:-]";

/// Whether `id` is a stream id: 1 to [`MAX_LEN`] characters of [`ALLOWED`] (ASCII letters and
/// digits, `.`, `_`, `:` and `-`).
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(is_allowed)
}

fn is_allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_set_and_nothing_else() {
        for c in (0u8..=127).map(char::from) {
            let documented = c.is_ascii_alphanumeric() || "._:-".contains(c);
            assert_eq!(is_valid(&c.to_string()), documented, "{c:?}");
        }
        for other in ["é", "ß", "\u{0}", "a b", "a/b", "a\u{212A}"] {
            assert!(!is_valid(other), "{other:?}");
        }
        assert!(is_valid("st_19a2b3c4d5e0001"));
        assert!(is_valid(&"a".repeat(MAX_LEN)));
        assert!(!is_valid(&"a".repeat(MAX_LEN + 1)));
        assert!(!is_valid(""));
    }

    proptest! {
        /// The rule as a regular expression, the way the docs write it, agrees with the
        /// function on ids near the set (most generated ids differ from a valid one by one
        /// character or by length).
        #[test]
        fn agrees_with_the_documented_pattern(id in "[A-Za-z0-9._:\\-]{0,130}|[ -~]{0,8}|\\PC{0,4}") {
            let documented = !id.is_empty()
                && id.len() <= MAX_LEN
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            prop_assert_eq!(is_valid(&id), documented);
        }
    }
}
