//! Building the upstream HTTP request: URL, provider headers, and which key goes with it.

use providers::Dialect;

use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::secret::Secret;

/// The credential a client presented at a door.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// The door it came through: its key belongs to that dialect's provider family.
    pub door: Dialect,
    /// `Authorization: Bearer` (OpenAI door) or `x-api-key` (Anthropic door), if sent.
    pub key: Option<Secret>,
}

/// Client headers that providers of one dialect understand and that pass through.
#[derive(Debug, Clone, Default)]
pub struct ForwardHeaders {
    /// `anthropic-beta` (e.g. fine-grained tool streaming); sent to Anthropic upstreams only.
    pub anthropic_beta: Option<String>,
    /// The request's id (`x-request-id`, sane or made by the gateway): sent on every upstream
    /// call, so that a provider's logs and ours meet.
    pub request_id: Option<String>,
}

impl ForwardHeaders {
    /// The pass-through headers a client sent.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        ForwardHeaders {
            anthropic_beta: headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            request_id: headers
                .get(crate::telemetry::request_id::HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| crate::telemetry::request_id::is_sane(v.as_bytes()))
                .map(str::to_owned),
        }
    }
}

/// Picks the key for `provider`: the client's own when the provider allows pass-through and
/// the client came through the door of the provider's dialect (an OpenAI key never reaches
/// Anthropic, nor the reverse), else the configured environment variable.
pub fn choose_key(
    name: &str,
    provider: &ProviderConfig,
    client: &ClientKey,
) -> Result<Option<Secret>, GatewayError> {
    if uses_client_key(provider, client)
        && let Some(key) = &client.key
    {
        return Ok(Some(key.clone()));
    }
    match &provider.api_key_env {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
            _ => Err(GatewayError::MissingKey {
                provider: name.to_owned(),
                env_var: var.clone(),
            }),
        },
    }
}

/// Whether a request to `provider` carries the client's own key (not the gateway's).
pub fn uses_client_key(provider: &ProviderConfig, client: &ClientKey) -> bool {
    provider.pass_through_client_key && client.door == provider.dialect && client.key.is_some()
}

/// The full URL of the streaming endpoint for `provider`.
pub fn endpoint(provider: &ProviderConfig) -> String {
    api_url(provider, provider.dialect.wire().upstream_path())
}

/// `path` under the provider's API root, as its dialect writes base URLs.
pub fn api_url(provider: &ProviderConfig, path: &str) -> String {
    provider.dialect.wire().api_url(&provider.base_url, path)
}

/// The URL of a client's `path` (as sent to a door, `/v1/...`) under the provider's API
/// root, as its dialect writes base URLs.
pub fn forward_url(provider: &ProviderConfig, path: &str) -> String {
    provider
        .dialect
        .wire()
        .forward_url(&provider.base_url, path)
}

/// Builds a POST of `body` to `url` with every header the provider expects.
pub fn build(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    provider: &ProviderConfig,
    body: Vec<u8>,
    key: &ClientKey,
    forward: &ForwardHeaders,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    let request = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "text/event-stream")
        .body(body);
    authorize(request, name, provider, key, forward)
}

/// Adds the provider's own headers to `request` ([`provider_headers`]).
pub fn authorize(
    mut request: reqwest::RequestBuilder,
    name: &str,
    provider: &ProviderConfig,
    key: &ClientKey,
    forward: &ForwardHeaders,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    for (name, value) in provider_headers(name, provider, key, forward)? {
        request = request.header(name, value);
    }
    Ok(request)
}

/// The headers of a streamed answer's request (content type, accept, and the provider's
/// own), for the gateway's own client (which adds `Host` and `Content-Length`).
pub(super) fn stream_headers(
    name: &str,
    provider: &ProviderConfig,
    key: &ClientKey,
    forward: &ForwardHeaders,
) -> Result<http::HeaderMap, GatewayError> {
    let mut headers = http::HeaderMap::with_capacity(8);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("text/event-stream"),
    );
    for (name, value) in provider_headers(name, provider, key, forward)? {
        headers.append(name, value);
    }
    Ok(headers)
}

