//! Rate limits and circuit breakers shared by several instances through Redis
//! (`[state] backend = "redis"`), against a `redis-server` of the test's own: the scripts
//! alone (GCRA exactness, all-or-nothing admission, settling), then two gateway processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use redis_server::RedisServer;
use streamgate::state::limits::{Admission, Clock, LimitScripts, SharedBudget, SharedLimit};
use streamgate::state::{Redis, StateConfig};

fn state_config(url: &str) -> StateConfig {
    toml::from_str(&format!(
        "backend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 2000\nprefix = \"t\""
    ))
    .unwrap()
}

fn budget(subject: &str, rpm: u32, tpm: u64, streams: u32) -> SharedBudget {
    SharedBudget {
        subject: subject.into(),
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        concurrent_streams: streams,
    }
}

/// Redis's clock now, in microseconds (the scripts' instants are near it: stream slots are
/// counted by Redis's own clock).
async fn redis_now(redis: &Redis) -> u64 {
    let (s, us): (u64, u64) = redis.query("TIME", &redis::cmd("TIME")).await.unwrap();
    s * 1_000_000 + us
}

const MINUTE: u64 = 60_000_000;

/// GCRA in integer arithmetic, written apart from the script: with emission interval
/// `T = 60/N s` (kept as a fraction: times are multiplied by N), a request at `t` is admitted
/// iff `max(tat, t) + T - N*T <= t`, and then moves `tat` to `max(tat, t) + T`.
struct Reference {
    n: u64,
    /// TAT × N, in µs × N.
    tat_n: u64,
}

impl Reference {
    fn admit(&mut self, t: u64) -> bool {
        let t_n = t * self.n;
        let base = self.tat_n.max(t_n);
        // base + T - N*T <= t  ⇔  base + 60e6 <= t*N + N*60e6 (all × N)
        if base + MINUTE > t_n + self.n * MINUTE {
            return false;
        }
        self.tat_n = base + MINUTE;
        true
    }
}

#[tokio::test]
async fn gcra_in_redis_admits_exactly_what_the_reference_does_over_seeded_sequences() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&state_config(&server.url()), &server.url()).unwrap();
    let scripts = LimitScripts::new();
    for seed in [1u64, 2, 3] {
        for n in [1u32, 3, 7, 10, 60, 1000] {
            let mut rng = fastrand::Rng::with_seed(seed * 1000 + u64::from(n));
            let subject = format!("gcra-{seed}-{n}");
            let mut reference = Reference {
                n: u64::from(n),
                tat_n: 0,
            };
            let period = MINUTE / u64::from(n);
            let mut t = redis_now(&redis).await;
            let mut admitted: Vec<u64> = Vec::new();
            for _ in 0..300 {
                // Bursts at one instant, gaps around the emission interval, and long pauses.
                t += match rng.u8(0..10) {
                    0..=3 => 0,
                    4..=7 => rng.u64(0..=period * 2),
                    8 => period,
                    _ => rng.u64(0..=MINUTE),
                };
                let got = scripts
                    .admit(
                        &redis,
                        &[budget(&subject, n, 0, 0)],
                        1,
                        "m",
                        Duration::from_secs(1),
                        Clock::At(t),
                    )
                    .await
                    .unwrap();
                let want = reference.admit(t);
                match got {
                    Admission::Admitted => {
                        assert!(
                            want,
                            "seed {seed} n {n}: admitted at {t}, reference refuses"
                        );
                        admitted.push(t);
                    }
                    Admission::Refused { limit, wait, .. } => {
                        assert!(!want, "seed {seed} n {n}: refused at {t}, reference admits");
                        assert_eq!(limit, SharedLimit::Requests);
                        assert!(
                            wait > Duration::ZERO && wait.as_micros() <= u128::from(period) + 1
                        );
                    }
                }
            }
            // Whatever the sequence: no more than N + w/T in any window of length w.
            for (i, start) in admitted.iter().enumerate() {
                for (j, end) in admitted.iter().enumerate().skip(i) {
                    let w = end - start;
                    let most = u64::from(n) + w / period;
                    assert!(
                        (j - i + 1) as u64 <= most,
                        "seed {seed} n {n}: window {w}µs"
                    );
                }
            }
            assert!(!admitted.is_empty());
        }
    }
}

