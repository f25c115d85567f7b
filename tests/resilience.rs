//! The resilience matrix through real sockets (docs/resilience.md): every replay fault x where
//! it strikes (before the first byte, mid-text, mid-tool-call, mid-thinking; the frame index
//! computed from the fixture) x recovery (retry on the same route with `times=1`, failover to
//! the other provider serving the same answer) x door (OpenAI, Anthropic).
//!
//! The cases share two replay + gateway pairs, each case under names of its own (its copy of
//! the recording, so that `times` and the recorded requests are its alone; its alias; its
//! fallback's answer); they run concurrently and every failing case is reported by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

#[path = "common/resilience.rs"]
mod rs;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use providers::Dialect;
use rs::{Axis, Case, Position};

/// Faults that break an answer mid-stream (all retryable except the idle stall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Reset,
    Cut,
    Stall,
    Overloaded,
    Error,
    Malformed,
}

impl Break {
    fn knob(self, n: usize) -> String {
        let name = match self {
            Break::Reset => "reset_after",
            Break::Cut => "cut_after",
            Break::Stall => "stall_after",
            Break::Overloaded => "overloaded_after",
            Break::Error => "error_after",
            Break::Malformed => "malformed_after",
        };
        format!("{name}={n}")
    }
}

/// Status faults (before the first byte): knobs and the least wait a retry must honour.
const STATUS_FAULTS: [(&str, u64); 10] = [
    ("status=429,retry_after=1", 1000),
    ("status=429,retry_after_ms=200", 200),
    ("status=429,retry_after_date=1", 0),
    ("status=408", 0),
    ("status=409", 0),
    ("status=500", 0),
    ("status=502", 0),
    ("status=503", 0),
    ("status=504", 0),
    ("status=529", 0),
];

/// The recordings of the matrix.
const FIXTURES: [(Dialect, &str); 6] = [
    (Dialect::Anthropic, "thinking_then_tool_use"),
    (Dialect::Anthropic, "tool_use_parallel_3"),
    (Dialect::Anthropic, "tool_use_with_text"),
    (Dialect::Anthropic, "thinking_signature"),
    (Dialect::OpenAi, "tool_calls_parallel"),
    (Dialect::OpenAi, "text_basic"),
];

/// The recordings faults before the first byte are tried on.
const PRE_FIXTURES: [(Dialect, &str); 2] = [
    (Dialect::Anthropic, "tool_use_with_text"),
    (Dialect::OpenAi, "tool_calls_parallel"),
];

const DOORS: [Dialect; 3] = Dialect::ALL;

/// Upper bound for one case.
const CASE_BOUND: Duration = Duration::from_secs(12);

