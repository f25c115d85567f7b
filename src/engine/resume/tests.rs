//! Crash loops over every recording, without I/O: an answer is generated through the splicer
//! as the engine does (attempts that break and are continued, behind `retry` seams), the
//! "process" dies at a random event (the journal keeps a prefix of what the client got), and a
//! new one restores a splicer from that prefix and continues, again and again. Whatever the
//! cut points, the client's answer is the recording's: no text or tool call sent twice, no
//! block started twice, usage counted once per attempt.

use std::collections::HashSet;

use providers::assemble::BlockContent;
use providers::event::{BlockKind, StreamEnd, StreamStart};
use providers::{AgentEvent, Assembler, Dialect, StreamDecoder, Usage};

use super::restore;
use crate::splice::{Seam, Splicer};

/// One recording, and what its answer is.
struct Recording {
    name: String,
    events: Vec<AgentEvent>,
    start: StreamStart,
    text: String,
    calls: Vec<(String, String, String)>,
    end: StreamEnd,
}

/// Every single-choice recording that ends normally.
fn recordings() -> Vec<Recording> {
    let mut out = Vec::new();
    for dialect in Dialect::ALL {
        for name in crate::replay::fixture_names(dialect) {
            let body = crate::replay::fixture(dialect, name).unwrap();
            let (events, result) = StreamDecoder::decode_all(dialect, body);
            if result.is_err() {
                continue;
            }
            // Several choices never cross a seam (continuations are single-choice).
            let multi = events.iter().any(|e| {
                matches!(e, AgentEvent::BlockStart { choice, .. } | AgentEvent::ToolCallStart { choice, .. } if *choice > 0)
            });
            let failed = events.iter().any(|e| matches!(e, AgentEvent::Error(_)));
            let whole = Assembler::assemble(&events);
            let start = events.iter().find_map(|e| match e {
                AgentEvent::StreamStart(s) => Some(StreamStart::clone(s)),
                _ => None,
            });
            let (Some(start), Some(end)) = (start, whole.end.clone()) else {
                continue;
            };
            if multi || failed {
                continue;
            }
            out.push(Recording {
                name: format!("{}/{name}", dialect.as_str()),
                start,
                text: whole.text(),
                calls: whole
                    .tool_calls()
                    .into_iter()
                    .map(|(i, n, a)| (i.to_owned(), n.to_owned(), a.to_owned()))
                    .collect(),
                end,
                events,
            });
        }
    }
    assert!(out.len() >= 10, "the recordings are there");
    out
}

/// What a model asked to continue `prefix` sends: its own usage report first (as Anthropic
/// does), the rest of the recording's text (restarting `repeat` bytes before the end of the
/// prefix, as models often do), every tool call of the answer again (the splicer drops the
/// ones the client has), a final usage report and the end.
fn continuation(rec: &Recording, prefix: &str, repeat: usize, output: u64) -> Vec<AgentEvent> {
    assert!(
        rec.text.starts_with(prefix),
        "{}: asked to continue text the answer does not start with: {prefix:?}",
        rec.name
    );
    let mut events = vec![
        AgentEvent::StreamStart(Box::new(StreamStart {
            id: "continued".into(),
            ..rec.start.clone()
        })),
        AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(100),
            output_tokens: Some(1),
            ..Usage::default()
        })),
    ];
    let from = (0..=prefix.len().saturating_sub(repeat))
        .rev()
        .find(|&i| rec.text.is_char_boundary(i))
        .unwrap_or(0);
    let rest = &rec.text[from..];
    let mut index = 0;
    if !rest.is_empty() {
        events.push(AgentEvent::BlockStart {
            index,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        });
        // A few deltas, so a crash can fall between them.
        let mut at = 0;
        while at < rest.len() {
            let mut to = (at + 1 + rest.len() / 3).min(rest.len());
            while !rest.is_char_boundary(to) {
                to += 1;
            }
            events.push(AgentEvent::TextDelta {
                index,
                text: rest[at..to].into(),
                extra: None,
            });
            at = to;
        }
        events.push(AgentEvent::BlockEnd { index });
        index += 1;
    }
    for (id, name, arguments) in &rec.calls {
        events.push(AgentEvent::ToolCallStart {
            index,
            id: id.clone(),
            name: name.clone(),
            choice: 0,
            extra: None,
        });
        events.push(AgentEvent::ToolCallDelta {
            index,
            arguments: arguments.as_str().into(),
        });
        events.push(AgentEvent::ToolCallEnd {
            index,
            arguments: arguments.clone(),
            truncated: false,
        });
        index += 1;
    }
    events.push(AgentEvent::Usage(Box::new(Usage {
        output_tokens: Some(output),
        ..Usage::default()
    })));
    events.push(AgentEvent::StreamEnd(Box::new(rec.end.clone())));
    events
}

