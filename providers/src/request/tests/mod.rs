//! Tests of request translation: fixture round trips and one test per mapping rule.

mod fixtures;
mod responses;
mod same_dialect;
mod to_anthropic;
mod to_openai;

use serde_json::{Value, json};

use super::{AnthropicDefaults, Capabilities, ChatRequest, RequestError};

/// A target model that reasons.
const REASONS: Capabilities = Capabilities {
    reasons: Some(true),
};

/// OpenAI body -> Anthropic body with the default settings, for a model that reasons.
fn o2a(body: Value) -> Result<Value, RequestError> {
    ChatRequest::from_openai(&body)?.to_anthropic_for(&AnthropicDefaults::default(), REASONS)
}

/// Anthropic body -> OpenAI body, for a model that reasons.
fn a2o(body: Value) -> Result<Value, RequestError> {
    ChatRequest::from_anthropic(&body)?.to_openai_for(REASONS)
}

/// A minimal OpenAI body with these messages.
fn openai(messages: Value) -> Value {
    json!({"model": "gpt-4o", "messages": messages})
}

/// A minimal Anthropic body with these messages.
fn anthropic(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": messages})
}

/// The param of an error, asserting there was one.
fn err_param(r: Result<Value, RequestError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.param().to_owned(),
    }
}

/// A small seeded generator (the crate has no property-testing dependency).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    /// A number below `n`.
    pub(super) fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }

    /// A few words of text, with escapes, newlines and multi-byte characters.
    pub(super) fn word(&mut self) -> String {
        const WORDS: [&str; 6] = ["hi", "é", "\"q\"", "line\nbreak", "日本", "{x}"];
        (0..1 + self.next(3))
            .map(|_| WORDS[self.next(6) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}
