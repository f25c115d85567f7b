//! Requests per minute: the seam to `governor` (GCRA, keyed). One keyed limiter per distinct
//! quota value, keyed by [`Subject`]; the clock is tokio's, so the paused test clock drives it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::budget::Subject;

/// governor's clock reading tokio's (pausable) time, as the time since the limiter was built.
#[derive(Debug, Clone)]
struct TokioClock {
    base: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.base)
    }
}

type Keyed = RateLimiter<Subject, HashMapStateStore<Subject>, TokioClock, NoOpMiddleware<Duration>>;

/// Forget idle keys every this many checks.
const RETAIN_EVERY: u64 = 4096;

/// Every configured requests-per-minute quota, each a keyed GCRA limiter.
#[derive(Debug)]
pub(crate) struct Rpm {
    /// Shared with the configurations before and after this one that have the same value.
    limiters: HashMap<u32, Arc<Keyed>>,
    checks: AtomicU64,
}

impl Rpm {
    /// Limiters for each of `per_minute`'s values: `previous`'s for a value it has (so its
    /// subjects keep what they counted), new ones for the others.
    pub(crate) fn new(
        per_minute: impl IntoIterator<Item = NonZeroU32>,
        previous: Option<&Rpm>,
    ) -> Rpm {
        let clock = TokioClock {
            base: tokio::time::Instant::now(),
        };
        let limiters = per_minute
            .into_iter()
            .map(|n| {
                let kept = previous
                    .and_then(|p| p.limiters.get(&n.get()))
                    .map(Arc::clone);
                let limiter = kept.unwrap_or_else(|| {
                    Arc::new(RateLimiter::hashmap_with_clock(
                        Quota::per_minute(n),
                        clock.clone(),
                    ))
                });
                (n.get(), limiter)
            })
            .collect();
        Rpm {
            limiters,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request against `subject`'s `per_minute` budget, or says how long until one
    /// would be admitted (nothing is counted then).
    pub(crate) fn check(&self, subject: &Subject, per_minute: NonZeroU32) -> Result<(), Duration> {
        let Some(limiter) = self.limiters.get(&per_minute.get()) else {
            // Every quota of the config has its limiter; an unknown one is not limited.
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(subject)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}
