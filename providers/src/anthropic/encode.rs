//! Agent Events -> an Anthropic SSE body, and an assembled answer -> the non-streaming body.
//!
//! Anthropic clients expect one content block open at a time with indices 0, 1, 2... in write
//! order, while OpenAI upstreams may interleave tool calls: blocks that open while another is
//! open are held (their events copied) and written, in the order they opened, once the open
//! one closes.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::wire::{
    BlockOut, ContentBlockDeltaOut, ContentBlockStartOut, ContentBlockStopOut, DeltaOut,
    EmptyObject, ErrorDetailOut, ErrorOut, KnownBlockOut, KnownDeltaOut, KnownResponseBlock,
    MessageDeltaBodyOut, MessageDeltaOut, MessageOut, MessageStartOut, ResponseBlock, ResponseBody,
    ResponseUsage, TypeOnly, UsageOut,
};
use crate::assemble::{BlockContent, Message};
use crate::codec::{EncodeOptions, EventEncoder};
use crate::dialect::Dialect;
use crate::error::EncodeError;
use crate::event::{AgentEvent, BlockKind, Extra, FinishReason, StreamEnd, StreamStart, Usage};
use crate::sse::json::{write_str, write_u64};
use crate::sse::write_json_frame;

const DIALECT: Dialect = Dialect::Anthropic;

/// Encoder state for one stream.
#[derive(Debug)]
pub struct Encoder {
    #[allow(dead_code)]
    options: EncodeOptions,
    /// The upstream speaks Anthropic too: passthrough fields, native blocks, signatures and
    /// provider reasons are written back.
    same: bool,
    /// `stream.start`, kept until `message_start` is written.
    start: Option<Box<StreamStart>>,
    message_started: bool,
    /// `stream.end` or `error` was written: nothing more may follow.
    finished: bool,
    /// Every usage report merged: the latest cache counts, to turn input back into
    /// Anthropic's uncached count.
    usage: Box<Usage>,
    /// Usage reports after `message_start`, merged, for `message_delta`.
    delta_usage: Option<Box<Usage>>,
    blocks: Vec<Entry>,
    /// Position in `blocks` of the block open on the wire.
    current: Option<usize>,
    /// Positions of held blocks, in the order they opened.
    queue: VecDeque<usize>,
    next_wire: u32,
}

#[derive(Debug)]
struct Entry {
    index: u32,
    wire: u32,
    kind: Kind,
    state: State,
    /// Events of a held block, its start first.
    pending: Vec<AgentEvent>,
}

#[derive(Debug)]
enum Kind {
    Text,
    Thinking,
    Redacted,
    /// `streamed`: argument text written so far, to reconcile with `tool_call.end`.
    Tool {
        streamed: String,
    },
    Native,
    /// Not for this client (other dialect's native block or redacted reasoning).
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Held,
    Current,
    Done,
}

fn json_err(source: serde_json::Error) -> EncodeError {
    EncodeError::Json {
        dialect: DIALECT,
        source,
    }
}

fn out_of_order(what: impl Into<String>) -> EncodeError {
    EncodeError::OutOfOrder {
        dialect: DIALECT,
        what: what.into(),
    }
}

fn frame<T: serde::Serialize>(out: &mut Vec<u8>, name: &str, value: &T) -> Result<(), EncodeError> {
    write_json_frame(out, Some(name), value).map_err(json_err)
}

/// Writes the `content_block_delta` frame of a known delta by hand: the frame of nearly every
/// event, and serde_json's serializer was a third of re-encoding one. Byte for byte what
/// [`ContentBlockDeltaOut`] serializes to (tested against it).
fn write_known_delta(out: &mut Vec<u8>, wire: u32, delta: &KnownDeltaOut<'_>) {
    let (ty, field, value) = match delta {
        KnownDeltaOut::TextDelta { text } => ("text_delta", "text", text),
        KnownDeltaOut::InputJsonDelta { partial_json } => {
            ("input_json_delta", "partial_json", partial_json)
        }
        KnownDeltaOut::ThinkingDelta { thinking } => ("thinking_delta", "thinking", thinking),
        KnownDeltaOut::SignatureDelta { signature } => ("signature_delta", "signature", signature),
    };
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    write_u64(out, u64::from(wire));
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    write_str(out, value);
    out.extend_from_slice(b"}}\n\n");
}

