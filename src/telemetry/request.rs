//! One request's record: what the access line and the request counters are made of.
//!
//! The layer ([`super::layer`]) makes a [`Record`] per HTTP request and puts it in the
//! request's extensions as an [`Observed`]; the door and the engine fill it as they learn
//! things (the model asked for, the routes tried, the first token, the usage, a failure); the
//! layer finishes it when the response body ends or is dropped (the client left). Finishing
//! writes exactly one access line (target `streamgate::access`) and counts the request.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use providers::Dialect;
use providers::untrusted::untrusted;

use super::metrics::{Metrics, NONE, RequestLabels};

/// The tracing target of access lines.
pub const ACCESS_TARGET: &str = "streamgate::access";

/// Most routes one access line names (an answer that tried more says how many).
const MAX_ROUTES: usize = 8;

/// Which door a request came through: a closed set (it is a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// A dialect's chat door (`/v1/chat/completions`, `/v1/messages`, `/v1/responses`).
    Dialect(Dialect),
    /// The native Agent Event Stream door over SSE (`/v1/streams...`).
    Native,
    /// The WebSocket door (`/v1/ws`), the connection and each stream on it.
    WebSocket,
    /// A path forwarded to a provider as is.
    Passthrough,
    /// `/admin/*`.
    Admin,
    /// `GET /metrics`.
    Metrics,
    /// The gateway's own small routes: models, health, count_tokens.
    Gateway,
}

impl Door {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Dialect(d) => d.as_str(),
            Door::Native => "native",
            Door::WebSocket => "websocket",
            Door::Passthrough => "passthrough",
            Door::Admin => "admin",
            Door::Metrics => "metrics",
            Door::Gateway => "gateway",
        }
    }
}

/// How a request ended: a closed set (a label of `streamgate_requests_total`, a field of the
/// access line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered whole.
    Ok,
    /// Refused as the client's fault (4xx other than 429).
    ClientError,
    /// Refused by a rate limit (429).
    RateLimited,
    /// Every route failed before the answer started (502, 503, 504).
    UpstreamError,
    /// The gateway failed (500).
    ServerError,
    /// The answer started and then ended with an error event.
    Interrupted,
    /// The client left before the response ended.
    Cancelled,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ServerError => "server_error",
            Outcome::Interrupted => "interrupted",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome of a response with `status`, a body that `ended` (or was dropped first),
    /// and the answer's own failure if it had one.
    pub fn of(status: u16, ended: bool, failure: Option<Outcome>) -> Outcome {
        match status {
            429 => Outcome::RateLimited,
            400..=499 => Outcome::ClientError,
            502..=504 => Outcome::UpstreamError,
            500..=599 => Outcome::ServerError,
            _ => match failure {
                Some(failure) => failure,
                None if ended => Outcome::Ok,
                None => Outcome::Cancelled,
            },
        }
    }
}

/// `2xx`, `4xx`...: the label of a status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Tokens of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Whether a count is the gateway's estimate.
    pub estimated: bool,
}

/// Where a finished record goes.
#[derive(Debug)]
struct Sink {
    /// None with `[server] metrics = false`.
    metrics: Option<Arc<Metrics>>,
    access: bool,
}

/// One request's record (see the module doc).
#[derive(Debug)]
pub struct Record {
    id: String,
    door: Door,
    method: http::Method,
    /// The route template (`/v1/streams/{id}`), never the raw path; `*` for the fallback.
    path: String,
    started: Instant,
    span: tracing::Span,
    sink: Option<Sink>,
    state: Mutex<State>,
}

/// What the door and the engine learn as the request goes.
#[derive(Debug, Default)]
struct State {
    /// The model asked for, as shown in logs ([`untrusted`]).
    model: Option<String>,
    /// Its label: a configured alias, else `other`.
    model_label: Option<String>,
    /// Routes tried, in order (at most [`MAX_ROUTES`]).
    routes: Vec<String>,
    /// The label of the route that answered last.
    route_label: Option<String>,
    ttft: Option<Duration>,
    tokens: Option<Tokens>,
    attempts: u32,
    failure: Option<Outcome>,
    finished: bool,
}

/// A request's record, shared by the layer, the door, the engine and work spawned for the
/// request.
#[derive(Debug, Clone)]
pub struct Observed(Arc<Record>);

impl Observed {
    /// A record that is counted in `metrics` (and logged when `access`) when finished.
    pub fn new(
        id: String,
        door: Door,
        method: http::Method,
        path: String,
        span: tracing::Span,
        metrics: Option<Arc<Metrics>>,
        access: bool,
    ) -> Observed {
        Observed(Arc::new(Record {
            id,
            door,
            method,
            path,
            started: Instant::now(),
            span,
            sink: Some(Sink { metrics, access }),
            state: Mutex::default(),
        }))
    }

    /// A record nothing counts nor logs: work no HTTP request started (a stream the journal
    /// brought back), and tests.
    pub fn detached(id: String) -> Observed {
        Observed(Arc::new(Record {
            id,
            door: Door::Gateway,
            method: http::Method::GET,
            path: String::new(),
            started: Instant::now(),
            span: tracing::Span::none(),
            sink: None,
            state: Mutex::default(),
        }))
    }

    /// The request's id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The request's span.
    pub fn span(&self) -> &tracing::Span {
        &self.0.span
    }

    /// The metrics it counts in (None for a detached record).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.0.sink.as_ref().and_then(|s| s.metrics.as_ref())
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic elsewhere while holding the lock leaves plain data: still usable.
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// The model the client asked for, and its label (see [`super::metrics::model_label`]).
    pub fn set_model(&self, model: &str, label: String) {
        let shown = untrusted(model).to_string();
        self.with(|s| {
            s.model = Some(shown);
            s.model_label = Some(label);
        });
    }

