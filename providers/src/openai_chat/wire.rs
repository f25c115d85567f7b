//! Serde types of this dialect's wire format.
//!
//! The streamed chunk types borrow from the frame's data wherever the JSON string has no
//! escapes ([`Str`]), and box the rarely present fields, so that decoding a typical chunk
//! allocates nothing beyond the event strings: its `choices` vector reuses the previous
//! chunk's allocation ([`recycle`]). Unknown fields are skipped. (Holding the first choice
//! inline instead of in a `Vec` was measured slower: the larger struct costs more in moves
//! than the allocation saves.)

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Extra, Fragment};

/// A JSON string borrowed from the input when it has no escapes, owned otherwise.
///
/// A newtype because serde only borrows a `Cow<str>` that is a field's whole type: inside
/// an `Option` it would always allocate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Str<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The string, owned (no copy when it was already owned).
    pub fn into_string(self) -> String {
        self.0.into_owned()
    }

    /// The string as an event's fragment (inline when short, whether borrowed or owned).
    pub fn into_fragment(self) -> Fragment {
        Fragment::from(self.0)
    }
}

/// One streamed `chat.completion.chunk` (or a mid-stream `{"error": ...}` frame).
#[derive(Debug, Default, Deserialize)]
pub struct Chunk<'a> {
    /// Response id; empty in Azure's leading `prompt_filter_results` chunk.
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    /// Model name.
    #[serde(borrow, default)]
    pub model: Option<Str<'a>>,
    /// Unix seconds.
    #[serde(default)]
    pub created: Option<u64>,
    /// Per-choice deltas; empty in the usage chunk.
    #[serde(borrow, default)]
    pub choices: Option<Vec<Choice<'a>>>,
    /// Token counts (final chunk with `stream_options.include_usage`; `null` elsewhere).
    /// Boxed, like every rarely present field here: the chunk struct is moved around while
    /// it is built, and its size shows up in the decoder's profile.
    #[serde(default)]
    pub usage: Option<Box<WireUsage>>,
    /// Backend configuration fingerprint (passthrough).
    #[serde(borrow, default)]
    pub system_fingerprint: Option<Str<'a>>,
    /// Processing tier (passthrough).
    #[serde(borrow, default)]
    pub service_tier: Option<Str<'a>>,
    /// Azure's prompt filter annotations: only their presence matters here.
    #[serde(default)]
    pub prompt_filter_results: Option<IgnoredAny>,
    /// A mid-stream error (`{"error": {"message", "type", "code"}}`); any shape accepted.
    #[serde(default)]
    pub error: Option<Box<Value>>,
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct Choice<'a> {
    /// Choice index (`n > 1`).
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds to the choice.
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    /// Set on the choice's last chunk.
    #[serde(borrow, default)]
    pub finish_reason: Option<Str<'a>>,
    /// Token log probabilities (passthrough when non-null).
    #[serde(default)]
    pub logprobs: Option<Box<Value>>,
    /// Azure content filter annotations (passthrough when non-empty).
    #[serde(default)]
    pub content_filter_results: Option<Box<Value>>,
}

/// A choice's delta.
#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    /// `assistant` on the first chunk; carries no information.
    #[serde(default)]
    pub role: Option<IgnoredAny>,
    /// Answer text.
    #[serde(borrow, default)]
    pub content: Option<Str<'a>>,
    /// Refusal text.
    #[serde(borrow, default)]
    pub refusal: Option<Str<'a>>,
    /// Reasoning text (DeepSeek, vLLM).
    #[serde(borrow, default)]
    pub reasoning_content: Option<Str<'a>>,
    /// Reasoning text (OpenRouter, newer vLLM).
    #[serde(borrow, default)]
    pub reasoning: Option<Str<'a>>,
    /// Tool call fragments.
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallChunk<'a>>>,
}

/// One fragment of a streamed tool call.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallChunk<'a> {
    /// The call's position within its choice; missing on some compatible servers.
    #[serde(default)]
    pub index: Option<u32>,
    /// Call id, on the call's first fragment.
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    /// `function`, on the call's first fragment; carries no information.
    #[serde(default, rename = "type")]
    pub kind: Option<IgnoredAny>,
    /// Name (first fragment) and an arguments fragment.
    #[serde(borrow, default)]
    pub function: Option<FunctionChunk<'a>>,
}

