//! Agent Events -> OpenAI Responses SSE body.
//!
//! Each text or refusal block is a content part of a `message` item (consecutive parts that
//! came from one same-dialect message item stay in it), each reasoning block a `reasoning`
//! item with one summary part, each tool call a `function_call` item. Provider-run blocks
//! and encrypted reasoning are written only when the upstream spoke Responses too. Every
//! event carries the next `sequence_number`; an answer that ends in error ends with
//! `error` + `response.failed`, one cut by the token limit or a filter with
//! `response.incomplete`, never with `response.completed`.

use serde_json::{Map, Value, json};

use super::DIALECT;
use super::output::{
    Ending, Head, OutItem, OutKind, PartOut, extra_id, json_err, out_of_order, response_json,
    status_of_done, unsupported_choice,
};
use crate::codec::{EncodeOptions, EventEncoder};
use crate::error::EncodeError;
use crate::event::{AgentEvent, BlockKind, ErrorInfo, Extra, StreamEnd, Usage};
use crate::sse::write_json_frame;

/// Block indices come from our own decoders and are dense from 0; a far larger one would make
/// the index table huge.
const MAX_BLOCKS: u32 = 1 << 20;

/// Encoder state for one stream.
#[derive(Debug)]
pub struct Encoder {
    /// The upstream spoke Responses: item ids, encrypted reasoning and provider-run items
    /// are written back.
    same: bool,
    started: bool,
    /// A terminal event was written; nothing may follow.
    finished: bool,
    seq: u64,
    id: String,
    model: String,
    created: u64,
    /// Output items in output order (`output_index` is the position).
    items: Vec<OutItem>,
    /// Where each block index went.
    blocks: Vec<Slot>,
    usage: Option<Usage>,
    /// The error an `error` event reported, for the `response.failed` that follows.
    error: Option<ErrorInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unopened,
    /// A block Responses cannot express for this client: its events are dropped.
    Dropped,
    /// Item position, and content index for message parts.
    Item(usize, usize),
}

