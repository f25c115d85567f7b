//! Rate limits per client key and per model — requests per minute (`governor`), tokens per
//! minute (borrow → settle) and concurrent streams — plus [`UpstreamBackoff`], which remembers
//! when a provider said to slow down.
//!
//! # Configuration: `[limits]`
//!
//! ```toml
//! [limits]
//! queue_ms = 0            # wait up to this long for room instead of answering 429 (0 = never wait)
//! max_queued = 1024       # most requests waiting at once; beyond it 429 at once
//!
//! [limits.per_key]        # every client key, each its own budget
//! requests_per_minute = 60
//! tokens_per_minute = 200000
//! concurrent_streams = 8
//!
//! [limits.per_model]      # every requested model, each its own budget
//! requests_per_minute = 500
//!
//! [limits.keys.team_a]    # one client key instead of per_key (unset fields: per_key's)
//! key_env = "TEAM_A_KEY"  # the variable holding that client's key; the key is never in the file
//! requests_per_minute = 600
//!
//! [limits.keys.anonymous] # clients that send no key (no key_env)
//! concurrent_streams = 1
//!
//! [limits.models."smart"] # one model, by the name clients ask for, instead of per_model
//! tokens_per_minute = 1000000
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `queue_ms` | 0 | a request over a limit waits up to this long for room, then gets 429; one whose wait is known to be longer gets 429 at once |
//! | `max_queued` | 1024 | most requests waiting at once, over all keys and models |
//! | `requests_per_minute` | unlimited | requests started per minute: a burst of N, then one every 60/N s (GCRA) |
//! | `tokens_per_minute` | unlimited | a bucket of N tokens refilled at N/60 a second; a request borrows its prompt estimate + `max_tokens` at the start and settles with its real usage at the end (refund or extra debit); one larger than N passes when the bucket is full |
//! | `concurrent_streams` | unlimited | requests in flight at once |
//! | `keys.NAME.key_env` | required except for `anonymous` | environment variable holding the client key the override is for |
//!
//! The three limits can be set in `per_key`, `per_model`, `keys.NAME` and `models.NAME`; an
//! override's unset fields fall back to `per_key` / `per_model`. With gateway keys
//! (`[keys.NAME]`, [`crate::keys`]) a client is its authenticated key's name, with that key's
//! own limits and day/month token budgets ([`Budget`]); on an open gateway it is a keyed hash
//! of the credential it presents (`Authorization: Bearer` or `x-api-key`), and clients without
//! one share the `anonymous` budget. A model is the name the client asked for (alias,
//! `provider/model` or bare name). A request must fit both its key's and its model's budgets.
//!
//! Over a limit the answer is 429 in the door's dialect with `Retry-After` (whole seconds,
//! rounded up): OpenAI `{"error":{"type":"requests"|"tokens","code":"rate_limit_exceeded"}}`,
//! Anthropic `{"type":"error","error":{"type":"rate_limit_error"}}`.
//!
//! With `[state] backend = "redis"`, every limit and budget above is one across all the
//! instances sharing that Redis, not one per instance (docs/deployment.md).
//!
//! # Consistency
//!
//! A request's stream slots and token borrow, for its key and its model, are checked and taken
//! in one step under one lock (a small map each), with the requests-per-minute cells counted
//! last within that step: a request is admitted whole or takes nothing, except the
//! requests-per-minute cells it already counted (a queued request does not count them twice).
//! Nothing is held across an await. Room comes back (a permit dropped, tokens refunded) with a
//! signal that wakes the queue.
//!
//! # Reconfiguring
//!
//! A [`Limiter`] is the quotas of one configuration over state every configuration shares:
//! [`Limiter::reconfigured`] gives the quotas of a new configuration over the same stream
//! counts, token buckets, requests-per-minute cells (those of a quota value that remains) and
//! spend ledgers, so a reload neither frees a limited key nor forgets the streams running.
//!
//! # Across instances
//!
//! With `[state] backend = "redis"` ([`Limiter::sharing`]) the requests-per-minute,
//! tokens-per-minute and concurrent-streams budgets are enforced through Redis, one atomic
//! script per admission (`shared`, [`crate::state::limits`]), and so are the gateway keys'
//! day and month budgets; the local state above is the fall back while Redis does not
//! answer. docs/deployment.md, "Redis trouble: limits and breakers".

