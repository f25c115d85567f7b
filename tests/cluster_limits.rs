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
async fn stream_slots_expire_unless_renewed_and_renewal_restores_what_redis_lost() {
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
    // "b" ends: its slot is free at once.
    LimitScripts::release(&redis, &["slots".into()], "b")
        .await
        .unwrap();
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 1);
    // "a" is renewed for an hour; "d" is admitted and never renewed (its instance died).
    let held = [("slots".to_owned(), "a".to_owned())];
    let added = scripts
        .renew(&redis, &held, Duration::from_secs(3600), Clock::Redis)
        .await
        .unwrap();
    assert_eq!(added, 0, "a was held: renewed, not added");
    let got = scripts
        .admit(&redis, &b, 1, "d", expiry, Clock::Redis)
        .await
        .unwrap();
    assert_eq!(got, Admission::Admitted);
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 2);
    tokio::time::sleep(expiry + Duration::from_millis(500)).await;
    assert_eq!(
        LimitScripts::holders(&redis, "slots").await.unwrap(),
        1,
        "the dead holder's slot came back after its expiry"
    );
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
    // Redis loses everything (restarted empty): the next renewal counts "a" again.
    let _: () = redis
        .query("FLUSHALL", &redis::cmd("FLUSHALL"))
        .await
        .unwrap();
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 0);
    let added = scripts
        .renew(&redis, &held, Duration::from_secs(3600), Clock::Redis)
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(LimitScripts::holders(&redis, "slots").await.unwrap(), 1);
}

/// Seconds since the epoch of a UTC date and time (days from civil, Howard Hinnant).
fn utc(y: i64, m: i64, d: i64, secs_of_day: i64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + secs_of_day).unwrap()
}

#[tokio::test]
async fn spend_budgets_count_by_utc_day_and_month_on_redis_clock_and_refuse_once_spent() {
    use streamgate::state::limits::{SpendMode, SpendReply};
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = Redis::connect(&state_config(&server.url()), &server.url()).unwrap();
    let scripts = LimitScripts::new();
    let at = |secs: u64| Clock::At(secs * 1_000_000);
    let spend = |subject: &'static str, day: u64, month: u64, amount: i64, mode, secs| {
        let (redis, scripts) = (&redis, &scripts);
        async move {
            scripts
                .spend(redis, subject, day, month, amount, mode, at(secs))
                .await
                .unwrap()
        }
    };
    // Month ends (a leap February, a 30-day April, December into January): the day and the
    // month both start afresh at midnight UTC, and not a second before.
    for (y, m, last) in [(2024, 2, 29), (2025, 2, 28), (2026, 4, 30), (2026, 12, 31)] {
        let eve = utc(y, m, last, 86_399);
        let subject: &'static str = Box::leak(format!("cal-{y}-{m}").into_boxed_str());
        let reply = spend(subject, 0, 0, 700, SpendMode::Admit, eve).await;
        assert!(
            matches!(
                reply,
                SpendReply::Counted {
                    day: 700,
                    month: 700,
                    ..
                }
            ),
            "{reply:?}"
        );
        let earlier_that_day = spend(subject, 0, 0, 0, SpendMode::Read, eve - 3600).await;
        assert!(matches!(
            earlier_that_day,
            SpendReply::Counted { day: 700, .. }
        ));
        let midnight = spend(subject, 0, 0, 0, SpendMode::Read, eve + 1).await;
        assert!(
            matches!(
                midnight,
                SpendReply::Counted {
                    day: 0,
                    month: 0,
                    ..
                }
            ),
            "{y}-{m}: {midnight:?}"
        );
    }
    // Within a month: the day's count restarts each day, the month's does not.
    let first = utc(2026, 3, 1, 0);
    spend("mid", 0, 0, 100, SpendMode::Adjust, first).await;
    let next_day = spend("mid", 0, 0, 50, SpendMode::Adjust, first + 86_400).await;
    assert!(matches!(
        next_day,
        SpendReply::Counted {
            day: 50,
            month: 150,
            ..
        }
    ));
    // Refunds never go below zero.
    let refund = spend("mid", 0, 0, -1000, SpendMode::Adjust, first + 86_401).await;
    assert!(matches!(
        refund,
        SpendReply::Counted {
            day: 0,
            month: 0,
            ..
        }
    ));

    // Seeded: admitted while under the cap (whatever the amounts), then refused until the
    // day ends, the month's cap likewise.
    let mut rng = fastrand::Rng::with_seed(17);
    for case in 0..20u64 {
        let subject: &'static str = Box::leak(format!("caps-{case}").into_boxed_str());
        let cap = rng.u64(100..5_000);
        // The 10th of a month: two days later is still that month.
        let t = utc(2026 + (case / 12) as i64, (case % 12 + 1) as i64, 10, 3_600);
        let mut spent = 0u64;
        loop {
            let amount = rng.u64(1..cap / 3 + 2);
            let reply = spend(subject, cap, cap * 3, amount as i64, SpendMode::Admit, t).await;
            match reply {
                SpendReply::Counted { day, .. } => {
                    assert!(spent < cap, "case {case}");
                    spent += amount;
                    assert_eq!(day, spent);
                }
                SpendReply::Refused { month, secs } => {
                    assert!(!month && spent >= cap, "case {case}: {spent} of {cap}");
                    assert_eq!(secs, t);
                    break;
                }
            }
        }
        let tomorrow = spend(subject, cap, cap * 3, 1, SpendMode::Admit, t + 86_400).await;
        assert!(
            matches!(tomorrow, SpendReply::Counted { day: 1, .. }),
            "{tomorrow:?}"
        );
        spend(
            subject,
            0,
            0,
            (cap * 3) as i64,
            SpendMode::Adjust,
            t + 86_400,
        )
        .await;
        let month = spend(subject, cap, cap * 3, 1, SpendMode::Admit, t + 2 * 86_400).await;
        assert!(
            matches!(month, SpendReply::Refused { month: true, .. }),
            "{month:?}"
        );
    }
}