/// The `stop_reason` an Anthropic client sees for `end`.
pub(crate) fn stop_reason(end: &StreamEnd, same: bool) -> &str {
    if same && let Some(p) = &end.provider_reason {
        return p;
    }
    match end.reason {
        FinishReason::Stop | FinishReason::Error => {
            if end.stop_sequence.is_some() {
                "stop_sequence"
            } else {
                "end_turn"
            }
        }
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter | FinishReason::Refusal => "refusal",
        FinishReason::PauseTurn => "pause_turn",
    }
}

/// Usage passthrough fields for the client: the upstream's own when it spoke Anthropic, plus
/// `output_tokens_details.thinking_tokens` from the unified reasoning count when missing.
fn usage_extra(u: &Usage, same: bool) -> Option<Extra> {
    let mut extra = if same { u.extra.clone() } else { None };
    if let Some(n) = u.reasoning_tokens {
        let e = extra.get_or_insert_with(Extra::new);
        if !e.contains_key("output_tokens_details") {
            let mut d = Map::new();
            d.insert("thinking_tokens".into(), Value::from(n));
            e.insert("output_tokens_details".into(), Value::Object(d));
        }
    }
    extra
}

/// Anthropic `input_tokens` excludes cached tokens; the unified count includes them.
fn uncached_input(u: &Usage, all: &Usage) -> Option<u64> {
    let cached = all.cache_read_tokens.unwrap_or(0) + all.cache_write_tokens.unwrap_or(0);
    u.input_tokens.map(|n| n.saturating_sub(cached))
}

impl Encoder {
    /// A new encoder.
    pub fn new(options: EncodeOptions) -> Self {
        Encoder {
            options,
            same: false,
            start: None,
            message_started: false,
            finished: false,
            usage: Box::default(),
            delta_usage: None,
            blocks: Vec::new(),
            current: None,
            queue: VecDeque::new(),
            next_wire: 0,
        }
    }

    /// Writes `message_start` if it is still due; `first_usage` is the usage event that
    /// immediately followed `stream.start`, if that is what triggers it.
    fn message_start(
        &mut self,
        first_usage: Option<&Usage>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if self.message_started {
            return Ok(());
        }
        let Some(start) = self.start.take() else {
            return Err(out_of_order("content before stream.start"));
        };
        self.message_started = true;
        let extra = first_usage.and_then(|u| usage_extra(u, self.same));
        let usage = match first_usage {
            Some(u) => UsageOut {
                input_tokens: uncached_input(u, &self.usage),
                cache_creation_input_tokens: u.cache_write_tokens,
                cache_read_input_tokens: u.cache_read_tokens,
                output_tokens: u.output_tokens,
                extra: extra.as_ref(),
            },
            // Clients read these two as required numbers.
            None => UsageOut {
                input_tokens: Some(0),
                output_tokens: Some(0),
                ..UsageOut::default()
            },
        };
        let msg = MessageStartOut {
            ty: "message_start",
            message: MessageOut {
                id: &start.id,
                ty: "message",
                role: "assistant",
                model: &start.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage,
                extra: if self.same {
                    start.extra.as_ref()
                } else {
                    None
                },
            },
        };
        frame(out, "message_start", &msg)
    }

    fn find(&self, index: u32) -> Option<usize> {
        if let Some(c) = self.current
            && self.blocks[c].index == index
        {
            return Some(c);
        }
        self.blocks.iter().rposition(|b| b.index == index)
    }

