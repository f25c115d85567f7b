//! Every fixture decodes, its events obey the structural rules, and the Assembler agrees with
//! an independent reading of the raw SSE (tests/common).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Expected, Fixture, all_fixtures, check_structure, decode, dialect_of, for_each_fixture,
    whole_fixtures,
};
use providers::Assembler;
use providers::assemble::Message;

/// Fixtures that are cut on purpose (expected `DecodeError::Incomplete`). None of the shared
/// set is: `anthropic/max_tokens_mid_tool_use.sse` is a whole answer that ran out of tokens.
const EXPECTED_CUT: &[&str] = &[];

fn compare(f: &Fixture, m: &Message, want: &Expected) -> Result<(), String> {
    let mut errs = Vec::new();
    if m.text() != want.text {
        errs.push(format!("text: got {:?}, want {:?}", m.text(), want.text));
    }
    if m.reasoning() != want.reasoning {
        errs.push(format!(
            "reasoning: got {:?}, want {:?}",
            m.reasoning(),
            want.reasoning
        ));
    }
    let got = common::calls(m);
    if got.len() != want.tool_calls.len() {
        errs.push(format!(
            "tool calls: got {got:?}, want {:?}",
            want.tool_calls
        ));
    } else {
        for (i, ((name, args, truncated), w)) in got.iter().zip(&want.tool_calls).enumerate() {
            if name != &w.name || !common::same_args(args, *truncated, w) {
                errs.push(format!(
                    "tool call {i}: got ({name}, {args:?}, truncated {truncated}), want {w:?}"
                ));
            }
        }
    }
    let u = &m.usage;
    let got_usage = common::RawUsage {
        input: u.input_tokens,
        output: u.output_tokens,
        cache_read: u.cache_read_tokens,
        cache_write: u.cache_write_tokens,
        reasoning: u.reasoning_tokens,
    };
    if got_usage != want.usage {
        errs.push(format!("usage: got {got_usage:?}, want {:?}", want.usage));
    }
    let reason = m.end.as_ref().and_then(|e| e.provider_reason.clone());
    if reason != want.finish_reason {
        errs.push(format!(
            "provider finish reason: got {reason:?}, want {:?}",
            want.finish_reason
        ));
    }
    if m.end.is_some() != want.finished {
        errs.push(format!(
            "finished: got stream.end {:?}, independent reading says finished = {}",
            m.end.as_ref().map(|e| e.reason),
            want.finished
        ));
    }
    let _ = f;
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n  "))
    }
}

#[test]
fn fixture_listing_finds_every_dialect() {
    let all = all_fixtures();
    for d in providers::Dialect::ALL {
        assert!(all.iter().any(|f| f.dialect == d.as_str()), "{d}");
    }
}

#[test]
fn every_fixture_decodes_without_error() {
    for_each_fixture(&all_fixtures(), |f| {
        let (events, result) = providers::StreamDecoder::decode_all(dialect_of(f), &f.body);
        let cut = EXPECTED_CUT.contains(&f.name.as_str());
        match (result, cut) {
            (Ok(()), false) => Ok(()),
            // A recorded provider error is that error, after what came before it.
            (Err(providers::DecodeError::Upstream { .. }), false)
                if common::expected(f.dialect, &f.body).error =>
            {
                Ok(())
            }
            (Err(providers::DecodeError::Incomplete { .. }), true) => Ok(()),
            (Ok(()), true) => Err("expected Incomplete, decoded whole".into()),
            (Err(e), _) => Err(format!("{e} (after {} events)", events.len())),
        }
    });
}

#[test]
fn assembled_answer_matches_independent_reading() {
    for_each_fixture(&whole_fixtures(), |f| {
        let events = decode(dialect_of(f), &f.body)?;
        let m = Assembler::assemble(&events);
        let want = common::expected(f.dialect, &f.body);
        compare(f, &m, &want)
    });
}

#[test]
fn decoded_events_obey_the_structural_rules() {
    for_each_fixture(&whole_fixtures(), |f| {
        let events = decode(dialect_of(f), &f.body)?;
        check_structure(&events)
    });
}

#[test]
fn events_serialize_and_parse_back() {
    for_each_fixture(&whole_fixtures(), |f| {
        let events = decode(dialect_of(f), &f.body)?;
        for e in &events {
            let text = serde_json::to_string(e).map_err(|x| x.to_string())?;
            let back: providers::AgentEvent =
                serde_json::from_str(&text).map_err(|x| format!("{x}: {text}"))?;
            if &back != e {
                return Err(format!("{text} parsed back as {back:?}"));
            }
        }
        Ok(())
    });
}

/// The independent reading itself, on facts the fixture index (PROVENANCE.md) states.
#[test]
fn independent_reading_sanity() {
    let root = common::fixtures_root();
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    let e = common::expected("anthropic", &read("anthropic/max_tokens_mid_tool_use.sse"));
    assert_eq!(e.finish_reason.as_deref(), Some("max_tokens"));
    assert!(e.tool_calls.iter().any(|c| c.truncated));
    let e = common::expected("openai", &read("openai_chat/tool_calls_parallel.sse"));
    assert_eq!(e.tool_calls.len(), 2);
    assert!(e.tool_calls.iter().all(|c| c.json().is_some()));
    let e = common::expected("openai", &read("openai_chat/n3_multiple_choices.sse"));
    assert_eq!(e.choices, 3);
    let e = common::expected("openai", &read("openai_chat/reasoning_model_azure.sse"));
    assert_eq!(e.usage.reasoning, Some(64));
    let e = common::expected(
        "anthropic",
        &read("anthropic/usage_cache_read_max_tokens.sse"),
    );
    assert!(e.usage.cache_read.unwrap_or(0) > 0);
    let e = common::expected("anthropic", &read("anthropic/thinking_short.sse"));
    assert!(!e.reasoning.is_empty());
}
