//! `[telemetry]`: what the gateway exports about itself. The exporter is
//! `crate::telemetry::otlp`; its settings live here, below `config`, so that the config
//! module never depends on the telemetry one (docs/architecture.md). docs/observability.md,
//! "Traces".

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// `[telemetry]`: exported telemetry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `[telemetry.otlp]`: OpenTelemetry traces to an OTLP collector. Default: absent, off.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// The OTLP/HTTP path for traces, appended to the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
/// The largest export queue accepted.
const MAX_QUEUE_CAP: usize = 1 << 20;

/// `[telemetry.otlp]`: where and how traces are exported. Absent: nothing is exported and
/// no collector is contacted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL (`http://localhost:4318`); `/v1/traces` is appended
    /// unless the URL already ends with it. Required.
    pub endpoint: String,
    /// The wire protocol: only `"http/protobuf"` (the default) is supported.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute. Default `"streamgate"`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of traces recorded, from 0.0 to 1.0 (default 1.0: every request). Decided
    /// once per trace, at its root: a trace is exported whole or not at all.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Headers sent with every export, each read from an environment variable
    /// (`{ authorization = "OTLP_AUTH" }`), so that a collector's credentials stay out of the
    /// file. The values are never logged. A variable that is not set stops the start.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// How long one export may take, in milliseconds. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How many finished spans wait for export at most; more are dropped. Default 2048.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// How often the queue is exported, in milliseconds. Default 5000.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
}

/// The OTLP wire protocols the exporter speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST (port 4318 by convention).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

fn default_service_name() -> String {
    "streamgate".into()
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_queue_size() -> usize {
    2048
}

fn default_export_interval_ms() -> u64 {
    5000
}

/// What is wrong with `[telemetry.otlp]`.
#[derive(Debug, thiserror::Error)]
pub enum OtlpConfigError {
    /// `endpoint` is not an http(s) URL.
    #[error("[telemetry.otlp] endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    /// `sampling_ratio` is outside 0..=1.
    #[error("[telemetry.otlp] sampling_ratio must be between 0 and 1, not {0}")]
    SamplingRatio(f64),
    /// A size or duration setting is zero or too large.
    #[error("[telemetry.otlp] {0} is out of range")]
    Range(&'static str),
    /// A `headers_env` entry names an invalid header or a variable that is not set.
    #[error("[telemetry.otlp] headers_env.{header}: {reason}")]
    Header {
        /// The header's name as configured.
        header: String,
        /// What is wrong with it (never the value).
        reason: HeaderProblem,
    },
}

/// What is wrong with a configured export header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// Not a valid HTTP header name.
    #[error("not a valid header name")]
    Name,
    /// Its environment variable is not set (or not UTF-8).
    #[error("its environment variable is not set")]
    MissingVar,
    /// The variable's value cannot be sent in a header.
    #[error("its environment variable's value is not a valid header value")]
    Value,
}

impl OtlpConfig {
    /// Checks every setting that needs no environment: all problems surface at start.
    pub fn validate(&self) -> Result<(), OtlpConfigError> {
        traces_url(&self.endpoint)?;
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(OtlpConfigError::SamplingRatio(self.sampling_ratio));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(OtlpConfigError::Range("timeout_ms"));
        }
        if self.max_queue_size == 0 || self.max_queue_size > MAX_QUEUE_CAP {
            return Err(OtlpConfigError::Range("max_queue_size"));
        }
        if self.export_interval_ms == 0 || self.export_interval_ms > 3_600_000 {
            return Err(OtlpConfigError::Range("export_interval_ms"));
        }
        for header in self.headers_env.keys() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(OtlpConfigError::Header {
                    header: header.clone(),
                    reason: HeaderProblem::Name,
                });
            }
        }
        Ok(())
    }

    /// The export headers, read from their variables now.
    pub fn headers(&self) -> Result<HashMap<String, String>, OtlpConfigError> {
        let mut headers = HashMap::new();
        for (header, var) in &self.headers_env {
            let problem = |reason| OtlpConfigError::Header {
                header: header.clone(),
                reason,
            };
            let value = std::env::var(var).map_err(|_| problem(HeaderProblem::MissingVar))?;
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(problem(HeaderProblem::Value));
            }
            headers.insert(header.clone(), value);
        }
        Ok(headers)
    }
}

/// The collector URL traces are posted to: `endpoint` with `/v1/traces` appended unless it
/// ends with it already.
pub fn traces_url(endpoint: &str) -> Result<String, OtlpConfigError> {
    let bad = || OtlpConfigError::Endpoint(endpoint.to_owned());
    let uri: http::Uri = endpoint.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad());
    }
    if uri.query().is_some() {
        return Err(bad());
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        return Ok(base.to_owned());
    }
    Ok(format!("{base}{TRACES_PATH}"))
}
