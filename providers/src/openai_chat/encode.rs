//! Agent Events -> OpenAI Chat Completions SSE body and non-streaming JSON body.

use serde_json::Value;

use super::wire::{
    ChatCompletion, ChoiceOut, CompletionChoice, CompletionTokensDetails, DeltaOut, ErrorBody,
    ErrorFrame, FunctionOut, PromptTokensDetails, ResponseFunction, ResponseMessage,
    ResponseToolCall, ToolCallOut, WireUsage,
};
use crate::assemble::{BlockContent, Message};
use crate::codec::{EncodeOptions, EventEncoder};
use crate::dialect::Dialect;
use crate::error::EncodeError;
use crate::event::{AgentEvent, Extra, FinishReason, StreamEnd, Usage};
use crate::sse::json::{write_str, write_u64};
use crate::sse::{write_frame, write_json_frame};

/// Block indices come from our own decoders and are dense from 0; a far larger one would make
/// the index table huge.
const MAX_BLOCKS: u32 = 1 << 20;

/// Encoder state for one stream.
#[derive(Debug)]
pub struct Encoder {
    options: EncodeOptions,
    /// The upstream spoke OpenAI: passthrough fields and verbatim finish reasons are written.
    same: bool,
    started: bool,
    /// `[DONE]` or an error frame was written; nothing may follow.
    finished: bool,
    /// Every chunk's JSON up to and including `"choices":[`, rendered once at stream.start
    /// (and again when a failover changes the answering model).
    head: Vec<u8>,
    /// The stream's start, kept to render `head` again. Boxed to keep the encoder small.
    start: Option<Box<crate::event::StreamStart>>,
    /// Blocks by event index.
    blocks: Vec<Option<BlockOut>>,
    /// Per output choice.
    choices: Vec<ChoiceProgress>,
    /// Boxed: usage is held once per stream, and keeps the encoder small to move around.
    usage: Option<Box<Usage>>,
}

#[derive(Debug, Clone, Copy)]
struct BlockOut {
    choice: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Refusal,
    Reasoning,
    Tool {
        /// `tool_calls[].index`: the call's ordinal within its choice.
        ordinal: u32,
        /// Argument bytes written so far.
        streamed: usize,
    },
    /// Blocks OpenAI cannot express (native, redacted reasoning): their events are dropped.
    Dropped,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChoiceProgress {
    role_sent: bool,
    tools: u32,
    /// Refusal text was written: the client already sees the refusal (see [`openai_reason`]).
    refused: bool,
}

impl Encoder {
    /// A new encoder.
    pub fn new(options: EncodeOptions) -> Self {
        Encoder {
            options,
            same: false,
            started: false,
            finished: false,
            head: Vec::new(),
            start: None,
            blocks: Vec::new(),
            choices: Vec::new(),
            usage: None,
        }
    }

    fn json_err(source: serde_json::Error) -> EncodeError {
        EncodeError::Json {
            dialect: Dialect::OpenAi,
            source,
        }
    }

    fn out_of_order(what: String) -> EncodeError {
        EncodeError::OutOfOrder {
            dialect: Dialect::OpenAi,
            what,
        }
    }

    fn choice_state(&mut self, choice: u32) -> &mut ChoiceProgress {
        let slot = choice as usize;
        if self.choices.len() <= slot {
            self.choices.resize_with(slot + 1, ChoiceProgress::default);
        }
        &mut self.choices[slot]
    }

    fn block(&self, index: u32) -> Result<BlockOut, EncodeError> {
        self.blocks
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or_else(|| Self::out_of_order(format!("delta for unopened block {index}")))
    }

    fn open_block(&mut self, index: u32, block: BlockOut) -> Result<(), EncodeError> {
        if index >= MAX_BLOCKS {
            return Err(Self::out_of_order(format!(
                "block index {index} out of range"
            )));
        }
        let slot = index as usize;
        if self.blocks.len() <= slot {
            self.blocks.resize(slot + 1, None);
        }
        self.blocks[slot] = Some(block);
        Ok(())
    }

