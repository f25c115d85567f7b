//! `[log]`: what the gateway logs and how.
//!
//! # Configuration: `[log]`
//!
//! ```toml
//! [log]
//! format = "text"   # text (one human-readable line per event) | json (one JSON object a line)
//! level = "info"    # a tracing filter: "info", "debug", "info,streamgate::engine=debug"...
//! access = true     # one line per finished request (target streamgate::access)
//! ```
//!
//! `RUST_LOG`, when set, replaces `level` (same syntax: `RUST_LOG=debug`,
//! `RUST_LOG=info,streamgate::access=off`). A `level` that does not parse stops the gateway at
//! start, as any other configuration error. Logs go to stderr. The access line and its fields:
//! docs/observability.md.

use serde::Deserialize;

/// `[log]`: format, level and access log.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// How each line is written (default text).
    #[serde(default)]
    pub format: LogFormat,
    /// The tracing filter when `RUST_LOG` is not set (default `info`).
    #[serde(default = "default_level")]
    pub level: String,
    /// One access line per finished request, target `streamgate::access` (default on).
    #[serde(default = "default_access")]
    pub access: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// tracing-subscriber's human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, `span`, `spans`.
    Json,
}

fn default_level() -> String {
    "info".to_owned()
}

fn default_access() -> bool {
    true
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
            access: default_access(),
        }
    }
}