// ---- Two gateway processes sharing one redis-server ----

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/process.rs"]
mod process;

use std::time::Instant;

use futures_util::future::join_all;
use process::GatewayProcess;
use providers::Dialect;

/// The body of both instances' configuration: the replay upstream, `[state]` on `redis`
/// (short timeout and expiry, so a test sees an outage and a dead instance quickly) and
/// `extra` (the limits).
fn cluster_config(replay: &str, redis: &str, extra: &str) -> String {
    format!(
        "{}\n[state]\nbackend = \"redis\"\nurl = \"{redis}\"\nprefix = \"sg\"\n\
         timeout_ms = 500\nlease_ms = 1500\n{extra}\n",
        process::replay_providers(replay)
    )
}

struct Cluster {
    a: GatewayProcess,
    b: GatewayProcess,
    replay: streamgate::replay::Replay,
    client: reqwest::Client,
}

async fn cluster(redis: &RedisServer, extra: &str) -> Cluster {
    let replay = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let config = cluster_config(&replay.url(), &redis.url(), extra);
    let (a, b) = tokio::join!(
        GatewayProcess::serve(&config),
        GatewayProcess::serve(&config)
    );
    Cluster {
        a,
        b,
        replay,
        client: gw::client(),
    }
}

impl Cluster {
    fn base(&self, on_b: bool) -> &str {
        if on_b { &self.b.url } else { &self.a.url }
    }

    /// One chat request of client `key` to A or B.
    async fn chat(&self, on_b: bool, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.base(on_b)))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// `clients` concurrent clients sending `each` requests one after the other, each to A or
    /// B as `rng` chose; the statuses, and how long it all took.
    async fn burst(
        &self,
        rng: &mut fastrand::Rng,
        key: &str,
        clients: usize,
        each: usize,
        only: Option<bool>,
    ) -> (Vec<u16>, Duration) {
        let body = gw::chat_body(Dialect::OpenAi, "anthropic/text_basic", false);
        let plans: Vec<Vec<bool>> = (0..clients)
            .map(|_| {
                (0..each)
                    .map(|_| only.unwrap_or_else(|| rng.bool()))
                    .collect()
            })
            .collect();
        let began = Instant::now();
        let statuses = join_all(plans.into_iter().map(|plan| {
            let body = &body;
            async move {
                let mut out = Vec::new();
                for on_b in plan {
                    let r = self.chat(on_b, key, body).await;
                    out.push(r.status().as_u16());
                    let _ = r.bytes().await;
                }
                out
            }
        }))
        .await;
        (statuses.concat(), began.elapsed())
    }

    /// Scrapes `/metrics` of A or B.
    async fn metrics(&self, on_b: bool) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.base(on_b)))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }
}

