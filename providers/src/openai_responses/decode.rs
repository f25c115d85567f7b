//! SSE frames of OpenAI Responses -> Agent Events (rules: `docs/protocol.md`).
//!
//! Every frame is one JSON object tagged by `type` (the `event:` line repeats it). Items are
//! found by `output_index`, falling back to `item_id`; blocks are kept sequential as in the
//! other dialects: a new item or content part closes what an earlier one left open.

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::DIALECT;
use super::wire::{ResponseHead, WireUsage};
use crate::codec::{FrameDecoder, FrameError};
use crate::error::{CutPoint, UpstreamError};
use crate::event::{
    AgentEvent, BlockKind, Extra, FinishReason, Fragment, StreamEnd, StreamStart, Usage, UsageBasis,
};
use crate::sse::SseFrame;

/// Output items per response. Real answers hold a handful; a stream announcing thousands is
/// broken or hostile, and each item costs state here.
const MAX_ITEMS: usize = 4096;
/// Content parts per message item (real ones hold one or two).
const MAX_PARTS: usize = 256;

/// Decoder state for one stream.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    /// A terminal event (`response.completed` / `incomplete`) arrived; later frames are
    /// ignored.
    done: bool,
    next_index: u32,
    /// Output items in the order they were added.
    items: Vec<Item>,
    /// Block that last received content: what a cut stream was in the middle of.
    last: Option<u32>,
    had_tool_calls: bool,
    refused: bool,
}

#[derive(Debug)]
struct Item {
    output: u32,
    id: String,
    open: bool,
    kind: ItemKind,
}

#[derive(Debug)]
enum ItemKind {
    Message {
        parts: Vec<PartState>,
    },
    Reasoning {
        block: u32,
        /// Reasoning text was streamed: a later summary part starts after a blank line.
        wrote: bool,
        /// A summary part opened after text was written; its first delta adds the blank line.
        separate: bool,
    },
    Call {
        block: u32,
        name: String,
        args: String,
    },
    Native {
        block: u32,
    },
}

#[derive(Debug)]
struct PartState {
    content: u32,
    block: u32,
    open: bool,
    /// Bytes of text streamed: what a `.done` event adds beyond them is sent as a delta.
    streamed: usize,
}

