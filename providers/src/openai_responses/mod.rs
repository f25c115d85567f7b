//! OpenAI Responses (`POST /v1/responses`): the dialect of `client.responses.create`,
//! Codex CLI and the Agents SDK.
//!
//! # Decoding (provider stream -> Agent Events)
//!
//! - `response.created` (or whatever event comes first) is `stream.start`.
//! - Output items map onto blocks: each content part of a `message` item is a text or
//!   refusal block; a `reasoning` item is one reasoning block (summary parts and
//!   `reasoning_text` joined, parts after the first prefixed with a blank line; its
//!   `encrypted_content` is the block's `reasoning.signature`); a `function_call` item is a
//!   tool call (id = `call_id`); every other item (web search, code interpreter, file search,
//!   MCP, ...) is a native block kept verbatim, its progress events and its finished item
//!   (`response.output_item.done`) as native deltas. `output_text.annotation.added` is a
//!   native delta of its text block. Item ids ride in the blocks' `extra`.
//! - Text and reasoning are sequential (a new item closes them); tool calls and native items
//!   may interleave and close at their `output_item.done`.
//! - `response.completed` -> `stop`, or `tool_calls` when the answer called a function, or
//!   `refusal` when it holds a refusal part; `response.incomplete` -> `length`
//!   (`max_output_tokens`) or `content_filter`; `error` and `response.failed` end the stream
//!   with the provider's error. Usage: input (cached), output (reasoning) tokens.
//! - Limits: 4096 output items, 256 content parts per message.
//!
//! # Encoding (Agent Events -> Responses stream and body)
//!
//! The reverse, with `sequence_number` 0, 1, 2, ... and one `output_index` per item. A
//! failed answer ends with `error` + `response.failed`, one cut by the token limit or a
//! content filter with `response.incomplete`, never `response.completed`. Another provider's
//! reasoning signature, redacted reasoning and server-tool blocks are left out; Chat
//! `n > 1` is refused. An Anthropic `refusal` (plain text) and `pause_turn` end as
//! `completed`.

mod body;
mod decode;
mod dialect;
mod encode;
mod output;
pub(crate) mod request_in;
pub(crate) mod request_out;
pub mod wire;

pub use body::response_body;
pub use decode::Decoder;
pub use dialect::OpenAiResponses;
pub use encode::Encoder;

use crate::dialect::Dialect;

/// The dialect this module stamps on `stream.start`, on its errors, and compares with to
/// decide what is same-dialect passthrough.
pub(crate) const DIALECT: Dialect = Dialect::OpenAiResponses;

#[cfg(test)]
mod tests;
