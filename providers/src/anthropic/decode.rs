//! Anthropic SSE frames -> Agent Events.
//!
//! Blocks keep their wire index. A `message_delta` carrying a stop reason is the finish: it
//! closes whatever is still open (Anthropic leaves a tool call open when `max_tokens` cuts it),
//! and `message_stop` (or EOF after the finish) emits `stream.end`.

use serde_json::{Map, Value};

use super::wire::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ContentBlockStop, Delta, ErrorEvent,
    EventType, MESSAGE_KNOWN_FIELDS, MessageDelta, MessageStart, WireUsage,
};
use crate::codec::{FrameDecoder, FrameError};
use crate::dialect::Dialect;
use crate::error::{CutPoint, UpstreamError};
use crate::event::{
    AgentEvent, BlockKind, Extra, FinishReason, StreamEnd, StreamStart, Usage, UsageBasis,
};
use crate::sse::SseFrame;

/// Decoder state for one stream.
#[derive(Debug, Default)]
pub struct Decoder {
    phase: Phase,
    /// Blocks opened and not yet closed (almost always zero or one).
    open: Vec<OpenBlock>,
    /// Every index ever opened, so an index is never reused within the stream.
    opened: Vec<u32>,
    /// Unknown events that arrived before `message_start`, emitted right after it.
    held: Vec<AgentEvent>,
    /// Latest raw cache counts: `input_tokens` is normalized with them even when a later
    /// usage report omits them.
    cache_read: u64,
    cache_write: u64,
    /// The finish, once `message_delta` said why the answer stopped.
    end: Option<Box<StreamEnd>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    BeforeStart,
    Started,
    /// `message_stop` was handled: nothing more is emitted.
    Done,
}

#[derive(Debug)]
struct OpenBlock {
    index: u32,
    kind: OpenKind,
}

#[derive(Debug)]
enum OpenKind {
    Text,
    Thinking,
    Redacted,
    Tool { name: String, arguments: String },
    Native,
}

/// Which frame types the decoder knows, from the SSE `event:` name or the data's `type`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    MessageStart,
    BlockStart,
    BlockDelta,
    BlockStop,
    MessageDelta,
    MessageStop,
    Ping,
    Error,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "content_block_delta" => Kind::BlockDelta,
        "content_block_start" => Kind::BlockStart,
        "content_block_stop" => Kind::BlockStop,
        "ping" => Kind::Ping,
        "message_start" => Kind::MessageStart,
        "message_delta" => Kind::MessageDelta,
        "message_stop" => Kind::MessageStop,
        "error" => Kind::Error,
        _ => return None,
    })
}

/// Maps an Anthropic `stop_reason` to the normalized reason.
pub(crate) fn finish_reason(provider: &str) -> FinishReason {
    match provider {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::Refusal,
        "pause_turn" => FinishReason::PauseTurn,
        _ => FinishReason::Stop,
    }
}

fn protocol(msg: impl Into<String>) -> FrameError {
    FrameError::Protocol(msg.into())
}

/// Drops nulls: a field the provider sent as `null` carries nothing a client would miss.
fn non_null(map: Map<String, Value>) -> Option<Extra> {
    let extra: Extra = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    (!extra.is_empty()).then_some(extra)
}

impl Decoder {
    fn usage(&mut self, w: WireUsage) -> Usage {
        if let Some(n) = w.cache_read_input_tokens {
            self.cache_read = n;
        }
        if let Some(n) = w.cache_creation_input_tokens {
            self.cache_write = n;
        }
        let extra = non_null(w.rest);
        // Anthropic reports thinking tokens under `output_tokens_details`; the unified field
        // is filled from it while the object itself stays for same-dialect clients.
        let reasoning_tokens = extra
            .as_ref()
            .and_then(|e| e.get("output_tokens_details"))
            .and_then(|d| d.get("thinking_tokens"))
            .and_then(Value::as_u64);
        Usage {
            input_tokens: w
                .input_tokens
                .map(|n| n + self.cache_read + self.cache_write),
            output_tokens: w.output_tokens,
            cache_read_tokens: w.cache_read_input_tokens,
            cache_write_tokens: w.cache_creation_input_tokens,
            reasoning_tokens,
            extra,
            basis: UsageBasis::Reported,
        }
    }

