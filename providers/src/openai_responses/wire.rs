//! Serde types of the Responses wire format that the codec reads field by field. Stream
//! events and output items are otherwise handled as JSON objects: most of them are kept or
//! rewritten verbatim, and a new event type must never stop a stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `response` object of `response.created` / `completed` / `incomplete` / `failed`
/// (only the fields the codec reads; everything else stays in the verbatim JSON).
#[derive(Debug, Default, Deserialize)]
pub struct ResponseHead {
    /// `resp_...`.
    #[serde(default)]
    pub id: Option<String>,
    /// Model that answers.
    #[serde(default)]
    pub model: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<f64>,
    /// `in_progress`, `completed`, `incomplete`, `failed`, `cancelled`, `queued`.
    #[serde(default)]
    pub status: Option<String>,
    /// Why an incomplete response stopped.
    #[serde(default)]
    pub incomplete_details: Option<IncompleteDetails>,
    /// What failed (`response.failed`).
    #[serde(default)]
    pub error: Option<Value>,
    /// Token counts (terminal events only).
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// `auto`, `default`, `flex`, `priority`.
    #[serde(default)]
    pub service_tier: Option<String>,
}

/// `incomplete_details`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `usage` of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens, cached ones included.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Breakdown of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_details: Option<InputDetails>,
    /// Generated tokens, reasoning included.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Breakdown of the generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputDetails>,
    /// Input plus output.
    #[serde(default)]
    pub total_tokens: Option<u64>,
}

/// `usage.input_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDetails {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDetails {
    /// Tokens spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}
