//! The subsystems' metrics: rate limiting, circuit breakers, streams and WebSocket
//! connections, the journal, and the upstream connection pools (docs/observability.md,
//! "Subsystem metrics").
//!
//! One [`Collector`] reads them at scrape time from the state each subsystem already keeps
//! (plain atomics and [`crate::counters::Histogram`]s: no subsystem knows of Prometheus). It
//! holds the `Arc<Engine>` and `Arc<Hub>` and goes through their accessors on every scrape, so
//! a configuration reload that swaps the engine's insides is seen at the next scrape.
//!
//! Label values come from the configuration only: configured key names (else `other`),
//! configured alias routes (else `other`), configured provider names, and the closed sets of
//! limit kinds and breaker states. No client string becomes a label.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio_util::task::TaskTracker;

use crate::counters::Snapshot;
use crate::engine::Engine;
use crate::hub::{Hub, LiveScope};
use crate::resilience::breaker::{BreakerCount, BreakerState};

mod redis;
pub use redis::{REDIS_CALLS, REDIS_ERRORS, REDIS_OUTAGES, REDIS_UP};

/// The label value of routes no configured alias names.
pub const OTHER_ROUTE: &str = "other";

/// Metric names (counters without their `_total`, which the encoder appends).
pub mod names {
    /// Requests refused by a rate limit or budget, by `key` and `limit` (counter).
    pub const RATE_LIMIT_REJECTIONS: &str = "streamgate_rate_limit_rejections";
    /// Seconds requests waited in the admission queue (histogram).
    pub const RATE_LIMIT_QUEUE_WAIT: &str = "streamgate_rate_limit_queue_wait_seconds";
    /// Requests in the admission queue now (gauge).
    pub const RATE_LIMIT_QUEUED: &str = "streamgate_rate_limit_queued";
    /// Each route's breaker: 0 closed, 1 half-open, 2 open (gauge).
    pub const BREAKER_STATE: &str = "streamgate_breaker_state";
    /// Breaker transitions by `route` and `to` state (counter).
    pub const BREAKER_TRANSITIONS: &str = "streamgate_breaker_transitions";
    /// Streams generating now (gauge).
    pub const STREAMS_ACTIVE: &str = "streamgate_streams_active";
    /// Streams clients started (counter).
    pub const STREAMS_STARTED: &str = "streamgate_streams_started";
    /// Streams refused by a live cap, by `limit` (counter).
    pub const STREAMS_REFUSED: &str = "streamgate_streams_refused";
    /// Clients following a stream now (gauge).
    pub const STREAM_SUBSCRIBERS: &str = "streamgate_stream_subscribers";
    /// Streams started while Redis did not answer (counter; Redis backend only).
    pub const STREAMS_DEGRADED_STARTS: &str = "streamgate_streams_degraded_starts";
    /// Streams taken over from an instance whose lease lapsed (counter; Redis backend only).
    pub const STREAMS_TAKEN_OVER: &str = "streamgate_streams_taken_over";
    /// Streams generated here whose events Redis is missing now (gauge; Redis backend only).
    pub const STREAMS_UNSYNCED: &str = "streamgate_streams_unsynced";
    /// WebSocket connections open now (gauge).
    pub const WEBSOCKET_CONNECTIONS: &str = "streamgate_websocket_connections";
    /// Seconds per journal append (histogram).
    pub const JOURNAL_APPEND: &str = "streamgate_journal_append_seconds";
    /// Seconds per journal fdatasync (histogram).
    pub const JOURNAL_SYNC: &str = "streamgate_journal_sync_seconds";
    /// Bytes appended to the journal (counter).
    pub const JOURNAL_APPENDED_BYTES: &str = "streamgate_journal_appended_bytes";
    /// Records appended to the journal (counter).
    pub const JOURNAL_RECORDS: &str = "streamgate_journal_records_appended";
    /// Failed journal fdatasyncs (counter).
    pub const JOURNAL_SYNC_ERRORS: &str = "streamgate_journal_sync_errors";
    /// Journal segment files on disk (gauge).
    pub const JOURNAL_SEGMENTS: &str = "streamgate_journal_segments";
    /// Bytes of the journal's segment files (gauge).
    pub const JOURNAL_BYTES: &str = "streamgate_journal_size_bytes";
    /// Segments compaction deleted (counter).
    pub const JOURNAL_COMPACTED: &str = "streamgate_journal_segments_compacted";
    /// Connections each provider's pool opened (counter).
    pub const UPSTREAM_CONNECTIONS_OPENED: &str = "streamgate_upstream_connections_opened";
    /// Requests to each provider in flight now (gauge).
    pub const UPSTREAM_IN_FLIGHT: &str = "streamgate_upstream_requests_in_flight";
}