/// The `function` object of a tool call fragment.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionChunk<'a> {
    /// Function name, on the first fragment.
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    /// Arguments fragment.
    #[serde(borrow, default)]
    pub arguments: Option<Str<'a>>,
}

/// `usage` of a chunk or of a non-streaming body.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireUsage {
    /// Every prompt token, cached ones included.
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Every generated token, reasoning included.
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// Sum of the two.
    #[serde(default)]
    pub total_tokens: Option<u64>,
    /// Cache breakdown of the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Reasoning breakdown of the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CompletionTokensDetails {
    /// Completion tokens spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

// ---- Output side: what the encoder writes. Borrowed, so that nothing is copied. ----

/// The fields every chunk repeats before `choices`: what the encoder's hand-written head is
/// tested against.
#[cfg(test)]
#[derive(Debug, Serialize)]
pub(crate) struct ChunkHead<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    /// Same-dialect chunk-level passthrough (`system_fingerprint`, `service_tier`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a Extra>,
}

/// One choice of an output chunk.
#[derive(Debug, Serialize)]
pub(crate) struct ChoiceOut<'a> {
    pub index: u32,
    pub delta: DeltaOut<'a>,
    /// Same-dialect choice-level passthrough (`logprobs`, `content_filter_results`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<&'a Extra>,
    pub finish_reason: Option<&'a str>,
}

/// An output delta.
#[derive(Debug, Default, Serialize)]
pub(crate) struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

/// One tool call fragment of an output delta.
#[derive(Debug, Serialize)]
pub(crate) struct ToolCallOut<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionOut<'a>,
}

/// The `function` of an output tool call fragment.
#[derive(Debug, Serialize)]
pub(crate) struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

/// The mid-stream error frame.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorFrame<'a> {
    pub error: ErrorBody<'a>,
}

/// Body of [`ErrorFrame`].
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub code: &'a str,
}

// ---- Non-streaming body (`chat.completion`). ----

/// A non-streaming `chat.completion` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Response id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// One entry per choice.
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// Same-dialect passthrough (`system_fingerprint`, `service_tier`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Choice index.
    pub index: u32,
    /// The assistant message.
    pub message: ResponseMessage,
    /// Token log probabilities, when requested and the answer came from OpenAI.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Why the choice ended; null if it did not.
    pub finish_reason: Option<String>,
}

/// The assistant message of a [`CompletionChoice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: String,
    /// Answer text; null when there is none.
    pub content: Option<String>,
    /// Refusal text; null when there is none.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Reasoning text (DeepSeek convention), only when there is some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Client tool calls, only when there are some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ResponseToolCall>>,
}

/// One tool call of a [`ResponseMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseToolCall {
    /// Call id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name and arguments.
    pub function: ResponseFunction,
}

/// The `function` of a [`ResponseToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFunction {
    /// Function name.
    pub name: String,
    /// JSON arguments text.
    pub arguments: String,
}

/// `choices`, emptied, as a vector of choices borrowing from anything: the same allocation,
/// for the next chunk (one allocation and free fewer per frame, issue #14).
///
/// Choices borrow from their frame, so a vector of them cannot outlive it; an empty one
/// holds no borrow, and collecting the empty iterator into a vector of the same layout
/// reuses the allocation (std's in-place collection; `recycling_keeps_the_allocation` checks
/// it, and were it not so this would only allocate as before).
pub(crate) fn recycle<'b>(mut choices: Vec<Choice<'_>>) -> Vec<Choice<'b>> {
    choices.clear();
    #[expect(
        clippy::unnecessary_filter_map,
        reason = "the map changes the items' lifetime, which `filter` cannot"
    )]
    choices.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycling_keeps_the_allocation() {
        let data = String::from("hi");
        let mut choices: Vec<Choice<'_>> = Vec::with_capacity(3);
        choices.push(Choice {
            finish_reason: Some(Str(Cow::Borrowed(&data))),
            ..Choice::default()
        });
        let at = choices.as_ptr().cast::<u8>();
        let recycled: Vec<Choice<'static>> = recycle(choices);
        assert!(recycled.is_empty());
        assert_eq!(recycled.capacity(), 3);
        assert_eq!(recycled.as_ptr().cast::<u8>(), at);
    }
}
