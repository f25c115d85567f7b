//! OpenTelemetry traces over OTLP (http/protobuf), off unless `[telemetry.otlp]` is set.
//!
//! The gateway's tracing spans (`request`, `attempt`, `upstream`) become OpenTelemetry spans
//! through tracing-opentelemetry; the SDK's batch span processor holds finished spans in a
//! bounded queue (dropping the newest when it is full: tracing never holds a request back)
//! and exports them from its own thread. The HTTP calls to the collector run on a one-thread
//! tokio runtime of their own, so an export never competes with streams for the gateway's
//! workers and the processor's blocking waits never stall one of them. What is exported and
//! how to point it at a collector: docs/observability.md, "Traces".

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
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::CALL_SPANS;

/// The largest collector answer read: an OTLP answer is a few bytes (a partial-success
/// note at most); a misconfigured endpoint serving something else is not read whole.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Export failures are logged at most once per this interval (a collector that is down
/// would otherwise log once per batch).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long the exit waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::config::telemetry::{
    HeaderProblem, OtlpConfig, OtlpConfigError, OtlpProtocol, traces_url,
};

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// `[telemetry.otlp]` is unusable.
    #[error(transparent)]
    Config(#[from] OtlpConfigError),
    /// The exporter's HTTP client or runtime could not be built.
    #[error("[telemetry.otlp] cannot start the exporter: {0}")]
    Start(String),
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
/// The layer carries its own filter (the gateway's spans at `info` and above, and the
/// attempt and upstream-call spans of [`CALL_SPANS`] at `debug`), so it exports the same spans
/// whatever `RUST_LOG` says about the log lines.
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
        .with_filter(
            Targets::new()
                .with_target("streamgate", tracing::Level::INFO)
                .with_target(CALL_SPANS, tracing::Level::DEBUG),
        );
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

/// Why an export failed, for the log: the error's causes, without reqwest's own text,
/// which names the endpoint's URL (and so any credentials written in it).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut out = first.to_string();
    let mut source = first.source();
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
