//! Request translation between dialects (OpenAI Chat <-> Anthropic Messages <-> OpenAI
//! Responses): the unified request and the pieces every dialect's translators share. Each
//! dialect's own translators live in its folder (`<dialect>/request_in.rs` and
//! `request_out.rs`; the Responses rules are in `openai_responses::request_in`).
//!
//! A client body is read into the unified [`ChatRequest`] ([`ChatRequest::from_openai`],
//! [`ChatRequest::from_anthropic`]) and written for the upstream
//! ([`ChatRequest::to_openai`], [`ChatRequest::to_anthropic`]). Reading fails only on a
//! malformed body; writing fails when the request asks for something the target dialect
//! cannot do. Either way the [`RequestError`] names the client's parameter
//! (`messages[3].content[1]`) and renders as either dialect's error body.
//!
//! # Same dialect, other dialect
//!
//! Everything both dialects can express is modelled. What only one dialect has stays in
//! `extra` maps (top level, message, content part, system block, tool, tool choice,
//! thinking) and in [`Part::Native`] / [`Tool::Native`] / [`Role::Native`] (a block, tool or
//! whole message of a kind the gateway does not know); [`ChatRequest::source`] records the
//! dialect, and these are written back only when the target is the source, so a request
//! reaches an upstream of its own dialect as the client wrote it (the shape of string
//! content included), except for what the gateway must change: the model, streaming, an
//! empty thinking signature, and reasoning for a model that does not reason. Towards the
//! other dialect a passthrough field is dropped or refused per the table below (unlisted
//! top-level fields are dropped; message- and part-level extras such as OpenAI `name` or
//! Anthropic `citations` are dropped), and native blocks, tools and roles are refused.
//!
//! Reasoning parameters are written only for a model that reasons ([`Capabilities`]: the
//! family defaults of [`reasons_by_family`], overridden by the gateway's configuration):
//! never for one that does not; for an unknown one, only the client's own settings within
//! its dialect.
//!
//! # Decisions
//!
//! | Item | OpenAI -> Anthropic | Anthropic -> OpenAI |
//! |---|---|---|
//! | system prompt | leading `system`/`developer` messages (string or text parts) -> `system` (a string if one part without `cache_control`, else text blocks); later ones are hoisted there too, in order; parts other than text refused | `system` string or blocks -> one leading `system` message (string if one part, else text parts); `cache_control` dropped |
//! | roles | `tool` messages -> `tool_result` blocks in a `user` turn; consecutive same-role turns merged; empty turns left out; unknown roles (legacy `function`, newer ones) refused | user turn with `tool_result` blocks -> one `tool` message per result, then a `user` message with the rest, in order; a mid-conversation `system` turn -> a `system` message where it stands (text only, `cache_control` dropped); unknown roles refused |
//! | text | empty text parts left out (Anthropic rejects them) | single plain text -> string content, else parts |
//! | images | `image_url` `data:<type>;base64,` -> `base64` source; `http(s)` -> `url` source; `detail` dropped; other URLs refused when read | `base64` -> data URL; `url` -> URL; `file` source refused |
//! | tool calls | `tool_calls[].function.arguments` (JSON text; `""` = `{}`; must be an object, checked when read) -> `tool_use.input`; ids outside `[A-Za-z0-9_-]` get `_` | `tool_use.input` -> arguments JSON text |
//! | tool results | content text -> `tool_result` content (none when empty) | text content -> `tool` message; images/documents in a result refused; `is_error` dropped |
//! | thinking in history | - | `thinking`/`redacted_thinking` blocks dropped (OpenAI cannot take them back); same-dialect they are kept; unsigned thinking (no `signature`, or `""` from a block cut before its signature) is never sent to Anthropic |
//! | tools | `function` -> `{name, description, input_schema}` (missing `parameters` = empty object schema); `strict` dropped; other tool types refused | custom tools -> `function` tools; `cache_control` dropped; server tools (`web_search_...`) refused |
//! | `tool_choice` | `auto`/`none`/`required`/`{function}` -> `auto`/`none`/`any`/`{tool}`; other forms refused; sent only when there are tools | the reverse; other types refused |
//! | `parallel_tool_calls: false` | `disable_parallel_tool_use: true` (on `auto` if no choice given; not on `none`) | the reverse |
//! | `stop` | string or array -> `stop_sequences` | `stop_sequences` -> `stop` array (OpenAI's 4-item limit is left to the upstream) |
//! | max tokens | `max_completion_tokens` or `max_tokens` (both: error) -> `max_tokens`; absent: [`AnthropicDefaults::default_max_tokens`] | `max_tokens` -> `max_completion_tokens` |
//! | `temperature` | 0..=1 passed; above 1 refused (no silent clamp) | passed unchanged |
//! | `top_p` | passed | passed |
//! | `top_k` | - | dropped |
//! | reasoning (only to a model that reasons, see above) | `reasoning_effort` -> `thinking {type: enabled, budget_tokens}` per [`EffortBudgets`]; `none` -> no thinking; see below for `max_tokens` | `thinking.budget_tokens` -> effort: <= 2048 `low`, <= 8192 `medium`, else `high`; `adaptive` -> `output_config.effort` (`max` -> `high`), none without it; `disabled` and other types -> nothing |
//! | `stream`, usage | `stream`; Anthropic always reports usage | `stream`; `stream_options.include_usage: true` when streaming |
//! | user id | `user` -> `metadata.user_id` | the reverse |
//! | `n` | 1 left out; above 1 refused (Anthropic has one answer per request) | - |
//! | `response_format` | `text` dropped; `json_object`/`json_schema` refused | - |
//! | `logprobs` | `true` refused; `top_logprobs` dropped | - |
//! | `logit_bias` | non-empty refused | - |
//! | `seed`, `presence_penalty`, `frequency_penalty` | dropped (sampling hints) | - |
//! | `service_tier`, `store`, `metadata`, `prompt_cache_key`, `safety_identifier`, `prediction`, `verbosity`, other `stream_options` | dropped | - |
//! | `modalities` other than text, `audio`, `web_search_options`, legacy `functions`/`function_call` | refused | - |
//! | `input_audio`, `file`, `refusal` parts | refused | - |
//! | `document`, `search_result`, `server_tool_use`, `*_tool_result` blocks | - | refused |
//! | `container`, `mcp_servers`, `output_format`, `output_config.format` | - | refused |
//! | `output_config.effort` | - | the effort of `adaptive` thinking (above); dropped otherwise |
//! | `service_tier`, `context_management`, other `metadata` | - | dropped |
//! | `cache_control` | - | dropped (OpenAI caches prompts automatically) |
//! | other unknown top-level fields | dropped | dropped |
//!
//! Reasoning budget vs `max_tokens` (Anthropic requires `budget_tokens < max_tokens`, and
//! both count thinking): with no client cap, `max_tokens` = default + budget; with a cap
//! at or below an effort's budget, the cap wins and the budget becomes half the cap (at
//! least [`MIN_THINKING_BUDGET`]), and a cap too small for that is refused. An explicit
//! Anthropic `budget_tokens` that is not below `max_tokens` is an error. Constraints that
//! Anthropic puts on thinking requests (temperature 1, no forced tool choice) are left to
//! the upstream.

