//! `[keys.NAME]`: one gateway key, by its SHA-256 or by the environment variable holding it,
//! with the models it may use and its own rate limits.

use std::num::{NonZeroU32, NonZeroU64};

use serde::Deserialize;

use crate::caps::OutputCaps;
use crate::limit::{Budget, Quotas};

/// Longest key name: names show in `/admin` and in logs.
pub const MAX_NAME_LEN: usize = 64;

/// `[keys.NAME]`. Exactly one of `sha256` and `env` names the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayKeyConfig {
    /// SHA-256 of the key, 64 hex digits (`streamgate keys new` prints it). Fit for
    /// high-entropy keys only: a hash of a guessable password is a guessable password.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Environment variable holding the key itself.
    #[serde(default)]
    pub env: Option<String>,
    /// Models and aliases this key may ask for, by the name the client sends; empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// See [`Quotas::requests_per_minute`]; unset: `[limits.per_key]`'s.
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
    /// See [`Quotas::tokens_per_minute`]; unset: `[limits.per_key]`'s.
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU64>,
    /// See [`Quotas::concurrent_streams`]; unset: `[limits.per_key]`'s.
    #[serde(default)]
    pub concurrent_streams: Option<NonZeroU32>,
    /// Tokens (input + output, as the providers report them) this key may use per UTC day;
    /// once spent, 429 until the day ends.
    #[serde(default)]
    pub budget_tokens_per_day: Option<NonZeroU64>,
    /// Tokens this key may use per UTC calendar month; once spent, 429 until the month ends.
    #[serde(default)]
    pub budget_tokens_per_month: Option<NonZeroU64>,
    /// Most output tokens a request of this key may ask for: a higher `max_tokens` (or
    /// `max_completion_tokens`) is lowered to it, and a request without one gets it. With
    /// the alias's own cap, the lower one applies.
    #[serde(default)]
    pub max_output_tokens: Option<NonZeroU32>,
    /// Most choices (`n`) a request of this key may ask for; more is a 400.
    #[serde(default)]
    pub max_n: Option<NonZeroU32>,
}

impl GatewayKeyConfig {
    /// The key's own rate limits (unset fields fall back to `[limits.per_key]`).
    pub fn quotas(&self) -> Quotas {
        Quotas {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            concurrent_streams: self.concurrent_streams,
        }
    }

    /// The key's output caps.
    pub fn output_caps(&self) -> OutputCaps {
        OutputCaps {
            max_output_tokens: self.max_output_tokens,
            max_n: self.max_n,
        }
    }

    /// The key's token budgets.
    pub fn budget(&self) -> Budget {
        Budget {
            per_day: self.budget_tokens_per_day.map(NonZeroU64::get),
            per_month: self.budget_tokens_per_month.map(NonZeroU64::get),
        }
    }

    /// Checks what serde cannot (for `check-config` and start-up).
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(format!(
                "keys.{name}: a key name is 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ ."
            ));
        }
        match (&self.sha256, &self.env) {
            (Some(_), Some(_)) | (None, None) => {
                Err(format!("keys.{name}: set exactly one of sha256 and env"))
            }
            (Some(hex), None) => match parse_sha256(hex) {
                Some(_) => Ok(()),
                None => Err(format!("keys.{name}.sha256 must be 64 hex digits")),
            },
            (None, Some(var)) if var.is_empty() => Err(format!("keys.{name}.env is empty")),
            (None, Some(_)) => Ok(()),
        }
    }
}

/// 64 hex digits as 32 bytes.
pub(super) fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}