mod backoff;
mod budget;
mod client;
mod config;
mod headers;
mod limited;
mod rpm;
mod shared;
mod spend;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use providers::request::ChatRequest;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use backoff::UpstreamBackoff;
pub use client::ClientId;
pub use config::{DEFAULT_MAX_QUEUED, KeyQuotas, LimitConfig, Quotas};
pub use headers::{
    DEFAULT_429_BACKOFF, MAX_BACKOFF, backoff_from_headers, parse_go_duration, parse_rfc3339,
    retry_after,
};
pub use limited::{LimitKind, Limited, Scope};

use budget::{Budgets, Subject};
use rpm::Rpm;
use spend::SpendBook;
pub use spend::{Budget, Spent};
pub use stats::{ANONYMOUS_KEY, LimitStats, OTHER_KEY, RefusalCount};

/// The `Retry-After` hint for a full concurrency budget: streams end when they end.
pub const CONCURRENCY_RETRY_HINT: Duration = Duration::from_secs(1);

/// The tokens a request may use: its prompt estimate plus the most it may generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenEstimate {
    /// Prompt tokens (estimated, see [`crate::estimate`]).
    pub input: u64,
    /// `max_tokens`, or the default the gateway applies when the client gave none.
    pub max_output: u64,
}

impl TokenEstimate {
    /// An estimate from its parts.
    pub fn new(input: u64, max_output: u64) -> TokenEstimate {
        TokenEstimate { input, max_output }
    }

    /// The estimate for `request`; `default_max_tokens` when it sets no `max_tokens`.
    pub fn for_request(request: &ChatRequest, default_max_tokens: u32) -> TokenEstimate {
        TokenEstimate {
            input: crate::estimate::input_tokens(request),
            max_output: u64::from(request.max_tokens.unwrap_or(default_max_tokens)),
        }
    }

    /// What is borrowed from a tokens-per-minute budget.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.max_output)
    }
}

/// A key override could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("limits.keys.{name}: environment variable {var} is not set")]
pub struct MissingKeyVar {
    /// The override's name.
    pub name: String,
    /// The variable (never its value).
    pub var: String,
}

/// The gateway's rate limiter; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Limiter {
    /// What every configuration shares: the counts.
    inner: Arc<Inner>,
    /// This configuration's quotas.
    rules: Arc<Rules>,
    /// Gateway keys' token budgets per day and month, and what each spent.
    spend: Arc<SpendBook>,
    /// With `[state] backend = "redis"`: the quotas enforced across instances, the local
    /// state above being the fall back while Redis does not answer.
    shared: Option<Arc<shared::Shared>>,
}

/// The state of the limits, which outlives a reload.
#[derive(Debug, Default)]
struct Inner {
    /// How many requests wait now.
    queued: AtomicUsize,
    /// Token buckets and stream counts, one lock for both.
    budgets: Mutex<Budgets>,
    /// Signalled whenever room is given back (a stream ends, tokens are refunded), waking waiters.
    changed: Notify,
}

/// The quotas of one configuration.
#[derive(Debug)]
struct Rules {
    /// Longest wait for room (`queue_ms`).
    queue: Duration,
    /// `max_queued`.
    max_queued: usize,
    /// Defaults, and the resolved overrides (already merged with their default).
    per_key: Quotas,
    per_model: Quotas,
    keys: HashMap<ClientId, Quotas>,
    models: HashMap<String, Quotas>,
    /// No limit anywhere: acquire admits at once without touching any state.
    unlimited: bool,
    /// Requests per minute (governor, its own lock); its cells are shared, quota value by
    /// quota value, with the configurations before and after this one.
    rpm: Rpm,
    /// Refusals and queue waits, for the metrics, labelled by this configuration's key
    /// names (a reload starts them afresh: a counter reset to Prometheus).
    stats: LimitStats,
}

