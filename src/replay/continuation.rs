//! Continuation-aware serving: the replay answers a continuation request (see
//! `crate::resilience::continuation`) like a real model would, from the same recording.
//!
//! The fixture's full answer text T is choice 0's text blocks concatenated (decoded with
//! [`StreamDecoder`], folded with [`Assembler`]). A request asks for a continuation when:
//! - **prefill**: its `messages` end with an assistant message; its text P (string content or
//!   the text parts/blocks, concatenated) must be a prefix of T;
//! - **instruction**: its last message is a user message whose text is exactly
//!   [`CONTINUE_INSTRUCTION`] and the message before it is an assistant message with text P,
//!   again a prefix of T.
//!
//! The answer, in the endpoint's dialect and streamed or not like any answer: the fixture's
//! `stream.start` (same id and model) with fresh usage (input = request bytes / 4, output 1),
//! one text block with the rest of T (`T[len(P)..]`, in a few deltas cut at char boundaries),
//! then every tool call of choice 0 whole (start, argument deltas, end), then the fixture's
//! last usage report and its finish (stop reason / finish_reason). Thinking, refusal and
//! provider-run blocks and other choices are left out. In instruction mode the text begins
//! by repeating the last `min(24, len(P))` bytes of P (moved forward to a char boundary), as
//! a real model restarts a few words: the gateway must remove that overlap. No text block is
//! sent when there is no text to send. A P that is not a prefix of T is a 400 in the dialect
//! ("prefill does not match the recording").

use providers::assemble::BlockContent;
use providers::event::{BlockKind, FinishReason, StreamEnd};
use providers::{AgentEvent, Assembler, Dialect, StreamDecoder, Usage};
use serde_json::Value;

pub use crate::resilience::continuation::CONTINUE_INSTRUCTION;

/// How many bytes of the prefix an instruction-mode continuation repeats (at most).
pub const REPEAT: usize = 24;

/// A continuation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// The partial answer is the final assistant message.
    Prefill(String),
    /// The partial answer is followed by the [`CONTINUE_INSTRUCTION`] user turn.
    Instruction(String),
}

impl Ask {
    /// The partial answer P.
    pub fn prefix(&self) -> &str {
        match self {
            Ask::Prefill(p) | Ask::Instruction(p) => p,
        }
    }
}

/// Why no continuation can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The prefix is not a prefix of the recording's answer (a 400).
    Mismatch,
    /// The fixture does not decode (a 500).
    Fixture(String),
}

/// The request's messages: `messages`, or a Responses request's `input` items.
fn messages(body: &Value) -> &[Value] {
    body.get("messages")
        .or_else(|| body.get("input"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// A message's text: string content, or its `text` parts (OpenAI) / blocks (Anthropic) /
/// `input_text` and `output_text` parts (Responses).
pub fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("text" | "input_text" | "output_text")
                )
            })
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Whether the request's `messages` end with an assistant message (a prefill).
pub fn ends_with_assistant(body: &Value) -> bool {
    messages(body).last().and_then(role) == Some("assistant")
}

/// The continuation a request asks for, if it asks for one.
pub fn ask(body: &Value) -> Option<Ask> {
    let messages = messages(body);
    let last = messages.last()?;
    match role(last)? {
        "assistant" => Some(Ask::Prefill(message_text(last))),
        "user" if message_text(last) == CONTINUE_INSTRUCTION => {
            let before = messages.len().checked_sub(2).map(|i| &messages[i])?;
            (role(before) == Some("assistant")).then(|| Ask::Instruction(message_text(before)))
        }
        _ => None,
    }
}

/// The largest char boundary of `s` at or before `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest char boundary of `s` at or after `at`.
fn ceil_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The tail of `prefix` an instruction-mode continuation repeats.
pub fn repeated_tail(prefix: &str) -> &str {
    let from = ceil_boundary(prefix, prefix.len().saturating_sub(REPEAT));
    &prefix[from..]
}

/// `s` in up to `n` pieces of similar size, each cut at a char boundary, none empty.
pub fn pieces(s: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let size = s.len().div_ceil(n).max(1);
    let mut out = Vec::new();
    let mut from = 0;
    while from < s.len() {
        let mut to = floor_boundary(s, from + size);
        if to <= from {
            to = ceil_boundary(s, from + 1);
        }
        out.push(&s[from..to]);
        from = to;
    }
    out
}

