//! OpenTelemetry traces over OTLP (http/protobuf), off unless `[telemetry.otlp]` is set.
//!
//! The gateway's tracing spans (`request`, `attempt`, `upstream`) become OpenTelemetry spans
//! through tracing-opentelemetry; the SDK's batch span processor holds finished spans in a
//! bounded queue (dropping the newest when it is full: tracing never holds a request back)
//! and exports them from its own thread. The HTTP calls to the collector run on a one-thread
//! tokio runtime of their own, so an export never competes with streams for the gateway's
//! workers and the processor's blocking waits never stall one of them. What is exported and
//! how to point it at a collector: docs/observability.md, "Traces".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The OTLP/HTTP path for traces, appended to the collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
/// The largest collector answer read: an OTLP answer is a few bytes (a partial-success
/// note at most); a misconfigured endpoint serving something else is not read whole.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Export failures are logged at most once per this interval (a collector that is down
/// would otherwise log once per batch).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long the exit waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest export queue accepted from the config.
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
    /// The share of new traces recorded, from 0.0 to 1.0 (default 1.0: every request). A
    /// request whose caller sent a sampled `traceparent` is not affected by this ratio.
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

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
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
    /// The exporter's HTTP client or runtime could not be built.
    #[error("[telemetry.otlp] cannot start the exporter: {0}")]
    Start(String),
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
    pub fn validate(&self) -> Result<(), OtlpError> {
        traces_url(&self.endpoint)?;
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(OtlpError::SamplingRatio(self.sampling_ratio));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(OtlpError::Range("timeout_ms"));
        }
        if self.max_queue_size == 0 || self.max_queue_size > MAX_QUEUE_CAP {
            return Err(OtlpError::Range("max_queue_size"));
        }
        if self.export_interval_ms == 0 || self.export_interval_ms > 3_600_000 {
            return Err(OtlpError::Range("export_interval_ms"));
        }
        for header in self.headers_env.keys() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(OtlpError::Header {
                    header: header.clone(),
                    reason: HeaderProblem::Name,
                });
            }
        }
        Ok(())
    }

    /// The export headers, read from their variables now.
    fn headers(&self) -> Result<HashMap<String, String>, OtlpError> {
        let mut headers = HashMap::new();
        for (header, var) in &self.headers_env {
            let problem = |reason| OtlpError::Header {
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
pub fn traces_url(endpoint: &str) -> Result<String, OtlpError> {
    let bad = || OtlpError::Endpoint(endpoint.to_owned());
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

/// Keeps the tracer provider alive; dropping it (at exit) exports what is queued, waiting
/// at most a few seconds. Drop it outside the async runtime (after `block_on` returns).
#[derive(Debug)]
pub struct OtlpGuard {
    provider: SdkTracerProvider,
}

impl OtlpGuard {
    /// Exports every finished span now (tests, and before a planned exit).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not flush the trace export");
        }
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %e, "the trace export did not finish at exit");
        }
    }
}

/// The tracing layer exporting the gateway's spans to the collector `config` names, and
/// the guard that flushes it at exit; None when `config` is None (tracing off: nothing
/// built, no thread started, no collector contacted).
///
/// The layer carries its own filter (the gateway's spans at `info` and above), so it
/// exports the same spans whatever `RUST_LOG` says about the log lines.
pub fn layer<S>(
    config: Option<&OtlpConfig>,
) -> Result<Option<(impl Layer<S>, OtlpGuard)>, OtlpError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(config) = config else {
        return Ok(None);
    };
    config.validate()?;
    let url = traces_url(&config.endpoint)?;
    let timeout = Duration::from_millis(config.timeout_ms);
    let client = ExportClient::new(timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .with_headers(config.headers()?)
        .build()
        .map_err(|e| OtlpError::Start(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_size)
        .with_max_export_batch_size(config.max_queue_size.min(512))
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", config.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("streamgate");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target("streamgate", tracing::Level::INFO));
    Ok(Some((layer, OtlpGuard { provider })))
}

/// The exporter's HTTP client: the gateway's reqwest (one reqwest in the build), driven by a
/// one-thread runtime of its own because the batch processor calls it from a plain thread.
#[derive(Debug, Clone)]
struct ExportClient {
    client: reqwest::Client,
    runtime: Arc<ExportRuntime>,
    failures: Arc<FailureLog>,
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<ExportClient, OtlpError> {
        // The gateway's TLS provider (ring), as the upstream clients install it; Err means
        // it is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OtlpError::Start(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| OtlpError::Start(e.to_string()))?;
        Ok(ExportClient {
            client,
            runtime: Arc::new(ExportRuntime(Some(runtime))),
            failures: Arc::new(FailureLog::new(FAILURE_LOG_INTERVAL)),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let handle = self.runtime.handle().ok_or("the export runtime is gone")?;
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = handle.spawn(async move { post(&client, request).await });
        let result = match sent.await {
            Ok(result) => result,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => self
                .failures
                .note(&format!("collector answered {}", response.status())),
            Err(e) => self.failures.note(&causes(e.as_ref())),
        }
        result
    }
}

/// An error with its causes, for the log: reqwest's own text names only the URL.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sends one export and reads the collector's (small) answer.
async fn post(
    client: &reqwest::Client,
    request: reqwest::Request,
) -> Result<Response<Bytes>, HttpError> {
    let mut response = client.execute(request).await?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response::builder().status(status).body(Bytes::from(body))?)
}

/// The export runtime, shut down without waiting when the exporter goes (dropping a runtime
/// the blocking way inside another runtime would panic).
#[derive(Debug)]
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl ExportRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Logs export failures at most once per interval, with how many were not logged.
#[derive(Debug)]
struct FailureLog {
    start: Instant,
    interval: Duration,
    /// Milliseconds after `start` of the last logged failure, plus one (0: none yet).
    last: AtomicU64,
    quiet: AtomicU64,
}

impl FailureLog {
    fn new(interval: Duration) -> FailureLog {
        FailureLog {
            start: Instant::now(),
            interval,
            last: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
        }
    }

    /// Whether a failure now is logged (and if so, how many were not since the last).
    fn admit(&self, now: Instant) -> Option<u64> {
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = self.interval.as_millis() as u64;
        let due = last == 0 || now_ms.saturating_sub(last) >= interval;
        if due
            && self
                .last
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.quiet.swap(0, Ordering::Relaxed));
        }
        self.quiet.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn note(&self, why: &str) {
        if let Some(unlogged) = self.admit(Instant::now()) {
            tracing::warn!(
                error = why,
                unlogged_failures = unlogged,
                "trace export failed: spans are dropped until the collector answers"
            );
        }
    }
}

#[cfg(test)]
mod tests;