    fn find(&self, index: u32) -> Result<usize, FrameError> {
        self.open
            .iter()
            .rposition(|b| b.index == index)
            .ok_or_else(|| protocol(format!("content block {index} is not open")))
    }

    fn message_start(&mut self, data: &str, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        if self.phase != Phase::BeforeStart {
            return Err(protocol("second message_start"));
        }
        let MessageStart { message } = serde_json::from_str(data)?;
        let mut rest = message.rest;
        for k in MESSAGE_KNOWN_FIELDS {
            rest.remove(k);
        }
        out.push(AgentEvent::StreamStart(Box::new(StreamStart {
            id: message.id,
            model: message.model,
            dialect: Dialect::Anthropic,
            created: None,
            request_id: None,
            provider: None,
            extra: non_null(rest),
        })));
        if let Some(u) = message.usage {
            let u = self.usage(u);
            out.push(AgentEvent::Usage(Box::new(u)));
        }
        out.append(&mut self.held);
        self.phase = Phase::Started;
        Ok(())
    }

    fn block_start(&mut self, data: &str, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let ContentBlockStart {
            index,
            content_block,
        } = serde_json::from_str(data)?;
        if self.opened.contains(&index) {
            return Err(protocol(format!("content block {index} opened twice")));
        }
        self.opened.push(index);
        let kind = match content_block {
            ContentBlock::Text { text, extra } => {
                out.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::Text,
                    choice: 0,
                    extra: (!extra.is_empty()).then(|| Box::new(extra)),
                });
                if !text.is_empty() {
                    out.push(AgentEvent::TextDelta {
                        index,
                        text: text.into(),
                        extra: None,
                    });
                }
                OpenKind::Text
            }
            ContentBlock::Thinking {
                thinking,
                signature,
            } => {
                out.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::Reasoning,
                    choice: 0,
                    extra: None,
                });
                if !thinking.is_empty() {
                    out.push(AgentEvent::ReasoningDelta {
                        index,
                        text: thinking.into(),
                    });
                }
                if !signature.is_empty() {
                    out.push(AgentEvent::ReasoningSignature { index, signature });
                }
                OpenKind::Thinking
            }
            ContentBlock::RedactedThinking { data } => {
                out.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::RedactedReasoning { data },
                    choice: 0,
                    extra: None,
                });
                OpenKind::Redacted
            }
            ContentBlock::ToolUse {
                id,
                name,
                input,
                extra,
            } => {
                out.push(AgentEvent::ToolCallStart {
                    index,
                    id,
                    name: name.clone(),
                    choice: 0,
                    extra: (!extra.is_empty()).then(|| Box::new(extra)),
                });
                // Streaming headers carry `input: {}`; anything more is the start of the
                // arguments and must not be lost.
                let arguments = match input {
                    Value::Object(m) if !m.is_empty() => {
                        let s = Value::Object(m).to_string();
                        out.push(AgentEvent::ToolCallDelta {
                            index,
                            arguments: s.as_str().into(),
                        });
                        s
                    }
                    _ => String::new(),
                };
                OpenKind::Tool { name, arguments }
            }
            ContentBlock::Native(block) => {
                out.push(AgentEvent::BlockStart {
                    index,
                    block: BlockKind::Native { block },
                    choice: 0,
                    extra: None,
                });
                OpenKind::Native
            }
        };
        self.open.push(OpenBlock { index, kind });
        Ok(())
    }

    fn block_delta(&mut self, data: &str, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let ContentBlockDelta { index, delta } = serde_json::from_str(data)?;
        let at = self.find(index)?;
        let block = &mut self.open[at];
        match (&mut block.kind, delta) {
            // Provider-run blocks are kept verbatim, empty fragments included.
            (OpenKind::Native, d) => out.push(AgentEvent::NativeDelta {
                index,
                delta: d.to_value(),
            }),
            // Empty fragments (Anthropic opens tool input with `""`) carry nothing.
            (
                _,
                Delta::Text(s) | Delta::Thinking(s) | Delta::InputJson(s) | Delta::Signature(s),
            ) if s.is_empty() => {}
            (OpenKind::Text, Delta::Text(s)) => out.push(AgentEvent::TextDelta {
                index,
                text: s.into(),
                extra: None,
            }),
            (OpenKind::Thinking, Delta::Thinking(s)) => out.push(AgentEvent::ReasoningDelta {
                index,
                text: s.into(),
            }),
            (OpenKind::Thinking, Delta::Signature(s)) => {
                out.push(AgentEvent::ReasoningSignature {
                    index,
                    signature: s.into_owned(),
                });
            }
            (OpenKind::Tool { arguments, .. }, Delta::InputJson(s)) => {
                arguments.push_str(&s);
                out.push(AgentEvent::ToolCallDelta {
                    index,
                    arguments: s.into(),
                });
            }
            (_, Delta::Other(v)) => out.push(AgentEvent::NativeDelta { index, delta: v }),
            (kind, d) => {
                return Err(protocol(format!(
                    "{} in a {} block {index}",
                    delta_name(&d),
                    kind_name(kind)
                )));
            }
        }
        Ok(())
    }

    fn block_stop(&mut self, data: &str, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let ContentBlockStop { index } = serde_json::from_str(data)?;
        let at = self.find(index)?;
        let block = self.open.remove(at);
        close(block, false, out)
    }

    fn message_delta(&mut self, data: &str, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let MessageDelta { delta, usage } = serde_json::from_str(data)?;
        if let Some(reason) = delta.stop_reason {
            let cut_by_limit = matches!(
                reason.as_str(),
                "max_tokens" | "model_context_window_exceeded"
            );
            let mut open = std::mem::take(&mut self.open);
            open.sort_by_key(|b| b.index);
            for block in open {
                close(block, cut_by_limit, out)?;
            }
            self.end = Some(Box::new(StreamEnd {
                reason: finish_reason(&reason),
                provider_reason: Some(reason),
                stop_sequence: delta.stop_sequence,
                other_choices: Vec::new(),
                extra: non_null(delta.rest),
            }));
        }
        if let Some(u) = usage {
            let u = self.usage(u);
            out.push(AgentEvent::Usage(Box::new(u)));
        }
        Ok(())
    }

    fn message_stop(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let end = match self.end.take() {
            Some(end) => *end,
            None => {
                // A terminator without a finish reason: the answer is whole, but nobody said
                // why it stopped, so it reads as a natural end.
                let mut open = std::mem::take(&mut self.open);
                open.sort_by_key(|b| b.index);
                for block in open {
                    close(block, false, out)?;
                }
                StreamEnd {
                    reason: FinishReason::Stop,
                    provider_reason: None,
                    stop_sequence: None,
                    other_choices: Vec::new(),
                    extra: None,
                }
            }
        };
        out.push(AgentEvent::StreamEnd(Box::new(end)));
        self.phase = Phase::Done;
        Ok(())
    }

    fn unknown(
        &mut self,
        frame: &SseFrame<'_>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let data: Value = serde_json::from_str(frame.data)?;
        let event = AgentEvent::ProviderEvent {
            name: frame.event.map(str::to_owned),
            data,
        };
        match self.phase {
            Phase::BeforeStart => self.held.push(event),
            Phase::Started => out.push(event),
            Phase::Done => {}
        }
        Ok(())
    }
}

