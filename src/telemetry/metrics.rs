//! The request path's Prometheus metrics: requests, time to first token, inter-token gaps,
//! stream durations, tokens, attempts, retries, failovers and continuations.
//!
//! Label values are bounded: a door is one of a closed set, a route is a configured alias's
//! route (a route picked by a client's own model string is `PROVIDER/other`), a model is a
//! configured alias (anything else is `other`), a reason is a [`Reason`]. Nothing a client
//! writes becomes a label value. The families are resolved once per request and once per
//! attempt; a token costs one histogram observation and no allocation.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::AtomicHistogram;
use crate::config::Config;
use crate::error::GatewayError;
use crate::route::Route;

/// The label of a request's model or route when it is not a configured alias.
pub const OTHER: &str = "other";

/// The label of a request's route when no route answered (refused before one was chosen).
pub const NONE: &str = "none";

/// Labels of `streamgate_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The door (see [`super::request::Door`]).
    pub door: &'static str,
    /// The route that answered last, `none` when none did.
    pub route: String,
    /// The configured alias asked for, else `other`.
    pub model: String,
    /// `2xx`, `4xx`, `5xx`... of the response status.
    pub status_class: &'static str,
    /// How the request ended (see [`super::request::Outcome`]).
    pub outcome: &'static str,
}

/// Labels of `streamgate_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabels {
    door: &'static str,
    status_class: &'static str,
}

/// Labels of the per-route families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Labels of `streamgate_tokens_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    route: String,
    direction: Direction,
    estimated: bool,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Direction {
    #[allow(non_camel_case_types)]
    input,
    #[allow(non_camel_case_types)]
    output,
}

/// Labels of the retry, failover and continuation counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: String,
    reason: &'static str,
}

/// Why an attempt was followed by another: a closed set, from the error that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The provider answered 429.
    RateLimited,
    /// The provider answered another 4xx.
    Status4xx,
    /// The provider answered 5xx.
    Status5xx,
    /// Connecting or sending failed.
    Connection,
    /// A timeout (connect, first byte, idle, total).
    Timeout,
    /// The provider's stream broke after it started.
    Stream,
    /// The route's circuit breaker is open, or its provider rests after a 429.
    Unavailable,
    /// The request cannot be expressed in the route's dialect.
    Untranslatable,
    /// The provider's key is missing or refused.
    Credentials,
    /// Anything else.
    Other,
}

impl Reason {
    /// The reason `error` stands for.
    pub fn of(error: &GatewayError) -> Reason {
        match error {
            GatewayError::UpstreamStatus { status: 429, .. } => Reason::RateLimited,
            GatewayError::UpstreamStatus { status, .. } if *status >= 500 => Reason::Status5xx,
            GatewayError::UpstreamStatus { .. } => Reason::Status4xx,
            GatewayError::Connection { .. } => Reason::Connection,
            GatewayError::Timeout { .. } => Reason::Timeout,
            GatewayError::Stream { .. } | GatewayError::Ended(_) => Reason::Stream,
            GatewayError::Unavailable { .. } | GatewayError::RateLimited(_) => Reason::Unavailable,
            GatewayError::Untranslatable { .. } | GatewayError::Request(_) => {
                Reason::Untranslatable
            }
            GatewayError::MissingKey { .. } | GatewayError::CredentialsRefused { .. } => {
                Reason::Credentials
            }
            _ => Reason::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Status4xx => "status_4xx",
            Reason::Status5xx => "status_5xx",
            Reason::Connection => "connection",
            Reason::Timeout => "timeout",
            Reason::Stream => "stream",
            Reason::Unavailable => "unavailable",
            Reason::Untranslatable => "untranslatable",
            Reason::Credentials => "credentials",
            Reason::Other => "other",
        }
    }
}

/// The request path's metric families, registered in one gateway's registry.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DoorLabels, AtomicHistogram>,
    ttft: Family<RouteLabels, AtomicHistogram>,
    gap: Family<RouteLabels, AtomicHistogram>,
    stream_duration: Family<RouteLabels, AtomicHistogram>,
    tokens: Family<TokenLabels, Counter>,
    attempts: Family<RouteLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    failovers: Family<ReasonLabels, Counter>,
    continuations: Family<ReasonLabels, Counter>,
}

/// Buckets of time to first token and of request and stream durations: 5 ms to ~10 min.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of inter-token gaps: 1 ms to 10 s (a token every 20 ms is typical; seconds is a
/// stalled provider).
const GAP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> AtomicHistogram {
    AtomicHistogram::new(LATENCY_BUCKETS)
}

fn gap_histogram() -> AtomicHistogram {
    AtomicHistogram::new(GAP_BUCKETS)
}

