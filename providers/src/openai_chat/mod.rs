//! OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible servers.

mod decode;
mod dialect;
mod encode;
mod fast;
pub(crate) mod request_in;
pub(crate) mod request_out;
pub mod wire;

pub use decode::Decoder;
pub use dialect::OpenAiChat;
pub use encode::{Encoder, response_body};

#[cfg(test)]
mod tests;
