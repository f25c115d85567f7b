//! Splicing attempts into one client stream.
//!
//! When an upstream breaks after output reached the client, the next attempt (same route or a
//! fallback) continues the answer. The [`Splicer`] is the only producer of the client's
//! events: it keeps one `stream.start`, renumbers the new attempt's blocks after the ones
//! already sent, merges the continuation's first text block into a text block the break left
//! open, removes text the continuation repeats, sums usage over attempts, and marks the seam
//! with a `retry` or `failover` event. It is pure: the engine feeds it events and failures.
//!
//! Tool calls are held while another attempt is possible: a call's events reach the client
//! only once its `tool_call.end` arrived, so a client never receives half a call's arguments.
//! A continuation is asked to continue the text only, so it produces the calls of the answer
//! again: a call equal (same name, same JSON arguments) to one that an *earlier* attempt
//! delivered is its repeat and is dropped, each delivered call absorbing at most one repeat
//! per attempt. Equal calls within one attempt are distinct calls (parallel calls of one tool
//! with the same input) and all reach the client.

mod overlap;

use std::collections::BTreeMap;

use providers::event::ErrorInfo;
use providers::{AgentEvent, Dialect, FailoverCause, Usage};
use serde_json::Value;

pub use overlap::{MIN_REPEAT, overlap};

#[cfg(test)]
mod usage_tests;

/// The `reason` of a `failover` seam that a hedge won.
pub const HEDGE_REASON: &str = "hedge";

/// What the attempt that broke leaves for the next one to continue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Continuation {
    /// All answer text the client has (choice 0), trailing whitespace trimmed (Anthropic
    /// rejects a prefill ending in whitespace).
    pub prefix: String,
    /// The whitespace trimmed from `prefix`.
    pub trimmed: String,
    /// The tool being called when the break came, if it came inside a call: the
    /// continuation must produce that call, not prose.
    pub in_tool_call: Option<String>,
    /// Whether anything at all reached the client (else the next attempt simply restarts).
    pub output_started: bool,
}

/// Why a new attempt starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Seam {
    /// Same route again.
    Retry {
        /// Attempt number (1 = first retry).
        attempt: u32,
        /// Wait before it, in milliseconds.
        delay_ms: u64,
        /// What failed.
        reason: String,
    },
    /// Another route.
    Failover {
        /// `provider/model` that failed.
        from: String,
        /// `provider/model` taking over.
        to: String,
        /// Upstream model name of the new route (the model that now answers).
        model: String,
        /// What failed.
        reason: String,
    },
    /// Another route, started in parallel because the current one was slow to produce its
    /// first event, answered first (see [`crate::engine`]'s hedging).
    Hedge {
        /// `provider/model` that was slow (cancelled).
        from: String,
        /// `provider/model` taking over.
        to: String,
        /// Upstream model name of the new route.
        model: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Reasoning,
    Other,
}

/// A block of the current attempt, by its attempt-local index.
#[derive(Debug, Clone, Copy)]
struct Mapped {
    client: u32,
    kind: Kind,
}

/// A tool call of the current attempt whose events are held.
#[derive(Debug, Default)]
struct Held {
    name: String,
    events: Vec<AgentEvent>,
}

/// Joins the events of successive attempts into one client stream.
#[derive(Debug)]
pub struct Splicer {
    /// Whether a further attempt may follow (then tool calls are held until whole).
    hold_tool_calls: bool,
    started: bool,
    ended: bool,
    /// Events handed to the client so far: the seq of the next one.
    emitted: u64,
    next_index: u32,
    /// The attempt's block indexes mapped to the client's. Ordered maps: an answer has a few
    /// blocks open, and the lookup on every delta cost a SipHash of its index (~220
    /// instructions per frame) in a hash map; a B-tree's few comparisons cost a tenth of it,
    /// and stay logarithmic for an upstream that opens thousands.
    blocks: BTreeMap<u32, Mapped>,
    /// Tool calls held until whole, by the attempt's block index.
    held: BTreeMap<u32, Held>,
    /// Client text block left open by a broken attempt, to merge the continuation into.
    open_text: Option<u32>,
    /// Client blocks that are open (to close them on a final failure).
    open: Vec<u32>,
    sent_text: String,
    /// Tool calls the client has, over every attempt so far (held calls only: calls streamed
    /// live cannot be taken back, so nothing is compared with them).
    sent_calls: Vec<CallKey>,
    /// The calls earlier attempts delivered that the current attempt has not repeated yet: a
    /// call of the current attempt equal to one of them is its repeat and takes it out.
    unrepeated: Vec<CallKey>,
    /// The next text block of this attempt continues sent text: check it for overlap.
    continuing: bool,
    /// An attempt broke after output reached the client: later attempts are continuations,
    /// whose reasoning the client does not get (they are asked not to reason; a model that
    /// reasons anyway would show the client a second, restarted reasoning block).
    resumed: bool,
    /// Continuation text held until the overlap with `sent_text` can be decided.
    head: Option<HeadBuffer>,
    trimmed: String,
    usage_done: Usage,
    usage_now: Usage,
    /// What the current attempt cost so far, to estimate its usage if it breaks before its
    /// provider reports it. None outside an attempt the engine announced.
    attempt: Option<AttemptCost>,
    /// Dialect of the first attempt's `stream.start`: the door's encoder passes through
    /// provider fields of that dialect only.
    first_dialect: Option<Dialect>,
    /// The current attempt answers in another dialect (after a failover across dialects).
    foreign: bool,
}