/// Streams held and a bucket's level, read without changing either.
async fn snapshot(
    redis: &Redis,
    scripts: &LimitScripts,
    budgets: &[SharedBudget],
    t: u64,
) -> Vec<(u64, Vec<f64>)> {
    let mut out = Vec::new();
    for b in budgets {
        let held = LimitScripts::holders(redis, &b.subject).await.unwrap();
        let level = if b.tokens_per_minute > 0 {
            let buckets = [(b.subject.clone(), b.tokens_per_minute)];
            scripts
                .settle(redis, &buckets, 0, Clock::At(t))
                .await
                .unwrap()
        } else {
            Vec::new()
        };
        out.push((held, level));
    }
    out
}

#[tokio::test]
async fn an_admission_takes_every_budget_or_none() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&state_config(&server.url()), &server.url()).unwrap();
    let scripts = LimitScripts::new();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut refused = [0usize; 3];
    let mut admitted = 0;
    let mut t = redis_now(&redis).await;
    for round in 0..400 {
        // Two budgets (a key's and a model's) with random small quotas, some absent.
        let pick = |rng: &mut fastrand::Rng, hi: u32| if rng.bool() { rng.u32(1..=hi) } else { 0 };
        let budgets = [
            budget(
                &format!("k{}", round % 5),
                pick(&mut rng, 6),
                u64::from(pick(&mut rng, 3000)),
                pick(&mut rng, 3),
            ),
            budget(
                &format!("m{}", round % 3),
                pick(&mut rng, 6),
                u64::from(pick(&mut rng, 3000)),
                pick(&mut rng, 3),
            ),
        ];
        t += rng.u64(0..2_000_000);
        let amount = rng.u64(1..1500);
        // The stream slots are read by Redis's clock: hold them for an hour of it.
        let expiry = Duration::from_secs(3600);
        let before = snapshot(&redis, &scripts, &budgets, t).await;
        let member = format!("member-{round}");
        let got = scripts
            .admit(&redis, &budgets, amount, &member, expiry, Clock::At(t))
            .await
            .unwrap();
        let after = snapshot(&redis, &scripts, &budgets, t).await;
        match got {
            Admission::Admitted => {
                admitted += 1;
                for (i, b) in budgets.iter().enumerate() {
                    let streams = u64::from(b.concurrent_streams > 0);
                    assert_eq!(after[i].0, before[i].0 + streams, "round {round}");
                    if b.tokens_per_minute > 0 {
                        let want = before[i].1[0] - amount as f64;
                        assert!((after[i].1[0] - want).abs() < 1e-6, "round {round}");
                    }
                }
                // Half the admitted streams end at once (their slots come back).
                if rng.bool() {
                    let subjects: Vec<String> = budgets.iter().map(|b| b.subject.clone()).collect();
                    LimitScripts::release(&redis, &subjects, &member)
                        .await
                        .unwrap();
                }
            }
            Admission::Refused { limit, index, .. } => {
                refused[limit as usize] += 1;
                assert_eq!(after, before, "round {round}: a refusal took something");
                let b = &budgets[index];
                match limit {
                    SharedLimit::Streams => {
                        assert!(b.concurrent_streams > 0);
                        assert!(before[index].0 >= u64::from(b.concurrent_streams));
                    }
                    SharedLimit::Tokens => {
                        let need = amount.min(b.tokens_per_minute) as f64;
                        assert!(before[index].1[0] < need, "round {round}");
                    }
                    SharedLimit::Requests => assert!(b.requests_per_minute > 0),
                }
            }
        }
    }
    assert!(admitted > 20, "{admitted}");
    assert!(refused.iter().all(|&n| n > 0), "{refused:?}");
}