    /// Writes one chunk holding one choice.
    fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        index: u32,
        mut delta: DeltaOut<'_>,
        extra: Option<&Extra>,
        finish_reason: Option<&str>,
    ) -> Result<(), EncodeError> {
        if !self.started {
            return Err(Self::out_of_order("content before stream.start".to_owned()));
        }
        let state = self.choice_state(index);
        if !state.role_sent {
            // Choice 0's role went out with stream.start; other choices announce it in their
            // first delta, as OpenAI does.
            state.role_sent = true;
            delta.role = Some("assistant");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        match extra.filter(|_| self.same) {
            // Every token chunk: written by hand, serde_json's serializer was the largest
            // cost of re-encoding one (`write_choice` is tested byte for byte against it).
            None => write_choice(out, index, &delta, finish_reason),
            Some(extra) => {
                let choice = ChoiceOut {
                    index,
                    delta,
                    extra: Some(extra),
                    finish_reason,
                };
                serde_json::to_writer(&mut *out, &choice).map_err(Self::json_err)?;
            }
        }
        out.extend_from_slice(b"]}\n\n");
        Ok(())
    }

    fn start(
        &mut self,
        s: &crate::event::StreamStart,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.same = s.dialect == Dialect::OpenAi;
        self.render_head(s)?;
        self.start = Some(Box::new(s.clone()));
        self.started = true;
        self.chunk(
            out,
            0,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            },
            None,
            None,
        )?;
        Ok(())
    }

    fn render_head(&mut self, s: &crate::event::StreamStart) -> Result<(), EncodeError> {
        let extra = if self.same { s.extra.as_ref() } else { None };
        self.head.clear();
        write_head(
            &mut self.head,
            &s.id,
            s.created.unwrap_or(0),
            &s.model,
            extra,
        )
        .map_err(Self::json_err)?;
        self.head.extend_from_slice(b",\"choices\":[");
        Ok(())
    }

    fn end(&mut self, end: &StreamEnd, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if end.reason == FinishReason::Error {
            // A failed stream without its `error` event: the client must not take the answer
            // as whole.
            self.error("stream_error", "the upstream stream failed", out)?;
            return Ok(());
        }
        if self.started {
            let reason = self.finish_reason(0, end.reason, end.provider_reason.as_deref());
            self.chunk(
                out,
                0,
                DeltaOut::default(),
                end.extra.as_ref(),
                Some(reason),
            )?;
            for c in &end.other_choices {
                let reason = self.finish_reason(c.choice, c.reason, c.provider_reason.as_deref());
                self.chunk(out, c.choice, DeltaOut::default(), None, Some(reason))?;
            }
            self.usage_chunk(out)?;
        }
        write_frame(out, None, "[DONE]");
        self.finished = true;
        Ok(())
    }