    fn open(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (index, kind) = match event {
            AgentEvent::BlockStart {
                index,
                block,
                choice,
                ..
            } => {
                if *choice > 0 {
                    return Err(unsupported_choice());
                }
                let kind = match block {
                    BlockKind::Text | BlockKind::Refusal => Kind::Text,
                    BlockKind::Reasoning => Kind::Thinking,
                    BlockKind::RedactedReasoning { .. } if self.same => Kind::Redacted,
                    BlockKind::Native { .. } if self.same => Kind::Native,
                    BlockKind::RedactedReasoning { .. } | BlockKind::Native { .. } => Kind::Dropped,
                };
                (*index, kind)
            }
            AgentEvent::ToolCallStart { index, choice, .. } => {
                if *choice > 0 {
                    return Err(unsupported_choice());
                }
                (
                    *index,
                    Kind::Tool {
                        streamed: String::new(),
                    },
                )
            }
            _ => return Ok(()),
        };
        if self.blocks.iter().any(|b| b.index == index) {
            return Err(out_of_order(format!("block {index} opened twice")));
        }
        self.message_start(None, out)?;
        let dropped = matches!(kind, Kind::Dropped);
        self.blocks.push(Entry {
            index,
            wire: 0,
            kind,
            state: State::Held,
            pending: Vec::new(),
        });
        let pos = self.blocks.len() - 1;
        if dropped {
            self.blocks[pos].state = State::Done;
        } else if self.current.is_none() {
            self.begin(pos, event, out)?;
        } else {
            self.blocks[pos].pending.push(event.clone());
            self.queue.push_back(pos);
        }
        Ok(())
    }

    /// Puts block `pos` on the wire: next wire index, header written.
    fn begin(
        &mut self,
        pos: usize,
        start: &AgentEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let wire = self.next_wire;
        self.next_wire += 1;
        self.current = Some(pos);
        let entry = &mut self.blocks[pos];
        entry.wire = wire;
        entry.state = State::Current;
        let content_block = match start {
            AgentEvent::ToolCallStart {
                id, name, extra, ..
            } => BlockOut::Known(KnownBlockOut::ToolUse {
                id,
                name,
                input: EmptyObject,
                extra: if self.same { extra.as_deref() } else { None },
            }),
            AgentEvent::BlockStart { block, extra, .. } => match block {
                BlockKind::Text | BlockKind::Refusal => BlockOut::Known(KnownBlockOut::Text {
                    text: "",
                    extra: if self.same { extra.as_deref() } else { None },
                }),
                BlockKind::Reasoning => BlockOut::Known(KnownBlockOut::Thinking {
                    thinking: "",
                    signature: "",
                }),
                BlockKind::RedactedReasoning { data } => {
                    BlockOut::Known(KnownBlockOut::RedactedThinking { data })
                }
                BlockKind::Native { block } => BlockOut::Native(block),
            },
            _ => return Err(out_of_order("block without a start event")),
        };
        frame(
            out,
            "content_block_start",
            &ContentBlockStartOut {
                ty: "content_block_start",
                index: wire,
                content_block,
            },
        )
    }

    fn delta(&self, wire: u32, delta: DeltaOut<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match delta {
            DeltaOut::Known(known) => {
                write_known_delta(out, wire, &known);
                Ok(())
            }
            DeltaOut::Native(_) => frame(
                out,
                "content_block_delta",
                &ContentBlockDeltaOut {
                    ty: "content_block_delta",
                    index: wire,
                    delta,
                },
            ),
        }
    }

    fn stop(wire: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame(
            out,
            "content_block_stop",
            &ContentBlockStopOut {
                ty: "content_block_stop",
                index: wire,
            },
        )
    }