impl Rules {
    /// The quotas of `config` and of the gateway keys `gateway`, and the keys' budgets;
    /// requests-per-minute cells are taken over from `previous` where a quota value remains.
    fn build<'a>(
        config: &LimitConfig,
        env: impl Fn(&str) -> Option<String>,
        gateway: impl IntoIterator<Item = (&'a str, Quotas, Budget)>,
        previous: Option<&Rpm>,
    ) -> Result<(Rules, HashMap<ClientId, Budget>), MissingKeyVar> {
        let mut keys = HashMap::new();
        let mut budgets = HashMap::new();
        let mut named = Vec::new();
        for (name, quotas, budget) in gateway {
            let id = ClientId::gateway_key(name);
            keys.insert(id, quotas.or(config.per_key));
            budgets.insert(id, budget);
            named.push((id, name));
        }
        for (name, key) in &config.keys {
            let id = match &key.key_env {
                Some(var) => {
                    let value =
                        env(var)
                            .filter(|v| !v.is_empty())
                            .ok_or_else(|| MissingKeyVar {
                                name: name.clone(),
                                var: var.clone(),
                            })?;
                    ClientId::from_credential(Some(&value))
                }
                None => ClientId::ANONYMOUS,
            };
            keys.insert(id, key.quotas().or(config.per_key));
            named.push((id, name.as_str()));
        }
        let models: HashMap<String, Quotas> = config
            .models
            .iter()
            .map(|(name, q)| (name.clone(), q.or(config.per_model)))
            .collect();
        let all = [config.per_key, config.per_model]
            .into_iter()
            .chain(keys.values().copied())
            .chain(models.values().copied());
        let rpm = Rpm::new(all.filter_map(|q| q.requests_per_minute), previous);
        let unlimited = config.is_unlimited() && keys.values().all(Quotas::is_unlimited);
        let rules = Rules {
            queue: Duration::from_millis(config.queue_ms),
            max_queued: config.max_queued,
            per_key: config.per_key,
            per_model: config.per_model,
            keys,
            models,
            unlimited,
            rpm,
            stats: LimitStats::new(named),
        };
        Ok((rules, budgets))
    }

    fn key_quotas(&self, client: &ClientId) -> Quotas {
        self.keys.get(client).copied().unwrap_or(self.per_key)
    }

    fn model_quotas(&self, model: &str) -> Quotas {
        self.models.get(model).copied().unwrap_or(self.per_model)
    }
}

impl Limiter {
    /// A limiter for `config`, reading `keys.NAME.key_env` from the environment.
    pub fn new(config: &LimitConfig) -> Result<Limiter, MissingKeyVar> {
        Limiter::with_env(config, |var| std::env::var(var).ok())
    }

