//! Calling a provider: one HTTP request, its SSE body decoded into Agent Events as it arrives.
//!
//! Each provider gets its own pooled reqwest client (HTTP/1.1 and HTTP/2, TCP_NODELAY, its
//! own connect timeout). [`Upstream::open`] returns once the first event has arrived, so a
//! caller can still choose another route when a provider accepts the connection and then
//! says nothing; the returned stream enforces the idle timeout between chunks.

mod body;
mod request;

use std::collections::HashMap;
use std::time::Duration;

use providers::AgentEvent;

use crate::config::{Config, ProviderConfig};
use crate::error::{GatewayError, TimeoutPhase};
use crate::route::Route;

pub use body::EventStream;
pub use request::{ClientKey, ForwardHeaders};

/// Pooled HTTP clients, one per configured provider.
#[derive(Debug, Clone)]
pub struct Upstream {
    clients: HashMap<String, reqwest::Client>,
    /// What providers said about their rate limits, per route.
    backoff: std::sync::Arc<crate::limit::UpstreamBackoff>,
}

impl Upstream {
    /// Builds a client for every provider in `config`.
    pub fn new(config: &Config) -> Result<Self, GatewayError> {
        install_crypto_provider();
        let mut clients = HashMap::new();
        for (name, provider) in &config.providers {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(provider.connect_timeout_ms))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .map_err(|e| GatewayError::Internal(format!("building HTTP client: {e}")))?;
            clients.insert(name.clone(), client);
        }
        Ok(Upstream {
            clients,
            backoff: std::sync::Arc::default(),
        })
    }

    /// Routes the providers asked to slow down (rate-limit headers, 429 Retry-After).
    pub fn backoff(&self) -> &crate::limit::UpstreamBackoff {
        &self.backoff
    }

    /// Sends `body` (already in the provider's dialect) to `route` and waits for the first
    /// event. Errors before that point leave nothing half-sent to the client.
    pub async fn open(
        &self,
        route: &Route,
        provider: &ProviderConfig,
        body: Vec<u8>,
        key: &ClientKey,
        forward: &ForwardHeaders,
    ) -> Result<(Vec<AgentEvent>, EventStream), GatewayError> {
        let client = self
            .clients
            .get(&route.provider)
            .ok_or_else(|| GatewayError::Internal(format!("no client for {}", route.provider)))?;
        let url = request::endpoint(provider);
        let request = request::build(client, &url, &route.provider, provider, body, key, forward)?;
        let first_byte = Duration::from_millis(provider.first_byte_timeout_ms);
        let idle = Duration::from_millis(provider.idle_timeout_ms);
        let name = route.provider.clone();
        let opening = async {
            let response = request
                .send()
                .await
                .map_err(|e| send_error(&route.provider, &e))?;
            let status = response.status();
            // Rate-limit headers come on successes too: a budget at zero means wait.
            self.backoff
                .observe(&route.to_string(), status.as_u16(), response.headers());
            if !status.is_success() {
                return Err(body::status_error(&route.provider, provider.dialect, response).await);
            }
            let mut stream = EventStream::new(name, provider.dialect, response, idle);
            let first = stream.first_events().await?;
            Ok((first, stream))
        };
        match tokio::time::timeout(first_byte, opening).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout {
                provider: route.provider.clone(),
                phase: TimeoutPhase::FirstByte,
            }),
        }
    }
}

impl Upstream {
    /// A plain JSON POST to `path` under the provider's API root (`/v1/messages/count_tokens`),
    /// for calls that are not streamed answers.
    pub async fn post_json(
        &self,
        route: &Route,
        provider: &ProviderConfig,
        path: &str,
        body: Vec<u8>,
        key: &ClientKey,
        forward: &ForwardHeaders,
    ) -> Result<serde_json::Value, GatewayError> {
        let client = self
            .clients
            .get(&route.provider)
            .ok_or_else(|| GatewayError::Internal(format!("no client for {}", route.provider)))?;
        let url = request::api_url(provider, path);
        let request = request::build(client, &url, &route.provider, provider, body, key, forward)?
            .header(http::header::ACCEPT, "application/json")
            .timeout(Duration::from_millis(provider.first_byte_timeout_ms));
        let response = request
            .send()
            .await
            .map_err(|e| send_error(&route.provider, &e))?;
        if !response.status().is_success() {
            return Err(body::status_error(&route.provider, provider.dialect, response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GatewayError::Unreachable {
                provider: route.provider.clone(),
                reason: format!("reading the answer failed: {e}"),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::Unreachable {
            provider: route.provider.clone(),
            reason: format!("the answer is not JSON: {e}"),
        })
    }
}

/// Maps a reqwest send error to what a client should hear, without the URL's secrets.
fn send_error(provider: &str, e: &reqwest::Error) -> GatewayError {
    if e.is_timeout() && e.is_connect() {
        return GatewayError::Timeout {
            provider: provider.to_owned(),
            phase: TimeoutPhase::Connect,
        };
    }
    let mut reason = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The source chain says why (refused, DNS, TLS) and carries no credentials.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    GatewayError::Unreachable {
        provider: provider.to_owned(),
        reason,
    }
}

/// rustls needs one process-wide crypto provider; ring builds without a C toolchain quirk.
pub(crate) fn install_crypto_provider() {
    // Err means another part of the process installed one first, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
