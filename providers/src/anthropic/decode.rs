//! SSE frames of this dialect -> Agent Events. (Stub: being written.)

use crate::decode::{FrameDecoder, FrameError};
use crate::error::CutPoint;
use crate::event::AgentEvent;
use crate::sse::SseFrame;

/// Decoder state for one stream.
#[derive(Debug, Default)]
pub struct Decoder {}

impl FrameDecoder for Decoder {
    fn frame(
        &mut self,
        _frame: &SseFrame<'_>,
        _out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        Err(FrameError::Protocol("decoder not written yet".into()))
    }

    fn eof(&mut self, _out: &mut Vec<AgentEvent>) -> Result<(), CutPoint> {
        Err(CutPoint::BeforeStart)
    }
}
