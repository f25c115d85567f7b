//! The unified request: what a chat request means, independent of the dialect it came in.
//!
//! Every field that both dialects can express is modelled; fields that only one dialect
//! has and that the unified model does not interpret live in `extra` maps, which are
//! written back only when the target dialect is [`ChatRequest::source`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::RequestError;
use crate::dialect::Dialect;
use crate::event::Extra;
use crate::untrusted::untrusted;

/// A chat request in the unified model. Build one with [`ChatRequest::from_openai`] or
/// [`ChatRequest::from_anthropic`], or by hand (`ChatRequest::default()` then set fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name, passed through unchanged (model mapping is the gateway's job).
    pub model: String,
    /// The system prompt ahead of the conversation: Anthropic's top-level `system`. (An
    /// OpenAI request's `system`/`developer` messages stay in [`ChatRequest::messages`]
    /// where they stand.)
    pub system: Vec<SystemPart>,
    /// The conversation. Tool results live in [`Role::Tool`] messages only.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use the tools; `None` = the provider default.
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one tool call per turn (OpenAI `parallel_tool_calls: false`,
    /// Anthropic `tool_choice.disable_parallel_tool_use: true`).
    pub parallel_tool_calls: Option<bool>,
    /// Output token cap (includes reasoning tokens in both dialects).
    pub max_tokens: Option<u32>,
    /// OpenAI only: the client sent the deprecated `max_tokens` rather than
    /// `max_completion_tokens`; an OpenAI-bound request uses the same name.
    pub legacy_max_tokens: bool,
    /// Sampling temperature (OpenAI 0..=2, Anthropic 0..=1).
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Anthropic `top_k`; OpenAI has none.
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the answer is streamed.
    pub stream: bool,
    /// Whether a streamed answer reports token usage (always true for Anthropic).
    pub include_usage: bool,
    /// Extended thinking / reasoning effort.
    pub reasoning: Option<Reasoning>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Number of choices (OpenAI `n`).
    pub n: Option<u32>,
    /// Dialect the request was parsed from; `extra` maps are written only to it.
    pub source: Option<Dialect>,
    /// Anthropic: the client wrote `system` as an array of blocks, which a same-dialect
    /// request keeps even for one plain block (it is a string otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system_blocks: bool,
    /// Top-level fields of the source dialect that the unified model does not interpret.
    pub extra: Extra,
}

/// One part of the system prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemPart {
    /// The text.
    pub text: String,
    /// Anthropic `cache_control` of the block (dropped towards OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    /// Same-dialect fields of the block.
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

impl SystemPart {
    /// A plain text part.
    pub fn text(text: impl Into<String>) -> Self {
        SystemPart {
            text: text.into(),
            cache_control: None,
            extra: Extra::new(),
        }
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
    /// Tool results ([`Part::ToolResult`] only).
    Tool,
    /// A system message inside the conversation: an OpenAI `system` message, or an
    /// Anthropic mid-conversation `{"role": "system"}` turn. Text only towards OpenAI (a
    /// `system` message where it stands); towards Anthropic from OpenAI hoisted into the
    /// top-level system prompt; Anthropic to Anthropic kept in place.
    System,
    /// An OpenAI `developer` message: a system message under the name OpenAI's reasoning
    /// models use; `developer` to OpenAI, hoisted like [`Role::System`] towards Anthropic.
    Developer,
    /// A role the unified model does not know: the message's one part is a [`Part::Native`]
    /// holding the whole message, written back verbatim to its dialect and refused by the
    /// other.
    Native,
}

/// Where a message came from in the client's body, so that errors found while writing
/// the request for another dialect name the client's own `messages[i].content[j]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// Index in the source body's `messages`.
    pub index: usize,
    /// Index in the source message's `content` of this message's first part (an
    /// Anthropic user message with tool results and text becomes two messages).
    pub part_offset: usize,
    /// The client wrote the content as one string rather than an array of parts; a
    /// same-dialect request keeps that shape.
    pub as_string: bool,
}

/// One message of the conversation. Equality ignores [`Message::origin`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said, in order.
    pub content: Vec<Part>,
    /// Same-dialect fields of the message (OpenAI `name`, `refusal`, `audio`).
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// Where it came from, when parsed.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.content == other.content && self.extra == other.extra
    }
}

impl Message {
    /// A message without extras.
    pub fn new(role: Role, content: Vec<Part>) -> Self {
        Message {
            role,
            content,
            extra: Extra::new(),
            origin: None,
        }
    }

    /// The client's path of this message (`messages[3]`); `i` is its unified index.
    pub(crate) fn path(&self, i: usize) -> String {
        format!("messages[{}]", self.origin.map_or(i, |o| o.index))
    }

    /// A [`Role::Native`] message as its client wrote it, when `target` is its dialect;
    /// otherwise the refusal naming its role. `i` is its unified index.
    pub(crate) fn native_for(&self, i: usize, target: Dialect) -> Result<Value, RequestError> {
        self.native_raw(i, target).cloned()
    }

    /// [`Message::native_for`], borrowed.
    pub(crate) fn native_raw(&self, i: usize, target: Dialect) -> Result<&Value, RequestError> {
        match self.content.as_slice() {
            [Part::Native { dialect, raw }] if *dialect == target => Ok(raw),
            parts => {
                let role = parts
                    .iter()
                    .find_map(|p| match p {
                        Part::Native { raw, .. } => raw.get("role").and_then(Value::as_str),
                        _ => None,
                    })
                    .unwrap_or("unknown");
                Err(RequestError::unsupported(
                    format!("{}.role", self.path(i)),
                    target,
                    format!(
                        "message role {} has no {target} equivalent",
                        untrusted(role)
                    ),
                ))
            }
        }
    }