/// Reads a `u32` field.
fn index_of(obj: &Map<String, Value>, key: &str) -> Option<u32> {
    obj.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn protocol(reason: impl Into<String>) -> FrameError {
    FrameError::Protocol(reason.into())
}

/// `{"id": item_id}`: the item id a same-dialect client sees again.
fn id_extra(id: &str) -> Option<Extra> {
    if id.is_empty() {
        return None;
    }
    let mut extra = Extra::new();
    extra.insert("id".to_owned(), Value::String(id.to_owned()));
    Some(extra)
}

impl FrameDecoder for Decoder {
    fn frame(&mut self, frame: &SseFrame<'_>, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        if self.done || !frame.has_data || frame.data.trim_ascii().is_empty() {
            return Ok(());
        }
        let Value::Object(mut obj) = serde_json::from_str::<Value>(frame.data)? else {
            return Err(protocol("event data is not a JSON object"));
        };
        let kind = match str_of(&obj, "type").or(frame.event) {
            Some(k) => k.to_owned(),
            None => return Err(protocol("event without a type")),
        };
        if kind == "error" {
            return Err(FrameError::Upstream(upstream_error(&obj)));
        }
        if !self.started {
            self.start(&obj, out)?;
        }
        match kind.as_str() {
            "response.created" | "response.in_progress" | "response.queued" => Ok(()),
            "response.output_item.added" => self.item_added(&mut obj, out),
            "response.output_item.done" => self.item_done(&mut obj, out),
            "response.content_part.added" => self.part(&obj, out).map(|_| ()),
            "response.content_part.done" => {
                self.part_done(&obj, out);
                Ok(())
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let block = self.part(&obj, out)?;
                let text = Fragment::from(str_of(&obj, "delta").unwrap_or_default());
                self.last = Some(block);
                self.streamed(&obj, text.len());
                if !text.is_empty() {
                    out.push(if kind == "response.refusal.delta" {
                        AgentEvent::RefusalDelta { index: block, text }
                    } else {
                        AgentEvent::TextDelta {
                            index: block,
                            text,
                            extra: None,
                        }
                    });
                }
                Ok(())
            }
            "response.output_text.done" | "response.refusal.done" => {
                // Whatever the deltas missed (a proxy that sends only the finished text).
                let field = if kind == "response.refusal.done" {
                    "refusal"
                } else {
                    "text"
                };
                let whole = str_of(&obj, field).unwrap_or_default();
                let block = self.part(&obj, out)?;
                let rest = self
                    .streamed(&obj, 0)
                    .and_then(|n| whole.get(n..))
                    .filter(|r| !r.is_empty())
                    .map(Fragment::from);
                if let Some(text) = rest {
                    self.streamed(&obj, text.len());
                    out.push(if kind == "response.refusal.done" {
                        AgentEvent::RefusalDelta { index: block, text }
                    } else {
                        AgentEvent::TextDelta {
                            index: block,
                            text,
                            extra: None,
                        }
                    });
                }
                Ok(())
            }
            "response.output_text.annotation.added" => {
                let block = self.part(&obj, out)?;
                let mut delta = Map::new();
                delta.insert("type".to_owned(), Value::String(kind));
                if let Some(a) = obj.remove("annotation") {
                    delta.insert("annotation".to_owned(), a);
                }
                out.push(AgentEvent::NativeDelta {
                    index: block,
                    delta: Value::Object(delta),
                });
                Ok(())
            }
            "response.function_call_arguments.delta" => {
                let Some(item) = self.find(&obj) else {
                    return Err(protocol("arguments for an unknown output item"));
                };
                if !self.items[item].open {
                    return Err(protocol("arguments for a finished function call"));
                }
                let ItemKind::Call { block, args, .. } = &mut self.items[item].kind else {
                    return Err(protocol(
                        "arguments for an item that is not a function call",
                    ));
                };
                let block = *block;
                let delta = str_of(&obj, "delta").unwrap_or_default();
                self.last = Some(block);
                if !delta.is_empty() {
                    args.push_str(delta);
                    out.push(AgentEvent::ToolCallDelta {
                        index: block,
                        arguments: delta.into(),
                    });
                }
                Ok(())
            }
            "response.function_call_arguments.done" => {
                if let Some(item) = self.find(&obj)
                    && let Some(args) = str_of(&obj, "arguments")
                {
                    self.settle_arguments(item, args, out);
                }
                Ok(())
            }
            "response.reasoning_summary_part.added" => {
                if let Some(item) = self.find(&obj)
                    && let ItemKind::Reasoning {
                        wrote, separate, ..
                    } = &mut self.items[item].kind
                {
                    *separate = *wrote;
                }
                Ok(())
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let Some(item) = self.find(&obj) else {
                    return Err(protocol("reasoning for an unknown output item"));
                };
                let text = str_of(&obj, "delta").unwrap_or_default();
                self.reasoning(item, text, out)
            }
            "response.completed" | "response.incomplete" => self.finish(&kind, &obj, out),
            "response.failed" => {
                let head = head_of(&obj)?;
                let error = head.error.unwrap_or(Value::Null);
                Err(FrameError::Upstream(upstream_error_value(&error)))
            }
            _ => {
                // Progress of a provider-run item (`response.web_search_call.searching`,
                // `response.code_interpreter_call_code.delta`, ...) belongs to its block.
                if let Some(item) = self.find(&obj)
                    && let ItemKind::Native { block } = self.items[item].kind
                {
                    if !self.items[item].open {
                        return Err(protocol("progress of a finished output item"));
                    }
                    obj.remove("sequence_number");
                    self.last = Some(block);
                    out.push(AgentEvent::NativeDelta {
                        index: block,
                        delta: Value::Object(obj),
                    });
                } else if !is_known_echo(&kind) {
                    obj.remove("sequence_number");
                    out.push(AgentEvent::ProviderEvent {
                        name: frame.event.map(str::to_owned),
                        data: Value::Object(obj),
                    });
                }
                Ok(())
            }
        }
    }

    fn eof(&mut self, _out: &mut Vec<AgentEvent>) -> Result<(), CutPoint> {
        if self.done {
            return Ok(());
        }
        if !self.started {
            return Err(CutPoint::BeforeStart);
        }
        Err(self.cut_point())
    }
}