/// Emits the end event of a block. `cut_by_limit`: the provider stopped for its token limit,
/// so a tool call with incomplete arguments is reported truncated rather than malformed.
fn close(
    block: OpenBlock,
    cut_by_limit: bool,
    out: &mut Vec<AgentEvent>,
) -> Result<(), FrameError> {
    let index = block.index;
    match block.kind {
        OpenKind::Tool {
            name,
            mut arguments,
        } => {
            if arguments.is_empty() {
                // Empty input means `{}`; stream it too, so that the deltas of a call always
                // add up to its final arguments.
                arguments.push_str("{}");
                out.push(AgentEvent::ToolCallDelta {
                    index,
                    arguments: arguments.as_str().into(),
                });
            }
            let valid = serde_json::from_str::<serde::de::IgnoredAny>(&arguments).is_ok();
            if !valid && !cut_by_limit {
                return Err(protocol(format!(
                    "tool call {name:?} (block {index}) closed with invalid JSON arguments"
                )));
            }
            out.push(AgentEvent::ToolCallEnd {
                index,
                arguments,
                truncated: !valid,
            });
        }
        _ => out.push(AgentEvent::BlockEnd { index }),
    }
    Ok(())
}

fn delta_name(d: &Delta<'_>) -> &'static str {
    match d {
        Delta::Text(_) => "text_delta",
        Delta::InputJson(_) => "input_json_delta",
        Delta::Thinking(_) => "thinking_delta",
        Delta::Signature(_) => "signature_delta",
        Delta::Other(_) => "delta",
    }
}

fn kind_name(k: &OpenKind) -> &'static str {
    match k {
        OpenKind::Text => "text",
        OpenKind::Thinking => "thinking",
        OpenKind::Redacted => "redacted_thinking",
        OpenKind::Tool { .. } => "tool_use",
        OpenKind::Native => "provider-run",
    }
}

