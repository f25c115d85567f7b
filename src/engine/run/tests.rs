//! The rate-limit settlement of an answer that stops without its provider's final report:
//! however the run goes away, the permit is charged what the answer cost as far as the gateway
//! can tell (reported counts where the provider gave them, estimates where it did not).

use std::sync::Arc;

use providers::event::{BlockKind, StreamStart};
use providers::request::ChatRequest;
use providers::{AgentEvent, Dialect, Usage};
use serde_json::json;

use super::Run;
use crate::engine::{Call, Engine};
use crate::limit::{ClientId, TokenEstimate};
use crate::route::Route;
use crate::upstream::{ClientKey, ForwardHeaders};

/// The model's tokens-per-minute budget.
const BUDGET: u64 = 100_000;

/// An engine whose model has a [`BUDGET`] of tokens per minute.
pub(in crate::engine) fn engine() -> Arc<Engine> {
    let config = crate::config::Config {
        limits: toml::from_str(&format!(
            "queue_ms = 0\n[per_model]\ntokens_per_minute = {BUDGET}\n"
        ))
        .unwrap(),
        ..crate::config::Config::default()
    };
    Arc::new(Engine::new(config).unwrap())
}

/// A small Anthropic request for model `m`.
pub(in crate::engine) fn call() -> Call {
    let request = ChatRequest::from_anthropic(&json!({
        "model": "m", "max_tokens": 4000,
        "messages": [{"role": "user", "content": "hello"}]
    }))
    .unwrap();
    Call {
        door: Dialect::Anthropic,
        request,
        key: ClientKey {
            door: Dialect::Anthropic,
            key: None,
        },
        forward: ForwardHeaders::default(),
        caller: crate::keys::Caller::open(),
        observed: crate::telemetry::request::Observed::detached("test".into()),
    }
}

/// What is left of the budget: the largest borrow that still fits (the clock is paused, so
/// nothing refills meanwhile).
async fn level(engine: &Engine) -> u64 {
    let (mut lo, mut hi) = (0, BUDGET + 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let fits = engine
            .limiter()
            .acquire(&ClientId::ANONYMOUS, "m", TokenEstimate::new(mid, 0))
            .await
            .map(|mut permit| permit.settle(0))
            .is_ok();
        if fits { lo = mid } else { hi = mid }
    }
    lo
}

#[tokio::test(start_paused = true)]
async fn a_run_that_stops_early_settles_with_the_estimate_of_what_it_streamed() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0620);
    for case in 0..40 {
        let engine = engine();
        let borrow = TokenEstimate::new(rng.u64(1..2_000), 4_000);
        let permit = engine
            .limiter()
            .acquire(&ClientId::ANONYMOUS, "m", borrow)
            .await
            .unwrap();
        let route = Route {
            provider: "p".into(),
            model: "m".into(),
        };
        let mut run = Run::new(
            Arc::clone(&engine),
            engine.generation(),
            call(),
            permit,
            vec![route],
        );
        let input = rng.u64(1..2_000);
        run.splicer.begin_attempt(input);
        let mut out = Vec::new();
        let anthropic = rng.bool();
        run.push(
            AgentEvent::StreamStart(Box::new(StreamStart {
                id: "s".into(),
                model: "m".into(),
                dialect: if anthropic {
                    Dialect::Anthropic
                } else {
                    Dialect::OpenAi
                },
                created: None,
                request_id: None,
                provider: None,
                extra: None,
            })),
            &mut out,
        );
        // Anthropic reports its input, and an output of 1, at the start: the run settles with
        // that at once, far below what the answer goes on to cost.
        let reported_in = rng.u64(1..2_000);
        if anthropic {
            run.push(
                AgentEvent::Usage(Box::new(Usage {
                    input_tokens: Some(reported_in),
                    output_tokens: Some(1),
                    ..Usage::default()
                })),
                &mut out,
            );
            assert_eq!(run.permit.charged(), reported_in + 1, "case {case}");
        }
        run.push(
            AgentEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
                choice: 0,
                extra: None,
            },
            &mut out,
        );
        let mut bytes = 0;
        for _ in 0..rng.usize(0..200) {
            let text = "word ".repeat(rng.usize(1..20));
            bytes += text.len();
            run.push(
                AgentEvent::TextDelta {
                    index: 0,
                    text: text.into(),
                    extra: None,
                },
                &mut out,
            );
        }
        let output = (bytes.div_ceil(4) as u64).max(u64::from(anthropic));
        let want = if anthropic { reported_in } else { input } + output;
        // The client leaves (the answer's stream is dropped with its run), or the upstream
        // stream ended without `stream.end` and the run is done: either way the run goes.
        drop(run);
        assert_eq!(level(&engine).await, BUDGET - want, "case {case}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_no_provider_started_costs_nothing() {
    let engine = engine();
    let permit = engine
        .limiter()
        .acquire(&ClientId::ANONYMOUS, "m", TokenEstimate::new(500, 4_000))
        .await
        .unwrap();
    assert_eq!(level(&engine).await, BUDGET - 4_500);
    drop(Run::new(
        Arc::clone(&engine),
        engine.generation(),
        call(),
        permit,
        Vec::new(),
    ));
    assert_eq!(level(&engine).await, BUDGET);
}
