use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use providers::{AgentEvent, Dialect};

use super::budget::Subject;
use super::*;

fn limits(toml_text: &str) -> LimitConfig {
    toml::from_str(toml_text).unwrap()
}

fn limiter(toml_text: &str) -> Limiter {
    Limiter::with_env(&limits(toml_text), |_| None).unwrap()
}

const ALICE: &str = "sk-alice";

fn alice() -> ClientId {
    ClientId::from_credential(Some(ALICE))
}

fn est(total: u64) -> TokenEstimate {
    TokenEstimate::new(total, 0)
}

#[test]
fn config_parses_documented_keys_and_rejects_typos() {
    let c = limits(
        r#"
        queue_ms = 250
        [per_key]
        requests_per_minute = 60
        tokens_per_minute = 200000
        concurrent_streams = 8
        [per_model]
        requests_per_minute = 500
        [keys.team_a]
        key_env = "TEAM_A_KEY"
        requests_per_minute = 600
        [keys.anonymous]
        concurrent_streams = 1
        [models."smart"]
        tokens_per_minute = 1000000
        "#,
    );
    assert_eq!(c.queue_ms, 250);
    assert_eq!(c.max_queued, DEFAULT_MAX_QUEUED);
    assert!(c.validate().is_ok());
    let l = Limiter::with_env(&c, |var| (var == "TEAM_A_KEY").then(|| "sk-a".to_owned())).unwrap();
    let team_a = l.key_quotas(&ClientId::from_credential(Some("sk-a")));
    assert_eq!(team_a.requests_per_minute, NonZeroU32::new(600));
    assert_eq!(
        team_a.tokens_per_minute,
        NonZeroU64::new(200_000),
        "falls back to per_key"
    );
    assert_eq!(
        l.key_quotas(&ClientId::ANONYMOUS).concurrent_streams,
        NonZeroU32::new(1)
    );
    assert_eq!(
        l.model_quotas("smart").requests_per_minute,
        NonZeroU32::new(500)
    );
    assert_eq!(l.model_quotas("other").tokens_per_minute, None);

    let typo: Result<LimitConfig, _> = toml::from_str("[per_key]\nrequests_per_min = 1\n");
    assert!(typo.unwrap_err().to_string().contains("requests_per_min"));
    let zero: Result<LimitConfig, _> = toml::from_str("[per_key]\nconcurrent_streams = 0\n");
    assert!(zero.is_err());
    assert!(
        limits("[keys.x]\nconcurrent_streams = 1\n")
            .validate()
            .is_err()
    );
    let missing = Limiter::with_env(&limits("[keys.x]\nkey_env = \"NOPE\"\n"), |_| None);
    assert!(missing.unwrap_err().to_string().contains("NOPE"));
}