impl FrameDecoder for Decoder {
    fn frame(&mut self, frame: &SseFrame<'_>, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        if !frame.has_data || frame.data.trim().is_empty() {
            return Ok(());
        }
        // The SSE event name saves a pass over the JSON; without one, peek at `type`.
        let kind = match frame.event.and_then(kind_of) {
            Some(k) => k,
            None => {
                let EventType { ty } = serde_json::from_str(frame.data)?;
                match kind_of(&ty) {
                    Some(k) => k,
                    None => return self.unknown(frame, out),
                }
            }
        };
        if self.phase == Phase::Done {
            return Ok(());
        }
        if let Kind::Error = kind {
            let ErrorEvent { error } = serde_json::from_str(frame.data)?;
            return Err(FrameError::Upstream(UpstreamError::from_code(
                error.ty,
                error.message,
            )));
        }
        if self.phase == Phase::BeforeStart {
            match kind {
                Kind::MessageStart => {}
                // A keep-alive before the answer starts has nothing to keep alive yet.
                Kind::Ping => return Ok(()),
                _ => return Err(protocol("event before message_start")),
            }
        }
        match kind {
            Kind::BlockDelta => self.block_delta(frame.data, out),
            Kind::BlockStart => self.block_start(frame.data, out),
            Kind::BlockStop => self.block_stop(frame.data, out),
            Kind::Ping => {
                out.push(AgentEvent::Heartbeat);
                Ok(())
            }
            Kind::MessageStart => self.message_start(frame.data, out),
            Kind::MessageDelta => self.message_delta(frame.data, out),
            Kind::MessageStop => self.message_stop(out),
            Kind::Error => Ok(()),
        }
    }

    fn eof(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), CutPoint> {
        match self.phase {
            Phase::Done => Ok(()),
            Phase::BeforeStart => Err(CutPoint::BeforeStart),
            Phase::Started => {
                if let Some(end) = self.end.take() {
                    out.push(AgentEvent::StreamEnd(end));
                    self.phase = Phase::Done;
                    return Ok(());
                }
                Err(match self.open.last().map(|b| &b.kind) {
                    None => CutPoint::BetweenBlocks,
                    Some(OpenKind::Text) => CutPoint::InText,
                    Some(OpenKind::Thinking | OpenKind::Redacted) => CutPoint::InReasoning,
                    Some(OpenKind::Native) => CutPoint::InNative,
                    Some(OpenKind::Tool { name, .. }) => {
                        CutPoint::InToolCall { name: name.clone() }
                    }
                })
            }
        }
    }
}
