//! Per-route circuit breakers: a route that keeps failing is skipped for a cooldown, then one
//! probe is let through (half-open); its success closes the breaker again, so traffic returns
//! to a recovered primary within one cooldown.
//!
//! A route is never stranded half-open: every admission is a [`Pass`] that reports the
//! attempt's outcome, and a pass dropped without a report (the client left, a detached answer
//! timed out, the answer was abandoned) gives its probe back, so the next request probes. A
//! probe that neither reports nor is dropped (an answer still streaming) holds the route for
//! at most one cooldown; after that the next request probes too.
//!
//! With `[state] backend = "redis"` ([`Breakers::share`]), a breaker opening on one instance
//! is published ([`crate::state::breakers`]) and every other instance treats the route as open
//! for the rest of that cooldown, without trying it. Then each instance probes it itself: one
//! probe per instance, not one cluster-wide (a probe is one request; sharing it would make
//! every instance wait on one instance's answer, and a dead prober's hold on it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::later;
use super::recent::{Recent, RecentStats};
use crate::state::breakers::SharedBreakers;
use crate::state::{BusMessage, Redis};

/// Messages of the breakers' channel queued at most before a listener counts as lagging (it
/// then reads the open routes again).
const BUS_CAPACITY: usize = 256;

/// Two openings whose ends are this close are one (the transit time of the news).
const SAME_OPENING: Duration = Duration::from_millis(250);

/// Routes whose breakers (with their transitions and recent outcomes) are kept at most: a
/// client naming `provider/model` routes directly could otherwise add one per model string.
/// Closed breakers make room; past it a new route goes untracked: it is let through, and its
/// outcomes are not counted until there is room.
const MAX_ROUTES: usize = 1024;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker skips its route before a probe, and how long a probe holds
    /// the half-open route before another request may probe.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    /// Skipped until `until`; `failures`: the consecutive failures that opened it.
    Open {
        until: Instant,
        failures: u32,
    },
    /// The cooldown is over; `probe` is the attempt testing the route, if one is out.
    HalfOpen {
        failures: u32,
        probe: Option<Probe>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    id: u64,
    /// Past it the probe no longer holds the route.
    deadline: Instant,
}

/// A breaker's state, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass.
    Closed,
    /// One probe may pass.
    HalfOpen,
    /// The route is skipped.
    Open,
}

impl BreakerState {
    /// Every state, in gauge order (0, 1, 2).
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open,
    ];

    /// `closed`, `half_open` or `open` (the words of `/admin/routes`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open (higher is worse).
    pub fn level(self) -> u8 {
        self as u8
    }

    fn of(state: &State) -> BreakerState {
        match state {
            State::Closed { .. } => BreakerState::Closed,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
        }
    }
}

/// One route's breaker for the metrics: its state and how often it entered each state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerCount {
    /// `provider/model`.
    pub route: String,
    /// The state now.
    pub state: BreakerState,
    /// Transitions into each state of [`BreakerState::ALL`] so far.
    pub transitions: [u64; 3],
}

/// What `/admin/routes` shows for one route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStatus {
    /// `provider/model`.
    pub route: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Consecutive failures: counted so far (closed), or those that opened the breaker (open,
    /// half-open).
    pub failures: u32,
    /// Milliseconds until a probe is allowed (open), or until the probe out no longer holds
    /// the route (half-open).
    pub retry_in_ms: u64,
    /// Attempts and failures over the last minute ([`super::recent`]).
    pub recent: RecentStats,
}

/// All routes' breakers.
#[derive(Debug)]
pub struct Breakers {
    inner: Mutex<Inner>,
    /// Where opened breakers are published, with `[state] backend = "redis"`.
    shared: OnceLock<(Arc<Redis>, Arc<SharedBreakers>)>,
}

#[derive(Debug)]
struct Inner {
    /// Under the same lock as the states: a reload changes both at once.
    config: BreakerConfig,
    states: HashMap<String, State>,
    next_probe: u64,
    /// Per route, transitions into each [`BreakerState`] (for the metrics).
    transitions: HashMap<String, [u64; 3]>,
    /// Per route, the last minute's attempts and failures (for `/admin/routes`).
    recent: HashMap<String, Recent>,
}