/// What makes two tool calls the same call: the name and the arguments, compared as JSON
/// (a model regenerating a call may space or order its arguments differently).
#[derive(Debug, Clone, PartialEq)]
struct CallKey {
    name: String,
    arguments: Arguments,
}

#[derive(Debug, Clone, PartialEq)]
enum Arguments {
    Json(Value),
    /// Arguments that are not JSON (cut by the token limit) compare verbatim.
    Raw(String),
}

impl CallKey {
    fn new(name: &str, arguments: &str) -> Self {
        let arguments = match serde_json::from_str::<Value>(arguments) {
            Ok(v) => Arguments::Json(v),
            // No arguments at all is the empty object to every client.
            Err(_) if arguments.trim().is_empty() => {
                Arguments::Json(Value::Object(Default::default()))
            }
            Err(_) => Arguments::Raw(arguments.to_owned()),
        };
        CallKey {
            name: name.to_owned(),
            arguments,
        }
    }
}

/// The estimate of the current attempt's usage.
#[derive(Debug, Clone, Copy)]
struct AttemptCost {
    /// Estimated input tokens of the request it was sent.
    input: u64,
    produced: crate::estimate::Produced,
}

#[derive(Debug)]
struct HeadBuffer {
    client: u32,
    text: String,
}

impl Splicer {
    /// A splicer; `hold_tool_calls` when the engine may still retry or fail over.
    pub fn new(hold_tool_calls: bool) -> Self {
        Splicer {
            hold_tool_calls,
            started: false,
            ended: false,
            emitted: 0,
            next_index: 0,
            blocks: BTreeMap::new(),
            held: BTreeMap::new(),
            open_text: None,
            open: Vec::new(),
            sent_text: String::new(),
            sent_calls: Vec::new(),
            unrepeated: Vec::new(),
            continuing: false,
            resumed: false,
            head: None,
            trimmed: String::new(),
            usage_done: Usage::default(),
            usage_now: Usage::default(),
            attempt: None,
            first_dialect: None,
            foreign: false,
        }
    }

    /// Whether any event reached the client.
    pub fn output_started(&self) -> bool {
        self.emitted > 0
    }

    /// Whether the final `stream.end` went out.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Usage over every attempt so far.
    pub fn usage(&self) -> Usage {
        sum(&self.usage_done, &self.usage_now)
    }

    /// What the answer cost if it ended now: [`Splicer::usage`], with the current attempt's
    /// usage completed by estimate as if it broke here ([`crate::estimate::complete`]), or, when
    /// it finished, with only what its provider never reported estimated
    /// ([`crate::estimate::fill`]). What the rate limiter is settled with when an answer stops
    /// without a final report (its client left, its upstream ended without `stream.end`).
    pub fn usage_if_ended_now(&self) -> Usage {
        let now = match &self.attempt {
            Some(cost) if self.ended => {
                crate::estimate::fill(&self.usage_now, cost.input, cost.produced)
            }
            Some(cost) => crate::estimate::complete(&self.usage_now, cost.input, cost.produced),
            None => self.usage_now.clone(),
        };
        sum(&self.usage_done, &now)
    }

    /// A new attempt is open, sent a request of about `input_tokens` (see
    /// [`crate::estimate`]): if it breaks before its provider reports usage, its usage is
    /// estimated from that and from what it streamed.
    pub fn begin_attempt(&mut self, input_tokens: u64) {
        self.attempt = Some(AttemptCost {
            input: input_tokens,
            produced: crate::estimate::Produced::default(),
        });
    }