fn table() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |fixture: (Dialect, &'static str),
                   knobs: String,
                   position: Position,
                   n: Option<usize>,
                   axis: Axis,
                   timeout: bool,
                   min_wait_ms: u64| {
        for door in DOORS {
            cases.push(Case {
                door,
                dialect: fixture.0,
                fixture: fixture.1,
                knobs: knobs.clone(),
                position,
                n,
                axis,
                timeout,
                min_wait_ms,
            });
        }
    };
    for fixture in FIXTURES {
        let rec = rs::recording(fixture.0, fixture.1);
        for position in Position::ALL {
            let Some(n) = rec.position(position) else {
                continue;
            };
            // Before the first byte the answer does not matter: one recording per dialect.
            if position == Position::Pre && !PRE_FIXTURES.contains(&fixture) {
                continue;
            }
            for fault in [
                Break::Reset,
                Break::Cut,
                Break::Stall,
                Break::Overloaded,
                Break::Error,
                Break::Malformed,
            ] {
                // An idle stall fails over at once (the route is not asked again), and
                // `stall_after=0` is the first-byte stall below.
                let stall = fault == Break::Stall;
                if stall && position == Position::Pre {
                    continue;
                }
                for axis in [Axis::Retry, Axis::Failover] {
                    if stall && axis == Axis::Retry {
                        continue;
                    }
                    add(fixture, fault.knob(n), position, Some(n), axis, stall, 0);
                }
            }
        }
        // Odd writes of a whole stream (one byte per write is heavy: small recordings).
        for knobs in ["utf8_cut", "drip_bytes"] {
            if knobs == "drip_bytes" && rec.body.len() > 4096 {
                continue;
            }
            add(
                fixture,
                knobs.into(),
                Position::Whole,
                None,
                Axis::Whole,
                false,
                0,
            );
        }
    }
    // Before the first byte: status faults and first-byte timeouts, on one recording of
    // each dialect (the fault does not depend on the answer).
    for fixture in PRE_FIXTURES {
        for (knobs, wait) in STATUS_FAULTS {
            for axis in [Axis::Retry, Axis::Failover] {
                add(
                    fixture,
                    knobs.into(),
                    Position::Pre,
                    None,
                    axis,
                    false,
                    wait,
                );
            }
        }
        for knobs in ["stall", "hang"] {
            add(
                fixture,
                knobs.into(),
                Position::Pre,
                None,
                Axis::Failover,
                true,
                0,
            );
        }
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resilience_matrix() {
    let started = Instant::now();
    // MATRIX_FILTER=substring runs the matching cases only (debugging).
    let filter = std::env::var("MATRIX_FILTER").unwrap_or_default();
    let mut cases: Vec<Case> = table()
        .into_iter()
        .filter(|c| c.name().contains(&filter))
        .collect();
    // Cases that mostly wait (timers, Retry-After) first, so they overlap the busy ones.
    cases.sort_by_key(|c| !(c.timeout || c.min_wait_ms > 0 || c.knobs.contains("retry_after")));
    let total = cases.len();
    // Two gateways over two replays (a failover after a mid-stream break is taken at the
    // first break, see `Case::max_attempts`), each shared by its cases under unique names.
    let tags: Vec<String> = (0..cases.len()).map(|i| format!("c{i}")).collect();
    let mut harnesses = Vec::new();
    for attempts in [1, 3] {
        let h = rs::start(attempts, |c| {
            rs::shared_config(c, attempts);
            for (case, tag) in cases.iter().zip(&tags) {
                if case.max_attempts() == attempts {
                    case.configure(c, tag);
                }
            }
        })
        .await;
        for (case, tag) in cases.iter().zip(&tags) {
            if case.max_attempts() == attempts {
                case.insert(&h, tag);
            }
        }
        harnesses.push((attempts, Arc::new(h)));
    }
    let results: Vec<(String, Result<Duration, Vec<String>>)> =
        futures_util::stream::iter(cases.into_iter().zip(tags).map(|(case, tag)| {
            let h = harnesses
                .iter()
                .find(|(a, _)| *a == case.max_attempts())
                .map(|(_, h)| h.clone())
                .unwrap();
            async move {
                let name = case.name();
                let t = Instant::now();
                let run = tokio::spawn(async move { rs::run_case(&h, &case, &tag).await });
                let result = match tokio::time::timeout(CASE_BOUND, run).await {
                    Ok(Ok(r)) => r.map(|()| t.elapsed()),
                    Ok(Err(e)) => Err(vec![format!("panicked: {e}")]),
                    Err(_) => Err(vec![format!("no answer within {CASE_BOUND:?}")]),
                };
                (name, result)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut report = String::new();
    let mut failed = 0;
    let mut sorted = results;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, result) in &sorted {
        match result {
            Ok(d) => {
                let _ = writeln!(report, "ok   {name} ({} ms)", d.as_millis());
            }
            Err(errs) => {
                failed += 1;
                let _ = writeln!(report, "FAIL {name}");
                for e in errs {
                    let _ = writeln!(report, "       {e}");
                }
            }
        }
    }
    println!("{report}");
    println!(
        "resilience matrix: {total} cases, {failed} failed, {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(failed, 0, "failing cases:\n{report}");
}
