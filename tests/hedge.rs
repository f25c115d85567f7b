//! Hedging a slow first token through real sockets (docs/resilience.md): the replay's
//! `first_token_delay_ms` knob makes an upstream send its head at once and its body late; an
//! alias with a fallback and `hedge_after_ms` starts the fallback in parallel, the first to
//! produce content answers, the other is cancelled, and the Agent Event Stream shows a
//! `failover` seam with reason `hedge` when the fallback won.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

#[path = "common/resilience.rs"]
mod rs;

use std::time::Duration;

use providers::{AgentEvent, Assembler, Dialect, FailoverCause, StreamDecoder, Usage, UsageBasis};

/// Hedge delay of the test aliases: short, so that a test never waits out a slow route, and
/// long enough that a route without delay has its content before it on a loaded machine.
const HEDGE_MS: u64 = 1_500;

/// Longer than any test may take: a route this slow must never be waited for.
const NEVER_MS: u64 = 60_000;

/// The Agent Events of one answer for `model`, asked in `dialect` at the native door.
async fn events(h: &gw::Harness, dialect: Dialect, model: &str) -> Vec<AgentEvent> {
    let base = format!("http://{}", h.gateway);
    let response = gw::post_stream(&base, dialect, model).await;
    let body = tokio::time::timeout(gw::BOUND, response.bytes())
        .await
        .expect("the answer within the bound")
        .unwrap();
    let mut reader = gw::NativeReader::default();
    reader.feed(&body);
    reader.envelopes().into_iter().map(|e| e.event).collect()
}

/// Every usage event of `events` merged (latest wins, per field).
fn usage_of(events: &[AgentEvent]) -> Usage {
    let mut usage = Usage::default();
    for event in events {
        if let AgentEvent::Usage(u) = event {
            usage.merge(u);
        }
    }
    usage
}

fn requests_for(h: &gw::Harness, dialect: Dialect, model: &str) -> usize {
    h.replay
        .requests()
        .iter()
        .filter(|r| r.path == rs::endpoint(dialect) && r.model() == Some(model))
        .count()
}

/// A route of the replay: `provider/KNOBS:FIXTURE`, its upstream model and its dialect.
struct Upstream {
    dialect: Dialect,
    model: String,
}

impl Upstream {
    fn new(dialect: Dialect, knobs: &str, fixture: &str) -> Upstream {
        let model = if knobs.is_empty() {
            fixture.to_owned()
        } else {
            format!("{knobs}:{fixture}")
        };
        Upstream { dialect, model }
    }

    fn route(&self) -> String {
        format!("{}/{}", rs::provider(self.dialect), self.model)
    }

    fn text(&self) -> String {
        let name = self.model.rsplit(':').next().unwrap();
        let body = streamgate::replay::fixture(self.dialect, name).unwrap();
        let (events, result) = StreamDecoder::decode_all(self.dialect, body);
        result.unwrap();
        Assembler::assemble(&events).text()
    }
}

/// Who should answer a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Primary,
    Fallback,
}