/// `.done` events that repeat what the deltas said: nothing new to report.
fn is_known_echo(kind: &str) -> bool {
    matches!(
        kind,
        "response.reasoning_summary_part.done"
            | "response.reasoning_summary_text.done"
            | "response.reasoning_text.done"
    )
}

fn head_of(obj: &Map<String, Value>) -> Result<ResponseHead, FrameError> {
    match obj.get("response") {
        Some(r) => Ok(ResponseHead::deserialize_value(r)?),
        None => Ok(ResponseHead::default()),
    }
}

impl ResponseHead {
    fn deserialize_value(v: &Value) -> Result<Self, serde_json::Error> {
        serde::Deserialize::deserialize(v)
    }
}

impl Decoder {
    fn start(
        &mut self,
        obj: &Map<String, Value>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        // Some streams (a resumed one, a proxy's) begin without `response.created`: the
        // answer starts anyway, with whatever the first event says.
        let head = head_of(obj)?;
        out.push(AgentEvent::StreamStart(Box::new(StreamStart {
            id: head.id.unwrap_or_default(),
            model: head.model.unwrap_or_default(),
            dialect: DIALECT,
            created: head
                .created_at
                // Encoders (ours included) write 0 when they do not know.
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(|t| t as u64),
            request_id: None,
            provider: None,
            extra: None,
        })));
        self.started = true;
        Ok(())
    }