    fn finish_reason<'a>(
        &self,
        choice: u32,
        reason: FinishReason,
        provider: Option<&'a str>,
    ) -> &'a str {
        match provider {
            Some(p) if self.same => p,
            _ => {
                let refused = self.choices.get(choice as usize).is_some_and(|c| c.refused);
                openai_reason(reason, refused)
            }
        }
    }

    /// The usage chunk (`choices: []`), when the client asked for it and counts are known.
    fn usage_chunk(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.options.include_usage
            && self.started
            && let Some(u) = &self.usage
        {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&self.head);
            out.extend_from_slice(b"],\"usage\":");
            serde_json::to_writer(&mut *out, &usage_out(u)).map_err(Self::json_err)?;
            out.extend_from_slice(b"}\n\n");
        }
        Ok(())
    }

    /// The error frame that ends a failed stream. The usage chunk goes first: the attempts
    /// were billed, and a client that asked for usage must be able to count them.
    fn error(&mut self, code: &str, message: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.usage_chunk(out)?;
        let frame = ErrorFrame {
            error: ErrorBody {
                message,
                kind: code,
                code,
            },
        };
        write_json_frame(out, None, &frame).map_err(Self::json_err)?;
        self.finished = true;
        Ok(())
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
                    return Err(Self::out_of_order("second stream.start".to_owned()));
                }
                self.start(s, out)?;
            }
            AgentEvent::BlockStart {
                index,
                block,
                choice,
                ..
            } => {
                use crate::event::BlockKind;
                let kind = match block {
                    BlockKind::Text => Kind::Text,
                    BlockKind::Refusal => Kind::Refusal,
                    BlockKind::Reasoning => Kind::Reasoning,
                    BlockKind::RedactedReasoning { .. } | BlockKind::Native { .. } => Kind::Dropped,
                };
                // OpenAI has no block header: text flows with its first delta.
                self.open_block(
                    *index,
                    BlockOut {
                        choice: *choice,
                        kind,
                    },
                )?;
            }
            AgentEvent::TextDelta { index, text, extra } => {
                let b = self.block(*index)?;
                if b.kind == Kind::Text && (!text.is_empty() || extra.is_some()) {
                    let delta = DeltaOut {
                        content: Some(text),
                        ..DeltaOut::default()
                    };
                    self.chunk(out, b.choice, delta, extra.as_deref(), None)?;
                }
            }
            AgentEvent::RefusalDelta { index, text } => {
                let b = self.block(*index)?;
                if !text.is_empty() {
                    self.choice_state(b.choice).refused = true;
                    let delta = DeltaOut {
                        refusal: Some(text),
                        ..DeltaOut::default()
                    };
                    self.chunk(out, b.choice, delta, None, None)?;
                }
            }
            AgentEvent::ReasoningDelta { index, text } => {
                let b = self.block(*index)?;
                if !text.is_empty() {
                    let delta = DeltaOut {
                        reasoning_content: Some(text),
                        ..DeltaOut::default()
                    };
                    self.chunk(out, b.choice, delta, None, None)?;
                }
            }
            AgentEvent::ToolCallStart {
                index,
                id,
                name,
                choice,
                ..
            } => {
                let state = self.choice_state(*choice);
                let ordinal = state.tools;
                state.tools += 1;
                self.open_block(
                    *index,
                    BlockOut {
                        choice: *choice,
                        kind: Kind::Tool {
                            ordinal,
                            streamed: 0,
                        },
                    },
                )?;
                let delta = DeltaOut {
                    tool_calls: Some([ToolCallOut {
                        index: ordinal,
                        id: Some(id),
                        kind: Some("function"),
                        function: FunctionOut {
                            name: Some(name),
                            arguments: "",
                        },
                    }]),
                    ..DeltaOut::default()
                };
                self.chunk(out, *choice, delta, None, None)?;
            }
            AgentEvent::ToolCallDelta { index, arguments } => {
                self.tool_arguments(*index, arguments, out)?;
            }
            AgentEvent::ToolCallEnd {
                index, arguments, ..
            } => {
                // OpenAI has no call close, but the client assembles the arguments from the
                // deltas: whatever `end` adds (`""` normalized to `{}`) must still be sent.
                let b = self.block(*index)?;
                if let Kind::Tool { streamed, .. } = b.kind
                    && arguments.len() > streamed
                    && let Some(rest) = arguments.get(streamed..)
                {
                    self.tool_arguments(*index, rest, out)?;
                }
            }
            AgentEvent::Usage(u) => match &mut self.usage {
                Some(held) => held.merge(u),
                None => self.usage = Some(u.clone()),
            },
            AgentEvent::StreamEnd(end) => self.end(end, out)?,
            AgentEvent::Error(e) => self.error(&e.code, &e.message, out)?,
            AgentEvent::ProviderEvent { name, data } => {
                if self.same {
                    write_json_frame(out, name.as_deref(), data).map_err(Self::json_err)?;
                }
            }
            AgentEvent::BlockEnd { .. }
            | AgentEvent::NativeDelta { .. }
            | AgentEvent::ReasoningSignature { .. }
            | AgentEvent::Heartbeat
            | AgentEvent::Retry { .. }
            | AgentEvent::RateLimited { .. } => {}
            AgentEvent::Failover { model, .. } => {
                // Every chunk names its model: from here on, the one that answers.
                if let Some(mut start) = self.start.take() {
                    start.model.clone_from(model);
                    self.render_head(&start)?;
                    self.start = Some(start);
                }
            }
        }
        Ok(())
    }
}