/// The events of the continuation of `fixture` (a `dialect` SSE body) after `ask`'s prefix.
/// `request_bytes` sizes the fresh input usage.
pub fn events(
    dialect: Dialect,
    fixture: &[u8],
    ask: &Ask,
    request_bytes: usize,
) -> Result<Vec<AgentEvent>, Refused> {
    let (decoded, result) = StreamDecoder::decode_all(dialect, fixture);
    result.map_err(|e| Refused::Fixture(e.to_string()))?;
    let message = Assembler::assemble(&decoded);
    let full = message.text();
    let prefix = ask.prefix();
    let Some(rest) = full.strip_prefix(prefix) else {
        return Err(Refused::Mismatch);
    };
    let text = match ask {
        Ask::Prefill(_) => rest.to_owned(),
        Ask::Instruction(p) => format!("{}{rest}", repeated_tail(p)),
    };
    let Some(start) = message.start.clone() else {
        return Err(Refused::Fixture("no stream start".into()));
    };
    let mut out = vec![
        AgentEvent::StreamStart(Box::new(start)),
        AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(request_bytes.div_ceil(4).max(1) as u64),
            output_tokens: Some(1),
            ..Usage::default()
        })),
    ];
    let mut index = 0;
    if !text.is_empty() {
        out.push(AgentEvent::BlockStart {
            index,
            block: BlockKind::Text,
            choice: 0,
            extra: None,
        });
        for piece in pieces(&text, 3) {
            out.push(AgentEvent::TextDelta {
                index,
                text: piece.into(),
                extra: None,
            });
        }
        out.push(AgentEvent::BlockEnd { index });
        index += 1;
    }
    for block in message.blocks.iter().filter(|b| b.choice == 0) {
        let BlockContent::ToolCall {
            id,
            name,
            arguments,
            truncated,
        } = &block.content
        else {
            continue;
        };
        out.push(AgentEvent::ToolCallStart {
            index,
            id: id.clone(),
            name: name.clone(),
            choice: 0,
            extra: block.extra.clone().map(Box::new),
        });
        for piece in pieces(arguments, 3) {
            out.push(AgentEvent::ToolCallDelta {
                index,
                arguments: piece.into(),
            });
        }
        out.push(AgentEvent::ToolCallEnd {
            index,
            arguments: arguments.clone(),
            truncated: *truncated,
        });
        index += 1;
    }
    let last_usage = decoded.iter().rev().find_map(|e| match e {
        AgentEvent::Usage(u) => Some(u.clone()),
        _ => None,
    });
    if let Some(usage) = last_usage {
        out.push(AgentEvent::Usage(usage));
    }
    let mut end = message.end.clone().unwrap_or(StreamEnd {
        reason: FinishReason::Stop,
        provider_reason: None,
        stop_sequence: None,
        other_choices: Vec::new(),
        extra: None,
    });
    end.other_choices.clear();
    out.push(AgentEvent::StreamEnd(Box::new(end)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn asks() {
        let b = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(ask(&b), None);
        assert!(!ends_with_assistant(&b));
        let b = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}
        ]});
        assert_eq!(ask(&b), Some(Ask::Prefill("Hello".into())));
        assert!(ends_with_assistant(&b));
        let b = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": CONTINUE_INSTRUCTION}]}
        ]});
        assert_eq!(ask(&b), Some(Ask::Instruction("Hello".into())));
        let b = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "and then?"}
        ]});
        assert_eq!(ask(&b), None);
    }

    #[test]
    fn pieces_and_tails_respect_char_boundaries() {
        let s = "héllo wörld ñ ü 日本語";
        for n in 1..8 {
            let p = pieces(s, n);
            assert_eq!(p.concat(), s);
            assert!(p.len() <= n.max(1) + 1, "{p:?}");
            assert!(p.iter().all(|x| !x.is_empty()));
        }
        assert!(pieces("", 3).is_empty());
        assert_eq!(pieces("ab", 5), ["a", "b"]);
        assert_eq!(repeated_tail("short"), "short");
        let long = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa日本"; // 30 + 6 bytes
        let tail = repeated_tail(long);
        assert!(tail.len() <= REPEAT && long.ends_with(tail), "{tail}");
        assert_eq!(tail, "aaaaaaaaaaaaaaaaaa日本");
        let cut = format!("日本{}", "a".repeat(22)); // 24 back lands inside 本
        assert_eq!(repeated_tail(&cut), "a".repeat(22));
    }
}
