//! The trait a wire dialect implements: everything the gateway does differently per
//! dialect. Implementations live in their dialect's module; [`crate::dialects`] registers
//! them (kept apart so a dialect's module does not depend on the registry naming it).

use serde_json::Value;

use crate::assemble::Message;
use crate::codec::{EncodeOptions, EventEncoder, FrameDecoder};
use crate::dialect::Dialect;
use crate::error::{EncodeError, ErrorReport};
use crate::request::{AnthropicDefaults, Capabilities, ChatRequest, RequestError, Tree};

/// The configuration a dialect may read to build its upstream request headers (the
/// provider's settings and what the client forwarded). The key travels separately, see
/// [`WireDialect::key_header`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamSettings<'a> {
    /// OpenAI `organization` (`OpenAI-Organization`).
    pub organization: Option<&'a str>,
    /// OpenAI `project` (`OpenAI-Project`).
    pub project: Option<&'a str>,
    /// The API version the provider is configured for (`anthropic-version`).
    pub anthropic_version: &'a str,
    /// The client's `anthropic-beta` header, forwarded.
    pub anthropic_beta: Option<&'a str>,
}

/// One wire dialect: what the gateway needs to speak it at a door and upstream.
///
/// Implementations are zero-sized statics; every method is pure (no I/O).
pub trait WireDialect: Sync {
    /// The config / CLI name this implementation answers to.
    fn dialect(&self) -> Dialect;

    /// The dialect whose door and API root this one shares (its vendor's other endpoints,
    /// `/v1/embeddings` and the like, are passed through there): its own by default.
    fn platform(&self) -> Dialect {
        self.dialect()
    }

    /// The human name (CLI help, docs): `OpenAI Chat Completions`.
    fn title(&self) -> &'static str;

    /// The folder under `fixtures/` holding this dialect's recorded provider streams.
    fn fixture_dir(&self) -> &'static str;

    /// The paths of the gateway door speaking this dialect (and of the provider endpoint
    /// the replay server imitates), the canonical one first.
    fn door_paths(&self) -> &'static [&'static str];

    /// The streaming endpoint's path under the provider's API root ([`Self::api_url`]).
    fn upstream_path(&self) -> &'static str;

    /// `path` under a provider's configured `base_url`: how this dialect's base URLs are
    /// written (with or without their version segment).
    fn api_url(&self, base_url: &str, path: &str) -> String;

    /// A client's `door_path` (as sent to a door, `/v1/...`) under a provider's `base_url`,
    /// for endpoints the gateway passes through.
    fn forward_url(&self, base_url: &str, door_path: &str) -> String;

    /// The header carrying an API key, or `None` for `Authorization: Bearer`.
    fn key_header(&self) -> Option<&'static str>;

    /// Request headers that only this dialect's clients send: their presence on a route
    /// shared by all doors means the client speaks this dialect.
    fn marker_headers(&self) -> &'static [&'static str];

    /// The non-secret headers of an upstream request, as `(name, value)`.
    fn upstream_headers(&self, settings: &UpstreamSettings<'_>) -> Vec<(&'static str, String)>;

    /// Prefixes of the bare model names this dialect's vendor serves (`claude-`), which
    /// route to the first provider of this dialect; a prefix claimed by two dialects goes to
    /// the one registered first.
    fn model_prefixes(&self) -> &'static [&'static str];

    /// A fresh decoder of this dialect's provider stream frames.
    fn frame_decoder(&self) -> Box<dyn FrameDecoder>;

    /// A fresh encoder of Agent Events into this dialect's client stream.
    fn event_encoder(&self, options: EncodeOptions) -> Box<dyn EventEncoder>;

    /// An assembled answer as this dialect's non-streaming response body.
    fn response_body(&self, message: &Message) -> Result<Value, EncodeError>;

    /// A door request body (already a JSON object, read as a [`Tree`]) as the unified
    /// request.
    fn parse_request(&self, body: Tree) -> Result<ChatRequest, RequestError>;

    /// The unified request as this dialect's upstream body for `model`, always streaming
    /// with usage: its JSON bytes.
    fn upstream_request(
        &self,
        request: &ChatRequest,
        model: &str,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Vec<u8>, RequestError>;

    /// An error answer's body in this dialect.
    fn error_body(&self, report: &ErrorReport) -> Value;

    /// An error sent inside a stream, as this dialect's provider sends it (an SSE frame).
    fn error_frame(&self, report: &ErrorReport) -> String;

    /// The fields of a provider's `error` object naming its type, the first present wins.
    fn error_type_fields(&self) -> &'static [&'static str];

    /// A provider's error body as `(type, message)`; `None` when it has no
    /// `error.message` (not JSON, an HTML page). A missing or empty type reads as `api_error`.
    fn parse_error_body(&self, body: &[u8]) -> Option<(String, String)> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let err = v.get("error")?;
        let message = err.get("message")?.as_str()?.to_owned();
        let ty = self
            .error_type_fields()
            .iter()
            .find_map(|f| err.get(*f).and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .unwrap_or("api_error")
            .to_owned();
        Some((ty, message))
    }

    /// The body of `GET /v1/models` listing `ids`, in this dialect's shape.
    fn models_body(&self, ids: &[String]) -> Value;

    /// Whether continuing a broken answer with this dialect's providers defaults to an
    /// assistant prefill (rather than an instruction to continue).
    fn prefill_by_default(&self) -> bool;

    /// Whether the stream reports input usage at its start: its clients read it there, and
    /// its providers send it there.
    fn input_usage_first(&self) -> bool;

    /// Whether every chunk carries the stream's `created` time, which a converted stream
    /// must then be given.
    fn stamps_created(&self) -> bool;

    // What the provider itself says, for the replay server imitating it.

    /// What this dialect's provider answers (404) for a model it does not serve.
    fn unknown_model_error(&self, model: &str) -> ErrorReport;

    /// The provider's own message when it is overloaded, in a mid-stream error.
    fn overloaded_message(&self) -> &'static str;

    /// The provider's own message for an error `status`, where it has a fixed one.
    fn status_message(&self, status: u16) -> Option<&'static str>;
}
