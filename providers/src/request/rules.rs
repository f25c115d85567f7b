//! What happens to a dialect-only top-level parameter (one the unified model keeps in
//! [`ChatRequest::extra`](super::ChatRequest::extra)) when the request goes to the other
//! dialect. Keys not listed are dropped. The module docs of [`super`] render this table.

use serde_json::{Map, Value};

use super::error::RequestError;
use crate::dialect::Dialect;

/// The fate of a parameter in the other dialect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// Left out: it only tunes or labels the request.
    Drop,
    /// Refused whatever its value.
    Refuse(&'static str),
    /// Refused when the predicate holds for its value, dropped otherwise.
    RefuseIf(fn(&Value) -> bool, &'static str),
}

/// OpenAI-only parameters, going to Anthropic.
pub(crate) const OPENAI_ONLY: &[(&str, Rule)] = &[
    (
        "response_format",
        Rule::RefuseIf(
            not_text_format,
            "Anthropic has no JSON mode or structured output; describe the format in the \
             prompt or force a tool call with tool_choice",
        ),
    ),
    (
        "logprobs",
        Rule::RefuseIf(is_true, "Anthropic does not return token log probabilities"),
    ),
    ("top_logprobs", Rule::Drop),
    (
        "logit_bias",
        Rule::RefuseIf(
            non_empty_object,
            "Anthropic has no logit bias; remove it or use a model that supports it",
        ),
    ),
    ("seed", Rule::Drop),
    ("presence_penalty", Rule::Drop),
    ("frequency_penalty", Rule::Drop),
    ("service_tier", Rule::Drop),
    ("store", Rule::Drop),
    ("metadata", Rule::Drop),
    ("prompt_cache_key", Rule::Drop),
    ("safety_identifier", Rule::Drop),
    ("prediction", Rule::Drop),
    ("verbosity", Rule::Drop),
    ("stream_options", Rule::Drop),
    (
        "modalities",
        Rule::RefuseIf(
            not_text_only,
            "Anthropic answers with text only (no audio output)",
        ),
    ),
    (
        "audio",
        Rule::Refuse("Anthropic answers with text only (no audio output)"),
    ),
    (
        "web_search_options",
        Rule::Refuse("use an Anthropic web_search tool with an Anthropic client instead"),
    ),
    (
        "functions",
        Rule::Refuse("legacy function calling is not translated; use tools"),
    ),
    (
        "function_call",
        Rule::Refuse("legacy function calling is not translated; use tool_choice"),
    ),
    (
        "tool_choice",
        Rule::Refuse(
            "only \"auto\", \"none\", \"required\" and {\"type\":\"function\"} are translated",
        ),
    ),
];

/// Anthropic-only parameters, going to OpenAI. (`top_k` is modelled and dropped.)
pub(crate) const ANTHROPIC_ONLY: &[(&str, Rule)] = &[
    (
        "tool_choice",
        // Kept here with its `type` only when the type is not one the model knows.
        Rule::RefuseIf(
            has_type,
            "only \"auto\", \"any\", \"tool\" and \"none\" are translated",
        ),
    ),
    ("thinking", Rule::Drop),
    ("service_tier", Rule::Drop),
    ("metadata", Rule::Drop),
    ("context_management", Rule::Drop),
    (
        "container",
        Rule::Refuse("OpenAI Chat Completions has no code-execution containers"),
    ),
    (
        "mcp_servers",
        Rule::Refuse("OpenAI Chat Completions cannot call remote MCP servers"),
    ),
    (
        "output_format",
        Rule::Refuse("structured output is not translated; use an Anthropic upstream"),
    ),
    (
        "output_config",
        Rule::RefuseIf(
            has_format,
            "structured output is not translated; use an Anthropic upstream",
        ),
    ),
];

fn is_true(v: &Value) -> bool {
    v == &Value::Bool(true)
}

fn not_text_format(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) != Some("text")
}

fn non_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|m| !m.is_empty())
}

fn not_text_only(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|m| m.as_str() != Some("text")))
}

fn has_type(v: &Value) -> bool {
    v.get("type").is_some()
}

fn has_format(v: &Value) -> bool {
    v.get("format").is_some_and(|f| !f.is_null())
}

/// Applies `table` to the passthrough fields of a request bound for `target`.
pub(crate) fn check(
    extra: &Map<String, Value>,
    table: &[(&str, Rule)],
    target: Dialect,
) -> Result<(), RequestError> {
    for (key, value) in extra {
        let rule = table
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Rule::Drop, |(_, r)| *r);
        let refused = match rule {
            Rule::Drop => None,
            Rule::Refuse(why) => Some(why),
            Rule::RefuseIf(pred, why) => pred(value).then_some(why),
        };
        if let Some(why) = refused {
            return Err(RequestError::unsupported(key.as_str(), target, why));
        }
    }
    Ok(())
}
