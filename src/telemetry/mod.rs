//! Telemetry: request ids, the per-request record and access log, logging, and the Prometheus
//! registry behind `GET /metrics` (docs/observability.md).
//!
//! - [`request_id`]: a client's sane `x-request-id` or a fresh UUID v7.
//! - [`request`]: one request's [`request::Observed`] record, finished into one access line.
//! - [`histogram`]: the request path's lock-free histograms as Prometheus metrics.
//! - [`layer`]: the layers that give every request its id, span and record.
//! - [`meter`]: one answer's measures (time to first token, gaps, tokens, attempts).
//! - [`metrics`]: the request path's metric families.
//! - [`logging`]: the tracing subscriber, from `[log]`.
//! - [`otlp`]: trace export (off by default).

/// The target of the `attempt` and `upstream` spans, made at `debug` level: always exported as
/// traces, in log lines only when the log filter enables them
/// (`level = "info,streamgate::calls=debug"`). At `info`, every log line of the gateway paid for
/// formatting their two dozen fields per request (docs/performance-gateway.md).
pub const CALL_SPANS: &str = "streamgate::calls";

pub mod histogram;
pub mod layer;
pub mod log_time;
pub mod log_writer;
pub mod logging;
pub mod meter;
pub mod metrics;
pub mod otlp;
pub mod plain_fields;
pub mod request;
pub mod request_id;

use std::sync::Arc;

use prometheus_client::registry::Registry;

/// One gateway's telemetry: its own registry (no global recorder: tests run many gateways
/// in one process) and the request path's metrics in it.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// None with `[server] metrics = false`.
    registry: Option<Arc<Registry>>,
    /// The request path's families (None with `[server] metrics = false`: nothing is
    /// measured and `/metrics` is 404).
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// `[log] access`: whether finished requests write an access line.
    pub access: bool,
}

impl Telemetry {
    /// A registry with the request path's metrics when `metrics` (`[server] metrics`);
    /// `more` registers further collectors before the registry is frozen.
    pub fn new(access: bool, metrics: bool, more: impl FnOnce(&mut Registry)) -> Telemetry {
        if !metrics {
            return Telemetry {
                registry: None,
                metrics: None,
                access,
            };
        }
        let mut registry = Registry::default();
        let metrics = Arc::new(metrics::Metrics::register(&mut registry));
        more(&mut registry);
        Telemetry {
            registry: Some(Arc::new(registry)),
            metrics: Some(metrics),
            access,
        }
    }

    /// Every metric in the OpenMetrics text format, `# EOF` last; None when metrics are off.
    pub fn encode(&self) -> Option<String> {
        let registry = self.registry.as_ref()?;
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, registry);
        Some(out)
    }
}
