//! The gateway's TOML configuration: providers, model aliases, server settings.
//!
//! Every struct denies unknown keys, so a typo is an error at start-up rather than a silently
//! ignored setting. Keys are documented in docs/configuration.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use providers::Dialect;
use serde::Deserialize;

mod log;
pub mod reload;
// Defined with the client (`crate::state`), a low layer the limiter uses too.
pub use crate::state::config as state;
mod streams;
pub mod telemetry;

pub use log::{LogConfig, LogFormat};
pub use streams::{FsyncMode, JournalSettings, StreamsConfig, WebSocketSettings};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstream providers by name. Empty in the file means the two public defaults.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model aliases clients may ask for.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Defaults used when translating requests between dialects.
    #[serde(default)]
    pub translation: TranslationConfig,
    /// Retries, failover, continuation and circuit breakers (the original design's block).
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// Rate limits per client key and per model.
    #[serde(default)]
    pub limits: crate::limit::LimitConfig,
    /// `[streams]`: detached streams, resume, journal, WebSocket door.
    #[serde(default)]
    pub streams: StreamsConfig,
    /// `[keys.NAME]`: gateway keys. None configured = an open gateway.
    #[serde(default)]
    pub keys: BTreeMap<String, crate::keys::GatewayKeyConfig>,
    /// `[passthrough]`: which provider gets the paths the gateway does not answer itself.
    #[serde(default)]
    pub passthrough: PassthroughConfig,
    /// `[telemetry]`: what the gateway exports about itself (traces: `[telemetry.otlp]`).
    #[serde(default)]
    pub telemetry: telemetry::TelemetryConfig,
    /// `[log]`: log format, level and the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// `[state]`: the embedded state of one process, or Redis shared by several instances.
    #[serde(default)]
    pub state: state::StateConfig,
}

/// `[passthrough]`: for each door, where its other paths (`/v1/embeddings`, `/v1/files`,
/// `/v1/messages/batches`, ...) are forwarded, keyed by the door's dialect name (`openai`,
/// `anthropic`). See docs/configuration.md, "Pass-through".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct PassthroughConfig {
    doors: BTreeMap<Dialect, PassthroughTarget>,
}

/// One door's pass-through: a provider's name, `true` (the default: the first provider of
/// the door's dialect by name, else of a dialect sharing its platform, such as
/// `openai-responses` for `openai`) or `false` (off: those paths are a 404).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PassthroughTarget {
    /// On (`true`) or off (`false`).
    Enabled(bool),
    /// This provider.
    Provider(String),
}

/// A door without a `[passthrough]` line.
const PASS_BY_DEFAULT: PassthroughTarget = PassthroughTarget::Enabled(true);

impl PassthroughConfig {
    /// The target of the door that `dialect`'s clients use for other paths (its platform's:
    /// Responses clients share OpenAI's).
    pub fn target(&self, dialect: Dialect) -> &PassthroughTarget {
        self.doors
            .get(&dialect.wire().platform())
            .unwrap_or(&PASS_BY_DEFAULT)
    }