    fn alloc(&mut self) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.last = Some(index);
        index
    }

    /// The item an event is about: by `output_index`, else by `item_id`.
    fn find(&self, obj: &Map<String, Value>) -> Option<usize> {
        if let Some(output) = index_of(obj, "output_index") {
            return self.items.iter().rposition(|i| i.output == output);
        }
        let id = str_of(obj, "item_id")?;
        self.items.iter().rposition(|i| i.id == id)
    }

    fn item_added(
        &mut self,
        obj: &mut Map<String, Value>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let Some(Value::Object(item)) = obj.remove("item") else {
            return Err(protocol("output_item.added without an item"));
        };
        let output = index_of(obj, "output_index").unwrap_or(self.items.len() as u32);
        if self.items.iter().any(|i| i.output == output) {
            return Err(protocol(format!("output item {output} added twice")));
        }
        if self.items.len() >= MAX_ITEMS {
            return Err(protocol(format!("more than {MAX_ITEMS} output items")));
        }
        self.close_text(None, out);
        let id = str_of(&item, "id").unwrap_or_default().to_owned();
        let kind = match str_of(&item, "type").unwrap_or_default() {
            "message" => ItemKind::Message { parts: Vec::new() },
            "reasoning" => {
                let block = self.alloc();
                out.push(AgentEvent::BlockStart {
                    index: block,
                    block: BlockKind::Reasoning,
                    choice: 0,
                    extra: id_extra(&id).map(Box::new),
                });
                ItemKind::Reasoning {
                    block,
                    wrote: false,
                    separate: false,
                }
            }
            "function_call" => {
                let name = str_of(&item, "name").unwrap_or_default().to_owned();
                if name.is_empty() {
                    return Err(protocol(format!(
                        "function call item {output} without a name"
                    )));
                }
                let block = self.alloc();
                let call_id = match str_of(&item, "call_id") {
                    Some(c) if !c.is_empty() => c.to_owned(),
                    _ => format!("call_{block}"),
                };
                out.push(AgentEvent::ToolCallStart {
                    index: block,
                    id: call_id,
                    name: name.clone(),
                    choice: 0,
                    extra: id_extra(&id).map(Box::new),
                });
                self.had_tool_calls = true;
                let args = str_of(&item, "arguments").unwrap_or_default().to_owned();
                if !args.is_empty() {
                    out.push(AgentEvent::ToolCallDelta {
                        index: block,
                        arguments: args.as_str().into(),
                    });
                }
                ItemKind::Call { block, name, args }
            }
            _ => {
                let block = self.alloc();
                out.push(AgentEvent::BlockStart {
                    index: block,
                    block: BlockKind::Native {
                        block: Value::Object(item),
                    },
                    choice: 0,
                    extra: None,
                });
                ItemKind::Native { block }
            }
        };
        self.items.push(Item {
            output,
            id,
            open: true,
            kind,
        });
        Ok(())
    }

    fn item_done(
        &mut self,
        obj: &mut Map<String, Value>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let Some(pos) = self.find(obj) else {
            return Err(protocol("output_item.done for an item never added"));
        };
        let Some(Value::Object(item)) = obj.remove("item") else {
            return Err(protocol("output_item.done without an item"));
        };
        if !self.items[pos].open {
            return Ok(());
        }
        // A call cut by the token limit is done as `incomplete`, its arguments cut too.
        let cut = str_of(&item, "status") == Some("incomplete");
        match &self.items[pos].kind {
            ItemKind::Reasoning { block, wrote, .. } => {
                let (block, wrote) = (*block, *wrote);
                if !wrote {
                    // A summary sent only with the finished item.
                    let text = summary_text(&item);
                    if !text.is_empty() {
                        self.reasoning(pos, &text, out)?;
                    }
                }
                if let Some(sig) = str_of(&item, "encrypted_content").filter(|s| !s.is_empty()) {
                    out.push(AgentEvent::ReasoningSignature {
                        index: block,
                        signature: sig.to_owned(),
                    });
                }
            }
            ItemKind::Call { .. } => {
                if let Some(args) = str_of(&item, "arguments") {
                    self.settle_arguments(pos, args, out);
                }
            }
            ItemKind::Native { block } => {
                let mut delta = Map::new();
                delta.insert(
                    "type".to_owned(),
                    Value::String("response.output_item.done".to_owned()),
                );
                delta.insert("item".to_owned(), Value::Object(item));
                out.push(AgentEvent::NativeDelta {
                    index: *block,
                    delta: Value::Object(delta),
                });
            }
            ItemKind::Message { .. } => {}
        }
        self.close_item(pos, cut, out)
    }

    /// The block of the content part an event names, opened if this is its first event.
    fn part(
        &mut self,
        obj: &Map<String, Value>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<u32, FrameError> {
        let Some(pos) = self.find(obj) else {
            return Err(protocol("content part of an unknown output item"));
        };
        let content = index_of(obj, "content_index").unwrap_or(0);
        let refusal = match obj
            .get("part")
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
        {
            Some(t) => t == "refusal",
            None => str_of(obj, "type").is_some_and(|t| t.starts_with("response.refusal")),
        };
        let ItemKind::Message { parts } = &self.items[pos].kind else {
            return Err(protocol("content part of an item that is not a message"));
        };
        match parts.iter().find(|p| p.content == content) {
            Some(p) if p.open && self.items[pos].open => return Ok(p.block),
            Some(_) => return Err(protocol("content for a finished content part")),
            None if !self.items[pos].open => {
                return Err(protocol("content part of a finished message"));
            }
            None => {}
        }
        if parts.len() >= MAX_PARTS {
            return Err(protocol(format!("more than {MAX_PARTS} content parts")));
        }
        // A new part closes the item's earlier ones, and text another item left open.
        self.close_text(Some(pos), out);
        // Every part names its item, so that an encoder keeps the parts of one item together.
        let extra = id_extra(&self.items[pos].id);
        let block = self.alloc();
        if let ItemKind::Message { parts } = &mut self.items[pos].kind {
            for p in parts.iter_mut().filter(|p| p.open) {
                p.open = false;
                out.push(AgentEvent::BlockEnd { index: p.block });
            }
            parts.push(PartState {
                content,
                block,
                open: true,
                streamed: 0,
            });
        }
        self.refused |= refusal;
        out.push(AgentEvent::BlockStart {
            index: block,
            block: if refusal {
                BlockKind::Refusal
            } else {
                BlockKind::Text
            },
            choice: 0,
            extra: extra.map(Box::new),
        });
        Ok(block)
    }

    /// Adds `n` bytes to the streamed count of the part an event names; the new count.
    fn streamed(&mut self, obj: &Map<String, Value>, n: usize) -> Option<usize> {
        let content = index_of(obj, "content_index").unwrap_or(0);
        let pos = self.find(obj)?;
        let ItemKind::Message { parts } = &mut self.items[pos].kind else {
            return None;
        };
        let part = parts.iter_mut().find(|p| p.content == content)?;
        part.streamed = part.streamed.saturating_add(n);
        Some(part.streamed)
    }

    fn part_done(&mut self, obj: &Map<String, Value>, out: &mut Vec<AgentEvent>) {
        let content = index_of(obj, "content_index").unwrap_or(0);
        if let Some(pos) = self.find(obj)
            && let ItemKind::Message { parts } = &mut self.items[pos].kind
            && let Some(p) = parts.iter_mut().find(|p| p.content == content && p.open)
        {
            p.open = false;
            out.push(AgentEvent::BlockEnd { index: p.block });
        }
    }

    fn reasoning(
        &mut self,
        pos: usize,
        text: &str,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        if !self.items[pos].open {
            return Err(protocol("reasoning for a finished item"));
        }
        let ItemKind::Reasoning {
            block,
            wrote,
            separate,
        } = &mut self.items[pos].kind
        else {
            return Err(protocol("reasoning for an item that is not reasoning"));
        };

        let block = *block;
        self.last = Some(block);
        if text.is_empty() {
            return Ok(());
        }
        let text = if std::mem::take(separate) {
            Fragment::from(format!("\n\n{text}"))
        } else {
            Fragment::from(text)
        };
        *wrote = true;
        out.push(AgentEvent::ReasoningDelta { index: block, text });
        Ok(())
    }

    /// The final arguments of a call: what the deltas missed is sent as one more delta, so
    /// that the deltas always add up to `tool_call.end.arguments`.
    fn settle_arguments(&mut self, pos: usize, fin: &str, out: &mut Vec<AgentEvent>) {
        if let ItemKind::Call { block, args, .. } = &mut self.items[pos].kind
            && fin.len() > args.len()
            && let Some(rest) = fin.strip_prefix(args.as_str())
        {
            out.push(AgentEvent::ToolCallDelta {
                index: *block,
                arguments: rest.into(),
            });
            args.push_str(rest);
        }
    }

    fn close_item(
        &mut self,
        pos: usize,
        length: bool,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let item = &mut self.items[pos];
        if !item.open {
            return Ok(());
        }
        item.open = false;
        match &mut item.kind {
            ItemKind::Message { parts } => {
                for p in parts.iter_mut().filter(|p| p.open) {
                    p.open = false;
                    out.push(AgentEvent::BlockEnd { index: p.block });
                }
            }
            ItemKind::Reasoning { block, .. } | ItemKind::Native { block } => {
                out.push(AgentEvent::BlockEnd { index: *block });
            }
            ItemKind::Call { block, name, args } => {
                if args.is_empty() {
                    // Normalized to `{}` and streamed as a delta too, as the Chat decoder does.
                    args.push_str("{}");
                    out.push(AgentEvent::ToolCallDelta {
                        index: *block,
                        arguments: "{}".into(),
                    });
                }
                let valid = serde_json::from_str::<IgnoredAny>(args).is_ok();
                if !valid && !length {
                    return Err(protocol(format!(
                        "function call {:?} closed with arguments that are not valid JSON",
                        crate::untrusted::untrusted(name)
                    )));
                }
                out.push(AgentEvent::ToolCallEnd {
                    index: *block,
                    arguments: args.clone(),
                    truncated: !valid,
                });
            }
        }
        Ok(())
    }

    fn close_all(&mut self, length: bool, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        for pos in 0..self.items.len() {
            self.close_item(pos, length, out)?;
        }
        Ok(())
    }

    /// Closes the text and reasoning of items other than `keep`: answer text is sequential,
    /// as in the other dialects. Tool calls and provider-run items stay open until their
    /// `output_item.done`, so that interleaved items (which Responses allows) keep all
    /// their arguments.
    fn close_text(&mut self, keep: Option<usize>, out: &mut Vec<AgentEvent>) {
        for pos in 0..self.items.len() {
            if Some(pos) == keep || !self.items[pos].open {
                continue;
            }
            let item = &mut self.items[pos];
            match &mut item.kind {
                ItemKind::Message { parts } => {
                    for p in parts.iter_mut().filter(|p| p.open) {
                        p.open = false;
                        out.push(AgentEvent::BlockEnd { index: p.block });
                    }
                }
                ItemKind::Reasoning { block, .. } => {
                    item.open = false;
                    out.push(AgentEvent::BlockEnd { index: *block });
                }
                ItemKind::Call { .. } | ItemKind::Native { .. } => {}
            }
        }
    }

    fn finish(
        &mut self,
        kind: &str,
        obj: &Map<String, Value>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let head = head_of(obj)?;
        let (reason, provider_reason) = if kind == "response.incomplete" {
            let why = head.incomplete_details.and_then(|d| d.reason);
            let reason = match why.as_deref() {
                Some("content_filter") => FinishReason::ContentFilter,
                _ => FinishReason::Length,
            };
            (reason, why.or(Some("incomplete".to_owned())))
        } else if self.had_tool_calls {
            (FinishReason::ToolCalls, head.status)
        } else if self.refused {
            (FinishReason::Refusal, head.status)
        } else {
            (FinishReason::Stop, head.status)
        };
        self.close_all(reason == FinishReason::Length, out)?;
        if let Some(u) = head.usage {
            out.push(AgentEvent::Usage(Box::new(convert_usage(u))));
        }
        out.push(AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason,
            provider_reason,
            stop_sequence: None,
            other_choices: Vec::new(),
            extra: None,
        })));
        self.done = true;
        Ok(())
    }

    fn cut_point(&self) -> CutPoint {
        let Some(last) = self.last else {
            return CutPoint::BetweenBlocks;
        };
        for item in self.items.iter().rev().filter(|i| i.open) {
            match &item.kind {
                ItemKind::Message { parts } if parts.iter().any(|p| p.open && p.block == last) => {
                    return CutPoint::InText;
                }
                ItemKind::Reasoning { block, .. } if *block == last => {
                    return CutPoint::InReasoning;
                }
                ItemKind::Call { block, name, .. } if *block == last => {
                    return CutPoint::InToolCall { name: name.clone() };
                }
                ItemKind::Native { block } if *block == last => return CutPoint::InNative,
                _ => {}
            }
        }
        CutPoint::BetweenBlocks
    }
}

