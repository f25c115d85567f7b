//! Usage across attempts: generated sequences of attempts, each broken at a random point
//! with or without a usage report of its own, then one that finishes. The client's last usage
//! is the sum of every attempt's (reported where the provider said, estimated where it did
//! not) and is marked estimated exactly when an estimate is part of it.

use providers::event::{BlockKind, FinishReason, StreamEnd, StreamStart};
use providers::{AgentEvent, Dialect, Usage, UsageBasis};

use super::Splicer;

fn start(dialect: Dialect) -> AgentEvent {
    AgentEvent::StreamStart(Box::new(StreamStart {
        id: "id".into(),
        model: "m".into(),
        dialect,
        created: None,
        request_id: None,
        provider: None,
        extra: None,
    }))
}

fn usage(input: Option<u64>, output: Option<u64>) -> AgentEvent {
    AgentEvent::Usage(Box::new(Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }))
}

/// A random word of 1..12 ASCII letters.
fn word(rng: &mut fastrand::Rng) -> String {
    (0..rng.usize(1..12)).map(|_| rng.alphabetic()).collect()
}

#[test]
fn usage_sums_reported_and_estimated_attempts() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0006);
    for case in 0..500 {
        let mut splicer = Splicer::new(true);
        let mut out = Vec::new();
        let attempts = rng.usize(1..5);
        let (mut want_in, mut want_out, mut estimated) = (0u64, 0u64, false);
        for attempt in 0..attempts {
            let last = attempt + 1 == attempts;
            let input_estimate = rng.u64(1..5_000);
            splicer.begin_attempt(input_estimate);
            // Anthropic reports input (and a first output count) at the start; OpenAI only at
            // the end.
            let anthropic = rng.bool();
            splicer.push(
                start(if anthropic {
                    Dialect::Anthropic
                } else {
                    Dialect::OpenAi
                }),
                &mut out,
            );
            let (reported_in, reported_first_out) = (rng.u64(1..5_000), rng.u64(0..3));
            if anthropic {
                splicer.push(usage(Some(reported_in), Some(reported_first_out)), &mut out);
            }
            let mut produced = 0usize;
            for index in 0..rng.u32(0..4) {
                let reasoning = rng.u8(0..4) == 0;
                let tool = !reasoning && rng.u8(0..4) == 0;
                if tool {
                    let name = word(&mut rng);
                    let args = format!("{{\"k\":\"{}\"}}", word(&mut rng));
                    produced += name.len() + args.len();
                    splicer.push(
                        AgentEvent::ToolCallStart {
                            index,
                            id: format!("call_{case}_{attempt}_{index}"),
                            name,
                            choice: 0,
                            extra: None,
                        },
                        &mut out,
                    );
                    splicer.push(
                        AgentEvent::ToolCallDelta {
                            index,
                            arguments: args.into(),
                        },
                        &mut out,
                    );
                    // Left open: a break inside the call drops it for the client, but the
                    // provider generated it.
                } else {
                    splicer.push(
                        AgentEvent::BlockStart {
                            index,
                            block: if reasoning {
                                BlockKind::Reasoning
                            } else {
                                BlockKind::Text
                            },
                            choice: 0,
                            extra: None,
                        },
                        &mut out,
                    );
                    for _ in 0..rng.usize(1..5) {
                        let text = format!("{} ", word(&mut rng));
                        produced += text.len();
                        let event = if reasoning {
                            AgentEvent::ReasoningDelta {
                                index,
                                text: text.into(),
                            }
                        } else {
                            AgentEvent::TextDelta {
                                index,
                                text: text.into(),
                                extra: None,
                            }
                        };
                        splicer.push(event, &mut out);
                    }
                    splicer.push(AgentEvent::BlockEnd { index }, &mut out);
                }
            }
            let produced_tokens = produced.div_ceil(4) as u64;
            if last {
                // The provider's final report covers everything.
                let (input, output) = (rng.u64(1..5_000), rng.u64(0..5_000));
                splicer.push(usage(Some(input), Some(output)), &mut out);
                splicer.push(
                    AgentEvent::StreamEnd(Box::new(StreamEnd {
                        reason: FinishReason::Stop,
                        provider_reason: None,
                        stop_sequence: None,
                        other_choices: Vec::new(),
                        extra: None,
                    })),
                    &mut out,
                );
                want_in += input;
                want_out += output;
            } else {
                // What the rate limiter is settled with if the answer stops here (its client
                // leaves) is what the break counts.
                let if_ended = splicer.usage_if_ended_now();
                splicer.interrupt(&mut out);
                assert_eq!(splicer.usage(), if_ended, "case {case}");
                if anthropic {
                    want_in += reported_in;
                    want_out += reported_first_out.max(produced_tokens);
                    estimated |= produced_tokens > reported_first_out;
                } else {
                    want_in += input_estimate;
                    want_out += produced_tokens;
                    estimated = true;
                }
            }
        }
        let total = splicer.usage();
        assert_eq!(
            splicer.usage_if_ended_now(),
            total,
            "case {case}: a final report stands"
        );
        assert_eq!(
            (total.input_tokens, total.output_tokens),
            (Some(want_in), Some(want_out)),
            "case {case}"
        );
        let want_basis = if estimated {
            UsageBasis::Estimated
        } else {
            UsageBasis::Reported
        };
        assert_eq!(total.basis, want_basis, "case {case}");
        // The client's last usage event is that total.
        let last = out.iter().rev().find_map(|e| match e {
            AgentEvent::Usage(u) => Some(Usage::clone(u)),
            _ => None,
        });
        assert_eq!(last, Some(total), "case {case}");
    }
}

