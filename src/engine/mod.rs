//! The engine: from a unified request to one unbroken stream of Agent Events.
//!
//! Doors hand it a [`Call`]. It plans the routes (primary, then the alias's fallbacks),
//! translates the request for each provider, and runs attempts ([`run`]): a failure before
//! anything reached the client switches attempts freely; a failure after it continues the
//! answer through the [`crate::splice::Splicer`], so the client sees one stream.

mod generation;
mod hedge;
mod resume;
mod run;
mod span;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use providers::request::ChatRequest;
use providers::{AgentEvent, Dialect};

use crate::config::{Config, ModelConfig};
use crate::error::GatewayError;
use crate::resilience::breaker::Breakers;
use crate::route::Route;
use crate::upstream::{ClientKey, ForwardHeaders, Upstream};

pub use generation::{Generation, missing_key_vars};

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

/// Shared state of the gateway's request path: the current [`Generation`] (what the
/// configuration determines, swapped whole by a reload) and what outlives a reload (the
/// circuit breakers, the counters; the limiter's counts live inside every generation's
/// limiter, shared).
#[derive(Debug)]
pub struct Engine {
    /// A read lock held only to clone the `Arc`: a request pays one uncontended lock, and a
    /// reload's write waits for nothing longer. (`arc-swap` would spare the lock, but not
    /// measurably next to an HTTP request, and not worth another dependency.)
    current: RwLock<Arc<Generation>>,
    breakers: Arc<Breakers>,
    /// The file the configuration was read from, which a reload reads again (None: built
    /// in, as the demo's; nothing to reload).
    source: OnceLock<PathBuf>,
    /// One reload at a time, so two cannot interleave building from the same previous
    /// generation.
    reloading: Mutex<()>,
    retries: AtomicU64,
    failovers: AtomicU64,
    /// The Redis connection of `[state] backend = "redis"` (fixed for the process: `[state]`
    /// needs a restart), shared by the hub, the limiter and the breakers.
    redis: Option<Arc<crate::state::Redis>>,
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
    /// An engine for `config`, with its upstream clients built. With `[state] backend =
    /// "redis"`, its Redis connection is made here (lazily: Redis may be down at start), so
    /// call it inside a tokio runtime then.
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let redis = match config.state.is_redis() {
            false => None,
            true => {
                let url = config
                    .state
                    .redis_url(|var| std::env::var(var).ok())
                    .map_err(GatewayError::Internal)?;
                let redis = crate::state::Redis::connect(&config.state, &url)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                // Instances must agree on who a client is before the first identity is made.
                if !crate::limit::ClientId::share_seed(&config.state.prefix) {
                    tracing::warn!(
                        "limits: client identities were made before the shared seed; limits per client key are per process"
                    );
                }
                Some(redis)
            }
        };
        let mut generation = Generation::build(config, None).map_err(|problems| {
            GatewayError::Internal(format!("configuration: {}", problems.join("; ")))
        })?;
        if let Some(redis) = &redis {
            // Reloads derive their limiter from this one: they share through Redis too.
            generation.limiter = generation.limiter.sharing(Arc::clone(redis));
        }
        let breakers = Arc::new(Breakers::new(generation.breaker));
        if let Some(redis) = &redis {
            breakers.share(Arc::clone(redis));
        }
        Ok(Engine {
            redis,
            breakers,
            current: RwLock::new(Arc::new(generation)),
            source: OnceLock::new(),
            reloading: Mutex::new(()),
            retries: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        })
    }

    /// The shared state's Redis connection, when `[state] backend = "redis"`.
    pub fn redis(&self) -> Option<&Arc<crate::state::Redis>> {
        self.redis.as_ref()
    }

    /// The current generation: hold it for the whole of whatever must see one configuration.
    pub fn generation(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration in force now (a later call may see a reloaded one).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.generation().config)
    }

    /// The rate limiter with the quotas in force (and the gateway keys' spend, for
    /// `/admin/keys`); its counts are shared by every configuration.
    pub fn limiter(&self) -> crate::limit::Limiter {
        self.generation().limiter.clone()
    }

    /// The gateway keys every door authenticates against.
    pub fn keyring(&self) -> Arc<crate::keys::Keyring> {
        Arc::clone(&self.generation().keyring)
    }

    /// The upstream clients (for calls that are not answers, such as count_tokens).
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::clone(&self.generation().upstream)
    }

    /// Remembers the file the configuration came from, for [`Engine::reload`]. Set once (by
    /// `streamgate serve`); later calls are ignored.
    pub fn set_source(&self, path: PathBuf) {
        let _ = self.source.set(path);
    }

    /// The file a reload reads, if the configuration came from one.
    pub fn source(&self) -> Option<&Path> {
        self.source.get().map(PathBuf::as_path)
    }

    /// Swaps in the configuration `prepare` makes from the running one, whole or not at all:
    /// its problems, or every problem building it, are returned and nothing changes. The
    /// limiter's state, the upstream rate-limit state and the breakers of routes whose provider
    /// remains carry over (breakers take the new thresholds); answers already running keep
    /// the generation they started with. Reloads run one at a time, so `prepare` sees the
    /// configuration it replaces.
    pub fn reload<T>(
        &self,
        prepare: impl FnOnce(&Config) -> Result<(Config, T), Vec<String>>,
    ) -> Result<T, Vec<String>> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let previous = self.generation();
        let (config, prepared) = prepare(&previous.config)?;
        let next = Generation::build(config, Some(&previous))?;
        // Under the write lock, so no request sees the new routes with the old thresholds.
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        self.breakers
            .reconfigure(next.breaker, |route| next.knows_route(route));
        *current = Arc::new(next);
        Ok(prepared)
    }

    /// Retries and failovers of every answer so far.
    pub fn attempt_counts(&self) -> AttemptCounts {
        AttemptCounts {
            retries: self.retries.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }

    /// The per-route circuit breakers (for `/admin/routes`).
    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    /// Starts answering `call`: admits it under the rate limits (waiting up to the queue
    /// time), then returns once an attempt produced its first events, or with the error that
    /// ended every attempt before anything reached the client.
    pub fn answer(
        self: &Arc<Self>,
        call: Call,
    ) -> impl Future<Output = Result<Answer, GatewayError>> + Send {
        self.answer_after(Box::new(call), &[])
    }

    /// Continues an answer of which a client already has `prior` (a stream the journal
    /// brought back after a restart): the new attempt is asked to continue from there, and
    /// its events follow `prior` as they would after any break, starting with a `retry` seam.
    pub fn resume(
        self: &Arc<Self>,
        call: Call,
        prior: &[AgentEvent],
    ) -> impl Future<Output = Result<Answer, GatewayError>> + Send {
        self.answer_after(Box::new(call), prior)
    }

    /// The call is boxed: an async fn keeps both its argument and the local it moves into
    /// in its future, so a 520-byte `Call` passed down by value took 2.6 KB of every
    /// request's future, for as long as it waited for its upstream (issue #14).
    async fn answer_after(
        self: &Arc<Self>,
        mut call: Box<Call>,
        prior: &[AgentEvent],
    ) -> Result<Answer, GatewayError> {
        // The one load of this answer: every attempt of it sees this configuration, and so
        // does the caller's key (the door authenticated it, perhaps before a reload).
        let generation = self.generation();
        call.caller = generation
            .keyring
            .recheck(&call.caller)
            .map_err(GatewayError::Unauthenticated)?;
        call.observed.set_model(
            &call.request.model,
            crate::telemetry::metrics::model_label(&generation.config, &call.request.model),
        );
        call.caller.check_model(&call.request.model)?;
        let alias_caps = generation
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
        let permit = generation
            .limiter
            .acquire(
                &client,
                &call.request.model,
                crate::limit::TokenEstimate::for_request(
                    &call.request,
                    generation.config.translation.anthropic_default_max_tokens,
                ),
            )
            .await?;
        let answer = run::start(
            Arc::clone(self),
            Arc::clone(&generation),
            call,
            permit,
            prior,
        )
        .await;
        // The limiter counted its own refusals; the providers' limits refuse here: a route
        // resting after a provider's 429, or that 429 passed on.
        match &answer {
            Err(GatewayError::RateLimited(limited)) => {
                generation.limiter.count_refusal(&client, limited.limit);
            }
            Err(GatewayError::UpstreamStatus { status: 429, .. }) => {
                generation
                    .limiter
                    .count_refusal(&client, crate::limit::LimitKind::Upstream);
            }
            _ => {}
        }
        answer
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
