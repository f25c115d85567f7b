//! Showing a string a client or upstream chose (a model name, an id, a header, a tool name)
//! in a log line or an error message: quoted, escaped and capped, so that a newline cannot
//! forge a log line and 10 KB of text cannot fill an error body. The one place that does it.

use std::fmt;

/// Most characters of the escaped text shown (a stream id, 128 characters, fits whole); the
/// rest is counted, not shown.
pub const MAX_SHOWN: usize = 160;

/// `text` for display: `"..."` with control characters, quotes and backslashes escaped
/// (Rust's `escape_debug`), cut after [`MAX_SHOWN`] escaped characters with the full length
/// in bytes appended.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// See [`untrusted`]. `Display` and `Debug` print the same.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(&'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut shown = 0;
        for c in self.0.chars() {
            let escaped = c.escape_debug();
            let len = escaped.len();
            if shown + len > MAX_SHOWN {
                return write!(f, "\"... ({} bytes)", self.0.len());
            }
            shown += len;
            fmt::Display::fmt(&escaped, f)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_like_debug() {
        assert_eq!(untrusted("gpt-4o").to_string(), "\"gpt-4o\"");
        assert_eq!(untrusted("a\nb\"c").to_string(), "\"a\\nb\\\"c\"");
    }

    /// Any text (control characters, quotes, multi-byte letters, any length): one line, no
    /// control character, bounded, and whole when it fits.
    #[test]
    fn never_a_raw_control_character_and_bounded() {
        const PIECES: [&str; 9] = [
            "a",
            "\n",
            "\r",
            "\"",
            "\\",
            "é",
            "\u{0}",
            "\u{1b}[31m",
            "\u{2028}",
        ];
        let mut seed: u64 = 0x5eed;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (seed >> 33) % 120;
            let mut text = String::new();
            for _ in 0..len {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                text.push_str(PIECES[((seed >> 33) % 9) as usize]);
            }
            let shown = untrusted(&text).to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.chars().count() <= MAX_SHOWN + 40, "{shown}");
            let debug = format!("{text:?}");
            if debug.chars().count() <= MAX_SHOWN + 2 {
                assert_eq!(shown, debug);
            } else {
                assert!(
                    shown.ends_with(&format!("... ({} bytes)", text.len())),
                    "{shown}"
                );
            }
        }
    }
}
