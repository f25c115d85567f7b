//! How fast one connection's pings are answered: a token bucket in its GCRA form (one
//! instant instead of a token count), `rate` pings a second in bursts of `rate`.
//!
//! The reader asks [`PingPace::take`] for every ping it read (a WebSocket protocol ping,
//! which tungstenite answers on its own, or a `{"op":"ping"}` frame) and pauses that long
//! before reading on. Not reading is the only way to hold back tungstenite's automatic pong,
//! and it bounds everything else a flood could grow on our side: the pings wait in the
//! client's socket, and TCP makes the client wait.

use std::time::Duration;

use tokio::time::Instant;

/// The pace of one connection's pings.
#[derive(Debug)]
pub(super) struct PingPace {
    /// Time between two pings at the sustained rate.
    interval: Duration,
    /// How far ahead of `now` the schedule may run: a burst of `rate` pings in one go.
    burst: Duration,
    /// When the next ping would be due if pings came exactly at the rate (GCRA's
    /// "theoretical arrival time").
    due: Instant,
}

impl PingPace {
    /// A pace of `per_second` pings a second (at least 1), bursts of as many, starting full.
    pub(super) fn new(per_second: u32, now: Instant) -> PingPace {
        let per_second = per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        PingPace {
            interval,
            burst: interval * (per_second - 1),
            due: now,
        }
    }

    /// Counts one ping read at `now`: how long the reader must wait before it reads the
    /// next message (zero while within the rate).
    pub(super) fn take(&mut self, now: Instant) -> Duration {
        let due = self.due.max(now);
        let wait = due.saturating_duration_since(now + self.burst);
        self.due = due + self.interval;
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_goes_at_once_then_one_per_interval() {
        let start = Instant::now();
        let mut pace = PingPace::new(4, start);
        for _ in 0..4 {
            assert_eq!(pace.take(start), Duration::ZERO);
        }
        assert_eq!(pace.take(start), Duration::from_millis(250));
        // Having waited, the next one waits a whole interval more.
        let later = start + Duration::from_millis(250);
        assert_eq!(pace.take(later), Duration::from_millis(250));
        // A quiet second refills the burst, no more.
        let quiet = later + Duration::from_secs(10);
        for _ in 0..4 {
            assert_eq!(pace.take(quiet), Duration::ZERO);
        }
        assert!(pace.take(quiet) > Duration::ZERO);
    }

    #[test]
    fn zero_is_read_as_one_per_second() {
        let start = Instant::now();
        let mut pace = PingPace::new(0, start);
        assert_eq!(pace.take(start), Duration::ZERO);
        assert_eq!(pace.take(start), Duration::from_secs(1));
    }

    proptest! {
        /// However pings arrive, a reader that waits as told reads at most
        /// `rate + 1 + rate × window` of them in any window (the burst, the one read before
        /// its wait, and the rate), and a ping coming after the schedule never waits.
        #[test]
        fn pings_read_in_any_window_stay_within_the_rate(
            rate in 1u32..50,
            gaps in proptest::collection::vec(0u64..400, 1..300),
        ) {
            let start = Instant::now();
            let mut pace = PingPace::new(rate, start);
            let mut now = start;
            let mut reads = Vec::new();
            for gap in gaps {
                now += Duration::from_millis(gap);
                reads.push(now);
                now += pace.take(now);
            }
            for (i, first) in reads.iter().enumerate() {
                for (j, last) in reads.iter().enumerate().skip(i) {
                    let window = last.duration_since(*first).as_secs_f64();
                    let allowed = f64::from(rate) + 1.0 + f64::from(rate) * window;
                    prop_assert!(
                        (j - i + 1) as f64 <= allowed + 1e-6,
                        "{} pings in {window} s at {rate}/s", j - i + 1
                    );
                }
            }
        }

        #[test]
        fn pings_at_the_rate_never_wait(rate in 1u32..50, count in 1usize..200) {
            let start = Instant::now();
            let mut pace = PingPace::new(rate, start);
            let interval = Duration::from_secs(1) / rate;
            for i in 0..count {
                let at = start + interval * u32::try_from(i).unwrap();
                prop_assert_eq!(pace.take(at), Duration::ZERO);
            }
        }
    }
}
