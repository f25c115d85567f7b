//! Anthropic Messages (`POST /v1/messages`).

mod decode;
mod dialect;
mod encode;
pub(crate) mod request_in;
pub(crate) mod request_out;
pub mod wire;

pub use decode::Decoder;
pub use dialect::{AnthropicMessages, ERROR_TYPES, error_type_for};
pub use encode::{Encoder, response_body};

#[cfg(test)]
mod tests;