    /// A limiter for `config`, reading key variables through `env`.
    pub fn with_env(
        config: &LimitConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Limiter, MissingKeyVar> {
        Limiter::with_gateway_keys(config, env, std::iter::empty())
    }

    /// A limiter for `config` and for the gateway keys `gateway` (each key's name and its own
    /// limits, which fall back to `per_key` field by field, like `keys.NAME`).
    pub fn with_gateway_keys<'a>(
        config: &LimitConfig,
        env: impl Fn(&str) -> Option<String>,
        gateway: impl IntoIterator<Item = (&'a str, Quotas, Budget)>,
    ) -> Result<Limiter, MissingKeyVar> {
        let (rules, budgets) = Rules::build(config, env, gateway, None)?;
        Ok(Limiter {
            inner: Arc::default(),
            rules: Arc::new(rules),
            spend: Arc::new(SpendBook::new(budgets)),
            shared: None,
        })
    }

    /// This limiter enforcing its quotas across every instance sharing `redis` (and the
    /// configurations reloaded from it too); call inside a tokio runtime. Requests per
    /// minute, tokens per minute, concurrent streams and the gateway keys' day and month
    /// budgets are shared (docs/deployment.md).
    pub fn sharing(self, redis: Arc<crate::state::Redis>) -> Limiter {
        Limiter {
            shared: Some(shared::Shared::start(redis)),
            ..self
        }
    }

    /// The quotas of `config` (and of the gateway keys `gateway`) over this limiter's state:
    /// the streams running, the token buckets, the requests-per-minute cells of each quota
    /// value both configurations have, and what keys spent all carry on. A subject whose
    /// quota changed is judged by the new one from its next request. (Permits taken while
    /// nothing was limited hold no slot, so they do not count against quotas added later.)
    pub fn reconfigured<'a>(
        &self,
        config: &LimitConfig,
        env: impl Fn(&str) -> Option<String>,
        gateway: impl IntoIterator<Item = (&'a str, Quotas, Budget)>,
    ) -> Result<Limiter, MissingKeyVar> {
        let (rules, budgets) = Rules::build(config, env, gateway, Some(&self.rules.rpm))?;
        Ok(Limiter {
            inner: Arc::clone(&self.inner),
            rules: Arc::new(rules),
            spend: Arc::new(self.spend.with_budgets(budgets)),
            shared: self.shared.clone(),
        })
    }

    /// The limits that apply to `client`.
    pub fn key_quotas(&self, client: &ClientId) -> Quotas {
        self.rules.key_quotas(client)
    }

    /// The limits that apply to `model`.
    pub fn model_quotas(&self, model: &str) -> Quotas {
        self.rules.model_quotas(model)
    }

    /// What the gateway key `name` spent today and this month (UTC), and its budget: across
    /// instances when the limits are shared (this instance's count while Redis does not
    /// answer).
    pub async fn spent(&self, name: &str) -> (Spent, Budget) {
        let client = ClientId::gateway_key(name);
        let local = self.spend.spent(&client, std::time::SystemTime::now());
        match &self.shared {
            Some(shared) if shared.usable() => match shared.spent(&client).await {
                Ok(spent) => (spent, local.1),
                Err(_) => local,
            },
            _ => local,
        }
    }

    /// Admits one request of `client` for `model` that may use `estimate` tokens, waiting up to
    /// `queue_ms` for room; the [`Permit`] holds its stream slots and its token borrow. A
    /// gateway key whose day or month budget is spent is refused at once. Every refusal is
    /// counted in [`Limiter::stats`].
    pub async fn acquire(
        &self,
        client: &ClientId,
        model: &str,
        estimate: TokenEstimate,
    ) -> Result<Permit, Limited> {
        let result = self.admit(client, model, estimate).await;
        if let Err(limited) = &result {
            self.count_refusal(client, limited.limit);
        }
        result
    }

    /// Counts a refusal of `client` made outside [`Limiter::acquire`] (the upstream's own rate
    /// limit, answered by the engine).
    pub fn count_refusal(&self, client: &ClientId, limit: LimitKind) {
        self.rules.stats.refused(client, limit);
    }

    /// Refusals and queue waits so far, and how many requests wait now
    /// ([`Limiter::queued`]).
    pub fn stats(&self) -> &LimitStats {
        &self.rules.stats
    }

    /// Requests waiting in the admission queue now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    async fn admit(
        &self,
        client: &ClientId,
        model: &str,
        estimate: TokenEstimate,
    ) -> Result<Permit, Limited> {
        let amount = estimate.total();
        if !self.spend.counts(client) {
            return self.acquire_rates(client, model, estimate).await;
        }
        // Shared when Redis answers; else (or embedded) this instance's book.
        let mut shared = None;
        if let Some(s) = self.shared.as_ref().filter(|s| s.usable())
            && let Ok(admitted) = s
                .spend_admit(client, self.spend.budget(client), amount)
                .await
        {
            admitted?;
            shared = Some(Arc::clone(s));
        }
        if shared.is_none() {
            self.spend
                .admit(client, amount, std::time::SystemTime::now())?;
        }
        let charge = SpendCharge {
            book: Arc::clone(&self.spend),
            shared,
            client: *client,
            charged: amount,
        };
        match self.acquire_rates(client, model, estimate).await {
            Ok(mut permit) => {
                permit.spend = Some(charge);
                Ok(permit)
            }
            Err(limited) => {
                charge.adjust(-to_i64(amount));
                Err(limited)
            }
        }
    }