impl Inner {
    /// Sets `route`'s state, counting a transition when its [`BreakerState`] changes.
    /// (Callers have the route's entry already: no allocation but on a transition's first.)
    /// A route without an entry has none because [`Inner::slot`] found no room: it stays
    /// untracked.
    fn set(&mut self, route: &str, to: State) {
        let into = BreakerState::of(&to);
        let Some(state) = self.states.get_mut(route) else {
            return;
        };
        let from = BreakerState::of(&std::mem::replace(state, to));
        if from != into {
            let i = into as usize;
            match self.transitions.get_mut(route) {
                Some(counts) => counts[i] = counts[i].saturating_add(1),
                None => {
                    let mut counts = [0; 3];
                    counts[i] = 1;
                    self.transitions.insert(route.to_owned(), counts);
                }
            }
        }
    }

    /// `route`'s breaker, a closed one made for it if it had none; None when [`MAX_ROUTES`]
    /// routes hold a breaker that is not closed (the route then goes untracked).
    fn slot(&mut self, route: &str, now: Instant) -> Option<&mut State> {
        if !self.states.contains_key(route) {
            if self.states.len() >= MAX_ROUTES {
                // A closed breaker holds at most a few failures short of the threshold: the
                // least there is to forget, the idle ones first (what `/admin/routes` shows
                // of them is empty). Open and half-open ones are what keeps traffic off a
                // failing route, so they stay.
                let recent = &self.recent;
                let idle = |route: &String| recent.get(route).is_none_or(|r| r.idle(now));
                self.states
                    .retain(|route, state| !matches!(state, State::Closed { .. }) || !idle(route));
                if self.states.len() >= MAX_ROUTES {
                    self.states
                        .retain(|_, state| !matches!(state, State::Closed { .. }));
                }
                let states = &self.states;
                self.transitions
                    .retain(|route, _| states.contains_key(route));
                self.recent.retain(|route, _| states.contains_key(route));
                if self.states.len() >= MAX_ROUTES {
                    return None;
                }
            }
            self.states
                .insert(route.to_owned(), State::Closed { failures: 0 });
        }
        self.states.get_mut(route)
    }

    /// Counts an attempt's outcome in `route`'s recent window (a route [`Inner::slot`] found
    /// room for: windows are kept for breakers only, so that they are bounded alike).
    fn record(&mut self, route: &str, now: Instant, failed: bool) {
        if let Some(recent) = self.recent.get_mut(route) {
            recent.record(now, failed);
            return;
        }
        let mut recent = Recent::new(now);
        recent.record(now, failed);
        self.recent.insert(route.to_owned(), recent);
    }
}

/// One admission through a route's breaker: report the attempt's outcome with
/// [`Pass::success`] or [`Pass::failure`] (several failures when the route is retried under
/// the same pass). Dropped without a success, it gives back the half-open probe it holds.
#[derive(Debug)]
#[must_use = "a pass reports its attempt's outcome"]
pub struct Pass {
    breakers: Arc<Breakers>,
    route: String,
    /// The probe this pass holds, when it was admitted half-open.
    probe: Option<u64>,
}

impl Pass {
    /// The route answered: its breaker closes.
    pub fn success(self) {
        self.breakers.success(&self.route);
        // Closed now: nothing left to give back.
    }

    /// An attempt under this pass failed.
    pub fn failure(&mut self) {
        self.breakers.failure(&self.route);
        // A failed probe reopened the breaker: the pass no longer holds a probe.
        self.probe = None;
    }

    /// The route this pass admits to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Whether this pass holds its route's half-open probe.
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(id) = self.probe {
            self.breakers.release(&self.route, id);
        }
    }
}