#[tokio::test]
async fn settling_refunds_and_debits_the_bucket_capped_at_full() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&state_config(&server.url()), &server.url()).unwrap();
    let scripts = LimitScripts::new();
    let mut rng = fastrand::Rng::with_seed(9);
    let t0 = redis_now(&redis).await;
    for case in 0..50 {
        let per = rng.u64(100..100_000);
        let subject = format!("settle-{case}");
        let t = t0 + case * MINUTE;
        let bucket = [(subject.clone(), per)];
        let borrow = rng.u64(1..=per);
        let got = scripts
            .admit(
                &redis,
                &[budget(&subject, 0, per, 0)],
                borrow,
                "m",
                Duration::from_secs(1),
                Clock::At(t),
            )
            .await
            .unwrap();
        assert_eq!(got, Admission::Admitted);
        // The real usage was `used`: the difference comes back (or is debited).
        let used = rng.u64(0..=per * 2);
        let delta = used as i64 - borrow as i64;
        let level = scripts
            .settle(&redis, &bucket, delta, Clock::At(t))
            .await
            .unwrap();
        let want = (per as f64 - used as f64).min(per as f64);
        assert!(
            (level[0] - want).abs() < 1e-6,
            "case {case}: {level:?} want {want}"
        );
        // A refund beyond the borrow never fills the bucket past its capacity.
        let level = scripts
            .settle(&redis, &bucket, -(per as i64) * 3, Clock::At(t))
            .await
            .unwrap();
        assert_eq!(level, vec![per as f64]);
        // Refilled at per/60 a second: half a minute after emptying it, half full.
        let all = scripts
            .settle(&redis, &bucket, per as i64, Clock::At(t))
            .await
            .unwrap();
        assert!(all[0].abs() < 1e-6);
        let half = scripts
            .settle(&redis, &bucket, 0, Clock::At(t + MINUTE / 2))
            .await
            .unwrap();
        assert!((half[0] - per as f64 / 2.0).abs() < 1e-3, "{half:?}");
    }
}

#[tokio::test]
async fn stream_slots_expire_unless_renewed_and_renewal_never_brings_back_a_released_one() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Arc::new(Redis::connect(&state_config(&server.url()), &server.url()).unwrap());
    let scripts = LimitScripts::new();
    let b = [budget("slots", 0, 0, 2)];
    let expiry = Duration::from_millis(1500);
    // Redis's own clock: these slots expire in real time.
    for member in ["a", "b"] {
        let got = scripts
            .admit(&redis, &b, 1, member, expiry, Clock::Redis)
            .await
            .unwrap();
        assert_eq!(got, Admission::Admitted);
    }
    let third = scripts
        .admit(&redis, &b, 1, "c", expiry, Clock::Redis)
        .await
        .unwrap();
    assert!(matches!(
        third,
        Admission::Refused {
            limit: SharedLimit::Streams,
            ..
        }
    ));
    // "a" is renewed, "b" is released: renewing "b" does not bring it back.
    LimitScripts::release(&redis, &["slots".into()], "b")
        .await
        .unwrap();
    let renewed = scripts
        .renew(
            &redis,
            &[("slots".into(), "a".into()), ("slots".into(), "b".into())],
            Duration::from_secs(3600),
            Clock::Redis,
        )
        .await
        .unwrap();
    assert_eq!(renewed, 1);
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 1);
    // Without renewal, a slot comes back after its expiry (a dead instance's).
    let got = scripts
        .admit(&redis, &b, 1, "d", expiry, Clock::Redis)
        .await
        .unwrap();
    assert_eq!(got, Admission::Admitted);
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 2);
    tokio::time::sleep(expiry + Duration::from_millis(500)).await;
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 1);
    // Every key has a TTL.
    let keys: Vec<String> = redis
        .query("KEYS", redis::cmd("KEYS").arg("t:*"))
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis
            .query("PTTL", redis::cmd("PTTL").arg(&key))
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}
