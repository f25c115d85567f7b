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

pub(super) use crate::seeded::Rng;

/// A few words of text, with escapes, newlines and multi-byte characters.
pub(super) fn word(rng: &mut Rng) -> String {
    rng.pieces(
        &["hi", "é", "\"q\"", "line\nbreak", "日本", "{x}"],
        1,
        3,
        " ",
    )
}