/// Whether `events` end inside a tool call (started, not ended).
fn inside_call(events: &[AgentEvent]) -> bool {
    let mut open = HashSet::new();
    for e in events {
        match e {
            AgentEvent::ToolCallStart { index, .. } => {
                open.insert(*index);
            }
            AgentEvent::ToolCallEnd { index, .. } | AgentEvent::BlockEnd { index } => {
                open.remove(index);
            }
            _ => {}
        }
    }
    !open.is_empty()
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// One answer's life over several processes.
struct Life<'a> {
    rec: &'a Recording,
    rng: fastrand::Rng,
    /// What the journal holds: the client's events so far.
    journal: Vec<AgentEvent>,
    /// Usage of every attempt, as far as its reports reached the journal, summed.
    billed: Usage,
    attempts: u64,
}

impl Life<'_> {
    /// One process: restores from the journal (if anything is there), generates until the
    /// answer ends, then keeps a random prefix of what it produced when it `crash`es.
    fn process(&mut self, crash: bool) {
        let base = self.journal.len();
        let mut out = self.journal.clone();
        let mut splicer = Splicer::new(true);
        let mut cont = None;
        if !out.is_empty() {
            restore(&mut splicer, &self.journal);
            cont = Some(splicer.interrupt(&mut out));
            splicer.seam(
                Seam::Retry {
                    attempt: 1,
                    delay_ms: 0,
                    reason: "the gateway restarted while answering: continuing".into(),
                },
                &mut out,
            );
        }
        // Per attempt: where each of its usage reports landed in the client's stream.
        let mut reports: Vec<Vec<(usize, Usage)>> = Vec::new();
        let mut breaks = 0;
        loop {
            self.attempts += 1;
            let events = match &cont {
                None => self.rec.events.clone(),
                Some(c) => {
                    let repeat = if self.rng.bool() { 0 } else { 20 };
                    continuation(self.rec, &c.prefix, repeat, 10 + self.attempts)
                }
            };
            // Upstream breaks inside one process too, twice at most.
            let cut =
                (breaks < 2 && self.rng.u8(..3) == 0).then(|| self.rng.usize(1..events.len()));
            let mut mine = Vec::new();
            for event in events.into_iter().take(cut.unwrap_or(usize::MAX)) {
                let usage = match &event {
                    AgentEvent::Usage(u) => Some(Usage::clone(u)),
                    _ => None,
                };
                let before = out.len();
                splicer.push(event, &mut out);
                if let Some(u) = usage {
                    let at = out[before..]
                        .iter()
                        .position(|e| matches!(e, AgentEvent::Usage(_)))
                        .expect("usage goes out at once");
                    mine.push((before + at, u));
                }
                if splicer.ended() {
                    break;
                }
            }
            reports.push(mine);
            if splicer.ended() {
                break;
            }
            breaks += 1;
            let c = splicer.interrupt(&mut out);
            splicer.seam(
                Seam::Retry {
                    attempt: breaks,
                    delay_ms: 0,
                    reason: "upstream broke".into(),
                },
                &mut out,
            );
            cont = Some(c);
        }
        let keep = if crash {
            // The hub never journals part of a tool call the splicer released whole (see
            // `hub::generate`): a crash falls between two records, never inside a call.
            let cuts: Vec<usize> = (base..=out.len())
                .filter(|&at| !inside_call(&out[..at]))
                .collect();
            cuts[self.rng.usize(..cuts.len())]
        } else {
            out.len()
        };
        out.truncate(keep);
        for mine in reports {
            let mut u = Usage::default();
            for (at, report) in mine {
                if at < keep {
                    u.merge(&report);
                }
            }
            self.billed.input_tokens = add(self.billed.input_tokens, u.input_tokens);
            self.billed.output_tokens = add(self.billed.output_tokens, u.output_tokens);
        }
        self.journal = out;
    }

    fn complete(&self) -> bool {
        matches!(self.journal.last(), Some(AgentEvent::StreamEnd(_)))
    }
}