impl Encoder {
    /// A new encoder. Responses has no per-request stream options: usage is always sent.
    pub fn new(_options: EncodeOptions) -> Self {
        Encoder {
            same: false,
            started: false,
            finished: false,
            seq: 0,
            id: String::new(),
            model: String::new(),
            created: 0,
            items: Vec::new(),
            blocks: Vec::new(),
            usage: None,
            error: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, body: Value) -> Result<(), EncodeError> {
        let mut obj = Map::new();
        obj.insert("type".to_owned(), Value::String(kind.to_owned()));
        obj.insert("sequence_number".to_owned(), Value::from(self.seq));
        if let Value::Object(fields) = body {
            obj.extend(fields);
        }
        self.seq += 1;
        write_json_frame(out, Some(kind), &Value::Object(obj)).map_err(json_err)
    }

    fn response(
        &self,
        status: &str,
        incomplete: Option<&str>,
        error: Option<&ErrorInfo>,
    ) -> Result<Value, EncodeError> {
        let output = self
            .items
            .iter()
            .map(|i| {
                i.json(if i.open {
                    "in_progress"
                } else {
                    status_of_done(status)
                })
            })
            .collect();
        let head = Head {
            id: &self.id,
            model: &self.model,
            created: self.created,
        };
        response_json(head, status, output, self.usage.as_ref(), incomplete, error)
    }

    fn slot(&self, index: u32) -> Result<Slot, EncodeError> {
        match self.blocks.get(index as usize) {
            Some(Slot::Unopened) | None => {
                Err(out_of_order(format!("event for unopened block {index}")))
            }
            Some(s) => Ok(*s),
        }
    }

    fn set_slot(&mut self, index: u32, slot: Slot) -> Result<(), EncodeError> {
        if index >= MAX_BLOCKS {
            return Err(out_of_order(format!("block index {index} out of range")));
        }
        let i = index as usize;
        if self.blocks.len() <= i {
            self.blocks.resize(i + 1, Slot::Unopened);
        }
        self.blocks[i] = slot;
        Ok(())
    }

    /// Closes the message items left open (their parts are done) before another item starts.
    fn settle_messages(
        &mut self,
        keep: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        for pos in 0..self.items.len() {
            if Some(pos) == keep || !self.items[pos].open {
                continue;
            }
            if let OutKind::Message { parts } = &self.items[pos].kind
                && parts.iter().all(|p| !p.open)
            {
                self.items[pos].open = false;
                let item = self.items[pos].json("completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": pos, "item": item}),
                )?;
            }
        }
        Ok(())
    }

    fn push_item(&mut self, item: OutItem, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        self.settle_messages(None, out)?;
        let pos = self.items.len();
        let json = item.json("in_progress");
        self.items.push(item);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": pos, "item": json}),
        )?;
        Ok(pos)
    }

    fn open_part(
        &mut self,
        index: u32,
        refusal: bool,
        extra: Option<&Extra>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let wanted = if self.same { extra_id(extra) } else { None };
        // A part of the message item still being written, when the upstream said so.
        let joins = match (wanted, self.items.last()) {
            (Some(id), Some(last)) => {
                last.open && last.id == id && matches!(last.kind, OutKind::Message { .. })
            }
            _ => false,
        };
        let pos = if joins {
            self.items.len() - 1
        } else {
            let id = wanted.map_or_else(|| format!("msg_{index}"), str::to_owned);
            self.push_item(
                OutItem {
                    id,
                    open: true,
                    kind: OutKind::Message { parts: Vec::new() },
                },
                out,
            )?
        };
        let part = PartOut {
            refusal,
            text: String::new(),
            annotations: Vec::new(),
            open: true,
        };
        let json = part.json();
        let content = match &mut self.items[pos].kind {
            OutKind::Message { parts } => {
                parts.push(part);
                parts.len() - 1
            }
            _ => return Err(out_of_order("content part outside a message")),
        };
        let item_id = self.items[pos].id.clone();
        self.set_slot(index, Slot::Item(pos, content))?;
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": pos, "content_index": content, "part": json}),
        )
    }

    fn open(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.started {
            return Err(out_of_order("block before stream.start"));
        }
        match event {
            AgentEvent::BlockStart {
                index,
                block,
                choice,
                extra,
            } => {
                if *choice > 0 {
                    return Err(unsupported_choice());
                }
                match block {
                    BlockKind::Text => self.open_part(*index, false, extra.as_deref(), out),
                    BlockKind::Refusal => self.open_part(*index, true, extra.as_deref(), out),
                    BlockKind::Reasoning => {
                        let id = match (self.same, extra_id(extra.as_deref())) {
                            (true, Some(id)) => id.to_owned(),
                            _ => format!("rs_{index}"),
                        };
                        let pos = self.push_item(
                            OutItem {
                                id,
                                open: true,
                                kind: OutKind::Reasoning {
                                    text: String::new(),
                                    part_open: false,
                                    encrypted: None,
                                },
                            },
                            out,
                        )?;
                        self.set_slot(*index, Slot::Item(pos, 0))
                    }
                    BlockKind::Native { block } if self.same => {
                        let id = block
                            .get("id")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("item_{index}"), str::to_owned);
                        let pos = self.push_item(
                            OutItem {
                                id,
                                open: true,
                                kind: OutKind::Native {
                                    added: block.clone(),
                                    done: None,
                                },
                            },
                            out,
                        )?;
                        self.set_slot(*index, Slot::Item(pos, 0))
                    }
                    // Another provider's server tool or encrypted reasoning: nothing a
                    // Responses client could use or send back.
                    BlockKind::Native { .. } | BlockKind::RedactedReasoning { .. } => {
                        self.set_slot(*index, Slot::Dropped)
                    }
                }
            }
            AgentEvent::ToolCallStart {
                index,
                id,
                name,
                choice,
                extra,
            } => {
                if *choice > 0 {
                    return Err(unsupported_choice());
                }
                let item_id = match (self.same, extra_id(extra.as_deref())) {
                    (true, Some(i)) => i.to_owned(),
                    _ => format!("fc_{index}"),
                };
                let pos = self.push_item(
                    OutItem {
                        id: item_id,
                        open: true,
                        kind: OutKind::Call {
                            call_id: id.clone(),
                            name: name.clone(),
                            args: String::new(),
                            truncated: false,
                        },
                    },
                    out,
                )?;
                self.set_slot(*index, Slot::Item(pos, 0))
            }
            _ => Ok(()),
        }
    }

    fn block_event(
        &mut self,
        index: u32,
        event: &AgentEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let Slot::Item(pos, content) = self.slot(index)? else {
            return Ok(());
        };
        let item_id = self.items[pos].id.clone();
        let same = self.same;
        let head = json!({"item_id": item_id, "output_index": pos});
        let with = |mut fields: Value| {
            if let (Value::Object(m), Value::Object(h)) = (&mut fields, &head) {
                for (k, v) in h.iter().rev() {
                    m.shift_insert(0, k.clone(), v.clone());
                }
            }
            fields
        };
        match (event, &mut self.items[pos].kind) {
            (AgentEvent::TextDelta { text, .. }, OutKind::Message { parts }) => {
                let Some(part) = parts.get_mut(content).filter(|p| !p.refusal) else {
                    return Ok(());
                };
                part.text.push_str(text);
                let body = with(json!({"content_index": content, "delta": text, "logprobs": []}));
                self.emit(out, "response.output_text.delta", body)
            }
            (AgentEvent::RefusalDelta { text, .. }, OutKind::Message { parts }) => {
                let Some(part) = parts.get_mut(content).filter(|p| p.refusal) else {
                    return Ok(());
                };
                part.text.push_str(text);
                let body = with(json!({"content_index": content, "delta": text}));
                self.emit(out, "response.refusal.delta", body)
            }
            (AgentEvent::NativeDelta { delta, .. }, OutKind::Message { parts }) => {
                let annotation = delta.get("annotation").filter(|_| same).filter(|_| {
                    delta.get("type").and_then(Value::as_str)
                        == Some("response.output_text.annotation.added")
                });
                let (Some(annotation), Some(part)) = (annotation, parts.get_mut(content)) else {
                    return Ok(());
                };
                part.annotations.push(annotation.clone());
                let n = part.annotations.len() - 1;
                let body = with(json!({
                    "content_index": content,
                    "annotation_index": n,
                    "annotation": annotation,
                }));
                self.emit(out, "response.output_text.annotation.added", body)
            }
            (
                AgentEvent::ReasoningDelta { text, .. },
                OutKind::Reasoning {
                    text: all,
                    part_open,
                    ..
                },
            ) => {
                all.push_str(text);
                let first = !std::mem::replace(part_open, true);
                if first {
                    let body = with(json!({
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    }));
                    self.emit(out, "response.reasoning_summary_part.added", body)?;
                }
                let body = with(json!({"summary_index": 0, "delta": text}));
                self.emit(out, "response.reasoning_summary_text.delta", body)
            }
            (
                AgentEvent::ReasoningSignature { signature, .. },
                OutKind::Reasoning { encrypted, .. },
            ) => {
                // Another provider's signature means nothing to OpenAI.
                if same {
                    *encrypted = Some(signature.clone());
                }
                Ok(())
            }
            (AgentEvent::ToolCallDelta { arguments, .. }, OutKind::Call { args, .. }) => {
                args.push_str(arguments);
                let body = with(json!({"delta": arguments}));
                self.emit(out, "response.function_call_arguments.delta", body)
            }
            (
                AgentEvent::ToolCallEnd {
                    arguments,
                    truncated,
                    ..
                },
                OutKind::Call {
                    args,
                    name,
                    truncated: cut,
                    ..
                },
            ) => {
                args.clone_from(arguments);
                *cut = *truncated;
                let body = with(json!({"name": name, "arguments": arguments}));
                self.emit(out, "response.function_call_arguments.done", body)?;
                self.close_item(pos, out)
            }
            (AgentEvent::NativeDelta { delta, .. }, OutKind::Native { done, .. }) => {
                let kind = delta
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if kind == "response.output_item.done" {
                    *done = delta.get("item").cloned();
                    return Ok(());
                }
                if !kind.starts_with("response.") {
                    return Ok(());
                }
                let kind = kind.to_owned();
                let mut body = delta.clone();
                if let Value::Object(m) = &mut body {
                    m.remove("type");
                    m.remove("sequence_number");
                    m.insert("output_index".to_owned(), Value::from(pos));
                }
                self.emit(out, &kind, body)
            }
            (AgentEvent::BlockEnd { .. }, OutKind::Message { parts }) => {
                let Some(part) = parts.get_mut(content).filter(|p| p.open) else {
                    return Ok(());
                };
                part.open = false;
                let json = part.json();
                let done = if part.refusal {
                    with(json!({"content_index": content, "refusal": part.text}))
                } else {
                    with(json!({"content_index": content, "text": part.text, "logprobs": []}))
                };
                let kind = if part.refusal {
                    "response.refusal.done"
                } else {
                    "response.output_text.done"
                };
                self.emit(out, kind, done)?;
                let body = with(json!({"content_index": content, "part": json}));
                self.emit(out, "response.content_part.done", body)
            }
            (
                AgentEvent::BlockEnd { .. },
                OutKind::Reasoning {
                    text, part_open, ..
                },
            ) => {
                if *part_open {
                    *part_open = false;
                    let text = text.clone();
                    let body = with(json!({"summary_index": 0, "text": text}));
                    self.emit(out, "response.reasoning_summary_text.done", body)?;
                    let body = with(json!({
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": text},
                    }));
                    self.emit(out, "response.reasoning_summary_part.done", body)?;
                }
                self.close_item(pos, out)
            }
            (AgentEvent::BlockEnd { .. }, OutKind::Native { .. }) => self.close_item(pos, out),
            _ => Ok(()),
        }
    }

    fn close_item(&mut self, pos: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.items[pos].open {
            return Ok(());
        }
        self.items[pos].open = false;
        let item = self.items[pos].json("completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": pos, "item": item}),
        )
    }

    /// Closes whatever is still open, as the terminal event's response shows it.
    fn close_everything(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for index in 0..self.blocks.len() {
            if let Slot::Item(pos, content) = self.blocks[index]
                && self.items[pos].open
            {
                let open_part = match &self.items[pos].kind {
                    OutKind::Message { parts } => parts.get(content).is_some_and(|p| p.open),
                    _ => true,
                };
                if open_part {
                    let end = AgentEvent::BlockEnd {
                        index: index as u32,
                    };
                    self.block_event(index as u32, &end, out)?;
                }
            }
        }
        self.settle_messages(None, out)
    }

    fn end(&mut self, end: Option<&StreamEnd>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        if !self.started {
            return Err(out_of_order("stream.end before stream.start"));
        }
        let error = self.error.take();
        let ending = Ending::of(end, error.as_ref());
        if ending.status == "failed" {
            let info = error.clone().unwrap_or_else(|| ErrorInfo {
                code: "server_error".to_owned(),
                message: "the answer failed".to_owned(),
                retryable: true,
            });
            // As OpenAI sends it: the SDKs raise on an `error` event with an `error` object.
            self.emit(
                out,
                "error",
                json!({"error": {
                    "type": info.code,
                    "code": info.code,
                    "message": info.message,
                    "param": null,
                }}),
            )?;
            let response = self.response("failed", None, Some(&info))?;
            self.finished = true;
            return self.emit(out, "response.failed", json!({"response": response}));
        }
        self.close_everything(out)?;
        let response = self.response(ending.status, ending.incomplete, None)?;
        self.finished = true;
        let kind = if ending.status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": response}))
    }
}

