//! Provider SSE body -> Agent Events, for any dialect: the SSE parser feeding a dialect's
//! frame decoder, with positions attached to every error.

use crate::codec::{FrameDecoder, FrameError};
use crate::dialect::Dialect;
use crate::error::DecodeError;
use crate::event::AgentEvent;
use crate::sse::{SseError, SseFrame, SseParser};

/// Decodes one provider SSE body, fed in chunks of any size.
#[derive(Debug)]
pub struct StreamDecoder {
    dialect: Dialect,
    parser: SseParser,
    inner: Box<dyn FrameDecoder>,
}

impl StreamDecoder {
    /// A decoder for `dialect` with the default frame size limit.
    pub fn new(dialect: Dialect) -> Self {
        Self::with_parser(dialect, SseParser::new())
    }

    /// A decoder for `dialect` using a configured parser (e.g. a smaller frame limit).
    pub fn with_parser(dialect: Dialect, parser: SseParser) -> Self {
        StreamDecoder {
            dialect,
            parser,
            inner: dialect.wire().frame_decoder(),
        }
    }

    /// The dialect being decoded.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Feeds the next bytes of the body, appending decoded events to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<AgentEvent>) -> Result<(), DecodeError> {
        let dialect = self.dialect;
        let inner = &mut self.inner;
        self.parser
            .feed(bytes, &mut |frame: &SseFrame<'_>| {
                inner
                    .frame(frame, out)
                    .map_err(|e| Located::Frame(located(dialect, frame, e)))
            })
            .map_err(|e| match e {
                Located::Frame(e) => e,
                Located::Sse(source) => DecodeError::TooLarge { dialect, source },
            })
    }

    /// Ends the body: Ok when the answer was whole, `Incomplete` when it was cut.
    pub fn finish(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), DecodeError> {
        self.parser.finish();
        self.inner.eof(out).map_err(|cut| DecodeError::Incomplete {
            dialect: self.dialect,
            cut,
        })
    }

    /// Decodes a whole body: every event up to the first error, and that error if any.
    pub fn decode_all(dialect: Dialect, body: &[u8]) -> (Vec<AgentEvent>, Result<(), DecodeError>) {
        let mut decoder = StreamDecoder::new(dialect);
        let mut events = Vec::new();
        let result = decoder
            .feed(body, &mut events)
            .and_then(|()| decoder.finish(&mut events));
        (events, result)
    }
}

/// An error from inside the parser's callback or from the parser itself.
enum Located {
    Frame(DecodeError),
    Sse(SseError),
}

impl From<SseError> for Located {
    fn from(e: SseError) -> Self {
        Located::Sse(e)
    }
}

fn located(dialect: Dialect, frame: &SseFrame<'_>, e: FrameError) -> DecodeError {
    match e {
        FrameError::Json(err) => DecodeError::Malformed {
            dialect,
            line: frame.data_line + err.line().saturating_sub(1) as u64,
            offset: frame.data_offset,
            reason: format!("invalid JSON in data: {err}"),
        },
        FrameError::Protocol(reason) => DecodeError::Malformed {
            dialect,
            line: frame.line,
            offset: frame.offset,
            reason,
        },
        FrameError::Upstream(error) => DecodeError::Upstream { dialect, error },
    }
}