/// What the subsystem metrics read: the gateway's engine (limiter, breakers, upstream pools),
/// its hub (streams, journal) and its WebSocket connections.
#[derive(Debug, Clone)]
pub struct SystemSources {
    /// The request path; read through its accessors at every scrape.
    pub engine: Arc<Engine>,
    /// The streams and the journal.
    pub hub: Arc<Hub>,
    /// The open WebSocket connections (`AppState::websockets`).
    pub websockets: TaskTracker,
}

/// Registers the subsystem metrics of `sources` in `registry` (names already carry the
/// `streamgate_` prefix: register at the registry's root).
pub fn register(registry: &mut Registry, sources: SystemSources) {
    registry.register_collector(Box::new(SystemCollector { sources }));
}

/// The collector behind [`register`].
#[derive(Debug)]
struct SystemCollector {
    sources: SystemSources,
}

impl Collector for SystemCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        self.limits(e)?;
        self.breakers(e)?;
        self.streams(e)?;
        self.journal(e)?;
        if let Some(redis) = self.sources.engine.redis() {
            redis::encode(e, redis)?;
        }
        self.upstream(e)
    }
}

impl SystemCollector {
    fn limits(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let limiter = self.sources.engine.limiter();
        let stats = limiter.stats();
        let mut family = e.encode_descriptor(
            names::RATE_LIMIT_REJECTIONS,
            "Requests refused by a rate limit or token budget, by configured key name (else \
             other) and limit.",
            None,
            MetricType::Counter,
        )?;
        for refusal in stats.refusals() {
            let labels = [
                ("key", refusal.key.as_str()),
                ("limit", refusal.limit.event_name()),
            ];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&refusal.count, None)?;
        }
        histogram(
            e,
            names::RATE_LIMIT_QUEUE_WAIT,
            "Seconds each request that entered the admission queue waited there.",
            &stats.queue_waits(),
        )?;
        gauge(
            e,
            names::RATE_LIMIT_QUEUED,
            "Requests waiting in the admission queue now.",
            limiter.queued() as i64,
        )
    }

    fn breakers(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let rows = route_rows(&self.sources.engine);
        let mut family = e.encode_descriptor(
            names::BREAKER_STATE,
            "Circuit breaker state per configured route: 0 closed, 1 half-open, 2 open (other: \
             the most open of the routes no alias names).",
            None,
            MetricType::Gauge,
        )?;
        for (route, row) in &rows {
            family
                .encode_family(&[("route", route.as_str())])?
                .encode_gauge(&i64::from(row.state.level()))?;
        }
        let mut family = e.encode_descriptor(
            names::BREAKER_TRANSITIONS,
            "Circuit breaker transitions per configured route, by the state entered.",
            None,
            MetricType::Counter,
        )?;
        for (route, row) in &rows {
            for (to, count) in BreakerState::ALL.iter().zip(row.transitions) {
                family
                    .encode_family(&[("route", route.as_str()), ("to", to.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        Ok(())
    }

    fn streams(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let hub = &self.sources.hub;
        gauge(
            e,
            names::STREAMS_ACTIVE,
            "Streams generating now (holding a place under streams.max_live).",
            hub.live() as i64,
        )?;
        counter(
            e,
            names::STREAMS_STARTED,
            "Streams clients started in the hub.",
            hub.started(),
        )?;
        let mut family = e.encode_descriptor(
            names::STREAMS_REFUSED,
            "Streams refused with a 429 because a live cap was full, by the [streams] setting.",
            None,
            MetricType::Counter,
        )?;
        for scope in [LiveScope::Gateway, LiveScope::Key] {
            family
                .encode_family(&[("limit", scope.config_key())])?
                .encode_counter::<NoLabelSet, _, u64>(&hub.refused(scope), None)?;
        }
        gauge(
            e,
            names::STREAM_SUBSCRIBERS,
            "Clients following a stream of the hub now.",
            hub.subscribers() as i64,
        )?;
        gauge(
            e,
            names::WEBSOCKET_CONNECTIONS,
            "WebSocket connections open now.",
            self.sources.websockets.len() as i64,
        )?;
        let Some(redis) = hub.cluster_stats() else {
            return Ok(());
        };
        counter(
            e,
            names::STREAMS_DEGRADED_STARTS,
            "Streams started while Redis did not answer: generated here, written to Redis later.",
            redis.degraded_starts,
        )?;
        counter(
            e,
            names::STREAMS_TAKEN_OVER,
            "Streams this instance took over from an instance whose lease lapsed.",
            redis.taken_over,
        )?;
        gauge(
            e,
            names::STREAMS_UNSYNCED,
            "Streams generated here whose events Redis is missing now (it did not answer).",
            redis.unsynced as i64,
        )
    }

    fn journal(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let Some(journal) = self.sources.hub.journal() else {
            return Ok(());
        };
        let stats = journal.stats();
        let latencies = journal.latencies();
        histogram(
            e,
            names::JOURNAL_APPEND,
            "Seconds per journal append: the writer lock and the write(2).",
            &latencies.append,
        )?;
        histogram(
            e,
            names::JOURNAL_SYNC,
            "Seconds per fdatasync of journal records.",
            &latencies.sync,
        )?;
        counter(
            e,
            names::JOURNAL_APPENDED_BYTES,
            "Bytes of records appended to the journal.",
            journal.appended_bytes(),
        )?;
        counter(
            e,
            names::JOURNAL_RECORDS,
            "Records appended to the journal.",
            stats.records_appended,
        )?;
        counter(
            e,
            names::JOURNAL_SYNC_ERRORS,
            "Journal fdatasyncs that failed (the disk may be losing data).",
            stats.sync_errors,
        )?;
        gauge(
            e,
            names::JOURNAL_SEGMENTS,
            "Journal segment files on disk.",
            i64::try_from(stats.segments).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            names::JOURNAL_BYTES,
            "Bytes of the journal's segment files.",
            i64::try_from(stats.bytes).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            names::JOURNAL_COMPACTED,
            "Journal segments deleted by compaction.",
            stats.segments_deleted,
        )
    }

    fn upstream(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let pools = self.sources.engine.upstream().pool_stats();
        let mut family = e.encode_descriptor(
            names::UPSTREAM_CONNECTIONS_OPENED,
            "Connections each provider's pool opened (TCP connect and TLS handshake done).",
            None,
            MetricType::Counter,
        )?;
        for pool in &pools {
            family
                .encode_family(&[("provider", pool.provider.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&pool.connections_opened, None)?;
        }
        let mut family = e.encode_descriptor(
            names::UPSTREAM_IN_FLIGHT,
            "Requests to each provider from send until their response body is dropped.",
            None,
            MetricType::Gauge,
        )?;
        for pool in &pools {
            family
                .encode_family(&[("provider", pool.provider.as_str())])?
                .encode_gauge(&(pool.requests_in_flight as i64))?;
        }
        Ok(())
    }
}

/// One `route` label's breaker row.
#[derive(Debug, Clone, Copy)]
struct RouteRow {
    state: BreakerState,
    transitions: [u64; 3],
}

/// The breaker rows by label: every route of a configured alias (closed with no transitions
/// when no request used it yet), and `other` for every other route seen (the most open state
/// among them, their transitions summed), present only once such a route was seen.
fn route_rows(engine: &Engine) -> BTreeMap<String, RouteRow> {
    let config = engine.config();
    let mut rows: BTreeMap<String, RouteRow> = config
        .models
        .keys()
        .filter_map(|alias| crate::route::plan(&config, alias).ok())
        .flat_map(|plan| plan.routes)
        .map(|route| {
            let row = RouteRow {
                state: BreakerState::Closed,
                transitions: [0; 3],
            };
            (route.to_string(), row)
        })
        .collect();
    let mut other: Option<RouteRow> = None;
    for BreakerCount {
        route,
        state,
        transitions,
    } in engine.breakers().counts()
    {
        let row = match rows.get_mut(&route) {
            Some(row) => row,
            None => other.get_or_insert(RouteRow {
                state: BreakerState::Closed,
                transitions: [0; 3],
            }),
        };
        row.state = worse(row.state, state);
        for (sum, n) in row.transitions.iter_mut().zip(transitions) {
            *sum = sum.saturating_add(n);
        }
    }
    // Configured routes are `provider/model`: none is named `other`.
    if let Some(other) = other {
        rows.insert(OTHER_ROUTE.to_owned(), other);
    }
    rows
}

/// The more open of two states.
fn worse(a: BreakerState, b: BreakerState) -> BreakerState {
    if b.level() > a.level() { b } else { a }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, s: &Snapshot) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
}

#[cfg(test)]
mod tests;