impl EventEncoder for Encoder {
    fn event(&mut self, event: &AgentEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        match event {
            AgentEvent::StreamStart(s) => {
                if self.started {
                    // A second start (failover) changes who answers, not the response.
                    self.model.clone_from(&s.model);
                    return Ok(());
                }
                self.same = s.dialect == DIALECT;
                self.started = true;
                self.id.clone_from(&s.id);
                self.model.clone_from(&s.model);
                self.created = s.created.unwrap_or(0);
                let response = self.response("in_progress", None, None)?;
                self.emit(out, "response.created", json!({"response": response}))?;
                self.emit(out, "response.in_progress", json!({"response": response}))
            }
            AgentEvent::BlockStart { .. } | AgentEvent::ToolCallStart { .. } => {
                self.open(event, out)
            }
            AgentEvent::TextDelta { index, .. }
            | AgentEvent::RefusalDelta { index, .. }
            | AgentEvent::ReasoningDelta { index, .. }
            | AgentEvent::ReasoningSignature { index, .. }
            | AgentEvent::ToolCallDelta { index, .. }
            | AgentEvent::ToolCallEnd { index, .. }
            | AgentEvent::NativeDelta { index, .. }
            | AgentEvent::BlockEnd { index } => self.block_event(*index, event, out),
            AgentEvent::Usage(u) => {
                self.usage.get_or_insert_with(Usage::default).merge(u);
                Ok(())
            }
            AgentEvent::Failover { model, .. } => {
                self.model.clone_from(model);
                Ok(())
            }
            AgentEvent::ProviderEvent { name, data } => {
                if !self.same || !self.started {
                    return Ok(());
                }
                let kind = data
                    .get("type")
                    .and_then(Value::as_str)
                    .or(name.as_deref())
                    .unwrap_or("response.unknown")
                    .to_owned();
                let mut body = data.clone();
                if let Value::Object(m) = &mut body {
                    m.remove("type");
                    m.remove("sequence_number");
                }
                self.emit(out, &kind, body)
            }
            AgentEvent::Error(e) => {
                self.error = Some(e.clone());
                self.end(None, out)
            }
            AgentEvent::StreamEnd(end) => self.end(Some(end), out),
            AgentEvent::Retry { .. } | AgentEvent::RateLimited { .. } | AgentEvent::Heartbeat => {
                Ok(())
            }
        }
    }
}