    /// Adds the usage of an attempt whose events never reached this splicer (a hedge that
    /// lost the race and was cancelled) to the total.
    pub fn add_usage(&mut self, usage: &Usage) {
        self.usage_done = sum(&self.usage_done, usage);
    }

    /// One event of the current attempt; appends what the client gets.
    pub fn push(&mut self, event: AgentEvent, out: &mut Vec<AgentEvent>) {
        if let Some(cost) = &mut self.attempt {
            cost.produced.add(&event);
        }
        if let AgentEvent::StreamStart(start) = &event {
            let first = *self.first_dialect.get_or_insert(start.dialect);
            self.foreign = start.dialect != first;
        }
        let event = if self.foreign {
            without_passthrough(event)
        } else {
            event
        };
        match event {
            AgentEvent::StreamStart(_) if self.started => {}
            AgentEvent::StreamStart(start) => {
                self.started = true;
                self.emit(AgentEvent::StreamStart(start), out);
            }
            AgentEvent::BlockStart {
                index,
                block,
                choice,
                extra,
            } => {
                let kind = match block {
                    providers::event::BlockKind::Text => Kind::Text,
                    providers::event::BlockKind::Reasoning => Kind::Reasoning,
                    _ => Kind::Other,
                };
                if self.resumed
                    && matches!(
                        block,
                        providers::event::BlockKind::Reasoning
                            | providers::event::BlockKind::RedactedReasoning { .. }
                    )
                {
                    // Left unmapped: its deltas and end are dropped with it.
                    return;
                }
                if kind == Kind::Text
                    && let Some(client) = self.open_text.take()
                {
                    // The continuation's text goes on in the block the break left open.
                    self.continuing = false;
                    self.blocks.insert(index, Mapped { client, kind });
                    self.head = Some(HeadBuffer {
                        client,
                        text: String::new(),
                    });
                    return;
                }
                self.close_open_text(out);
                let client = self.alloc(index, kind);
                self.open.push(client);
                if kind == Kind::Text && std::mem::take(&mut self.continuing) {
                    self.head = Some(HeadBuffer {
                        client,
                        text: String::new(),
                    });
                }
                self.emit(
                    AgentEvent::BlockStart {
                        index: client,
                        block,
                        choice,
                        extra,
                    },
                    out,
                );
            }
            AgentEvent::TextDelta { index, text, extra } => {
                let Some(m) = self.blocks.get(&index).copied() else {
                    return;
                };
                if let Some(head) = &mut self.head
                    && head.client == m.client
                {
                    head.text.push_str(&text);
                    if overlap::decidable(&self.sent_text, &head.text, &self.trimmed) {
                        self.flush_head(out);
                    }
                    return;
                }
                self.sent_text.push_str(&text);
                self.emit(
                    AgentEvent::TextDelta {
                        index: m.client,
                        text,
                        extra,
                    },
                    out,
                );
            }
            AgentEvent::BlockEnd { index } => {
                let Some(m) = self.blocks.get(&index).copied() else {
                    return;
                };
                if self.head.as_ref().is_some_and(|h| h.client == m.client) {
                    self.flush_head(out);
                }
                self.open.retain(|c| *c != m.client);
                self.emit(AgentEvent::BlockEnd { index: m.client }, out);
            }
            AgentEvent::ToolCallStart {
                index, ref name, ..
            } => {
                self.flush_any_head(out);
                self.close_open_text(out);
                if self.hold_tool_calls {
                    self.held.insert(
                        index,
                        Held {
                            name: name.clone(),
                            events: vec![event],
                        },
                    );
                } else {
                    let client = self.alloc(index, Kind::Other);
                    self.open.push(client);
                    self.emit(reindex(event, client), out);
                }
            }
            AgentEvent::ToolCallDelta { index, .. } => {
                if let Some(held) = self.held.get_mut(&index) {
                    held.events.push(event);
                } else if let Some(m) = self.blocks.get(&index).copied() {
                    self.emit(reindex(event, m.client), out);
                }
            }
            AgentEvent::ToolCallEnd {
                index,
                ref arguments,
                ..
            } => {
                if let Some(mut held) = self.held.remove(&index) {
                    let key = CallKey::new(&held.name, arguments);
                    if let Some(at) = self.unrepeated.iter().position(|k| *k == key) {
                        // Produced again by a continuation: the client has it already.
                        self.unrepeated.swap_remove(at);
                        return;
                    }
                    held.events.push(event);
                    let client = self.alloc(index, Kind::Other);
                    self.sent_calls.push(key);
                    for e in held.events {
                        self.emit(reindex(e, client), out);
                    }
                } else if let Some(m) = self.blocks.get(&index).copied() {
                    // Streamed live (not held): a repeat could not be taken back anyway.
                    self.open.retain(|c| *c != m.client);
                    self.emit(reindex(event, m.client), out);
                }
            }
            AgentEvent::ReasoningDelta { index, .. }
            | AgentEvent::ReasoningSignature { index, .. }
            | AgentEvent::NativeDelta { index, .. }
            | AgentEvent::RefusalDelta { index, .. } => {
                if let Some(m) = self.blocks.get(&index).copied() {
                    self.emit(reindex(event, m.client), out);
                }
            }
            AgentEvent::Usage(u) => {
                self.usage_now.merge(&u);
                let total = self.usage();
                self.emit(AgentEvent::Usage(Box::new(total)), out);
            }
            AgentEvent::StreamEnd(end) => {
                self.flush_any_head(out);
                self.close_open_text(out);
                self.ended = true;
                self.emit(AgentEvent::StreamEnd(end), out);
            }
            other => self.emit(other, out),
        }
    }