fn check(rec: &Recording, seed: u64, crashes: usize, life: &Life<'_>) {
    let what = format!("{} seed {seed} ({crashes} crashes)", rec.name);
    let events = &life.journal;
    let got = Assembler::assemble(events);
    assert_eq!(got.text(), rec.text, "{what}: the text, whole and once");
    let calls: Vec<(String, String)> = got
        .blocks
        .iter()
        .filter_map(|b| match &b.content {
            BlockContent::ToolCall {
                name, arguments, ..
            } => Some((name.clone(), arguments.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(String, String)> = rec
        .calls
        .iter()
        .map(|(_, n, a)| (n.clone(), a.clone()))
        .collect();
    assert_eq!(calls, want, "{what}: every tool call, once");
    assert_eq!(
        got.end.as_ref().map(|e| e.reason),
        Some(rec.end.reason),
        "{what}"
    );
    let count = |f: fn(&AgentEvent) -> bool| events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(|e| matches!(e, AgentEvent::StreamStart(_))),
        1,
        "{what}"
    );
    assert_eq!(
        count(|e| matches!(e, AgentEvent::StreamEnd(_))),
        1,
        "{what}"
    );
    let mut started = HashSet::new();
    for e in events {
        if let AgentEvent::BlockStart { index, .. } | AgentEvent::ToolCallStart { index, .. } = e {
            assert!(
                started.insert(*index),
                "{what}: block {index} started twice"
            );
        }
    }
    let last = events
        .iter()
        .rev()
        .find_map(|e| match e {
            AgentEvent::Usage(u) => Some(u),
            _ => None,
        })
        .expect("usage is reported");
    assert_eq!(
        (last.input_tokens, last.output_tokens),
        (life.billed.input_tokens, life.billed.output_tokens),
        "{what}: usage is every attempt's, once ({} attempts)",
        life.attempts
    );
}

#[test]
fn repeated_crashes_at_random_events_never_repeat_text_calls_or_usage() {
    let recordings = recordings();
    let mut lives = 0;
    for rec in &recordings {
        for seed in 0..40 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let crashes = rng.usize(1..=5);
            let mut life = Life {
                rec,
                rng,
                journal: Vec::new(),
                billed: Usage::default(),
                attempts: 0,
            };
            for _ in 0..crashes {
                if life.complete() {
                    break;
                }
                life.process(true);
            }
            if !life.complete() {
                life.process(false);
            }
            check(rec, seed, crashes, &life);
            lives += 1;
        }
    }
    assert!(lives >= 400, "{lives} lives");
}

/// The case the crash loop found first, spelled out: the restart's continuation is journaled
/// (after its `retry` seam, merged into the open text block) and the process dies again.
#[test]
fn a_second_restart_counts_the_first_restarts_continuation_as_sent() {
    let start = AgentEvent::StreamStart(Box::new(StreamStart {
        id: "m".into(),
        model: "m".into(),
        dialect: Dialect::Anthropic,
        created: None,
        request_id: None,
        provider: None,
        extra: None,
    }));
    let text = |t: &str| AgentEvent::TextDelta {
        index: 0,
        text: t.into(),
        extra: None,
    };
    let usage = |i, o| {
        AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(i),
            output_tokens: Some(o),
            ..Usage::default()
        }))
    };
    let journal = vec![
        start,
        usage(10, 1),
        AgentEvent::BlockStart {
            index: 0,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        },
        text("Step 1: divide "),
        AgentEvent::Retry {
            attempt: 1,
            delay_ms: 0,
            reason: "the gateway restarted while answering: continuing".into(),
        },
        usage(20, 2),
        text("1071 by 462"),
    ];
    let mut splicer = Splicer::new(true);
    restore(&mut splicer, &journal);
    let mut out = Vec::new();
    let cont = splicer.interrupt(&mut out);
    assert!(out.is_empty(), "the text block stays open: {out:?}");
    assert_eq!(cont.prefix, "Step 1: divide 1071 by 462");
    assert_eq!(splicer.usage().input_tokens, Some(20), "not 30");
    assert_eq!(splicer.usage().output_tokens, Some(2));
}