impl Breakers {
    /// Breakers with `config`, every route closed.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            shared: OnceLock::new(),
            inner: Mutex::new(Inner {
                config,
                states: HashMap::new(),
                transitions: HashMap::new(),
                recent: HashMap::new(),
                next_probe: 0,
            }),
        }
    }

    /// Shares this instance's opened breakers with every instance on `redis`, and learns
    /// theirs: published as they open, and read again at start and whenever messages may
    /// have been missed. Call once, inside a tokio runtime.
    pub fn share(self: &Arc<Self>, redis: Arc<Redis>) {
        let scripts = Arc::new(SharedBreakers::default());
        if self
            .shared
            .set((Arc::clone(&redis), Arc::clone(&scripts)))
            .is_err()
        {
            return;
        }
        tokio::spawn(listen(Arc::downgrade(self), redis, scripts));
    }

    /// Another instance opened `route` for `left` more: it is skipped here too until then
    /// (longer if it is open here for longer), then probed as a local open breaker is.
    pub fn opened_elsewhere(&self, route: &str, left: Duration) {
        let now = Instant::now();
        self.with(|inner| {
            let threshold = inner.config.failure_threshold;
            let until = later(now, left);
            let Some(state) = inner.slot(route, now) else {
                return;
            };
            let to = match *state {
                // Its own opening read back (after a reset) or one no later than ours.
                State::Open { until: mine, .. } if later(mine, SAME_OPENING) >= until => return,
                State::Open { failures, .. } | State::HalfOpen { failures, .. } => {
                    State::Open { until, failures }
                }
                State::Closed { failures } => State::Open {
                    until,
                    failures: failures.max(threshold),
                },
            };
            tracing::info!(
                route,
                left_ms = left.as_millis() as u64,
                "circuit: opened on another instance, skipped here too"
            );
            inner.set(route, to);
        });
    }

    /// Publishes that `route` opened here for `cooldown`, in the background (the request
    /// path never waits for Redis; lost while Redis is down, as the others cannot hear then).
    fn publish(&self, route: &str, cooldown: Duration) {
        let Some((redis, scripts)) = self.shared.get() else {
            return;
        };
        let (redis, scripts, route) = (Arc::clone(redis), Arc::clone(scripts), route.to_owned());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = scripts.open(&redis, &route, cooldown).await {
                    tracing::debug!(error = %e, route, "circuit open not shared");
                }
            });
        }
    }

    /// Takes `config` (a reload) and forgets the routes `keep` refuses; the others keep their
    /// state (an open breaker stays open for the rest of its cooldown) and meet the new
    /// threshold and cooldown from their next failure or probe.
    pub fn reconfigure(&self, config: BreakerConfig, keep: impl Fn(&str) -> bool) {
        self.with(|inner| {
            inner.config = config;
            inner.states.retain(|route, _| keep(route));
            inner.transitions.retain(|route, _| keep(route));
            inner.recent.retain(|route, _| keep(route));
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update; the map is still
        // a valid map of states.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A pass for `route` if it may be tried now. An open breaker whose cooldown is over lets
    /// exactly one caller through as the probe; so does a half-open one whose probe was given
    /// back or has held it for a cooldown without reporting. A route past [`MAX_ROUTES`] is let
    /// through untracked.
    pub fn allow(self: &Arc<Self>, route: &str) -> Option<Pass> {
        let now = Instant::now();
        let probe = self.with(|inner| {
            let cooldown = inner.config.cooldown;
            let id = inner.next_probe;
            let Some(state) = inner.slot(route, now) else {
                return Some(None);
            };
            let failures = match *state {
                State::Closed { .. } => return Some(None),
                State::Open { until, .. } if now < until => return None,
                State::HalfOpen {
                    probe: Some(probe), ..
                } if now < probe.deadline => return None,
                State::Open { failures, .. } => {
                    tracing::info!(route, "circuit half-open: probing");
                    failures
                }
                State::HalfOpen { failures, probe } => {
                    if probe.is_some() {
                        tracing::warn!(
                            route,
                            "circuit probe did not report within the cooldown: probing again"
                        );
                    }
                    failures
                }
            };
            let probing = State::HalfOpen {
                failures,
                probe: Some(Probe {
                    id,
                    deadline: later(now, cooldown),
                }),
            };
            inner.set(route, probing);
            inner.next_probe += 1;
            Some(Some(id))
        })?;
        Some(Pass {
            breakers: Arc::clone(self),
            route: route.to_owned(),
            probe,
        })
    }

    /// Whether `route`'s breaker is closed (a route it has not seen is), read without taking
    /// a probe as [`Breakers::allow`] would.
    pub fn closed(&self, route: &str) -> bool {
        self.with(|inner| {
            inner
                .states
                .get(route)
                .is_none_or(|s| matches!(s, State::Closed { .. }))
        })
    }

    /// How long until `route` lets a request through; None when it would now.
    pub fn retry_in(&self, route: &str) -> Option<Duration> {
        let now = Instant::now();
        self.with(|inner| match inner.states.get(route)? {
            State::Open { until, .. } if now < *until => Some(*until - now),
            State::HalfOpen {
                probe: Some(probe), ..
            } if now < probe.deadline => Some(probe.deadline - now),
            _ => None,
        })
    }

    /// `route` answered: its breaker closes. (A run reports through its [`Pass`]; this is
    /// for an attempt made without one.)
    pub fn success(&self, route: &str) {
        let now = Instant::now();
        self.with(|inner| {
            let Some(state) = inner.slot(route, now).copied() else {
                return;
            };
            inner.record(route, now, false);
            if !matches!(state, State::Closed { .. }) {
                tracing::info!(route, "circuit closed");
            }
            inner.set(route, State::Closed { failures: 0 });
        });
    }

    /// `route` failed: counted, and the breaker opens at the threshold (at once when it was
    /// open or half-open). (A run reports through its [`Pass`].)
    pub fn failure(&self, route: &str) {
        let now = Instant::now();
        let opened = self.with(|inner| {
            let config = inner.config;
            // An untracked route's failure is not counted.
            let state = inner.slot(route, now).copied()?;
            inner.record(route, now, true);
            let (failures, open) = match state {
                State::Closed { failures } => {
                    let failures = failures.saturating_add(1);
                    (failures, failures >= config.failure_threshold)
                }
                // A failed probe, or a failure reported late: open (again).
                State::Open { failures, .. } | State::HalfOpen { failures, .. } => {
                    (failures.saturating_add(1), true)
                }
            };
            if open {
                tracing::warn!(
                    route,
                    failures,
                    cooldown_ms = config.cooldown.as_millis() as u64,
                    "circuit open"
                );
                let opened = State::Open {
                    until: later(now, config.cooldown),
                    failures,
                };
                inner.set(route, opened);
                Some(config.cooldown)
            } else {
                inner.set(route, State::Closed { failures });
                None
            }
        });
        if let Some(cooldown) = opened {
            self.publish(route, cooldown);
        }
    }

    /// Probe `id` of `route` ended without a report: the next request may probe.
    fn release(&self, route: &str, id: u64) {
        self.with(|inner| {
            if let Some(State::HalfOpen { failures, probe }) = inner.states.get_mut(route)
                && probe.is_some_and(|p| p.id == id)
            {
                tracing::info!(
                    route,
                    failures,
                    "circuit probe abandoned: the next request probes"
                );
                *probe = None;
            }
        });
    }

    /// Every route seen: its state and its transitions, for the metrics (unsorted).
    pub fn counts(&self) -> Vec<BreakerCount> {
        self.with(|inner| {
            inner
                .states
                .iter()
                .map(|(route, state)| BreakerCount {
                    route: route.clone(),
                    state: BreakerState::of(state),
                    transitions: inner.transitions.get(route).copied().unwrap_or_default(),
                })
                .collect()
        })
    }

    /// Every route's state, sorted by route.
    pub fn snapshot(&self) -> Vec<RouteStatus> {
        let now = Instant::now();
        let mut all: Vec<RouteStatus> = self.with(|inner| {
            inner
                .states
                .iter()
                .map(|(route, state)| {
                    let (failures, until) = match *state {
                        State::Closed { failures } => (failures, None),
                        State::Open { until, failures } => (failures, Some(until)),
                        State::HalfOpen { failures, probe } => {
                            (failures, probe.map(|p| p.deadline))
                        }
                    };
                    let retry_in =
                        until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                    RouteStatus {
                        route: route.clone(),
                        state: BreakerState::of(state).as_str(),
                        failures,
                        retry_in_ms: retry_in.as_millis() as u64,
                        recent: inner
                            .recent
                            .get(route)
                            .map_or_else(RecentStats::none, |r| r.stats(now)),
                    }
                })
                .collect()
        });
        all.sort_by(|a, b| a.route.cmp(&b.route));
        all
    }
}

/// Learns the routes other instances open: every message of the channel, and after each reset
/// (a (re)subscription, a disconnection, an overflow) the open set itself. Ends with the
/// breakers.
async fn listen(breakers: Weak<Breakers>, redis: Arc<Redis>, scripts: Arc<SharedBreakers>) {
    let mut rx = redis
        .bus()
        .subscribe(SharedBreakers::channel(&redis), BUS_CAPACITY);
    while let Some(message) = rx.recv().await {
        let Some(breakers) = breakers.upgrade() else {
            return;
        };
        match message {
            BusMessage::Message(payload) => {
                if let Some(opened) = crate::state::breakers::parse(&payload)
                    && opened.instance != redis.instance()
                {
                    breakers.opened_elsewhere(&opened.route, opened.left);
                }
            }
            BusMessage::Reset => match scripts.read(&redis).await {
                Ok(open) => {
                    for (route, left) in open {
                        breakers.opened_elsewhere(&route, left);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "circuit states not read"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    fn breakers() -> Arc<Breakers> {
        Arc::new(Breakers::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: COOLDOWN,
        }))
    }

    fn fail(b: &Arc<Breakers>, route: &str) {
        b.allow(route).expect("closed").failure();
    }

    fn open(b: &Arc<Breakers>) {
        for _ in 0..3 {
            fail(b, "a/m");
        }
        assert!(b.allow("a/m").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_then_probes_and_closes() {
        let b = breakers();
        for _ in 0..2 {
            fail(&b, "a/m");
            assert!(b.allow("a/m").is_some());
        }
        fail(&b, "a/m");
        assert!(b.allow("a/m").is_none(), "open after 3 failures");
        assert_eq!(
            b.snapshot()[0],
            RouteStatus {
                route: "a/m".into(),
                state: "open",
                failures: 3,
                retry_in_ms: 5000,
                recent: RecentStats {
                    window_s: 60,
                    attempts: 3,
                    failures: 3,
                    error_rate: 1.0,
                },
            }
        );
        assert_eq!(b.retry_in("a/m"), Some(COOLDOWN));
        tokio::time::advance(COOLDOWN).await;
        let probe = b.allow("a/m").expect("the probe goes through");
        assert!(b.allow("a/m").is_none(), "only one probe at a time");
        assert_eq!(b.snapshot()[0].state, "half_open");
        assert_eq!(b.snapshot()[0].failures, 3);
        probe.success();
        assert!(b.allow("a/m").is_some());
        assert_eq!(b.snapshot()[0].state, "closed");
        assert_eq!(b.retry_in("a/m"), None);
    }

    /// A reconfiguration keeps the open breakers of the routes it keeps (until their cooldown
    /// ends), forgets the others, and counts the next failures against the new threshold.
    #[tokio::test(start_paused = true)]
    async fn reconfiguring_keeps_kept_routes_and_takes_the_new_threshold() {
        for threshold in 1..=5u32 {
            let b = breakers();
            open(&b);
            for _ in 0..2 {
                fail(&b, "b/m");
            }
            b.reconfigure(
                BreakerConfig {
                    failure_threshold: threshold,
                    cooldown: COOLDOWN * 2,
                },
                |route| route == "a/m" || route == "b/m",
            );
            assert!(b.allow("a/m").is_none(), "still open");
            assert_eq!(
                b.retry_in("a/m"),
                Some(COOLDOWN),
                "its own cooldown runs on"
            );
            // b/m had 2 failures: one more opens it when the new threshold is 3 or less.
            fail(&b, "b/m");
            assert_eq!(b.allow("b/m").is_none(), threshold <= 3, "t={threshold}");
            b.reconfigure(
                BreakerConfig {
                    failure_threshold: threshold,
                    cooldown: COOLDOWN,
                },
                |route| route == "b/m",
            );
            assert!(b.closed("a/m"), "a forgotten route starts fresh");
            assert!(b.snapshot().iter().all(|s| s.route != "a/m"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_with_its_failures_counted() {
        let b = breakers();
        open(&b);
        tokio::time::advance(COOLDOWN).await;
        let mut probe = b.allow("a/m").unwrap();
        probe.failure();
        assert!(b.allow("a/m").is_none());
        assert_eq!(b.snapshot()[0].state, "open");
        assert_eq!(b.snapshot()[0].failures, 4);
        // The failed probe's pass holds nothing any more: dropping it opens nothing.
        drop(probe);
        assert!(b.allow("a/m").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_a_report_lets_the_next_request_probe() {
        let b = breakers();
        open(&b);
        tokio::time::advance(COOLDOWN).await;
        let probe = b.allow("a/m").unwrap();
        assert!(b.allow("a/m").is_none());
        drop(probe);
        let again = b.allow("a/m").expect("the abandoned probe was given back");
        again.success();
        assert_eq!(b.snapshot()[0].state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_holds_the_route_one_cooldown_at_most() {
        let b = breakers();
        open(&b);
        tokio::time::advance(COOLDOWN).await;
        let _silent = b.allow("a/m").unwrap();
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(b.allow("a/m").is_none());
        assert_eq!(b.retry_in("a/m"), Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = b.allow("a/m").expect("the silent probe's deadline passed");
        // The first probe, dropped late, does not give back the second one.
        drop(_silent);
        assert!(b.allow("a/m").is_none());
        second.success();
        assert!(b.allow("a/m").is_some());
    }

    /// A route another instance opened is skipped for what is left of its cooldown (never
    /// shortened by a later, shorter news), then probed once here like a local open breaker.
    #[tokio::test(start_paused = true)]
    async fn a_route_opened_elsewhere_is_skipped_until_then_probed_once_here() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let b = breakers();
            let failures = rng.u32(0..3);
            for _ in 0..failures {
                fail(&b, "a/m");
            }
            let left = Duration::from_millis(rng.u64(1..20_000));
            b.opened_elsewhere("a/m", left);
            // A shorter news later does not shorten it.
            b.opened_elsewhere("a/m", left / 2);
            assert!(b.allow("a/m").is_none());
            assert!(b.allow("b/m").is_some(), "other routes are untouched");
            assert_eq!(b.retry_in("a/m"), Some(left));
            tokio::time::advance(left - Duration::from_millis(1)).await;
            assert!(b.allow("a/m").is_none());
            tokio::time::advance(Duration::from_millis(1)).await;
            let probe = b.allow("a/m").expect("the cooldown is over: a probe");
            assert!(probe.probing());
            assert!(b.allow("a/m").is_none(), "one probe at a time");
            probe.success();
            assert!(b.closed("a/m"));
        }
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breakers();
        fail(&b, "a/m");
        fail(&b, "a/m");
        b.allow("a/m").unwrap().success();
        fail(&b, "a/m");
        assert!(b.allow("a/m").is_some());
        assert_eq!(b.snapshot()[0].failures, 1);
    }

    /// Captures what is logged while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn count(&self, needle: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .matches(needle)
                .count()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn circuit_closed_is_logged_only_after_the_breaker_was_open() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        // Interest another thread cached for these callsites before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        let b = breakers();
        b.allow("a/m").unwrap().success();
        fail(&b, "a/m");
        b.allow("a/m").unwrap().success();
        assert_eq!(logs.count("circuit closed"), 0, "never opened");
        open(&b);
        assert_eq!(logs.count("circuit open"), 1);
        tokio::time::advance(COOLDOWN).await;
        b.allow("a/m").unwrap().success();
        assert_eq!(logs.count("circuit closed"), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Ask for a pass; keep it.
        Allow,
        /// Report success on the kept pass `i` (modulo).
        Success(usize),
        /// Report failure on the kept pass `i`.
        Failure(usize),
        /// Drop the kept pass `i` unreported.
        Drop(usize),
        /// Let time pass (ms).
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Allow),
            1 => any::<usize>().prop_map(Op::Success),
            3 => any::<usize>().prop_map(Op::Failure),
            2 => any::<usize>().prop_map(Op::Drop),
            2 => (0u64..7000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever the passes do (report, fail, vanish, or hang on), an open breaker shows
        /// the failures that opened it, and one cooldown later the route lets a request
        /// through. The metrics' transition counts are exactly the state changes seen.
        #[test]
        fn no_history_strands_a_route(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let b = breakers();
                let mut passes: Vec<Pass> = Vec::new();
                let (mut last, mut seen) = (BreakerState::Closed, [0u64; 3]);
                for op in ops {
                    let pick = |i: usize, n: usize| i % n;
                    match op {
                        Op::Allow => passes.extend(b.allow("a/m")),
                        Op::Success(i) if !passes.is_empty() => {
                            let i = pick(i, passes.len());
                            passes.swap_remove(i).success();
                        }
                        Op::Failure(i) if !passes.is_empty() => {
                            let i = pick(i, passes.len());
                            passes[i].failure();
                        }
                        Op::Drop(i) if !passes.is_empty() => {
                            let i = pick(i, passes.len());
                            drop(passes.swap_remove(i));
                        }
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                        _ => {}
                    }
                    for status in b.snapshot() {
                        prop_assert!(
                            status.state == "closed" || status.failures >= 3,
                            "{status:?}"
                        );
                        prop_assert!(status.retry_in_ms <= COOLDOWN.as_millis() as u64);
                    }
                    if let Some(now) = b.counts().first() {
                        if now.state != last {
                            seen[now.state.level() as usize] += 1;
                            last = now.state;
                        }
                        prop_assert_eq!(now.transitions, seen);
                    }
                }
                tokio::time::advance(COOLDOWN).await;
                prop_assert!(b.allow("a/m").is_some(), "{:?}", b.snapshot());
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn routes_show_their_recent_error_rate_over_the_last_minute() {
        let b = breakers();
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut attempts, mut failures, mut in_a_row) = (0u64, 0u64, 0);
        for _ in 0..40 {
            // Below the threshold in a row: the breaker stays closed, the rate still shows.
            if in_a_row < 2 && rng.bool() {
                b.failure("a/m");
                failures += 1;
                in_a_row += 1;
            } else {
                b.success("a/m");
                in_a_row = 0;
            }
            attempts += 1;
            b.success("b/m");
        }
        let snapshot = b.snapshot();
        assert_eq!(snapshot[0].state, "closed");
        let a = &snapshot[0].recent;
        assert_eq!((a.attempts, a.failures), (attempts, failures));
        assert!((a.error_rate - failures as f64 / attempts as f64).abs() < 1e-9);
        assert_eq!(snapshot[1].recent.error_rate, 0.0);
        assert_eq!(snapshot[1].recent.attempts, 40);
        tokio::time::advance(super::super::recent::WINDOW).await;
        for route in b.snapshot() {
            assert_eq!(route.recent.attempts, 0, "{}: a minute later", route.route);
        }
    }

    /// Routes held, as the metrics and `/admin/routes` see them.
    fn held(b: &Breakers) -> (usize, usize) {
        b.with(|inner| (inner.states.len(), inner.transitions.len()))
    }

    /// A subscriber that takes every event and writes none, for a test that logs a lot: a
    /// log line's callsite first hit on a thread with no subscriber can have its interest
    /// cached as "never" for every thread, which another test counting log lines (above)
    /// would then miss.
    fn quiet() -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .finish(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_model_strings_is_bounded_and_keeps_failing_routes_open() {
        let _quiet = quiet();
        let b = breakers();
        open(&b);
        // Seeded: a client naming fresh `provider/model` routes, some of which fail (enough
        // to open a few), interleaved with the real route's requests.
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        for i in 0..5 * MAX_ROUTES {
            let route = format!("p/junk-{i}");
            match rng.u8(0..8) {
                0 => {
                    for _ in 0..3 {
                        if let Some(mut pass) = b.allow(&route) {
                            pass.failure();
                        }
                    }
                }
                1 => b.failure(&route),
                _ => {
                    if let Some(pass) = b.allow(&route) {
                        pass.success();
                    }
                }
            }
            let (states, transitions) = held(&b);
            assert!(
                states <= MAX_ROUTES && transitions <= MAX_ROUTES,
                "{i}: {states}"
            );
            assert!(
                b.allow("a/m").is_none(),
                "{i}: the failing route stays open"
            );
        }
        assert_eq!(b.counts().len(), held(&b).0);
        // Every slot taken by an open breaker: a new route is let through untracked.
        for i in 0..MAX_ROUTES {
            for _ in 0..3 {
                b.failure(&format!("p/open-{i}"));
            }
        }
        let (states, _) = held(&b);
        assert_eq!(states, MAX_ROUTES);
        let mut pass = b.allow("p/late").expect("untracked routes pass");
        assert!(!pass.probing());
        pass.failure();
        assert!(b.snapshot().iter().all(|r| r.route != "p/late"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_closed_routes_make_room_first() {
        let _quiet = quiet();
        let b = breakers();
        let counted = |b: &Breakers| {
            b.snapshot()
                .iter()
                .filter(|r| r.recent.attempts > 0)
                .count()
        };
        for i in 0..MAX_ROUTES {
            b.success(&format!("p/m{i}"));
        }
        assert_eq!(counted(&b), MAX_ROUTES);
        tokio::time::advance(super::super::recent::WINDOW).await;
        b.success("p/busy");
        fail(&b, "p/new");
        let snapshot = b.snapshot();
        let new = snapshot.iter().find(|r| r.route == "p/new").unwrap();
        assert_eq!(new.recent.failures, 1, "room was made for it");
        assert_eq!(snapshot.len(), 2, "the idle routes made room");
        // With no idle one left, busy closed routes make room: the bound holds.
        for i in 0..2 * MAX_ROUTES {
            b.success(&format!("p/again{i}"));
            assert!(held(&b).0 <= MAX_ROUTES);
        }
    }
}