    /// The current attempt broke. Closes what cannot go on (reasoning, provider-run blocks),
    /// drops its unfinished tool calls and any continuation text still held back, keeps an
    /// open text block for the continuation, and says what to continue from.
    pub fn interrupt(&mut self, out: &mut Vec<AgentEvent>) -> Continuation {
        // A continuation head still held is text the client never got, and it may be only
        // the start of a repeat that the overlap check cannot recognize yet: drop it. The
        // next attempt continues from what was sent, so nothing is lost.
        self.head = None;
        let in_tool_call = self.held.values().next().map(|h| h.name.clone());
        self.held.clear();
        // The next attempt starts the answer's calls over: every call the client has may be
        // repeated once more.
        self.unrepeated.clone_from(&self.sent_calls);
        self.continuing = self.output_started();
        self.resumed |= self.output_started();
        // Still set when this attempt opened no block at all (it broke right after its
        // `stream.start`): the text block an earlier break left open is still the one to
        // continue in.
        let mut open_text = self.open_text.take();
        let mut blocks: Vec<Mapped> = std::mem::take(&mut self.blocks).into_values().collect();
        blocks.sort_by_key(|m| m.client);
        for m in blocks {
            if !self.open.contains(&m.client) {
                continue;
            }
            if m.kind == Kind::Text && open_text.is_none() {
                open_text = Some(m.client);
            } else {
                self.open.retain(|c| *c != m.client);
                self.emit(AgentEvent::BlockEnd { index: m.client }, out);
            }
        }
        self.open_text = open_text;
        if let Some(cost) = self.attempt.take() {
            // The provider billed what it produced even though it never said how much.
            self.usage_now = crate::estimate::complete(&self.usage_now, cost.input, cost.produced);
        }
        self.usage_done = sum(&self.usage_done, &self.usage_now);
        self.usage_now = Usage::default();
        let prefix = self.sent_text.trim_end().to_owned();
        self.trimmed = self.sent_text[prefix.len()..].to_owned();
        Continuation {
            prefix,
            trimmed: self.trimmed.clone(),
            in_tool_call,
            output_started: self.output_started(),
        }
    }

    /// Marks the start of the next attempt for the client.
    pub fn seam(&mut self, seam: Seam, out: &mut Vec<AgentEvent>) {
        let event = match seam {
            Seam::Retry {
                attempt,
                delay_ms,
                reason,
            } => AgentEvent::Retry {
                attempt,
                delay_ms,
                reason,
            },
            Seam::Failover {
                from,
                to,
                model,
                reason,
            } => AgentEvent::Failover {
                from,
                to,
                model,
                at_seq: self.emitted + 1,
                reason,
                cause: FailoverCause::Failure,
            },
            Seam::Hedge { from, to, model } => AgentEvent::Failover {
                from,
                to,
                model,
                at_seq: self.emitted + 1,
                reason: HEDGE_REASON.to_owned(),
                cause: FailoverCause::Hedge,
            },
        };
        self.emit(event, out);
    }

    /// Every attempt is spent: closes open blocks and ends the stream with the error, so it
    /// never looks whole. Usage reports what was billed over all attempts.
    pub fn fail(&mut self, error: ErrorInfo, out: &mut Vec<AgentEvent>) {
        self.wind_down(out);
        self.ended = true;
        for event in AgentEvent::terminal_failure(error) {
            self.emit(event, out);
        }
    }

