//! SSE frames of OpenAI Chat Completions -> Agent Events (rules: `docs/protocol.md`).

use serde::de::IgnoredAny;
use serde_json::Value;

use super::wire::{Choice, Chunk, Str, ToolCallChunk, WireUsage};
use crate::codec::{FrameDecoder, FrameError};
use crate::dialect::Dialect;
use crate::error::{CutPoint, UpstreamError};
use crate::event::{
    AgentEvent, BlockKind, ChoiceEnd, Extra, FinishReason, Fragment, StreamEnd, StreamStart, Usage,
    UsageBasis,
};
use crate::sse::SseFrame;

/// OpenAI allows `n <= 128`; a far larger choice index is a broken or hostile stream, and
/// would make us allocate per-choice state for every index below it.
const MAX_CHOICES: u32 = 1024;

/// Decoder state for one stream.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    /// `[DONE]` arrived: the stream is over and later frames are ignored.
    done: bool,
    /// Provider events that arrived before the response id was known.
    held: Vec<AgentEvent>,
    next_index: u32,
    /// Per-choice state, indexed by choice index.
    choices: Vec<ChoiceState>,
    /// Open blocks in index order (indices are assigned increasing, so push order).
    open: Vec<Open>,
    /// Block that last received content: what a cut stream was in the middle of.
    last: Option<u32>,
    /// The chunk head the fast path learned (see [`super::fast::Head`]).
    head: super::fast::Head,
    /// The last chunk's `choices` allocation, for the next ([`super::wire::recycle`]).
    spare: Vec<super::wire::Choice<'static>>,
}

#[derive(Debug, Default)]
struct ChoiceState {
    seen: bool,
    text: Option<u32>,
    refusal: Option<u32>,
    /// A refusal was streamed: OpenAI still finishes it with `stop`, the refusal is the finish.
    refused: bool,
    reasoning: Option<u32>,
    tools: Vec<ToolState>,
    finish: Option<String>,
    /// Passthrough fields of choice 0's finish chunk.
    end_extra: Option<Extra>,
}

#[derive(Debug)]
struct ToolState {
    /// `tool_calls[].index` on the wire.
    wire: u32,
    block: u32,
    id: String,
    name: String,
    args: String,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    index: u32,
    choice: u32,
    kind: OpenKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenKind {
    Text,
    Refusal,
    Reasoning,
    /// Position in the choice's `tools`.
    Tool(usize),
}

/// A tool call whose arguments cannot be closed as they are.
struct BadTool {
    name: String,
    reason: String,
}

impl FrameDecoder for Decoder {
    fn frame(&mut self, frame: &SseFrame<'_>, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        if self.done || !frame.has_data {
            return Ok(());
        }
        // Most of a stream: a token chunk like the last, read without building its chunk.
        if self.started
            && let Some((ci, text)) = self.head.shaped_text(frame.data)
        {
            return self.shaped_text(ci, text, out);
        }
        let trimmed = frame.data.trim_ascii();
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed == "[DONE]" {
            return self.terminate(out);
        }
        // Parse the untrimmed data so that JSON error lines stay relative to the frame.
        // Once started, the chunk head's fields are no longer read: the fast path may skip them.
        let mut chunk = Chunk::default();
        // `spare` is empty (see below): it lends its allocation to this frame's choices.
        let spare = std::mem::take(&mut self.spare);
        if super::fast::parse(frame.data, &mut self.head, self.started, &mut chunk, spare).is_none()
        {
            chunk = serde_json::from_str(frame.data)?;
        }
        if let Some(error) = &chunk.error {
            return Err(FrameError::Upstream(upstream_error(error)));
        }
        let no_choices = chunk.choices.as_ref().is_none_or(|c| c.is_empty());
        if chunk.prompt_filter_results.is_some() && no_choices && chunk.usage.is_none() {
            // Azure's filter report has no unified meaning: kept verbatim for OpenAI clients.
            let event = AgentEvent::ProviderEvent {
                name: frame.event.map(str::to_owned),
                data: serde_json::from_str::<Value>(frame.data)?,
            };
            if self.started {
                out.push(event);
            } else {
                self.held.push(event);
            }
            return Ok(());
        }
        let Chunk {
            id,
            model,
            created,
            choices,
            usage,
            system_fingerprint,
            service_tier,
            ..
        } = chunk;
        if !self.started {
            self.start(id, model, created, system_fingerprint, service_tier, out);
        }
        if let Some(mut choices) = choices {
            for choice in choices.drain(..) {
                self.choice(choice, out)?;
            }
            self.spare = super::wire::recycle(choices);
        }
        if let Some(usage) = usage {
            out.push(AgentEvent::Usage(Box::new(convert_usage(*usage))));
        }
        Ok(())
    }

