//! `[limits]`: the rate-limit configuration (defaults per client key and per model, with
//! overrides). Every key is optional; an absent limit is no limit.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};

use serde::Deserialize;

/// Most requests that may wait in the queue at once, by default.
pub const DEFAULT_MAX_QUEUED: usize = 1024;

/// The `[limits]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// How long a request over a limit may wait for room before it gets 429. 0 = refuse at once.
    #[serde(default)]
    pub queue_ms: u64,
    /// Most requests waiting at once (over all keys and models); beyond it, 429 at once.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Limits every client key gets, each key its own budget.
    #[serde(default)]
    pub per_key: Quotas,
    /// Limits every requested model gets, each model its own budget.
    #[serde(default)]
    pub per_model: Quotas,
    /// One client key's limits instead of `per_key`, by a name of your choice.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyQuotas>,
    /// One model's limits instead of `per_model`, by the model name clients ask for.
    #[serde(default)]
    pub models: BTreeMap<String, Quotas>,
}

/// Limits of one budget (a client key or a model). Absent = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Requests started per minute (a burst of this many, then one every 60/N s).
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens per minute: prompt estimate + `max_tokens` borrowed at the start, settled with
    /// the real usage at the end.
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Streams (requests) in flight at once.
    #[serde(default)]
    pub concurrent_streams: Option<NonZeroU32>,
}

/// `[limits.keys.NAME]`: one client key, named by the environment variable holding it (the
/// key never appears in the file). `NAME = "anonymous"` without `key_env` means the clients that
/// send no key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuotas {
    /// Environment variable holding the client key these limits apply to.
    #[serde(default)]
    pub key_env: Option<String>,
    /// See [`Quotas::requests_per_minute`].
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
    /// See [`Quotas::tokens_per_minute`].
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU64>,
    /// See [`Quotas::concurrent_streams`].
    #[serde(default)]
    pub concurrent_streams: Option<NonZeroU32>,
}

impl Quotas {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.concurrent_streams.is_none()
    }

    /// `self` where set, else `default`, field by field.
    pub fn or(self, default: Quotas) -> Quotas {
        Quotas {
            requests_per_minute: self.requests_per_minute.or(default.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(default.tokens_per_minute),
            concurrent_streams: self.concurrent_streams.or(default.concurrent_streams),
        }
    }
}

impl KeyQuotas {
    /// The limits alone.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            concurrent_streams: self.concurrent_streams,
        }
    }
}

impl LimitConfig {
    /// Checks what serde cannot: every key override names its key (for `check-config`).
    pub fn validate(&self) -> Result<(), String> {
        for (name, key) in &self.keys {
            match &key.key_env {
                Some(var) if var.is_empty() => {
                    return Err(format!("limits.keys.{name}.key_env is empty"));
                }
                None if name != "anonymous" => {
                    return Err(format!(
                        "limits.keys.{name} needs key_env (the variable holding that client key)"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Nothing is limited: the limiter admits everything at once.
    pub fn is_unlimited(&self) -> bool {
        self.per_key.is_unlimited()
            && self.per_model.is_unlimited()
            && self.keys.values().all(|k| k.quotas().is_unlimited())
            && self.models.values().all(Quotas::is_unlimited)
    }
}

fn default_max_queued() -> usize {
    DEFAULT_MAX_QUEUED
}
