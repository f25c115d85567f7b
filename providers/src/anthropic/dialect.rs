//! Anthropic Messages as a [`WireDialect`].

use serde_json::{Value, json};

use crate::assemble::Message;
use crate::codec::{EncodeOptions, EventEncoder, FrameDecoder};
use crate::dialect::Dialect;
use crate::error::{EncodeError, ErrorReport};
use crate::request::{AnthropicDefaults, Capabilities, ChatRequest, RequestError, Tree};
use crate::wire_dialect::{UpstreamSettings, WireDialect};

use super::{Decoder, Encoder, response_body};

/// Anthropic's error types (its API reference, "Errors").
pub const ERROR_TYPES: [&str; 10] = [
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

/// The Anthropic error type of an HTTP status.
pub fn error_type_for(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic Messages (`POST /v1/messages`).
#[derive(Debug, Clone, Copy)]
pub struct AnthropicMessages;

impl WireDialect for AnthropicMessages {
    fn dialect(&self) -> Dialect {
        Dialect::Anthropic
    }

    fn title(&self) -> &'static str {
        "Anthropic Messages"
    }

    fn fixture_dir(&self) -> &'static str {
        "anthropic"
    }

    fn door_paths(&self) -> &'static [&'static str] {
        &["/v1/messages"]
    }

    fn upstream_path(&self) -> &'static str {
        "/v1/messages"
    }

    fn api_url(&self, base_url: &str, path: &str) -> String {
        // Anthropic's base URL is the host; one written with its `/v1` is tolerated.
        let base = base_url.trim_end_matches('/');
        format!("{}{path}", base.strip_suffix("/v1").unwrap_or(base))
    }

    fn forward_url(&self, base_url: &str, door_path: &str) -> String {
        // The base URL is the host: the door's `/v1` is part of the path.
        self.api_url(base_url, door_path)
    }

    fn key_header(&self) -> Option<&'static str> {
        Some("x-api-key")
    }

    fn marker_headers(&self) -> &'static [&'static str] {
        &["anthropic-version", "x-api-key"]
    }

    fn upstream_headers(&self, settings: &UpstreamSettings<'_>) -> Vec<(&'static str, String)> {
        let mut out = vec![("anthropic-version", settings.anthropic_version.to_owned())];
        if let Some(beta) = settings.anthropic_beta {
            out.push(("anthropic-beta", beta.to_owned()));
        }
        out
    }

    fn model_prefixes(&self) -> &'static [&'static str] {
        &["claude-"]
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
        ChatRequest::from_anthropic_tree(body)
    }

    fn upstream_request(
        &self,
        request: &ChatRequest,
        model: &str,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Vec<u8>, RequestError> {
        // A Responses request may hold what only a Responses upstream honours.
        request.check_responses_route(self.dialect())?;
        request.to_anthropic_upstream(model, defaults, caps)
    }

    fn error_body(&self, report: &ErrorReport) -> Value {
        // Anthropic clients (Claude Code among them) act on the error type: a word outside
        // Anthropic's vocabulary (an OpenAI provider's, a stream code) is replaced by the one
        // Anthropic uses for the status.
        let ty = if ERROR_TYPES.contains(&report.class.as_str()) {
            report.class.as_str()
        } else {
            error_type_for(report.status)
        };
        json!({"type": "error", "error": {"type": ty, "message": report.message}})
    }

    fn error_frame(&self, report: &ErrorReport) -> String {
        format!("event: error\ndata: {}\n\n", self.error_body(report))
    }

    fn error_type_fields(&self) -> &'static [&'static str] {
        &["type"]
    }

    fn models_body(&self, ids: &[String]) -> Value {
        json!({
            "data": ids.iter().map(|id| json!({
                "type": "model", "id": id, "display_name": id,
                "created_at": "1970-01-01T00:00:00Z"
            })).collect::<Vec<Value>>(),
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last(),
        })
    }

    fn prefill_by_default(&self) -> bool {
        true
    }

    fn input_usage_first(&self) -> bool {
        true
    }

    fn stamps_created(&self) -> bool {
        false
    }

    fn unknown_model_error(&self, model: &str) -> ErrorReport {
        ErrorReport::new(404, "not_found_error", format!("model: {model}"))
    }

    fn status_message(&self, status: u16) -> Option<&'static str> {
        (status == 529).then_some("Overloaded")
    }

    fn overloaded_message(&self) -> &'static str {
        "Overloaded"
    }
}