/// The provider's own headers: its key (see [`choose_key`]) in the dialect's header, the
/// OpenAI organization and project, the Anthropic version and the client's
/// `anthropic-beta`, and the request id.
pub fn provider_headers(
    name: &str,
    provider: &ProviderConfig,
    key: &ClientKey,
    forward: &ForwardHeaders,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, GatewayError> {
    let key = choose_key(name, provider, key)?;
    let wire = provider.dialect.wire();
    let mut out = Vec::with_capacity(5);
    // A value no header can carry (a control character in a key or setting) fails the
    // request as reqwest failed it when building it; which value is not said, as it may be
    // the key.
    let unsendable = || {
        tracing::warn!(
            provider = name,
            "a header of the upstream request is not valid"
        );
        GatewayError::Internal(format!(
            "the request to provider {name:?} could not be built (check its base_url)"
        ))
    };
    if let Some(key) = &key {
        let (header, value) = match wire.key_header() {
            None => (
                http::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            ),
            Some(header) => (
                http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| unsendable())?,
                key.expose().to_owned(),
            ),
        };
        let mut value = http::HeaderValue::try_from(value).map_err(|_| unsendable())?;
        value.set_sensitive(true);
        out.push((header, value));
    }
    let settings = providers::dialects::UpstreamSettings {
        organization: provider.organization.as_deref(),
        project: provider.project.as_deref(),
        anthropic_version: &provider.anthropic_version,
        anthropic_beta: forward.anthropic_beta.as_deref(),
    };
    for (header, value) in wire.upstream_headers(&settings) {
        out.push((
            http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| unsendable())?,
            http::HeaderValue::try_from(value).map_err(|_| unsendable())?,
        ));
    }
    if let Some(id) = &forward.request_id {
        out.push((
            http::HeaderName::from_static(crate::telemetry::request_id::HEADER),
            http::HeaderValue::try_from(id.as_str()).map_err(|_| unsendable())?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dialect: Dialect, pass: bool) -> ProviderConfig {
        let mut p = ProviderConfig::new(
            dialect,
            "http://127.0.0.1:1/v1",
            "STREAMGATE_TEST_NO_SUCH_VAR",
        );
        p.pass_through_client_key = pass;
        p
    }

    #[test]
    fn a_key_never_crosses_dialects() {
        let openai_client = ClientKey {
            door: Dialect::OpenAi,
            key: Some(Secret::new("sk-openai")),
        };
        // Anthropic provider with pass-through on: the OpenAI door's key is not used.
        let err = choose_key(
            "anthropic",
            &provider(Dialect::Anthropic, true),
            &openai_client,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::MissingKey { .. }));
        assert!(!err.to_string().contains("sk-openai"));
        // Same dialect with pass-through: it is used.
        let key = choose_key("openai", &provider(Dialect::OpenAi, true), &openai_client).unwrap();
        assert_eq!(key.unwrap().expose(), "sk-openai");
        // Pass-through off: never used.
        assert!(choose_key("openai", &provider(Dialect::OpenAi, false), &openai_client).is_err());
    }

    #[test]
    fn forwarded_paths_keep_one_version_segment() {
        let openai = provider(Dialect::OpenAi, false);
        assert_eq!(
            forward_url(&openai, "/v1/embeddings"),
            "http://127.0.0.1:1/v1/embeddings"
        );
        assert_eq!(
            forward_url(&openai, "/embeddings"),
            "http://127.0.0.1:1/v1/embeddings"
        );
        assert_eq!(
            forward_url(&openai, "/v1beta/x"),
            "http://127.0.0.1:1/v1/v1beta/x"
        );
        let anthropic = provider(Dialect::Anthropic, false);
        assert_eq!(
            forward_url(&anthropic, "/v1/messages/batches"),
            "http://127.0.0.1:1/v1/messages/batches"
        );
    }

    #[test]
    fn endpoints_follow_the_dialect() {
        assert_eq!(
            endpoint(&provider(Dialect::OpenAi, false)),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        assert_eq!(
            endpoint(&provider(Dialect::Anthropic, false)),
            "http://127.0.0.1:1/v1/messages"
        );
    }
}
