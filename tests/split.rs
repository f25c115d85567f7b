//! Feeding a body in chunks split anywhere yields exactly the events of feeding it whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::LazyLock;

use common::{Fixture, all_fixtures, dialect_of, for_each_fixture};
use proptest::prelude::*;
use providers::{AgentEvent, DecodeError, StreamDecoder};

static FIXTURES: LazyLock<Vec<Fixture>> = LazyLock::new(all_fixtures);

type Decoded = (Vec<AgentEvent>, Result<(), DecodeError>);

fn whole(f: &Fixture) -> Decoded {
    StreamDecoder::decode_all(dialect_of(f), &f.body)
}

/// Feeds `f` cut at `cuts` (byte offsets, any order, duplicates allowed).
fn chunked(f: &Fixture, cuts: &[usize]) -> Decoded {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(f.body.len())).collect();
    cuts.sort_unstable();
    let mut decoder = StreamDecoder::new(dialect_of(f));
    let mut events = Vec::new();
    let mut start = 0;
    for end in cuts.into_iter().chain([f.body.len()]) {
        if let Err(e) = decoder.feed(&f.body[start..end], &mut events) {
            return (events, Err(e));
        }
        start = end;
    }
    let result = decoder.finish(&mut events);
    (events, result)
}

fn same(f: &Fixture, cuts: &[usize], want: &Decoded) -> Result<(), String> {
    let got = chunked(f, cuts);
    if &got == want {
        return Ok(());
    }
    let first = got
        .0
        .iter()
        .zip(&want.0)
        .position(|(a, b)| a != b)
        .unwrap_or(got.0.len().min(want.0.len()));
    Err(format!(
        "split at {cuts:?}: {} events / {:?} vs whole {} events / {:?}; first difference at #{first}: {:?} vs {:?}",
        got.0.len(),
        got.1,
        want.0.len(),
        want.1,
        got.0.get(first),
        want.0.get(first),
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_events(
        (index, cuts) in (0..FIXTURES.len()).prop_flat_map(|i| {
            let len = FIXTURES[i].body.len();
            (Just(i), proptest::collection::vec(0..=len, 0..24))
        })
    ) {
        let f = &FIXTURES[index];
        let want = whole(f);
        if let Err(msg) = same(f, &cuts, &want) {
            prop_assert!(false, "{}: {}", f.name, msg);
        }
    }
}

#[test]
fn fixed_chunk_sizes_give_the_same_events() {
    for_each_fixture(&FIXTURES, |f| {
        let want = whole(f);
        for size in [1usize, 2, 3, 7, 64, 4096] {
            let cuts: Vec<usize> = (size..f.body.len()).step_by(size).collect();
            let got = chunked(f, &cuts);
            if got != want {
                return Err(format!(
                    "chunks of {size} bytes: {} events / {:?} vs whole {} events / {:?}",
                    got.0.len(),
                    got.1,
                    want.0.len(),
                    want.1
                ));
            }
        }
        Ok(())
    });
}

/// Every single split position of two small fixtures (one per dialect, one with a tool call).
#[test]
fn every_single_split_of_small_fixtures() {
    let small: Vec<Fixture> = FIXTURES
        .iter()
        .filter(|f| {
            f.name == "anthropic/tool_use_only.sse" || f.name == "openai_chat/finish_length.sse"
        })
        .cloned()
        .collect();
    assert_eq!(small.len(), 2, "small fixtures renamed?");
    for_each_fixture(&small, |f| {
        let want = whole(f);
        for cut in 0..=f.body.len() {
            same(f, &[cut], &want)?;
        }
        Ok(())
    });
}

/// A multi-byte character split across chunks is not damaged.
#[test]
fn utf8_split_inside_a_character() {
    for_each_fixture(&FIXTURES, |f| {
        let Some(pos) = f.body.iter().position(|b| *b >= 0x80) else {
            return Ok(());
        };
        let want = whole(f);
        for cut in pos..(pos + 4).min(f.body.len()) {
            same(f, &[cut], &want)?;
        }
        Ok(())
    });
}
