//! A credential that cannot be printed: Debug and Display show only that it is there.

use std::fmt;

/// A provider or client key. Its value leaves only through [`Secret::expose`], at the one
/// place that writes it into an upstream request header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The key itself, for the upstream request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `text` (a provider's error message) with every word that looks like a key replaced by
/// `[redacted]`: providers echo the key they refused, masked or not ("Incorrect API key
/// provided: sk-proj-****abcd"), and that key is the gateway's, not the client's.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(word_end);
        // Quotes and punctuation around it belong to the sentence, not to the key.
        let inner = word.trim_start_matches(['"', '\'', '(']);
        let core = inner.trim_end_matches(['.', ',', ';', ':', ')', '"', '\'']);
        if looks_like_key(core) {
            out.push_str(&word[..word.len() - inner.len()]);
            out.push_str("[redacted]");
            out.push_str(&inner[core.len()..]);
        } else {
            out.push_str(word);
        }
        let space_end = tail
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(tail.len());
        out.push_str(&tail[..space_end]);
        rest = &tail[space_end..];
    }
    out
}

/// `text` relayed from a provider with the gateway's own configured keys (`own`, their actual
/// values) removed, wherever and however they appear, then with key-shaped words redacted
/// ([`redact_keys`]): a provider key need not look like one.
pub fn scrub(text: &str, own: &[Secret]) -> String {
    let mut text = text.to_owned();
    for key in own.iter().filter(|k| !k.0.is_empty()) {
        if text.contains(&key.0) {
            text = text.replace(&key.0, "[redacted]");
        }
    }
    redact_keys(&text)
}

/// OpenAI-style (`sk-`, `sk_`), Anthropic (`sk-ant-`), Google (`AIza`) keys, and any masked
/// token (`****`).
fn looks_like_key(word: &str) -> bool {
    (word.len() >= 8 && (word.starts_with("sk-") || word.starts_with("sk_")))
        || (word.len() >= 20 && word.starts_with("AIza"))
        || word.contains("***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_echoed_by_providers_are_redacted() {
        let cases = [
            (
                "Incorrect API key provided: sk-proj-********************abcd. You can find your API key at https://platform.openai.com/account/api-keys.",
                "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            ),
            (
                "invalid key sk-ant-api03-AbCdEf0123456789, try again",
                "invalid key [redacted], try again",
            ),
            (
                "API key not valid: AIzaSyA1234567890abcdefghijk",
                "API key not valid: [redacted]",
            ),
            (
                "key \"sk_live_abcdefgh\" refused",
                "key \"[redacted]\" refused",
            ),
            ("invalid x-api-key", "invalid x-api-key"),
            ("ask-me sky sk-1 anything", "ask-me sky sk-1 anything"),
            ("  two  spaces\nand lines ", "  two  spaces\nand lines "),
        ];
        for (text, want) in cases {
            assert_eq!(redact_keys(text), want, "{text}");
        }
    }

    #[test]
    fn the_gateways_own_keys_are_scrubbed_whatever_their_shape() {
        let own = [Secret::new("local-vllm-token-42"), Secret::new("")];
        let text = "token local-vllm-token-42 refused (local-vllm-token-42); sk-other-123456 too";
        assert_eq!(
            scrub(text, &own),
            "token [redacted] refused ([redacted]); [redacted] too"
        );
        assert_eq!(scrub("nothing here", &own), "nothing here");
    }

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("sk-live-123");
        assert!(!format!("{s:?} {s}").contains("sk-live"));
        assert_eq!(s.expose(), "sk-live-123");
    }
}
