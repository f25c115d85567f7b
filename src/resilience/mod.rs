//! Keeping an answer alive: what to do about each failure ([`classify`]), how long to wait
//! before trying again ([`Backoff`]), which routes to skip ([`breaker`]), and how to ask the
//! next attempt to continue a broken answer ([`continuation`]).

pub mod breaker;
pub mod classify;
pub mod continuation;
pub mod recent;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// `now + wait`, or a century from `now` when that overflows: budgets and cooldowns come from
/// the configuration and may be anything.
pub fn later(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(wait)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// Retry and failover settings (config `[streaming.retryPolicy]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts on one route before failing over (the first included).
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Each backoff is spread by up to this fraction either way.
    pub jitter: f64,
    /// Budget for the whole request's retries and failovers, honored Retry-After waits
    /// included: past it the client gets the last error.
    pub time_to_fallback: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(5000),
            jitter: 0.1,
            time_to_fallback: Duration::from_secs(60),
        }
    }
}

/// The backoff delays of one route: exponential from the initial backoff, capped, jittered.
/// backon computes the sequence; the jitter is ours, as a fraction either way (backon's own
/// jitter only adds up to one minimum delay).
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    jitter: f64,
}

impl Backoff {
    /// The delays for `policy` (one fewer than its attempts).
    pub fn new(policy: &RetryPolicy) -> Self {
        let delays = ExponentialBuilder::default()
            .with_min_delay(policy.initial_backoff)
            .with_max_delay(policy.max_backoff)
            .with_factor(2.0)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize)
            .build();
        Backoff {
            delays,
            jitter: policy.jitter.clamp(0.0, 1.0),
        }
    }

    /// The next delay, at least `retry_after` when the provider said so; None when the
    /// route's attempts are spent.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let base = self.delays.next()?;
        let spread = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        // Checked: `mul_f64` panics past `Duration::MAX` (a configured backoff may be huge).
        let jittered =
            Duration::try_from_secs_f64(base.as_secs_f64() * spread.max(0.0)).unwrap_or(base);
        Some(retry_after.map_or(jittered, |after| after.max(jittered)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_jittered_and_bounded_in_count() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            jitter: 0.1,
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(&policy);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay(None)).collect();
        assert_eq!(delays.len(), 4, "5 attempts = 4 waits");
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert!((90..=110).contains(&ms[0]), "{ms:?}");
        assert!((180..=220).contains(&ms[1]), "{ms:?}");
        assert!(ms[2..].iter().all(|m| (270..=330).contains(m)), "{ms:?}");
    }

    #[test]
    fn retry_after_is_honored_when_longer() {
        let mut b = Backoff::new(&RetryPolicy::default());
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
    }
}
