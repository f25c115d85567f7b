//! Folds an event stream into the finished answer: what non-streaming responses are made of.

use serde_json::Value;

use crate::event::{AgentEvent, BlockKind, ErrorInfo, Extra, StreamEnd, StreamStart, Usage};

/// A whole answer, assembled from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The `stream.start` payload.
    pub start: Option<StreamStart>,
    /// Content blocks in the order they opened.
    pub blocks: Vec<Block>,
    /// Final token counts.
    pub usage: Usage,
    /// How it ended, if it did.
    pub end: Option<StreamEnd>,
    /// The error that ended it, if one did.
    pub error: Option<ErrorInfo>,
    /// Provider events kept for same-dialect clients.
    pub provider_events: Vec<(Option<String>, Value)>,
}

/// One content block of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Block index in the stream.
    pub index: u32,
    /// Choice it belongs to (OpenAI `n > 1`).
    pub choice: u32,
    /// What it holds.
    pub content: BlockContent,
    /// Whether its end event arrived.
    pub closed: bool,
    /// Passthrough fields from the block header.
    pub extra: Option<Extra>,
}

/// The content of a [`Block`].
#[derive(Debug, Clone, PartialEq)]
pub enum BlockContent {
    /// Answer text, with any provider deltas (citations) that arrived inside it.
    Text {
        /// Concatenated text.
        text: String,
        /// `native.delta` payloads, in order.
        native: Vec<Value>,
        /// Passthrough fields of the deltas, in order (OpenAI logprobs).
        extras: Vec<Extra>,
    },
    /// Refusal text.
    Refusal {
        /// Concatenated text.
        text: String,
    },
    /// Visible reasoning.
    Reasoning {
        /// Concatenated text.
        text: String,
        /// Provider signature, if sent.
        signature: Option<String>,
    },
    /// Encrypted reasoning.
    RedactedReasoning {
        /// Opaque payload.
        data: String,
    },
    /// A client tool call.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Whole arguments (from `tool_call.end`, else the deltas so far).
        arguments: String,
        /// Cut by the token limit.
        truncated: bool,
    },
    /// A provider-run block and its deltas, verbatim.
    Native {
        /// The block header.
        block: Value,
        /// Its deltas.
        deltas: Vec<Value>,
    },
}

/// Builds a [`Message`] event by event.
#[derive(Debug, Default)]
pub struct Assembler {
    message: Message,
}

