//! Agent Events -> a client dialect, as an SSE body or as one non-streaming JSON body.

use crate::assemble::Message;
pub use crate::codec::EncodeOptions;
use crate::codec::EventEncoder;
use crate::dialect::Dialect;
use crate::error::EncodeError;
use crate::event::AgentEvent;

/// Encodes an event stream into one dialect's SSE body.
#[derive(Debug)]
pub struct StreamEncoder {
    inner: Box<dyn EventEncoder>,
}

impl StreamEncoder {
    /// An encoder for clients of `dialect`.
    pub fn new(dialect: Dialect, options: EncodeOptions) -> Self {
        StreamEncoder {
            inner: dialect.wire().event_encoder(options),
        }
    }

    /// Appends the bytes for `event` to `out`.
    pub fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.inner.event(event, out)
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
    dialect.wire().response_body(message)
}