    async fn acquire_rates(
        &self,
        client: &ClientId,
        model: &str,
        estimate: TokenEstimate,
    ) -> Result<Permit, Limited> {
        let inner = &self.inner;
        let rules = &self.rules;
        if rules.unlimited {
            return Ok(Permit::free());
        }
        let start = Instant::now();
        let deadline = start + rules.queue;
        let request = Request {
            budgets: [
                (Subject::Key(*client), self.key_quotas(client)),
                (Subject::Model(model.to_owned()), self.model_quotas(model)),
            ],
            amount: estimate.total(),
        };
        let mut queued: Option<QueueSlot<'_>> = None;
        if let Some(shared) = &self.shared
            && let Some(result) = self
                .acquire_shared(shared, &request, start, deadline, &mut queued)
                .await
        {
            return result;
        }
        let mut counted = [false; 2];
        loop {
            // Registered before trying, so room given back in between is not missed.
            let mut notified = pin!(inner.changed.notified());
            notified.as_mut().enable();
            let limited = match self.try_once(&request, &mut counted) {
                Ok(mut permit) => {
                    permit.waited = Instant::now().saturating_duration_since(start);
                    return Ok(permit);
                }
                Err(limited) => limited,
            };
            let now = Instant::now();
            let until = match limited.limit {
                // Room comes back when some stream ends: wait for the signal until the deadline.
                LimitKind::ConcurrentStreams if now < deadline => deadline,
                LimitKind::ConcurrentStreams => return Err(limited),
                _ => now + limited.retry_after,
            };
            if until > deadline && limited.limit != LimitKind::ConcurrentStreams {
                return Err(limited);
            }
            if queued.is_none() {
                queued = Some(
                    QueueSlot::enter(&inner.queued, rules.max_queued, &rules.stats, start)
                        .ok_or(limited)?,
                );
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Admission through Redis, waiting up to `deadline` as [`Limiter::acquire_rates`] does
    /// locally; None when Redis does not answer (the caller falls back to the local limiter).
    async fn acquire_shared<'a>(
        &'a self,
        shared: &Arc<shared::Shared>,
        request: &Request,
        start: Instant,
        deadline: Instant,
        queued: &mut Option<QueueSlot<'a>>,
    ) -> Option<Result<Permit, Limited>> {
        loop {
            if !shared.usable() {
                return None;
            }
            let limited = match shared.admit(&request.budgets, request.amount).await {
                Err(_) => return None,
                Ok(Ok(hold)) => {
                    let mut permit = Permit::free();
                    permit.hold = Some(hold);
                    permit.borrowed = request.amount;
                    permit.charged = request.amount;
                    permit.waited = Instant::now().saturating_duration_since(start);
                    return Some(Ok(permit));
                }
                Ok(Err(limited)) => limited,
            };
            let now = Instant::now();
            let until = match limited.limit {
                // No signal crosses instances when a stream ends: try again shortly.
                LimitKind::ConcurrentStreams if now < deadline => {
                    (now + shared::STREAMS_POLL).min(deadline)
                }
                _ => now + limited.retry_after,
            };
            if until > deadline || now >= deadline {
                return Some(Err(limited));
            }
            if queued.is_none() {
                match QueueSlot::enter(
                    &self.inner.queued,
                    self.rules.max_queued,
                    &self.rules.stats,
                    start,
                ) {
                    Some(slot) => *queued = Some(slot),
                    None => return Some(Err(limited)),
                }
            }
            tokio::time::sleep_until(until).await;
        }
    }

    /// One attempt at every budget of `request`, all or nothing, under the budgets' lock (so
    /// nobody sees a half-taken request). Requests-per-minute cells are counted last, as they
    /// cannot be given back; those already counted in an earlier attempt are in `counted`.
    fn try_once(&self, request: &Request, counted: &mut [bool; 2]) -> Result<Permit, Limited> {
        let inner = &self.inner;
        let streams: Vec<(Subject, u32)> = request
            .budgets
            .iter()
            .filter_map(|(s, q)| q.concurrent_streams.map(|n| (s.clone(), n.get())))
            .collect();
        let tokens: Vec<(Subject, u64)> = request
            .budgets
            .iter()
            .filter_map(|(s, q)| q.tokens_per_minute.map(|n| (s.clone(), n.get())))
            .collect();
        let mut budgets = inner.lock();
        budgets.streams.check(&streams).map_err(|i| Limited {
            limit: LimitKind::ConcurrentStreams,
            retry_after: CONCURRENCY_RETRY_HINT,
            scope: streams[i].0.scope(),
        })?;
        let now = Instant::now();
        budgets
            .tokens
            .check(&tokens, request.amount, now)
            .map_err(|(i, wait)| Limited {
                limit: LimitKind::TokensPerMinute,
                retry_after: wait,
                scope: tokens[i].0.scope(),
            })?;
        for (i, (subject, quotas)) in request.budgets.iter().enumerate() {
            let Some(per_minute) = quotas.requests_per_minute else {
                continue;
            };
            if counted[i] {
                continue;
            }
            self.rules
                .rpm
                .check(subject, per_minute)
                .map_err(|wait| Limited {
                    limit: LimitKind::RequestsPerMinute,
                    retry_after: wait,
                    scope: subject.scope(),
                })?;
            counted[i] = true;
        }
        budgets.streams.take(&streams);
        budgets.tokens.take(&tokens, request.amount, now);
        drop(budgets);
        Ok(Permit {
            inner: Some(Arc::clone(inner)),
            streams: streams.into_iter().map(|(s, _)| s).collect(),
            tokens,
            borrowed: request.amount,
            charged: request.amount,
            waited: Duration::ZERO,
            spend: None,
            hold: None,
        })
    }

    #[cfg(test)]
    fn token_level(&self, subject: &Subject, per_minute: u64) -> f64 {
        self.inner
            .lock()
            .tokens
            .level(subject, per_minute, Instant::now())
    }

    #[cfg(test)]
    fn in_flight(&self, subject: &Subject) -> u32 {
        self.inner.lock().streams.in_flight(subject)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Budgets> {
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's budgets: its key's and its model's.
struct Request {
    budgets: [(Subject, Quotas); 2],
    amount: u64,
}

impl Subject {
    fn scope(&self) -> Scope {
        match self {
            Subject::Key(_) => Scope::Key,
            Subject::Model(_) => Scope::Model,
        }
    }
}

/// A place in the bounded queue, given back on drop, when the request's time there is
/// counted (whether it was admitted or refused at the end).
struct QueueSlot<'a> {
    queued: &'a AtomicUsize,
    stats: &'a LimitStats,
    /// When the request arrived (its first try is immediate: the wait starts there).
    since: Instant,
}

impl<'a> QueueSlot<'a> {
    fn enter(
        queued: &'a AtomicUsize,
        max_queued: usize,
        stats: &'a LimitStats,
        since: Instant,
    ) -> Option<QueueSlot<'a>> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_queued).then_some(n + 1)
            })
            .ok()
            .map(|_| QueueSlot {
                queued,
                stats,
                since,
            })
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.stats
            .waited(Instant::now().saturating_duration_since(self.since));
    }
}

/// An admitted request. Dropping it frees its stream slots; [`Permit::settle`] replaces its
/// token borrow by the real usage. Dropped without settling, the borrow stays spent (the
/// conservative choice when usage is unknown).
#[derive(Debug)]
#[must_use = "dropping a Permit ends the request's stream slot"]
pub struct Permit {
    inner: Option<Arc<Inner>>,
    streams: Vec<Subject>,
    tokens: Vec<(Subject, u64)>,
    borrowed: u64,
    charged: u64,
    waited: Duration,
    /// The charge against a gateway key's day and month budgets, settled with the permit.
    spend: Option<SpendCharge>,
    /// What the request holds in Redis when the limits are shared (its stream slots, given
    /// back on drop, and its token borrow).
    hold: Option<shared::Hold>,
}

/// A request's charge against its key's day and month budgets: in Redis when it was admitted
/// there, else in this instance's [`SpendBook`].
#[derive(Debug)]
struct SpendCharge {
    book: Arc<SpendBook>,
    shared: Option<Arc<shared::Shared>>,
    client: ClientId,
    charged: u64,
}

impl SpendCharge {
    /// Adds `delta` (negative: a refund) where the charge was made.
    fn adjust(&self, delta: i64) {
        match &self.shared {
            Some(shared) => shared.spend_adjust(self.client, delta),
            None => self
                .book
                .adjust(&self.client, delta, std::time::SystemTime::now()),
        }
    }
}

impl Permit {
    /// A permit that holds nothing (no limits configured).
    fn free() -> Permit {
        Permit {
            inner: None,
            streams: Vec::new(),
            tokens: Vec::new(),
            borrowed: 0,
            charged: 0,
            waited: Duration::ZERO,
            spend: None,
            hold: None,
        }
    }