impl Metrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            ttft: Family::new_with_constructor(latency_histogram),
            gap: Family::new_with_constructor(gap_histogram),
            stream_duration: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            attempts: Family::default(),
            retries: Family::default(),
            failovers: Family::default(),
            continuations: Family::default(),
        };
        registry.register(
            "streamgate_requests",
            "Finished HTTP requests by door, route, model alias, status class and outcome",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "streamgate_request_duration",
            "From the request's arrival to the end (or drop) of its response body",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        registry.register_with_unit(
            "streamgate_time_to_first_token",
            "From the start of an answer to its first content delta, per route",
            Unit::Seconds,
            metrics.ttft.clone(),
        );
        registry.register_with_unit(
            "streamgate_inter_token_gap",
            "Between consecutive content deltas of an answer, per route",
            Unit::Seconds,
            metrics.gap.clone(),
        );
        registry.register_with_unit(
            "streamgate_stream_duration",
            "From the start of an answer to its end (finished, failed or abandoned), per route",
            Unit::Seconds,
            metrics.stream_duration.clone(),
        );
        registry.register(
            "streamgate_tokens",
            "Input and output tokens of finished answers by route; estimated=true where the \
             provider reported none",
            metrics.tokens.clone(),
        );
        registry.register(
            "streamgate_attempts",
            "Upstream attempts started, per route",
            metrics.attempts.clone(),
        );
        registry.register(
            "streamgate_retries",
            "Attempts retried on the same route, by the route and reason of the failure",
            metrics.retries.clone(),
        );
        registry.register(
            "streamgate_failovers",
            "Moves to the next route of a plan, by the route left and the reason",
            metrics.failovers.clone(),
        );
        registry.register(
            "streamgate_continuations",
            "Attempts that continue an answer already partly sent, by route and reason",
            metrics.continuations.clone(),
        );
        metrics
    }

    /// Counts one finished request.
    pub(super) fn request(&self, labels: &RequestLabels, duration: Duration) {
        self.requests.get_or_create(labels).inc();
        self.request_duration
            .get_or_create(&DoorLabels {
                door: labels.door,
                status_class: labels.status_class,
            })
            .observe(duration);
    }

    /// The per-token and per-answer handles of `route` (a label from [`route_label`]).
    pub fn route(&self, route: String) -> RouteMetrics {
        let labels = RouteLabels { route };
        RouteMetrics {
            ttft: self.ttft.get_or_create(&labels).clone(),
            gap: self.gap.get_or_create(&labels).clone(),
            stream_duration: self.stream_duration.get_or_create(&labels).clone(),
            route: labels.route,
        }
    }

    /// Counts an attempt on `route`.
    pub fn attempt(&self, route: &RouteMetrics) {
        self.attempts
            .get_or_create(&RouteLabels {
                route: route.route.clone(),
            })
            .inc();
    }

    /// Counts a retry of `route` after `reason`.
    pub fn retry(&self, route: &RouteMetrics, reason: Reason) {
        self.retries
            .get_or_create(&reason_labels(route, reason))
            .inc();
    }

    /// Counts a failover away from `route` after `reason`.
    pub fn failover(&self, route: &RouteMetrics, reason: Reason) {
        self.failovers
            .get_or_create(&reason_labels(route, reason))
            .inc();
    }

    /// Counts an attempt on `route` that continues a broken answer (broken by `reason`).
    pub fn continuation(&self, route: &RouteMetrics, reason: Reason) {
        self.continuations
            .get_or_create(&reason_labels(route, reason))
            .inc();
    }

    /// Counts an answer's tokens on `route`.
    pub fn tokens(&self, route: &str, input: u64, output: u64, estimated: bool) {
        for (direction, n) in [(Direction::input, input), (Direction::output, output)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    route: route.to_owned(),
                    direction,
                    estimated,
                })
                .inc_by(n);
        }
    }
}

fn reason_labels(route: &RouteMetrics, reason: Reason) -> ReasonLabels {
    ReasonLabels {
        route: route.route.clone(),
        reason: reason.as_str(),
    }
}

/// One route's histograms, resolved once per attempt so that each token costs only an
/// observation.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    route: String,
    ttft: AtomicHistogram,
    gap: AtomicHistogram,
    stream_duration: AtomicHistogram,
}

impl RouteMetrics {
    /// The route's label value.
    pub fn label(&self) -> &str {
        &self.route
    }

    /// Observes a time to first token.
    pub fn first_token(&self, after: Duration) {
        self.ttft.observe(after);
    }

    /// Observes a gap between two tokens.
    pub fn gap(&self, gap: Duration) {
        self.gap.observe(gap);
    }

    /// Observes an answer's duration.
    pub fn stream_duration(&self, duration: Duration) {
        self.stream_duration.observe(duration);
    }
}

/// `route`'s label value for a request of `model`: the route itself when `model` is a
/// configured alias (its routes come from the configuration), else `PROVIDER/other` (the
/// model part was the client's to choose; the provider is configured).
pub fn route_label(config: &Config, model: &str, route: &Route) -> String {
    if config.models.contains_key(model) {
        route.to_string()
    } else {
        format!("{}/{OTHER}", route.provider)
    }
}

/// `model`'s label value: itself when it is a configured alias, else `other`.
pub fn model_label(config: &Config, model: &str) -> String {
    if config.models.contains_key(model) {
        model.to_owned()
    } else {
        OTHER.to_owned()
    }
}