    fn eof(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), CutPoint> {
        if self.done {
            return Ok(());
        }
        if !self.started {
            return Err(CutPoint::BeforeStart);
        }
        let mut seen = self.choices.iter().filter(|c| c.seen).peekable();
        let finished = seen.peek().is_some() && seen.all(|c| c.finish.is_some());
        if !finished {
            return Err(self.cut_point());
        }
        // Whole answer, terminator missing. A tool call that still cannot be closed can only
        // be reported as a cut inside it: eof has no other way to say "malformed".
        self.close_all(out)
            .map_err(|bad| CutPoint::InToolCall { name: bad.name })?;
        out.push(self.stream_end());
        self.done = true;
        Ok(())
    }
}

impl Decoder {
    fn start(
        &mut self,
        id: Option<Str<'_>>,
        model: Option<Str<'_>>,
        created: Option<u64>,
        system_fingerprint: Option<Str<'_>>,
        service_tier: Option<Str<'_>>,
        out: &mut Vec<AgentEvent>,
    ) {
        let mut extra: Option<Extra> = None;
        for (key, value) in [
            ("system_fingerprint", system_fingerprint),
            ("service_tier", service_tier),
        ] {
            if let Some(v) = value {
                extra
                    .get_or_insert_with(Extra::new)
                    .insert(key.to_owned(), Value::String(v.into_string()));
            }
        }
        out.push(AgentEvent::StreamStart(Box::new(StreamStart {
            id: id.map(Str::into_string).unwrap_or_default(),
            model: model.map(Str::into_string).unwrap_or_default(),
            dialect: Dialect::OpenAi,
            created,
            request_id: None,
            provider: None,
            extra,
        })));
        out.append(&mut self.held);
        self.started = true;
    }

    /// Choice `ci`'s slot, marked seen.
    fn seen(&mut self, ci: u32) -> Result<usize, FrameError> {
        if ci >= MAX_CHOICES {
            return Err(FrameError::Protocol(format!(
                "choice index {ci} is out of range"
            )));
        }
        let slot = ci as usize;
        if self.choices.len() <= slot {
            self.choices.resize_with(slot + 1, ChoiceState::default);
        }
        self.choices[slot].seen = true;
        Ok(slot)
    }

    fn choice(&mut self, c: Choice<'_>, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        let ci = c.index;
        let slot = self.seen(ci)?;
        let mut extra = choice_extra(c.logprobs, c.content_filter_results);
        if let Some(delta) = c.delta {
            // Some servers send the same text as both `reasoning_content` and `reasoning`.
            let reasoning = match delta.reasoning_content {
                Some(r) if !r.as_str().is_empty() => Some(r),
                _ => delta.reasoning,
            };
            if let Some(r) = nonempty(reasoning) {
                self.reasoning(ci, r.into_fragment(), out);
            }
            if let Some(t) = nonempty(delta.content) {
                self.text(ci, t.into_fragment(), extra.take(), out);
            }
            if let Some(r) = nonempty(delta.refusal) {
                self.refusal(ci, r.into_fragment(), out);
            }
            if let Some(calls) = delta.tool_calls {
                for (pos, call) in calls.into_iter().enumerate() {
                    self.tool(ci, pos as u32, call, out)?;
                }
            }
        }
        if let Some(reason) = c.finish_reason {
            let state = &mut self.choices[slot];
            state.finish = Some(reason.into_string());
            if ci == 0 && extra.is_some() {
                state.end_extra = extra;
            }
        }
        Ok(())
    }

    /// What [`Decoder::choice`] does with a choice holding only `text`, without building it.
    fn shaped_text(
        &mut self,
        ci: u32,
        text: &str,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        self.seen(ci)?;
        if !text.is_empty() {
            self.text(ci, Fragment::new(text), None, out);
        }
        Ok(())
    }