    /// The provider forwarded to at the door of `dialect`, None when that door's pass-through
    /// is off or no provider speaks a dialect of its platform.
    pub fn provider<'a>(
        &'a self,
        providers: &'a BTreeMap<String, ProviderConfig>,
        dialect: Dialect,
    ) -> Option<(&'a str, &'a ProviderConfig)> {
        let platform = dialect.wire().platform();
        let found = match self.target(dialect) {
            PassthroughTarget::Enabled(false) => None,
            PassthroughTarget::Enabled(true) => providers
                .iter()
                .find(|(_, p)| p.dialect == platform)
                .or_else(|| {
                    providers
                        .iter()
                        .find(|(_, p)| p.dialect.wire().platform() == platform)
                }),
            PassthroughTarget::Provider(name) => providers.get_key_value(name),
        };
        found.map(|(name, p)| (name.as_str(), p))
    }

    fn validate(&self, providers: &BTreeMap<String, ProviderConfig>) -> Result<(), String> {
        for (door, target) in &self.doors {
            let platform = door.wire().platform();
            if *door != platform {
                return Err(format!(
                    "passthrough.{door}: {door} clients use the {platform} door's pass-through; \
                     write passthrough.{platform}"
                ));
            }
            if let PassthroughTarget::Provider(name) = target {
                match providers.get(name) {
                    None => {
                        return Err(format!(
                            "passthrough.{door} names unknown provider {name:?}"
                        ));
                    }
                    Some(p) if p.dialect.wire().platform() != platform => {
                        return Err(format!(
                            "passthrough.{door}: provider {name:?} speaks {}, not {door}",
                            p.dialect
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// `[streaming]`: keeping answers alive. Keys are camelCase, as the original design wrote them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// Upstream retries and the failover budget.
    #[serde(default, rename = "retryPolicy")]
    pub retry_policy: RetryPolicyConfig,
    /// Client reconnects (the reference client, `streamgate tail`).
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Per-route circuit breakers.
    #[serde(default, rename = "circuitBreaker")]
    pub circuit_breaker: BreakerConfigToml,
    /// The original design's `bufferSize`: events of one stream queued for a WebSocket
    /// connection. Sets `streams.websocket.buffer_events` (see [`StreamingConfig::apply`]).
    #[serde(default, rename = "bufferSize")]
    pub buffer_size: Option<usize>,
    /// The original design's `chunkSize`: the WebSocket shard size in bytes. Sets
    /// `streams.websocket.chunkSize`.
    #[serde(default, rename = "chunkSize")]
    pub chunk_size: Option<usize>,
    /// The original design's `compression`: the WebSocket compression modes offered. Sets
    /// `streams.websocket.compression`.
    #[serde(default)]
    pub compression: Option<crate::ws::CompressionOffer>,
}

/// Largest `bufferSize`: a queue per stream and connection may hold this many events.
pub const MAX_BUFFER_SIZE: usize = 1 << 20;

impl StreamingConfig {
    /// Writes the design's WebSocket keys into `websocket`, the settings the door reads. A key
    /// set in both places must agree: `websocket_keys` are the `[streams.websocket]` keys the
    /// file wrote itself.
    fn apply(&self, websocket: &mut WebSocketSettings, websocket_keys: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        let clash = |key: &str, native: &str| {
            format!(
                "streaming.{key} and streams.websocket.{native} are both set and differ; keep one"
            )
        };
        if let Some(size) = self.buffer_size {
            if !(1..=MAX_BUFFER_SIZE).contains(&size) {
                problems.push(format!(
                    "streaming.bufferSize must be 1 to {MAX_BUFFER_SIZE} events"
                ));
            } else if websocket_keys.contains(&"buffer_events") && websocket.buffer_events != size {
                problems.push(clash("bufferSize", "buffer_events"));
            } else {
                websocket.buffer_events = size;
            }
        }
        if let Some(size) = self.chunk_size {
            if size < crate::ws::MIN_CHUNK_SIZE {
                problems.push(format!(
                    "streaming.chunkSize must be at least {} bytes",
                    crate::ws::MIN_CHUNK_SIZE
                ));
            } else if websocket_keys.contains(&"chunkSize") && websocket.chunk_size != size {
                problems.push(clash("chunkSize", "chunkSize"));
            } else {
                websocket.chunk_size = size;
            }
        }
        if let Some(offer) = &self.compression {
            if websocket_keys.contains(&"compression") && websocket.compression != *offer {
                problems.push(clash("compression", "compression"));
            } else {
                websocket.compression = offer.clone();
            }
        }
        problems
    }
}

/// `[streaming.retryPolicy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryPolicyConfig {
    /// Attempts on one route before failing over, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff in milliseconds; each next one doubles.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Largest backoff in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Each backoff is spread by up to this fraction either way.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Budget for one request's retries, waits (Retry-After included) and failovers, in
    /// milliseconds: past it the client gets the last error.
    #[serde(default = "default_time_to_fallback_ms")]
    pub time_to_fallback_ms: u64,
    /// Longest one attempt may stream, in milliseconds (0 = no limit).
    #[serde(default)]
    pub max_duration_ms: u64,
    /// Hold a tool call's events until the call is whole, so that a break never leaves a
    /// client with half its arguments (the continuation produces the call whole).
    #[serde(default = "default_true")]
    pub hold_tool_calls: bool,
    /// An attempt that has produced no content this many milliseconds after it was sent is
    /// raced by the next route of its alias, started in parallel; the first to produce
    /// content answers (0 = never). Overridden per alias by `[models.ALIAS] hedge_after_ms`.
    #[serde(default = "default_hedge_after_ms")]
    pub hedge_after_ms: u64,
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        RetryPolicyConfig {
            max_attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            jitter: default_jitter(),
            time_to_fallback_ms: default_time_to_fallback_ms(),
            max_duration_ms: 0,
            hold_tool_calls: true,
            hedge_after_ms: default_hedge_after_ms(),
        }
    }
}

/// `[streaming.reconnect]`: how the reference client reconnects to a stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReconnectConfig {
    /// Reconnect attempts before giving up.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First wait in milliseconds.
    #[serde(default = "default_backoff_ms")]
    pub initial_backoff: u64,
    /// Largest wait in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff: u64,
    /// Spread of each wait, as a fraction either way.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_attempts: default_attempts(),
            initial_backoff: default_backoff_ms(),
            max_backoff: default_max_backoff_ms(),
            jitter: default_jitter(),
        }
    }
}

/// `[streaming.circuitBreaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakerConfigToml {
    /// Consecutive failures of a route that open its breaker.
    #[serde(default = "default_breaker_failures")]
    pub failure_threshold: u32,
    /// Milliseconds an open breaker skips its route before one probe.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for BreakerConfigToml {
    fn default() -> Self {
        BreakerConfigToml {
            failure_threshold: default_breaker_failures(),
            cooldown_ms: default_breaker_cooldown_ms(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5000
}
fn default_jitter() -> f64 {
    0.1
}
fn default_time_to_fallback_ms() -> u64 {
    60_000
}
/// Ten seconds: a first token slower than that is rare for a healthy chat model (it is
/// normal for reasoning models that do not stream their reasoning: raise it for their
/// aliases), and a fallback's first token usually comes within a few seconds, so an answer
/// stalled 20 s upstream starts within about 15 s.
fn default_hedge_after_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    10_000
}

/// How a provider is asked to continue a broken answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContinuationMode {
    /// The partial answer as the final assistant message (Anthropic's native prefill).
    Prefill,
    /// The partial answer, then a user turn asking to continue it.
    Instruction,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (413 above, told by `Content-Length` before
    /// the body is read, or as soon as a chunked body passes it). 8 MiB by default: see
    /// docs/configuration.md for what real clients send.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most JSON values (scalars, arrays, objects, object keys) a request body may hold (413
    /// above). Counted before the body is built into a tree, whose memory follows the number
    /// of values more than the bytes: 30 MB of `[0,0,...]` would build a 500 MB tree.
    #[serde(default = "default_max_body_json_values")]
    pub max_body_json_values: usize,
    /// Allow a non-loopback `listen` (or `admin_listen`) without gateway keys: anyone who
    /// reaches the port spends the provider keys. Off by default; `--allow-open` sets it too.
    #[serde(default)]
    pub open: bool,
    /// Environment variable holding the admin key, which `/admin/*` then requires as
    /// `Authorization: Bearer`. Separate from gateway keys.
    #[serde(default)]
    pub admin_key_env: Option<String>,
    /// The admin key as the hex SHA-256 of the key (instead of `admin_key_env`).
    #[serde(default)]
    pub admin_key_sha256: Option<String>,
    /// A listener of its own for `/admin/*` (loopback only unless `open`); the main
    /// listener then serves no admin route.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// A listener of its own serving only `GET /metrics`, without a key (for a Prometheus
    /// scraper; bind it where only the scraper reaches). None by default: `/metrics` is then
    /// served with the admin routes (docs/observability.md).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the gateway measures itself for `GET /metrics` (the request path's metrics
    /// and the subsystems' collectors). Off: nothing is measured and `/metrics` is 404
    /// (docs/performance.md measures what it costs).
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// `[server.tls]`: serve HTTPS and WSS (on every listener) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Open client connections at once, on each listener (WebSocket ones included); one more
    /// is answered `503` with `Retry-After` and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64); one more is
    /// answered `429` and closed. Behind a reverse proxy every client has the proxy's address:
    /// raise it to `max_connections` there.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// The whole head of a request (and before the first one, the TLS handshake) must arrive
    /// within this, counted from the connection's opening or from the first byte of the head.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight and nothing arriving is closed after this.
    #[serde(default = "default_keep_alive_idle_ms")]
    pub keep_alive_idle_ms: u64,
    /// The whole request body must arrive within this, counted from the end of its head
    /// (`408` in the door's dialect after it).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long running streams get to finish once the listeners stop
    /// accepting. After it, the OpenAI, Responses and Anthropic doors end what still runs with
    /// an error in their dialect (a `503` for an answer not yet begun), and the native doors'
    /// streams are left resumable in the journal. 25 s by default: under Kubernetes'
    /// default `terminationGracePeriodSeconds` of 30 s, which leaves 5 s to write those ends
    /// and sync the journal before the SIGKILL (docs/operations.md). 0 ends them at once;
    /// at most one hour.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

/// `[server.tls]`: the certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ServerConfig {
    /// A zero cap or timeout would refuse or cut every connection: refused at start-up.
    fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("keep_alive_idle_ms", self.keep_alive_idle_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        if let Some((key, _)) = zero {
            return Err(format!("server.{key} must be at least 1"));
        }
        if self.shutdown_grace_ms > MAX_SHUTDOWN_GRACE_MS {
            return Err(format!(
                "server.shutdown_grace_ms must be at most {MAX_SHUTDOWN_GRACE_MS} (one hour)"
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_body_json_values: default_max_body_json_values(),
            open: false,
            admin_key_env: None,
            admin_key_sha256: None,
            admin_listen: None,
            metrics_listen: None,
            metrics: true,
            tls: None,
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            keep_alive_idle_ms: default_keep_alive_idle_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

/// `[providers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire dialect the provider speaks.
    pub dialect: Dialect,
    /// Base URL; the dialect's path (`/chat/completions`, `/v1/messages`) is appended.
    pub base_url: String,
    /// Environment variable holding the provider key. The key itself never appears in
    /// config, logs or errors.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Let a client's own credential for this provider's dialect through (its
    /// `Authorization: Bearer` at the OpenAI door, `x-api-key` at the Anthropic door) instead
    /// of the configured key. A credential is never sent to a provider of the other dialect.
    #[serde(default)]
    pub pass_through_client_key: bool,
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time from sending the request to the first SSE event (not just response headers).
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two chunks once the stream has started.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// OpenAI `OpenAI-Organization` header.
    #[serde(default)]
    pub organization: Option<String>,
    /// OpenAI `OpenAI-Project` header.
    #[serde(default)]
    pub project: Option<String>,
    /// Anthropic `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// How to ask this provider to continue a broken answer; default `prefill` for Anthropic,
    /// `instruction` for OpenAI-dialect servers. A rejected prefill switches to `instruction`.
    #[serde(default)]
    pub continuation: Option<ContinuationMode>,
    /// Whether this provider's models reason (take `reasoning_effort` / `thinking`); unset:
    /// by model family (`o1`/`o3`/`o4`/`gpt-5`/Claude 3.7 and 4+ do, `gpt-4o`/`gpt-4.1`/
    /// `gpt-3.5`/Claude 3.5 do not). An alias's own `reasoning` wins over this.
    #[serde(default)]
    pub reasoning: Option<bool>,
}

/// `[models.ALIAS]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Primary route, `provider/model`.
    pub route: String,
    /// Routes tried in order when the primary fails, each `provider/model`.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Whether the models of this alias's routes reason; unset: the provider's `reasoning`,
    /// else by model family.
    #[serde(default)]
    pub reasoning: Option<bool>,
    /// This alias's `[streaming.retryPolicy] hedgeAfterMs` (0 = never hedge it).
    #[serde(default)]
    pub hedge_after_ms: Option<u64>,
    /// Most output tokens a request for this alias may ask for: a higher `max_tokens` (or
    /// `max_completion_tokens`) is lowered to it, and a request without one gets it. With a
    /// key's own cap, the lower one applies.
    #[serde(default)]
    pub max_output_tokens: Option<NonZeroU32>,
    /// Most choices (`n`) a request for this alias may ask for; more is a 400.
    #[serde(default)]
    pub max_n: Option<NonZeroU32>,
}

impl ModelConfig {
    /// The alias's output caps.
    pub fn output_caps(&self) -> crate::caps::OutputCaps {
        crate::caps::OutputCaps {
            max_output_tokens: self.max_output_tokens,
            max_n: self.max_n,
        }
    }
}

/// `[translation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslationConfig {
    /// `max_tokens` sent to Anthropic when an OpenAI client gave none (Anthropic requires it).
    #[serde(default = "default_max_tokens")]
    pub anthropic_default_max_tokens: u32,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        TranslationConfig {
            anthropic_default_max_tokens: default_max_tokens(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown keys.
    #[error("config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What toml said (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// The file parsed but is inconsistent: every problem found, not just the first, so one
    /// edit can fix them all (a reload answer lists them).
    #[error("config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Each problem on its own: the list of an [`ConfigError::Invalid`], else the one error.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(all) => all.clone(),
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Loads `path`, or the built-in default when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (config, problems) = match path {
            None => return Ok(Config::default()),
            Some(path) => Config::load_unchecked(path)?,
        };
        match problems.is_empty() {
            true => Ok(config),
            false => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Reads and parses `path`: the configuration and every inconsistency in it (for a
    /// caller that adds checks of its own and reports them all together, as a reload does).
    /// Errors only when the file cannot be read or is not a configuration at all.
    pub fn load_unchecked(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse_unchecked(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: shown,
                source,
            },
            other => other,
        })
    }

    /// Parses TOML text, fills defaults and checks references.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let (config, problems) = Config::parse_unchecked(text)?;
        match problems.is_empty() {
            true => Ok(config),
            false => Err(ConfigError::Invalid(problems)),
        }
    }

    fn parse_unchecked(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            source: Box::new(e),
        })?;
        if config.providers.is_empty() {
            config.providers = default_providers();
        }
        let websocket_keys = websocket_keys(text);
        let keys: Vec<&str> = websocket_keys.iter().map(String::as_str).collect();
        let mut problems = config.streaming.apply(&mut config.streams.websocket, &keys);
        problems.extend(config.problems());
        Ok((config, problems))
    }

    /// Whether gateway keys are configured (then every door asks for one).
    pub fn has_gateway_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Every inconsistency of the parsed file, each checked independently so that all are
    /// reported at once.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.server.validate().err());
        problems.extend(self.limits.validate().err());
        problems.extend(self.state.problems());
        for (name, key) in &self.keys {
            problems.extend(key.validate(name).err());
        }
        problems.extend(self.passthrough.validate(&self.providers).err());
        for (alias, model) in &self.models {
            for route in std::iter::once(&model.route).chain(&model.fallbacks) {
                let Some((provider, upstream)) = route.split_once('/') else {
                    problems.push(format!(
                        "models.{alias}: route {route:?} must be written provider/model"
                    ));
                    continue;
                };
                if upstream.is_empty() || !self.providers.contains_key(provider) {
                    problems.push(format!(
                        "models.{alias}: route {route:?} names unknown provider {provider:?}"
                    ));
                }
            }
        }
        if let Some(otlp) = &self.telemetry.otlp {
            problems.extend(otlp.validate().err().map(|e| e.to_string()));
        }
        for (name, p) in &self.providers {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                problems.push(format!(
                    "providers.{name}.base_url must start with http:// or https://"
                ));
            }
        }
        problems
    }
}

/// The keys `[streams.websocket]` sets in `text` (which parsed already).
fn websocket_keys(text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(text).unwrap_or_default();
    table
        .get("streams")
        .and_then(|s| s.get("websocket"))
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            providers: default_providers(),
            models: BTreeMap::new(),
            translation: TranslationConfig::default(),
            streaming: StreamingConfig::default(),
            limits: crate::limit::LimitConfig::default(),
            streams: StreamsConfig::default(),
            keys: BTreeMap::new(),
            passthrough: PassthroughConfig::default(),
            telemetry: telemetry::TelemetryConfig::default(),
            log: LogConfig::default(),
            state: state::StateConfig::default(),
        }
    }
}

