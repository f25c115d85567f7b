//! Telemetry: request ids, the per-request record and access log, logging, and the Prometheus
//! registry behind `GET /metrics` (docs/observability.md).
//!
//! - [`request_id`]: a client's sane `x-request-id` or a fresh UUID v7.
//! - [`request`]: one request's [`request::Observed`] record, finished into one access line.
//! - [`layer`]: the layers that give every request its id, span and record.
//! - [`meter`]: one answer's measures (time to first token, gaps, tokens, attempts).
//! - [`metrics`]: the request path's metric families.
//! - [`logging`]: the tracing subscriber, from `[log]`.
//! - [`otlp`]: trace export (off by default).

pub mod layer;
pub mod logging;
pub mod meter;
pub mod metrics;
pub mod otlp;
pub mod request;
pub mod request_id;

use std::sync::Arc;

use prometheus_client::registry::Registry;

/// One gateway's telemetry: its own registry (no global recorder: tests run many gateways
/// in one process) and the request path's metrics in it.
#[derive(Debug, Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
    /// The request path's families.
    pub metrics: Arc<metrics::Metrics>,
    /// `[log] access`: whether finished requests write an access line.
    pub access: bool,
}

impl Telemetry {
    /// A registry with the request path's metrics; `more` registers further collectors
    /// before the registry is frozen.
    pub fn new(access: bool, more: impl FnOnce(&mut Registry)) -> Telemetry {
        let mut registry = Registry::default();
        let metrics = Arc::new(metrics::Metrics::register(&mut registry));
        more(&mut registry);
        Telemetry {
            registry: Arc::new(registry),
            metrics,
            access,
        }
    }

    /// Every metric in the Prometheus text format (version 0.0.4), `# EOF` last.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
