//! Server-Sent Events framing: a byte-exact push parser and the frame writer.

pub(crate) mod json;
mod parse;
mod write;

pub use parse::{DEFAULT_MAX_FRAME_BYTES, SseError, SseFrame, SseParser};
pub use write::{write_comment, write_frame, write_json_frame};
