//! Sharding: an `event` frame longer than the connection's chunk size travels as `shard`
//! frames, each carrying a piece of the event frame's JSON text in `data`; the reader glues
//! the pieces back together ([`Reassembler`](super::Reassembler)) and parses the result as the `event` frame.
//!
//! The chunk size counts bytes of a frame's uncompressed UTF-8 JSON text (compression comes
//! after, per shard message). Pieces end at character boundaries and are sized so that each
//! whole `shard` frame, `data` escaped as JSON, fits the chunk size: that holds for any chunk
//! size of at least [`MIN_CHUNK_SIZE`] with stream ids of at most 128 bytes that need no JSON
//! escaping (all ids this protocol issues or accepts). Below it, a shard still carries one
//! character and may exceed the chunk size.

/// Smallest chunk size for which every shard frame fits: the largest shard frame without
/// data is 229 bytes (128-byte stream id, 20-digit seq, 10-digit index and count), and one
/// character escapes to at most 6 bytes (`\u001f`).
pub const MIN_CHUNK_SIZE: usize = 256;

/// Splits an `event` frame for sending: the frame alone when it fits `chunk_size`, else its
/// `shard` frames, in order. `stream` and `seq` are the event's.
pub fn shard(stream: &str, seq: u64, frame_json: &str, chunk_size: usize) -> Vec<String> {
    if frame_json.len() <= chunk_size {
        return vec![frame_json.to_owned()];
    }
    let mut stream_json = String::with_capacity(stream.len() + 2);
    write_json_str(&mut stream_json, stream);
    let seq = seq.to_string();
    // Everything but the digits of index and count and the characters of data.
    let fixed = r#"{"op":"shard","stream":,"seq":,"index":,"count":,"data":""}"#.len()
        + stream_json.len()
        + seq.len();
    // The budget for data depends on how many digits count takes, which depends on the
    // budget: start at one digit and widen until the count fits (at most a few rounds).
    let mut digits = 1;
    loop {
        let budget = chunk_size.saturating_sub(fixed + 2 * digits);
        let pieces = split(frame_json, budget);
        let count = pieces.len();
        let needed = decimal_digits(count);
        if needed > digits {
            digits = needed;
            continue;
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        return pieces
            .into_iter()
            .zip(0u32..)
            .map(|(data, index)| {
                let mut out = String::with_capacity(chunk_size);
                out.push_str(r#"{"op":"shard","stream":"#);
                out.push_str(&stream_json);
                out.push_str(r#","seq":"#);
                out.push_str(&seq);
                out.push_str(r#","index":"#);
                out.push_str(&index.to_string());
                out.push_str(r#","count":"#);
                out.push_str(&count.to_string());
                out.push_str(r#","data":"#);
                write_json_str(&mut out, data);
                out.push('}');
                out
            })
            .collect();
    }
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Cuts `text` at character boundaries into pieces whose JSON-escaped length is at most
/// `budget` (a piece always holds at least one character).
fn split(text: &str, budget: usize) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(text.len() / budget.max(1) + 1);
    let mut start = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let width = escaped_len(c);
        if used + width > budget && i > start {
            pieces.push(&text[start..i]);
            start = i;
            used = 0;
        }
        used += width;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
        '\0'..='\u{1f}' => 6,
        c => c.len_utf8(),
    }
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json does.
fn write_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\t' => "\\t",
            '\n' => "\\n",
            '\u{c}' => "\\f",
            '\r' => "\\r",
            '\0'..='\u{1f}' => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        start = i + 1;
        if short.is_empty() {
            let b = c as usize;
            out.push_str("\\u00");
            out.push(char::from(HEX[b >> 4]));
            out.push(char::from(HEX[b & 0xf]));
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ws::Reassembler;
    use crate::ws::frame::Shard;
    use proptest::prelude::*;
    use providers::{AgentEvent, Envelope};

    /// An `event` frame of about `len` bytes of text full of what JSON must escape.
    pub(crate) fn big_frame(stream: &str, seq: u64, len: usize) -> String {
        let unit = "héllo \"wörld\" \\ path\\to\nline\ttab\u{1}\u{1f} 日本語 🦀 </script> ";
        let mut text = String::with_capacity(len + unit.len());
        while text.len() < len {
            text.push_str(unit);
        }
        let env = Envelope {
            stream: stream.into(),
            seq,
            event: AgentEvent::TextDelta {
                index: 0,
                text: text.into(),
                extra: None,
            },
        };
        super::super::frame::ServerFrame::Event(env).to_json()
    }

    pub(crate) fn parse(frame: &str) -> Shard {
        match serde_json::from_str(frame).unwrap() {
            super::super::frame::ServerFrame::Shard(s) => s,
            other => panic!("not a shard: {other:?}"),
        }
    }

    fn reassemble(frames: &[String]) -> String {
        let mut r = Reassembler::default();
        let mut out = None;
        for f in frames {
            assert!(out.is_none(), "output before the last shard");
            out = r.push(parse(f)).unwrap();
        }
        assert_eq!(r.pending(), 0);
        out.unwrap()
    }

    #[test]
    fn a_frame_that_fits_goes_alone() {
        let frame = r#"{"op":"event","stream":"s","seq":0,"type":"heartbeat"}"#;
        assert_eq!(shard("s", 0, frame, frame.len()), vec![frame.to_owned()]);
        let shards = shard("s", 0, frame, frame.len() - 1);
        assert!(shards.len() > 1);
        assert_eq!(reassemble(&shards), frame);
    }

    #[test]
    fn a_one_mib_event_reassembles_byte_exact_at_every_chunk_size() {
        let frame = big_frame("st_19a2b3c0001", 42, 1 << 20);
        for chunk in [MIN_CHUNK_SIZE, 1000, 4096, 16 * 1024, 64 * 1024, 1 << 20] {
            let shards = shard("st_19a2b3c0001", 42, &frame, chunk);
            assert!(shards.len() > 1, "{chunk}");
            for s in &shards {
                assert!(s.len() <= chunk, "{chunk}: shard of {} bytes", s.len());
            }
            // Not wasteful: every shard but the last is nearly full (slack: one escaped
            // character, and index digits short of count's).
            for s in &shards[..shards.len() - 1] {
                assert!(s.len() + 16 > chunk, "{chunk}: shard of {} bytes", s.len());
            }
            let back = reassemble(&shards);
            assert_eq!(back, frame, "{chunk}");
        }
    }

    #[test]
    fn shard_frames_are_what_serde_writes() {
        let frame = big_frame("st_1", 7, 3000);
        let shards = shard("st_1", 7, &frame, 300);
        for (i, s) in shards.iter().enumerate() {
            let parsed = parse(s);
            assert_eq!(
                (parsed.index as usize, parsed.count as usize),
                (i, shards.len())
            );
            assert_eq!((parsed.stream.as_str(), parsed.seq), ("st_1", 7));
            let serde = super::super::frame::ServerFrame::Shard(parsed).to_json();
            assert_eq!(&serde, s);
        }
    }

    #[test]
    fn the_minimum_chunk_size_fits_the_worst_case() {
        let stream = "x".repeat(128);
        let worst = format!("{}{}", "\u{1}".repeat(5000), "🦀".repeat(5000));
        let shards = shard(&stream, u64::MAX, &worst, MIN_CHUNK_SIZE);
        for s in &shards {
            assert!(s.len() <= MIN_CHUNK_SIZE, "{}", s.len());
        }
        assert_eq!(reassemble(&shards), worst);
        // The constant's arithmetic: the empty shard frame with maximal numbers is 229 bytes.
        let empty = format!(
            r#"{{"op":"shard","stream":"{stream}","seq":{},"index":{},"count":{},"data":""}}"#,
            u64::MAX,
            u32::MAX,
            u32::MAX
        );
        assert_eq!(empty.len(), 229);
        assert!(empty.len() + 6 <= MIN_CHUNK_SIZE);
    }

    #[test]
    fn below_the_minimum_each_shard_still_carries_something() {
        let shards = shard("st_1", 1, "{\"a\":\"bcdef\"}", 10);
        assert_eq!(shards.len(), 13);
        assert_eq!(reassemble(&shards), "{\"a\":\"bcdef\"}");
    }

    #[test]
    fn escaping_matches_serde_json() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let mut mine = String::new();
        write_json_str(&mut mine, &all);
        assert_eq!(mine, serde_json::to_string(&all).unwrap());
        for c in all.chars() {
            assert_eq!(
                escaped_len(c) + 2,
                serde_json::to_string(&c.to_string()).unwrap().len(),
                "{c:?}"
            );
        }
    }

    fn stream_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._:-]{1,128}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_text_any_chunk_size_round_trips(
            text in any::<String>(),
            stream in stream_id(),
            seq in any::<u64>(),
            chunk in MIN_CHUNK_SIZE..2048usize,
        ) {
            let env = Envelope {
                stream: stream.clone(),
                seq,
                event: AgentEvent::TextDelta { index: 0, text: text.repeat(8).into(), extra: None },
            };
            let frame = super::super::frame::ServerFrame::Event(env).to_json();
            let shards = shard(&stream, seq, &frame, chunk);
            for s in &shards {
                prop_assert!(s.len() <= chunk, "{} > {}", s.len(), chunk);
            }
            if shards.len() == 1 {
                prop_assert_eq!(&shards[0], &frame);
            } else {
                let mut r = Reassembler::default();
                let mut out = None;
                for s in &shards {
                    out = r.push(parse(s)).unwrap();
                }
                prop_assert_eq!(out, Some(frame));
            }
        }

        #[test]
        fn raw_strings_split_and_join(text in any::<String>(), chunk in 1usize..600) {
            let shards = shard("s", 0, &text, chunk);
            let joined: String = if shards.len() == 1 && shards[0] == text {
                text.clone()
            } else {
                shards.iter().map(|f| parse(f).data).collect()
            };
            prop_assert_eq!(joined, text);
        }
    }
}