impl Encoder {
    fn tool_arguments(
        &mut self,
        index: u32,
        arguments: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let b = self.block(index)?;
        let Kind::Tool { ordinal, streamed } = b.kind else {
            return Err(Self::out_of_order(format!(
                "tool call arguments for block {index}, which is not a tool call"
            )));
        };
        if arguments.is_empty() {
            return Ok(());
        }
        if let Some(Some(block)) = self.blocks.get_mut(index as usize) {
            block.kind = Kind::Tool {
                ordinal,
                streamed: streamed + arguments.len(),
            };
        }
        let delta = DeltaOut {
            tool_calls: Some([ToolCallOut {
                index: ordinal,
                id: None,
                kind: None,
                function: FunctionOut {
                    name: None,
                    arguments,
                },
            }]),
            ..DeltaOut::default()
        };
        self.chunk(out, b.choice, delta, None, None)
    }
}

/// Appends a [`ChunkHead`] without its closing brace, byte for byte as serde_json writes it
/// (by hand: once per stream, but serde's flattened map was a visible share of short streams).
fn write_head(
    out: &mut Vec<u8>,
    id: &str,
    created: u64,
    model: &str,
    extra: Option<&Extra>,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, id);
    out.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
    write_u64(out, created);
    out.extend_from_slice(b",\"model\":");
    write_str(out, model);
    for (key, value) in extra.into_iter().flatten() {
        out.push(b',');
        write_str(out, key);
        out.push(b':');
        serde_json::to_writer(&mut *out, value)?;
    }
    Ok(())
}

