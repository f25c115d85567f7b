//! The engine: from a unified request to one unbroken stream of Agent Events.
//!
//! Doors hand it a [`Call`]. It plans the routes (primary, then the alias's fallbacks),
//! translates the request for each provider, and runs attempts ([`run`]): a failure before
//! anything reached the client switches attempts freely; a failure after it continues the
//! answer through the [`crate::splice::Splicer`], so the client sees one stream.

mod hedge;
mod resume;
mod run;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use providers::request::{AnthropicDefaults, ChatRequest};
use providers::{AgentEvent, Dialect};

use crate::config::{Config, ContinuationMode, ModelConfig, ProviderConfig};
use crate::error::GatewayError;
use crate::resilience::RetryPolicy;
use crate::resilience::breaker::{BreakerConfig, Breakers};
use crate::resilience::continuation::Mode;
use crate::route::Route;
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
    /// The client's credential for pass-through providers.
    pub key: ClientKey,
    /// The gateway key that authenticated the request (limits count against it).
    pub caller: crate::keys::Caller,
    /// Client headers that pass through to providers.
    pub forward: ForwardHeaders,
    /// The request's record: its id (`stream.start`'s `request_id`, `x-request-id`
    /// upstream), filled with what the answer learns for the access line and the metrics.
    pub observed: crate::telemetry::request::Observed,
}

/// A started answer.
pub struct Answer {
    /// The route that answers first.
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
    policy: RetryPolicy,
    breakers: Arc<Breakers>,
    limiter: crate::limit::Limiter,
    keyring: crate::keys::Keyring,
    retries: AtomicU64,
    failovers: AtomicU64,
}

/// How often the engine started a new attempt since it was built: the counts behind the
/// `retry` and `failover` seams of the Agent Event Stream (the OpenAI and Anthropic doors hide
/// them). For tests and operators; nothing in the request path reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCounts {
    /// New attempts on the same route after a backoff.
    pub retries: u64,
    /// Moves to another route of the plan.
    pub failovers: u64,
}

impl Engine {
    /// An engine for `config`, with its upstream clients built.
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let upstream = Upstream::new(&config)?;
        let defaults = AnthropicDefaults {
            default_max_tokens: config.translation.anthropic_default_max_tokens,
            ..AnthropicDefaults::default()
        };
        let retry = &config.streaming.retry_policy;
        let policy = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            initial_backoff: Duration::from_millis(retry.backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms.max(retry.backoff_ms)),
            jitter: retry.jitter,
            time_to_fallback: Duration::from_millis(retry.time_to_fallback_ms),
        };
        let breaker = &config.streaming.circuit_breaker;
        let breakers = Arc::new(Breakers::new(BreakerConfig {
            failure_threshold: breaker.failure_threshold.max(1),
            cooldown: Duration::from_millis(breaker.cooldown_ms),
        }));
        let keyring = crate::keys::Keyring::new(&config.keys)
            .map_err(|e| GatewayError::Internal(format!("gateway keys: {e}")))?;
        let limiter = crate::limit::Limiter::with_gateway_keys(
            &config.limits,
            |var| std::env::var(var).ok(),
            config
                .keys
                .iter()
                .map(|(name, k)| (name.as_str(), k.quotas(), k.budget())),
        )
        .map_err(|e| GatewayError::Internal(format!("rate limits: {e}")))?;
        Ok(Engine {
            config: Arc::new(config),
            upstream,
            defaults,
            policy,
            breakers,
            limiter,
            keyring,
            retries: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The rate limiter (and the gateway keys' spend, for `/admin/keys`).
    pub fn limiter(&self) -> &crate::limit::Limiter {
        &self.limiter
    }

    /// The gateway keys every door authenticates against.
    pub fn keyring(&self) -> &crate::keys::Keyring {
        &self.keyring
    }

    /// The upstream clients (for calls that are not answers, such as count_tokens).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Retries and failovers of every answer so far.
    pub fn attempt_counts(&self) -> AttemptCounts {
        AttemptCounts {
            retries: self.retries.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }

    /// The per-route circuit breakers (for `/admin/routes`).
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Translates `request` for `route`'s provider, always asking for a stream with usage
    /// (the door decides what the client sees of it).
    pub fn upstream_body(
        &self,
        request: &ChatRequest,
        route: &Route,
    ) -> Result<Vec<u8>, GatewayError> {
        let provider = self.provider(route)?;
        let caps = crate::route::capabilities(&self.config, &request.model, route);
        let body = provider.dialect.wire().upstream_request(
            request,
            &route.model,
            &self.defaults,
            caps,
        )?;
        serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Internal(format!("serializing request: {e}")))
    }

    /// Starts answering `call`: admits it under the rate limits (waiting up to the queue
    /// time), then returns once an attempt produced its first events, or with the error that
    /// ended every attempt before anything reached the client.
    pub async fn answer(self: &Arc<Self>, call: Call) -> Result<Answer, GatewayError> {
        self.answer_after(call, &[]).await
    }

    /// Continues an answer of which a client already has `prior` (a stream the journal
    /// brought back after a restart): the new attempt is asked to continue from there, and
    /// its events follow `prior` as they would after any break, starting with a `retry` seam.
    pub async fn resume(
        self: &Arc<Self>,
        call: Call,
        prior: &[AgentEvent],
    ) -> Result<Answer, GatewayError> {
        self.answer_after(call, prior).await
    }

    async fn answer_after(
        self: &Arc<Self>,
        mut call: Call,
        prior: &[AgentEvent],
    ) -> Result<Answer, GatewayError> {
        call.observed.set_model(
            &call.request.model,
            crate::telemetry::metrics::model_label(&self.config, &call.request.model),
        );
        call.caller.check_model(&call.request.model)?;
        let alias_caps = self
            .config
            .models
            .get(&call.request.model)
            .map(ModelConfig::output_caps)
            .unwrap_or_default();
        call.caller
            .output_caps()
            .and(alias_caps)
            .apply(&mut call.request)?;
        let client = call
            .caller
            .client_id()
            .unwrap_or_else(|| crate::limit::ClientId::from_secret(call.key.key.as_ref()));
        let permit = self
            .limiter
            .acquire(
                &client,
                &call.request.model,
                crate::limit::TokenEstimate::for_request(
                    &call.request,
                    self.config.translation.anthropic_default_max_tokens,
                ),
            )
            .await?;
        run::start(Arc::clone(self), call, permit, prior).await
    }

    /// How long an answer for `model` may go without content before its next route is
    /// started in parallel: the alias's `hedge_after_ms`, else `[streaming.retryPolicy]
    /// hedgeAfterMs`; None when that is 0 (hedging off).
    fn hedge_after(&self, model: &str) -> Option<Duration> {
        let ms = self
            .config
            .models
            .get(model)
            .and_then(|m| m.hedge_after_ms)
            .unwrap_or(self.config.streaming.retry_policy.hedge_after_ms);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The configuration of `route`'s provider.
    pub fn provider(&self, route: &Route) -> Result<&ProviderConfig, GatewayError> {
        self.config
            .providers
            .get(&route.provider)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: route.to_string(),
            })
    }

    /// How `provider` is first asked to continue an answer.
    fn continuation_mode(&self, provider: &ProviderConfig) -> Mode {
        match provider.continuation {
            Some(ContinuationMode::Prefill) => Mode::Prefill,
            Some(ContinuationMode::Instruction) => Mode::Instruction,
            None if provider.dialect.wire().prefill_by_default() => Mode::Prefill,
            None => Mode::Instruction,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
