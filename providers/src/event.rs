//! The Agent Event Stream v1: one typed event per thing that happens in an answer.
//!
//! Decoders turn each provider's wire format into these events; encoders turn them back into
//! any dialect. The gateway stamps each one with a stream id and a seq (see [`crate::stamp`]).
//! The normative description, with examples generated from the fixtures, is `docs/protocol.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dialect::Dialect;

/// Provider fields that have no place in the unified model but that a client speaking the
/// same dialect as the upstream would see (`system_fingerprint`, `logprobs`, `stop_details`,
/// ...). Encoders write them back only when the target dialect is the source dialect.
pub type Extra = Map<String, Value>;

/// A delta's text: most token fragments are a few bytes, and one of up to 24 bytes is held
/// inline, so that the decoder allocates nothing per token chunk (a heap string cost about a
/// fifteenth of a token chunk's instructions in the gateway).
pub type Fragment = compact_str::CompactString;

/// One event of the Agent Event Stream, without its envelope (stream id and seq).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentEvent {
    /// The answer began: who is answering and under which id.
    #[serde(rename = "stream.start")]
    StreamStart(Box<StreamStart>),
    /// A content block that is not a client tool call opens at `index`.
    #[serde(rename = "block.start")]
    BlockStart {
        /// Block index, unique within the stream (across choices).
        index: u32,
        /// What kind of block this is.
        block: BlockKind,
        /// Choice the block belongs to (OpenAI `n > 1`); omitted for choice 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        /// Same-dialect passthrough fields of the block header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra: Option<Box<Extra>>,
    },
    /// Answer text for the text block at `index`.
    #[serde(rename = "text.delta")]
    TextDelta {
        /// Block index.
        index: u32,
        /// The text fragment.
        text: Fragment,
        /// Same-dialect passthrough fields (OpenAI `logprobs`, `content_filter_results`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra: Option<Box<Extra>>,
    },
    /// Refusal text (OpenAI `delta.refusal`) for the refusal block at `index`.
    #[serde(rename = "refusal.delta")]
    RefusalDelta {
        /// Block index.
        index: u32,
        /// The refusal fragment.
        text: Fragment,
    },
    /// Model reasoning ("thinking") text for the reasoning block at `index`.
    #[serde(rename = "reasoning.delta")]
    ReasoningDelta {
        /// Block index.
        index: u32,
        /// The reasoning fragment.
        text: Fragment,
    },
    /// The provider's signature over the reasoning block at `index` (Anthropic).
    /// Only meaningful to the provider that produced it; never sent to another.
    #[serde(rename = "reasoning.signature")]
    ReasoningSignature {
        /// Block index.
        index: u32,
        /// Opaque signature.
        signature: String,
    },
    /// A client tool call opens at `index`.
    #[serde(rename = "tool_call.start")]
    ToolCallStart {
        /// Block index.
        index: u32,
        /// Provider's call id (`call_...`, `toolu_...`).
        id: String,
        /// Function / tool name.
        name: String,
        /// Choice the call belongs to (OpenAI `n > 1`); omitted for choice 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        /// Same-dialect passthrough fields of the call header (Anthropic `caller`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra: Option<Box<Extra>>,
    },
    /// A fragment of the JSON arguments of the tool call at `index`.
    #[serde(rename = "tool_call.delta")]
    ToolCallDelta {
        /// Block index.
        index: u32,
        /// Argument fragment (not valid JSON on its own).
        arguments: Fragment,
    },
    /// The tool call at `index` is closed; `arguments` is the whole argument text.
    #[serde(rename = "tool_call.end")]
    ToolCallEnd {
        /// Block index.
        index: u32,
        /// Complete arguments: valid JSON unless `truncated`. Empty input is `{}`.
        arguments: String,
        /// The model ran out of tokens inside the arguments (finish reason `length`):
        /// the provider itself sent them cut. Never set for a broken connection.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// A delta the unified model does not interpret: a provider-run block's delta
    /// (Anthropic `server_tool_use` input) or a `citations_delta` inside a text block.
    #[serde(rename = "native.delta")]
    NativeDelta {
        /// Block index.
        index: u32,
        /// The provider's delta object, verbatim.
        delta: Value,
    },
    /// The block at `index` (opened by `block.start`) is closed.
    #[serde(rename = "block.end")]
    BlockEnd {
        /// Block index.
        index: u32,
    },
    /// Token counts so far. Each field, when present, replaces the previous value.
    #[serde(rename = "usage")]
    Usage(Box<Usage>),
    /// The upstream is retried after a failure (emitted by the gateway).
    #[serde(rename = "retry")]
    Retry {
        /// Attempt number about to start (1 = first retry).
        attempt: u32,
        /// Delay before it, in milliseconds.
        delay_ms: u64,
        /// Why.
        reason: String,
    },
    /// The answer moves to another route (emitted by the gateway).
    #[serde(rename = "failover")]
    Failover {
        /// Route that failed, `provider/model`.
        from: String,
        /// Route taking over, `provider/model`.
        to: String,
        /// The model that answers from here on, as its provider names it.
        model: String,
        /// Seq of the first event produced by the new route.
        at_seq: u64,
        /// Why: the failure's message, or `hedge`.
        reason: String,
        /// What moved the answer; omitted for a failure.
        #[serde(default, skip_serializing_if = "FailoverCause::is_failure")]
        cause: FailoverCause,
    },
    /// A rate limit was hit (emitted by the gateway).
    #[serde(rename = "rate_limited")]
    RateLimited {
        /// Which limit (`requests_per_minute`, `tokens_per_minute`, `concurrency`, `upstream`).
        limit: String,
        /// When to try again, in milliseconds.
        retry_after_ms: u64,
    },
    /// Something failed; followed by `stream.end` with reason `error` when terminal.
    #[serde(rename = "error")]
    Error(ErrorInfo),
    /// The answer is over.
    #[serde(rename = "stream.end")]
    StreamEnd(Box<StreamEnd>),
    /// Keep-alive (Anthropic `ping`).
    #[serde(rename = "heartbeat")]
    Heartbeat,
    /// A provider event or chunk with no unified meaning, kept so that a same-dialect
    /// client still receives it (unknown Anthropic event types, Azure `prompt_filter_results`).
    #[serde(rename = "provider.event")]
    ProviderEvent {
        /// SSE `event:` name, if the frame had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The frame's JSON data, verbatim.
        data: Value,
    },
}

