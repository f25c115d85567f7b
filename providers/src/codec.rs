//! The two state machines every dialect implements: provider SSE frames -> Agent Events
//! ([`FrameDecoder`]) and Agent Events -> client SSE bytes ([`EventEncoder`]).
//!
//! They live apart from [`crate::decode`] and [`crate::encode`] (the dialect-agnostic entry
//! points, which pick a dialect's machines through [`crate::dialects`]) so that a dialect's
//! module depends on these traits without depending on the registry that names it.

use std::fmt;

use crate::error::{CutPoint, EncodeError, UpstreamError};
use crate::event::AgentEvent;
use crate::sse::SseFrame;

/// What a dialect's frame decoder reports; [`crate::StreamDecoder`] adds the position.
#[derive(Debug)]
pub enum FrameError {
    /// The frame's JSON did not parse.
    Json(serde_json::Error),
    /// The frame parsed but broke the dialect's rules.
    Protocol(String),
    /// The frame is the provider reporting an error.
    Upstream(UpstreamError),
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        FrameError::Json(e)
    }
}

/// One dialect's state machine from SSE frames to events.
pub trait FrameDecoder: fmt::Debug + Send + Sync {
    /// Handles one SSE frame, appending the events it produces.
    fn frame(&mut self, frame: &SseFrame<'_>, out: &mut Vec<AgentEvent>) -> Result<(), FrameError>;

    /// The body ended. Appends closing events when the answer was whole (finish reason seen
    /// but terminator missing), or says where it was cut.
    fn eof(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), CutPoint>;
}

/// Choices a client made in its request that shape the encoded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// OpenAI `stream_options.include_usage`: send the usage-only chunk before `[DONE]`.
    pub include_usage: bool,
}

/// One dialect's state machine from events to SSE bytes.
pub trait EventEncoder: fmt::Debug + Send + Sync {
    /// Appends the SSE bytes for `event` (possibly none, possibly several frames).
    fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}