    /// The client's path of part `j` of this message; `i` is its unified index.
    pub(crate) fn part_path(&self, i: usize, j: usize) -> String {
        let j = j + self.origin.map_or(0, |o| o.part_offset);
        format!("{}.content[{j}]", self.path(i))
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ImageSource {
    /// Inline bytes.
    Base64 {
        /// MIME type (`image/png`, ...).
        media_type: String,
        /// Base64 data, without a `data:` prefix.
        data: String,
    },
    /// A URL the provider fetches.
    Url {
        /// `http(s)://...`.
        url: String,
    },
}

/// One content part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Same-dialect block fields (Anthropic `cache_control`, `citations`).
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// An image.
    Image {
        /// Where it comes from.
        source: ImageSource,
        /// OpenAI `image_url.detail` (dropped towards Anthropic).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Same-dialect block fields.
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// A tool call made by the assistant.
    ToolCall {
        /// Call id (`call_...`, `toolu_...`).
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as JSON text (always a valid JSON object).
        arguments: String,
        /// Same-dialect block fields.
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// The result of a tool call.
    ToolResult {
        /// Id of the call answered.
        call_id: String,
        /// Result content: text and (Anthropic only) images.
        content: Vec<Part>,
        /// The tool failed (Anthropic `is_error`; OpenAI has no such flag).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        /// The client wrote the content as one string (Anthropic `"content": "..."`); a
        /// same-dialect request keeps that shape.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        as_string: bool,
        /// Same-dialect block fields.
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Model reasoning from an earlier turn (Anthropic `thinking` block).
    Reasoning {
        /// The reasoning text.
        text: String,
        /// Provider signature, needed to send it back to the same provider. An empty
        /// signature (a block cut before its `signature_delta`) is read as none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Same-dialect block fields.
        #[serde(default, skip_serializing_if = "Extra::is_empty")]
        extra: Extra,
    },
    /// Encrypted reasoning (Anthropic `redacted_thinking`).
    RedactedReasoning {
        /// Opaque data.
        data: String,
    },
    /// A block the unified model does not interpret (Anthropic `document`,
    /// `server_tool_use`, `web_search_tool_result`; OpenAI `input_audio`, `file`):
    /// written back verbatim to its dialect, refused by the other.
    Native {
        /// Dialect the block belongs to.
        dialect: Dialect,
        /// The block, verbatim.
        raw: Value,
    },
}

impl Part {
    /// A text part without extras.
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text {
            text: text.into(),
            extra: Extra::new(),
        }
    }

    /// A tool call part without extras.
    pub fn tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Part::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            extra: Extra::new(),
        }
    }

    /// A tool result part without extras.
    pub fn tool_result(call_id: impl Into<String>, content: Vec<Part>, is_error: bool) -> Self {
        Part::ToolResult {
            call_id: call_id.into(),
            content,
            is_error,
            as_string: false,
            extra: Extra::new(),
        }
    }

    /// An image part without extras.
    pub fn image(source: ImageSource) -> Self {
        Part::Image {
            source,
            detail: None,
            extra: Extra::new(),
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    /// A client-side function tool.
    Function(FunctionTool),
    /// A provider-run or provider-specific tool (Anthropic `web_search_20250305`, ...):
    /// written back verbatim to its dialect, refused by the other.
    Native {
        /// Dialect the tool belongs to.
        dialect: Dialect,
        /// The tool definition, verbatim.
        raw: Value,
    },
}

/// A client-side function tool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    /// Tool name.
    pub name: String,
    /// What the tool does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    /// Strict schema adherence (OpenAI `strict`; Anthropic `strict` only same-dialect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Anthropic `cache_control` of the tool (dropped towards OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    /// Same-dialect fields of the tool definition.
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

/// How the model must use the tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call (OpenAI `required`, Anthropic `any`).
    Required,
    /// This tool must be called.
    Tool {
        /// Tool name.
        name: String,
    },
}

/// Reasoning effort, OpenAI style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    /// No reasoning (OpenAI `none`).
    None,
    /// Minimal reasoning.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Extra high (OpenAI `xhigh`).
    Xhigh,
}

impl Effort {
    /// Every effort, in increasing order.
    pub const ALL: [Effort; 6] = [
        Effort::None,
        Effort::Minimal,
        Effort::Low,
        Effort::Medium,
        Effort::High,
        Effort::Xhigh,
    ];

    /// The OpenAI wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::None => "none",
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::Xhigh => "xhigh",
        }
    }

    /// Parses an OpenAI wire name.
    pub fn parse(s: &str) -> Option<Effort> {
        Effort::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Reasoning settings: an effort (OpenAI) or a token budget (Anthropic); whichever the
/// source gave is kept, the other is derived when a request is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    /// OpenAI `reasoning_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// Anthropic `thinking.budget_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    /// Anthropic `thinking.type` other than `enabled` (`adaptive`: the model decides how
    /// much to think; `disabled`; newer ones): written back verbatim to Anthropic, and
    /// towards OpenAI the effort comes from Anthropic's `output_config.effort`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Same-dialect fields of the Anthropic `thinking` object (`display`, ...).
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

/// The fields a writer takes from outside the request's content: the model, and whether to
/// stream (with usage). The request's own, or the gateway's for an upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) model: &'a str,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

impl Head<'_> {
    /// As the request says.
    pub(crate) fn of(request: &ChatRequest) -> Head<'_> {
        Head {
            model: &request.model,
            stream: request.stream,
            include_usage: request.include_usage,
        }
    }

    /// What the gateway sends every upstream: `model`, a stream, with usage.
    pub(crate) fn upstream(model: &str) -> Head<'_> {
        Head {
            model,
            stream: true,
            include_usage: true,
        }
    }
}