/// `stream.start` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStart {
    /// The provider's response id (`chatcmpl-...`, `msg_...`).
    pub id: String,
    /// Model that answers, as the provider names it.
    pub model: String,
    /// Wire dialect of the upstream that produced the events.
    pub dialect: Dialect,
    /// Unix seconds; OpenAI sends it, Anthropic does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Gateway request id (set by the gateway, not by decoders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Configured provider name of the route (set by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Same-dialect passthrough fields (`system_fingerprint`, `service_tier`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Extra>,
}

/// What a `block.start` opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockKind {
    /// Answer text.
    Text,
    /// Refusal text (OpenAI).
    Refusal,
    /// Visible reasoning.
    Reasoning,
    /// Reasoning the provider encrypted (Anthropic `redacted_thinking`).
    RedactedReasoning {
        /// Opaque payload.
        data: String,
    },
    /// A block the provider runs itself (`server_tool_use`, `web_search_tool_result`,
    /// code execution results): not a client tool call. Kept verbatim.
    Native {
        /// The provider's content block, verbatim.
        block: Value,
    },
}

/// Token counts. Input includes cache reads and writes; output includes reasoning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// All generated tokens, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// Output tokens spent on reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Same-dialect passthrough fields (`service_tier`, `server_tool_use`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Extra>,
    /// Whether the counts are the provider's or partly the gateway's estimate. Serialized
    /// only when estimated (`"basis":"estimated"`); the OpenAI and Anthropic doors have no
    /// field for it and never write it.
    #[serde(default, skip_serializing_if = "UsageBasis::is_reported")]
    pub basis: UsageBasis,
}

/// Where a usage report's counts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBasis {
    /// Every count is the provider's.
    #[default]
    Reported,
    /// At least one count is the gateway's estimate: an attempt ended before its provider
    /// reported usage (a broken connection, a hedge that lost the race), or a count a client
    /// needs came before the provider's.
    Estimated,
}

