//! Per-route circuit breakers: a route that keeps failing is skipped for a cooldown, then one
//! probe is let through (half-open); its success closes the breaker again, so traffic returns
//! to a recovered primary within one cooldown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker skips its route before a probe.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// What `/admin/routes` shows for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// `provider/model`.
    pub route: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Consecutive failures counted (closed state).
    pub failures: u32,
    /// Milliseconds until a probe is allowed (open state).
    pub retry_in_ms: u64,
}

/// All routes' breakers.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// Breakers with `config`, every route closed.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, State>) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update; the map is still
        // a valid map of states.
        let mut guard = self.states.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Whether `route` may be tried now. An open breaker whose cooldown is over lets exactly
    /// one caller through as the probe.
    pub fn allow(&self, route: &str) -> bool {
        let now = Instant::now();
        self.with(|states| {
            let state = states
                .entry(route.to_owned())
                .or_insert(State::Closed { failures: 0 });
            match *state {
                State::Closed { .. } => true,
                State::Open { until } if now >= until => {
                    tracing::info!(route, "circuit half-open: probing");
                    *state = State::HalfOpen { probing: true };
                    true
                }
                State::Open { .. } => false,
                State::HalfOpen { probing } => {
                    if probing {
                        false
                    } else {
                        *state = State::HalfOpen { probing: true };
                        true
                    }
                }
            }
        })
    }

    /// `route` answered.
    pub fn success(&self, route: &str) {
        self.with(|states| {
            let state = states
                .entry(route.to_owned())
                .or_insert(State::Closed { failures: 0 });
            if !matches!(state, State::Closed { failures: 0 }) {
                tracing::info!(route, "circuit closed");
            }
            *state = State::Closed { failures: 0 };
        });
    }

    /// `route` failed.
    pub fn failure(&self, route: &str) {
        let config = self.config;
        self.with(|states| {
            let state = states
                .entry(route.to_owned())
                .or_insert(State::Closed { failures: 0 });
            let failures = match *state {
                State::Closed { failures } => failures + 1,
                // A failed probe, or a failure reported late: open again.
                _ => config.failure_threshold,
            };
            if failures >= config.failure_threshold {
                tracing::warn!(
                    route,
                    failures,
                    cooldown_ms = config.cooldown.as_millis() as u64,
                    "circuit open"
                );
                *state = State::Open {
                    until: Instant::now() + config.cooldown,
                };
            } else {
                *state = State::Closed { failures };
            }
        });
    }

    /// Every route's state, sorted by route.
    pub fn snapshot(&self) -> Vec<RouteStatus> {
        let now = Instant::now();
        let mut all: Vec<RouteStatus> = self.with(|states| {
            states
                .iter()
                .map(|(route, state)| {
                    let (name, failures, retry_in) = match *state {
                        State::Closed { failures } => ("closed", failures, Duration::ZERO),
                        State::Open { until } => ("open", 0, until.saturating_duration_since(now)),
                        State::HalfOpen { .. } => ("half_open", 0, Duration::ZERO),
                    };
                    RouteStatus {
                        route: route.clone(),
                        state: name,
                        failures,
                        retry_in_ms: retry_in.as_millis() as u64,
                    }
                })
                .collect()
        });
        all.sort_by(|a, b| a.route.cmp(&b.route));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_then_probes_and_closes() {
        let b = breakers();
        for _ in 0..2 {
            b.failure("a/m");
            assert!(b.allow("a/m"));
        }
        b.failure("a/m");
        assert!(!b.allow("a/m"), "open after 3 failures");
        assert_eq!(b.snapshot()[0].state, "open");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.allow("a/m"), "the probe goes through");
        assert!(!b.allow("a/m"), "only one probe at a time");
        b.success("a/m");
        assert!(b.allow("a/m"));
        assert_eq!(b.snapshot()[0].state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let b = breakers();
        for _ in 0..3 {
            b.failure("a/m");
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.allow("a/m"));
        b.failure("a/m");
        assert!(!b.allow("a/m"));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breakers();
        b.failure("a/m");
        b.failure("a/m");
        b.success("a/m");
        b.failure("a/m");
        assert!(b.allow("a/m"));
    }
}