#[tokio::test(start_paused = true)]
async fn no_limits_admit_everything() {
    let l = limiter("");
    for _ in 0..1000 {
        let _ = l.acquire(&alice(), "m", est(1_000_000)).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn rpm_admits_exactly_n_of_50_concurrent_acquirers() {
    let l = limiter("[per_key]\nrequests_per_minute = 10\n");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(&alice(), "m", est(0)).await.map(drop) })
        })
        .collect();
    let mut admitted = 0;
    let mut refusals = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(e) => refusals.push(e),
        }
    }
    assert_eq!(admitted, 10);
    for e in &refusals {
        assert_eq!(e.limit, LimitKind::RequestsPerMinute);
        assert_eq!(e.scope, Scope::Key);
        assert!(e.retry_after <= Duration::from_secs(6), "{e:?}");
    }
    // One cell comes back every 6 s; another key has its own budget.
    let bob = ClientId::from_credential(Some("sk-bob"));
    assert!(l.acquire(&bob, "m", est(0)).await.is_ok());
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(l.acquire(&alice(), "m", est(0)).await.is_ok());
    assert!(l.acquire(&alice(), "m", est(0)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn model_rpm_is_shared_by_keys() {
    let l = limiter("[models.m]\nrequests_per_minute = 2\n");
    let bob = ClientId::from_credential(Some("sk-bob"));
    assert!(l.acquire(&alice(), "m", est(0)).await.is_ok());
    assert!(l.acquire(&bob, "m", est(0)).await.is_ok());
    let e = l.acquire(&bob, "m", est(0)).await.unwrap_err();
    assert_eq!(
        (e.limit, e.scope),
        (LimitKind::RequestsPerMinute, Scope::Model)
    );
    assert!(l.acquire(&bob, "other", est(0)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn tpm_borrows_then_settles_refunds_and_debits() {
    let l = limiter("[per_key]\ntokens_per_minute = 6000\n");
    let me = Subject::Key(alice());
    let mut p = l
        .acquire(&alice(), "m", TokenEstimate::new(1000, 3000))
        .await
        .unwrap();
    assert_eq!(p.borrowed(), 4000);
    assert_eq!(l.token_level(&me, 6000), 2000.0);
    // A second request of 4000 does not fit: 2000 missing at 100 tokens/s.
    let e = l.acquire(&alice(), "m", est(4000)).await.unwrap_err();
    assert_eq!(e.limit, LimitKind::TokensPerMinute);
    assert_eq!(e.retry_after, Duration::from_secs(20));
    assert_eq!(
        l.token_level(&me, 6000),
        2000.0,
        "a refusal borrows nothing"
    );
    // The answer used 1500: 2500 come back and the same request now fits.
    p.settle(1500);
    assert_eq!(l.token_level(&me, 6000), 4500.0);
    let mut q = l.acquire(&alice(), "m", est(4000)).await.unwrap();
    assert_eq!(l.token_level(&me, 6000), 500.0);
    // It used more than it borrowed: the extra is debited, the level goes below zero.
    q.settle(5000);
    assert_eq!(l.token_level(&me, 6000), -500.0);
    // Settling again replaces the charge.
    q.settle(4000);
    assert_eq!(l.token_level(&me, 6000), 500.0);
    drop((p, q));
    // Dropped without settle: the borrow stays spent.
    let r = l.acquire(&alice(), "m", est(400)).await.unwrap();
    drop(r);
    assert_eq!(l.token_level(&me, 6000), 100.0);
    // Refill: 100 tokens a second, capped at the budget.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(l.token_level(&me, 6000), 1100.0);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(l.token_level(&me, 6000), 6000.0);
    // Larger than the whole budget: admitted when full, then owed.
    let _big = l.acquire(&alice(), "m", est(10_000)).await.unwrap();
    assert_eq!(l.token_level(&me, 6000), -4000.0);
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_released_when_the_permit_drops() {
    let l = limiter("[per_key]\nconcurrent_streams = 2\n[per_model]\nconcurrent_streams = 3\n");
    let a = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let b = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let e = l.acquire(&alice(), "m", est(0)).await.unwrap_err();
    assert_eq!(
        (e.limit, e.scope),
        (LimitKind::ConcurrentStreams, Scope::Key)
    );
    assert_eq!(e.retry_after, CONCURRENCY_RETRY_HINT);
    assert_eq!(l.in_flight(&Subject::Key(alice())), 2);
    drop(a);
    assert_eq!(l.in_flight(&Subject::Key(alice())), 1);
    let c = l.acquire(&alice(), "m", est(0)).await.unwrap();
    // The model's budget of 3 is shared: a third key-slot elsewhere fills it.
    let bob = ClientId::from_credential(Some("sk-bob"));
    let d = l.acquire(&bob, "m", est(0)).await.unwrap();
    let e = l.acquire(&bob, "m", est(0)).await.unwrap_err();
    assert_eq!(e.scope, Scope::Model);
    assert_eq!(
        l.in_flight(&Subject::Key(bob)),
        1,
        "the refusal took no key slot"
    );
    drop((b, c, d));
    assert_eq!(l.in_flight(&Subject::Model("m".into())), 0);
}

#[tokio::test(start_paused = true)]
async fn queue_admits_within_queue_ms_and_refuses_beyond() {
    // Per key 60 rpm: one cell a second after the burst; model "slow" 30 rpm: one every 2 s.
    let l = limiter(
        "queue_ms = 1500\n[per_key]\nrequests_per_minute = 60\n[models.slow]\nrequests_per_minute = 30\n",
    );
    for _ in 0..60 {
        let _ = l.acquire(&alice(), "m", est(0)).await.unwrap();
    }
    let start = tokio::time::Instant::now();
    let p = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_millis(900) && waited <= Duration::from_millis(1500),
        "{waited:?}"
    );
    assert_eq!(p.waited(), waited);
    // The next "slow" cell is 2 s away, beyond the queue: refused at once with that wait.
    let bob = ClientId::from_credential(Some("sk-bob"));
    for _ in 0..30 {
        let _ = l.acquire(&bob, "slow", est(0)).await.unwrap();
    }
    let refused_at = tokio::time::Instant::now();
    let e = l.acquire(&bob, "slow", est(0)).await.unwrap_err();
    assert_eq!(
        refused_at.elapsed(),
        Duration::ZERO,
        "refused without waiting"
    );
    assert_eq!(
        (e.limit, e.scope),
        (LimitKind::RequestsPerMinute, Scope::Model)
    );
    assert!(e.retry_after > Duration::from_millis(1500), "{e:?}");
    assert!(e.retry_after <= Duration::from_secs(2), "{e:?}");
    assert_eq!(e.retry_after_secs(), 2);
    // Retrying after retry_after succeeds.
    tokio::time::advance(e.retry_after).await;
    assert!(l.acquire(&bob, "slow", est(0)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn queued_concurrency_waits_for_a_release_or_the_deadline() {
    let l = limiter("queue_ms = 1000\n[per_key]\nconcurrent_streams = 1\n");
    let held = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let l2 = l.clone();
    let waiter = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        l2.acquire(&alice(), "m", est(0))
            .await
            .map(|p| (p.waited(), start.elapsed()))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let (waited, _) = waiter.await.unwrap().unwrap();
    assert_eq!(waited, Duration::from_millis(300));
    // Nobody releases: refused at the deadline.
    let _held = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let start = tokio::time::Instant::now();
    let e = l.acquire(&alice(), "m", est(0)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(e.limit, LimitKind::ConcurrentStreams);
}

#[tokio::test(start_paused = true)]
async fn queued_tokens_wake_on_a_refund() {
    let l = limiter("queue_ms = 60000\n[per_key]\ntokens_per_minute = 600\n");
    let mut p = l.acquire(&alice(), "m", est(600)).await.unwrap();
    let l2 = l.clone();
    let waiter = tokio::spawn(async move {
        l2.acquire(&alice(), "m", est(500))
            .await
            .map(|p| p.waited())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.settle(10);
    assert_eq!(waiter.await.unwrap().unwrap(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded() {
    let l = limiter("queue_ms = 10000\nmax_queued = 1\n[per_key]\nconcurrent_streams = 1\n");
    let _held = l.acquire(&alice(), "m", est(0)).await.unwrap();
    let l2 = l.clone();
    let _waiting = tokio::spawn(async move { l2.acquire(&alice(), "m", est(0)).await.map(drop) });
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    assert!(l.acquire(&alice(), "m", est(0)).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[test]
fn limited_renders_in_both_dialects_and_as_an_event() {
    let tokens = Limited {
        limit: LimitKind::TokensPerMinute,
        retry_after: Duration::from_millis(1200),
        scope: Scope::Key,
    };
    let oa = tokens.body(Dialect::OpenAi);
    assert_eq!(oa["error"]["type"], "tokens");
    assert_eq!(oa["error"]["code"], "rate_limit_exceeded");
    assert!(oa["error"]["param"].is_null());
    assert!(
        oa["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    let an = tokens.body(Dialect::Anthropic);
    assert_eq!(an["type"], "error");
    assert_eq!(an["error"]["type"], "rate_limit_error");
    assert!(
        an["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in 1.2s")
    );
    assert_eq!(tokens.retry_after_secs(), 2);
    assert_eq!(tokens.body(providers::Dialect::OpenAi), oa);
    let streams = Limited {
        limit: LimitKind::ConcurrentStreams,
        retry_after: Duration::from_micros(1500),
        scope: Scope::Model,
    };
    assert_eq!(streams.body(Dialect::OpenAi)["error"]["type"], "requests");
    assert_eq!(streams.retry_after_secs(), 1);
    match streams.to_event() {
        AgentEvent::RateLimited {
            limit,
            retry_after_ms,
        } => {
            assert_eq!((limit.as_str(), retry_after_ms), ("concurrency", 2));
        }
        other => panic!("{other:?}"),
    }
    let json = serde_json::to_value(tokens.to_event()).unwrap();
    assert_eq!(json["type"], "rate_limited");
    assert_eq!(json["limit"], "tokens_per_minute");
    assert_eq!(json["retry_after_ms"], 1200);
}

#[test]
fn go_durations() {
    let d = |s| parse_go_duration(s);
    assert_eq!(d("1s"), Some(Duration::from_secs(1)));
    assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
    assert_eq!(d("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
    assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(d("1h2m3s"), Some(Duration::from_secs(3723)));
    assert_eq!(d("0"), Some(Duration::ZERO));
    for bad in ["", "s", "5", "1x", "-1s", "1s2"] {
        assert_eq!(d(bad), None, "{bad}");
    }
}

#[test]
fn rfc3339_instants() {
    let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
    assert_eq!(parse_rfc3339("2024-03-01T12:30:45Z"), at(1_709_296_245, 0));
    assert_eq!(
        parse_rfc3339("2024-03-01T14:30:45.25+02:00"),
        at(1_709_296_245, 250_000_000)
    );
    assert_eq!(
        parse_rfc3339("2024-03-01T07:30:45-05:00"),
        at(1_709_296_245, 0)
    );
    for bad in [
        "2024-03-01",
        "2024-13-01T00:00:00Z",
        "2024-03-01T00:00:00",
        "1969-12-31T23:59:59Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn openai_headers_block_until_the_exhausted_budget_resets() {
    let now = SystemTime::now();
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1m30s"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "20ms"),
    ]);
    assert_eq!(
        backoff_from_headers(200, &h, now),
        Some(Duration::from_secs(90))
    );
    let fine = headers(&[
        ("x-ratelimit-remaining-requests", "12"),
        ("x-ratelimit-reset-requests", "6m0s"),
    ]);
    assert_eq!(backoff_from_headers(200, &fine, now), None);
    let h = headers(&[
        ("retry-after", "7"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    assert_eq!(
        backoff_from_headers(429, &h, now),
        Some(Duration::from_secs(360))
    );
    assert_eq!(
        backoff_from_headers(429, &headers(&[("retry-after-ms", "250")]), now),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        backoff_from_headers(429, &HeaderMap::new(), now),
        Some(headers::DEFAULT_429_BACKOFF)
    );
    assert_eq!(backoff_from_headers(500, &HeaderMap::new(), now), None);
    // retry-after counts only on 429/503.
    assert_eq!(
        backoff_from_headers(200, &headers(&[("retry-after", "7")]), now),
        None
    );
}

#[test]
fn anthropic_headers_block_until_the_rfc3339_reset() {
    let now = UNIX_EPOCH + Duration::from_secs(1_709_296_200);
    let h = headers(&[
        ("anthropic-ratelimit-requests-remaining", "3"),
        ("anthropic-ratelimit-requests-reset", "2024-03-01T12:31:00Z"),
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2024-03-01T12:30:45Z",
        ),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2024-03-01T12:30:10Z",
        ),
    ]);
    assert_eq!(
        backoff_from_headers(200, &h, now),
        Some(Duration::from_secs(45))
    );
    let h = headers(&[
        ("retry-after", "12"),
        ("anthropic-ratelimit-tokens-remaining", "0"),
        ("anthropic-ratelimit-tokens-reset", "2024-03-01T12:30:05Z"),
    ]);
    assert_eq!(
        backoff_from_headers(429, &h, now),
        Some(Duration::from_secs(12))
    );
    // A reset already past does not block.
    let h = headers(&[
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2024-03-01T12:00:00Z"),
    ]);
    assert_eq!(backoff_from_headers(200, &h, now), None);
}

#[tokio::test(start_paused = true)]
async fn upstream_backoff_blocks_a_route_until_it_expires() {
    let b = UpstreamBackoff::new();
    b.observe(
        "openai/gpt-4o",
        200,
        &headers(&[("x-ratelimit-remaining-requests", "5")]),
    );
    assert_eq!(b.blocked_for("openai/gpt-4o"), None);
    b.observe("openai/gpt-4o", 429, &headers(&[("retry-after", "2")]));
    assert_eq!(b.blocked_for("openai/gpt-4o"), Some(Duration::from_secs(2)));
    assert_eq!(b.blocked_for("anthropic/claude"), None);
    // A shorter block does not shorten a longer one.
    b.observe("openai/gpt-4o", 429, &headers(&[("retry-after", "1")]));
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(
        b.blocked_for("openai/gpt-4o"),
        Some(Duration::from_millis(500))
    );
    let limited = b.limited("openai/gpt-4o").unwrap();
    assert_eq!(
        (limited.limit, limited.scope),
        (LimitKind::Upstream, Scope::Route)
    );
    assert_eq!(
        limited.to_event(),
        AgentEvent::RateLimited {
            limit: "upstream".into(),
            retry_after_ms: 500
        }
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(b.blocked_for("openai/gpt-4o"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_and_streams_hold_across_threads() {
    // Real parallelism (no paused clock): 10 rpm refills one cell per 6 s, far beyond the test.
    let l = limiter("[per_key]\nrequests_per_minute = 10\n[per_model]\nconcurrent_streams = 50\n");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(&alice(), "m", est(0)).await.ok() })
        })
        .collect();
    let mut permits = Vec::new();
    for t in tasks {
        permits.extend(t.await.unwrap());
    }
    assert_eq!(permits.len(), 10);
    assert_eq!(l.in_flight(&Subject::Model("m".into())), 10);
    drop(permits);
    assert_eq!(l.in_flight(&Subject::Model("m".into())), 0);
}

#[test]
fn retry_after_reads_ms_then_seconds_then_a_date() {
    let now = UNIX_EPOCH + Duration::from_secs(1_709_296_200);
    let at = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
    assert_eq!(at(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
    assert_eq!(
        at(&[("retry-after", "1.5")]),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        at(&[("retry-after", "3"), ("retry-after-ms", "250")]),
        Some(Duration::from_millis(250))
    );
    // A malformed retry-after-ms falls back to Retry-After.
    assert_eq!(
        at(&[("retry-after", "3"), ("retry-after-ms", "soon")]),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        at(&[("retry-after", "Fri, 01 Mar 2024 12:30:30 GMT")]),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        at(&[("retry-after", "Fri, 01 Mar 2024 12:00:00 GMT")]),
        Some(Duration::ZERO),
        "a date already past"
    );
    assert_eq!(at(&[]), None);
}

#[test]
fn hostile_numbers_are_clamped_or_ignored() {
    let now = SystemTime::now();
    let clamped = [
        "1e30",
        "18446744073709551615",
        "1e308",
        "340282366920938463463374607431768211456",
    ];
    for v in clamped {
        for name in ["retry-after", "retry-after-ms"] {
            assert_eq!(
                retry_after(&headers(&[(name, v)]), now),
                Some(MAX_BACKOFF),
                "{name}: {v}"
            );
        }
    }
    for v in [
        "inf",
        "-inf",
        "NaN",
        "-1",
        "-0.5",
        "1e999",
        "",
        "soon",
        "0x10",
        "Fri, 31 Dec 9999",
    ] {
        for name in ["retry-after", "retry-after-ms"] {
            let h = headers(&[(name, v)]);
            assert_eq!(retry_after(&h, now), None, "{name}: {v}");
            // A 429 that says nothing usable rests the default.
            assert_eq!(
                backoff_from_headers(429, &h, now),
                Some(DEFAULT_429_BACKOFF),
                "{name}: {v}"
            );
        }
    }
    // 1e999 parses as infinity: ignored, not a panic.
    let far_dates = [
        ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z"),
        (
            "x-ratelimit-reset-requests",
            "99999999999999999999999999999999h",
        ),
        (
            "x-ratelimit-reset-tokens",
            "1844674407370955161518446744073709551615s",
        ),
    ];
    for (name, v) in far_dates {
        let h = headers(&[
            (name, v),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(
            backoff_from_headers(429, &h, now),
            Some(MAX_BACKOFF),
            "{name}: {v}"
        );
    }
    assert_eq!(parse_go_duration("1.2.3s"), None);
    assert_eq!(parse_go_duration("9".repeat(400).as_str()), None, "no unit");
    assert_eq!(
        parse_go_duration(&format!("{}h", "9".repeat(400))),
        Some(Duration::MAX)
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_block_is_clamped() {
    let b = UpstreamBackoff::new();
    b.block("a/m", Duration::MAX);
    assert_eq!(b.blocked_for("a/m"), Some(MAX_BACKOFF));
}

/// Header values of every class a hostile or broken provider may send.
fn hostile_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        Just("inf".to_owned()),
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        "[0-9]{1,45}(\\.[0-9]{0,6})?",
        "([0-9]{1,30}(\\.[0-9]{0,4})?(h|m|s|ms|us|ns|µs|x)){1,4}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        (0u64..10_000, 0u64..60)
            .prop_map(|(year, s)| format!("Fri, 31 Dec {year:04} 23:59:{s:02} GMT")),
        "[ -~]{0,40}",
    ]
}

const RATE_HEADERS: [&str; 14] = [
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];

proptest::proptest! {
    /// Any mix of rate-limit headers with any values, on any status: the one parser never
    /// panics and never asks for a rest past MAX_BACKOFF, and the route record takes it.
    #[test]
    fn hostile_rate_limit_headers_never_panic(
        status in proptest::sample::select(vec![200u16, 408, 429, 500, 503, 529]),
        pairs in proptest::collection::vec(
            (proptest::sample::select(RATE_HEADERS.to_vec()), hostile_value()),
            0..8,
        ),
        zero in proptest::collection::vec(proptest::sample::select(RATE_HEADERS.to_vec()), 0..4),
    ) {
        let mut h = HeaderMap::new();
        for (name, value) in &pairs {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(*name, v);
            }
        }
        // Some budgets exhausted, so their resets are read.
        for name in zero {
            if name.ends_with("remaining") || name.contains("remaining-") {
                h.insert(name, HeaderValue::from_static("0"));
            }
        }
        let now = SystemTime::now();
        let wait = backoff_from_headers(status, &h, now);
        proptest::prop_assert!(wait.is_none_or(|w| w <= MAX_BACKOFF), "{wait:?}");
        if status == 429 {
            proptest::prop_assert!(wait.is_some());
        }
        proptest::prop_assert!(retry_after(&h, now).is_none_or(|w| w <= MAX_BACKOFF));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = UpstreamBackoff::new();
            b.observe("a/m", status, &h);
            proptest::prop_assert_eq!(b.blocked_for("a/m"), wait.filter(|w| !w.is_zero()));
            Ok(())
        })?;
    }
}

/// A reload that keeps a key's quotas keeps what it counted: for every quota n, a key that used
/// its n requests stays refused after the reload, and the streams a permit holds still count;
/// a reload that raises the quota lets exactly the difference through.
#[tokio::test(start_paused = true)]
async fn reconfiguring_keeps_counts_and_streams() {
    for n in 1..=6u32 {
        let text = format!("[per_key]\nrequests_per_minute = {n}\nconcurrent_streams = {n}\n");
        let l = limiter(&text);
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(l.acquire(&alice(), "m", est(1)).await.unwrap());
        }
        let same = l
            .reconfigured(&limits(&text), |_| None, std::iter::empty())
            .unwrap();
        let e = same.acquire(&alice(), "m", est(1)).await.unwrap_err();
        assert_eq!(e.limit, LimitKind::ConcurrentStreams, "n={n}");
        assert_eq!(same.in_flight(&Subject::Key(alice())), n, "n={n}");
        // Streams end: the reloaded limiter sees them go, and the per-minute count still holds.
        held.clear();
        assert_eq!(same.in_flight(&Subject::Key(alice())), 0, "n={n}");
        let e = same.acquire(&alice(), "m", est(1)).await.unwrap_err();
        assert_eq!(e.limit, LimitKind::RequestsPerMinute, "n={n}");
        // A higher quota is a new budget for that value: its own n+2 requests.
        let raised = format!("[per_key]\nrequests_per_minute = {}\n", n + 2);
        let more = same
            .reconfigured(&limits(&raised), |_| None, std::iter::empty())
            .unwrap();
        for _ in 0..n + 2 {
            drop(more.acquire(&alice(), "m", est(1)).await.unwrap());
        }
        assert!(more.acquire(&alice(), "m", est(1)).await.is_err(), "n={n}");
        // The old limiter (a running answer's configuration) shares the same counts.
        assert!(l.acquire(&alice(), "m", est(1)).await.is_err(), "n={n}");
    }
}