impl UsageBasis {
    /// Whether every count is the provider's.
    pub fn is_reported(&self) -> bool {
        *self == UsageBasis::Reported
    }

    /// The basis of a total over parts of these bases: estimated if any part is.
    pub fn and(self, other: UsageBasis) -> UsageBasis {
        if self == UsageBasis::Estimated || other == UsageBasis::Estimated {
            UsageBasis::Estimated
        } else {
            UsageBasis::Reported
        }
    }
}

impl Usage {
    /// Applies a later usage report: every field it carries replaces ours, and its basis
    /// replaces ours when it carries the counts ours had (a provider's report supersedes an
    /// estimate it covers).
    pub fn merge(&mut self, later: &Usage) {
        let covers = |mine: Option<u64>, theirs: Option<u64>| mine.is_none() || theirs.is_some();
        if later.basis == UsageBasis::Estimated
            || (covers(self.input_tokens, later.input_tokens)
                && covers(self.output_tokens, later.output_tokens))
        {
            self.basis = later.basis;
        }
        fn take(dst: &mut Option<u64>, src: Option<u64>) {
            if src.is_some() {
                *dst = src;
            }
        }
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.cache_read_tokens, later.cache_read_tokens);
        take(&mut self.cache_write_tokens, later.cache_write_tokens);
        take(&mut self.reasoning_tokens, later.reasoning_tokens);
        if let Some(extra) = &later.extra {
            let mine = self.extra.get_or_insert_with(Extra::new);
            for (k, v) in extra {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What moved an answer to another route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverCause {
    /// The route failed (its error is the `reason`).
    #[default]
    Failure,
    /// The route was slow to produce its first event: a fallback started in parallel
    /// answered first, and the slow route was cancelled.
    Hedge,
}

impl FailoverCause {
    /// Whether the route failed.
    pub fn is_failure(&self) -> bool {
        *self == FailoverCause::Failure
    }
}

/// Normalized reason an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// Output token limit reached.
    Length,
    /// The model wants client tools run.
    ToolCalls,
    /// Output withheld by a content filter.
    ContentFilter,
    /// The model refused (Anthropic `refusal`).
    Refusal,
    /// A provider-run tool loop paused; resend to continue (Anthropic `pause_turn`).
    PauseTurn,
    /// The stream failed.
    Error,
}

/// `stream.end` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Normalized finish reason (of choice 0).
    pub reason: FinishReason,
    /// The provider's own finish reason string, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reason: Option<String>,
    /// The stop sequence that ended the answer, when the provider says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    /// Finish of choices other than 0 (OpenAI `n > 1`), in choice order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_choices: Vec<ChoiceEnd>,
    /// Same-dialect passthrough fields (`stop_details`, finish-chunk `logprobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Extra>,
}

/// How one extra choice (index > 0) ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceEnd {
    /// Choice index (>= 1).
    pub choice: u32,
    /// Normalized reason.
    pub reason: FinishReason,
    /// The provider's own reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reason: Option<String>,
}

