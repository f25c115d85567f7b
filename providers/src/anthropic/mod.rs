//! Anthropic Messages (`POST /v1/messages`).

mod decode;
mod encode;
pub mod wire;

pub use decode::Decoder;
pub use encode::{Encoder, response_body};

#[cfg(test)]
mod tests;
