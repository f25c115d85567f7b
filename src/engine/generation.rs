//! What one configuration determines on the request path: the configuration itself, the
//! upstream clients, the retry policy, the translation defaults, the gateway keys and the
//! limiter's quotas. The engine holds the current [`Generation`]; a request loads it once and
//! keeps that `Arc` for its whole answer (retries, failover, continuation, hedging, the hub's
//! generation task), so a reload never changes a running answer's configuration.

use std::sync::Arc;
use std::time::Duration;

use providers::request::{AnthropicDefaults, ChatRequest};

use crate::config::{Config, ContinuationMode, ProviderConfig};
use crate::error::GatewayError;
use crate::keys::Keyring;
use crate::limit::Limiter;
use crate::resilience::RetryPolicy;
use crate::resilience::breaker::BreakerConfig;
use crate::resilience::continuation::Mode;
use crate::route::Route;
use crate::upstream::Upstream;

/// The request path's view of one configuration.
#[derive(Debug)]
pub struct Generation {
    pub(super) config: Arc<Config>,
    pub(super) upstream: Arc<Upstream>,
    pub(super) defaults: AnthropicDefaults,
    pub(super) policy: RetryPolicy,
    pub(super) keyring: Arc<Keyring>,
    pub(super) limiter: Limiter,
    pub(super) breaker: BreakerConfig,
}

impl Generation {
    /// The generation of `config`. With `previous` (a reload), the limiter's and the upstream
    /// rate-limit state carry over; without, they start empty. Every problem is reported, not
    /// only the first.
    pub(super) fn build(
        config: Config,
        previous: Option<&Generation>,
    ) -> Result<Generation, Vec<String>> {
        let mut problems = missing_key_vars(&config);
        // The keyring and the limiter stop at the first missing variable: those are listed.
        let listed = !problems.is_empty();
        let upstream = Upstream::new(&config)
            .map(|u| match previous {
                Some(p) => u.sharing_backoff(&p.upstream),
                None => u,
            })
            .map_err(|e| problems.push(e.to_string()));
        let keyring = Keyring::new(&config.keys).map_err(|e| {
            if !listed {
                problems.push(format!("gateway keys: {e}"));
            }
        });
        let env = |var: &str| std::env::var(var).ok();
        let gateway = config
            .keys
            .iter()
            .map(|(name, k)| (name.as_str(), k.quotas(), k.budget()));
        let limiter = match previous {
            Some(p) => p.limiter.reconfigured(&config.limits, env, gateway),
            None => Limiter::with_gateway_keys(&config.limits, env, gateway),
        }
        .map_err(|e| {
            if !listed {
                problems.push(format!("rate limits: {e}"));
            }
        });
        let (Ok(upstream), Ok(keyring), Ok(limiter)) = (upstream, keyring, limiter) else {
            return Err(problems);
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
        let breaker = BreakerConfig {
            failure_threshold: breaker.failure_threshold.max(1),
            cooldown: Duration::from_millis(breaker.cooldown_ms),
        };
        Ok(Generation {
            defaults: AnthropicDefaults {
                default_max_tokens: config.translation.anthropic_default_max_tokens,
                ..AnthropicDefaults::default()
            },
            config: Arc::new(config),
            upstream: Arc::new(upstream),
            policy,
            keyring: Arc::new(keyring),
            limiter,
            breaker,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The gateway keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The rate limiter with this configuration's quotas.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The upstream clients.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Whether `route` (`provider/model`) belongs to this configuration: its provider is
    /// configured (an alias's route, or one a client names directly).
    pub(super) fn knows_route(&self, route: &str) -> bool {
        route
            .split_once('/')
            .is_some_and(|(provider, _)| self.config.providers.contains_key(provider))
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
        Ok(provider
            .dialect
            .wire()
            .upstream_request(request, &route.model, &self.defaults, caps)?)
    }

    /// How long an answer for `model` may go without content before its next route is
    /// started in parallel: the alias's `hedge_after_ms`, else `[streaming.retryPolicy]
    /// hedgeAfterMs`; None when that is 0 (hedging off).
    pub(super) fn hedge_after(&self, model: &str) -> Option<Duration> {
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
    pub(super) fn continuation_mode(&self, provider: &ProviderConfig) -> Mode {
        match provider.continuation {
            Some(ContinuationMode::Prefill) => Mode::Prefill,
            Some(ContinuationMode::Instruction) => Mode::Instruction,
            None if provider.dialect.wire().prefill_by_default() => Mode::Prefill,
            None => Mode::Instruction,
        }
    }
}

/// Every gateway key (`[keys.NAME] env`) and client key override (`[limits.keys.NAME]
/// key_env`) whose variable is unset or empty: without it the key cannot be checked, so the
/// configuration cannot be used. (A provider's missing key is not one of these: its requests
/// fail and `/readyz` says so, the rest of the gateway works.)
pub fn missing_key_vars(config: &Config) -> Vec<String> {
    let unset = |var: &str| std::env::var_os(var).is_none_or(|v| v.is_empty());
    let gateway = config.keys.iter().filter_map(|(name, key)| {
        let var = key.env.as_deref()?;
        unset(var).then(|| format!("keys.{name}: environment variable {var} is not set"))
    });
    let limits = config.limits.keys.iter().filter_map(|(name, key)| {
        let var = key.key_env.as_deref()?;
        unset(var).then(|| format!("limits.keys.{name}: environment variable {var} is not set"))
    });
    gateway.chain(limits).collect()
}
