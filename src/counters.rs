//! [`Histogram`]: a lock-free, fixed-bucket histogram of durations that a subsystem keeps for
//! the metrics.
//!
//! Lower layers (limits, journal) must not depend on the metrics crate, which lives with
//! [`crate::telemetry`] at the top: they count into this plain type, and the telemetry
//! collectors read a [`Snapshot`] of it at scrape time. One observation is a few relaxed
//! atomic adds, no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds (seconds) for waits measured in milliseconds to tens of seconds: queue waits.
pub const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds (seconds) for disk operations, from a page-cache write (microseconds) to a
/// slow fsync (a second and more).
pub const DISK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Durations counted into fixed buckets (upper bounds in seconds, plus +Inf).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the +Inf bucket: NOT cumulative.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of the observations in nanoseconds (wraps after 584 years of summed time).
    sum_nanos: AtomicU64,
}

/// What a [`Histogram`] held when read.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound in seconds, observations in this bucket)`, NOT cumulative, the last
    /// bound being `f64::INFINITY` (the form `prometheus_client` encodes).
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending seconds).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|&b| b < secs);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts. Read bucket by bucket while others may observe: the count is read
    /// last and raised to the buckets' total, so a scrape never shows fewer observations in
    /// `_count` than in its buckets.
    pub fn snapshot(&self) -> Snapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let in_buckets: u64 = buckets.iter().map(|(_, n)| n).sum();
        Snapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed).max(in_buckets),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Each observation lands in the first bucket whose bound is at or above it; count and
        /// sum are exact.
        #[test]
        fn observations_land_in_their_bucket(micros in proptest::collection::vec(0u64..40_000_000, 0..200)) {
            let h = Histogram::new(WAIT_BUCKETS);
            for &us in &micros {
                h.observe(Duration::from_micros(us));
            }
            let s = h.snapshot();
            prop_assert_eq!(s.count, micros.len() as u64);
            let sum: u64 = micros.iter().sum();
            prop_assert!((s.sum - sum as f64 / 1e6).abs() < 1e-6);
            prop_assert_eq!(s.buckets.len(), WAIT_BUCKETS.len() + 1);
            for (i, &(bound, n)) in s.buckets.iter().enumerate() {
                let lower = if i == 0 { f64::NEG_INFINITY } else { s.buckets[i - 1].0 };
                let expected = micros
                    .iter()
                    .filter(|&&us| {
                        let secs = us as f64 / 1e6;
                        secs > lower && secs <= bound
                    })
                    .count() as u64;
                prop_assert_eq!(n, expected, "bucket le={}", bound);
            }
        }
    }
}
