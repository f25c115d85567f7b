//! OpenAI Responses as a [`WireDialect`].

use serde_json::{Value, json};

use crate::assemble::Message;
use crate::codec::{EncodeOptions, EventEncoder, FrameDecoder};
use crate::dialect::Dialect;
use crate::error::{EncodeError, ErrorReport};
use crate::openai_chat::OpenAiChat;
use crate::request::{AnthropicDefaults, Capabilities, ChatRequest, RequestError, Tree};
use crate::wire_dialect::{UpstreamSettings, WireDialect};

use super::{DIALECT, Decoder, Encoder, response_body};

/// OpenAI Responses (`POST /v1/responses`). It shares OpenAI's API root, key, headers and
/// error bodies with Chat Completions, so those answers are Chat's.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiResponses;

impl WireDialect for OpenAiResponses {
    fn dialect(&self) -> Dialect {
        DIALECT
    }

    fn platform(&self) -> Dialect {
        // The Responses API lives beside Chat Completions under OpenAI's `/v1`.
        Dialect::OpenAi
    }

    fn title(&self) -> &'static str {
        "OpenAI Responses"
    }

    fn fixture_dir(&self) -> &'static str {
        "openai_responses"
    }

    fn door_paths(&self) -> &'static [&'static str] {
        // Some clients take the base URL without its `/v1`.
        &["/v1/responses", "/responses"]
    }

    fn upstream_path(&self) -> &'static str {
        "/responses"
    }

    fn api_url(&self, base_url: &str, path: &str) -> String {
        OpenAiChat.api_url(base_url, path)
    }

    fn forward_url(&self, base_url: &str, door_path: &str) -> String {
        OpenAiChat.forward_url(base_url, door_path)
    }

    fn key_header(&self) -> Option<&'static str> {
        OpenAiChat.key_header()
    }

    fn marker_headers(&self) -> &'static [&'static str] {
        &[]
    }

    fn upstream_headers(&self, settings: &UpstreamSettings<'_>) -> Vec<(&'static str, String)> {
        OpenAiChat.upstream_headers(settings)
    }

    fn model_prefixes(&self) -> &'static [&'static str] {
        // Same vendor as Chat Completions: bare `gpt-*` names keep going to the Chat
        // provider, a Responses provider is reached through its alias or `provider/model`.
        &[]
    }

    fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
        Box::new(Decoder::default())
    }

    fn event_encoder(&self, options: EncodeOptions) -> Box<dyn EventEncoder> {
        Box::new(Encoder::new(options))
    }

    fn response_body(&self, message: &Message) -> Result<Value, EncodeError> {
        response_body(message)
    }

    fn parse_request(&self, body: Tree) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_responses_tree(body)
    }

    fn upstream_request(
        &self,
        request: &ChatRequest,
        model: &str,
        _defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Vec<u8>, RequestError> {
        let body = request.to_responses_upstream(model, caps)?;
        Ok(crate::json_write::to_vec(&body))
    }

    fn error_body(&self, report: &ErrorReport) -> Value {
        OpenAiChat.error_body(report)
    }

    fn error_frame(&self, report: &ErrorReport) -> String {
        // The `error` event as OpenAI sends it mid-stream (see the recordings).
        let frame = json!({
            "type": "error",
            "sequence_number": 0,
            "error": {
                "type": report.kind,
                "code": report.code,
                "message": report.message,
                "param": report.param,
            },
        });
        format!("event: error\ndata: {frame}\n\n")
    }

    fn error_type_fields(&self) -> &'static [&'static str] {
        OpenAiChat.error_type_fields()
    }

    fn models_body(&self, ids: &[String]) -> Value {
        OpenAiChat.models_body(ids)
    }

    fn prefill_by_default(&self) -> bool {
        false
    }

    fn input_usage_first(&self) -> bool {
        false
    }

    fn stamps_created(&self) -> bool {
        // `response.created_at` is in every response object of the stream.
        true
    }

    fn unknown_model_error(&self, model: &str) -> ErrorReport {
        OpenAiChat.unknown_model_error(model)
    }

    fn status_message(&self, status: u16) -> Option<&'static str> {
        OpenAiChat.status_message(status)
    }

    fn overloaded_message(&self) -> &'static str {
        OpenAiChat.overloaded_message()
    }
}