    /// Writes one event of the block on the wire; true when it closed the block.
    fn write_current(
        &mut self,
        pos: usize,
        event: &AgentEvent,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let same = self.same;
        let entry = &mut self.blocks[pos];
        let wire = entry.wire;
        let known = |d| DeltaOut::Known(d);
        match (&mut entry.kind, event) {
            (Kind::Text, AgentEvent::TextDelta { text, .. })
            | (Kind::Text, AgentEvent::RefusalDelta { text, .. }) => {
                self.delta(wire, known(KnownDeltaOut::TextDelta { text }), out)?;
            }
            (Kind::Thinking, AgentEvent::ReasoningDelta { text, .. }) => {
                self.delta(
                    wire,
                    known(KnownDeltaOut::ThinkingDelta { thinking: text }),
                    out,
                )?;
            }
            (Kind::Thinking, AgentEvent::ReasoningSignature { signature, .. }) => {
                // Signatures are only valid with the provider that made them.
                if same {
                    self.delta(
                        wire,
                        known(KnownDeltaOut::SignatureDelta { signature }),
                        out,
                    )?;
                }
            }
            (Kind::Tool { streamed }, AgentEvent::ToolCallDelta { arguments, .. }) => {
                streamed.push_str(arguments);
                self.delta(
                    wire,
                    known(KnownDeltaOut::InputJsonDelta {
                        partial_json: arguments,
                    }),
                    out,
                )?;
            }
            (
                Kind::Tool { streamed },
                AgentEvent::ToolCallEnd {
                    arguments,
                    truncated,
                    ..
                },
            ) => {
                // The client assembles the input from the deltas alone; make them add up to
                // the final arguments. No deltas means `{}` to an Anthropic client already.
                if arguments != streamed
                    && !(streamed.is_empty() && arguments == "{}")
                    && let Some(rest) = arguments.strip_prefix(streamed.as_str())
                {
                    let rest = rest.to_owned();
                    self.delta(
                        wire,
                        known(KnownDeltaOut::InputJsonDelta {
                            partial_json: &rest,
                        }),
                        out,
                    )?;
                }
                // Anthropic itself never closes a call cut by the token limit.
                if !truncated {
                    Self::stop(wire, out)?;
                }
                return Ok(true);
            }
            // Unknown delta types may arrive in any block; only their own dialect reads them.
            (_, AgentEvent::NativeDelta { delta, .. }) => {
                if same {
                    self.delta(wire, DeltaOut::Native(delta), out)?;
                }
            }
            (_, AgentEvent::BlockEnd { .. }) => {
                Self::stop(wire, out)?;
                return Ok(true);
            }
            (kind, event) => {
                return Err(out_of_order(format!(
                    "{} for a {} block",
                    event.kind(),
                    match kind {
                        Kind::Text => "text",
                        Kind::Thinking => "reasoning",
                        Kind::Redacted => "redacted reasoning",
                        Kind::Tool { .. } => "tool call",
                        Kind::Native => "native",
                        Kind::Dropped => "dropped",
                    }
                )));
            }
        }
        Ok(false)
    }

    fn block_event(
        &mut self,
        index: u32,
        event: &AgentEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let Some(pos) = self.find(index) else {
            return Err(out_of_order(format!(
                "{} for block {index}, which never opened",
                event.kind()
            )));
        };
        let entry = &mut self.blocks[pos];
        if matches!(entry.kind, Kind::Dropped) {
            return Ok(());
        }
        match entry.state {
            State::Held => {
                entry.pending.push(event.clone());
                Ok(())
            }
            State::Done => Err(out_of_order(format!(
                "{} for block {index}, which is closed",
                event.kind()
            ))),
            State::Current => {
                if self.write_current(pos, event, out)? {
                    self.close_current();
                    self.flush_held(out)?;
                }
                Ok(())
            }
        }
    }

    fn close_current(&mut self) {
        if let Some(c) = self.current.take() {
            self.blocks[c].state = State::Done;
        }
    }

    /// While no block is on the wire, writes held blocks in the order they opened.
    fn flush_held(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        while self.current.is_none() {
            let Some(pos) = self.queue.pop_front() else {
                break;
            };
            let pending = std::mem::take(&mut self.blocks[pos].pending);
            let Some((start, rest)) = pending.split_first() else {
                continue;
            };
            self.begin(pos, start, out)?;
            for event in rest {
                if self.write_current(pos, event, out)? {
                    self.close_current();
                    break;
                }
            }
        }
        Ok(())
    }

    /// At `stream.end`: closes what is open and writes everything still held.
    fn flush_all(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        loop {
            if let Some(c) = self.current {
                Self::stop(self.blocks[c].wire, out)?;
                self.close_current();
            }
            if self.queue.is_empty() {
                return Ok(());
            }
            self.flush_held(out)?;
        }
    }

