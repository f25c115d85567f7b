//! Agent Events -> a client dialect, as an SSE body or as one non-streaming JSON body.

use crate::anthropic;
use crate::assemble::Message;
use crate::dialect::Dialect;
use crate::error::EncodeError;
use crate::event::AgentEvent;
use crate::openai_chat;

/// Choices a client made in its request that shape the encoded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// OpenAI `stream_options.include_usage`: send the usage-only chunk before `[DONE]`.
    pub include_usage: bool,
}

/// One dialect's state machine from events to SSE bytes.
pub(crate) trait EventEncoder {
    /// Appends the SSE bytes for `event` (possibly none, possibly several frames).
    fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// Encodes an event stream into one dialect's SSE body.
#[derive(Debug)]
pub struct StreamEncoder {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    OpenAi(openai_chat::Encoder),
    Anthropic(anthropic::Encoder),
}

impl StreamEncoder {
    /// An encoder for clients of `dialect`.
    pub fn new(dialect: Dialect, options: EncodeOptions) -> Self {
        let inner = match dialect {
            Dialect::OpenAi => Inner::OpenAi(openai_chat::Encoder::new(options)),
            Dialect::Anthropic => Inner::Anthropic(anthropic::Encoder::new(options)),
        };
        StreamEncoder { inner }
    }

    /// Appends the bytes for `event` to `out`.
    pub fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match &mut self.inner {
            Inner::OpenAi(e) => e.event(event, out),
            Inner::Anthropic(e) => e.event(event, out),
        }
    }

    /// Encodes a whole event list.
    pub fn encode_all(
        dialect: Dialect,
        options: EncodeOptions,
        events: &[AgentEvent],
    ) -> Result<Vec<u8>, EncodeError> {
        let mut encoder = StreamEncoder::new(dialect, options);
        let mut out = Vec::new();
        for event in events {
            encoder.event(event, &mut out)?;
        }
        Ok(out)
    }
}

/// Renders an assembled answer as `dialect`'s non-streaming response body.
pub fn encode_response(
    dialect: Dialect,
    message: &Message,
) -> Result<serde_json::Value, EncodeError> {
    match dialect {
        Dialect::OpenAi => openai_chat::response_body(message),
        Dialect::Anthropic => anthropic::response_body(message),
    }
}
