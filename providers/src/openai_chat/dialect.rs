//! OpenAI Chat Completions as a [`WireDialect`].

use serde_json::{Value, json};

use crate::assemble::Message;
use crate::codec::{EncodeOptions, EventEncoder, FrameDecoder};
use crate::dialect::Dialect;
use crate::error::{EncodeError, ErrorReport};
use crate::request::{AnthropicDefaults, Capabilities, ChatRequest, RequestError, Tree};
use crate::wire_dialect::{UpstreamSettings, WireDialect};

use super::{Decoder, Encoder, response_body};

/// OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible servers.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiChat;

impl WireDialect for OpenAiChat {
    fn dialect(&self) -> Dialect {
        Dialect::OpenAi
    }

    fn title(&self) -> &'static str {
        "OpenAI Chat Completions"
    }

    fn fixture_dir(&self) -> &'static str {
        "openai_chat"
    }

    fn door_paths(&self) -> &'static [&'static str] {
        // Some clients take the base URL without its `/v1`.
        &["/v1/chat/completions", "/chat/completions"]
    }

    fn upstream_path(&self) -> &'static str {
        "/chat/completions"
    }

    fn api_url(&self, base_url: &str, path: &str) -> String {
        // OpenAI base URLs include their version (`.../v1`).
        format!("{}{path}", base_url.trim_end_matches('/'))
    }

    fn forward_url(&self, base_url: &str, door_path: &str) -> String {
        // The door's `/v1` is the version the base URL already ends with.
        let path = door_path
            .strip_prefix("/v1")
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(door_path);
        self.api_url(base_url, path)
    }

    fn key_header(&self) -> Option<&'static str> {
        None
    }

    fn marker_headers(&self) -> &'static [&'static str] {
        &[]
    }

    fn upstream_headers(&self, settings: &UpstreamSettings<'_>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(org) = settings.organization {
            out.push(("openai-organization", org.to_owned()));
        }
        if let Some(project) = settings.project {
            out.push(("openai-project", project.to_owned()));
        }
        out
    }

    fn model_prefixes(&self) -> &'static [&'static str] {
        &["gpt-", "o1", "o3", "o4", "chatgpt-"]
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
        ChatRequest::from_openai_tree(body)
    }

    fn upstream_request(
        &self,
        request: &ChatRequest,
        model: &str,
        _defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Vec<u8>, RequestError> {
        // A Responses request may hold what only a Responses upstream honours.
        request.check_responses_route(self.dialect())?;
        request.to_openai_upstream(model, caps)
    }

    fn error_body(&self, report: &ErrorReport) -> Value {
        json!({"error": {
            "message": report.message,
            "type": report.kind,
            "param": report.param,
            "code": report.code,
        }})
    }

    fn error_frame(&self, report: &ErrorReport) -> String {
        format!("data: {}\n\n", self.error_body(report))
    }

    fn error_type_fields(&self) -> &'static [&'static str] {
        // Some compatible servers put their word in `code` only.
        &["type", "code"]
    }

    fn models_body(&self, ids: &[String]) -> Value {
        json!({
            "object": "list",
            "data": ids.iter().map(|id| json!({
                "id": id, "object": "model", "created": 0, "owned_by": "streamgate"
            })).collect::<Vec<Value>>(),
        })
    }

    fn prefill_by_default(&self) -> bool {
        false
    }

    fn input_usage_first(&self) -> bool {
        false
    }

    fn stamps_created(&self) -> bool {
        true
    }

    fn unknown_model_error(&self, model: &str) -> ErrorReport {
        ErrorReport {
            code: Some("model_not_found".into()),
            kind: "invalid_request_error".into(),
            ..ErrorReport::new(
                404,
                "not_found_error",
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    fn status_message(&self, _status: u16) -> Option<&'static str> {
        None
    }

    fn overloaded_message(&self) -> &'static str {
        "That model is currently overloaded with other requests. You can retry your request."
    }
}