#[test]
fn an_attempt_the_engine_did_not_announce_is_not_estimated() {
    // Replayed events (a stream brought back from the journal) carry their own usage: no
    // estimate is added for them.
    let mut splicer = Splicer::new(true);
    let mut out = Vec::new();
    splicer.push(start(Dialect::OpenAi), &mut out);
    splicer.push(
        AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        },
        &mut out,
    );
    splicer.push(
        AgentEvent::TextDelta {
            index: 0,
            text: "some words".into(),
            extra: None,
        },
        &mut out,
    );
    splicer.interrupt(&mut out);
    assert_eq!(splicer.usage(), Usage::default());
}

#[test]
fn a_cancelled_attempts_usage_is_added() {
    let mut splicer = Splicer::new(true);
    let mut out = Vec::new();
    splicer.add_usage(&Usage {
        input_tokens: Some(7),
        output_tokens: Some(0),
        basis: UsageBasis::Estimated,
        ..Usage::default()
    });
    splicer.begin_attempt(3);
    splicer.push(start(Dialect::OpenAi), &mut out);
    splicer.push(usage(Some(10), Some(20)), &mut out);
    let total = splicer.usage();
    assert_eq!(
        (total.input_tokens, total.output_tokens),
        (Some(17), Some(20))
    );
    assert_eq!(total.basis, UsageBasis::Estimated);
}

#[test]
fn an_attempt_that_finishes_without_a_report_is_estimated_if_the_answer_ends_there() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0602);
    for case in 0..200 {
        let mut splicer = Splicer::new(true);
        let mut out = Vec::new();
        let input = rng.u64(1..5_000);
        splicer.begin_attempt(input);
        splicer.push(start(Dialect::OpenAi), &mut out);
        splicer.push(
            AgentEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
                choice: 0,
                extra: None,
            },
            &mut out,
        );
        let mut bytes = 0;
        for _ in 0..rng.usize(0..20) {
            let text = format!("{} ", word(&mut rng));
            bytes += text.len();
            splicer.push(
                AgentEvent::TextDelta {
                    index: 0,
                    text: text.into(),
                    extra: None,
                },
                &mut out,
            );
        }
        let output = bytes.div_ceil(4) as u64;
        let estimate = |splicer: &Splicer| {
            let u = splicer.usage_if_ended_now();
            (u.input_tokens, u.output_tokens, u.basis)
        };
        // Mid-stream (the client leaves here): the request's estimate and what streamed.
        assert_eq!(
            estimate(&splicer),
            (Some(input), Some(output), UsageBasis::Estimated),
            "case {case}"
        );
        splicer.push(AgentEvent::BlockEnd { index: 0 }, &mut out);
        splicer.push(
            AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason: FinishReason::Stop,
                provider_reason: None,
                stop_sequence: None,
                other_choices: Vec::new(),
                extra: None,
            })),
            &mut out,
        );
        // Finished without any usage report: still estimated, not free.
        assert_eq!(splicer.usage(), Usage::default(), "case {case}");
        assert_eq!(
            estimate(&splicer),
            (Some(input), Some(output), UsageBasis::Estimated),
            "case {case}"
        );
    }
}
