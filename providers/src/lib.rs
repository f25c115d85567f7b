//! streamgate's sans-I/O dialect adapters and the Agent Event Stream.
//!
//! # Layout
//!
//! - [`event`]: the Agent Event Stream v1 types; [`stamp`]: the envelope (stream id, seq).
//! - [`sse`]: SSE framing (push parser accepting any split, frame writer).
//! - [`openai_chat`], [`anthropic`]: one module per wire dialect, each split into `wire`
//!   (serde types), `decode` (SSE frames -> events) and `encode` (events -> SSE / JSON body).
//! - [`wire_dialect`]: the [`WireDialect`] trait each dialect implements; [`dialects`]: the
//!   one registry naming them all; [`codec`]: the frame decoder / event encoder traits.
//! - [`decode`] / [`encode`]: dialect-agnostic entry points ([`StreamDecoder`],
//!   [`StreamEncoder`], [`encode_response`]).
//! - [`assemble`]: folds events into the finished answer (non-streaming bodies, tests).
//! - [`request`]: request translation between dialects.
//!
//! Nothing here does I/O: bytes and structs in, events and bytes out.

pub mod anthropic;
pub mod assemble;
pub mod codec;
pub mod decode;
pub mod dialect;
pub mod dialects;
pub mod encode;
pub mod error;
pub mod event;
pub mod json_out;
pub mod json_write;
pub mod openai_chat;
pub mod openai_responses;
pub mod parse;
pub mod request;
#[cfg(test)]
mod seeded;
pub mod sse;
pub mod stamp;
pub mod untrusted;
pub mod wire_dialect;

pub use assemble::{Assembler, Message};
pub use decode::StreamDecoder;
pub use dialect::Dialect;
pub use dialects::WireDialect;
pub use encode::{EncodeOptions, StreamEncoder, encode_response};
pub use error::{CutPoint, DecodeError, EncodeError, UpstreamError};
pub use event::{
    AgentEvent, FailoverCause, FinishReason, Fragment, StreamEnd, StreamStart, Usage, UsageBasis,
};
pub use stamp::{Envelope, Stamper};