/// `error` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable code (`overloaded_error`, `incomplete_stream`, `rate_limit_error`).
    pub code: String,
    /// Human-readable message. Never contains credentials.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AgentEvent {
    /// The two events that end a failed stream, in order: `error`, then `stream.end` with
    /// reason `error` (so that no client takes the answer as whole).
    pub fn terminal_failure(error: ErrorInfo) -> [AgentEvent; 2] {
        [
            AgentEvent::Error(error),
            AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason: FinishReason::Error,
                provider_reason: None,
                stop_sequence: None,
                other_choices: Vec::new(),
                extra: None,
            })),
        ]
    }

    /// The `type` tag of this event, as serialized.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentEvent::StreamStart(_) => "stream.start",
            AgentEvent::BlockStart { .. } => "block.start",
            AgentEvent::TextDelta { .. } => "text.delta",
            AgentEvent::RefusalDelta { .. } => "refusal.delta",
            AgentEvent::ReasoningDelta { .. } => "reasoning.delta",
            AgentEvent::ReasoningSignature { .. } => "reasoning.signature",
            AgentEvent::ToolCallStart { .. } => "tool_call.start",
            AgentEvent::ToolCallDelta { .. } => "tool_call.delta",
            AgentEvent::ToolCallEnd { .. } => "tool_call.end",
            AgentEvent::NativeDelta { .. } => "native.delta",
            AgentEvent::BlockEnd { .. } => "block.end",
            AgentEvent::Usage(_) => "usage",
            AgentEvent::Retry { .. } => "retry",
            AgentEvent::Failover { .. } => "failover",
            AgentEvent::RateLimited { .. } => "rate_limited",
            AgentEvent::Error(_) => "error",
            AgentEvent::StreamEnd(_) => "stream.end",
            AgentEvent::Heartbeat => "heartbeat",
            AgentEvent::ProviderEvent { .. } => "provider.event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event is moved several times between the upstream and the client: the rare,
    /// large payloads (start, usage, end, passthrough maps) are boxed so that the common
    /// deltas stay small (an event was 192 bytes with them inline).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_event_stays_small() {
        assert!(
            std::mem::size_of::<AgentEvent>() <= 112,
            "AgentEvent grew to {} bytes",
            std::mem::size_of::<AgentEvent>()
        );
    }

    #[test]
    fn events_serialize_with_dotted_type_tags_and_round_trip() {
        let events = vec![
            AgentEvent::TextDelta {
                index: 0,
                text: "hi".into(),
                extra: None,
            },
            AgentEvent::ToolCallEnd {
                index: 1,
                arguments: "{}".into(),
                truncated: false,
            },
            AgentEvent::BlockStart {
                index: 2,
                block: BlockKind::RedactedReasoning { data: "x".into() },
                choice: 0,
                extra: None,
            },
            AgentEvent::Heartbeat,
        ];
        let json: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(json[0], r#"{"type":"text.delta","index":0,"text":"hi"}"#);
        assert_eq!(
            json[1],
            r#"{"type":"tool_call.end","index":1,"arguments":"{}"}"#
        );
        assert_eq!(
            json[2],
            r#"{"type":"block.start","index":2,"block":{"type":"redacted_reasoning","data":"x"}}"#
        );
        for (text, event) in json.iter().zip(&events) {
            let back: AgentEvent = serde_json::from_str(text).unwrap();
            assert_eq!(&back, event);
            assert_eq!(
                event.kind(),
                serde_json::from_str::<Value>(text).unwrap()["type"]
            );
        }
    }

    #[test]
    fn usage_merge_replaces_only_present_fields() {
        let mut u = Usage {
            input_tokens: Some(10),
            output_tokens: Some(1),
            ..Usage::default()
        };
        u.merge(&Usage {
            output_tokens: Some(30),
            ..Usage::default()
        });
        assert_eq!(u.input_tokens, Some(10));
        assert_eq!(u.output_tokens, Some(30));
    }
    #[test]
    fn usage_basis_is_serialized_only_when_estimated() {
        let reported = Usage {
            input_tokens: Some(3),
            ..Usage::default()
        };
        assert_eq!(
            serde_json::to_string(&AgentEvent::Usage(Box::new(reported.clone()))).unwrap(),
            r#"{"type":"usage","input_tokens":3}"#
        );
        let estimated = Usage {
            basis: UsageBasis::Estimated,
            ..reported
        };
        let json = serde_json::to_string(&AgentEvent::Usage(Box::new(estimated.clone()))).unwrap();
        assert_eq!(
            json,
            r#"{"type":"usage","input_tokens":3,"basis":"estimated"}"#
        );
        assert_eq!(
            serde_json::from_str::<AgentEvent>(&json).unwrap(),
            AgentEvent::Usage(Box::new(estimated))
        );
    }

    #[test]
    fn a_report_covering_an_estimate_replaces_its_basis() {
        let estimate = Usage {
            input_tokens: Some(10),
            output_tokens: Some(0),
            basis: UsageBasis::Estimated,
            ..Usage::default()
        };
        // Output only: the input is still the estimate.
        let mut u = estimate.clone();
        u.merge(&Usage {
            output_tokens: Some(5),
            ..Usage::default()
        });
        assert_eq!(u.basis, UsageBasis::Estimated);
        // Both counts: the provider's report.
        u.merge(&Usage {
            input_tokens: Some(12),
            output_tokens: Some(7),
            ..Usage::default()
        });
        assert_eq!(u.basis, UsageBasis::Reported);
        // An estimate merged later is an estimate.
        u.merge(&estimate);
        assert_eq!(u.basis, UsageBasis::Estimated);
    }

    #[test]
    fn failover_cause_is_serialized_only_for_a_hedge() {
        let failover = |cause| AgentEvent::Failover {
            from: "a/x".into(),
            to: "b/y".into(),
            model: "y".into(),
            at_seq: 1,
            reason: "r".into(),
            cause,
        };
        let failure = serde_json::to_value(failover(FailoverCause::Failure)).unwrap();
        assert!(failure.get("cause").is_none(), "{failure}");
        let hedge = serde_json::to_string(&failover(FailoverCause::Hedge)).unwrap();
        assert!(hedge.contains(r#""cause":"hedge""#), "{hedge}");
        assert_eq!(
            serde_json::from_str::<AgentEvent>(&hedge).unwrap(),
            failover(FailoverCause::Hedge)
        );
    }

    #[test]
    fn door_encoders_never_write_the_estimate_marker() {
        use crate::{Dialect, EncodeOptions, StreamEncoder};
        let start = |dialect| {
            AgentEvent::StreamStart(Box::new(StreamStart {
                id: "id".into(),
                model: "m".into(),
                dialect,
                created: Some(0),
                request_id: None,
                provider: None,
                extra: None,
            }))
        };
        let usage = AgentEvent::Usage(Box::new(Usage {
            input_tokens: Some(4),
            output_tokens: Some(2),
            basis: UsageBasis::Estimated,
            ..Usage::default()
        }));
        for source in Dialect::ALL {
            for door in Dialect::ALL {
                for ending in [
                    AgentEvent::StreamEnd(Box::new(StreamEnd {
                        reason: FinishReason::Stop,
                        provider_reason: None,
                        stop_sequence: None,
                        other_choices: Vec::new(),
                        extra: None,
                    })),
                    AgentEvent::Error(ErrorInfo {
                        code: "incomplete_stream".into(),
                        message: "cut".into(),
                        retryable: true,
                    }),
                ] {
                    let events = [start(source), usage.clone(), ending];
                    let body = StreamEncoder::encode_all(
                        door,
                        EncodeOptions {
                            include_usage: true,
                        },
                        &events,
                    )
                    .unwrap();
                    let body = String::from_utf8(body).unwrap();
                    assert!(
                        !body.contains("basis") && !body.contains("estimated"),
                        "{source} -> {door}: {body}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_openai_usage_chunk_comes_before_an_error_chunk() {
        use crate::{Dialect, EncodeOptions, StreamEncoder};
        let events = [
            AgentEvent::StreamStart(Box::new(StreamStart {
                id: "id".into(),
                model: "m".into(),
                dialect: Dialect::OpenAi,
                created: Some(0),
                request_id: None,
                provider: None,
                extra: None,
            })),
            AgentEvent::Usage(Box::new(Usage {
                input_tokens: Some(4),
                output_tokens: Some(2),
                ..Usage::default()
            })),
            AgentEvent::Error(ErrorInfo {
                code: "incomplete_stream".into(),
                message: "cut".into(),
                retryable: true,
            }),
        ];
        for include_usage in [true, false] {
            let body = StreamEncoder::encode_all(
                Dialect::OpenAi,
                EncodeOptions { include_usage },
                &events,
            )
            .unwrap();
            let frames: Vec<Value> = String::from_utf8(body)
                .unwrap()
                .split("\n\n")
                .filter_map(|f| f.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let kinds: Vec<&str> = frames
                .iter()
                .map(|f| {
                    if f.get("error").is_some() {
                        "error"
                    } else if f["usage"]["total_tokens"] == 6 {
                        "usage"
                    } else {
                        "other"
                    }
                })
                .filter(|k| *k != "other")
                .collect();
            let want: &[&str] = if include_usage {
                &["usage", "error"]
            } else {
                &["error"]
            };
            assert_eq!(kinds, want, "include_usage {include_usage}");
        }
    }
}