    fn alloc(&mut self, choice: u32, kind: OpenKind) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.open.push(Open {
            index,
            choice,
            kind,
        });
        self.last = Some(index);
        index
    }

    fn close(&mut self, index: Option<u32>, out: &mut Vec<AgentEvent>) {
        if let Some(index) = index {
            if let Some(pos) = self.open.iter().rposition(|o| o.index == index) {
                self.open.remove(pos);
            }
            out.push(AgentEvent::BlockEnd { index });
        }
    }

    fn text(&mut self, ci: u32, text: Fragment, extra: Option<Extra>, out: &mut Vec<AgentEvent>) {
        let slot = ci as usize;
        let index = match self.choices[slot].text {
            Some(i) => i,
            None => {
                let reasoning = self.choices[slot].reasoning.take();
                self.close(reasoning, out);
                let i = self.alloc(ci, OpenKind::Text);
                self.choices[slot].text = Some(i);
                out.push(block_start(i, BlockKind::Text, ci));
                i
            }
        };
        self.last = Some(index);
        out.push(AgentEvent::TextDelta {
            index,
            text,
            extra: extra.map(Box::new),
        });
    }

    fn refusal(&mut self, ci: u32, text: Fragment, out: &mut Vec<AgentEvent>) {
        let slot = ci as usize;
        let index = match self.choices[slot].refusal {
            Some(i) => i,
            None => {
                let reasoning = self.choices[slot].reasoning.take();
                self.close(reasoning, out);
                let i = self.alloc(ci, OpenKind::Refusal);
                self.choices[slot].refusal = Some(i);
                self.choices[slot].refused = true;
                out.push(block_start(i, BlockKind::Refusal, ci));
                i
            }
        };
        self.last = Some(index);
        out.push(AgentEvent::RefusalDelta { index, text });
    }

    fn reasoning(&mut self, ci: u32, text: Fragment, out: &mut Vec<AgentEvent>) {
        let slot = ci as usize;
        let index = match self.choices[slot].reasoning {
            Some(i) => i,
            None => {
                let i = self.alloc(ci, OpenKind::Reasoning);
                self.choices[slot].reasoning = Some(i);
                out.push(block_start(i, BlockKind::Reasoning, ci));
                i
            }
        };
        self.last = Some(index);
        out.push(AgentEvent::ReasoningDelta { index, text });
    }

    fn tool(
        &mut self,
        ci: u32,
        pos: u32,
        call: ToolCallChunk<'_>,
        out: &mut Vec<AgentEvent>,
    ) -> Result<(), FrameError> {
        let slot = ci as usize;
        let wire = call.index.unwrap_or(pos);
        let (name, arguments) = match call.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        // Some compatible servers (Gemini's, for one) send parallel calls all under one
        // `index`, each with its own id: a new id under a known index is a new call.
        let found = self.choices[slot]
            .tools
            .iter()
            .rposition(|t| t.wire == wire)
            .filter(|&t| match &call.id {
                Some(id) if !id.as_str().is_empty() => {
                    id.as_str() == self.choices[slot].tools[t].id
                }
                _ => true,
            });
        let tool = match found {
            Some(t) => t,
            None => {
                // OpenAI sends id and name only on a call's first fragment: without a name
                // the call can never be attributed.
                let Some(name) = nonempty(name) else {
                    return Err(FrameError::Protocol(format!(
                        "tool call {wire} of choice {ci} starts without a function name"
                    )));
                };
                let state = &mut self.choices[slot];
                let (reasoning, text) = (state.reasoning.take(), state.text.take());
                self.close(reasoning, out);
                self.close(text, out);
                let t = self.choices[slot].tools.len();
                let index = self.alloc(ci, OpenKind::Tool(t));
                let name = name.into_string();
                let id = match nonempty(call.id) {
                    Some(id) => id.into_string(),
                    // A few compatible servers omit ids; clients need one to answer the call.
                    None => format!("call_{index}"),
                };
                out.push(AgentEvent::ToolCallStart {
                    index,
                    id: id.clone(),
                    name: name.clone(),
                    choice: ci,
                    extra: None,
                });
                self.choices[slot].tools.push(ToolState {
                    wire,
                    block: index,
                    id,
                    name,
                    args: String::new(),
                });
                t
            }
        };
        let state = &mut self.choices[slot].tools[tool];
        self.last = Some(state.block);
        if let Some(args) = nonempty(arguments) {
            let arguments = args.into_fragment();
            state.args.push_str(&arguments);
            out.push(AgentEvent::ToolCallDelta {
                index: state.block,
                arguments,
            });
        }
        Ok(())
    }

    /// `[DONE]`: closes what is open and ends the stream.
    fn terminate(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), FrameError> {
        if !self.started {
            return Err(FrameError::Protocol(
                "[DONE] before any chunk of the answer".to_owned(),
            ));
        }
        self.close_all(out).map_err(|bad| {
            FrameError::Protocol(format!(
                "tool call {:?} closed with {}",
                bad.name, bad.reason
            ))
        })?;
        out.push(self.stream_end());
        self.done = true;
        Ok(())
    }

    /// Closes every open block in index order.
    fn close_all(&mut self, out: &mut Vec<AgentEvent>) -> Result<(), BadTool> {
        let open = std::mem::take(&mut self.open);
        for o in &open {
            let state = &mut self.choices[o.choice as usize];
            match o.kind {
                OpenKind::Text => state.text = None,
                OpenKind::Refusal => state.refusal = None,
                OpenKind::Reasoning => state.reasoning = None,
                OpenKind::Tool(t) => {
                    let length = state.finish.as_deref() == Some("length");
                    let Some(tool) = state.tools.get_mut(t) else {
                        continue;
                    };
                    if tool.args.is_empty() {
                        // Normalized to `{}`, and streamed as a delta too, so that the deltas
                        // always add up to `tool_call.end.arguments` (an OpenAI encoder must
                        // write this `{}`; decoding that back must give the same events).
                        tool.args.push_str("{}");
                        out.push(AgentEvent::ToolCallDelta {
                            index: o.index,
                            arguments: "{}".into(),
                        });
                    }
                    let valid = serde_json::from_str::<IgnoredAny>(&tool.args).is_ok();
                    if !valid && !length {
                        return Err(BadTool {
                            name: tool.name.clone(),
                            reason: "arguments that are not valid JSON".to_owned(),
                        });
                    }
                    out.push(AgentEvent::ToolCallEnd {
                        index: o.index,
                        arguments: tool.args.clone(),
                        truncated: !valid,
                    });
                    continue;
                }
            }
            out.push(AgentEvent::BlockEnd { index: o.index });
        }
        Ok(())
    }

    fn stream_end(&mut self) -> AgentEvent {
        let (reason, provider_reason, extra) = match self.choices.first_mut() {
            Some(c) => (
                normalize(c.finish.as_deref(), !c.tools.is_empty(), c.refused),
                c.finish.clone(),
                c.end_extra.take(),
            ),
            None => (FinishReason::Stop, None, None),
        };
        let other_choices = self
            .choices
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, c)| c.seen)
            .map(|(i, c)| ChoiceEnd {
                choice: i as u32,
                reason: normalize(c.finish.as_deref(), !c.tools.is_empty(), c.refused),
                provider_reason: c.finish.clone(),
            })
            .collect();
        AgentEvent::StreamEnd(Box::new(StreamEnd {
            reason,
            provider_reason,
            stop_sequence: None,
            other_choices,
            extra,
        }))
    }

    fn cut_point(&self) -> CutPoint {
        let open = self
            .last
            .and_then(|last| self.open.iter().rev().find(|o| o.index == last));
        match open {
            None => CutPoint::BetweenBlocks,
            Some(o) => match o.kind {
                // There is no refusal cut point; a refusal is answer text.
                OpenKind::Text | OpenKind::Refusal => CutPoint::InText,
                OpenKind::Reasoning => CutPoint::InReasoning,
                OpenKind::Tool(t) => CutPoint::InToolCall {
                    name: self
                        .choices
                        .get(o.choice as usize)
                        .and_then(|c| c.tools.get(t))
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                },
            },
        }
    }
}

