//! [`Limited`]: a refusal, and how it looks to a client (429 bodies, `Retry-After`, the
//! `rate_limited` Agent Event).

use std::fmt;
use std::time::Duration;

use providers::error::ErrorReport;
use providers::{AgentEvent, Dialect};
use serde_json::Value;

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `requests_per_minute`.
    RequestsPerMinute,
    /// `tokens_per_minute`.
    TokensPerMinute,
    /// `concurrent_streams`.
    ConcurrentStreams,
    /// The upstream said to slow down ([`super::UpstreamBackoff`]).
    Upstream,
    /// A gateway key's `budget_tokens_per_day` is spent (until the next UTC day).
    TokensPerDay,
    /// A gateway key's `budget_tokens_per_month` is spent (until the next UTC month).
    TokensPerMonth,
}

impl LimitKind {
    /// Every kind, in declaration order (the metrics' label values).
    pub const ALL: [LimitKind; 6] = [
        LimitKind::RequestsPerMinute,
        LimitKind::TokensPerMinute,
        LimitKind::ConcurrentStreams,
        LimitKind::Upstream,
        LimitKind::TokensPerDay,
        LimitKind::TokensPerMonth,
    ];

    /// This kind's position in [`LimitKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The config key of this limit (`upstream` for the provider's own).
    pub fn config_key(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::ConcurrentStreams => "concurrent_streams",
            LimitKind::Upstream => "upstream",
            LimitKind::TokensPerDay => "budget_tokens_per_day",
            LimitKind::TokensPerMonth => "budget_tokens_per_month",
        }
    }

    /// The `limit` field of the `rate_limited` event, as docs/protocol.md names it.
    pub fn event_name(self) -> &'static str {
        match self {
            LimitKind::ConcurrentStreams => "concurrency",
            other => other.config_key(),
        }
    }

    fn words(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests per minute",
            LimitKind::TokensPerMinute => "tokens per minute",
            LimitKind::ConcurrentStreams => "concurrent streams",
            LimitKind::Upstream => "the upstream provider's rate limit",
            LimitKind::TokensPerDay => "the token budget of the day (UTC)",
            LimitKind::TokensPerMonth => "the token budget of the month (UTC)",
        }
    }
}

/// Whose budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client key's.
    Key,
    /// The requested model's.
    Model,
    /// The upstream route's (provider-reported).
    Route,
}

impl Scope {
    fn words(self) -> &'static str {
        match self {
            Scope::Key => "this client key",
            Scope::Model => "this model",
            Scope::Route => "this route",
        }
    }
}

/// A request over a limit: which, whose, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit that refused.
    pub limit: LimitKind,
    /// When a retry may succeed (for `concurrent_streams`, a hint: streams end when they end).
    pub retry_after: Duration,
    /// Whose budget.
    pub scope: Scope,
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rate limit reached: {} for {}. Please try again in {}.",
            self.limit.words(),
            self.scope.words(),
            format_wait(self.retry_after)
        )
    }
}

impl std::error::Error for Limited {}

impl Limited {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        d.as_secs()
            .saturating_add(u64::from(d.subsec_nanos() > 0))
            .max(1)
    }

    /// `retry_after` in milliseconds, rounded up.
    pub fn retry_after_ms(&self) -> u64 {
        let ms = self.retry_after.as_millis()
            + u128::from(!self.retry_after.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// The `rate_limited` Agent Event.
    pub fn to_event(&self) -> AgentEvent {
        AgentEvent::RateLimited {
            limit: self.limit.event_name().to_owned(),
            retry_after_ms: self.retry_after_ms(),
        }
    }

    /// The 429 described for any dialect. OpenAI's `type` is `tokens` for token limits,
    /// `requests` otherwise; a spent budget is OpenAI's `insufficient_quota`, which its SDKs
    /// do not retry.
    pub fn report(&self) -> ErrorReport {
        let (ty, code) = match self.limit {
            LimitKind::TokensPerMinute => ("tokens", "rate_limit_exceeded"),
            LimitKind::TokensPerDay | LimitKind::TokensPerMonth => {
                ("insufficient_quota", "insufficient_quota")
            }
            _ => ("requests", "rate_limit_exceeded"),
        };
        ErrorReport {
            kind: ty.to_owned(),
            code: Some(code.to_owned()),
            ..ErrorReport::new(429, "rate_limit_error", self.to_string())
        }
    }

    /// The 429 body in `door`'s dialect.
    pub fn body(&self, door: Dialect) -> Value {
        door.wire().error_body(&self.report())
    }
}

/// `1.5s`, `2m0s`: enough precision for a human.
fn format_wait(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