/// Appends a [`ChoiceOut`] without passthrough fields, byte for byte as serde_json writes it.
fn write_choice(out: &mut Vec<u8>, index: u32, delta: &DeltaOut<'_>, finish: Option<&str>) {
    out.extend_from_slice(b"{\"index\":");
    write_u64(out, u64::from(index));
    out.extend_from_slice(b",\"delta\":{");
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, key: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(key);
    };
    let strings = [
        (&b"\"role\":"[..], delta.role),
        (b"\"content\":", delta.content),
        (b"\"refusal\":", delta.refusal),
        (b"\"reasoning_content\":", delta.reasoning_content),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            key(out, name);
            write_str(out, v);
        }
    }
    if let Some([call]) = &delta.tool_calls {
        key(out, b"\"tool_calls\":[{\"index\":");
        write_u64(out, u64::from(call.index));
        if let Some(id) = call.id {
            out.extend_from_slice(b",\"id\":");
            write_str(out, id);
        }
        if let Some(kind) = call.kind {
            out.extend_from_slice(b",\"type\":");
            write_str(out, kind);
        }
        out.extend_from_slice(b",\"function\":{");
        if let Some(name) = call.function.name {
            out.extend_from_slice(b"\"name\":");
            write_str(out, name);
            out.push(b',');
        }
        out.extend_from_slice(b"\"arguments\":");
        write_str(out, call.function.arguments);
        out.extend_from_slice(b"}}]");
    }
    out.extend_from_slice(b"},\"finish_reason\":");
    match finish {
        Some(reason) => write_str(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// The OpenAI finish reason for a normalized one (table in the rules). `refused`: the choice
/// carries refusal text, which is how OpenAI says "refused" (with `stop`); a refusal without
/// it (Anthropic's) can only be told by `content_filter`.
fn openai_reason(reason: FinishReason, refused: bool) -> &'static str {
    match reason {
        FinishReason::Refusal if refused => "stop",
        FinishReason::Stop | FinishReason::PauseTurn | FinishReason::Error => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter | FinishReason::Refusal => "content_filter",
    }
}

fn usage_out(u: &Usage) -> WireUsage {
    let prompt = u.input_tokens.unwrap_or(0);
    let completion = u.output_tokens.unwrap_or(0);
    WireUsage {
        prompt_tokens: Some(prompt),
        completion_tokens: Some(completion),
        total_tokens: Some(prompt + completion),
        prompt_tokens_details: u.cache_read_tokens.map(|c| PromptTokensDetails {
            cached_tokens: Some(c),
        }),
        completion_tokens_details: u.reasoning_tokens.map(|r| CompletionTokensDetails {
            reasoning_tokens: Some(r),
        }),
    }
}

/// The non-streaming `chat.completion` body for an assembled answer.
pub fn response_body(message: &Message) -> Result<Value, EncodeError> {
    let start = message.start.as_ref();
    let same = start.is_some_and(|s| s.dialect == Dialect::OpenAi);
    let mut ids: Vec<u32> = vec![0];
    for b in &message.blocks {
        ids.push(b.choice);
    }
    if let Some(end) = &message.end {
        ids.extend(end.other_choices.iter().map(|c| c.choice));
    }
    ids.sort_unstable();
    ids.dedup();

    let choices = ids
        .into_iter()
        .map(|choice| response_choice(message, choice, same))
        .collect();
    let usage = &message.usage;
    let usage =
        (usage.input_tokens.is_some() || usage.output_tokens.is_some()).then(|| usage_out(usage));
    let body = ChatCompletion {
        id: start.map(|s| s.id.clone()).unwrap_or_default(),
        object: "chat.completion".to_owned(),
        created: start.and_then(|s| s.created).unwrap_or(0),
        model: start.map(|s| s.model.clone()).unwrap_or_default(),
        choices,
        usage,
        extra: if same {
            start.and_then(|s| s.extra.clone()).unwrap_or_default()
        } else {
            Extra::new()
        },
    };
    serde_json::to_value(&body).map_err(Encoder::json_err)
}

fn response_choice(message: &Message, choice: u32, same: bool) -> CompletionChoice {
    let mut text: Option<String> = None;
    let mut refusal: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    // Streamed logprobs arrive one token list per delta; the body has them all in one list.
    let mut logprobs: Option<(Vec<Value>, Vec<Value>)> = None;
    for b in message.blocks.iter().filter(|b| b.choice == choice) {
        match &b.content {
            BlockContent::Text {
                text: t, extras, ..
            } => {
                text.get_or_insert_with(String::new).push_str(t);
                for extra in extras {
                    if let Some(Value::Object(l)) = extra.get("logprobs") {
                        let (content, refusal) = logprobs.get_or_insert_with(Default::default);
                        if let Some(Value::Array(a)) = l.get("content") {
                            content.extend(a.iter().cloned());
                        }
                        if let Some(Value::Array(a)) = l.get("refusal") {
                            refusal.extend(a.iter().cloned());
                        }
                    }
                }
            }
            BlockContent::Refusal { text: t } => {
                refusal.get_or_insert_with(String::new).push_str(t);
            }
            BlockContent::Reasoning { text: t, .. } => {
                reasoning.get_or_insert_with(String::new).push_str(t);
            }
            BlockContent::ToolCall {
                id,
                name,
                arguments,
                ..
            } => calls.push(ResponseToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: ResponseFunction {
                    name: name.clone(),
                    arguments: if arguments.is_empty() {
                        "{}".to_owned()
                    } else {
                        arguments.clone()
                    },
                },
            }),
            BlockContent::RedactedReasoning { .. } | BlockContent::Native { .. } => {}
        }
    }
    let finish_reason = message.end.as_ref().and_then(|end| {
        let (reason, provider) = if choice == 0 {
            (end.reason, end.provider_reason.as_deref())
        } else {
            let c = end.other_choices.iter().find(|c| c.choice == choice)?;
            (c.reason, c.provider_reason.as_deref())
        };
        Some(match provider {
            Some(p) if same => p.to_owned(),
            _ => openai_reason(reason, refusal.is_some()).to_owned(),
        })
    });
    let logprobs = logprobs.filter(|_| same).map(|(content, refusal)| {
        let list = |v: Vec<Value>| {
            if v.is_empty() {
                Value::Null
            } else {
                Value::Array(v)
            }
        };
        serde_json::json!({ "content": Value::Array(content), "refusal": list(refusal) })
    });
    CompletionChoice {
        index: choice,
        message: ResponseMessage {
            role: "assistant".to_owned(),
            content: text,
            refusal,
            reasoning_content: reasoning,
            tool_calls: (!calls.is_empty()).then_some(calls),
        },
        logprobs,
        finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::ChunkHead;
    use super::*;
    use crate::seeded::Rng;

    /// Text with escapes, every kind of control character, non-ASCII and plain runs.
    fn text(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "",
            " token",
            "\"",
            "\\",
            "\n",
            "\r\n",
            "\t",
            "\u{0}",
            "\u{1f}",
            "\u{8}",
            "\u{c}",
            "\u{7f}",
            "é",
            "—",
            "\u{2028}",
            "😀",
            "{\"a\":[1,2]}",
            "0123456789abcdef",
        ];
        let n = rng.below(5);
        (0..n)
            .map(|_| {
                if rng.below(4) == 0 {
                    char::from_u32(rng.below(0x11_0000) as u32)
                        .unwrap_or('x')
                        .to_string()
                } else {
                    PIECES[rng.below(PIECES.len() as u64) as usize].to_owned()
                }
            })
            .collect()
    }

    fn maybe(rng: &mut Rng, s: &str) -> Option<String> {
        (rng.below(3) != 0).then(|| s.to_owned())
    }

    /// The hand-written head is byte-identical to serde_json's `ChunkHead` (less its closing
    /// brace) on random ids, models and passthrough fields.
    #[test]
    fn write_head_matches_serde_json() {
        for seed in 1..=2000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (id, model) = (text(&mut rng), text(&mut rng));
            let created = [0, 7, 1_770_933_892, u64::MAX][rng.below(4) as usize];
            let mut extra = Extra::new();
            for _ in 0..rng.below(4) {
                let value = match rng.below(4) {
                    0 => Value::String(text(&mut rng)),
                    1 => Value::from(rng.below(1000)),
                    2 => serde_json::json!({"a": [text(&mut rng), null, 1.5]}),
                    _ => Value::Null,
                };
                extra.insert(text(&mut rng), value);
            }
            let extra = (rng.below(3) != 0).then_some(&extra);
            let mut ours = Vec::new();
            write_head(&mut ours, &id, created, &model, extra).unwrap();
            let mut serde = serde_json::to_vec(&ChunkHead {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model: &model,
                extra,
            })
            .unwrap();
            assert_eq!(serde.pop(), Some(b'}'));
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&serde),
                "seed {seed}"
            );
        }
    }

    /// The hand-written choice is byte-identical to serde_json's for every delta shape the
    /// encoder writes, on random strings (escapes, control characters, unicode) and every
    /// prefix of them.
    #[test]
    fn write_choice_matches_serde_json() {
        for seed in 1..=3000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let t = text(&mut rng);
            let cuts: Vec<usize> = (0..=t.len()).filter(|&c| t.is_char_boundary(c)).collect();
            let cut = cuts[rng.below(cuts.len() as u64) as usize];
            for s in [&t[..], &t[..cut], &t[cut..]] {
                let o = text(&mut rng);
                let other = maybe(&mut rng, &o);
                let finish = maybe(&mut rng, s);
                let tool = rng.below(3) == 0;
                let id = maybe(&mut rng, "call_\"1\"");
                let name = maybe(&mut rng, s);
                let delta = DeltaOut {
                    role: (rng.below(4) == 0).then_some("assistant"),
                    content: (rng.below(2) == 0).then_some(s),
                    refusal: (rng.below(5) == 0).then_some(other.as_deref().unwrap_or(s)),
                    reasoning_content: (rng.below(5) == 0).then_some(s),
                    tool_calls: tool.then(|| {
                        [ToolCallOut {
                            index: rng.below(20) as u32,
                            id: id.as_deref(),
                            kind: (rng.below(2) == 0).then_some("function"),
                            function: FunctionOut {
                                name: name.as_deref(),
                                arguments: other.as_deref().unwrap_or(s),
                            },
                        }]
                    }),
                };
                let index = [0, 1, 9, 10, 127, u32::MAX][rng.below(6) as usize];
                let mut ours = Vec::new();
                write_choice(&mut ours, index, &delta, finish.as_deref());
                let serde = serde_json::to_vec(&ChoiceOut {
                    index,
                    delta,
                    extra: None,
                    finish_reason: finish.as_deref(),
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&serde),
                    "seed {seed}"
                );
            }
        }
    }
}