    fn end(&mut self, end: &StreamEnd, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if end.reason == FinishReason::Error {
            // The failure was not reported by an `error` event: say so rather than let the
            // client take a broken answer for a whole one.
            return self.error("api_error", "the upstream stream failed", out);
        }
        self.message_start(None, out)?;
        self.flush_all(out)?;
        let same = self.same;
        let delta_usage = self.delta_usage.take();
        let usage_src = delta_usage.as_deref();
        let extra = usage_src.and_then(|u| usage_extra(u, same));
        let usage = match usage_src {
            Some(u) => UsageOut {
                input_tokens: uncached_input(u, &self.usage),
                cache_creation_input_tokens: u.cache_write_tokens,
                cache_read_input_tokens: u.cache_read_tokens,
                output_tokens: u.output_tokens,
                extra: extra.as_ref(),
            },
            // `output_tokens` is required in message_delta.
            None => UsageOut {
                output_tokens: Some(self.usage.output_tokens.unwrap_or(0)),
                ..UsageOut::default()
            },
        };
        frame(
            out,
            "message_delta",
            &MessageDeltaOut {
                ty: "message_delta",
                delta: MessageDeltaBodyOut {
                    stop_reason: stop_reason(end, same),
                    stop_sequence: end.stop_sequence.as_deref(),
                    extra: if same { end.extra.as_ref() } else { None },
                },
                usage,
            },
        )?;
        frame(out, "message_stop", &TypeOnly { ty: "message_stop" })?;
        self.finished = true;
        Ok(())
    }

    fn error(&mut self, code: &str, message: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.finished = true;
        frame(
            out,
            "error",
            &ErrorOut {
                ty: "error",
                error: ErrorDetailOut { ty: code, message },
            },
        )
    }
}

fn unsupported_choice() -> EncodeError {
    EncodeError::Unsupported {
        dialect: DIALECT,
        what: "more than one choice".into(),
    }
}

impl EventEncoder for Encoder {
    fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        match event {
            AgentEvent::TextDelta { index, .. }
            | AgentEvent::RefusalDelta { index, .. }
            | AgentEvent::ReasoningDelta { index, .. }
            | AgentEvent::ReasoningSignature { index, .. }
            | AgentEvent::ToolCallDelta { index, .. }
            | AgentEvent::ToolCallEnd { index, .. }
            | AgentEvent::NativeDelta { index, .. }
            | AgentEvent::BlockEnd { index } => self.block_event(*index, event, out),
            AgentEvent::BlockStart { .. } | AgentEvent::ToolCallStart { .. } => {
                self.open(event, out)
            }
            AgentEvent::StreamStart(s) => {
                // A second start (failover) changes who answers, not the message.
                self.same = s.dialect == DIALECT;
                if !self.message_started && self.start.is_none() {
                    self.start = Some(s.clone());
                }
                Ok(())
            }
            AgentEvent::Usage(u) => {
                self.usage.merge(u);
                if !self.message_started && self.start.is_some() {
                    self.message_start(Some(u), out)
                } else {
                    self.delta_usage.get_or_insert_with(Box::default).merge(u);
                    Ok(())
                }
            }
            AgentEvent::Heartbeat => {
                if self.start.is_some() {
                    self.message_start(None, out)?;
                }
                frame(out, "ping", &TypeOnly { ty: "ping" })
            }
            AgentEvent::ProviderEvent { name, data } => {
                if !self.same {
                    return Ok(());
                }
                self.message_start(None, out)?;
                write_json_frame(out, name.as_deref(), data).map_err(json_err)
            }
            AgentEvent::Error(e) => self.error(&e.code, &e.message, out),
            AgentEvent::StreamEnd(end) => self.end(end, out),
            AgentEvent::Retry { .. }
            | AgentEvent::Failover { .. }
            | AgentEvent::RateLimited { .. } => Ok(()),
        }
    }
}

