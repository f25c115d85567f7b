//! Recent outcomes of one route: attempts and failures over the last minute, in fixed buckets,
//! for `/admin/routes` and `streamgate status`. The breaker says whether a route is skipped;
//! this says how it has been doing, which a closed breaker with 4 of 5 failures in a row
//! (or one that fails every other attempt and never opens) does not.
//!
//! Memory is fixed per route ([`BUCKETS`] counters); the window moves in steps of one bucket,
//! so what is reported covers the last 55 to 60 seconds.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Buckets in the window.
pub const BUCKETS: usize = 12;
/// The span of one bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// The whole window ([`BUCKETS`] × [`BUCKET`]).
pub const WINDOW: Duration = Duration::from_secs(BUCKET.as_secs() * BUCKETS as u64);

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which step of [`BUCKET`] since the window's origin these counts are of.
    step: u64,
    attempts: u64,
    failures: u64,
}

/// One route's outcomes over the last [`WINDOW`].
#[derive(Debug, Clone)]
pub struct Recent {
    origin: Instant,
    buckets: [Bucket; BUCKETS],
    /// The step of the last outcome recorded (for forgetting idle routes).
    last: u64,
}

/// What `/admin/routes` shows of a route's recent outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecentStats {
    /// The window's length in seconds.
    pub window_s: u64,
    /// Attempts that reported an outcome (retries count each).
    pub attempts: u64,
    /// Those that failed.
    pub failures: u64,
    /// `failures / attempts`; 0 without attempts.
    pub error_rate: f64,
}

impl RecentStats {
    /// No outcome in the window (a route whose window is not kept).
    pub fn none() -> Self {
        RecentStats {
            window_s: WINDOW.as_secs(),
            attempts: 0,
            failures: 0,
            error_rate: 0.0,
        }
    }
}

impl Recent {
    /// An empty window starting now.
    pub fn new(now: Instant) -> Self {
        Recent {
            origin: now,
            buckets: [Bucket::default(); BUCKETS],
            last: 0,
        }
    }

    fn step(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_millis() / BUCKET.as_millis()) as u64
    }

    /// Counts one attempt's outcome at `now`.
    pub fn record(&mut self, now: Instant, failed: bool) {
        let step = self.step(now);
        let bucket = &mut self.buckets[(step % BUCKETS as u64) as usize];
        if bucket.step > step {
            // Older than the window (a report that waited behind newer ones): not counted.
            return;
        }
        if bucket.step != step {
            *bucket = Bucket {
                step,
                ..Bucket::default()
            };
        }
        bucket.attempts = bucket.attempts.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u64::from(failed));
        self.last = self.last.max(step);
    }

    /// The counts of the buckets still inside the window at `now`.
    pub fn stats(&self, now: Instant) -> RecentStats {
        let step = self.step(now);
        let (attempts, failures) = self
            .buckets
            .iter()
            .filter(|b| b.step + BUCKETS as u64 > step && b.step <= step)
            .fold((0u64, 0u64), |(a, f), b| {
                (a.saturating_add(b.attempts), f.saturating_add(b.failures))
            });
        if attempts == 0 {
            return RecentStats::none();
        }
        RecentStats {
            window_s: WINDOW.as_secs(),
            attempts,
            failures,
            error_rate: failures as f64 / attempts as f64,
        }
    }

    /// Whether nothing was recorded inside the window at `now` (the route may be forgotten).
    pub fn idle(&self, now: Instant) -> bool {
        self.last + BUCKETS as u64 <= self.step(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive model: every outcome with its time, counted over the same buckets.
    fn model(outcomes: &[(Duration, bool)], now: Duration) -> (u64, u64) {
        let step = |d: Duration| (d.as_millis() / BUCKET.as_millis()) as u64;
        let current = step(now);
        let inside = outcomes
            .iter()
            .filter(|(t, _)| step(*t) + BUCKETS as u64 > current);
        inside.fold((0, 0), |(a, f), (_, failed)| {
            (a + 1, f + u64::from(*failed))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_counts_what_its_buckets_cover_and_forgets_the_rest() {
        let mut rng = fastrand::Rng::with_seed(60);
        for _ in 0..40 {
            let origin = Instant::now();
            let mut recent = Recent::new(origin);
            let mut outcomes = Vec::new();
            let mut at = Duration::ZERO;
            for _ in 0..rng.usize(0..200) {
                // Gaps from a few ms to longer than the whole window.
                at += Duration::from_millis(match rng.u8(..10) {
                    0 => rng.u64(60_000..200_000),
                    _ => rng.u64(0..3_000),
                });
                let failed = rng.bool();
                recent.record(origin + at, failed);
                outcomes.push((at, failed));
                let later = at + Duration::from_millis(rng.u64(0..70_000));
                let stats = recent.stats(origin + later);
                let (attempts, failures) = model(&outcomes, later);
                assert_eq!((stats.attempts, stats.failures), (attempts, failures));
                assert_eq!(stats.window_s, 60);
                if attempts > 0 {
                    assert!((stats.error_rate - failures as f64 / attempts as f64).abs() < 1e-9);
                } else {
                    assert_eq!(stats.error_rate, 0.0);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_minute_without_outcomes_empties_the_window() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        for _ in 0..10 {
            recent.record(Instant::now(), true);
        }
        recent.record(Instant::now(), false);
        let stats = recent.stats(Instant::now());
        assert_eq!((stats.attempts, stats.failures), (11, 10));
        assert!(!recent.idle(Instant::now()));
        tokio::time::advance(WINDOW - BUCKET).await;
        assert_eq!(recent.stats(Instant::now()).attempts, 11);
        tokio::time::advance(BUCKET).await;
        let stats = recent.stats(Instant::now());
        assert_eq!((stats.attempts, stats.failures), (0, 0));
        assert!(recent.idle(Instant::now()));
    }
}