/// The text of a reasoning item's `summary` parts, joined by blank lines.
fn summary_text(item: &Map<String, Value>) -> String {
    let parts = item.get("summary").and_then(Value::as_array);
    let texts: Vec<&str> = parts
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .filter(|t| !t.is_empty())
        .collect();
    texts.join("\n\n")
}

pub(crate) fn convert_usage(u: WireUsage) -> Usage {
    Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.input_tokens_details.and_then(|d| d.cached_tokens),
        cache_write_tokens: None,
        reasoning_tokens: u.output_tokens_details.and_then(|d| d.reasoning_tokens),
        extra: None,
        basis: UsageBasis::Reported,
    }
}

/// The `error` event: `{"error": {type, code, message}}` as OpenAI sends it, or the fields at
/// the top level as the API reference describes it.
fn upstream_error(obj: &Map<String, Value>) -> UpstreamError {
    match obj.get("error") {
        Some(e @ Value::Object(_)) => upstream_error_value(e),
        _ => upstream_error_value(&Value::Object(obj.clone())),
    }
}

fn upstream_error_value(error: &Value) -> UpstreamError {
    fn text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    // An error with no type is most likely a server fault: worth a retry.
    const UNKNOWN: &str = "server_error";
    let code = text(error.get("type"))
        .filter(|t| t != "error")
        .or_else(|| text(error.get("code")))
        .unwrap_or_else(|| UNKNOWN.to_owned());
    let message = text(error.get("message")).unwrap_or_else(|| "response failed".to_owned());
    UpstreamError::from_code(code, message)
}
