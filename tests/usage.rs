//! Usage across attempts through real sockets (docs/resilience.md, "Usage across attempts"):
//! an attempt that broke before its provider reported usage is counted from the gateway's
//! estimate (input from the request, output from what it streamed) and the total is marked
//! `basis: estimated`; an OpenAI client that asked for usage gets its usage chunk before the
//! error chunk of a stream that fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

#[path = "common/resilience.rs"]
mod rs;

use providers::{AgentEvent, Dialect, StreamDecoder, Usage, UsageBasis};
use serde_json::Value;

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

/// The cut points of `rec` where text was streamed and the answer has not finished, and, when
/// `unreported`,
/// its provider has not reported any usage yet.
fn cuts(rec: &rs::Recording, unreported: bool) -> Vec<usize> {
    (1..rec.frames.len())
        .filter(|&n| {
            let (events, _) = StreamDecoder::decode_all(rec.dialect, &rec.frames[..n].concat());
            let any = |f: fn(&AgentEvent) -> bool| events.iter().any(f);
            any(|e| matches!(e, AgentEvent::TextDelta { .. }))
                && !any(|e| matches!(e, AgentEvent::StreamEnd(_)))
                && !(unreported && any(|e| matches!(e, AgentEvent::Usage(_))))
        })
        .collect()
}

/// The gateway's estimate of the input of `model`'s request through `door`.
fn input_estimate(door: Dialect, model: &str) -> u64 {
    let body = gw::chat_body(door, model, true);
    let request = door.wire().parse_request(body.into()).unwrap();
    streamgate::estimate::input_tokens(&request)
}

/// The gateway's estimate of the output of `text`: 4 bytes a token.
fn output_estimate(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

/// The text a client received before the first retry seam of `events`: what the broken
/// attempt streamed, which the gateway estimates.
fn text_before_seam(events: &[AgentEvent]) -> String {
    events
        .iter()
        .take_while(|e| !matches!(e, AgentEvent::Retry { .. }))
        .filter_map(|e| match e {
            AgentEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_attempt_is_counted_by_estimate_and_the_total_is_marked() {
    let rec = rs::recording(Dialect::OpenAi, "text_basic");
    // The continuation reports the recording's own final usage.
    let (full, _) = StreamDecoder::decode_all(rec.dialect, &rec.body);
    let real = usage_of(&full);
    let cuts = cuts(&rec, true);
    assert!(cuts.len() >= 3, "{cuts:?}");
    let h = rs::start(3, |_| {}).await;
    let mut failures = Vec::new();
    for n in cuts {
        for door in Dialect::ALL {
            // Its own model string per case: `times=1` counts identical requests.
            let model = format!(
                "openai/times=1,reset_after={n},drip={}:text_basic",
                door as u8
            );
            let input = input_estimate(door, &model);
            let base = format!("http://{}", h.gateway);
            let body = gw::post_stream(&base, door, &model)
                .await
                .bytes()
                .await
                .unwrap();
            let mut reader = gw::NativeReader::default();
            reader.feed(&body);
            let events: Vec<AgentEvent> = reader.envelopes().into_iter().map(|e| e.event).collect();
            let mut errs = Vec::new();
            if !events.iter().any(|e| matches!(e, AgentEvent::Retry { .. })) {
                errs.push("no retry seam: the fault did not break the attempt".to_owned());
            }
            // The reset is sent right after frame `n`; with no drip it may overtake the last
            // frames in the gateway's socket, so the attempt streamed at most the text of `n`
            // frames, and the estimate is of what it streamed.
            let streamed = text_before_seam(&events);
            let cut = rec.text_before(n);
            if !cut.starts_with(&streamed) {
                errs.push(format!(
                    "streamed {streamed:?} before the seam, beyond the cut {cut:?}"
                ));
            }
            let output = output_estimate(&streamed);
            let want = (
                Some(input + real.input_tokens.unwrap()),
                Some(output + real.output_tokens.unwrap()),
            );
            let total = usage_of(&events);
            if (total.input_tokens, total.output_tokens) != want {
                errs.push(format!(
                    "usage {:?}/{:?}, want {want:?} (estimate {input}+{output}, then {real:?})",
                    total.input_tokens, total.output_tokens
                ));
            }
            if total.basis != UsageBasis::Estimated {
                errs.push(format!("basis {:?}", total.basis));
            }
            if !errs.is_empty() {
                failures.push(format!("cut after {n} frames, {door} request: {errs:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_that_fails_sends_its_usage_chunk_before_the_error() {
    let h = rs::start(1, |_| {}).await;
    let mut failures = Vec::new();
    for upstream in Dialect::ALL {
        let rec = rs::recording(upstream, "text_basic");
        // Anthropic reports its input count (and a first output count) at the start.
        let all = cuts(&rec, upstream != Dialect::Anthropic);
        assert!(all.len() >= 3, "{upstream}: {all:?}");
        for n in all {
            // Frames 20 ms apart, so that the reset cannot overtake the response head.
            let model = format!(
                "{}/reset_after={n},drip=20:text_basic",
                rs::provider(upstream)
            );
            let response = h
                .chat(
                    Dialect::OpenAi,
                    &[],
                    &gw::chat_body(Dialect::OpenAi, &model, true),
                )
                .await;
            assert_eq!(response.status(), 200, "{model}");
            let frames = rs::sse_frames(&gw::body_bytes(response).await);
            let usage_at = frames.iter().position(|(_, v)| {
                v.get("usage").is_some_and(|u| !u.is_null())
                    && v["choices"].as_array().is_some_and(Vec::is_empty)
            });
            let error_at = frames.iter().position(|(_, v)| v.get("error").is_some());
            let input = input_estimate(Dialect::OpenAi, &model);
            // Dripped: the break comes after all `n` frames, and the estimate is of their text.
            let output = output_estimate(&rec.text_before(n));
            let errs = match (usage_at, error_at) {
                (Some(u), Some(e)) if u + 1 == e => {
                    let usage = &frames[u].1["usage"];
                    let got = (
                        usage["prompt_tokens"].as_u64(),
                        usage["completion_tokens"].as_u64(),
                    );
                    // An Anthropic upstream reported its input count before the break.
                    let want_input = match upstream {
                        // Responses reports usage only in its final response.
                        Dialect::OpenAi | Dialect::OpenAiResponses => input,
                        Dialect::Anthropic => {
                            let (events, _) =
                                StreamDecoder::decode_all(rec.dialect, &rec.frames[..n].concat());
                            usage_of(&events).input_tokens.unwrap_or(input)
                        }
                    };
                    let want = (Some(want_input), Some(output.max(reported_output(&rec, n))));
                    let mut errs = Vec::new();
                    if got != want {
                        errs.push(format!("usage {got:?}, want {want:?}"));
                    }
                    if usage.get("basis").is_some() || usage.get("estimated").is_some() {
                        errs.push(format!("the estimate marker leaked: {usage}"));
                    }
                    if frames.iter().any(|(_, v)| *v == Value::Null) {
                        errs.push("[DONE] after an error".to_owned());
                    }
                    errs
                }
                other => vec![format!("usage chunk and error chunk at {other:?}")],
            };
            if !errs.is_empty() {
                failures.push(format!("{model}: {errs:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The output count `rec` reported in its first `n` frames (Anthropic's `message_start`).
fn reported_output(rec: &rs::Recording, n: usize) -> u64 {
    let (events, _) = StreamDecoder::decode_all(rec.dialect, &rec.frames[..n].concat());
    usage_of(&events).output_tokens.unwrap_or(0)
}