    /// An attempt on `route` (shown as is: routes come from the configuration or the model
    /// name, which [`crate::route::plan`] checked) counted under `label`.
    pub fn attempt(&self, route: &crate::route::Route, label: &str) {
        self.with(|s| {
            s.attempts = s.attempts.saturating_add(1);
            let route = route.to_string();
            if s.routes.last() != Some(&route) && s.routes.len() < MAX_ROUTES {
                s.routes.push(route);
            }
            if s.route_label.as_deref() != Some(label) {
                s.route_label = Some(label.to_owned());
            }
        });
    }

    /// The answer's first token came `after` the request arrived.
    pub fn first_token(&self) {
        let after = self.0.started.elapsed();
        self.with(|s| {
            s.ttft.get_or_insert(after);
        });
    }

    /// The answer's tokens.
    pub fn tokens(&self, tokens: Tokens) {
        self.with(|s| s.tokens = Some(tokens));
    }

    /// The answer ended with an error after it started.
    pub fn interrupted(&self) {
        self.with(|s| s.failure = Some(Outcome::Interrupted));
    }

    /// A guard that finishes the request with `status` when dropped: as ended if
    /// [`Finisher::ended`] was called, else as left early (the client went, the work was
    /// dropped).
    pub fn finisher(&self, status: u16) -> Finisher {
        Finisher {
            observed: self.clone(),
            status,
            ended: false,
        }
    }

    /// A record of its own for work a long-lived request starts (a stream started on a
    /// WebSocket connection): a fresh id, the same door and sinks, its own span.
    pub fn child(&self, method: http::Method, path: &str) -> Observed {
        let id = super::request_id::fresh();
        let span = tracing::info_span!(
            parent: &self.0.span,
            "request",
            request_id = %id,
            door = self.0.door.as_str(),
            method = %method,
            path = %path,
        );
        Observed(Arc::new(Record {
            id,
            door: self.0.door,
            method,
            path: path.to_owned(),
            started: Instant::now(),
            span,
            sink: self.0.sink.as_ref().map(|s| Sink {
                metrics: s.metrics.clone(),
                access: s.access,
            }),
            state: Mutex::default(),
        }))
    }

    /// Finishes the request (once; later calls do nothing): the response had `status`, and
    /// its body `ended` (else it was dropped before its end). Writes the access line and
    /// counts the request.
    pub fn finish(&self, status: u16, ended: bool) {
        let Some(sink) = &self.0.sink else { return };
        let record = &self.0;
        let duration = record.started.elapsed();
        let Some((outcome, labels, line)) = self.with(|s| {
            if s.finished {
                return None;
            }
            s.finished = true;
            let outcome = Outcome::of(status, ended, s.failure);
            let labels = RequestLabels {
                door: record.door.as_str(),
                route: s.route_label.clone().unwrap_or_else(|| NONE.to_owned()),
                model: s.model_label.clone().unwrap_or_else(|| NONE.to_owned()),
                status_class: status_class(status),
                outcome: outcome.as_str(),
            };
            let line = Line {
                model: s.model.take(),
                routes: std::mem::take(&mut s.routes).join(","),
                ttft_ms: s.ttft.map(|d| d.as_millis() as u64),
                tokens: s.tokens,
                attempts: s.attempts,
            };
            Some((outcome, labels, line))
        }) else {
            return;
        };
        if let Some(metrics) = &sink.metrics {
            metrics.request(&labels, duration);
        }
        if sink.access {
            record.span.in_scope(|| {
                let tokens = line.tokens;
                tracing::info!(
                    target: ACCESS_TARGET,
                    request_id = %record.id,
                    door = record.door.as_str(),
                    method = %record.method,
                    path = %record.path,
                    model = line.model,
                    routes = line.routes,
                    status,
                    ttft_ms = line.ttft_ms,
                    duration_ms = duration.as_millis() as u64,
                    tokens_in = tokens.map(|t| t.input),
                    tokens_out = tokens.map(|t| t.output),
                    tokens_estimated = tokens.map(|t| t.estimated),
                    attempts = line.attempts,
                    outcome = outcome.as_str(),
                    "request finished"
                );
            });
        }
    }
}

/// Finishes a request when dropped (see [`Observed::finisher`]).
#[derive(Debug)]
pub struct Finisher {
    observed: Observed,
    status: u16,
    ended: bool,
}

impl Finisher {
    /// The request's work ended (rather than being dropped on the way).
    pub fn ended(mut self) {
        self.ended = true;
    }

    /// The status it finishes with, once known.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        self.observed.finish(self.status, self.ended);
    }
}

/// The access line's fields taken from the state.
struct Line {
    model: Option<String>,
    routes: String,
    ttft_ms: Option<u64>,
    tokens: Option<Tokens>,
    attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_before_the_stream() {
        for status in 100..600u16 {
            for ended in [false, true] {
                for failure in [None, Some(Outcome::Interrupted)] {
                    let outcome = Outcome::of(status, ended, failure);
                    let expected = match status {
                        429 => Outcome::RateLimited,
                        400..=499 => Outcome::ClientError,
                        502..=504 => Outcome::UpstreamError,
                        500..=599 => Outcome::ServerError,
                        _ if failure.is_some() => Outcome::Interrupted,
                        _ if ended => Outcome::Ok,
                        _ => Outcome::Cancelled,
                    };
                    assert_eq!(outcome, expected, "{status} {ended} {failure:?}");
                }
            }
            assert_eq!(&status_class(status)[..1], &status.to_string()[..1]);
        }
    }
}