impl Assembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in. Events for unknown blocks are ignored: the assembler describes
    /// what arrived, it does not validate order.
    pub fn push(&mut self, event: &AgentEvent) {
        let m = &mut self.message;
        match event {
            AgentEvent::StreamStart(s) => m.start = Some(StreamStart::clone(s)),
            AgentEvent::BlockStart {
                index,
                block,
                choice,
                extra,
            } => {
                let content = match block {
                    BlockKind::Text => BlockContent::Text {
                        text: String::new(),
                        native: Vec::new(),
                        extras: Vec::new(),
                    },
                    BlockKind::Refusal => BlockContent::Refusal {
                        text: String::new(),
                    },
                    BlockKind::Reasoning => BlockContent::Reasoning {
                        text: String::new(),
                        signature: None,
                    },
                    BlockKind::RedactedReasoning { data } => {
                        BlockContent::RedactedReasoning { data: data.clone() }
                    }
                    BlockKind::Native { block } => BlockContent::Native {
                        block: block.clone(),
                        deltas: Vec::new(),
                    },
                };
                m.blocks.push(Block {
                    index: *index,
                    choice: *choice,
                    content,
                    closed: false,
                    extra: extra.as_deref().cloned(),
                });
            }
            AgentEvent::ToolCallStart {
                index,
                id,
                name,
                choice,
                extra,
            } => m.blocks.push(Block {
                index: *index,
                choice: *choice,
                content: BlockContent::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                    truncated: false,
                },
                closed: false,
                extra: extra.as_deref().cloned(),
            }),
            AgentEvent::TextDelta { index, text, extra } => {
                if let Some(BlockContent::Text {
                    text: t, extras, ..
                }) = self.content(*index)
                {
                    t.push_str(text);
                    if let Some(extra) = extra {
                        extras.push(Extra::clone(extra));
                    }
                }
            }
            AgentEvent::RefusalDelta { index, text } => {
                if let Some(BlockContent::Refusal { text: t }) = self.content(*index) {
                    t.push_str(text);
                }
            }
            AgentEvent::ReasoningDelta { index, text } => {
                if let Some(BlockContent::Reasoning { text: t, .. }) = self.content(*index) {
                    t.push_str(text);
                }
            }
            AgentEvent::ReasoningSignature { index, signature } => {
                if let Some(BlockContent::Reasoning { signature: s, .. }) = self.content(*index) {
                    s.get_or_insert_with(String::new).push_str(signature);
                }
            }
            AgentEvent::ToolCallDelta { index, arguments } => {
                if let Some(BlockContent::ToolCall { arguments: a, .. }) = self.content(*index) {
                    a.push_str(arguments);
                }
            }
            AgentEvent::ToolCallEnd {
                index,
                arguments,
                truncated,
            } => {
                if let Some(block) = self.block(*index) {
                    block.closed = true;
                    if let BlockContent::ToolCall {
                        arguments: a,
                        truncated: t,
                        ..
                    } = &mut block.content
                    {
                        a.clone_from(arguments);
                        *t = *truncated;
                    }
                }
            }
            AgentEvent::NativeDelta { index, delta } => match self.content(*index) {
                Some(BlockContent::Native { deltas, .. }) => deltas.push(delta.clone()),
                Some(BlockContent::Text { native, .. }) => native.push(delta.clone()),
                _ => {}
            },
            AgentEvent::BlockEnd { index } => {
                if let Some(block) = self.block(*index) {
                    block.closed = true;
                }
            }
            AgentEvent::Usage(u) => m.usage.merge(u),
            AgentEvent::Error(e) => m.error = Some(e.clone()),
            AgentEvent::StreamEnd(end) => m.end = Some(StreamEnd::clone(end)),
            AgentEvent::ProviderEvent { name, data } => {
                m.provider_events.push((name.clone(), data.clone()));
            }
            AgentEvent::Failover { model, .. } => {
                // The answer is the new model's from here on: name it, as providers do.
                if let Some(start) = &mut m.start {
                    start.model.clone_from(model);
                }
            }
            AgentEvent::Retry { .. } | AgentEvent::RateLimited { .. } | AgentEvent::Heartbeat => {}
        }
    }

    /// The answer as assembled so far.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The assembled answer.
    pub fn finish(self) -> Message {
        self.message
    }

    /// Assembles a whole event list.
    pub fn assemble<'a>(events: impl IntoIterator<Item = &'a AgentEvent>) -> Message {
        let mut a = Assembler::new();
        for e in events {
            a.push(e);
        }
        a.finish()
    }

    fn block(&mut self, index: u32) -> Option<&mut Block> {
        // Blocks are few and the latest is the likeliest target: search from the end.
        self.message
            .blocks
            .iter_mut()
            .rev()
            .find(|b| b.index == index)
    }

    fn content(&mut self, index: u32) -> Option<&mut BlockContent> {
        self.block(index).map(|b| &mut b.content)
    }
}

impl Message {
    /// All answer text of choice 0, concatenated across text blocks.
    pub fn text(&self) -> String {
        self.blocks
            .iter()
            .filter(|b| b.choice == 0)
            .filter_map(|b| match &b.content {
                BlockContent::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All reasoning text of choice 0.
    pub fn reasoning(&self) -> String {
        self.blocks
            .iter()
            .filter(|b| b.choice == 0)
            .filter_map(|b| match &b.content {
                BlockContent::Reasoning { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Client tool calls of choice 0 as (id, name, arguments).
    pub fn tool_calls(&self) -> Vec<(&str, &str, &str)> {
        self.blocks
            .iter()
            .filter(|b| b.choice == 0)
            .filter_map(|b| match &b.content {
                BlockContent::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => Some((id.as_str(), name.as_str(), arguments.as_str())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FinishReason;

    #[test]
    fn assembles_text_and_tool_calls() {
        let events = vec![
            AgentEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
                choice: 0,
                extra: None,
            },
            AgentEvent::TextDelta {
                index: 0,
                text: "Hel".into(),
                extra: None,
            },
            AgentEvent::TextDelta {
                index: 0,
                text: "lo".into(),
                extra: None,
            },
            AgentEvent::BlockEnd { index: 0 },
            AgentEvent::ToolCallStart {
                index: 1,
                id: "c1".into(),
                name: "f".into(),
                choice: 0,
                extra: None,
            },
            AgentEvent::ToolCallDelta {
                index: 1,
                arguments: "{\"a\"".into(),
            },
            AgentEvent::ToolCallEnd {
                index: 1,
                arguments: "{\"a\":1}".into(),
                truncated: false,
            },
            AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason: FinishReason::ToolCalls,
                provider_reason: None,
                stop_sequence: None,
                other_choices: Vec::new(),
                extra: None,
            })),
        ];
        let m = Assembler::assemble(&events);
        assert_eq!(m.text(), "Hello");
        assert_eq!(m.tool_calls(), vec![("c1", "f", "{\"a\":1}")]);
        assert!(m.blocks.iter().all(|b| b.closed));
        assert_eq!(m.end.map(|e| e.reason), Some(FinishReason::ToolCalls));
    }
}