/// The usage a client last saw in `events`.
fn last_usage(events: &[AgentEvent]) -> Usage {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            AgentEvent::Usage(u) => Some(Usage::clone(u)),
            _ => None,
        })
        .unwrap_or_default()
}

/// As the engine restarts on the journal: the restored events are not an attempt it announced
/// (no estimate is made of their text, which every earlier attempt sent and was counted for
/// already), and the journaled usage is the running total the client saw. So a restart keeps
/// that total exactly, however little of the restored text it covers (an Anthropic attempt cut
/// after `message_start` reported an output of 1 for all its text), and each new attempt adds
/// only its own usage, reported or estimated.
#[test]
fn restarts_never_change_the_usage_a_client_saw_beyond_each_new_attempts_own() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0903);
    for case in 0..300 {
        let mut journal: Vec<AgentEvent> = Vec::new();
        let mut expected = Usage::default();
        for restart in 0..rng.usize(1..7) {
            let what = format!("case {case} restart {restart}");
            let mut splicer = Splicer::new(true);
            let mut out = journal.clone();
            if !journal.is_empty() {
                restore(&mut splicer, &journal);
                splicer.interrupt(&mut out);
                let seen = last_usage(&journal);
                assert_eq!(splicer.usage(), seen, "{what}: the restart adds nothing");
                assert_eq!(splicer.usage_if_ended_now(), seen, "{what}");
                splicer.seam(
                    Seam::Retry {
                        attempt: 1,
                        delay_ms: 0,
                        reason: "restarted".into(),
                    },
                    &mut out,
                );
            }
            // The new attempt, announced as the engine does, with the estimate of its request.
            let input = rng.u64(1..3_000);
            splicer.begin_attempt(input);
            let anthropic = rng.bool();
            splicer.push(
                AgentEvent::StreamStart(Box::new(StreamStart {
                    id: "m".into(),
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
            let mut own = Usage::default();
            if anthropic {
                own = Usage {
                    input_tokens: Some(rng.u64(1..3_000)),
                    output_tokens: Some(1),
                    ..Usage::default()
                };
                splicer.push(AgentEvent::Usage(Box::new(own.clone())), &mut out);
            }
            if journal.is_empty() {
                splicer.push(
                    AgentEvent::BlockStart {
                        index: 0,
                        block: BlockKind::Text,
                        choice: 0,
                        extra: None,
                    },
                    &mut out,
                );
            }
            for _ in 0..rng.usize(0..50) {
                splicer.push(
                    AgentEvent::TextDelta {
                        index: 0,
                        text: "several words of text ".into(),
                        extra: None,
                    },
                    &mut out,
                );
            }
            if rng.u8(..3) == 0 {
                // A report late in the attempt (OpenAI's only one, Anthropic's running count).
                own = Usage {
                    input_tokens: own.input_tokens.or(Some(rng.u64(1..3_000))),
                    output_tokens: Some(rng.u64(1..500)),
                    ..Usage::default()
                };
                splicer.push(AgentEvent::Usage(Box::new(own.clone())), &mut out);
            }
            // The process dies here, with everything journaled.
            if own != Usage::default() {
                expected.input_tokens = add(expected.input_tokens, own.input_tokens);
                expected.output_tokens = add(expected.output_tokens, own.output_tokens);
            }
            let seen = last_usage(&out);
            assert_eq!(
                (seen.input_tokens, seen.output_tokens),
                (expected.input_tokens, expected.output_tokens),
                "{what}: every attempt's own reports, once"
            );
            journal = out;
        }
    }
}