    /// The part of [`Splicer::fail`] before its `error` and `stream.end`: closes open blocks
    /// and reports the usage billed over all attempts. For callers that hand the error on as
    /// an `Err`, which their consumer turns into those two events.
    pub fn wind_down(&mut self, out: &mut Vec<AgentEvent>) {
        self.flush_any_head(out);
        self.held.clear();
        for client in std::mem::take(&mut self.open) {
            self.emit(AgentEvent::BlockEnd { index: client }, out);
        }
        self.usage_done = sum(&self.usage_done, &self.usage_now);
        self.usage_now = Usage::default();
        if self.usage_done != Usage::default() {
            let usage = self.usage_done.clone();
            self.emit(AgentEvent::Usage(Box::new(usage)), out);
        }
    }

    /// The continuation went on with something other than text: the text block the break
    /// left open is finished.
    fn close_open_text(&mut self, out: &mut Vec<AgentEvent>) {
        if let Some(client) = self.open_text.take() {
            self.open.retain(|c| *c != client);
            self.emit(AgentEvent::BlockEnd { index: client }, out);
        }
    }

    fn alloc(&mut self, index: u32, kind: Kind) -> u32 {
        let client = self.next_index;
        self.next_index += 1;
        self.blocks.insert(index, Mapped { client, kind });
        client
    }

    fn emit(&mut self, event: AgentEvent, out: &mut Vec<AgentEvent>) {
        self.emitted += 1;
        out.push(event);
    }

    fn flush_any_head(&mut self, out: &mut Vec<AgentEvent>) {
        if self.head.is_some() {
            self.flush_head(out);
        }
    }

    /// Sends the held continuation head without the part that repeats the sent text.
    fn flush_head(&mut self, out: &mut Vec<AgentEvent>) {
        let Some(head) = self.head.take() else {
            return;
        };
        let skip = overlap(&self.sent_text, &head.text, &self.trimmed);
        let rest = &head.text[skip..];
        self.trimmed.clear();
        if !rest.is_empty() {
            self.sent_text.push_str(rest);
            self.emit(
                AgentEvent::TextDelta {
                    index: head.client,
                    text: rest.into(),
                    extra: None,
                },
                out,
            );
        }
    }
}

/// The event without its provider passthrough (the provider's verbatim finish reason, extra
/// fields). The client's stream announced the first attempt's dialect, and door encoders pass
/// such fields through when the dialects match: after a failover to another dialect they
/// would hand, say, OpenAI's `"tool_calls"` to an Anthropic client as its `stop_reason`.
fn without_passthrough(mut event: AgentEvent) -> AgentEvent {
    match &mut event {
        AgentEvent::BlockStart { extra, .. }
        | AgentEvent::TextDelta { extra, .. }
        | AgentEvent::ToolCallStart { extra, .. } => *extra = None,
        AgentEvent::Usage(usage) => usage.extra = None,
        AgentEvent::StreamEnd(end) => {
            end.provider_reason = None;
            end.extra = None;
            for choice in &mut end.other_choices {
                choice.provider_reason = None;
            }
        }
        _ => {}
    }
    event
}

/// The same event with its block index replaced.
fn reindex(mut event: AgentEvent, client: u32) -> AgentEvent {
    match &mut event {
        AgentEvent::ToolCallStart { index, .. }
        | AgentEvent::ToolCallDelta { index, .. }
        | AgentEvent::ToolCallEnd { index, .. }
        | AgentEvent::ReasoningDelta { index, .. }
        | AgentEvent::ReasoningSignature { index, .. }
        | AgentEvent::NativeDelta { index, .. }
        | AgentEvent::RefusalDelta { index, .. }
        | AgentEvent::TextDelta { index, .. }
        | AgentEvent::BlockStart { index, .. }
        | AgentEvent::BlockEnd { index } => *index = client,
        _ => {}
    }
    event
}

/// Field-wise sum of two usage reports (a field absent from both stays absent).
fn sum(a: &Usage, b: &Usage) -> Usage {
    fn add(x: Option<u64>, y: Option<u64>) -> Option<u64> {
        match (x, y) {
            (None, None) => None,
            (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
        }
    }
    Usage {
        input_tokens: add(a.input_tokens, b.input_tokens),
        output_tokens: add(a.output_tokens, b.output_tokens),
        cache_read_tokens: add(a.cache_read_tokens, b.cache_read_tokens),
        cache_write_tokens: add(a.cache_write_tokens, b.cache_write_tokens),
        reasoning_tokens: add(a.reasoning_tokens, b.reasoning_tokens),
        extra: b.extra.clone().or_else(|| a.extra.clone()),
        basis: a.basis.and(b.basis),
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