pub(crate) mod capability;
mod census;
pub(crate) mod error;
pub(crate) mod fields;
pub(crate) mod rules;
pub(crate) mod tree;
pub(crate) mod unified;

#[cfg(test)]
mod tests;

pub use crate::anthropic::request_out::MIN_THINKING_BUDGET;
pub use capability::{Capabilities, reasons_by_family};
pub use census::{CensusError, parse_bounded};
pub use error::RequestError;
pub use tree::{Tree, object};
pub use unified::{
    ChatRequest, Effort, FunctionTool, ImageSource, Message, Origin, Part, Reasoning, Role,
    SystemPart, Tool, ToolChoice,
};

/// What [`ChatRequest::to_anthropic`] fills in when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnthropicDefaults {
    /// `max_tokens` when the client gave no cap (Anthropic requires one).
    pub default_max_tokens: u32,
    /// Thinking budget for each OpenAI reasoning effort.
    pub budgets: EffortBudgets,
}

impl Default for AnthropicDefaults {
    fn default() -> Self {
        AnthropicDefaults {
            default_max_tokens: 4096,
            budgets: EffortBudgets::default(),
        }
    }
}

/// Thinking budget (tokens) per reasoning effort. Defaults: minimal 1024, low 2048,
/// medium 8192, high 16384, xhigh 32768; `none` means no thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffortBudgets {
    /// `minimal`.
    pub minimal: u32,
    /// `low`.
    pub low: u32,
    /// `medium`.
    pub medium: u32,
    /// `high`.
    pub high: u32,
    /// `xhigh`.
    pub xhigh: u32,
}

impl Default for EffortBudgets {
    fn default() -> Self {
        EffortBudgets {
            minimal: 1024,
            low: 2048,
            medium: 8192,
            high: 16384,
            xhigh: 32768,
        }
    }
}

impl EffortBudgets {
    /// The budget of an effort; `None` for [`Effort::None`].
    pub fn budget(&self, effort: Effort) -> Option<u32> {
        match effort {
            Effort::None => None,
            Effort::Minimal => Some(self.minimal),
            Effort::Low => Some(self.low),
            Effort::Medium => Some(self.medium),
            Effort::High => Some(self.high),
            Effort::Xhigh => Some(self.xhigh),
        }
    }

    /// The effort for a budget: up to `low` -> low, up to `medium` -> medium, else high.
    /// (`minimal` and `xhigh` are not produced: not every OpenAI model takes them.)
    pub fn effort_for_budget(&self, budget: u32) -> Effort {
        if budget <= self.low {
            Effort::Low
        } else if budget <= self.medium {
            Effort::Medium
        } else {
            Effort::High
        }
    }
}