/// OpenAI and Anthropic at their public URLs, keys from the usual variables.
pub fn default_providers() -> BTreeMap<String, ProviderConfig> {
    let mut map = BTreeMap::new();
    map.insert(
        "openai".to_owned(),
        ProviderConfig::new(
            Dialect::OpenAi,
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
        ),
    );
    map.insert(
        "anthropic".to_owned(),
        ProviderConfig::new(
            Dialect::Anthropic,
            "https://api.anthropic.com",
            "ANTHROPIC_API_KEY",
        ),
    );
    map
}

impl ProviderConfig {
    /// Whether the gateway can call this provider with a key: its key variable is set (or it
    /// has none, as local servers do), or clients bring their own (`pass_through_client_key`).
    pub fn key_available(&self) -> bool {
        self.pass_through_client_key
            || self
                .api_key_env
                .as_ref()
                .is_none_or(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
    }

    /// A provider with default timeouts and headers.
    pub fn new(dialect: Dialect, base_url: &str, api_key_env: &str) -> Self {
        ProviderConfig {
            dialect,
            base_url: base_url.to_owned(),
            api_key_env: Some(api_key_env.to_owned()),
            pass_through_client_key: false,
            connect_timeout_ms: default_connect_timeout_ms(),
            first_byte_timeout_ms: default_first_byte_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            organization: None,
            project: None,
            anthropic_version: default_anthropic_version(),
            continuation: None,
            reasoning: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_body_json_values() -> usize {
    1_000_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_address() -> usize {
    1_000
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_keep_alive_idle_ms() -> u64 {
    60_000
}
fn default_body_read_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_grace_ms() -> u64 {
    25_000
}
/// A drain longer than an hour is a typo, and an unbounded one would overflow the deadline.
const MAX_SHUTDOWN_GRACE_MS: u64 = 3_600_000;
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_first_byte_timeout_ms() -> u64 {
    120_000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}
fn default_max_tokens() -> u32 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_grace_defaults_to_25_s_and_is_bounded() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.shutdown_grace_ms, 25_000);
        for (grace, ok) in [
            (0, true),
            (MAX_SHUTDOWN_GRACE_MS, true),
            (MAX_SHUTDOWN_GRACE_MS + 1, false),
            (u64::MAX, false),
        ] {
            let parsed = Config::parse(&format!("[server]\nshutdown_grace_ms = {grace}\n"));
            match parsed {
                Ok(c) => {
                    assert!(ok, "{grace} accepted");
                    assert_eq!(c.server.shutdown_grace_ms, grace);
                }
                Err(e) => {
                    assert!(!ok, "{grace}: {e}");
                    assert!(e.to_string().contains("shutdown_grace_ms"), "{e}");
                }
            }
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(
            r#"
            [server]
            listen = "127.0.0.1:9090"

            [providers.openai]
            dialect = "openai"
            base_url = "https://api.openai.com/v1"
            api_key_env = "OPENAI_API_KEY"

            [providers.anthropic]
            dialect = "anthropic"
            base_url = "https://api.anthropic.com"
            api_key_env = "ANTHROPIC_API_KEY"

            [models.smart]
            route = "anthropic/claude-sonnet-4-5"
            fallbacks = ["openai/gpt-4o"]
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9090);
        assert_eq!(c.models["smart"].fallbacks, ["openai/gpt-4o"]);
        assert_eq!(c.providers["anthropic"].dialect, Dialect::Anthropic);
    }

    #[test]
    fn the_original_designs_streaming_block_is_accepted_as_is() {
        let c = Config::parse(
            r#"
            [streaming.retryPolicy]
            maxAttempts = 3
            backoffMs = 100
            [streaming.reconnect]
            maxAttempts = 3
            initialBackoff = 100
            maxBackoff = 5000
            jitter = 0.1
            "#,
        )
        .unwrap();
        assert_eq!(c.streaming.retry_policy.max_attempts, 3);
        assert_eq!(c.streaming.retry_policy.backoff_ms, 100);
        assert_eq!(c.streaming.reconnect.max_backoff, 5000);
        assert!((c.streaming.reconnect.jitter - 0.1).abs() < 1e-9);
        assert!(c.streaming.retry_policy.hold_tool_calls);
    }

    /// The original design's whole `[streaming]` block, in its two TOML spellings.
    const SEED_INLINE: &str = r#"
        [streaming]
        bufferSize = 64
        chunkSize = 1024
        compression = ["gzip", "zstd"]
        retryPolicy = { maxAttempts = 2, backoffMs = 50 }
        reconnect = { maxAttempts = 4, initialBackoff = 200, maxBackoff = 3000, jitter = 0.2 }
        "#;
    const SEED_TABLES: &str = r#"
        [streaming]
        bufferSize = 64
        chunkSize = 1024
        compression = ["gzip", "zstd"]
        [streaming.retryPolicy]
        maxAttempts = 2
        backoffMs = 50
        [streaming.reconnect]
        maxAttempts = 4
        initialBackoff = 200
        maxBackoff = 3000
        jitter = 0.2
        "#;

    #[test]
    fn the_seed_block_sets_every_key_in_both_spellings() {
        use crate::ws::Compression;
        for text in [SEED_INLINE, SEED_TABLES] {
            let c = Config::parse(text).unwrap();
            let ws = &c.streams.websocket;
            assert_eq!(ws.buffer_events, 64);
            assert_eq!(ws.chunk_size, 1024);
            assert_eq!(
                ws.compression.modes(),
                [Compression::Zstd, Compression::Gzip]
            );
            assert_eq!(c.streaming.retry_policy.max_attempts, 2);
            assert_eq!(c.streaming.retry_policy.backoff_ms, 50);
            let r = &c.streaming.reconnect;
            assert_eq!(
                (r.max_attempts, r.initial_backoff, r.max_backoff),
                (4, 200, 3000)
            );
            assert!((r.jitter - 0.2).abs() < 1e-9);
        }
        // Without the design's keys the native ones are the defaults.
        let c = Config::parse("").unwrap();
        assert_eq!(c.streams.websocket.buffer_events, 1024);
        assert_eq!(c.streams.websocket.compression.modes(), Compression::ALL);
    }

    #[test]
    fn design_keys_and_native_keys_agree_or_fail() {
        let both = |design: &str, native: &str| {
            Config::parse(&format!(
                "[streaming]\n{design}\n[streams.websocket]\n{native}\n"
            ))
        };
        let same = both("chunkSize = 2048", "chunkSize = 2048").unwrap();
        assert_eq!(same.streams.websocket.chunk_size, 2048);
        let native_only = both("bufferSize = 8", "chunkSize = 4096").unwrap();
        assert_eq!(native_only.streams.websocket.chunk_size, 4096);
        assert_eq!(native_only.streams.websocket.buffer_events, 8);
        for (design, native) in [
            ("chunkSize = 2048", "chunkSize = 4096"),
            ("bufferSize = 8", "buffer_events = 9"),
            ("compression = \"lz4\"", "compression = [\"lz4\", \"none\"]"),
        ] {
            let e = both(design, native).unwrap_err().to_string();
            assert!(e.contains("both set"), "{design} / {native}: {e}");
        }
        for bad in [
            "bufferSize = 0",
            "bufferSize = 2000000",
            "chunkSize = 255",
            "compression = \"brotli\"",
            "compression = []",
        ] {
            assert!(
                Config::parse(&format!("[streaming]\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
        assert!(Config::parse("[streaming]\ncompression = false\n").is_ok());
    }

    #[test]
    fn no_file_means_the_two_public_providers() {
        let c = Config::default();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.providers["openai"].api_key_env.as_deref(),
            Some("OPENAI_API_KEY")
        );
    }

    #[test]
    fn typos_and_dangling_routes_are_errors() {
        let typo = Config::parse("[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(typo.to_string().contains("listen_addr"), "{typo}");
        let dangling = Config::parse("[models.x]\nroute = \"nope/m\"\n").unwrap_err();
        assert!(
            dangling.to_string().contains("unknown provider"),
            "{dangling}"
        );
    }

    /// Independent mistakes, in any number and mix, are all reported by one parse (a reload
    /// answer lists them, so one edit fixes them all).
    #[test]
    fn every_problem_is_reported_at_once() {
        // Each kind of mistake, with the text its problem names.
        let kinds: [(&str, &str); 5] = [
            ("[models.a{i}]\nroute = \"nope{i}/m\"\n", "nope{i}"),
            ("[models.b{i}]\nroute = \"noslash{i}\"\n", "noslash{i}"),
            (
                "[providers.p{i}]\ndialect = \"openai\"\nbase_url = \"ftp://x{i}\"\n",
                "providers.p{i}.base_url",
            ),
            ("[keys.k{i}]\nenv = \"\"\n", "keys.k{i}.env"),
            (
                "[models.c{i}]\nroute = \"openai/m\"\nfallbacks = [\"gone{i}/m\"]\n",
                "gone{i}",
            ),
        ];
        let mut seed = 0x5eed_u64;
        for case in 0..64 {
            let mut text = String::from(
                "[providers.openai]\ndialect = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n",
            );
            let mut expected = Vec::new();
            let count = 1 + case % 6;
            for i in 0..count {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (snippet, names) = kinds[(seed >> 33) as usize % kinds.len()];
                text.push_str(&snippet.replace("{i}", &i.to_string()));
                expected.push(names.replace("{i}", &i.to_string()));
            }
            let err = Config::parse(&text).unwrap_err();
            let problems = err.problems();
            assert_eq!(problems.len(), expected.len(), "case {case}: {problems:?}");
            for name in &expected {
                assert!(
                    problems.iter().any(|p| p.contains(name.as_str())),
                    "case {case}: {name} missing from {problems:?}"
                );
            }
        }
    }

    #[test]
    fn gateway_keys_parse_and_bad_ones_are_errors() {
        let hash = "ab".repeat(32);
        let c = Config::parse(&format!(
            "[keys.team_a]\nsha256 = \"{hash}\"\nmodels = [\"smart\"]\n\
             requests_per_minute = 5\nbudget_tokens_per_day = 100\n\
             [keys.ci]\nenv = \"CI_KEY\"\n"
        ))
        .unwrap();
        assert!(c.has_gateway_keys());
        assert!(!Config::default().has_gateway_keys());
        let a = &c.keys["team_a"];
        assert_eq!(a.models, ["smart"]);
        assert_eq!(a.quotas().requests_per_minute.map(|n| n.get()), Some(5));
        assert_eq!(a.budget().per_day, Some(100));
        for (bad, why) in [
            ("[keys.a]\nsha256 = \"abc\"\n", "64 hex"),
            (
                &*format!("[keys.a]\nsha256 = \"{hash}\"\nenv = \"X\"\n"),
                "exactly one",
            ),
            ("[keys.a]\nmodels = []\n", "exactly one"),
            ("[keys.\"a b\"]\nenv = \"X\"\n", "key name"),
            ("[keys.a]\nenv = \"X\"\nkey = \"sg-1\"\n", "unknown field"),
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