/// Admitted (200) among `statuses`; anything but 200 and 429 fails the test.
fn admitted(statuses: &[u16]) -> usize {
    for s in statuses {
        assert!(*s == 200 || *s == 429, "status {s}");
    }
    statuses.iter().filter(|s| **s == 200).count()
}

/// Exactly `n` when the burst took less than one emission interval (60/n s); the refills of
/// the time it took on a loaded machine, and nothing more, otherwise.
fn assert_exactly(ok: usize, n: u32, took: Duration, what: &str) {
    let refills = (took.as_secs_f64() / (60.0 / f64::from(n))) as usize;
    let n = n as usize;
    if refills == 0 {
        assert_eq!(ok, n, "{what}: admitted {ok} of a limit of {n} in {took:?}");
    } else {
        assert!(
            (n..=n + refills).contains(&ok),
            "{what}: admitted {ok}, limit {n}, {refills} refills in {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_admit_exactly_n_across_two_instances_under_50_clients() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    for (n, seed) in [(4u32, 1u64), (10, 2), (25, 3)] {
        let c = cluster(
            &redis,
            &format!("[limits.per_key]\nrequests_per_minute = {n}\n"),
        )
        .await;
        let mut rng = fastrand::Rng::with_seed(seed);
        let key = format!("client-{seed}");
        let (statuses, took) = c.burst(&mut rng, &key, 50, 2, None).await;
        assert_eq!(statuses.len(), 100);
        assert_exactly(admitted(&statuses), n, took, &format!("n {n} seed {seed}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_are_one_budget_across_two_instances() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Each request borrows its prompt estimate + max_tokens (10000): three fit in 35000. The
    // upstream never answers (`stall`), so no usage settles the borrows while they count.
    let c = cluster(&redis, "[limits.per_key]\ntokens_per_minute = 35000\n").await;
    let mut body = gw::chat_body(Dialect::OpenAi, "anthropic/stall:text_basic", true);
    body["max_tokens"] = 10_000.into();
    let mut rng = fastrand::Rng::with_seed(11);
    let began = Instant::now();
    let sides: Vec<bool> = (0..8).map(|_| rng.bool()).collect();
    let outcomes = join_all(sides.into_iter().map(|on_b| {
        let body = &body;
        let c = &c;
        async move {
            // Admitted requests wait on the silent upstream: they are the ones still waiting.
            tokio::time::timeout(Duration::from_secs(5), c.chat(on_b, "tok-client", body)).await
        }
    }))
    .await;
    let took = began.elapsed();
    let mut waiting = 0;
    for outcome in outcomes {
        match outcome {
            Err(_) => waiting += 1,
            Ok(r) => {
                assert_eq!(r.status(), 429);
                let body = gw::json_of(r).await;
                assert_eq!(body["error"]["type"], "tokens", "{body}");
            }
        }
    }
    // A fourth needs ~8.6 s of refill at 35000 a minute.
    if took < Duration::from_secs(8) {
        assert_eq!(waiting, 3, "in {took:?}");
    } else {
        assert!((3..=4).contains(&waiting), "{waiting} in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_shared_and_a_killed_instances_slots_come_back() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut c = cluster(&redis, "[limits.per_key]\nconcurrent_streams = 2\n").await;
    // About 18 s per stream: they hold their slots for the whole test.
    let slow = gw::chat_body(Dialect::OpenAi, "anthropic/drip=1500:text_basic", true);
    let quick = gw::chat_body(Dialect::OpenAi, "anthropic/text_basic", false);
    let on_a = c.chat(false, "streamer", &slow).await;
    assert_eq!(on_a.status(), 200);
    let on_b = c.chat(true, "streamer", &slow).await;
    assert_eq!(on_b.status(), 200);
    for third_on_b in [false, true] {
        let r = c.chat(third_on_b, "streamer", &quick).await;
        assert_eq!(r.status(), 429, "a third stream on {third_on_b}");
        let body = gw::json_of(r).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("concurrent streams"), "{body}");
    }
    // A dies holding a slot: nobody gives it back, it expires (lease_ms = 1500).
    c.a.kill();
    drop(on_a);
    let killed = Instant::now();
    let r = c.chat(true, "streamer", &quick).await;
    if killed.elapsed() < Duration::from_millis(1000) {
        assert_eq!(r.status(), 429, "the dead instance's slot is still counted");
    }
    drop(r);
    let deadline = killed + Duration::from_secs(20);
    loop {
        let r = c.chat(true, "streamer", &quick).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the killed instance's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B's own stream still holds its slot: the limit is still 2. The quick answer's slot goes
    // back to Redis in a task of its own once the answer ended, which may still be on its way
    // when its client already has the answer: a short, bounded wait for it.
    let given_back = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = c.chat(true, "streamer", &slow).await;
        if r.status() != 429 || Instant::now() >= given_back {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status(), 200);
    let r2 = c.chat(true, "streamer", &quick).await;
    assert_eq!(r2.status(), 429);
    drop(on_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_on_a_makes_b_skip_the_route_without_trying_it() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let c = cluster(
        &redis,
        "[streaming.retryPolicy]\nmaxAttempts = 1\n\
         [streaming.circuitBreaker]\nfailureThreshold = 1\ncooldownMs = 60000\n",
    )
    .await;
    let failing = gw::chat_body(Dialect::OpenAi, "anthropic/status=500:text_basic", false);
    let r = c.chat(false, "k", &failing).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let asked = c.replay.requests().len();
    assert!(asked >= 1);
    // Pub/sub carries the news in milliseconds; a loaded machine gets seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = c.chat(true, "k", &failing).await;
    assert_eq!(r.status(), 503, "B answers from its breaker");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(c.replay.requests().len(), asked, "B tried the route");
    // Other routes are untouched.
    let ok = gw::chat_body(Dialect::OpenAi, "anthropic/text_basic", false);
    assert_eq!(c.chat(true, "k", &ok).await.status(), 200);
    assert_eq!(c.replay.requests().len(), asked + 1);
}

/// Whether `metrics` says Redis answers.
fn redis_up(metrics: &str) -> Option<bool> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("streamgate_redis_up ")
            .map(|v| v.trim() == "1")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_each_instance_limits_alone_and_shares_again_once_it_returns() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let n = 6u32;
    let c = cluster(
        &redis,
        &format!("[limits.per_key]\nrequests_per_minute = {n}\n"),
    )
    .await;
    let mut rng = fastrand::Rng::with_seed(21);
    // Shared: N across both.
    let (statuses, took) = c.burst(&mut rng, "before", 10, 2, None).await;
    assert_exactly(admitted(&statuses), n, took, "shared before the outage");
    assert_eq!(redis_up(&c.metrics(false).await), Some(true));

    // Redis dies mid-load: requests are still answered, each instance enforcing N alone.
    redis.stop();
    for on_b in [false, true] {
        let (statuses, took) = c.burst(&mut rng, "during", 10, 2, Some(on_b)).await;
        assert_exactly(admitted(&statuses), n, took, &format!("alone on {on_b}"));
        // Never waiting on Redis past timeout_ms per request (20 requests, 2 at a time).
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(redis_up(&c.metrics(on_b).await), Some(false));
    }
    let outages = c.metrics(false).await;
    assert!(
        outages
            .lines()
            .any(|l| l.starts_with("streamgate_redis_outages_total ") && !l.ends_with(" 0")),
        "{outages}"
    );

    // It comes back (empty): both instances notice without a restart, and share again.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for on_b in [false, true] {
        while redis_up(&c.metrics(on_b).await) != Some(true) {
            assert!(
                Instant::now() < deadline,
                "instance {on_b} never saw Redis again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (statuses, took) = c.burst(&mut rng, "after", 10, 2, None).await;
    assert_exactly(admitted(&statuses), n, took, "shared after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_on_b_is_admitted_when_a_stream_on_a_ends_and_never_past_its_deadline() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let c = cluster(
        &redis,
        "[limits]\nqueue_ms = 8000\n[limits.per_key]\nconcurrent_streams = 1\n",
    )
    .await;
    // About 2 s: 12 frames 150 ms apart.
    let short = gw::chat_body(Dialect::OpenAi, "anthropic/drip=150:text_basic", true);
    let held = c.chat(false, "queued", &short).await;
    assert_eq!(held.status(), 200);
    let reader = tokio::spawn(async move { held.bytes().await.map(|b| b.len()) });
    let asked = Instant::now();
    let quick = gw::chat_body(Dialect::OpenAi, "anthropic/text_basic", false);
    let r = c.chat(true, "queued", &quick).await;
    let waited = asked.elapsed();
    assert_eq!(r.status(), 200, "admitted once A's stream ended");
    assert!(reader.await.unwrap().unwrap() > 0);
    assert!(
        waited >= Duration::from_millis(500),
        "it did not wait: {waited:?}"
    );
    assert!(waited < Duration::from_secs(8), "{waited:?}");

    // A stream that outlives the queue time: the queued request is refused at the deadline.
    let c = cluster(
        &redis,
        "[limits]\nqueue_ms = 1000\n[limits.per_key]\nconcurrent_streams = 1\n",
    )
    .await;
    let long = gw::chat_body(Dialect::OpenAi, "anthropic/drip=1000:text_basic", true);
    let held = c.chat(false, "deadline", &long).await;
    assert_eq!(held.status(), 200);
    let asked = Instant::now();
    let r = c.chat(true, "deadline", &quick).await;
    let waited = asked.elapsed();
    assert_eq!(r.status(), 429);
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    // The deadline, a poll interval and a loaded machine's slack; never the stream's 11 s.
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_limits_shared_with_the_new_quota() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let c = cluster(&redis, "[limits.per_key]\nrequests_per_minute = 3\n").await;
    let mut rng = fastrand::Rng::with_seed(31);
    let (statuses, took) = c.burst(&mut rng, "reloaded", 10, 1, None).await;
    assert_exactly(admitted(&statuses), 3, took, "before the reload");
    for on_b in [false, true] {
        let gateway = if on_b { &c.b } else { &c.a };
        let path = gateway.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("requests_per_minute = 3", "requests_per_minute = 7");
        std::fs::write(&path, text).unwrap();
        let r = c
            .client
            .post(format!("{}/admin/reload", c.base(on_b)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // A new quota value starts its own count (as a reload does locally): 7, across both.
    let (statuses, took) = c.burst(&mut rng, "reloaded", 20, 1, None).await;
    assert_exactly(admitted(&statuses), 7, took, "after the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keys_day_budget_is_one_budget_across_two_instances() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let replay = streamgate::replay::spawn(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    // Each request charges its prompt estimate + max_tokens (10000) at admission; the
    // upstream never answers (`stall`), so nothing settles. Under 25000: three are admitted.
    let config = cluster_config(
        &replay.url(),
        &redis.url(),
        "[keys.team]\nenv = \"TEAM_KEY\"\nbudget_tokens_per_day = 25000\n",
    );
    let key = "sg-team-key-for-the-cluster-test-0123456789abcdef";
    let env = [("TEAM_KEY", key)];
    let (a, b) = tokio::join!(
        GatewayProcess::serve_with_env(&config, &env),
        GatewayProcess::serve_with_env(&config, &env)
    );
    let c = Cluster {
        a,
        b,
        replay,
        client: gw::client(),
    };
    let mut body = gw::chat_body(Dialect::OpenAi, "anthropic/stall:text_basic", true);
    body["max_tokens"] = 10_000.into();
    let mut rng = fastrand::Rng::with_seed(23);
    let sides: Vec<bool> = (0..8).map(|_| rng.bool()).collect();
    let requests =
        join_all(
            sides.into_iter().map(|on_b| {
                let (body, c) = (&body, &c);
                async move {
                    tokio::time::timeout(Duration::from_secs(6), c.chat(on_b, key, body)).await
                }
            }),
        );
    // While the admitted ones wait (a request that ends unanswered settles its charge to what
    // it used: nothing), either instance shows what both charged.
    let admin = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut seen = Vec::new();
        for on_b in [false, true] {
            let r = c
                .client
                .get(format!("{}/admin/keys", c.base(on_b)))
                .send()
                .await
                .unwrap();
            seen.push(gw::json_of(r).await);
        }
        seen
    };
    let (outcomes, lists) = tokio::join!(requests, admin);
    for list in lists {
        let team = &list["data"][0];
        assert_eq!(team["name"], "team");
        let today = team["spent_tokens_today"].as_u64().unwrap();
        assert!((30_000..31_000).contains(&today), "{list}");
        assert!(!list.to_string().contains(key));
    }
    let mut waiting = 0;
    for outcome in outcomes {
        match outcome {
            Err(_) => waiting += 1,
            Ok(r) => {
                assert_eq!(r.status(), 429);
                let body = gw::json_of(r).await;
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("day"), "{body}");
            }
        }
    }
    assert_eq!(waiting, 3, "admitted across A and B");
}