/// The winner by the delays (milliseconds until each route's first content) when the hedge
/// starts after `HEDGE_MS`: the primary if it has content before the hedge starts or before
/// the fallback's content, else the fallback. The generated delays keep every comparison
/// seconds apart, so that a loaded machine cannot flip one.
fn winner(primary: u64, fallback: u64) -> Want {
    if primary < HEDGE_MS || primary < HEDGE_MS + fallback {
        Want::Primary
    } else {
        Want::Fallback
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_route_with_content_answers_and_a_hedge_win_is_a_failover_seam() {
    // Delays of the first token, per route, far apart from each other and from HEDGE_MS.
    const DELAYS: [u64; 3] = [0, 5_000, NEVER_MS];
    let h = rs::start(1, |c| {
        for (i, (p, f)) in pairs().enumerate() {
            let (primary, fallback) = routes(i, p, f);
            rs::alias(
                c,
                &format!("race{i}"),
                &primary.route(),
                &[&fallback.route()],
            );
            c.models
                .get_mut(&format!("race{i}"))
                .unwrap()
                .hedge_after_ms = Some(HEDGE_MS);
        }
    })
    .await;
    fn pairs() -> impl Iterator<Item = (u64, u64)> {
        DELAYS
            .into_iter()
            .flat_map(|p| DELAYS.into_iter().map(move |f| (p, f)))
            // Both never: nothing would answer within the test; and a race closer than a
            // second is a coin toss on a loaded machine.
            .filter(|&(p, f)| p != NEVER_MS || f != NEVER_MS)
            .filter(|&(p, f)| p < HEDGE_MS || p.abs_diff(HEDGE_MS + f) >= 1_000)
    }
    // Each case its own model strings (the knobs differ by a tag), alternating the primary's
    // dialect, so that the answer says which route gave it.
    fn routes(i: usize, p: u64, f: u64) -> (Upstream, Upstream) {
        let (pd, fd) = if i.is_multiple_of(2) {
            (Dialect::OpenAi, Dialect::Anthropic)
        } else {
            (Dialect::Anthropic, Dialect::OpenAi)
        };
        let knobs = |ms: u64| format!("times={},first_token_delay_ms={ms}", 1000 + i);
        (
            Upstream::new(pd, &knobs(p), "text_basic"),
            Upstream::new(fd, &knobs(f), "text_basic"),
        )
    }
    let cases = pairs().enumerate().map(|(i, (p, f))| {
        let h = &h;
        async move {
            let (primary, fallback) = routes(i, p, f);
            let door = if i.is_multiple_of(3) {
                Dialect::Anthropic
            } else {
                Dialect::OpenAi
            };
            let events = events(h, door, &format!("race{i}")).await;
            let mut errs = Vec::new();
            let want = winner(p, f);
            let answering = match want {
                Want::Primary => &primary,
                Want::Fallback => &fallback,
            };
            let got = Assembler::assemble(&events);
            if got.text() != answering.text() {
                errs.push(format!("text {:?}, want {want:?}'s", got.text()));
            }
            let seams: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    AgentEvent::Failover {
                        from,
                        to,
                        reason,
                        cause,
                        ..
                    } => Some((from.clone(), to.clone(), reason.clone(), *cause)),
                    AgentEvent::Retry { reason, .. } => {
                        Some((String::new(), String::new(), reason.clone(), FailoverCause::Failure))
                    }
                    _ => None,
                })
                .collect();
            let want_seams = match want {
                Want::Primary => vec![],
                Want::Fallback => vec![(
                    primary.route(),
                    fallback.route(),
                    "hedge".to_owned(),
                    FailoverCause::Hedge,
                )],
            };
            if seams != want_seams {
                errs.push(format!("seams {seams:?}, want {want_seams:?}"));
            }
            // The hedge starts only for a primary slower than HEDGE_MS, once.
            let hedged = usize::from(p > HEDGE_MS);
            let sent = (
                requests_for(h, primary.dialect, &primary.model),
                requests_for(h, fallback.dialect, &fallback.model),
            );
            if sent != (1, hedged) {
                errs.push(format!("requests (primary, fallback) {sent:?}, want (1, {hedged})"));
            }
            if !matches!(events.last(), Some(AgentEvent::StreamEnd(end)) if end.reason == providers::FinishReason::Stop)
            {
                errs.push(format!("last event {:?}", events.last()));
            }
            (errs.is_empty()).then_some(()).ok_or(format!(
                "case {i}: primary {} ({p} ms), fallback {} ({f} ms), {door} door: {errs:?}",
                primary.route(),
                fallback.route()
            ))
        }
    });
    let results = futures_util::future::join_all(cases).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    // Every loser was cancelled: no upstream stream stays open behind a finished answer.
    let opened = h.replay.requests().len();
    assert!(
        h.replay
            .wait_streams_closed(opened, Duration::from_secs(10))
            .await,
        "a cancelled attempt's upstream stream is still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_without_content_is_hedged_and_its_usage_counted() {
    // The primary sends Anthropic's message_start (with its input count) and then nothing:
    // an overloaded server that accepted the request. The fallback answers; the primary's
    // reported tokens are part of the answer's usage.
    let primary = Upstream::new(Dialect::Anthropic, "stall_after=1", "text_basic");
    let fallback = Upstream::new(Dialect::OpenAi, "", "text_basic");
    let h = rs::start(1, |c| {
        rs::alias(c, "opened", &primary.route(), &[&fallback.route()]);
        c.models.get_mut("opened").unwrap().hedge_after_ms = Some(HEDGE_MS);
    })
    .await;
    for door in Dialect::ALL {
        let before = usage_at(Dialect::Anthropic, "text_basic", Some(1));
        let events = events(&h, door, "opened").await;
        let got = Assembler::assemble(&events);
        assert_eq!(got.text(), fallback.text(), "{door}");
        assert!(
            events.iter().any(|e| matches!(
                e,
                AgentEvent::Failover {
                    cause: FailoverCause::Hedge,
                    ..
                }
            )),
            "{door}: no hedge seam"
        );
        let answered = usage_at(Dialect::OpenAi, "text_basic", None);
        let total = usage_of(&events);
        let want_in = before.input_tokens.unwrap() + answered.input_tokens.unwrap();
        let want_out = before.output_tokens.unwrap() + answered.output_tokens.unwrap();
        assert_eq!(
            (total.input_tokens, total.output_tokens),
            (Some(want_in), Some(want_out)),
            "{door}: the cancelled attempt's reported tokens are counted"
        );
        assert_eq!(total.basis, UsageBasis::Reported, "{door}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_fails_before_the_hedge_delay_fails_over_as_before() {
    let primary = Upstream::new(Dialect::OpenAi, "status=500", "text_basic");
    let fallback = Upstream::new(Dialect::Anthropic, "", "text_basic");
    let h = rs::start(1, |c| {
        rs::alias(c, "failing", &primary.route(), &[&fallback.route()]);
        c.models.get_mut("failing").unwrap().hedge_after_ms = Some(NEVER_MS);
    })
    .await;
    let events = events(&h, Dialect::OpenAi, "failing").await;
    assert_eq!(Assembler::assemble(&events).text(), fallback.text());
    let causes: Vec<FailoverCause> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Failover { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect();
    assert_eq!(causes, [FailoverCause::Failure]);
}

/// The usage a `dialect` recording reports in its first `frames` frames (all when None).
fn usage_at(dialect: Dialect, name: &'static str, frames: Option<usize>) -> Usage {
    let rec = rs::recording(dialect, name);
    let n = frames.unwrap_or(rec.frames.len());
    let body = rec.frames[..n].concat();
    let (events, _) = StreamDecoder::decode_all(dialect, &body);
    usage_of(&events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_twenty_second_first_token_is_raced() {
    // No hedge setting anywhere: the documented default applies.
    let primary = Upstream::new(Dialect::OpenAi, "first_token_delay_ms=20000", "text_basic");
    let fallback = Upstream::new(Dialect::Anthropic, "", "text_basic");
    let h = rs::start(1, |c| {
        // The default first-byte timeout (120 s), not the test's: only the hedge may win.
        for p in c.providers.values_mut() {
            p.first_byte_timeout_ms = 120_000;
        }
        rs::alias(c, "default", &primary.route(), &[&fallback.route()]);
    })
    .await;
    let began = std::time::Instant::now();
    let events = events(&h, Dialect::OpenAi, "default").await;
    let took = began.elapsed();
    assert_eq!(Assembler::assemble(&events).text(), fallback.text());
    assert!(
        events.iter().any(|e| matches!(
            e,
            AgentEvent::Failover {
                cause: FailoverCause::Hedge,
                ..
            }
        )),
        "no hedge seam"
    );
    // The slow primary cannot have answered before its 20 s: the fallback did, after the
    // default 10 s.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(20),
        "answered after {took:?}"
    );
}

#[test]
fn hedge_settings_parse_globally_and_per_alias() {
    let c = streamgate::config::Config::parse(
        r#"
        [streaming.retryPolicy]
        hedgeAfterMs = 250

        [models.fast]
        route = "openai/gpt-4o"
        fallbacks = ["anthropic/claude-sonnet-4-5"]
        hedge_after_ms = 0
        "#,
    )
    .unwrap();
    assert_eq!(c.streaming.retry_policy.hedge_after_ms, 250);
    assert_eq!(c.models["fast"].hedge_after_ms, Some(0));
    let default = streamgate::config::Config::default();
    assert_eq!(default.streaming.retry_policy.hedge_after_ms, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_probe_that_loses_the_race_opens_its_breaker_again() {
    let primary = Upstream::new(Dialect::OpenAi, "first_token_delay_ms=30000", "text_basic");
    let fallback = Upstream::new(Dialect::Anthropic, "", "text_basic");
    let h = rs::start(1, |c| {
        c.streaming.circuit_breaker.failure_threshold = 1;
        c.streaming.circuit_breaker.cooldown_ms = 300;
        c.providers.get_mut("openai").unwrap().first_byte_timeout_ms = 1_000;
        // Two aliases over the same primary: one without hedging, whose first-byte timeout
        // opens the primary's breaker; one that hedges.
        rs::alias(c, "unhedged", &primary.route(), &[&fallback.route()]);
        c.models.get_mut("unhedged").unwrap().hedge_after_ms = Some(0);
        rs::alias(c, "hedged", &primary.route(), &[&fallback.route()]);
        c.models.get_mut("hedged").unwrap().hedge_after_ms = Some(200);
    })
    .await;
    let state = || async {
        let r = h.client.get(h.url("/admin/routes")).send().await.unwrap();
        let v: serde_json::Value = gw::json_of(r).await;
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == primary.route().as_str())
            .map(|r| r["state"].as_str().unwrap().to_owned())
    };
    let first = events(&h, Dialect::OpenAi, "unhedged").await;
    assert_eq!(Assembler::assemble(&first).text(), fallback.text());
    assert_eq!(state().await.as_deref(), Some("open"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The cooldown is over: this request's primary attempt is the probe, and loses the race.
    let probe = events(&h, Dialect::OpenAi, "hedged").await;
    assert_eq!(Assembler::assemble(&probe).text(), fallback.text());
    assert!(probe.iter().any(|e| matches!(
        e,
        AgentEvent::Failover {
            cause: FailoverCause::Hedge,
            ..
        }
    )));
    assert_eq!(
        requests_for(&h, primary.dialect, &primary.model),
        2,
        "the second request probed the primary"
    );
    assert_eq!(
        state().await.as_deref(),
        Some("open"),
        "the lost probe is reported, not left half-open"
    );
}
