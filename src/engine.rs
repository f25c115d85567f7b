//! The engine: from a unified request to a stream of Agent Events from the right upstream.
//!
//! Doors hand it a [`Call`]; it plans the routes, translates the request into the chosen
//! provider's dialect, opens the upstream and returns the events, with `stream.start`
//! completed by what only the gateway knows (request id, provider, creation time).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{Stream, StreamExt};
use providers::request::{AnthropicDefaults, ChatRequest};
use providers::{AgentEvent, Dialect};

use crate::config::Config;
use crate::error::GatewayError;
use crate::route::{self, Route};
use crate::upstream::{ClientKey, ForwardHeaders, Upstream};

/// The events of one answer, ending after `stream.end` or at the first `Err`.
pub type Events = Pin<Box<dyn Stream<Item = Result<AgentEvent, GatewayError>> + Send>>;

/// One client request, as a door understood it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The door it came through.
    pub door: Dialect,
    /// The request, in unified form (it remembers its source dialect).
    pub request: ChatRequest,
    /// The client's credential.
    pub key: ClientKey,
    /// Client headers that pass through to providers.
    pub forward: ForwardHeaders,
}

/// A started answer.
pub struct Answer {
    /// The route that is answering.
    pub route: Route,
    /// Its events, `stream.start` first.
    pub events: Events,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("route", &self.route)
            .finish()
    }
}

/// Shared state of the gateway's request path.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    upstream: Upstream,
    defaults: AnthropicDefaults,
    next_request: AtomicU64,
}

impl Engine {
    /// An engine for `config`, with its upstream clients built.
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let upstream = Upstream::new(&config)?;
        let defaults = AnthropicDefaults {
            default_max_tokens: config.translation.anthropic_default_max_tokens,
            ..AnthropicDefaults::default()
        };
        Ok(Engine {
            config: Arc::new(config),
            upstream,
            defaults,
            next_request: AtomicU64::new(0),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The upstream clients (for calls that are not answers, such as count_tokens).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Translates `request` for `route`'s provider, always asking for a stream with usage
    /// (the door decides what the client sees of it).
    pub fn upstream_body(
        &self,
        request: &ChatRequest,
        route: &Route,
    ) -> Result<Vec<u8>, GatewayError> {
        let provider = self.provider(route)?;
        let mut request = request.clone();
        request.model.clone_from(&route.model);
        request.stream = true;
        request.include_usage = true;
        let body = match provider.dialect {
            Dialect::OpenAi => request.to_openai()?,
            Dialect::Anthropic => request.to_anthropic(&self.defaults)?,
        };
        serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Internal(format!("serializing request: {e}")))
    }

    /// Starts answering `call` on its primary route.
    pub async fn answer(&self, call: Call) -> Result<Answer, GatewayError> {
        let plan = route::plan(&self.config, &call.request.model)?;
        let route = plan
            .routes
            .into_iter()
            .next()
            .ok_or_else(|| GatewayError::Internal("empty route plan".into()))?;
        let provider = self.provider(&route)?;
        let body = self.upstream_body(&call.request, &route)?;
        let (first, rest) = self
            .upstream
            .open(&route, provider, body, &call.key, &call.forward)
            .await?;
        let request_id = format!(
            "req_{:x}{:04x}",
            unix_now(),
            self.next_request.fetch_add(1, Ordering::Relaxed) & 0xffff
        );
        let provider_name = route.provider.clone();
        // An Anthropic client reads its input count from message_start, but an OpenAI-dialect
        // upstream reports usage only at the end: start with an estimate, which the real count
        // replaces when it arrives (usage fields are latest-wins).
        let mut first = first;
        if call.door == Dialect::Anthropic
            && provider.dialect == Dialect::OpenAi
            && let Some(at) = first
                .iter()
                .position(|e| matches!(e, AgentEvent::StreamStart(_)))
        {
            first.insert(
                at + 1,
                AgentEvent::Usage(providers::Usage {
                    input_tokens: Some(crate::estimate::input_tokens(&call.request)),
                    output_tokens: Some(0),
                    ..providers::Usage::default()
                }),
            );
        }
        let events = futures_util::stream::iter(first.into_iter().map(Ok))
            .chain(rest)
            .map(move |item| {
                item.map(|event| match event {
                    AgentEvent::StreamStart(mut start) => {
                        start.request_id = Some(request_id.clone());
                        start.provider = Some(provider_name.clone());
                        start.created.get_or_insert_with(unix_now);
                        AgentEvent::StreamStart(start)
                    }
                    other => other,
                })
            });
        Ok(Answer {
            route,
            events: Box::pin(events),
        })
    }

    /// The configuration of `route`'s provider.
    pub fn provider(&self, route: &Route) -> Result<&crate::config::ProviderConfig, GatewayError> {
        self.config
            .providers
            .get(&route.provider)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: route.to_string(),
            })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
