//! The refundable budgets: token buckets (tokens per minute, borrow → settle) and stream
//! counters (concurrent streams). Plain maps: the limiter keeps both under one lock, so a
//! request's check-and-take of every budget is one atomic step.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientId;

/// One budget's owner: a client key or a requested model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Key(ClientId),
    Model(String),
}

/// Above this many idle entries, full buckets are dropped (a full bucket equals a new one).
const PRUNE_ABOVE: usize = 4096;

/// Token buckets: capacity `per_minute`, refilled continuously at `per_minute / 60` a second.
/// A level may go below zero when a settle debits more than was borrowed.
#[derive(Debug, Default)]
pub(crate) struct TokenBuckets {
    buckets: HashMap<Subject, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    updated: Instant,
    per_minute: u64,
}

impl Bucket {
    fn full(per_minute: u64, now: Instant) -> Bucket {
        Bucket {
            level: per_minute as f64,
            updated: now,
            per_minute,
        }
    }

    fn refill(&mut self, per_minute: u64, now: Instant) {
        self.per_minute = per_minute;
        let rate = per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(per_minute as f64);
        self.updated = now;
    }
}

impl TokenBuckets {
    /// Whether every `(subject, per_minute)` budget can lend `amount` now; when one cannot,
    /// the longest wait for enough is the error. A request larger than a whole budget may
    /// borrow once the bucket is full (it then owes the difference).
    pub(crate) fn check(
        &mut self,
        budgets: &[(Subject, u64)],
        amount: u64,
        now: Instant,
    ) -> Result<(), (usize, Duration)> {
        let map = &mut self.buckets;
        let mut worst: Option<(usize, Duration)> = None;
        for (i, (subject, per_minute)) in budgets.iter().enumerate() {
            let bucket = map
                .entry(subject.clone())
                .or_insert_with(|| Bucket::full(*per_minute, now));
            bucket.refill(*per_minute, now);
            let need = amount.min(*per_minute) as f64;
            if bucket.level < need {
                let secs = (need - bucket.level) / (*per_minute as f64 / 60.0);
                let wait = Duration::from_secs_f64(secs.max(0.001));
                if worst.is_none_or(|(_, w)| wait > w) {
                    worst = Some((i, wait));
                }
            }
        }
        match worst {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// Borrows `amount` from every budget (after [`TokenBuckets::check`], under the same lock).
    pub(crate) fn take(&mut self, budgets: &[(Subject, u64)], amount: u64, now: Instant) {
        let map = &mut self.buckets;
        for (subject, _) in budgets {
            if let Some(bucket) = map.get_mut(subject) {
                bucket.level -= amount as f64;
            }
        }
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, b| {
                b.refill(b.per_minute, now);
                b.level < b.per_minute as f64
            });
        }
    }

    /// Charges `delta` more tokens (a negative delta refunds), capped at each budget's capacity.
    pub(crate) fn adjust(&mut self, budgets: &[(Subject, u64)], delta: i64, now: Instant) {
        let map = &mut self.buckets;
        for (subject, per_minute) in budgets {
            let bucket = map
                .entry(subject.clone())
                .or_insert_with(|| Bucket::full(*per_minute, now));
            bucket.refill(*per_minute, now);
            bucket.level = (bucket.level - delta as f64).min(*per_minute as f64);
        }
    }

    /// The current level of a budget (tests).
    #[cfg(test)]
    pub(crate) fn level(&mut self, subject: &Subject, per_minute: u64, now: Instant) -> f64 {
        match self.buckets.get_mut(subject) {
            Some(bucket) => {
                bucket.refill(per_minute, now);
                bucket.level
            }
            None => per_minute as f64,
        }
    }
}

/// Streams in flight per subject; an entry disappears when its count returns to zero.
#[derive(Debug, Default)]
pub(crate) struct StreamCounts {
    counts: HashMap<Subject, u32>,
}

impl StreamCounts {
    /// Whether every `(subject, limit)` budget has a free slot; the index of the first full
    /// one is the error.
    pub(crate) fn check(&self, budgets: &[(Subject, u32)]) -> Result<(), usize> {
        match budgets
            .iter()
            .position(|(subject, limit)| self.counts.get(subject).copied().unwrap_or(0) >= *limit)
        {
            Some(full) => Err(full),
            None => Ok(()),
        }
    }

    /// Takes one slot of every budget (after [`StreamCounts::check`], under the same lock).
    pub(crate) fn take(&mut self, budgets: &[(Subject, u32)]) {
        for (subject, _) in budgets {
            *self.counts.entry(subject.clone()).or_insert(0) += 1;
        }
    }

    /// Gives back one slot of every subject.
    pub(crate) fn release<'a>(&mut self, subjects: impl IntoIterator<Item = &'a Subject>) {
        let map = &mut self.counts;
        for subject in subjects {
            if let Some(n) = map.get_mut(subject) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(subject);
                }
            }
        }
    }

    /// Streams in flight for `subject` (tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self, subject: &Subject) -> u32 {
        self.counts.get(subject).copied().unwrap_or(0)
    }
}

/// Every refundable budget, kept under the limiter's one lock.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    pub(crate) tokens: TokenBuckets,
    pub(crate) streams: StreamCounts,
}