    /// Charges `actual_total_tokens` (input + output as the provider reported them) instead of
    /// what is charged now: the difference is refunded or debited. May be called again with a
    /// newer total; each call replaces the previous charge.
    pub fn settle(&mut self, actual_total_tokens: u64) {
        if let Some(spend) = &mut self.spend {
            let delta = to_i64(actual_total_tokens) - to_i64(spend.charged);
            spend.charged = actual_total_tokens;
            spend.adjust(delta);
        }
        let delta = to_i64(actual_total_tokens) - to_i64(self.charged);
        self.charged = actual_total_tokens;
        if let Some(hold) = &self.hold {
            hold.settle(delta);
        }
        let Some(inner) = &self.inner else { return };
        if self.tokens.is_empty() || delta == 0 {
            return;
        }
        inner
            .lock()
            .tokens
            .adjust(&self.tokens, delta, Instant::now());
        if delta < 0 {
            inner.changed.notify_waiters();
        }
    }

    /// Tokens borrowed at the start.
    pub fn borrowed(&self) -> u64 {
        self.borrowed
    }

    /// Tokens charged now (the borrow, or the last settled total).
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// How long the request waited in the queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner
            && !self.streams.is_empty()
        {
            inner.lock().streams.release(&self.streams);
            inner.changed.notify_waiters();
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
