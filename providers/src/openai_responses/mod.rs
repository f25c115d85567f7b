//! OpenAI Responses (`POST /v1/responses`): the dialect of `client.responses.create`,
//! Codex CLI and the Agents SDK.
//!
//! Output items map onto Agent Event blocks: a `message` item's content parts are text or
//! refusal blocks (one per part), a `reasoning` item is one reasoning block (summary parts
//! and `reasoning_text` joined, parts after the first prefixed with a blank line; its
//! `encrypted_content` is the block's signature), a `function_call` item is a tool call, and
//! every other item (web search, code interpreter, file search, MCP, ...) is a native block
//! kept verbatim, its progress events as native deltas. Rules: `docs/protocol.md`.

mod decode;
mod encode;
pub mod wire;

pub use decode::Decoder;
pub use encode::{Encoder, response_body};

use crate::dialect::Dialect;

/// The dialect this module stamps on `stream.start`, on its errors, and compares with to
/// decide what is same-dialect passthrough.
///
/// Placeholder: `Dialect` has no Responses variant yet (the dialect registry adds it, and
/// this line then names it). Until then the events say `openai`, so code that encodes them
/// into Chat Completions must not take them for Chat's own (the tests retag them).
pub(crate) const DIALECT: Dialect = Dialect::OpenAi;

#[cfg(test)]
mod tests;