/// The non-streaming response body for an assembled answer.
pub fn response_body(message: &Message) -> Result<Value, EncodeError> {
    let same = message.start.as_ref().is_some_and(|s| s.dialect == DIALECT);
    let mut content = Vec::with_capacity(message.blocks.len());
    for block in &message.blocks {
        if block.choice > 0 {
            return Err(unsupported_choice());
        }
        let b = match &block.content {
            BlockContent::Text { text, native, .. } => {
                let mut extra = if same {
                    block.extra.clone().unwrap_or_default()
                } else {
                    Extra::new()
                };
                if same {
                    let citations: Vec<Value> = native
                        .iter()
                        .filter(|d| {
                            d.get("type").and_then(Value::as_str) == Some("citations_delta")
                        })
                        .filter_map(|d| d.get("citation").cloned())
                        .collect();
                    if !citations.is_empty() {
                        extra.insert("citations".into(), Value::Array(citations));
                    }
                }
                KnownResponseBlock::Text {
                    text: text.clone(),
                    extra,
                }
            }
            BlockContent::Refusal { text } => KnownResponseBlock::Text {
                text: text.clone(),
                extra: Extra::new(),
            },
            BlockContent::Reasoning { text, signature } => KnownResponseBlock::Thinking {
                thinking: text.clone(),
                signature: if same {
                    signature.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            },
            BlockContent::RedactedReasoning { data } => {
                if !same {
                    continue;
                }
                KnownResponseBlock::RedactedThinking { data: data.clone() }
            }
            BlockContent::ToolCall {
                id,
                name,
                arguments,
                ..
            } => KnownResponseBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                // Truncated arguments do not parse; the call still shows, with no input.
                input: serde_json::from_str::<Value>(arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(Map::new())),
                extra: if same {
                    block.extra.clone().unwrap_or_default()
                } else {
                    Extra::new()
                },
            },
            BlockContent::Native { block, deltas } => {
                if !same {
                    continue;
                }
                content.push(ResponseBlock::Native(native_block(block, deltas)));
                continue;
            }
        };
        content.push(ResponseBlock::Known(b));
    }
    let start = message.start.as_ref();
    let u = &message.usage;
    let usage = ResponseUsage {
        input_tokens: uncached_input(u, u).unwrap_or(0),
        cache_creation_input_tokens: u.cache_write_tokens,
        cache_read_input_tokens: u.cache_read_tokens,
        output_tokens: u.output_tokens.unwrap_or(0),
        extra: usage_extra(u, same).unwrap_or_default(),
    };
    let mut extra = if same {
        start.and_then(|s| s.extra.clone()).unwrap_or_default()
    } else {
        Extra::new()
    };
    if same && let Some(e) = message.end.as_ref().and_then(|e| e.extra.as_ref()) {
        extra.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let body = ResponseBody {
        id: start.map(|s| s.id.clone()).unwrap_or_default(),
        ty: "message".into(),
        role: "assistant".into(),
        model: start.map(|s| s.model.clone()).unwrap_or_default(),
        content,
        stop_reason: message
            .end
            .as_ref()
            .filter(|e| e.reason != FinishReason::Error)
            .map(|e| stop_reason(e, same).to_owned()),
        stop_sequence: message.end.as_ref().and_then(|e| e.stop_sequence.clone()),
        usage,
        extra,
    };
    serde_json::to_value(&body).map_err(json_err)
}

/// A provider-run block with the input its `input_json_delta`s streamed filled in.
fn native_block(block: &Value, deltas: &[Value]) -> Value {
    let mut block = block.clone();
    let json: String = deltas
        .iter()
        .filter(|d| d.get("type").and_then(Value::as_str) == Some("input_json_delta"))
        .filter_map(|d| d.get("partial_json").and_then(Value::as_str))
        .collect();
    if !json.is_empty()
        && let Ok(input) = serde_json::from_str::<Value>(&json)
        && let Value::Object(m) = &mut block
    {
        m.insert("input".into(), input);
    }
    block
}

#[cfg(test)]
mod delta_tests {
    use super::*;
    use crate::seeded::{Rng, escaper_string};

    #[test]
    fn hand_written_deltas_are_serde_jsons_bytes() {
        let mut rng = Rng(7);
        for n in 0..500 {
            let len = rng.below(40) as usize;
            let value = &escaper_string(&mut rng, len);
            let wire = [0, 1, 9, 10, u32::MAX, rng.next() as u32][n % 6];
            let deltas = [
                KnownDeltaOut::TextDelta { text: value },
                KnownDeltaOut::InputJsonDelta {
                    partial_json: value,
                },
                KnownDeltaOut::ThinkingDelta { thinking: value },
                KnownDeltaOut::SignatureDelta { signature: value },
            ];
            for known in deltas {
                let mut hand = Vec::new();
                write_known_delta(&mut hand, wire, &known);
                let mut serde = Vec::new();
                frame(
                    &mut serde,
                    "content_block_delta",
                    &ContentBlockDeltaOut {
                        ty: "content_block_delta",
                        index: wire,
                        delta: DeltaOut::Known(known),
                    },
                )
                .unwrap();
                assert_eq!(
                    String::from_utf8(hand).unwrap(),
                    String::from_utf8(serde).unwrap()
                );
            }
        }
    }
}
