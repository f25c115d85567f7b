//! Agent Events -> this dialect's SSE body and non-streaming JSON body. (Stub: being written.)

use crate::assemble::Message;
use crate::encode::{EncodeOptions, EventEncoder};
use crate::error::EncodeError;
use crate::event::AgentEvent;

/// Encoder state for one stream.
#[derive(Debug)]
pub struct Encoder {
    #[allow(dead_code)]
    options: EncodeOptions,
}

impl Encoder {
    /// A new encoder.
    pub fn new(options: EncodeOptions) -> Self {
        Encoder { options }
    }
}

impl EventEncoder for Encoder {
    fn event(&mut self, _event: &AgentEvent, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// The non-streaming response body for an assembled answer.
pub fn response_body(_message: &Message) -> Result<serde_json::Value, EncodeError> {
    Ok(serde_json::Value::Null)
}