fn nonempty(s: Option<Str<'_>>) -> Option<Str<'_>> {
    s.filter(|s| !s.as_str().is_empty())
}

fn block_start(index: u32, block: BlockKind, choice: u32) -> AgentEvent {
    AgentEvent::BlockStart {
        index,
        block,
        choice,
        extra: None,
    }
}

/// The choice-level passthrough fields worth keeping: non-null `logprobs`, non-empty
/// `content_filter_results`.
fn choice_extra(logprobs: Option<Box<Value>>, filter: Option<Box<Value>>) -> Option<Extra> {
    let mut extra: Option<Extra> = None;
    if let Some(l) = logprobs {
        extra
            .get_or_insert_with(Extra::new)
            .insert("logprobs".to_owned(), *l);
    }
    let filter = filter.filter(|f| match &**f {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Null => false,
        _ => true,
    });
    if let Some(f) = filter {
        extra
            .get_or_insert_with(Extra::new)
            .insert("content_filter_results".to_owned(), *f);
    }
    extra
}

/// Maps an OpenAI finish reason to the normalized one (table in docs/protocol.md). OpenAI
/// ends a refusal (`delta.refusal`) with a plain `stop`: the refusal itself is the finish, so
/// that a client of another dialect learns it was refused.
pub(crate) fn normalize(reason: Option<&str>, had_tool_calls: bool, refused: bool) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ if had_tool_calls => FinishReason::ToolCalls,
        _ if refused => FinishReason::Refusal,
        _ => FinishReason::Stop,
    }
}

fn convert_usage(u: WireUsage) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cache_read_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        cache_write_tokens: None,
        reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        extra: None,
        basis: UsageBasis::Reported,
    }
}

/// Reads an `{"error": ...}` payload of any shape: OpenAI's `{message, type, code}`, a bare
/// string, or whatever a compatible server invents.
fn upstream_error(error: &Value) -> UpstreamError {
    fn text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    // An error with no type is most likely a server fault: worth a retry.
    const UNKNOWN: &str = "api_error";
    match error {
        Value::Object(m) => {
            let code = text(m.get("type"))
                .or_else(|| text(m.get("code")))
                .unwrap_or_else(|| UNKNOWN.to_owned());
            let message = text(m.get("message")).unwrap_or_else(|| error.to_string());
            UpstreamError::from_code(code, message)
        }
        Value::String(s) => UpstreamError::from_code(UNKNOWN, s.clone()),
        other => UpstreamError::from_code(UNKNOWN, other.to_string()),
    }
}
